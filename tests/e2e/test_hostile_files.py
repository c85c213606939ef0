"""Hostile and odd input on the local stack, each case with the outcome a user expects: the
job COMPLETED with its good lines, or FAILED with a reason in its manifest; every rejected
line named by number and reason in errors/<job_id>/rejected.jsonl; the completion event on
the bus whatever the end; nothing half-submitted and no retry of a file that cannot be read.

One stack and a rule on its event bus copying batchdrop's events into a queue the module
reads; each case drops its file and runs the pipeline until that job is finished."""

from __future__ import annotations

import gzip
import json
import random
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from batchdrop.config import ENV_MAX_FILE_BYTES
from batchdrop.domain.job_events import ENDED
from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.lines import GZIP_FREE_BYTES, MAX_GZIP_RATIO, MAX_LINE_BYTES
from batchdrop_local.pipeline_settings import pipeline_settings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import job_status
from batchdrop_local.stack import LocalStack
from tests.e2e.support import SUBMIT, finished, put_version, read, read_manifest, result_ids

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.1}
RUNNER = {"tick_seconds": 0.3, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = False

MODEL = "claude-haiku-4-5"
BOM = b"\xef\xbb\xbf"


def req(custom_id: str, **params: Any) -> bytes:
    """One request line (no newline)."""
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **params}
    return json.dumps({"custom_id": custom_id, "params": body}, ensure_ascii=False).encode()


def lines(*items: bytes) -> bytes:
    return b"".join(item + b"\n" for item in items)


@dataclass
class Ended:
    """What a user finds once a job has ended."""

    job_id: str
    status: str
    reason: str | None
    rejected: list[tuple[int, str]]
    ids: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)


