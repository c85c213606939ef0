"""A file too long to split in one invocation completes (docs/guarantees.md, a file of any
size): on the local stack, with the submit function's time shrunk to one second and the
split's reserve above it, every invocation splits one shard and stops at its boundary; the
sweep goes on with the split once each invocation's deadline has passed. The job ends as
the same file split in one go: the same shards' bytes and digests, the same counts, the
same rejected.jsonl, every request sent and collected once; also when the process dies
between two steps of a segment."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from typing import Any

import pytest

from batchdrop.adapters.state import StateTable
from batchdrop.domain.timings import Timings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import read_object
from batchdrop_local.stack import LocalStack
from tests.e2e.crash import Crash, CrashPoint, RuntimeExited, forget_environment
from tests.e2e.support import (
    CHECKER,
    SUBMIT,
    assert_each_request_once,
    input_ids,
    put_version,
    read_manifest,
    result_lines,
    run_to_the_end,
    shard_items,
    with_settings,
)

# A crashed invocation flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

STACK = {"latency": 0.1}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.05}
SECONDS = 1.0  # the submit function's time, while it is shrunk
# A split stops at every shard boundary (its reserve is over the function's time); the sweep
# takes every inbox/ version and goes on at once after each invocation's deadline.
TIMINGS = Timings(split_reserve=5.0, sweep_min_age=0.0, sweep_safety=0.0)
SHARD_REQUESTS = 4
KEY = "inbox/segments/big.jsonl"


def line(custom_id: str, text: str = "Hello") -> bytes:
    params = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": custom_id, "params": params}).encode()


def body() -> bytes:
    """Four shards of 4 requests, then one of 2, with rejected and blank lines between them,
    and a custom_id used again three shards after its first line."""
    lines = [line(f"r{n:02d}") for n in range(18)]
    lines[5:5] = [b'{"custom_id": "bad id", "params": {}}', b""]
    lines[12:12] = [line("r01", "used again"), b"{not json"]
    lines.append(b"   ")
    return b"".join(item + b"\n" for item in lines)


class Budget:
    """The submit function's context, with its time shrunk to SECONDS while `short`."""

    def __init__(self) -> None:
        self.short = True
        self.crash: CrashPoint | None = None  # one the test installed: its dying ends with the invocation

    def install(self, handler: Any) -> Any:
        @functools.wraps(handler)
        def invoke(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, _Shrunk(context, SECONDS) if self.short else context)
            except Crash as crash:
                if self.crash is not None:
                    self.crash.dying = False
                forget_environment()
                raise RuntimeExited(f"Runtime exited: simulated crash {crash}") from None

        return invoke


class _Shrunk:
    """A Lambda context whose remaining time ends `seconds` after the invocation began."""

    def __init__(self, context: Any, seconds: float) -> None:
        self._context = context
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


@pytest.fixture
def budget() -> Budget:
    return Budget()


@pytest.fixture
def runner(stack: LocalStack, handlers: dict[str, Any], budget: Budget, monkeypatch: pytest.MonkeyPatch) -> LocalRunner:
    stack.emulator_control().reset(faults=True)
    with_settings(stack, monkeypatch, timings=TIMINGS, shard_max_requests=SHARD_REQUESTS)
    return LocalRunner(stack, budget.install(handlers[SUBMIT]), handlers[CHECKER], **RUNNER)


