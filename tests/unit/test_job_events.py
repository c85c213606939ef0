"""The job events on the stack's bus (domain/job_events.py): which one each state change sends,
by which call, with what, against the in-memory fakes; and the adapter that puts them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from batchdrop.adapters.events import EventPublisher
from batchdrop.domain import job_events
from batchdrop.domain.job_events import (
    AWAITING_APPROVAL,
    CANCELED,
    COMPLETED,
    FAILED,
    RECEIVED,
    SUBMITTED,
    JobEvent,
    report_key,
)
from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.records import SourceRef
from batchdrop.domain.states import JobStatus
from batchdrop.errors import CheckerItemsFailedError, EventNotPublishedError, ProviderRejectedError
from batchdrop.services.approval import Approver
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, errored, request

pytestmark = pytest.mark.unit

COMMON = {"schema_version", "job_id", "bucket", "source_key", "status", "counts", "cost"}
KEYS = {"manifest_key", "outputs", "report_key"}


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def drop(world: Fakes, ids: str, name: str = "file", **settings: Any) -> str:
    source = world.upload(f"inbox/{name}.jsonl", [request(cid) for cid in ids])
    return Intake(world.wiring(**settings)).submit(source).job_id


def tick(world: Fakes, **settings: Any) -> None:
    Checker(world.wiring(**settings), seconds_left=lambda: 900.0).tick()


def end_all(world: Fakes, results: dict[str, Any] | None = None) -> None:
    for batch_id, batch in world.batches.batches.items():
        if batch["processing_status"] != "ended":
            world.batches.end(batch_id, results)


def sent(world: Fakes, job_id: str) -> list[tuple[str, str]]:
    """(detail-type, status) of each event about the job, in the order sent."""
    return [(e.detail_type, e.detail["status"]) for e in world.events.sent if e.detail["job_id"] == job_id]


def detail(world: Fakes, job_id: str, detail_type: str) -> dict[str, Any]:
    [found] = [e.detail for e in world.events.sent if e.detail["job_id"] == job_id and e.detail_type == detail_type]
    return found


def test_a_job_that_runs_says_received_submitted_and_completed_once_each(world: Fakes) -> None:
    # When a job is dropped, its event delivered twice, and its batch ends
    job_id = drop(world, "ab")
    job = world.state.get_job(job_id)
    assert job is not None
    assert Intake(world.wiring()).submit(job.source).duplicate
    end_all(world)
    tick(world)
    tick(world)

    # Then each state change was announced once, in order
    assert sent(world, job_id) == [(RECEIVED, "RECEIVED"), (SUBMITTED, "RUNNING"), (COMPLETED, "COMPLETED")]
    received = detail(world, job_id, RECEIVED)
    assert received == {
        "schema_version": 1,
        "job_id": job_id,
        "bucket": world.store.bucket,
        "source_key": "inbox/file.jsonl",
        "status": "RECEIVED",
        "counts": None,
        "cost": None,
        "manifest_key": None,
        "outputs": None,
        "report_key": None,
    }
    # ...the submitted one with the split's counts and the estimate's cost
    submitted = detail(world, job_id, SUBMITTED)
    estimate = world.store.get_json(f"work/{job_id}/estimate.json")["cost_usd"]
    assert submitted["counts"] == {"requests": 2, "rejected": 0}
    assert submitted["cost"] == {
        "estimated_usd": estimate["batch_cached_expected"],
        "estimated_max_usd": estimate["batch_max"],
    }
    assert (submitted["manifest_key"], submitted["report_key"]) == (None, None)
    # ...and the completed one with the manifest's figures and where to find them
    completed = detail(world, job_id, COMPLETED)
    manifest = world.store.get_json(manifest_key(job_id))
    assert completed["counts"] == manifest["counts"]
    assert completed["cost"]["batch_usd"] == manifest["cost"]["batch_usd"]
    assert (completed["manifest_key"], completed["report_key"]) == (manifest_key(job_id), report_key(job_id))
    assert set(completed) == COMMON | KEYS


def test_a_job_with_errors_is_completed_and_a_file_with_no_valid_line_failed(world: Fakes) -> None:
    some_errored = drop(world, "ab", name="errs")
    end_all(world, {"b": errored("invalid_request_error")})
    tick(world)
    assert sent(world, some_errored)[-1] == (COMPLETED, "COMPLETED_WITH_ERRORS")

    source = world.upload("inbox/bad.jsonl", [b"not json"])
    failed = Intake(world.wiring()).submit(source).job_id
    assert sent(world, failed) == [(RECEIVED, "RECEIVED"), (FAILED, "FAILED")]
    said = detail(world, failed, FAILED)
    assert "all 1 lines were rejected" in said["reason"]
    assert (said["manifest_key"], said["report_key"]) == (manifest_key(failed), None)  # no checker report
    assert said["counts"]["rejected"] == 1
    assert set(said) == COMMON | KEYS | {"reason"}


def test_a_job_over_its_budget_awaits_then_is_submitted_when_approved(world: Fakes) -> None:
    budget = Decimal("0.000001")
    job_id = drop(world, "abc", job_budget_usd=budget)
    assert sent(world, job_id) == [(RECEIVED, "RECEIVED"), (AWAITING_APPROVAL, "AWAITING_APPROVAL")]
    awaiting = detail(world, job_id, AWAITING_APPROVAL)
    held = world.store.get_json(f"errors/{job_id}/budget.json")
    assert {name: awaiting[name] for name in held} == held  # budget.json's fields, as they are
    assert awaiting["counts"] == {"requests": 3, "rejected": 0}
    assert awaiting["cost"]["estimated_max_usd"] == held["estimate_max_usd"]

    wired = world.wiring(job_budget_usd=budget)
    Approver(wired, Intake(wired)).approve(job_id)
    assert sent(world, job_id)[2:] == [(SUBMITTED, "RUNNING")]


def test_a_job_canceled_while_it_waits_says_canceled_and_not_submitted(world: Fakes) -> None:
    job_id = drop(world, "ab", job_budget_usd=Decimal("0.000001"))
    Canceler(world.wiring()).cancel(job_id)
    tick(world)
    # ...and never said it was submitted: its shards were closed unsent
    assert sent(world, job_id) == [
        (RECEIVED, "RECEIVED"),
        (AWAITING_APPROVAL, "AWAITING_APPROVAL"),
        (CANCELED, "CANCELED"),
    ]
    said = detail(world, job_id, CANCELED)
    assert said["counts"]["canceled"] == 2
    assert said["report_key"] == report_key(job_id)


def test_a_job_a_full_queue_held_back_is_submitted_by_the_tick_that_sends_it(world: Fakes) -> None:
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    job_id = drop(world, "ab")
    assert sent(world, job_id) == [(RECEIVED, "RECEIVED")]
    tick(world)
    tick(world)
    assert sent(world, job_id) == [(RECEIVED, "RECEIVED"), (SUBMITTED, "RUNNING")]


def test_a_failed_publish_of_the_end_leaves_the_job_open_and_the_next_tick_sends_it(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = drop(world, "ab")
    end_all(world)

    def away(event: JobEvent) -> None:
        raise EventNotPublishedError("EventBridge is away")

    monkeypatch.setattr(world.events, "publish", away)
    with pytest.raises(CheckerItemsFailedError):
        tick(world)
    assert world.state.jobs[job_id].status is JobStatus.RUNNING
    monkeypatch.undo()
    tick(world)
    assert world.events.ends() == [(COMPLETED, job_id, "COMPLETED")]


def test_a_records_jobs_end_names_its_outputs() -> None:
    outputs = {"csv": "results/j1/outputs/rows.csv", "jsonl": "results/j1/outputs/rows.jsonl"}
    manifest = build_manifest(
        job_id="j1",
        source={"bucket": "b", "key": "inbox/reviews/a.csv", "version_id": "v"},
        status=JobStatus.COMPLETED,
        requested=1,
        rejected=0,
        counts={"succeeded": 1},
        batches=[],
        usage_by_model={},
        result_keys=[],
        rejected_key=None,
        created_at="t0",
        completed_at="t1",
        outputs=outputs,
    )
    event = job_events.ended(manifest)
    assert (event.detail_type, event.detail["outputs"], event.detail["source_key"]) == (
        COMPLETED,
        outputs,
        "inbox/reviews/a.csv",
    )


class Recorder:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Entries)
        return self.answer


def test_the_publisher_puts_one_entry_on_the_bus_and_raises_when_it_is_refused() -> None:
    event = job_events.received("j1", SourceRef("b", "inbox/a.jsonl", "v1"))
    client = Recorder({"FailedEntryCount": 0, "Entries": [{"EventId": "e1"}]})
    EventPublisher("bus", client=client).publish(event)
    [entry] = client.entries
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == ("batchdrop", RECEIVED, "bus")
    refusing = Recorder({"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]})
    with pytest.raises(EventNotPublishedError, match="'Batchdrop Job Received' event not accepted"):
        EventPublisher("bus", client=refusing).publish(event)
