"""A job whose upper-bound estimate is over the job budget sends nothing: it waits as
AWAITING_APPROVAL, says why at errors/<job_id>/budget.json and in an event, and then is sent
when approved, dropped when canceled, or dropped by the sweep once it waited too long. Against
the in-memory fakes."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from batchdrop.domain.budget import budget_key, held_for_budget, parse_budget
from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop.domain.records import SourceRef
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings, parse_stamp
from batchdrop.ports import Wiring
from batchdrop.services.approval import Approver
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake, S3Upload, check_record
from batchdrop.services.sweeper import Sweeper
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit

TINY = Decimal("0.000001")  # less than any job costs
LOTS = Decimal("1000")


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def wiring(world: Fakes, budget: Decimal | None) -> Wiring:
    return world.wiring(job_budget_usd=budget, approval_hours=2.0, timings=Timings(sweep_min_age=0.0))


def drop(world: Fakes, budget: Decimal | None, ids: str = "abc") -> str:
    key = "inbox/budget.jsonl"
    source = SourceRef(world.store.bucket, key, world.store.put(key, b"".join(request(i) + b"\n" for i in ids)))
    Intake(wiring(world, budget)).submit(source)
    return job_id_for(source.bucket, source.key, source.version_id)


def status(world: Fakes, job_id: str) -> JobStatus:
    job = world.state.get_job(job_id)
    assert job is not None
    return job.status


def test_without_a_budget_or_under_it_a_job_goes_out(world: Fakes) -> None:
    for budget in (None, LOTS):
        job_id = drop(world, budget, ids="ab" if budget is None else "cd")
        assert status(world, job_id) is JobStatus.RUNNING
        assert not world.store.exists(budget_key(job_id))
    assert world.batches.creates == 2
    assert world.events.awaiting == []


def test_a_job_over_its_budget_sends_nothing_and_says_why(world: Fakes) -> None:
    # When a job whose estimate is over the budget is dropped
    job_id = drop(world, TINY)

    # Then it waits, its shards recorded and unsent, and no batch was created
    assert status(world, job_id) is JobStatus.AWAITING_APPROVAL
    assert [shard.state for shard in world.state.shards(job_id)] == [ShardState.PENDING]
    assert world.batches.creates == 0
    # ...and says why, by how much and until when, in budget.json and an event
    held = world.store.get_json(budget_key(job_id))
    estimate = world.store.get_json(f"work/{job_id}/estimate.json")
    most = Decimal(estimate["cost_usd"]["batch_max"])
    assert held["job_budget_usd"] == "0.000001"
    assert held["estimate_max_usd"] == estimate["cost_usd"]["batch_max"]
    assert Decimal(held["over_by_usd"]) == (most - TINY).quantize(TINY)
    assert f"${most}" in held["reason"]
    assert "over the job budget of $0.000001" in held["reason"]
    assert parse_stamp(held["expires_at"]) == world.clock.now() + timedelta(hours=2)
    assert f"approve/{job_id}" in held["approve"]
    (event,) = world.events.awaiting
    assert event["job_id"] == job_id
    assert event["source_key"] == "inbox/budget.jsonl"
    assert event["reason"] == held["reason"]
    # ...and a duplicate event leaves it waiting
    job = world.state.get_job(job_id)
    assert job is not None
    assert Intake(wiring(world, TINY)).submit(job.source).duplicate
    assert world.batches.creates == 0


def test_an_approved_job_goes_out_and_finishes(world: Fakes) -> None:
    # Given a job waiting over its budget
    job_id = drop(world, TINY)

    # When it is approved (its approve/ object's event)
    outcome = Approver(wiring(world, TINY), Intake(wiring(world, TINY))).approve_from_key(f"approve/{job_id}")

    # Then its batch goes out, and the job runs and finishes as any job
    assert (outcome.status, outcome.submitted) == ("RUNNING", 1)
    assert status(world, job_id) is JobStatus.RUNNING
    (batch_id,) = world.batches.batches
    assert sorted(world.batches.requests[batch_id]) == ["a", "b", "c"]
    world.batches.end(batch_id)
    Checker(wiring(world, TINY), seconds_left=lambda: 900.0).tick()
    assert status(world, job_id) is JobStatus.COMPLETED
    # ...and an approval delivered again sends nothing more
    again = Approver(wiring(world, TINY), Intake(wiring(world, TINY))).approve(job_id)
    assert again.status == "NOT_AWAITING"
    assert world.batches.creates == 1


def test_an_approval_that_names_no_waiting_job_changes_nothing_and_says_why(world: Fakes) -> None:
    running = drop(world, None)
    approver = Approver(wiring(world, TINY), Intake(wiring(world, TINY)))
    assert approver.approve_from_key(f"approve/{running}").status == "NOT_AWAITING"
    assert "is RUNNING, not AWAITING_APPROVAL" in world.store.get_json(f"errors/approve/{running}.json")["reason"]
    unknown = "j" + "0" * 24
    assert approver.approve_from_key(f"approve/{unknown}").status == "UNKNOWN_JOB"
    assert approver.approve_from_key("approve/not-a-job").status == "BAD_KEY"
    assert world.batches.creates == 1


def test_a_waiting_job_canceled_ends_canceled_with_nothing_sent(world: Fakes) -> None:
    # Given a job waiting over its budget
    job_id = drop(world, TINY)

    # When it is canceled, and the checker ticks
    assert Canceler(wiring(world, TINY)).cancel(job_id).status == "CANCELING"
    Checker(wiring(world, TINY), seconds_left=lambda: 900.0).tick()

    # Then it ended CANCELED, every request `canceled`, and nothing was ever created
    assert status(world, job_id) is JobStatus.CANCELED
    assert world.store.get_json(manifest_key(job_id))["counts"]["canceled"] == 3
    assert world.batches.creates == 0
    # ...and an approval after it sends nothing
    approver = Approver(wiring(world, TINY), Intake(wiring(world, TINY)))
    assert approver.approve(job_id).status == "NOT_AWAITING"
    assert world.batches.creates == 0


def test_a_job_not_approved_in_time_is_dropped_by_the_sweep(world: Fakes) -> None:
    # Given a job waiting over its budget, for up to 2 hours
    job_id = drop(world, TINY)
    wired = wiring(world, TINY)

    # When a sweep runs before its expiry, then it waits on
    world.clock.advance(3600)
    assert Sweeper(wired, Intake(wired), seconds_left=lambda: 900.0).sweep().expired == []
    assert status(world, job_id) is JobStatus.AWAITING_APPROVAL

    # When one runs after it, then it is dropped as a cancel, and the checker ends it CANCELED
    world.clock.advance(3601)
    assert Sweeper(wired, Intake(wired), seconds_left=lambda: 900.0).sweep().expired == [job_id]
    Checker(wired, seconds_left=lambda: 900.0).tick()
    assert status(world, job_id) is JobStatus.CANCELED
    assert world.batches.creates == 0


def test_with_a_budget_a_job_whose_estimate_cannot_be_made_waits(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchdrop.domain.estimate import Estimator

    def broken(self: Estimator, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Estimator, "result", broken)
    job_id = drop(world, LOTS)
    assert status(world, job_id) is JobStatus.AWAITING_APPROVAL
    assert world.store.get_json(budget_key(job_id))["reason"].startswith("no estimate of its cost could be made")


def test_budgets_are_read_from_their_settings() -> None:
    assert parse_budget("B", None) is None
    assert parse_budget("B", "0") is None
    assert parse_budget("B", " 12.50 ") == Decimal("12.50")
    for bad in ("-1", "twelve", "NaN", "inf"):
        with pytest.raises(ValueError, match="B must be"):
            parse_budget("B", bad)
    estimate = {"cost_usd": {"batch_max": "0.500000", "batch_cached_expected": "0.100000"}}
    assert held_for_budget("j1", estimate, Decimal("0.5"), expires_at="t") is None
    held = held_for_budget("j1", estimate, Decimal("0.4"), expires_at="t")
    assert held is not None
    assert held["over_by_usd"] == "0.100000"


def test_an_approve_object_is_an_upload_the_submit_function_takes() -> None:
    record = {
        "eventSource": "aws:s3",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "approve/j" + "0" * 24, "versionId": "v", "size": 0}},
    }
    upload = check_record(record, "b")
    assert isinstance(upload, S3Upload)
    assert upload.is_approval
    assert not upload.is_cancel


@pytest.mark.parametrize(
    ("stack_budget", "pipeline_budget", "held"),
    [(None, 0.000001, True), (TINY, 1000, False), (TINY, None, True)],
    ids=["pipeline-over", "pipeline-above-stack", "stack-only"],
)
def test_a_pipelines_budget_stands_in_for_the_stacks(
    world: Fakes, stack_budget: Decimal | None, pipeline_budget: float | None, held: bool
) -> None:
    import json

    from tests.records_jobs import pipeline_document

    # Given a pipeline with (or without) its own budget_usd, and the stack's budget
    document = pipeline_document()
    if pipeline_budget is not None:
        document["budget_usd"] = pipeline_budget
    world.store.put("pipelines/reviews.json", json.dumps(document).encode())
    key = "inbox/reviews/a.csv"
    source = SourceRef(world.store.bucket, key, world.store.put(key, b"product,review\nlamp,bright\n"))

    # When a file of it is dropped
    Intake(wiring(world, stack_budget)).submit(source)

    # Then the pipeline's budget decides when it has one, and budget.json says whose it was
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    assert (status(world, job_id) is JobStatus.AWAITING_APPROVAL) is held
    if held:
        whose = "budget_usd of pipelines/reviews.json" if pipeline_budget else "the stack's JobBudgetUsd"
        assert world.store.get_json(budget_key(job_id))["budget_from"] == whose


@pytest.mark.parametrize("bad", [0, -1, "5", True, None])
def test_a_pipelines_budget_must_be_a_positive_amount(bad: Any) -> None:
    import json

    from batchdrop.domain.pipelines import PipelineError, parse_pipeline
    from tests.records_jobs import pipeline_document

    with pytest.raises(PipelineError, match="budget_usd: must be a positive amount"):
        parse_pipeline("p", json.dumps({**pipeline_document(), "budget_usd": bad}).encode())
    good = parse_pipeline("p", json.dumps({**pipeline_document(), "budget_usd": 2.5}).encode())
    assert good.budget_usd == Decimal("2.5")
