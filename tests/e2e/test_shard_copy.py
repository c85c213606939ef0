"""Shards copied by S3: while a shard's lines are the source's own bytes, one after another,
the submit function sends none of them to S3 (one CopyObject for a whole file, a ranged
copy for a part of one); any line that is not turns the shard into a written one, which
begins with the range copied so far. Every case runs to the end on the local stack: each
request gets one result, so every create body built from a shard was right."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator

import pytest

from batchdrop import wiring
from batchdrop.adapters.objects import PART_BYTES
from batchdrop.adapters.state import ShardPlan
from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.requests import ValidLine
from batchdrop.domain.shards import ShardLimits, body_chunks, lines_body_bytes, shard_key
from batchdrop.errors import ShardBodyError
from batchdrop.submit import CreateResult, ShardCreator, SourceObject, Submitter
from batchdrop_local.calls import CallCounter, FreshAdapters, fresh_adapters
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import read_object
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import request_lines
from tests.e2e.support import assert_each_request_once, input_ids, open_uploads, run_to_the_end, shard_items

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# S3 calls that send a shard's bytes from the function
UPLOADS = {"PutObject", "UploadPart"}
# S3 calls that copy within S3
COPIES = {"CopyObject", "UploadPartCopy"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(latency=0.2) as running:
        yield running


@pytest.fixture
def runner(stack: LocalStack) -> LocalRunner:
    stack.emulator_control().reset(faults=True)
    return LocalRunner(stack, tick_seconds=0.2, retry_delay_seconds=0.1)


def _lines(count: int, line_bytes: int = 0, first: int = 0) -> list[bytes]:
    return [line.replace(b'"req-', b'"r%d-' % first, 1) for line in request_lines(count, line_bytes)]


def _submit(
    stack: LocalStack, runner: LocalRunner, key: str, body: bytes, limits: ShardLimits | None = None
) -> tuple[str, Counter[str]]:
    """Upload `body` at `key` and submit it as the function would, counting S3 calls: the
    job id and the S3 operations the submit made."""
    version = str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    runner.lose_event(key, version)  # submitted here, with the limits asked for
    with CallCounter() as calls:
        fresh = fresh_adapters(stack)
        try:
            outcome = Submitter(fresh.store, fresh.state, fresh.api, wiring.utc_now, limits=limits).submit(
                SourceObject(stack.bucket_name, key, version)
            )
        finally:
            fresh.close()
    assert outcome.status == "RUNNING"
    return outcome.job_id, calls.of("s3")


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
    assert {op: s3[op] for op in ("CopyObject", "UploadPartCopy", *UPLOADS)} == {
        "CopyObject": 1,
        "UploadPartCopy": 0,
        "PutObject": 0,
        "UploadPart": 0,
    }
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
    source = SourceObject(stack.bucket_name, key, version)
    fresh = fresh_adapters(stack)
    try:
        job_id = job_id_for(stack.bucket_name, key, version)
        stack.client("s3").put_object(Bucket=stack.bucket_name, Key=shard_key(job_id, 0), Body=b"first\n")

        # When this invocation splits the file
        split = Submitter(fresh.store, fresh.state, fresh.api, wiring.utc_now)._split(job_id, source)
    finally:
        fresh.close()

    # Then its copy was refused (If-None-Match) and the first object stays, in one version
    assert [plan.requests for plan in split.shards] == [4]
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket_name, Prefix=shard_key(job_id, 0))
    assert len(versions["Versions"]) == 1
    assert read_object(stack, shard_key(job_id, 0)) == b"first\n"


def _record_one_shard(stack: LocalStack, fresh: FreshAdapters, job_id: str, key: str, body: bytes, size: int) -> None:
    """A job of one recorded shard of 3 requests: `body` at `key`, recorded with `size`."""
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)
    fresh.state.create_job(job_id, {"bucket": stack.bucket_name, "key": "inbox/x", "version_id": "v"}, wiring.utc_now())
    fresh.state.record_shards(job_id, [ShardPlan(0, key, 3, size)], requested=3, rejected=0)


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
            ShardCreator(fresh.store, fresh.state, fresh.api, wiring.utc_now).create(
                job_id, fresh.state.get_shard(job_id, 0)
            )
        assert stack.emulator_control().counters()["creates_accepted"] == before
        assert fresh.state.get_shard(job_id, 0)["state"] == "PENDING"
        assert fresh.state.get_create_lease() is None
    finally:
        fresh.close()


def test_a_shard_written_by_an_earlier_version_is_sent_as_the_create_body_it_is(stack: LocalStack) -> None:
    # Given a recorded shard of an earlier version: a whole create body at a .json key
    job_id = "jearlierjsonshard0000000"
    lines = [ValidLine(n, json.loads(line)["custom_id"], line) for n, line in enumerate(_lines(3, 100, first=6))]
    body = b"".join(body_chunks(lines))
    key = f"work/{job_id}/shard-00000.json"
    fresh = fresh_adapters(stack)
    try:
        _record_one_shard(stack, fresh, job_id, key, body, len(body))
        before = stack.emulator_control().custom_ids()

        # When it is created
        created = ShardCreator(fresh.store, fresh.state, fresh.api, wiring.utc_now).create(
            job_id, fresh.state.get_shard(job_id, 0)
        )
    finally:
        fresh.close()

    # Then its body went as it is: one batch of its three requests
    assert created is CreateResult.CREATED
    sent = Counter(stack.emulator_control().custom_ids()) - Counter(before)
    assert sent == Counter({line.custom_id: 1 for line in lines})