class Bus:
    """batchdrop's job-ended events on the stack's bus, copied by a rule into a queue, by job id."""

    def __init__(self, stack: LocalStack) -> None:
        self._sqs, events = stack.client("sqs"), stack.client("events")
        self._url = self._sqs.create_queue(QueueName="hostile-events")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = stack.event_bus_name
        pattern = json.dumps({"source": ["batchdrop"], "detail-type": list(ENDED)})
        events.put_rule(Name="hostile-events", EventBusName=bus, EventPattern=pattern)
        events.put_targets(Rule="hostile-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        self._seen: dict[str, list[dict[str, Any]]] = {}

    def of(self, job_id: str, wait: float = 5) -> list[dict[str, Any]]:
        """The events about the job, waiting up to `wait` seconds for the first to arrive."""
        deadline = time.monotonic() + wait
        while not self._seen.get(job_id) and time.monotonic() < deadline:
            self._receive()
        self._receive()
        return self._seen.get(job_id, [])

    def _receive(self) -> None:
        answer = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for message in answer.get("Messages", []):
            detail = json.loads(message["Body"])["detail"]
            self._seen.setdefault(detail["job_id"], []).append(detail)
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def bus(stack: LocalStack) -> Bus:
    return Bus(stack)


def run(stack: LocalStack, runner: LocalRunner, bus: Bus, key: str, body: bytes) -> Ended:
    """Drop `body` at `key`, run the pipeline until its job has ended; what the user finds."""
    job_id = job_id_for(stack.bucket_name, key, put_version(stack, key, body))
    return wait_for(stack, runner, bus, [job_id])[0]


def wait_for(stack: LocalStack, runner: LocalRunner, bus: Bus, job_ids: list[str]) -> list[Ended]:
    done = lambda: all(finished(stack, job_id) for job_id in job_ids) and not stack.open_batch_count()  # noqa: E731
    assert runner.drain(timeout=60, idle=done)
    return [ended(stack, bus, job_id) for job_id in job_ids]


def ended(stack: LocalStack, bus: Bus, job_id: str) -> Ended:
    manifest = read_manifest(stack, job_id)
    rejected = []
    if manifest.get("errors"):
        rejected = [(r["line"], r["reason"]) for r in map(json.loads, read(stack, manifest["errors"]).splitlines())]
    ids = sorted(result_ids(stack, manifest))
    return Ended(job_id, manifest["status"], manifest.get("reason"), rejected, ids, bus.of(job_id))


def assert_announced(outcome: Ended) -> None:
    """One completion event, with the status the manifest has."""
    assert [event["status"] for event in outcome.events] == [outcome.status]


# --- files whose good lines run -------------------------------------------------------

COMPLETED: list[tuple[str, str, bytes, list[str]]] = [
    ("bom", "inbox/hostile/bom.jsonl", BOM + lines(req("a"), req("b")), ["a", "b"]),
    ("crlf", "inbox/hostile/crlf.jsonl", req("a") + b"\r\n" + req("b") + b"\r\n", ["a", "b"]),
    ("no final newline", "inbox/hostile/open.jsonl", req("a") + b"\n" + req("b"), ["a", "b"]),
    ("gzip named .jsonl", "inbox/hostile/packed.jsonl", gzip.compress(lines(req("a"), req("b"))), ["a", "b"]),
    ("gzip named .JSONL.GZ", "inbox/hostile/UPPER.JSONL.GZ", gzip.compress(lines(req("a"))), ["a"]),
]


@pytest.mark.parametrize(("key", "body", "ids"), [pytest.param(k, b, i, id=n) for n, k, b, i in COMPLETED])
def test_a_file_of_good_lines_completes(
    stack: LocalStack, runner: LocalRunner, bus: Bus, key: str, body: bytes, ids: list[str]
) -> None:
    outcome = run(stack, runner, bus, key, body)
    assert (outcome.status, outcome.reason, outcome.rejected, outcome.ids) == ("COMPLETED", None, [], ids)
    assert_announced(outcome)


# --- files with bad lines among good ones ---------------------------------------------

DEEP = b'{"custom_id":"deep","params":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
MIXED: list[tuple[str, list[bytes], list[tuple[int, str]]]] = [
    ("invalid utf-8", [b'{"custom_id":"x\xff"}'], [(2, "not valid UTF-8: byte 0xff at offset 15")]),
    (
        "nul bytes",
        [b"\0\0\0\0", req("x", system="a-b").replace(b"a-b", b"a\0b")],
        [(2, "not valid JSON: Expecting value at column 1"), (3, "not valid JSON: Invalid control character")],
    ),
    (
        "a bom inside the file",
        [BOM + req("x")],
        [(2, "a byte order mark (BOM) begins this line: one may begin only the file's first line")],
    ),
    (
        "top-level array, number, string",
        [b"[1, 2]", b"42", b'"hello"'],
        [(2, "must be a JSON object"), (3, "must be a JSON object"), (4, "must be a JSON object")],
    ),
    (
        "depth 10,000",
        [DEEP],
        [(2, "objects and arrays nest 10001 deep in this line, deeper than a request can be read")],
    ),
    ("duplicate keys", [b'{"custom_id":"x","custom_id":"y","params":{}}'], [(2, 'key "custom_id" appears twice')]),
    ("nan", [req("x", temperature=0.5).replace(b"0.5", b"NaN")], [(2, "NaN is not a JSON number")]),
    ("infinite float", [req("x", temperature=0.5).replace(b"0.5", b"1e999")], [(2, "a number is too large")]),
    (
        "huge integers",
        [
            req("x", max_tokens=10**30),
            req("y", metadata={"user_id": 2**63}),
            req("z", max_tokens=1).replace(b'"max_tokens": 1', b'"max_tokens": ' + b"9" * 5000),
        ],
        [
            (2, f"a number is too large to be sent ({10**30} is beyond the 64-bit integer range the API reads)"),
            (3, f"a number is too large to be sent ({2**63} is beyond the 64-bit integer range the API reads)"),
            (4, "a number is too large to be sent (" + "9" * 39 + "… (5000 digits) is beyond the 64-bit integer range"),
        ],
    ),
    ("custom_id empty", [req("")], [(2, "custom_id: must not be empty")]),
    ("custom_id 65 characters", [req("c" * 65)], [(2, "custom_id: must be at most 64 characters, got 65")]),
    ("custom_id non-ascii", [req("café")], [(2, "custom_id: may hold only letters, digits, '_' and '-'")]),
    ("custom_id used twice", [req("good")], [(2, 'custom_id: "good" is already used on line 1; it must be unique')]),
]


@pytest.mark.parametrize(("bad", "expected"), [pytest.param(b, e, id=n) for n, b, e in MIXED])
def test_bad_lines_are_rejected_by_number_and_reason_and_the_good_ones_run(
    stack: LocalStack, runner: LocalRunner, bus: Bus, bad: list[bytes], expected: list[tuple[int, str]]
) -> None:
    # Given a good line, the bad ones, and another good line
    body = lines(req("good"), *bad, req("last"))

    # When it is dropped into inbox/
    outcome = run(stack, runner, bus, "inbox/hostile/mixed.jsonl", body)

    # Then the good lines have results, and each bad one is named with its reason
    assert (outcome.status, outcome.ids) == ("COMPLETED_WITH_ERRORS", ["good", "last"])
    assert [line for line, _ in outcome.rejected] == [line for line, _ in expected]
    for (_, reason), (_, wanted) in zip(outcome.rejected, expected, strict=True):
        assert wanted in reason, reason
    assert all("sys." not in reason and "int_max_str_digits" not in reason for _, reason in outcome.rejected)
    assert_announced(outcome)


def test_a_custom_id_used_in_two_shards_is_rejected_where_it_repeats(
    stack: LocalStack, runner: LocalRunner, bus: Bus
) -> None:
    # Given shards of two requests, and a file whose fourth line repeats the first's custom_id
    body = lines(req("a"), req("b"), req("c"), req("a"), req("d"))

    # When it is dropped into inbox/
    with pipeline_settings(stack, shard_max_requests=2):
        outcome = run(stack, runner, bus, "inbox/hostile/shards.jsonl", body)

    # Then the repeat is rejected and every other request runs once, across two shards
    assert outcome.status == "COMPLETED_WITH_ERRORS"
    assert outcome.rejected == [(4, 'custom_id: "a" is already used on line 1; it must be unique')]
    assert outcome.ids == ["a", "b", "c", "d"]
    assert len(read_manifest(stack, outcome.job_id)["batches"]) == 2
    assert_announced(outcome)


# --- files that end the job early: FAILED, with the reason, and announced --------------


def _random_binary() -> bytes:
    data = random.Random(15).randbytes(4096)
    return b"\0" + data  # never gzip's magic bytes at the start


def _cut_gzip() -> bytes:
    whole = gzip.compress(lines(*(req(f"r{i}", system=f"{i * 7919}") for i in range(200))))
    return whole[: len(whole) // 2]


def _not_deflate() -> bytes:
    return gzip.compress(lines(req("a")))[:10] + bytes(range(256)) * 4


FAILED: list[tuple[str, str, bytes, str]] = [
    ("zero bytes", "inbox/hostile/empty.jsonl", b"", "the file holds no request (it is empty or blank)"),
    ("blank only", "inbox/hostile/blank.jsonl", b"\n  \n\t\r\n\n", "the file holds no request (it is empty or blank)"),
    (
        "truncated gzip",
        "inbox/hostile/cut.jsonl.gz",
        _cut_gzip(),
        "the file cannot be read: the gzip file is truncated: it ends before its last member does",
    ),
    (
        "corrupt gzip",
        "inbox/hostile/corrupt.jsonl.gz",
        _not_deflate(),
        "the file cannot be read: the gzip file is corrupt",
    ),
    (
        "text named .gz",
        "inbox/hostile/text.jsonl.gz",
        lines(req("a")),
        "the file cannot be read: the file is named .gz but is not gzip (it does not begin with 1f 8b)",
    ),
]


@pytest.mark.parametrize(("key", "body", "reason"), [pytest.param(k, b, r, id=n) for n, k, b, r in FAILED])
def test_a_file_that_ends_the_job_early_fails_with_its_reason_and_is_announced(
    stack: LocalStack, runner: LocalRunner, bus: Bus, key: str, body: bytes, reason: str
) -> None:
    calls_before = len(runner.invocations_of(SUBMIT))

    outcome = run(stack, runner, bus, key, body)

    # FAILED with the reason in the manifest and beside it; nothing sent; the event on the bus
    assert (outcome.status, outcome.rejected, outcome.ids) == ("FAILED", [], [])
    assert outcome.reason is not None
    assert outcome.reason.startswith(reason), outcome.reason
    failure = json.loads(read(stack, f"errors/{outcome.job_id}/failure.json"))
    assert failure["reason"] == outcome.reason
    assert_announced(outcome)
    # ...by one invocation that did not fail: no retry reads the same bytes again
    calls = runner.invocations_of(SUBMIT)[calls_before:]
    assert [call.error for call in calls] == [None]


def test_random_binary_fails_with_every_line_rejected(stack: LocalStack, runner: LocalRunner, bus: Bus) -> None:
    body = _random_binary()
    expected = [number for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]

    outcome = run(stack, runner, bus, "inbox/hostile/noise.bin", body)

    assert outcome.status == "FAILED"
    assert outcome.reason == (
        f"no valid request: all {len(expected)} lines were rejected (see errors/{outcome.job_id}/rejected.jsonl)"
    )
    assert [line for line, _ in outcome.rejected] == expected
    assert all(reason.startswith(("not valid UTF-8", "not valid JSON")) for _, reason in outcome.rejected)
    assert_announced(outcome)


def test_a_gzip_bomb_stops_at_the_stated_limit_with_memory_bounded(
    stack: LocalStack, runner: LocalRunner, bus: Bus
) -> None:
    # Given 10 MB of gzip that inflates to 10 GiB of zeros (160 members of 64 MiB each)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = b"".join(packer.compress(bytes(1024 * 1024)) for _ in range(64)) + packer.flush()
    body = member * 160
    assert len(body) < 12 * 1024 * 1024

    # When it is dropped into inbox/ (its memory measured while the pipeline runs)
    tracemalloc.start()
    try:
        outcome = run(stack, runner, bus, "inbox/hostile/bomb.jsonl.gz", body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then the job failed at the decompressed limit, naming it, within bounded memory: one
    # line's cap and buffers, not the 10 GiB the file inflates to
    assert outcome.status == "FAILED"
    assert outcome.reason is not None
    ratio = f"the gzip file inflates more than {MAX_GZIP_RATIO} times ("
    assert outcome.reason.startswith(f"the file cannot be read: {ratio}")
    assert outcome.reason.endswith("refused as a decompression bomb")
    inflated, _, _, compressed = outcome.reason.split("(")[1].split(" ")[:4]
    assert int(compressed) < len(body) / 5
    assert int(inflated) <= max(GZIP_FREE_BYTES, MAX_GZIP_RATIO * int(compressed)) + MAX_LINE_BYTES + 1
    assert peak < 2 * MAX_LINE_BYTES + 4 * len(body), f"peak {peak / 2**20:.0f} MiB"
    assert_announced(outcome)


def test_an_overlong_line_is_rejected_with_its_length_and_the_rest_runs(
    stack: LocalStack, runner: LocalRunner, bus: Bus
) -> None:
    # Given a gzip whose second line inflates to 40 MiB (over the 32 MiB a request may be)
    body = gzip.compress(lines(req("a"), b"[" + b"{}," * (40 * 2**20 // 3) + b"{}]", req("b")), compresslevel=1)

    outcome = run(stack, runner, bus, "inbox/hostile/long.jsonl.gz", body)

    assert (outcome.status, outcome.ids) == ("COMPLETED_WITH_ERRORS", ["a", "b"])
    ((line, reason),) = outcome.rejected
    assert line == 2
    length = len(b"[" + b"{}," * (40 * 2**20 // 3) + b"{}]")
    assert reason.startswith(f"line is {length} bytes; a request may be at most {MAX_LINE_BYTES} bytes")
    assert_announced(outcome)


# --- object keys and what starts a job ------------------------------------------------

KEYS = [
    "inbox/hostile/with spaces.jsonl",
    "inbox/hostile/per%cent.jsonl",
    "inbox/hostile/plus+sign.jsonl",
    "inbox/hostile/ünïcødé-文件.jsonl",
    "inbox/hostile/" + "k" * (1000 - len("inbox/hostile/")),
]


@pytest.mark.parametrize("key", KEYS, ids=["spaces", "percent", "plus", "unicode", "1,000 characters"])
def test_any_key_s3_allows_becomes_its_job(stack: LocalStack, runner: LocalRunner, bus: Bus, key: str) -> None:
    assert len(key) <= 1000
    outcome = run(stack, runner, bus, key, lines(req("a")))
    assert (outcome.status, outcome.ids) == ("COMPLETED", ["a"])
    assert read_manifest(stack, outcome.job_id)["source"]["key"] == key
    assert [event["source_key"] for event in outcome.events] == [key]


def test_folder_markers_and_objects_outside_inbox_start_no_job(
    stack: LocalStack, runner: LocalRunner, bus: Bus
) -> None:
    # Given a folder marker under inbox/, files beside inbox/, then an ordinary file
    quiet = {
        "inbox/hostile/folder/": put_version(stack, "inbox/hostile/folder/", b""),
        "inboxes/x.jsonl": put_version(stack, "inboxes/x.jsonl", lines(req("a"))),
        "other/inbox/x.jsonl": put_version(stack, "other/inbox/x.jsonl", lines(req("a"))),
    }

    # When the pipeline runs until every job it accepted has ended (the runner's own measure)
    version = put_version(stack, "inbox/hostile/after.jsonl", lines(req("a")))
    assert runner.drain(timeout=30)
    after = ended(stack, bus, job_id_for(stack.bucket_name, "inbox/hostile/after.jsonl", version))

    # Then only that one is a job: the marker's event was handled, and made none
    assert after.status == "COMPLETED"
    for key, version in quiet.items():
        job_id = job_id_for(stack.bucket_name, key, version)
        assert job_status(stack, job_id) is None, key
        assert bus.of(job_id, wait=0) == [], key
    marker_calls = [call for call in runner.invocations_of(SUBMIT) if _event_key(call.event) == "inbox/hostile/folder/"]
    assert [call.result["jobs"][0]["status"] for call in marker_calls] == [None]


def _event_key(event: dict[str, Any]) -> str | None:
    records = event.get("Records") or [{}]
    return records[0].get("s3", {}).get("object", {}).get("key")


def test_the_same_key_twice_within_a_second_is_two_jobs(stack: LocalStack, runner: LocalRunner, bus: Bus) -> None:
    key = "inbox/hostile/twice.jsonl"
    first = job_id_for(stack.bucket_name, key, put_version(stack, key, lines(req("one"))))
    second = job_id_for(stack.bucket_name, key, put_version(stack, key, lines(req("two-a"), req("two-b"))))

    outcomes = wait_for(stack, runner, bus, [first, second])

    assert [(o.status, o.ids) for o in outcomes] == [("COMPLETED", ["one"]), ("COMPLETED", ["two-a", "two-b"])]
    for outcome in outcomes:
        assert_announced(outcome)


def test_twenty_files_at_once_each_complete(stack: LocalStack, runner: LocalRunner, bus: Bus) -> None:
    jobs = [
        job_id_for(stack.bucket_name, key, put_version(stack, key, lines(req(f"f{n}-a"), req(f"f{n}-b"))))
        for n, key in _numbered("inbox/hostile/burst/{}.jsonl", 20)
    ]

    outcomes = wait_for(stack, runner, bus, jobs)

    assert [(o.status, o.ids) for o in outcomes] == [("COMPLETED", [f"f{n}-a", f"f{n}-b"]) for n in range(20)]
    for outcome in outcomes:
        assert_announced(outcome)


def _numbered(pattern: str, count: int) -> Iterator[tuple[int, str]]:
    for n in range(count):
        yield n, pattern.format(n)


def test_a_file_over_the_size_taken_is_refused_unread_and_announced(
    stack: LocalStack, runner: LocalRunner, bus: Bus
) -> None:
    # Given functions that take files of at most 100 bytes, and a file of three requests
    body = lines(req("a"), req("b"), req("c"))
    stack.function_variables[ENV_MAX_FILE_BYTES] = "100"
    try:
        # When it is dropped into inbox/
        outcome = run(stack, runner, bus, "inbox/hostile/big.jsonl", body)
    finally:
        del stack.function_variables[ENV_MAX_FILE_BYTES]

    # Then its job is FAILED with the sizes, nothing was sent, and its end is on the bus
    assert (outcome.status, outcome.rejected, outcome.ids) == ("FAILED", [], [])
    assert outcome.reason == f"the file is {len(body)} bytes, over the 100 bytes taken"
    assert json.loads(read(stack, f"errors/{outcome.job_id}/failure.json"))["reason"] == outcome.reason
    assert_announced(outcome)
