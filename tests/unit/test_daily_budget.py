"""A budget across jobs for a UTC day: each job sent adds its upper-bound estimate to the day's
spend and swaps it for its actual cost as it finishes; a job that would take the day past the
budget waits for approval, as one over its own budget does. Against the in-memory fakes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from batchdrop.domain.budget import DailyBudgetTaken, budget_key, held_for_budget, spend_day
from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop.domain.records import SourceRef
from batchdrop.domain.states import JobStatus
from batchdrop.domain.timings import Timings
from batchdrop.ports import Wiring
from batchdrop.services.approval import Approver
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def wiring(world: Fakes, daily: Decimal | None, job_budget: Decimal | None = None) -> Wiring:
    return world.wiring(
        daily_budget_usd=daily, job_budget_usd=job_budget, approval_hours=2.0, timings=Timings(sweep_min_age=0.0)
    )


def drop(world: Fakes, daily: Decimal | None, name: str, ids: str = "abc") -> str:
    key = f"inbox/{name}.jsonl"
    source = SourceRef(world.store.bucket, key, world.store.put(key, b"".join(request(i) + b"\n" for i in ids)))
    Intake(wiring(world, daily)).submit(source)
    return job_id_for(source.bucket, source.key, source.version_id)


def most(world: Fakes, job_id: str) -> Decimal:
    return Decimal(world.store.get_json(f"work/{job_id}/estimate.json")["cost_usd"]["batch_max"])


def status(world: Fakes, job_id: str) -> JobStatus:
    job = world.state.get_job(job_id)
    assert job is not None
    return job.status


def today(world: Fakes) -> str:
    return spend_day(world.clock.now())


def test_the_daily_verdict_by_hand() -> None:
    estimate = {"cost_usd": {"batch_max": "0.40", "batch_cached_expected": "0.10"}}
    kwargs: dict[str, Any] = {"expires_at": "E", "daily_budget": Decimal("1"), "day": "2026-12-07"}
    # 0.55 spent + 0.40 fits under 1; 0.65 + 0.40 is 0.05 over
    assert held_for_budget("j", estimate, None, spent=Decimal("0.55"), **kwargs) is None
    assert held_for_budget("j", estimate, None, spent=Decimal("0.60"), **kwargs) is None  # exactly 1
    held = held_for_budget("j", estimate, None, spent=Decimal("0.65"), **kwargs)
    assert held is not None
    assert held["held_by"] == "daily_budget"
    assert held["over_by_usd"] == "0.050000"
    assert held["daily"] == {"day": "2026-12-07", "daily_budget_usd": "1.000000", "spent_usd": "0.650000"}
    assert held["reason"] == (
        "its estimate of at most $0.40 would take 2026-12-07's spend (UTC) from $0.650000 to $1.050000, "
        "$0.050000 over the daily budget of $1.000000"
    )
    assert held["job_budget_usd"] is None
    # The job budget is weighed first; without an estimate, both budgets are named
    by_job = held_for_budget("j", estimate, Decimal("0.3"), spent=Decimal("0"), **kwargs)
    assert by_job is not None
    assert by_job["held_by"] == "job_budget"
    blind = held_for_budget("j", None, Decimal("0.3"), spent=Decimal("0"), **kwargs)
    assert blind is not None
    assert blind["held_by"] == "no_estimate"
    assert blind["reason"].endswith("the job budget is $0.300000 and the daily budget is $1.000000")


def test_jobs_go_until_the_day_is_spent_then_wait_and_say_why(world: Fakes) -> None:
    # Given a daily budget with room for two of these jobs' upper bounds, not three
    first = drop(world, None, "probe")  # sent without a daily budget: it still counts in the day
    bound = most(world, first)
    daily = bound * 2 + bound / 2
    assert world.state.spent_on(today(world)) == bound

    # When two more are dropped
    second = drop(world, daily, "second")
    third = drop(world, daily, "third")

    # Then the second goes (2 bounds spent), the third would make 3: it waits, nothing sent
    assert status(world, second) is JobStatus.RUNNING
    assert status(world, third) is JobStatus.AWAITING_APPROVAL
    assert world.batches.creates == 2
    held = world.store.get_json(budget_key(third))
    assert held["held_by"] == "daily_budget"
    assert held["budget_from"] == "the stack's DailyBudgetUsd"
    assert held["daily"]["spent_usd"] == str((bound * 2).quantize(Decimal("0.000001")))
    assert "over the daily budget" in held["reason"]
    (event,) = world.events.awaiting
    assert event["job_id"] == third
    assert world.state.spent_on(today(world)) == bound * 2


def test_a_finished_job_counts_at_its_actual_cost_once(world: Fakes) -> None:
    job_id = drop(world, Decimal("1000"), "one")
    bound = most(world, job_id)
    (batch_id,) = world.batches.batches
    world.batches.end(batch_id)

    Checker(wiring(world, Decimal("1000")), seconds_left=lambda: 900.0).tick()
    Checker(wiring(world, Decimal("1000")), seconds_left=lambda: 900.0).tick()  # nothing more to settle

    assert status(world, job_id) is JobStatus.COMPLETED
    actual = Decimal(world.store.get_json(manifest_key(job_id))["cost"]["batch_usd"])
    assert actual < bound
    assert world.state.spent_on(today(world)) == actual


def test_room_freed_by_a_finished_job_lets_the_next_one_go(world: Fakes) -> None:
    first = drop(world, None, "first")
    bound = most(world, first)
    daily = bound * 3 / 2  # one bound fits, two do not
    (batch_id,) = world.batches.batches
    world.batches.end(batch_id)
    Checker(wiring(world, daily), seconds_left=lambda: 900.0).tick()  # first costs less than its bound

    second = drop(world, daily, "second")

    actual = Decimal(world.store.get_json(manifest_key(first))["cost"]["batch_usd"])
    assert actual + bound <= daily
    assert status(world, second) is JobStatus.RUNNING


def test_an_approved_job_counts_on_the_day_it_is_approved_even_over_the_budget(world: Fakes) -> None:
    first = drop(world, None, "first")
    bound = most(world, first)
    held = drop(world, bound, "held")  # the day has bound spent: one more would cross it
    assert status(world, held) is JobStatus.AWAITING_APPROVAL

    world.clock.advance(3600)
    outcome = Approver(wiring(world, bound), Intake(wiring(world, bound))).approve(held)

    assert outcome.status == "RUNNING"
    assert world.state.spent_on(today(world)) == bound * 2
    job = world.state.get_job(held)
    assert job is not None
    assert job.spend_day == today(world)


def test_a_job_that_loses_the_days_last_room_to_another_waits(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs weighed at the same moment both see room for one: the spend's condition lets
    the first through, and the second, refused by it, is weighed again and waits."""
    first = drop(world, None, "first")
    bound = most(world, first)
    daily = bound * 2 + bound / 2
    drop(world, None, "other")  # the day now holds 2 bounds: no room for a third
    stale = iter([bound])  # what the third read of the day's spend before "other" was sent
    real = world.state.spent_on
    monkeypatch.setattr(world.state, "spent_on", lambda day: next(stale, None) or real(day))
    refused: list[str] = []
    record = world.state.record_shards

    def recording(*args: Any, **kwargs: Any) -> bool:
        try:
            return record(*args, **kwargs)
        except DailyBudgetTaken:
            refused.append(args[0])
            raise

    monkeypatch.setattr(world.state, "record_shards", recording)

    third = drop(world, daily, "third")

    assert refused == [third]
    assert status(world, third) is JobStatus.AWAITING_APPROVAL
    assert world.state.spent_on(today(world)) == bound * 2
