"""Shards copied by S3: while a shard's lines are the source's own bytes, one after another,
the submit function sends none of them to S3 (one CopyObject for a whole file, a ranged
copy for a part of one); any line that is not turns the shard into a written one, which
begins with the range copied so far. Every case runs to the end on the local stack: each
request gets one result, so every create body built from a shard was right."""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from batchdrop.adapters.objects import PART_BYTES
from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.records import ShardPlan, ShardRecord, SourceRef
from batchdrop.domain.shards import ShardLimits, lines_body_bytes, shard_key, whole_copy_key
from batchdrop.domain.timings import stamp
from batchdrop.errors import ShardBodyError
from batchdrop.ports import EARLY_COPY_BYTES, SourceRange
from batchdrop.services.create import ShardCreator
from batchdrop.services.intake import Intake
from batchdrop.services.job_estimate import estimate_key
from batchdrop.services.split import split_object
from batchdrop_local.calls import CallCounter, FreshAdapters, fresh_adapters
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import read_object
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import request_lines
from tests.e2e.support import (
    assert_each_request_once,
    input_ids,
    open_uploads,
    run_to_the_end,
    shard_items,
    upload_bytes,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.2}
RUNNER = {"tick_seconds": 0.2, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True  # each test's runner starts on a reset emulator (this module sets no faults)

# S3 calls that send a shard's bytes from the function
UPLOADS = {"PutObject", "UploadPart"}
# S3 calls that copy within S3
COPIES = {"CopyObject", "UploadPartCopy"}


def _lines(count: int, line_bytes: int = 0, first: int = 0) -> list[bytes]:
    return [line.replace(b'"req-', b'"r%d-' % first, 1) for line in request_lines(count, line_bytes)]


def _submit(
    stack: LocalStack,
    runner: LocalRunner,
    key: str,
    body: bytes,
    limits: ShardLimits | None = None,
    *,
    early_copy_bytes: int | None = None,
    prepare: Callable[[FreshAdapters], None] | None = None,
) -> tuple[str, Counter[str]]:
    """Upload `body` at `key` and submit it as the function would, counting S3 calls: the
    job id and the S3 operations the submit made. Without `early_copy_bytes` the event
    carries no size, so no early copy is made; `prepare` may wrap the adapters first."""
    version = str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    runner.lose_event(key, version)  # submitted here, with the limits asked for
    size = None if early_copy_bytes is None else len(body)
    settings: dict[str, Any] = {} if early_copy_bytes is None else {"early_copy_bytes": early_copy_bytes}
    if limits is not None:
        settings["limits"] = limits
    with CallCounter() as calls:
        fresh = fresh_adapters(stack)
        if prepare is not None:
            prepare(fresh)
        try:
            outcome = Intake(fresh.wiring(**settings)).submit(SourceRef(stack.bucket_name, key, version), size)
        finally:
            fresh.close()
    assert outcome.status == "RUNNING"
    # The job's cost estimate, kept beside its shards in work/, is one PutObject of its own.
    assert read_object(stack, estimate_key(outcome.job_id))
    s3 = calls.of("s3")
    s3["PutObject"] -= 1
    return outcome.job_id, s3


def _shards(stack: LocalStack, job_id: str) -> list[bytes]:
    items = sorted(shard_items(stack, job_id), key=lambda item: int(item["index"]["N"]))
    assert [item["key"]["S"] for item in items] == [shard_key(job_id, n) for n in range(len(items))]
    return [read_object(stack, item["key"]["S"]) for item in items]


def _finish(stack: LocalStack, runner: LocalRunner, job_id: str, lines: bytes, status: str = "COMPLETED") -> None:
    """Run the job to its end: each of the request `lines` has one result, no upload is left."""
    manifest = run_to_the_end(stack, runner, job_id)
    assert manifest["status"] == status
    assert_each_request_once(stack, manifest, input_ids(lines))
    assert open_uploads(stack, f"work/{job_id}/") == []


def _assert_one_copy_and_no_upload(s3: Counter[str]) -> None:
    """One CopyObject made the shard; no byte of it was sent from the function."""
    assert {op: s3[op] for op in ("CopyObject", "UploadPartCopy", *UPLOADS)} == {
        "CopyObject": 1,
        "UploadPartCopy": 0,
        "PutObject": 0,
        "UploadPart": 0,
    }


@pytest.mark.parametrize("last_newline", [True, False], ids=["ending-in-newline", "no-last-newline"])
def test_a_file_of_exact_request_lines_is_copied_by_s3_whole(
    stack: LocalStack, runner: LocalRunner, last_newline: bool
) -> None:
    # Given a file whose every line is a request, one \n after each (or none after the last)
    body = b"\n".join(_lines(50, 300)) + (b"\n" if last_newline else b"")

    # When it is submitted
    job_id, s3 = _submit(stack, runner, f"inbox/copy/whole-{last_newline}.jsonl", body)

    # Then its one shard is the file itself, made by one CopyObject: no byte of it was uploaded
    assert _shards(stack, job_id) == [body]
    _assert_one_copy_and_no_upload(s3)
    _finish(stack, runner, job_id, body)


def test_shards_of_a_clean_file_are_ranges_of_it_copied_by_s3(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a clean file that fills three shards: two of more than a part, one short tail
    lines = _lines(7, PART_BYTES // 3 + 10_000)
    body = b"\n".join(lines) + b"\n"

    # When it is submitted with shards of 3 requests
    job_id, s3 = _submit(stack, runner, "inbox/copy/ranges.jsonl", body, ShardLimits(max_requests=3))

    # Then each shard is its range of the file: the long ones copied by S3 (UploadPartCopy),
    # the short tail read and written (S3 takes no copied part under 5 MiB but the last)
    assert _shards(stack, job_id) == [
        b"".join(line + b"\n" for line in group) for group in (lines[:3], lines[3:6], lines[6:])
    ]
    assert {op: s3[op] for op in ("UploadPartCopy", "UploadPart", "PutObject")} == {
        "UploadPartCopy": 2,
        "UploadPart": 0,
        "PutObject": 1,
    }
    _finish(stack, runner, job_id, body)


@pytest.mark.parametrize("prefix_bytes", [10_000, PART_BYTES + 10_000], ids=["short-prefix", "part-sized-prefix"])
def test_a_rejected_line_turns_the_shard_into_a_written_one_that_begins_with_the_copied_range(
    stack: LocalStack, runner: LocalRunner, prefix_bytes: int
) -> None:
    # Given clean lines worth `prefix_bytes`, a line that is not a request, and more clean lines
    head = _lines(max(2, prefix_bytes // 2000), 2000, first=1)
    tail = _lines(5, 500, first=2)
    body = b"\n".join([*head, b"not a request", *tail]) + b"\n"

    # When it is submitted
    job_id, s3 = _submit(stack, runner, f"inbox/copy/rejected-{prefix_bytes}.jsonl", body)

    # Then the shard holds every valid line, one per line, and the bad one is in errors/
    assert _shards(stack, job_id) == [b"".join(line + b"\n" for line in [*head, *tail])]
    rejected = [json.loads(line) for line in read_object(stack, f"errors/{job_id}/rejected.jsonl").splitlines()]
    assert [record["line"] for record in rejected] == [len(head) + 1]
    # And the lines before it were copied by S3 when they make a part, else read back (two
    # PutObject then: the shard, and errors/)
    if prefix_bytes >= PART_BYTES:
        assert {op: s3[op] for op in ("UploadPartCopy", "UploadPart", "CompleteMultipartUpload")} == {
            "UploadPartCopy": 1,
            "UploadPart": 1,
            "CompleteMultipartUpload": 1,
        }
    else:
        assert {op: s3[op] for op in ("UploadPartCopy", "PutObject")} == {"UploadPartCopy": 0, "PutObject": 2}
    _finish(stack, runner, job_id, b"\n".join([*head, *tail]), "COMPLETED_WITH_ERRORS")


@pytest.mark.parametrize(
    "shape",
    ["crlf", "bom", "blank-lines", "spaces-before-newline", "gzip"],
)
def test_lines_that_are_not_exactly_requests_are_written_one_per_line(
    stack: LocalStack, runner: LocalRunner, shape: str
) -> None:
    # Given valid requests in a file whose bytes are not the shard's: CRLF endings, a BOM,
    # blank lines between requests, trailing spaces, or gzip
    lines = _lines(6, 200, first=3)
    joined = {
        "crlf": b"\r\n".join(lines) + b"\r\n",
        "bom": b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n",
        "blank-lines": b"\n\n".join(lines) + b"\n",
        "spaces-before-newline": b"\n".join(line + b"  " for line in lines) + b"\n",
        "gzip": b"\n".join(lines) + b"\n",
    }[shape]
    body, key = (
        (gzip.compress(joined), "inbox/copy/g.jsonl.gz") if shape == "gzip" else (joined, f"inbox/copy/{shape}.jsonl")
    )

    # When it is submitted
    job_id, s3 = _submit(stack, runner, key, body)

    # Then the shard is the requests one per line (as sent: less the whitespace around them),
    # written from the function, nothing copied
    assert _shards(stack, job_id) == [b"".join(line + b"\n" for line in lines)]
    assert not s3.keys() & COPIES, s3
    _finish(stack, runner, job_id, joined)


def test_a_copy_that_finds_the_shard_written_keeps_the_first(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a clean file whose shard another invocation has already written, with other bytes
    body = b"\n".join(_lines(4, 100, first=4)) + b"\n"
    key = "inbox/copy/raced.jsonl"
    version = str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    runner.lose_event(key, version)
    source = SourceRef(stack.bucket_name, key, version)
    fresh = fresh_adapters(stack)
    try:
        job_id = job_id_for(stack.bucket_name, key, version)
        stack.client("s3").put_object(Bucket=stack.bucket_name, Key=shard_key(job_id, 0), Body=b"first\n")

        # When this invocation splits the file
        split = split_object(fresh.wiring(), job_id, source)
    finally:
        fresh.close()

    # Then its copy was refused (If-None-Match) and the first object stays, in one version
    assert [plan.requests for plan in split.shards] == [4]
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket_name, Prefix=shard_key(job_id, 0))
    assert len(versions["Versions"]) == 1
    assert read_object(stack, shard_key(job_id, 0)) == b"first\n"


# --- the early copy: a file that may be one clean shard is copied whole while it is read


def _exists(stack: LocalStack, key: str) -> bool:
    return stack.client("s3").list_objects_v2(Bucket=stack.bucket_name, Prefix=key).get("KeyCount", 0) > 0


def _shard_keys(stack: LocalStack, job_id: str) -> list[str]:
    items = sorted(shard_items(stack, job_id), key=lambda item: int(item["index"]["N"]))
    return [item["key"]["S"] for item in items]


def test_a_file_that_may_be_one_clean_shard_is_copied_by_s3_while_it_is_read(
    stack: LocalStack, runner: LocalRunner
) -> None:
    # Given a clean file of one shard, at the size from which the copy starts early
    body = b"\n".join(_lines(40, 300, first=7)) + b"\n"
    # And a read that pauses after the first line until S3 has been asked for the copy
    asked = threading.Event()
    waited: list[bool] = []

    def prepare(fresh: FreshAdapters) -> None:
        lines_of, copy = fresh.store.lines, fresh.store.copy

        class PausedLines:
            """The store's lines, pausing before the second; whether they are gzip, as read."""

            def __init__(self, key: str, version_id: str | None = None) -> None:
                self._lines = lines_of(key, version_id)

            @property
            def compressed(self) -> bool | None:
                return self._lines.compressed

            def __iter__(self) -> Iterator[bytes]:
                for number, line in enumerate(self._lines, start=1):
                    if number == 2:
                        waited.append(asked.wait(timeout=10))
                    yield line

        def copy_asked(source: SourceRange, key: str, *args: object, **kwargs: object) -> bool:
            if key.endswith("/source.jsonl"):
                asked.set()
            return copy(source, key, *args, **kwargs)  # type: ignore[arg-type]

        fresh.store.lines = PausedLines  # type: ignore[method-assign]
        fresh.store.copy = copy_asked  # type: ignore[method-assign]

    # When it is submitted
    job_id, s3 = _submit(stack, runner, "inbox/copy/early.jsonl", body, early_copy_bytes=len(body), prepare=prepare)

    # Then S3 was asked to copy the whole file before its second line was read
    assert waited == [True]
    # And that copy is the job's one shard: the file's bytes, one CopyObject, nothing uploaded
    assert _shard_keys(stack, job_id) == [whole_copy_key(job_id)]
    assert read_object(stack, whole_copy_key(job_id)) == body
    assert not _exists(stack, shard_key(job_id, 0))
    _assert_one_copy_and_no_upload(s3)
    _finish(stack, runner, job_id, body)


@pytest.mark.parametrize("shape", ["rejected-line", "more-requests-than-a-shard"])
def test_an_early_copy_of_a_file_that_is_not_one_clean_shard_is_left_unused(
    stack: LocalStack, runner: LocalRunner, shape: str
) -> None:
    # Given a file whose first line is a request, but which is not one clean shard: a later
    # line is not a request, or it holds more requests than a shard may
    lines = _lines(7, 300, first=8)
    if shape == "rejected-line":
        body, limits, valid = b"\n".join([*lines[:3], b"not a request", *lines[3:]]) + b"\n", None, lines
    else:
        body, limits, valid = b"\n".join(lines) + b"\n", ShardLimits(max_requests=3), lines

    # When it is submitted with the early copy on
    job_id, _ = _submit(stack, runner, f"inbox/copy/early-{shape}.jsonl", body, limits, early_copy_bytes=1)

    # Then the shards are their own objects, each request once across them, as without it
    groups = [valid] if limits is None else [valid[:3], valid[3:6], valid[6:]]
    assert _shards(stack, job_id) == [b"".join(line + b"\n" for line in group) for group in groups]
    # And the early copy is the file's bytes, recorded nowhere, left to expire with work/
    assert read_object(stack, whole_copy_key(job_id)) == body
    status = "COMPLETED_WITH_ERRORS" if shape == "rejected-line" else "COMPLETED"
    _finish(stack, runner, job_id, b"\n".join(valid), status)


@pytest.mark.parametrize("case", ["crlf", "blank-first-line", "larger-than-a-shard", "smaller-than-the-threshold"])
def test_no_early_copy_is_made_of_a_file_that_cannot_be_one_clean_shard_or_is_small(
    stack: LocalStack, runner: LocalRunner, case: str
) -> None:
    # Given a file whose first line is not exact (CRLF, a blank line before it), one larger
    # than a shard's bytes, or one under the early copy's threshold
    lines = _lines(6, 300, first=9)
    clean = b"\n".join(lines) + b"\n"
    body = {"crlf": b"\r\n".join(lines) + b"\r\n", "blank-first-line": b"\n" + clean}.get(case, clean)
    limits = ShardLimits(max_bytes=len(body) // 2) if case == "larger-than-a-shard" else None
    threshold = len(body) + 1 if case == "smaller-than-the-threshold" else 1

    # When it is submitted
    job_id, _ = _submit(stack, runner, f"inbox/copy/no-early-{case}.jsonl", body, limits, early_copy_bytes=threshold)

    # Then S3 made no early copy; the shards are their own objects
    assert not _exists(stack, whole_copy_key(job_id))
    assert b"".join(_shards(stack, job_id)) == b"".join(line + b"\n" for line in lines)
    _finish(stack, runner, job_id, clean)


def test_an_early_copy_an_earlier_run_made_is_the_shard(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a clean file whose early copy a run killed before recording its job already made
    body = b"\n".join(_lines(5, 300, first=10)) + b"\n"
    key = "inbox/copy/early-resumed.jsonl"
    s3 = stack.client("s3")
    version = str(s3.put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    runner.lose_event(key, version)
    job_id = job_id_for(stack.bucket_name, key, version)
    s3.copy_object(
        Bucket=stack.bucket_name,
        Key=whole_copy_key(job_id),
        CopySource={"Bucket": stack.bucket_name, "Key": key, "VersionId": version},
    )

    # When the job is submitted again
    fresh = fresh_adapters(stack)
    try:
        intake = Intake(fresh.wiring(early_copy_bytes=1))
        outcome = intake.submit(SourceRef(stack.bucket_name, key, version), len(body))
    finally:
        fresh.close()

    # Then its copy was refused (If-None-Match), and the first one is the shard, in one version
    assert outcome.status == "RUNNING"
    assert _shard_keys(stack, job_id) == [whole_copy_key(job_id)]
    versions = s3.list_object_versions(Bucket=stack.bucket_name, Prefix=whole_copy_key(job_id))
    assert len(versions["Versions"]) == 1
    _finish(stack, runner, job_id, body)


def test_a_failed_early_copy_leaves_the_shard_to_the_copy_at_the_end(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a clean file of one shard, and an S3 that fails the early copy
    body = b"\n".join(_lines(5, 300, first=11)) + b"\n"

    def prepare(fresh: FreshAdapters) -> None:
        copy = fresh.store.copy

        def failing_early_copy(source: SourceRange, key: str, *args: object, **kwargs: object) -> bool:
            if key.endswith("/source.jsonl"):
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "CopyObject")
            return copy(source, key, *args, **kwargs)  # type: ignore[arg-type]

        fresh.store.copy = failing_early_copy  # type: ignore[method-assign]

    # When it is submitted
    job_id, s3 = _submit(stack, runner, "inbox/copy/early-failed.jsonl", body, early_copy_bytes=1, prepare=prepare)

    # Then its shard is copied when the file has been read, as without the early copy
    assert _shards(stack, job_id) == [body]
    assert s3["CopyObject"] == 1
    _finish(stack, runner, job_id, body)


def test_the_submit_function_copies_a_large_clean_file_early(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a clean file of one shard at the early copy's default threshold, uploaded
    count = EARLY_COPY_BYTES // 2000 + 1
    body = b"\n".join(_lines(count, 2000, first=12)) + b"\n"
    assert len(body) >= EARLY_COPY_BYTES
    job_id = upload_bytes(stack, "inbox/copy/early-large.jsonl", body)

    # When its event reaches the submit function (the event carries the object's size)
    _finish(stack, runner, job_id, body)

    # Then the job's one shard was the early copy
    assert _shard_keys(stack, job_id) == [whole_copy_key(job_id)]


# --- recorded shards, sent by the create (these jobs are left unfinished: keep them last)


def _record_one_shard(stack: LocalStack, fresh: FreshAdapters, job_id: str, key: str, body: bytes, size: int) -> None:
    """A job of one recorded shard of 3 requests: `body` at `key`, recorded with `size`."""
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)
    fresh.state.create_job(job_id, SourceRef(stack.bucket_name, "inbox/x", "v"), stamp(datetime.now(UTC)))
    fresh.state.record_shards(job_id, [ShardPlan(0, key, 3, size)], requested=3, rejected=0, max_attempts=3)


def test_a_shard_whose_object_cannot_make_its_recorded_body_is_never_sent(stack: LocalStack) -> None:
    # Given a recorded shard whose object holds 3 lines but whose recorded body size is off by 2
    job_id = "jbadbodysize000000000000"
    lines = b"".join(line + b"\n" for line in _lines(3, 100, first=5))
    fresh = fresh_adapters(stack)
    try:
        _record_one_shard(stack, fresh, job_id, shard_key(job_id, 0), lines, lines_body_bytes(len(lines), 3)[0] + 2)
        before = stack.emulator_control().counters()["creates_accepted"]

        # When its create is attempted / Then it is refused before any intent or byte is sent
        with pytest.raises(ShardBodyError, match="cannot make the recorded"):
            ShardCreator(fresh.wiring()).create(_shard(fresh, job_id))
        assert stack.emulator_control().counters()["creates_accepted"] == before
        assert _shard(fresh, job_id).state == "PENDING"
        assert fresh.state.get_create_lease() is None
    finally:
        fresh.close()


def _shard(fresh: FreshAdapters, job_id: str) -> ShardRecord:
    shard = fresh.state.get_shard(job_id, 0)
    assert shard is not None
    return shard