def job_item(stack: LocalStack, job_id: str) -> dict[str, Any]:
    key = {"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "JOB"}}
    return stack.client("dynamodb").get_item(TableName=stack.table_name, Key=key, ConsistentRead=True)["Item"]


def split_in_segments(stack: LocalStack, runner: LocalRunner, data: bytes) -> tuple[str, int]:
    """Upload `data`, deliver its event, then sweep until its split is done; the job and
    the segments its split took."""
    job_id = _upload(stack, data)
    runner.deliver_pending()
    segments = 1
    while job_item(stack, job_id)["status"]["S"] == "RECEIVED":
        time.sleep(SECONDS + 0.1)  # past the lease of the invocation that ran the last one
        sweep = runner.sweep()
        segments += job_id in (sweep.result or {}).get("continued", [])
        assert segments <= 20
    return job_id, segments


def _upload(stack: LocalStack, data: bytes) -> str:
    from batchdrop.domain.jobs import job_id_for

    return job_id_for(stack.bucket_name, KEY, put_version(stack, KEY, data))


def in_one_go(stack: LocalStack, runner: LocalRunner, budget: Budget, data: bytes) -> str:
    budget.short = False
    job_id = _upload(stack, data)
    runner.deliver_pending()
    assert "split" not in job_item(stack, job_id)
    return job_id


def what_the_split_left(stack: LocalStack, job_id: str) -> dict[str, Any]:
    """The shards (bytes, requests, digest, body size), the job's counts, rejected.jsonl, and
    once finished the manifest's counts and each request's outcome."""
    shards = [
        (
            item["index"]["N"],
            read_object(stack, item["key"]["S"]),
            item["requests"]["N"],
            item["ids_digest"]["S"],
            item["size"]["N"],
        )
        for item in shard_items(stack, job_id)
    ]
    job = job_item(stack, job_id)
    counts = (job["requested"]["N"], job["rejected"]["N"], job["shard_count"]["N"])
    rejected = read_object(stack, f"errors/{job_id}/rejected.jsonl")
    manifest = read_manifest(stack, job_id)
    outcomes = {cid: found[0][1]["result"]["type"] for cid, found in result_lines(stack, manifest).items()}
    return {
        "shards": shards,
        "counts": counts,
        "rejected": rejected,
        "manifest": manifest["counts"],
        "outcomes": outcomes,
    }


def test_a_file_split_over_several_invocations_ends_as_the_same_file_split_in_one_go(
    stack: LocalStack, runner: LocalRunner, budget: Budget
) -> None:
    # Given a file of five shards with rejected lines and a custom_id used twice across segments
    data = body()

    # When its split runs one shard per invocation, the sweep going on with it; then in one go
    job_id, segments = split_in_segments(stack, runner, data)
    manifest = run_to_the_end(stack, runner, job_id, timeout=30)
    reference_id = in_one_go(stack, runner, budget, data)
    run_to_the_end(stack, runner, reference_id, timeout=30)

    # Then it took five invocations, and left exactly what the split in one go left
    assert segments == 5
    left, reference = what_the_split_left(stack, job_id), what_the_split_left(stack, reference_id)
    assert left == reference
    assert left["counts"] == ("18", "3", "5")
    rejected = [json.loads(entry) for entry in left["rejected"].splitlines()]
    assert [entry["line"] for entry in rejected] == [6, 13, 14]
    assert 'custom_id: "r01" is already used on line 2' in rejected[1]["reason"]
    ids = [cid for cid in input_ids(data.replace(b"{not json\n", b"")) if cid != "bad id"]
    assert_each_request_once(stack, manifest, sorted(set(ids)))
    # ...and each request went out once per job: two batches never carried one twice
    control = stack.emulator_control()
    assert control.counters()["creates_accepted"] == 10
    assert Counter(control.custom_ids(minimum=1).values()) == Counter({2: 18})


def test_a_process_that_dies_between_two_steps_of_a_segment_is_gone_on_from_its_last_checkpoint(
    stack: LocalStack, runner: LocalRunner, budget: Budget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a split whose second segment's process dies after recording its shard, before
    # its checkpoint
    data = body()
    crash = CrashPoint(StateTable, "save_checkpoint", "before", nth=2).install(monkeypatch)
    budget.crash = crash

    # When the sweeps go on with it, and then the same file is split in one go
    job_id, _ = split_in_segments(stack, runner, data)
    run_to_the_end(stack, runner, job_id, timeout=30)
    reference_id = in_one_go(stack, runner, budget, data)
    run_to_the_end(stack, runner, reference_id, timeout=30)

    # Then the segment ran again from the checkpoint before it, and the job is the one-go split
    assert crash.fired == 1
    assert any("Runtime exited" in str(invocation.error) for invocation in runner.invocations_of(SUBMIT))
    assert what_the_split_left(stack, job_id) == what_the_split_left(stack, reference_id)
