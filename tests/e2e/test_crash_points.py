"""A crash at any step of submit or of the checker loses nothing and sends nothing twice
(docs/guarantees.md, crash consistency). Each test kills the
process once at one step (tests/e2e/crash.py: a BaseException, no cleanup, the cached
clients dropped), lets Lambda's retry and the next ticks run on the local stack, and
checks from the emulator's counters and the result files that every request went out
once and came back once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

import batchdrop.adapters.objects
from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.objects import MultipartWriter
from batchdrop.adapters.state import StateTable
from batchdrop.domain.timings import Timings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.crash import CrashPoint, RuntimeExited, writing_results
from tests.e2e.support import (
    CHECKER,
    SUBMIT,
    input_ids,
    read_manifest,
    requests_body,
    result_ids,
    upload_bytes,
    with_settings,
)

# A crashed invocation flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack (tests/e2e/conftest.py), and the settings of the runner each test
# builds around handlers that crash
STACK = {"latency": 0.3}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}


@dataclass(frozen=True)
class Case:
    """Where the process dies, and what the pipeline must show once the submit event is done."""

    owner: type
    method: str
    when: Literal["before", "after"]
    nth: int = 1  # the nth call that `counts`
    counts: Callable[..., bool] | None = None
    states_after_submit: tuple[str, ...] = ("SUBMITTED",)
    creates_after_submit: int = 1  # batches the emulator accepted by then: the retry resent nothing
    requests: int = 30
    shards: int = 1
    in_checker: bool = False
    reconciled: bool = False  # settled by the checker's listing: leases shortened to seconds
    small_parts: bool = False  # results go out as a multipart upload of 1 KiB parts
    events: int = 1  # completion events published

    def crash_point(self) -> CrashPoint:
        return CrashPoint(self.owner, self.method, self.when, self.nth, self.counts)


CASES = {
    # --- submit: Lambda retries the event
    "submit-after-shard-write": Case(StateTable, "record_shards", "before"),
    "submit-after-intent": Case(
        StateTable,
        "begin_submit",
        "after",
        states_after_submit=("SUBMITTING",),
        creates_after_submit=0,
        reconciled=True,
    ),
    "submit-after-accepted-before-recorded": Case(
        BatchesApi, "create", "after", states_after_submit=("SUBMITTING",), reconciled=True
    ),
    "submit-after-accepted-before-recorded-second-shard": Case(
        BatchesApi,
        "create",
        "after",
        nth=2,
        states_after_submit=("SUBMITTED", "SUBMITTING"),
        creates_after_submit=2,
        requests=40,
        shards=2,  # of 20 requests each: the first shard's batch matches too, but is owned
        reconciled=True,
    ),
    "submit-after-recording": Case(StateTable, "mark_submitted", "after"),
    # --- checker: its schedule is not retried; the next tick resumes
    "checker-mid-results-stream": Case(
        MultipartWriter, "write", "before", nth=10, counts=writing_results, requests=50, in_checker=True
    ),
    "checker-mid-results-stream-multipart": Case(
        MultipartWriter,
        "write",
        "before",
        nth=10,
        counts=writing_results,
        requests=50,
        in_checker=True,
        small_parts=True,
    ),
    "checker-after-results-before-collected": Case(StateTable, "mark_collected", "before", in_checker=True),
    # The manifest and the event went out before the crash: the next tick writes the manifest
    # again and sends the event again (at least once; consumers dedupe on job_id).
    "checker-after-manifest-before-job-closed": Case(StateTable, "finish_job", "before", in_checker=True, events=2),
}


def _prepare(case: Case, stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    settings: dict[str, Any] = {}
    if case.reconciled:
        # A create that may have gone through is settled seconds after its intent, not minutes.
        settings["timings"] = Timings(create_timeout=2.0, lease_margin=0.5, grace=2.0)
    if case.shards > 1:
        settings["shard_max_requests"] = -(-case.requests // case.shards)
    with_settings(stack, monkeypatch, **settings)
    if case.small_parts:
        import moto.s3.models

        monkeypatch.setattr(batchdrop.adapters.objects, "PART_BYTES", 1024)
        monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1)  # moto serves from this process


def _upload(stack: LocalStack, tmp_path: Path, key: str, requests: int) -> tuple[str, set[str]]:
    body = requests_body(tmp_path, requests)
    return upload_bytes(stack, key, body), set(input_ids(body))


def _job_items(stack: LocalStack, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    items = stack.client("dynamodb").query(
        TableName=stack.table_name,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}},
        ConsistentRead=True,
    )["Items"]
    job = next(item for item in items if item["SK"]["S"] == "JOB")
    return job, sorted((item for item in items if item["SK"]["S"].startswith("SHARD#")), key=lambda i: i["SK"]["S"])


def _finished(stack: LocalStack, job_id: str) -> bool:
    keys = stack.client("s3").list_objects_v2(Bucket=stack.bucket_name, Prefix=f"results/{job_id}/manifest.json")
    return keys.get("KeyCount", 0) > 0 and _job_items(stack, job_id)[0]["status"]["S"] == "COMPLETED"


# The workspace's single-flight create lease, if the table has one.
CREATE_LEASE = {"PK": {"S": "CTRL"}, "SK": {"S": "CREATE_LEASE"}}


def _create_lease(stack: LocalStack) -> dict[str, Any] | None:
    key = {"TableName": stack.table_name, "Key": CREATE_LEASE, "ConsistentRead": True}
    return stack.client("dynamodb").get_item(**key).get("Item")


def _batch_ids(shard: dict[str, Any]) -> list[str]:
    """The batches the manifest names for one shard (one per attempt that was sent)."""
    return [attempt["batch_id"] for attempt in shard["attempts"] if attempt["batch_id"]]


@pytest.mark.parametrize("name", list(CASES))
def test_a_crash_is_resumed_by_the_next_invocation_with_every_request_sent_and_collected_once(
    name: str,
    stack: LocalStack,
    handlers: dict[str, Any],
    events_published: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    case = CASES[name]
    control = stack.emulator_control()
    control.reset(faults=True)  # counters and custom_ids start from zero
    # A workspace with no create in flight, whatever an earlier test's crash left held
    stack.client("dynamodb").delete_item(TableName=stack.table_name, Key=CREATE_LEASE)
    _prepare(case, stack, monkeypatch)
    point = case.crash_point().install(monkeypatch)
    runner = LocalRunner(
        stack,
        submit_handler=point.survive(handlers[SUBMIT]),
        checker_handler=point.survive(handlers[CHECKER]),
        **RUNNER,
    )

    # Given a file dropped into inbox/, and a process that dies once at this step
    job_id, custom_ids = _upload(stack, tmp_path, f"inbox/crash/{name}.jsonl", case.requests)

    # When the submit function handles the event (and Lambda retries it if it died)
    runner.deliver_pending()
    attempts = [invocation.error is None for invocation in runner.invocations_of(SUBMIT)]
    assert attempts == ([True] if case.in_checker else [False, True])
    assert tuple(shard["state"]["S"] for shard in _job_items(stack, job_id)[1]) == case.states_after_submit
    assert control.counters()["creates_accepted"] == case.creates_after_submit

    # ... and the checker ticks until the job is closed, dying once if the step is its own
    assert runner.drain(timeout=30, idle=lambda: _finished(stack, job_id) and not stack.open_batch_count())

    # Then the crash happened, once, and was the only failure: Lambda's retry of the submit
    # event, or the checker's next tick (its schedule is not retried), picked up the work
    assert point.fired == 1
    failed = [(i.function_logical_id, i.error) for i in runner.invocations if i.error]
    assert len(failed) == 1, failed
    assert failed[0][0] == (CHECKER if case.in_checker else SUBMIT)
    assert f"{RuntimeExited.__name__}: Runtime exited: simulated crash {point.name}" in str(failed[0][1])
    assert all(failure.function_logical_id == CHECKER for failure in runner.failures)

    # ... one batch per shard was created, and no request was sent twice
    manifest = read_manifest(stack, job_id)
    assert manifest["status"] == "COMPLETED"
    assert control.counters()["creates_accepted"] == case.shards
    assert control.custom_ids(minimum=2) == {}
    batch_ids = [batch_id for shard in manifest["batches"] for batch_id in _batch_ids(shard)]
    assert len(manifest["batches"]) == len(batch_ids) == len(set(batch_ids)) == case.shards
    assert sum(batch["requests"] for batch in manifest["batches"]) == case.requests
    assert manifest["counts"]["requests"] == manifest["counts"]["succeeded"] == case.requests

    # ... every request came back exactly once, in the parts the manifest names and no others
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.bucket_name, Prefix=f"results/{job_id}/")["Contents"]
    parts = sorted(item["Key"] for item in listed if not item["Key"].endswith(("/manifest.json", "/report.html")))
    assert parts == sorted(manifest["results"])
    returned = result_ids(stack, manifest)
    assert set(returned) == custom_ids
    assert set(returned.values()) == {1}

    # ... the job is closed and announced; no upload was left half done, and no create
    # lease is left held for the next upload's creates to wait out
    job, shards = _job_items(stack, job_id)
    assert job["status"]["S"] == "COMPLETED"
    assert {shard["state"]["S"] for shard in shards} == {"COLLECTED"}
    assert [event["job_id"] for event in events_published] == [job_id] * case.events
    uploads = s3.list_multipart_uploads(Bucket=stack.bucket_name).get("Uploads", [])
    left = [upload["Key"] for upload in uploads if job_id in upload["Key"]]
    assert left == [], "a killed writer's multipart upload was never aborted (only the 7-day lifecycle rule would)"
    lease = _create_lease(stack)
    assert lease is None, f"the create lease is still held ({lease}): the next upload's creates wait it out"
