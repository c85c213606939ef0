"""No request is lost or sent twice, whatever order things happen in (docs/guarantees.md):
a Hypothesis state machine interleaves uploads, overwrites, duplicate S3
events, event deliveries, checker ticks, time passing, emulator faults and process crashes
on one local stack, checks cheap invariants after every step, and at the end drains the
pipeline and audits everything (batchdrop_local.soak.audit): every input request exactly
once in results/, counts that add up, each request sent exactly as many times as its final
attempt, every accepted batch named by a manifest, no multipart upload left open.

The pipeline's clocks run 150 times faster (batchdrop_local.soak.compressed_time), so a
0.6-second `later` step is 1.5 minutes of production time. Each example starts from an empty
table and a reset emulator. Examples are derandomized (the same sequences on every run);
a failure prints its steps, unshrunk (each example takes seconds). Sequences the examples
reach only by chance are also run step by step, through the same machine."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.objects import MultipartWriter
from batchdrop.adapters.state import StateTable
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import (
    COMPRESSED_TIMINGS,
    Upload,
    all_finished,
    audit,
    compressed_time,
    put_requests,
    read_object,
)
from batchdrop_local.stack import LocalStack
from tests.e2e.crash import CrashPoint, writing_results
from tests.e2e.support import CHECKER, MAX_ATTEMPTS, SUBMIT

# A crashed or failing invocation flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack (tests/e2e/conftest.py), and the settings of the runner each example
# builds around handlers that may crash
STACK = {"latency": 0.3}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}

SETTINGS = settings(
    max_examples=6,
    stateful_step_count=15,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: an example takes seconds
    suppress_health_check=[HealthCheck.too_slow],
)

# Faults that stay until changed, and faults armed for one call (kept armed until they fire:
# the name of what the emulator counts when they do). Each list starts with a fault, since
# Hypothesis's first and simplest choices are the first elements.
STANDING_FAULTS: dict[str, dict[str, Any]] = {
    "transient outcomes": {"errored": {"api_error": 0.2, "overloaded_error": 0.1}, "expired": 0.1},
    "small queue": {"queue_limit": 8},
    "queue lifted": {"queue_limit": None},
    "list endpoint down": {"http_errors": [{"endpoint": "list", "status": 500, "rate": 1}]},
    "list endpoint up": {"http_errors": []},
    "no transient outcomes": {"errored": {}, "expired": 0.0},
}
ONE_SHOT_FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lose the next create response": ("lost_create_response", {"lose_create_response": {"rate": 1, "times": 1}}),
    "500 on the next create": (
        "http_500",
        {"http_errors": [{"endpoint": "create", "status": 500, "rate": 1, "times": 1}]},
    ),
    "529 on the next create": (
        "http_529",
        {"http_errors": [{"endpoint": "create", "status": 529, "rate": 1, "times": 1}]},
    ),
    "429 on the next create": (
        "http_429",
        {"http_errors": [{"endpoint": "create", "status": 429, "rate": 1, "times": 1}]},
    ),
    "cut the next results stream": ("dropped_results", {"drop_results": {"rate": 1, "times": 1}}),
}
FAULTS = [*ONE_SHOT_FAULTS, *STANDING_FAULTS, "none"]


CRASHES: dict[str, Callable[[], CrashPoint]] = {
    "after the provider accepted a create, before its id is recorded": lambda: CrashPoint(
        BatchesApi, "create", "after"
    ),
    "mid results stream": lambda: CrashPoint(MultipartWriter, "write", "before", nth=3, counts=writing_results),
    "after the intent, before the create": lambda: CrashPoint(StateTable, "begin_submit", "after"),
    "results written, before the retry is scheduled": lambda: CrashPoint(StateTable, "schedule_retry", "before"),
    "results written, before the shard is collected": lambda: CrashPoint(StateTable, "mark_collected", "before"),
    "manifest written, before the job is closed": lambda: CrashPoint(StateTable, "finish_job", "before"),
    "before the shards are recorded": lambda: CrashPoint(StateTable, "record_shards", "before"),
}


def _empty_table(stack: LocalStack) -> None:
    """Forget every job, shard and lease: each example starts on a fresh table."""
    dynamodb = stack.client("dynamodb")
    pages = dynamodb.get_paginator("scan").paginate(TableName=stack.table_name, ProjectionExpression="PK, SK")
    for page in pages:
        for item in page["Items"]:
            dynamodb.delete_item(TableName=stack.table_name, Key={"PK": item["PK"], "SK": item["SK"]})


class Pipeline(RuleBasedStateMachine):
    """One run of the pipeline on the shared local stack."""

    uploads = Bundle("uploads")

    def __init__(self, stack: LocalStack, handlers: dict[str, Any], covered: Counter[str]) -> None:
        super().__init__()
        self.covered = covered
        self.stack = stack
        self.control = stack.emulator_control()
        _empty_table(stack)
        self.control.reset(faults=True)
        self.crash: CrashPoint | None = None  # the last one armed
        self.crashes: list[CrashPoint] = []
        self.patches = pytest.MonkeyPatch()
        self.runner = LocalRunner(
            stack,
            submit_handler=self._surviving(handlers[SUBMIT]),
            checker_handler=self._surviving(handlers[CHECKER]),
            **RUNNER,
        )
        self.run = uuid.uuid4().hex[:8]
        self.files = 0
        self.jobs: dict[str, Upload] = {}
        self.standing: dict[str, Any] = {}
        self.armed: set[str] = set()  # one-shot faults not fired yet
        self.parts: dict[str, str] = {}  # results part → its ETag when first seen
        self.returned: dict[str, Counter[str]] = {}  # job → custom_ids in its parts
        self.injected: Counter[str] = Counter()  # faults the emulator injected (its count restarts per setting)

    def _surviving(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        """The handler as Lambda runs it: a crash kills the invocation, the next starts afresh."""

        def invoke(event: dict[str, Any], context: Any) -> Any:
            if self.crash is None:
                return handler(event, context)
            return self.crash.survive(handler)(event, context)

        return invoke

    # --- rules ----------------------------------------------------------------------

    @initialize(target=uploads, requests=st.integers(1, 15), calm=st.booleans(), first=st.sampled_from(FAULTS))
    def first_upload(self, requests: int, calm: bool, first: str) -> Upload:
        """Every run has a job from its start, on a provider that fails some requests (unless
        calm), with a first fault."""
        if not calm:
            self.standing.update(STANDING_FAULTS["transient outcomes"])
        self.fault(first)
        return self.upload(requests)

    @rule(target=uploads, requests=st.integers(1, 15))
    def upload(self, requests: int) -> Upload:
        self.covered["step upload"] += 1
        self.files += 1
        key = f"inbox/stateful/{self.run}/{self.files}.jsonl"
        return self._put(key, requests)

    @rule(target=uploads, earlier=uploads, requests=st.integers(1, 15))
    def overwrite(self, earlier: Upload, requests: int) -> Upload:
        """A new version of a key already uploaded: a new job."""
        self.covered["step overwrite"] += 1
        return self._put(earlier.key, requests)

    def _put(self, key: str, requests: int) -> Upload:
        self.files += 1
        upload = put_requests(self.stack, key, f"{self.run}-{self.files:03d}", requests)
        self.jobs[upload.job_id] = upload
        return upload

    @rule(upload=uploads)
    def redeliver(self, upload: Upload) -> None:
        """S3 sends the event of a version again (at-least-once delivery)."""
        self.covered["step redeliver"] += 1
        self.runner.redeliver(upload.key, upload.version_id)

    @rule()
    def deliver(self) -> None:
        self.covered["step deliver"] += 1
        self.runner.deliver_pending()

    @rule()
    def tick(self) -> None:
        self.covered["step tick"] += 1
        self.runner.tick()

    @rule()
    def later(self) -> None:
        """Time passes (1.5 minutes in production time): leases run out, grace periods end."""
        self.covered["step later"] += 1
        time.sleep(0.6)

    @rule(name=st.sampled_from(FAULTS))
    def fault(self, name: str) -> None:
        """The provider changes: a standing fault until changed, or one armed for one call."""
        self.covered[f"step fault {name}"] += 1
        if name in STANDING_FAULTS:
            self.standing.update(STANDING_FAULTS[name])
        if name in ONE_SHOT_FAULTS:
            self.armed.add(name)
        self._set_faults()

    def _set_faults(self) -> None:
        """Apply the standing faults and the one-shots that have not fired yet (the emulator
        counts afresh, and budgets start again, with every setting)."""
        injected = self.control.counters()["faults_injected"]
        self.injected.update(injected)
        self.armed = {name for name in self.armed if not injected.get(ONE_SHOT_FAULTS[name][0])}
        faults: dict[str, Any] = dict(self.standing)
        for name in sorted(self.armed):
            for kind, setting in ONE_SHOT_FAULTS[name][1].items():
                faults[kind] = faults.get(kind, []) + setting if kind == "http_errors" else setting
        self.control.set_faults(faults)

    @precondition(lambda self: self.crash is None or self.crash.fired > 0)
    @rule(name=st.sampled_from(list(CRASHES)))
    def crash_at(self, name: str) -> None:
        """The next time the pipeline reaches this point, its process dies."""
        self.covered["step crash_at"] += 1
        self.crash = CRASHES[name]().install(self.patches)
        self.crashes.append(self.crash)

    # --- invariants after every step -------------------------------------------------

    @invariant()
    def results_hold_only_the_jobs_own_requests_each_at_most_once(self) -> None:
        s3 = self.stack.client("s3")
        for job_id, upload in self.jobs.items():
            listed = s3.list_objects_v2(Bucket=self.stack.bucket_name, Prefix=f"results/{job_id}/results-")
            for item in listed.get("Contents", []):
                key, etag = item["Key"], item["ETag"]
                if key in self.parts:
                    assert self.parts[key] == etag, f"results part {key} was written twice, differently"
                    continue
                self.parts[key] = etag
                returned = self.returned.setdefault(job_id, Counter())
                returned.update(json.loads(line)["custom_id"] for line in read_object(self.stack, key).splitlines())
            returned = self.returned.get(job_id, Counter())
            assert set(returned) <= set(upload.custom_ids), f"{job_id}: results of requests it never had"
            assert all(times == 1 for times in returned.values()), f"{job_id}: a request has two results"
            assert sum(returned.values()) <= len(upload.custom_ids)

    @invariant()
    def no_request_is_sent_more_often_than_its_attempts_and_no_batch_is_extra(self) -> None:
        sent = self.control.custom_ids(minimum=1)
        accepted = self.control.counters()["creates_accepted"]
        rounds = 0
        for job_id, upload in self.jobs.items():
            items = self.stack.client("dynamodb").query(
                TableName=self.stack.table_name,
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}},
                ConsistentRead=True,
            )["Items"]
            job = next((item for item in items if item["SK"]["S"] == "JOB"), None)
            assert job is None or job["status"]["S"] != "FAILED", f"{job_id}: a valid file failed"
            shards = [item for item in items if item["SK"]["S"].startswith("SHARD#")]
            assert len(shards) <= 1  # 15 requests at most: one shard
            attempt = int(shards[0].get("attempt", {"N": "1"})["N"]) if shards else 0
            assert attempt <= MAX_ATTEMPTS
            rounds += attempt
            over = {i: sent[i] for i in upload.custom_ids if sent.get(i, 0) > attempt}
            assert not over, f"{job_id} at attempt {attempt}: requests sent more often {over}"
        assert accepted <= rounds, f"the emulator accepted {accepted} batches for {rounds} attempts begun"

    # --- the end ----------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            # The faults stay on to the end (attempts are bounded), but a full queue and a
            # list endpoint that is down are lifted: a shard bigger than the queue would wait
            # for room, and an unknown create for its settlement, forever
            self.standing.pop("queue_limit", None)
            self.standing.pop("http_errors", None)
            self._set_faults()
            uploads = list(self.jobs.values())
            drained = self.runner.drain(timeout=45, idle=lambda: all_finished(self.stack, uploads))
            self._set_faults()  # what fired while draining is counted too
            report = audit(self.stack, uploads, max_attempts=MAX_ATTEMPTS)
            self.covered.update(
                {
                    "examples": 1,
                    "jobs": len(self.jobs),
                    "requests": report.requests,
                    "requests retried": report.requests_retried,
                    "duplicate events": sum(1 for i in self.runner.invocations_of(SUBMIT) if _duplicate(i.result)),
                    "crashes": sum(point.fired for point in self.crashes),
                    **{f"fault {kind}": n for kind, n in self.injected.items()},
                }
            )
            assert drained, f"not every job finished: {report.problems}"
            assert not report.problems, "\n".join(report.problems)
            assert report.finished == len(self.jobs)
        finally:
            self.patches.undo()


def _duplicate(result: Any) -> bool:
    return isinstance(result, dict) and any(job.get("duplicate") for job in result.get("jobs", []))


def test_any_interleaving_of_uploads_events_ticks_faults_and_crashes_gives_each_request_one_outcome(
    stack: LocalStack, handlers: dict[str, Any]
) -> None:
    covered: Counter[str] = Counter()
    with compressed_time(stack):
        run_state_machine_as_test(lambda: Pipeline(stack, handlers, covered), settings=SETTINGS)
    print(dict(covered))  # what the examples did: pytest -s shows it

    # And the run was not vacuous: the examples met crashes, retries and lost or failed creates
    assert covered["crashes"] > 0
    assert covered["requests retried"] > 0
    assert covered["fault lost_create_response"] + covered["fault http_500"] + covered["fault http_529"] > 0


# How a create is left unsettled: (the fault its create meets, the crash point armed).
UNSETTLED = {
    "create answered 500": ("500 on the next create", None),
    "process died after the intent": ("none", "after the intent, before the create"),
}


@pytest.mark.parametrize("how", list(UNSETTLED))
def test_a_create_left_unsettled_never_takes_the_batch_of_a_later_create_of_the_same_size(
    how: str, stack: LocalStack, handlers: dict[str, Any]
) -> None:
    """A sequence the examples above reach only by chance, run step by step: a create that
    made no batch is left unsettled (answered 500, or its process died after recording the
    intent); longer than a create may take passes before the checker next runs (16 minutes
    in production time); then another upload of the same size has its create accepted but
    its response lost. Batches are told apart by time window and request count only, so the
    first create's lease must keep the second from being sent before the first is settled."""
    fault, crash = UNSETTLED[how]
    covered: Counter[str] = Counter()
    with compressed_time(stack):
        machine = Pipeline(stack, handlers, covered)
        checks = [
            machine.results_hold_only_the_jobs_own_requests_each_at_most_once,
            machine.no_request_is_sent_more_often_than_its_attempts_and_no_batch_is_extra,
        ]
        try:
            if crash is not None:
                machine.crash_at(crash)
            machine.first_upload(requests=5, calm=True, first=fault)
            machine.deliver()
            time.sleep(COMPRESSED_TIMINGS.stale_intent + 0.2)
            machine.fault("lose the next create response")
            machine.upload(requests=5)
            machine.deliver()
            for _ in range(3):
                machine.later()
                machine.tick()
                for check in checks:
                    check()
        finally:
            machine.teardown()
