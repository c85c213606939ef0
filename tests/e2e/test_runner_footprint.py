"""What the local runner costs while it is up, and what one object it cannot handle costs the
others: a large file left in inbox/ must not make the process's disk use or open files grow
with every poll, and a key with a control character must be a job like any other, not block every other file.
Real handlers, the runner's background threads, as `batchdrop local up` runs them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import job_status
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

LARGE_FILE_BYTES = 21 * 1024 * 1024  # over moto's 5 MB in-memory limit: its bytes live in a temporary file
FINISHED = ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED")
# The runner stays up this long after the job: 20 of the former watcher's 0.2 s polls, 4 sweeps.
IDLE_SECONDS = 4.0
# What may still change meanwhile: pytest's capture files grow with the handlers' log lines,
# and an HTTP connection may open or close.
SLACK_BYTES = 2 * 1024 * 1024
SLACK_FILES = 4


@dataclass(frozen=True)
class Footprint:
    """What this process holds open: files in all, and deleted files (temporary files whose
    only name is the open descriptor) with their bytes."""

    open_files: int
    deleted_files: int
    deleted_bytes: int


def footprint() -> Footprint:
    open_files = deleted_files = deleted_bytes = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            size = os.fstat(int(name)).st_size
        except OSError:  # closed since the listing (the listing's own descriptor, among others)
            continue
        open_files += 1
        if target.endswith(" (deleted)"):
            deleted_files += 1
            deleted_bytes += size
    return Footprint(open_files, deleted_files, deleted_bytes)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(latency=0.3) as running:
        yield running


def _put(stack: LocalStack, key: str, body: bytes) -> str:
    return str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])


def _exists(stack: LocalStack, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        stack.client("s3").head_object(Bucket=stack.bucket_name, Key=key)
    except ClientError:
        return False
    return True


def _finished(stack: LocalStack, job_id: str) -> bool:
    return _exists(stack, manifest_key(job_id)) and job_status(stack, job_id) in FINISHED


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


def _stored_bytes(stack: LocalStack) -> int:
    """The bytes of every object version in the bucket: what moto must hold in any case."""
    pages = stack.client("s3").get_paginator("list_object_versions").paginate(Bucket=stack.bucket_name)
    return sum(int(version["Size"]) for page in pages for version in page.get("Versions", []))


def test_a_large_file_left_in_inbox_keeps_disk_use_and_open_files_flat(stack: LocalStack, tmp_path: Path) -> None:
    # Given a file over 20 MB and the runner's background threads (watcher, worker, checker
    # every 0.5 s, the inbox/ sweep every second: the sweeper lists inbox/ versions)
    source = tmp_path / "large.jsonl"
    write_requests(source, 2000, total_bytes=LARGE_FILE_BYTES)
    body = source.read_bytes()
    source.unlink()
    runner = LocalRunner(stack, tick_seconds=0.5, retry_delay_seconds=0.1, sweep_seconds=1.0).start()
    try:
        # When it is dropped into inbox/, its job ends, and the runner stays up
        key = "inbox/footprint/large.jsonl"
        job_id = job_id_for(stack.bucket_name, key, _put(stack, key, body))
        del body
        _wait_until(lambda: _finished(stack, job_id))
        at_the_end = footprint()
        samples = []
        deadline = time.monotonic() + IDLE_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            samples.append(footprint())
    finally:
        runner.stop()

    # Then no poll, tick or sweep added a temporary file or an open file
    assert job_status(stack, job_id) == "COMPLETED"
    most_bytes = max(sample.deleted_bytes for sample in samples)
    most_files = max(sample.open_files for sample in samples)
    print(f"held at the end of the job: {at_the_end}; most held {IDLE_SECONDS:g} s later: {most_bytes} B")
    assert most_bytes - at_the_end.deleted_bytes < SLACK_BYTES
    assert most_files - at_the_end.open_files <= SLACK_FILES
    assert max(sample.deleted_files for sample in samples) <= at_the_end.deleted_files + SLACK_FILES
    # and what the process holds on disk is the bucket's own bytes (moto keeps objects over
    # 5 MB in temporary files), not copies of them
    assert at_the_end.deleted_bytes < _stored_bytes(stack) + SLACK_BYTES


def test_a_key_with_a_control_character_is_a_job_like_any_other_and_the_sweep_still_lists_inbox(
    stack: LocalStack, tmp_path: Path
) -> None:
    # Given a key with a control character (S3 lists it URL-encoded; unpatched moto answered 500
    # to every listing that would show it), uploaded twice, next to a good file
    source = tmp_path / "requests.jsonl"
    write_requests(source, 20)
    body = source.read_bytes()
    odd_key, good_key = "inbox/control/odd\x01name.jsonl", "inbox/control/good.jsonl"
    odd_versions: list[str] = []
    runner = LocalRunner(stack, tick_seconds=0.5, retry_delay_seconds=0.1).start()
    try:
        odd_versions.append(_put(stack, odd_key, body))
        good_job = job_id_for(stack.bucket_name, good_key, _put(stack, good_key, body))
        odd_versions.append(_put(stack, odd_key, body))
        odd_jobs = [job_id_for(stack.bucket_name, odd_key, version) for version in odd_versions]

        # When the runner handles their notifications, and the inbox/ sweep runs meanwhile
        _wait_until(lambda: all(_finished(stack, job) for job in [good_job, *odd_jobs]))
        sweep = runner.sweep()
    finally:
        runner.stop()
    try:
        # Then every version became a job and completed, as on AWS, and the sweep listed inbox/
        assert [job_status(stack, job) for job in [good_job, *odd_jobs]] == ["COMPLETED"] * 3
        assert runner.skipped == {}
        assert {key for key, _version in runner.accepted_versions} == {good_key, odd_key}
        assert sweep.error is None, sweep.error
        assert runner.failures == []
    finally:
        for version_id in odd_versions:
            stack.client("s3").delete_object(Bucket=stack.bucket_name, Key=odd_key, VersionId=version_id)
