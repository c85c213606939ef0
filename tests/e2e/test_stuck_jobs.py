"""No job is left RECEIVED for good (docs/guarantees.md, the re-drive): on the local stack, a
submit function that dies on every try of its S3 event leaves its job RECEIVED; the sweep
re-drives it, and either the re-drive completes it (each request sent and collected once)
or, when every try dies, it is failed with its reason, manifest, errors/ entry and event."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

import batchdrop.services.intake
from batchdrop.domain.timings import Timings
from batchdrop.services.redrive import NO_ERROR, REDRIVE_TRIES
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.crash import Crash, RuntimeExited, forget_environment
from tests.e2e.support import (
    CHECKER,
    SUBMIT,
    assert_each_request_once,
    input_ids,
    read_manifest,
    requests_body,
    run_to_the_end,
    upload_bytes,
    with_settings,
)

# A crashed invocation flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

STACK = {"latency": 0.1}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.05}
# Every job past its bound at once, and each re-drive due straight after the last.
REDRIVE_NOW = Timings(sweep_min_age=0.0, stuck_after=0.0, redrive_every=0.0)


class Splits:
    """The split of a file, made to kill its process on the first `dying` calls."""

    def __init__(self, dying: float) -> None:
        self.dying = dying
        self.calls = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Splits:
        original = batchdrop.services.intake.split_object

        @functools.wraps(original)
        def split_object(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.dying:
                raise Crash(f"split {self.calls}")
            return original(*args, **kwargs)

        monkeypatch.setattr(batchdrop.services.intake, "split_object", split_object)
        return self


def survive(handler: Any) -> Any:
    """The handler as Lambda runs it: a process that dies fails its invocation, and the
    next one starts in a fresh environment."""

    @functools.wraps(handler)
    def invoke(event: dict[str, Any], context: Any) -> Any:
        try:
            return handler(event, context)
        except Crash as crash:
            forget_environment()
            raise RuntimeExited(f"Runtime exited: simulated crash {crash}") from None

    return invoke


@pytest.fixture
def dying_runner(stack: LocalStack, handlers: dict[str, Any]) -> LocalRunner:
    stack.emulator_control().reset(faults=True)
    return LocalRunner(stack, survive(handlers[SUBMIT]), survive(handlers[CHECKER]), **RUNNER)


def job_item(stack: LocalStack, job_id: str) -> dict[str, Any]:
    key = {"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "JOB"}}
    return stack.client("dynamodb").get_item(TableName=stack.table_name, Key=key, ConsistentRead=True)["Item"]


def left_received(stack: LocalStack, runner: LocalRunner, tmp_path: Path, key: str) -> tuple[str, bytes]:
    """Upload a file and deliver its event: every try dies, and the job stays RECEIVED."""
    body = requests_body(tmp_path, 12)
    job_id = upload_bytes(stack, key, body)
    runner.deliver_pending()
    tries = [invocation.error for invocation in runner.invocations_of(SUBMIT)]
    assert len(tries) == 3
    assert all("Runtime exited" in str(error) for error in tries), tries
    assert job_item(stack, job_id)["status"]["S"] == "RECEIVED"
    return job_id, body


def test_a_job_whose_every_try_dies_is_redriven_then_failed_with_its_reason_and_event(
    stack: LocalStack,
    dying_runner: LocalRunner,
    events_published: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a file whose reading kills the submit function every time, its job left RECEIVED
    splits = Splits(dying=float("inf")).install(monkeypatch)
    job_id, _ = left_received(stack, dying_runner, tmp_path, "inbox/stuck/always.jsonl")

    # When the sweep runs past the bound (Lambda tries its event 3 times, each a re-drive), then again
    with_settings(stack, monkeypatch, timings=REDRIVE_NOW)
    redriving = dying_runner.sweep()
    failing = dying_runner.sweep()

    # Then each re-drive was counted and died, and the next sweep failed the job with its reason
    assert "Runtime exited" in str(redriving.error)
    assert splits.calls == 3 + REDRIVE_TRIES
    assert failing.error is None
    assert failing.result["stuck_failed"] == [job_id]
    item = job_item(stack, job_id)
    reason = f"the file could not be read after {REDRIVE_TRIES} tries: {NO_ERROR}"
    assert (item["status"]["S"], item["redrives"]["N"], item["reason"]["S"]) == ("FAILED", "3", reason)
    manifest = read_manifest(stack, job_id)
    assert (manifest["status"], manifest["reason"]) == ("FAILED", reason)
    errors = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=f"errors/{job_id}/failure.json")
    assert reason in errors["Body"].read().decode()
    assert [(event["job_id"], event["status"]) for event in events_published] == [(job_id, "FAILED")]
    # ... and nothing drives it again
    assert dying_runner.sweep().result["stuck_failed"] == []
    assert stack.emulator_control().counters()["creates_accepted"] == 0


def test_a_job_whose_event_tries_all_died_is_completed_by_the_redrive_each_request_once(
    stack: LocalStack,
    dying_runner: LocalRunner,
    events_published: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a job left RECEIVED by a process that died on each of its event's three tries
    Splits(dying=3).install(monkeypatch)
    job_id, body = left_received(stack, dying_runner, tmp_path, "inbox/stuck/once.jsonl")

    # When the sweep re-drives it, and the checker ticks
    with_settings(stack, monkeypatch, timings=REDRIVE_NOW)
    sweep = dying_runner.sweep()
    manifest = run_to_the_end(stack, dying_runner, job_id, timeout=30)

    # Then the one re-drive completed it: one batch, each request sent and collected once
    assert sweep.error is None
    assert sweep.result["redriven"] == [job_id]
    assert manifest["status"] == "COMPLETED"
    assert_each_request_once(stack, manifest, input_ids(body))
    control = stack.emulator_control()
    assert control.counters()["creates_accepted"] == 1
    assert control.custom_ids(minimum=2) == {}
    assert job_item(stack, job_id)["redrives"]["N"] == "1"
    assert [(event["job_id"], event["status"]) for event in events_published] == [(job_id, "COMPLETED")]
