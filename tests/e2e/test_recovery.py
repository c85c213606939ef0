"""Transient failures are retried, final ones are not, refused bodies and canceled jobs
still give every request one outcome. Each test runs the pipeline on the local
stack with the emulator's faults and checks the result files and the emulator's counters."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchdrop.adapters.batches import BatchesApi
from batchdrop.domain.jobs import RETRYABLE_ERRORS, error_type, job_id_for
from batchdrop.domain.records import SourceRef
from batchdrop.domain.timings import Timings
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import request
from tests.e2e.support import (
    MAX_ATTEMPTS,
    SUBMIT,
    assert_each_request_once,
    input_ids,
    job_status,
    open_uploads,
    read,
    requests_body,
    result_lines,
    run_to_the_end,
    shard_states,
    upload_bytes,
    wired,
    with_settings,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack and runner (tests/e2e/conftest.py)
# A batch takes 2 s and a cancel 0.1 s, so a cancel sent within 1.9 s of the create lands
# mid-batch even on a loaded machine (with the default cancel time of 1 s, a create and cancel
# 1 s apart on a busy CI runner let the batch end on its own first).
STACK = {"latency": 2.0, "cancel_latency": 0.1}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True  # counters and custom_ids start from zero in each test, faults lifted after it


def _attempt_of(part_key: str) -> int:
    found = re.search(r"-a(\d+)\.jsonl$", part_key)
    return int(found.group(1)) if found else 1


def test_transient_failures_are_retried_until_they_succeed_or_attempts_run_out(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a provider where a third of the requests error transiently or expire, on each attempt
    control = stack.emulator_control()
    control.set_faults({"errored": {"api_error": 0.2, "overloaded_error": 0.1}, "expired": 0.1})
    body = requests_body(tmp_path, 90)
    job_id = upload_bytes(stack, "inbox/retry/requests.jsonl", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id)

    # Then every request has one outcome, from the last attempt that sent it
    assert_each_request_once(stack, manifest, input_ids(body))
    sent = control.custom_ids(minimum=1)
    retried = {custom_id for custom_id, times in sent.items() if times > 1}
    assert retried, "the fault rates gave no retry: the test would prove nothing"
    for custom_id, [(part, line)] in result_lines(stack, manifest).items():
        attempt = _attempt_of(part)
        assert sent[custom_id] == attempt  # sent once per attempt, and its outcome is the last one's
        result = line["result"]
        transient = result["type"] == "expired" or error_type(result) in RETRYABLE_ERRORS
        assert not transient or attempt == MAX_ATTEMPTS  # a transient outcome is final only at the last attempt
    # And the manifest records the attempts: one batch each, and where each request ended
    attempts = manifest["batches"][0]["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert control.counters()["creates_accepted"] == len(attempts) == manifest["attempts"]["batches_created"]
    assert manifest["attempts"]["requests_retried"] == sum(times - 1 for times in sent.values())
    assert sum(manifest["attempts"]["final_at_attempt"].values()) == 90
    assert open_uploads(stack, f"results/{job_id}/") == []


def test_invalid_requests_are_final_and_never_sent_again(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a file where one request asks for more output tokens than the model allows
    lines = [request(n, f"text {n}") for n in range(5)]
    lines.append(request(5, "too long", max_tokens=10_000_000))
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    job_id = upload_bytes(stack, "inbox/invalid/requests.jsonl", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id)

    # Then the invalid request errored once, as invalid_request_error, and nothing was retried
    outcomes = assert_each_request_once(stack, manifest, input_ids(body))
    assert outcomes == {"succeeded": 5, "errored": 1}
    [(_, line)] = result_lines(stack, manifest)[lines[5]["custom_id"]]
    assert error_type(line["result"]) == "invalid_request_error"
    assert stack.emulator_control().custom_ids(minimum=2) == {}
    assert manifest["status"] == "COMPLETED_WITH_ERRORS"


def test_a_body_the_provider_refuses_gives_each_request_an_errored_result_without_retrying(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a provider that answers 400 to the create, every time
    control = stack.emulator_control()
    control.set_faults({"http_errors": [{"endpoint": "create", "status": 400, "rate": 1}]})
    body = requests_body(tmp_path, 12)
    job_id = upload_bytes(stack, "inbox/refused/requests.jsonl", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id)

    # Then each request is errored with the refusal, once; the create was tried once, never again
    outcomes = assert_each_request_once(stack, manifest, input_ids(body))
    assert outcomes == {"errored": 12}
    assert control.counters()["creates_accepted"] == 0
    assert len([i for i in runner.invocations_of(SUBMIT) if i.error is None]) == 1
    attempt = manifest["batches"][0]["attempts"][0]
    assert attempt["batch_id"] is None
    assert "400" in attempt["refused"]
    for found in result_lines(stack, manifest).values():
        assert "the batch was refused" in found[0][1]["result"]["error"]["error"]["message"]


def test_a_canceled_job_ends_canceled_with_its_results_so_far(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a job whose batch has just been created (the emulator works through it in order)
    body = requests_body(tmp_path, 40)
    job_id = upload_bytes(stack, "inbox/cancel/requests.jsonl", body)

    # When an upstream system drops cancel/<job_id> right after
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"cancel/{job_id}", Body=b"")
    runner.deliver_pending()
    assert shard_states(stack, job_id) == ["SUBMITTED"]
    manifest = run_to_the_end(stack, runner, job_id)

    # Then the job is CANCELED, the batch was canceled, and every request has one outcome
    assert manifest["status"] == "CANCELED" == job_status(stack, job_id)
    outcomes = assert_each_request_once(stack, manifest, input_ids(body))
    assert outcomes["canceled"] > 0
    assert stack.emulator_control().counters()["creates_accepted"] == 1


def test_a_job_canceled_before_its_shard_was_sent_sends_nothing(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a job whose shard waits for room in a full provider queue
    control = stack.emulator_control()
    control.set_faults({"queue_limit": 5})
    body = requests_body(tmp_path, 17)
    job_id = upload_bytes(stack, "inbox/cancel-early/requests.jsonl", body)
    runner.deliver_pending()
    assert shard_states(stack, job_id) == ["PENDING"]

    # When the job is canceled, and the queue then has room
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"cancel/{job_id}", Body=b"")
    runner.deliver_pending()
    control.set_faults({})
    manifest = run_to_the_end(stack, runner, job_id)

    # Then nothing was sent, and every request came back canceled, once
    assert manifest["status"] == "CANCELED"
    assert assert_each_request_once(stack, manifest, input_ids(body)) == {"canceled": 17}
    assert control.counters()["creates_accepted"] == 0


def test_a_cancel_naming_no_job_is_refused_with_a_reason_beside_it(stack: LocalStack, runner: LocalRunner) -> None:
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key="cancel/not-a-job", Body=b"")
    runner.deliver_pending()
    assert [i.error for i in runner.invocations_of(SUBMIT)] == [None]  # no retry of a bad request
    reason = json.loads(read(stack, "errors/cancel/not-a-job.json"))
    assert reason["key"] == "cancel/not-a-job"
    assert "j + 24 hex" in reason["reason"]


def _together(*work: Any) -> None:
    """Run callables in threads at once; re-raise the first error."""
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]


def test_two_checkers_collecting_the_same_batch_write_each_output_once(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job whose batch has ended
    body = requests_body(tmp_path, 25)
    job_id = upload_bytes(stack, "inbox/race/requests.jsonl", body)
    runner.deliver_pending()
    stack.emulator_control().end()

    # When two checkers stream its results at the same time (both past reading the shard)
    barrier = threading.Barrier(2, timeout=30)
    stream = BatchesApi.result_lines

    def in_step(self: BatchesApi, batch: dict[str, Any]) -> Iterator[bytes]:
        barrier.wait()
        yield from stream(self, batch)

    monkeypatch.setattr(BatchesApi, "result_lines", in_step)
    services = wired(stack)
    checkers = [Checker(services, seconds_left=lambda: 900.0) for _ in range(2)]
    reports: list[Any] = []
    _together(*(lambda c=checker: reports.append(c.tick()) for checker in checkers))
    monkeypatch.setattr(BatchesApi, "result_lines", stream)
    manifest = run_to_the_end(stack, runner, job_id)

    # Then both streamed, one recorded the collection, and each output exists in one version
    assert not barrier.broken
    assert sorted(len(report.collected) for report in reports) == [0, 1]
    s3 = stack.client("s3")
    for key in [*manifest["results"], f"results/{job_id}/manifest.json"]:
        versions = s3.list_object_versions(Bucket=stack.bucket_name, Prefix=key)["Versions"]
        assert len([v for v in versions if v["Key"] == key]) == 1, key
    assert_each_request_once(stack, manifest, input_ids(body))
    assert open_uploads(stack, f"results/{job_id}/") == []


def test_the_create_lease_lets_one_create_through_at_a_time(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two uploads handled by two submit invocations at once, each create taking a while
    control = stack.emulator_control()
    control.set_faults({"stalls": [{"endpoint": "create", "seconds": 1.0, "rate": 1}]})
    bodies = [requests_body(tmp_path, 9), requests_body(tmp_path, 9)]
    sources = []
    for n, body in enumerate(bodies):
        key = f"inbox/lease/{n}.jsonl"
        version = stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"]
        runner.lose_event(key, version)  # these two are handled below, not by the runner
        sources.append(SourceRef(stack.bucket_name, key, version))
    in_flight: list[int] = []
    most: list[int] = []
    create = BatchesApi.create

    def counted(self: BatchesApi, body: Any, size: int, timeout: float) -> dict[str, Any]:
        in_flight.append(1)
        most.append(len(in_flight))
        try:
            return create(self, body, size, timeout)
        finally:
            in_flight.pop()

    monkeypatch.setattr(BatchesApi, "create", counted)
    services = wired(stack, timings=Timings(create_timeout=10.0))
    submitters = [Intake(services) for _ in sources]

    # When both run at the same moment
    _together(
        *(lambda s=submitter, o=source: s.submit(o) for submitter, source in zip(submitters, sources, strict=True))
    )

    # Then the second create waited for the first: they never overlapped, and each job was sent once
    assert most == [1, 1]
    for source, body in zip(sources, bodies, strict=True):
        job_id = job_id_for(source.bucket, source.key, source.version_id)
        manifest = run_to_the_end(stack, runner, job_id)
        assert_each_request_once(stack, manifest, input_ids(body))
    assert control.counters()["creates_accepted"] == 2


def test_an_object_whose_event_was_lost_is_started_by_the_sweeper(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an upload whose S3 event never arrives, and one delivered as usual
    with_settings(stack, monkeypatch, timings=Timings(sweep_min_age=0.0))
    lost_body, seen_body = requests_body(tmp_path, 7), requests_body(tmp_path, 5)
    response = stack.client("s3").put_object(Bucket=stack.bucket_name, Key="inbox/lost/a.jsonl", Body=lost_body)
    runner.lose_event("inbox/lost/a.jsonl", response["VersionId"])
    seen_job = upload_bytes(stack, "inbox/lost/b.jsonl", seen_body)
    runner.deliver_pending()
    lost_job = job_id_for(stack.bucket_name, "inbox/lost/a.jsonl", response["VersionId"])
    assert job_status(stack, lost_job) is None

    # When the sweeper runs (twice: a second sweep finds nothing more to do)
    first, second = runner.sweep(), runner.sweep()

    # Then it started the lost one only, once, and the job completes
    assert first.error is None
    assert second.error is None
    assert first.result["started"] == [lost_job]
    assert second.result["started"] == []
    assert seen_job not in first.result["started"]
    manifest = run_to_the_end(stack, runner, lost_job)
    assert manifest["status"] == "COMPLETED"
    assert_each_request_once(stack, manifest, input_ids(lost_body))


def test_a_batch_open_past_its_expiry_is_flagged_and_canceled(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch whose expiry (plus the margin) the checker's clock is past
    body = requests_body(tmp_path, 6)
    job_id = upload_bytes(stack, "inbox/overdue/requests.jsonl", body)
    runner.deliver_pending()
    with_settings(stack, monkeypatch, timings=Timings(expiry_margin=-86_400.0))  # "now" is past expires_at

    # When the checker ticks
    tick = runner.tick()

    # Then the batch is flagged (the BatchesPastExpiry metric) and asked to stop
    assert tick.error is None
    assert len(tick.result["past_expiry"]) == 1
    with_settings(stack, monkeypatch, timings=Timings())
    manifest = run_to_the_end(stack, runner, job_id)
    assert_each_request_once(stack, manifest, input_ids(body))


def test_the_same_event_twenty_times_from_eight_threads_makes_one_job_and_one_batch(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given one uploaded version, its event handled 20 times by 8 concurrent invocations
    body = requests_body(tmp_path, 14)
    key = "inbox/storm/requests.jsonl"
    version = stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"]
    runner.lose_event(key, version)  # the runner's own delivery is replaced by the storm below
    source = SourceRef(stack.bucket_name, key, version)
    services = wired(stack)
    outcomes: list[Any] = []
    work = [lambda: outcomes.append(Intake(services).submit(source)) for _ in range(20)]

    # When they run eight at a time
    for start in range(0, len(work), 8):
        _together(*work[start : start + 8])

    # Then there is one job, its shard objects were written once, one batch was created
    job_id = job_id_for(stack.bucket_name, key, version)
    assert {outcome.job_id for outcome in outcomes} == {job_id}
    assert sum(outcome.submitted for outcome in outcomes) == 1
    shard_versions = stack.client("s3").list_object_versions(Bucket=stack.bucket_name, Prefix=f"work/{job_id}/")
    shard_keys = [v["Key"] for v in shard_versions["Versions"] if "/shard-" in v["Key"]]
    assert shard_keys == [f"work/{job_id}/shard-00000.jsonl"]
    manifest = run_to_the_end(stack, runner, job_id)
    assert_each_request_once(stack, manifest, input_ids(body))
    assert stack.emulator_control().counters()["creates_accepted"] == 1
