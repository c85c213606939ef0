"""What one checker tick costs, in calls: an idle tick is one query, and a busy
tick grows with open batches, never with requests: one list call shows up to 1,000 of them,
a lone batch is retrieved, and a batch whose counts moved has them noted on its shard (one
write; none when nothing moved). Exact counts, never times: CallCounter
counts every AWS call of the tick's own clients, and the emulator counts the API requests
it received per endpoint. A regression such as a write per request, a read of the shard
bodies on every tick or a second query when idle changes these numbers and fails here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from batchdrop.adapters.objects import PART_BYTES
from batchdrop.domain.records import SourceRef
from batchdrop.domain.shards import ShardLimits
from batchdrop.ports import Wiring
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker, TickReport
from batchdrop_local.calls import CallCounter, fresh_adapters
from batchdrop_local.soak import Upload, put_requests
from batchdrop_local.stack import LocalStack
from tests.e2e.support import assert_each_request_once, read_manifest

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack (tests/e2e/conftest.py). An hour per batch: nothing ends unless a test
# ends it through the control endpoint.
STACK = {"latency": 3600}

N = 50  # requests per batch in the small job; the large one has ten times as many


# Clients made by a test, closed after it (an unclosed socket is an error under pytest).
_MADE: list[Any] = []


@pytest.fixture(autouse=True)
def nothing_open(stack: LocalStack) -> Iterator[None]:
    """Each test starts and leaves the stack with nothing open, so a tick sees only its jobs."""
    assert stack.open_batch_count() == 0
    try:
        yield
        _close_everything(stack)
    finally:
        while _MADE:
            _MADE.pop().close()


@dataclass(frozen=True)
class Cost:
    """The calls one tick made: AWS by (service, operation), the API by endpoint."""

    aws: dict[tuple[str, str], int]
    api: dict[str, int]
    report: TickReport


def _fresh_wiring(stack: LocalStack, **settings: Any) -> Wiring:
    """The services' wiring on clients made now (the stack's own predate CallCounter)."""
    made = fresh_adapters(stack)
    _MADE.append(made)
    wired: Wiring = made.wiring(**settings)
    return wired


def _checker(stack: LocalStack) -> Checker:
    return Checker(_fresh_wiring(stack), seconds_left=lambda: 900.0)


def _counted_tick(stack: LocalStack) -> Cost:
    control = stack.emulator_control()
    before = control.counters()["http_requests"]
    with CallCounter() as calls:
        report = _checker(stack).tick()
    after = control.counters()["http_requests"]
    api = {endpoint: n - before.get(endpoint, 0) for endpoint, n in after.items() if n != before.get(endpoint, 0)}
    return Cost(aws=dict(calls.calls), api=api, report=report)


def _submit(stack: LocalStack, requests: int, per_batch: int) -> Upload:
    """A file of `requests` requests through the real Submitter, in batches of `per_batch`."""
    name = uuid.uuid4().hex[:8]
    upload = put_requests(stack, f"inbox/budget/{name}.jsonl", f"b{name}", requests)
    intake = Intake(_fresh_wiring(stack, limits=ShardLimits(max_requests=per_batch)))
    outcome = intake.submit(SourceRef(stack.bucket_name, upload.key, upload.version_id))
    assert (outcome.status, outcome.submitted) == ("RUNNING", -(-requests // per_batch))
    return upload


def _close_everything(stack: LocalStack) -> None:
    """End every open batch and tick until the open index is empty."""
    stack.emulator_control().end()
    for _ in range(5):
        if stack.open_batch_count() == 0:
            return
        _checker(stack).tick()
    assert stack.open_batch_count() == 0


def _open_tick_cost(stack: LocalStack, requests: int, per_batch: int) -> tuple[Cost, Cost]:
    """A job's batches submitted and still in progress; what the first tick over them costs
    (which notes each batch's progress on its shard), and what the next one costs, when no
    batch's counts have moved (an hour per batch: none has processed a request yet)."""
    _submit(stack, requests, per_batch)
    first = _counted_tick(stack)
    again = _counted_tick(stack)
    _close_everything(stack)
    return first, again


def _collect_tick_cost(stack: LocalStack, requests: int, per_batch: int) -> tuple[Cost, Upload]:
    """A job's batches submitted and ended; what the tick that collects them costs."""
    upload = _submit(stack, requests, per_batch)
    stack.emulator_control().end()
    return _counted_tick(stack), upload


def test_an_idle_tick_is_one_query_and_nothing_else(stack: LocalStack) -> None:
    # Given a table that holds a finished job, and nothing open
    _submit(stack, 4, 2)
    _close_everything(stack)

    # When a tick runs
    cost = _counted_tick(stack)

    # Then it made one DynamoDB Query, no S3 or EventBridge call, and no API request
    assert cost.aws == {("dynamodb", "Query"): 1}
    assert cost.api == {}
    assert cost.report.open_batches == 0
    assert not cost.report.collected
    assert not cost.report.finished_jobs


def test_a_tick_over_open_batches_costs_the_same_for_ten_times_the_requests(stack: LocalStack) -> None:
    # Given a job of 2 batches of N requests, then one of 2 batches of 10*N, each still in progress
    # When a tick runs over each
    (small, small_again), (large, large_again) = (
        _open_tick_cost(stack, 2 * N, N),
        _open_tick_cost(stack, 20 * N, 10 * N),
    )

    # Then both cost exactly the one query, one list call and one write per batch, its progress
    # noted: no S3, no read or write per request
    assert small.aws == large.aws == {("dynamodb", "Query"): 1, ("dynamodb", "UpdateItem"): 2}
    assert small.api == large.api == {"list": 1}
    assert small.report.open_batches == large.report.open_batches == 2
    assert not small.report.collected
    assert not large.report.collected
    # And the next tick, its batches' counts unchanged, writes nothing
    assert small_again.aws == large_again.aws == {("dynamodb", "Query"): 1}
    assert small_again.api == large_again.api == {"list": 1}


def test_a_tick_over_open_batches_grows_with_the_batches(stack: LocalStack) -> None:
    # Given a job of 1 batch of N requests, then one of 4 batches of N, each still in progress
    # When a tick runs over each
    (one, one_again), (four, four_again) = _open_tick_cost(stack, N, N), _open_tick_cost(stack, 4 * N, N)

    # Then the query stays one, with one progress write per batch the first time it is seen; the
    # lone batch is retrieved, the four are read from one list call
    assert one.aws == {("dynamodb", "Query"): 1, ("dynamodb", "UpdateItem"): 1}
    assert four.aws == {("dynamodb", "Query"): 1, ("dynamodb", "UpdateItem"): 4}
    assert one_again.aws == four_again.aws == {("dynamodb", "Query"): 1}
    assert one.api == one_again.api == {"retrieve": 1}
    assert four.api == four_again.api == {"list": 1}


def test_a_tick_that_collects_costs_the_same_for_ten_times_the_requests(stack: LocalStack) -> None:
    # Given a job of 2 batches of N requests, then one of 2 batches of 10*N, each ended
    # When the tick that collects each job runs
    small, small_upload = _collect_tick_cost(stack, 2 * N, N)
    large, large_upload = _collect_tick_cost(stack, 2 * 10 * N, 10 * N)

    # Then both cost the same calls: the open-index query and one list call, then per batch a
    # consistent read of the shard, the results download, one S3 PUT of the part and the
    # fenced update; per job its items' query, the GETs of its estimate and of its priming
    # record (set in the manifest; this job was not primed: a 404), the manifest PUT, its
    # report's PUT, the event, and the close (a transaction: the job's move and its day's spend).
    # (An S3 part grows with bytes, one UploadPart per 8 MiB: these parts are one PUT each,
    # checked below, so a call per request or per line would show here.)
    expected_aws = {
        ("dynamodb", "Query"): 2,
        ("dynamodb", "GetItem"): 2,
        ("dynamodb", "UpdateItem"): 2,
        ("dynamodb", "TransactWriteItems"): 1,
        ("s3", "GetObject"): 2,
        ("s3", "PutObject"): 2 + 2,
        ("events", "PutEvents"): 1,
    }
    assert small.aws == large.aws == expected_aws
    assert small.api == large.api == {"list": 1, "results": 2}
    part_sizes = {}
    for cost, upload in ((small, small_upload), (large, large_upload)):
        assert len(cost.report.collected) == 2
        assert cost.report.finished_jobs == [upload.job_id]
        manifest = read_manifest(stack, upload.job_id)
        assert_each_request_once(stack, manifest, list(upload.custom_ids))
        part_sizes[upload.job_id] = [_size(stack, key) for key in manifest["results"]]
    # And the large job's parts really carry ten times the results, still under one 8 MiB part
    assert min(part_sizes[large_upload.job_id]) > 9 * max(part_sizes[small_upload.job_id])
    assert max(part_sizes[large_upload.job_id]) < PART_BYTES


def _size(stack: LocalStack, key: str) -> int:
    return int(stack.client("s3").head_object(Bucket=stack.bucket_name, Key=key)["ContentLength"])


# --- the list call and its fall-backs ---------------------------------------------------


def _foreign_batches(stack: LocalStack, count: int) -> None:
    """`count` batches another application of the workspace created after ours."""
    made = fresh_adapters(stack)
    _MADE.append(made)
    for index in range(count):
        made.api.client.messages.batches.create(
            requests=[
                {
                    "custom_id": f"other-{index}",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                }
            ]
        )


def test_batches_the_list_pages_do_not_reach_are_retrieved_one_by_one(stack: LocalStack) -> None:
    # Given our 2 open batches, then 150 newer batches of another application in the workspace
    _submit(stack, 2 * N, N)
    _foreign_batches(stack, 150)

    # When a tick runs
    cost = _counted_tick(stack)

    # Then it spent its one list call (one per 50 open batches, the first 100 of the workspace
    # show neither of ours) and retrieved each of ours on its own
    assert cost.api == {"list": 1, "retrieve": 2}
    assert cost.report.open_batches == 2
    assert cost.report.deferred == 0


def test_a_failing_list_leaves_each_batch_to_its_own_retrieve(stack: LocalStack) -> None:
    # Given a job of 2 ended batches, and a list endpoint that answers 500 every time
    upload = _submit(stack, 2 * N, N)
    control = stack.emulator_control()
    control.end()
    control.set_faults({"http_errors": [{"endpoint": "list", "status": 500, "rate": 1}]})
    try:
        # When a tick runs
        cost = _counted_tick(stack)
    finally:
        control.set_faults({"http_errors": []})

    # Then it retrieved each batch, and collected both and closed the job all the same
    assert cost.api["list"] >= 1
    assert cost.api["retrieve"] == 2
    assert cost.api["results"] == 2
    assert cost.report.finished_jobs == [upload.job_id]
    assert_each_request_once(stack, read_manifest(stack, upload.job_id), list(upload.custom_ids))
