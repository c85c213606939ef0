"""The pipeline as a user sees it: drop a file into inbox/ on the local stack (moto, the
emulator, the runner calling the real handlers as Lambda does) and read results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchdrop.domain.jobs import job_id_for
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from tests.e2e.support import put_version, read, read_manifest, result_ids

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.3}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = False  # the emulator's counters run on across the module's tests


def test_a_file_over_the_request_limit_ends_as_one_job_of_two_batches(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a file of 120,000 valid requests (over the API's 100,000 a batch)
    source = tmp_path / "big.jsonl"
    write_requests(source, 120_000)
    creates_before = stack.emulator_control().counters()["creates_accepted"]

    # When it is dropped into inbox/ and the pipeline runs until it is quiet
    version = put_version(stack, "inbox/nightly/big.jsonl", source.read_bytes())
    assert runner.drain(timeout=400)

    # Then one job made 2 batches, and every request is in the results exactly once
    job_id = job_id_for(stack.bucket_name, "inbox/nightly/big.jsonl", version)
    manifest = read_manifest(stack, job_id)
    assert manifest["status"] == "COMPLETED"
    assert [b["requests"] for b in manifest["batches"]] == [100_000, 20_000]
    assert stack.emulator_control().counters()["creates_accepted"] - creates_before == 2
    ids = result_ids(stack, manifest)
    assert len(ids) == 120_000
    assert set(ids.values()) == {1}
    counts = manifest["counts"]
    assert counts["requests"] == counts["succeeded"] == 120_000
    assert manifest["source"]["key"] == "inbox/nightly/big.jsonl"
    assert float(manifest["cost"]["batch_usd"]) * 2 == pytest.approx(float(manifest["cost"]["standard_usd"]))


def test_bad_lines_go_to_errors_and_the_rest_is_processed(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a file with good lines and, among them, three bad ones
    good = [json.dumps({"custom_id": f"ok-{i}", "params": _params()}) for i in range(5)]
    bad = ["not json", json.dumps({"custom_id": "no spaces allowed", "params": _params()}), '{"custom_id": "ok-0"}']
    body = "\n".join([good[0], bad[0], *good[1:3], bad[1], *good[3:], bad[2]]) + "\n"

    # When it is dropped into inbox/
    version = put_version(stack, "inbox/mixed.jsonl", body.encode())
    assert runner.drain(timeout=60)

    # Then the bad lines are in errors/ with their line numbers and reasons, the rest has results
    job_id = job_id_for(stack.bucket_name, "inbox/mixed.jsonl", version)
    manifest = read_manifest(stack, job_id)
    assert manifest["status"] == "COMPLETED_WITH_ERRORS"
    assert manifest["counts"]["rejected"] == 3
    assert manifest["counts"]["succeeded"] == 5
    rejected = [json.loads(line) for line in read(stack, manifest["errors"]).splitlines()]
    assert [r["line"] for r in rejected] == [2, 5, 8]
    assert all(r["reason"] for r in rejected)
    assert set(result_ids(stack, manifest)) == {f"ok-{i}" for i in range(5)}


def test_the_same_s3_event_delivered_twice_submits_once(stack: LocalStack, runner: LocalRunner) -> None:
    # Given an uploaded file whose event has been handled
    body = "\n".join(json.dumps({"custom_id": f"dup-{i}", "params": _params()}) for i in range(4))
    version = put_version(stack, "inbox/twice.jsonl", body.encode())
    runner.deliver_pending()
    creates = stack.emulator_control().counters()["creates_accepted"]

    # When S3 delivers the same event again, twice
    runner.redeliver("inbox/twice.jsonl", version)
    runner.redeliver("inbox/twice.jsonl", version)
    assert runner.drain(timeout=60)

    # Then nothing more was submitted, and the job completed once
    assert stack.emulator_control().counters()["creates_accepted"] == creates
    assert stack.emulator_control().custom_ids(minimum=2) == {}
    assert read_manifest(stack, job_id_for(stack.bucket_name, "inbox/twice.jsonl", version))["status"] == "COMPLETED"


def test_the_same_key_uploaded_again_is_a_new_job(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a key uploaded twice (the bucket is versioned: two versions)
    first = put_version(stack, "inbox/eval set.jsonl", json.dumps({"custom_id": "v1", "params": _params()}).encode())
    second = put_version(stack, "inbox/eval set.jsonl", json.dumps({"custom_id": "v2", "params": _params()}).encode())

    # When the pipeline runs
    assert runner.drain(timeout=60)

    # Then each version is its own job, with its own results
    jobs = [job_id_for(stack.bucket_name, "inbox/eval set.jsonl", v) for v in (first, second)]
    assert jobs[0] != jobs[1]
    assert set(result_ids(stack, read_manifest(stack, jobs[0]))) == {"v1"}
    assert set(result_ids(stack, read_manifest(stack, jobs[1]))) == {"v2"}


def test_an_empty_file_ends_as_a_failed_job_with_its_reason(stack: LocalStack, runner: LocalRunner) -> None:
    # Given an empty file
    version = put_version(stack, "inbox/empty.jsonl", b"\n\n")

    # When the pipeline runs
    runner.deliver_pending()

    # Then the job failed, once, with the reason in its manifest and in errors/ (no Lambda retry)
    job_id = job_id_for(stack.bucket_name, "inbox/empty.jsonl", version)
    manifest = read_manifest(stack, job_id)
    assert manifest["status"] == "FAILED"
    assert "no request" in manifest["reason"]
    assert "no request" in json.loads(read(stack, f"errors/{job_id}/failure.json"))["reason"]
    assert not [f for f in runner.failures if "empty.jsonl" in json.dumps(f.event)]


def _params() -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
