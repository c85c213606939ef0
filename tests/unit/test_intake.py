"""The submit function's decisions (services/intake.py and the create it shares with the
checker), against in-memory fakes of S3, the state table and the Message Batches API."""

from __future__ import annotations

import contextvars
import gzip
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from batchdrop.domain.job_events import FAILED
from batchdrop.domain.jobs import IdsDigest, job_id_for, manifest_key, rejected_key
from batchdrop.domain.records import SourceRef
from batchdrop.domain.shards import ShardLimits, create_body_bytes, shard_key, whole_copy_key
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings
from batchdrop.errors import ProviderOutcomeUnknownError, ProviderRejectedError
from batchdrop.ports import SourceRange
from batchdrop.services import intake
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake, SubmitOutcome
from batchdrop.services.job_estimate import estimate_key
from batchdrop.services.split import Split, split_object
from batchdrop.services.tick import Checker
from tests.unit.fakes import (
    FakeBatchesApi,
    FakeClock,
    FakeObjectStore,
    Fakes,
    FakeStateStore,
    FakeWriter,
    errored,
    request,
)

pytestmark = pytest.mark.unit

QUEUE_FULL = ProviderRejectedError(429, "the queue is full", queue_full=True)


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def submit(world: Fakes, source: SourceRef, **settings: object) -> SubmitOutcome:
    return Intake(world.wiring(**settings)).submit(source)


def job_of(source: SourceRef) -> str:
    return job_id_for(source.bucket, source.key, source.version_id)


def test_a_clean_file_becomes_one_recorded_shard_and_one_batch(world: Fakes) -> None:
    # Given a file of three valid requests
    lines = [request("a"), request("b"), request("c")]
    source = world.upload("inbox/clean.jsonl", lines)

    # When it is submitted
    outcome = submit(world, source)

    # Then one batch carries exactly its lines, and the job's one shard is recorded with it
    [batch_id] = world.batches.batches
    assert world.batches.bodies[batch_id] == lines
    [shard] = world.state.shards(outcome.job_id)
    assert shard.state is ShardState.SUBMITTED
    assert shard.batch_id == batch_id
    assert (shard.requests, shard.attempt_requests, shard.creates_sent) == (3, 3, 1)
    assert shard.size == create_body_bytes(3, sum(len(line) for line in lines))
    assert world.store.get(shard.key) == b"".join(line + b"\n" for line in lines)
    # ...the job runs, with its counts, and the create lease is free again
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert (job.status, job.requested, job.rejected, job.shard_count) == (JobStatus.RUNNING, 3, 0, 1)
    assert outcome == SubmitOutcome(job_of(source), JobStatus.RUNNING, submitted=1)
    assert world.state.get_create_lease() is None


def test_a_duplicate_event_does_nothing(world: Fakes) -> None:
    # Given a file already submitted
    source = world.upload("inbox/twice.jsonl", [request("a")])
    submit(world, source)
    before = world.state.shards(job_of(source))

    # When its event is delivered again
    outcome = submit(world, source)

    # Then nothing is sent or written again
    assert outcome.duplicate
    assert outcome.status is JobStatus.RUNNING
    assert world.batches.creates == 1
    assert world.state.shards(job_of(source)) == before


def test_the_same_key_uploaded_again_is_a_new_job(world: Fakes) -> None:
    first = world.upload("inbox/again.jsonl", [request("a")])
    second = world.upload("inbox/again.jsonl", [request("a")])

    assert submit(world, first).job_id != submit(world, second).job_id
    assert world.batches.creates == 2


def test_rejected_lines_go_to_errors_and_the_valid_ones_are_sent(world: Fakes) -> None:
    # Given a file with one bad line between two good ones
    source = world.upload("inbox/mixed.jsonl", [request("a"), b'{"custom_id": "bad id"}', request("b")])

    # When it is submitted
    outcome = submit(world, source)

    # Then the bad line is in errors/ with its line number and reason, and the others go in one batch
    [rejected] = [json.loads(line) for line in world.store.get(rejected_key(outcome.job_id)).splitlines()]
    assert (rejected["line"], rejected["custom_id"], rejected["source"]) == (2, "bad id", source.key)
    assert "custom_id" in rejected["reason"]
    [batch_id] = world.batches.batches
    assert world.batches.requests[batch_id] == ["a", "b"]
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert (job.requested, job.rejected) == (2, 1)


def test_a_file_with_no_valid_line_fails_with_its_manifest_and_sends_nothing(world: Fakes) -> None:
    # Given a file whose every line is rejected
    source = world.upload("inbox/bad.jsonl", [b"not json", b'{"custom_id": "x"}'])

    # When it is submitted
    outcome = submit(world, source)

    # Then the job fails, nothing is sent, and its manifest and rejected lines say why
    assert outcome.status is JobStatus.FAILED
    assert world.batches.creates == 0
    assert world.state.shards(outcome.job_id) == []
    assert len(world.store.get(rejected_key(outcome.job_id)).splitlines()) == 2
    manifest = world.store.get_json(manifest_key(outcome.job_id))
    assert manifest["status"] == "FAILED"
    assert manifest["counts"]["rejected"] == 2
    assert "all 2 lines were rejected" in manifest["reason"]
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert (job.status, job.manifest_key) == (JobStatus.FAILED, manifest_key(outcome.job_id))
    # ...it leaves the checker's open index, and its end is announced like any other's
    assert world.state.open_work().jobs == []
    assert world.events.ends() == [(FAILED, outcome.job_id, "FAILED")]


def test_an_empty_file_fails_with_a_reason_beside_it(world: Fakes) -> None:
    source = world.upload("inbox/empty.jsonl", [b"", b"   "])

    outcome = submit(world, source)

    assert outcome.status is JobStatus.FAILED
    assert world.store.get_json(f"errors/{outcome.job_id}/failure.json")["reason"].startswith("the file holds no")
    assert world.store.get_json(manifest_key(outcome.job_id))["status"] == "FAILED"


@pytest.mark.parametrize(
    ("key", "body", "reason"),
    [
        ("inbox/cut.jsonl.gz", gzip.compress(b"\n".join([request("a"), request("b")]) * 50)[:-40], "truncated"),
        ("inbox/bad.jsonl.gz", gzip.compress(request("a"))[:10] + b"\xff" * 64, "the gzip file is corrupt"),
        ("inbox/text.jsonl.gz", request("a") + b"\n", "named .gz but is not gzip"),
    ],
    ids=["truncated gzip", "corrupt gzip", "text named .gz"],
)
def test_a_file_that_cannot_be_read_fails_at_once_with_its_reason_and_event(
    world: Fakes, key: str, body: bytes, reason: str
) -> None:
    # Given a file that cannot be read as JSON Lines at all
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))

    # When it is submitted
    outcome = submit(world, source)

    # Then the invocation does not raise (a retry would read the same bytes): the job is FAILED
    # with the reason in its manifest and beside it, nothing is sent, and its end is announced
    assert outcome.status is JobStatus.FAILED
    assert world.batches.creates == 0
    assert world.state.shards(outcome.job_id) == []
    manifest = world.store.get_json(manifest_key(outcome.job_id))
    assert manifest["status"] == "FAILED"
    assert manifest["reason"].startswith("the file cannot be read: ")
    assert reason in manifest["reason"]
    assert world.store.get_json(f"errors/{outcome.job_id}/failure.json")["reason"] == manifest["reason"]
    assert world.events.ends() == [(FAILED, outcome.job_id, "FAILED")]
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED


def test_a_gzip_named_jsonl_is_read_inflated_and_its_shard_written_not_copied(world: Fakes) -> None:
    # Given gzip bytes under a .jsonl name
    key = "inbox/packed.jsonl"
    source = SourceRef(world.store.bucket, key, world.store.put(key, gzip.compress(request("a") + b"\n")))

    # When it is submitted
    outcome = submit(world, source)

    # Then its request is sent, from a shard that holds the inflated line (not a copy of the gzip)
    assert outcome.status is JobStatus.RUNNING
    (shard,) = world.state.shards(outcome.job_id)
    assert world.store.get(shard.key) == request("a") + b"\n"


def test_a_file_over_the_size_taken_is_refused_unread_with_its_reason_and_event(world: Fakes) -> None:
    # Given a file of 3 requests, and a function that takes files of at most 100 bytes
    source = world.upload("inbox/big.jsonl", [request("a"), request("b"), request("c")])
    size = len(world.store.get(source.key))

    # When its event (which reports its size) is handled
    outcome = Intake(world.wiring(max_file_bytes=100)).submit(source, size)

    # Then the job is FAILED with the sizes in the reason, nothing sent, and its end announced
    assert outcome.status is JobStatus.FAILED
    assert world.batches.creates == 0
    reason = world.store.get_json(manifest_key(outcome.job_id))["reason"]
    assert reason == f"the file is {size} bytes, over the 100 bytes taken"
    assert world.events.ends() == [(FAILED, outcome.job_id, "FAILED")]


class _SlowWarmUp(FakeBatchesApi):
    def warm(self) -> None:
        time.sleep(0.2)  # the key read from Secrets Manager, say
        super().warm()


@pytest.mark.parametrize(
    "body", [b"\n".join([request("a"), request("b")]), b"\x1f\x8b not gzip"], ids=["sent", "failed"]
)
def test_a_large_files_split_makes_the_api_client_on_its_own_thread_and_ends_with_it(
    world: Fakes, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    # Given a file at the size from which the client is made while it is split
    monkeypatch.setattr(intake, "WARM_API_BYTES", len(body))
    world.batches = _SlowWarmUp(world.clock)
    key = "inbox/warm.jsonl.gz" if body.startswith(b"\x1f\x8b") else "inbox/warm.jsonl"
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))

    # When its event is handled
    outcome = Intake(world.wiring()).submit(source, len(body))

    # Then the client was made on a thread of its own, done when the invocation returns,
    # whether the job went on (its requests counted and sent) or failed
    assert world.batches.warmed_on == ["warm-api"]
    assert outcome.status is (JobStatus.RUNNING if key.endswith(".jsonl") else JobStatus.FAILED)
    assert "warm-api" not in {thread.name for thread in threading.enumerate()}


def test_a_small_files_split_leaves_the_client_to_its_first_call(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    body = request("a") + b"\n"
    monkeypatch.setattr(intake, "WARM_API_BYTES", len(body) + 1)
    source = SourceRef(world.store.bucket, "inbox/small.jsonl", world.store.put("inbox/small.jsonl", body))

    assert Intake(world.wiring()).submit(source, len(body)).status is JobStatus.RUNNING
    assert world.batches.warmed_on == []


class _SlowCopyStore(FakeObjectStore):
    """S3 finishing a whole file's early copy only once a count has been made (or 5 s on)."""

    def __init__(self, counted: threading.Event) -> None:
        super().__init__("bucket", FakeClock())
        self.counted = counted
        self.copies_after_a_count: list[bool] = []

    def copy(
        self, source: SourceRange, key: str, content_type: str, *, whole: bool, if_absent: bool = False
    ) -> str | None:
        self.copies_after_a_count.append(self.counted.wait(timeout=5))
        return super().copy(source, key, content_type, whole=whole, if_absent=if_absent)


class _SignallingCounts(FakeBatchesApi):
    def __init__(self, clock: FakeClock, counted: threading.Event) -> None:
        super().__init__(clock)
        self.counted = counted

    def count_tokens(self, body: Mapping[str, Any]) -> int:
        self.counted.set()
        return super().count_tokens(body)


def test_the_estimate_is_counted_while_s3_finishes_copying_the_file_into_its_shard() -> None:
    # Given a clean file that S3 copies whole into its shard, a copy that ends only after a count
    counted = threading.Event()
    world = Fakes()
    world.store = _SlowCopyStore(counted)
    world.batches = _SignallingCounts(world.clock, counted)
    source = world.upload("inbox/copied.jsonl", [request("a"), request("b")])

    # When it is submitted
    started = time.monotonic()
    outcome = Intake(world.wiring(early_copy_bytes=1)).submit(source, len(world.store.get(source.key)))

    # Then the counts were made while the copy was under way (not after it: the copy would
    # have waited 5 s for them), and the job went on with its estimate and its one shard
    assert world.store.copies_after_a_count == [True]
    assert time.monotonic() - started < 4
    assert outcome.status is JobStatus.RUNNING
    [shard] = world.state.shards(outcome.job_id)
    assert shard.key == whole_copy_key(outcome.job_id)
    assert world.store.get_json(estimate_key(outcome.job_id))["requests"] == 2


class _AbortsWatched(FakeObjectStore):
    """Notes each writer aborted after it was closed (on S3: an abort of a finished upload)."""

    def __init__(self) -> None:
        super().__init__("bucket", FakeClock())
        self.aborted_after_close: list[str] = []

    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> FakeWriter:
        store = self

        class Watched(FakeWriter):
            closed = False

            def close(self) -> bool:
                self.closed = True
                return super().close()

            def abort(self) -> None:
                if self.closed:
                    store.aborted_after_close.append(key)
                super().abort()

        return Watched(self, key, content_type, if_absent=if_absent)


def test_a_failure_beside_the_last_close_raises_and_leaves_the_closed_shard_alone() -> None:
    # Given a file whose shard is written (a rejected line makes it more than a range of the
    # file), and a task beside its close that fails
    world = Fakes()
    world.store = _AbortsWatched()
    source = world.upload("inbox/mixed.jsonl", [request("a"), b"not json", request("b")])

    def failing(_: Split) -> None:
        raise RuntimeError("the estimate broke")

    # When the file is split, Then the failure is raised, and the closed shard is not aborted
    with pytest.raises(RuntimeError, match="the estimate broke"):
        split_object(world.wiring(), job_of(source), source, while_closing=failing)
    assert world.store.keys("work/") != []
    assert world.store.aborted_after_close == []


_INVOCATION: contextvars.ContextVar[str] = contextvars.ContextVar("invocation", default="none")


def test_the_task_beside_the_last_close_runs_in_the_invocations_context(world: Fakes) -> None:
    # Given a split in an invocation's context (as the local runner's logging reads it)
    source = world.upload("inbox/context.jsonl", [request("a"), request("b")])
    seen: list[tuple[str, int]] = []

    def beside(split: Split) -> None:
        seen.append((_INVOCATION.get(), split.requested))

    # When it is split, Then the task saw that context, and every line counted
    _INVOCATION.set("submit-1")
    split_object(world.wiring(), job_of(source), source, while_closing=beside)
    assert seen == [("submit-1", 2)]


class _HangingWarmUp(FakeBatchesApi):
    def warm(self) -> None:
        time.sleep(1.0)  # Secrets Manager not answering, say
        super().warm()


def test_a_split_does_not_wait_long_for_a_client_being_made(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a large file, and a client whose making hangs past the wait for it
    body = b"\n".join([request("a"), request("b")])
    monkeypatch.setattr(intake, "WARM_API_BYTES", len(body))
    monkeypatch.setattr(intake, "WARM_API_JOIN_SECONDS", 0.1)
    world.batches = _HangingWarmUp(world.clock)
    source = SourceRef(world.store.bucket, "inbox/hang.jsonl", world.store.put("inbox/hang.jsonl", body))

    # When its event is handled, Then the job goes on without waiting the second out
    started = time.monotonic()
    assert Intake(world.wiring()).submit(source, len(body)).status is JobStatus.RUNNING
    assert time.monotonic() - started < 0.9
    assert world.batches.warmed_on == []  # still being made


def test_a_folder_marker_starts_no_job(world: Fakes) -> None:
    # Given an empty object whose key ends in "/" (the S3 console's "Create folder")
    source = SourceRef(world.store.bucket, "inbox/sub/", world.store.put("inbox/sub/", b""))

    # When its event is handled
    outcome = Intake(world.wiring()).submit(source, 0)

    # Then no job is made, nothing is written or announced
    assert outcome.status is None
    assert world.state.get_job(outcome.job_id) is None
    assert world.events.published == []
    assert not world.store.exists(manifest_key(outcome.job_id))


def test_an_object_with_bytes_whose_key_ends_in_a_slash_is_a_file(world: Fakes) -> None:
    # Given a file of one request whose key ends in "/"
    key = "inbox/odd/"
    source = SourceRef(world.store.bucket, key, world.store.put(key, request("a") + b"\n"))

    # When its event is handled, then it is a job like any other
    assert Intake(world.wiring()).submit(source, len(request("a")) + 1).status is JobStatus.RUNNING


def test_a_file_over_the_shard_limit_makes_several_shards_each_with_its_batch(world: Fakes) -> None:
    # Given five requests and shards of at most two
    ids = ["a", "b", "c", "d", "e"]
    source = world.upload("inbox/big.jsonl", [request(cid) for cid in ids])

    # When the file is submitted
    outcome = submit(world, source, limits=ShardLimits(max_requests=2))

    # Then three shards are recorded, in order, each sent as its own batch of its own requests
    shards = world.state.shards(outcome.job_id)
    assert [(shard.index, shard.requests, shard.key) for shard in shards] == [
        (0, 2, shard_key(outcome.job_id, 0)),
        (1, 2, shard_key(outcome.job_id, 1)),
        (2, 1, shard_key(outcome.job_id, 2)),
    ]
    assert [world.batches.requests[shard.batch_id or ""] for shard in shards] == [["a", "b"], ["c", "d"], ["e"]]
    for shard in shards:
        digest = IdsDigest()
        for cid in world.batches.requests[shard.batch_id or ""]:
            digest.add(cid)
        assert shard.ids_digest == digest.hex
    assert outcome.status is JobStatus.RUNNING
    assert outcome.submitted == 3


def test_a_full_queue_defers_the_shard_and_the_job_stays_submitting(world: Fakes) -> None:
    # Given a provider whose queue is full
    world.batches.fail_create(QUEUE_FULL)
    source = world.upload("inbox/later.jsonl", [request("a")])

    # When the file is submitted
    outcome = submit(world, source)

    # Then no batch exists, the shard is PENDING for the checker, the job does not fail
    assert world.batches.batches == {}
    [shard] = world.state.shards(outcome.job_id)
    assert shard.state is ShardState.PENDING
    assert shard.creates_sent == 1
    assert shard.reason is not None
    assert "429" in shard.reason
    assert outcome.status is JobStatus.SUBMITTING
    assert world.state.get_create_lease() is None


def test_a_key_problem_leaves_the_shard_pending_and_raises(world: Fakes) -> None:
    # Given an API key the provider does not accept
    world.batches.fail_create(ProviderRejectedError(401, "invalid x-api-key"))
    source = world.upload("inbox/key.jsonl", [request("a")])

    # When the file is submitted, Then the error reaches Lambda (and its alarm)...
    with pytest.raises(ProviderRejectedError):
        submit(world, source)

    # ...and the shard waits, PENDING, for the checker to try again
    [shard] = world.state.shards(job_of(source))
    assert shard.state is ShardState.PENDING
    assert world.state.get_create_lease() is None


def test_a_body_refused_for_good_is_claimed_refused_and_never_sent_again(world: Fakes) -> None:
    # Given a provider that refuses the body with a 400
    world.batches.fail_create(ProviderRejectedError(400, "requests: too many"))
    source = world.upload("inbox/refused.jsonl", [request("a"), request("b")])

    # When the file is submitted, and its event comes again
    outcome = submit(world, source)
    submit(world, source)

    # Then the shard is REFUSED with the reason, the job waits for the checker to write its
    # errored results, and no second create was sent
    [shard] = world.state.shards(outcome.job_id)
    assert shard.state is ShardState.REFUSED
    assert shard.reason == "400: requests: too many"
    assert outcome.status is JobStatus.SUBMITTING
    assert world.batches.creates == 1
    assert world.state.get_create_lease() is None


def test_a_5xx_marks_the_shard_unknown_and_keeps_the_create_lease(world: Fakes) -> None:
    # Given a create that gets a 500: a batch may or may not exist
    world.batches.fail_create(ProviderOutcomeUnknownError("create answered 500"))
    source = world.upload("inbox/unknown.jsonl", [request("a")])

    # When the file is submitted, Then the error is raised...
    with pytest.raises(ProviderOutcomeUnknownError):
        submit(world, source)

    # ...the shard is UNKNOWN, and the lease stays with its intent until the checker settles it
    [shard] = world.state.shards(job_of(source))
    assert shard.state is ShardState.UNKNOWN
    lease = world.state.get_create_lease()
    assert lease is not None
    assert lease.owner == shard.lease_owner

    # And when Lambda retries the event, nothing is sent again from here
    outcome = submit(world, source)
    assert outcome.status is JobStatus.SUBMITTING
    assert world.batches.creates == 1
    assert world.state.get_shard(shard.job_id, 0) == shard


def test_a_create_waits_for_the_lease_then_leaves_the_shard_to_the_checker(world: Fakes) -> None:
    # Given another create in flight: a shard of another job holds the lease with its intent
    world.batches.fail_create(ProviderOutcomeUnknownError("create got no answer"))
    other = world.upload("inbox/other.jsonl", [request("x")])
    with pytest.raises(ProviderOutcomeUnknownError):
        submit(world, other)
    source = world.upload("inbox/waiting.jsonl", [request("a")])
    started = world.clock.monotonic()

    # When a file is submitted
    outcome = submit(world, source)

    # Then it waits for the lease as long as the timings say, and leaves its shard PENDING
    assert world.clock.monotonic() - started >= world.wiring().timings.lease_wait
    [shard] = world.state.shards(outcome.job_id)
    assert shard.state is ShardState.PENDING
    assert shard.creates_sent == 0
    assert world.batches.creates == 1


def test_a_canceled_jobs_pending_shards_are_left_to_the_checker(world: Fakes) -> None:
    # Given a job whose shard a full queue deferred, then canceled
    world.batches.fail_create(QUEUE_FULL)
    source = world.upload("inbox/canceled.jsonl", [request("a")])
    job_id = submit(world, source).job_id
    assert Canceler(world.wiring()).cancel(job_id).status == "CANCELING"

    # When its event is delivered again
    outcome = submit(world, source)

    # Then nothing is sent: the shard stays PENDING, for the checker to close as canceled
    assert outcome.status is JobStatus.SUBMITTING
    assert world.batches.creates == 1
    [shard] = world.state.shards(job_id)
    assert shard.state is ShardState.PENDING
    assert shard.creates_sent == 1


def test_a_resumed_job_records_the_shards_an_interrupted_recording_left_out(world: Fakes) -> None:
    # Given a job of two shards whose recording died after the first (the bodies are in work/)
    world.batches.fail_create(QUEUE_FULL)
    world.batches.fail_create(QUEUE_FULL)
    source = world.upload("inbox/resumed.jsonl", [request(cid) for cid in "abc"])
    limits = ShardLimits(max_requests=2)
    job_id = submit(world, source, limits=limits).job_id
    lost = world.state.shard_items.pop((job_id, 1))

    # When the event is delivered again
    outcome = submit(world, source, limits=limits)

    # Then the missing shard is recorded as it was planned, and both are sent
    again = world.state.get_shard(job_id, 1)
    assert again is not None
    assert (again.key, again.requests, again.size, again.ids_digest) == (
        lost.key,
        lost.requests,
        lost.size,
        lost.ids_digest,
    )
    assert [shard.state for shard in world.state.shards(job_id)] == [ShardState.SUBMITTED, ShardState.SUBMITTED]
    assert sorted(world.batches.requests.values()) == [["a", "b"], ["c"]]
    assert outcome.status is JobStatus.RUNNING


def test_a_job_interrupted_while_its_file_was_read_is_read_again_and_recorded_once(world: Fakes) -> None:
    # Given a job whose first run died while reading its file (the job exists, RECEIVED, no shards)
    source = world.upload("inbox/interrupted.jsonl", [request("a"), request("b")])
    assert world.state.create_job(job_of(source), source, world.wiring().stamp())

    # When the event is delivered again
    outcome = submit(world, source)

    # Then the file is read again, its shard recorded and sent, once
    assert outcome.status is JobStatus.RUNNING
    assert [shard.state for shard in world.state.shards(outcome.job_id)] == [ShardState.SUBMITTED]
    assert world.batches.creates == 1


class _CheckerBetweenCreates(FakeStateStore):
    """A state table where, the first time the submit function releases the create lease,
    `meanwhile` runs: the checker, ticking between two of its creates."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        super().__init__()
        self._meanwhile: Callable[[], None] | None = meanwhile

    def release_create_lease(self, owner: str) -> bool:
        released = super().release_create_lease(owner)
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None:
            meanwhile()
        return released


def test_a_shard_sent_and_retried_by_the_checker_meanwhile_is_not_sent_again_from_an_old_read(world: Fakes) -> None:
    # Given a file of two shards whose submit function read both PENDING before its first
    # create; between its creates the checker sends shard 1, the batch ends with one request
    # failed transiently, and the checker schedules that one request for attempt 2
    def checker_meanwhile() -> None:
        checker = Checker(world.wiring(), seconds_left=lambda: 900.0)
        checker.tick()
        shard = world.state.get_shard(job_id, 1)
        assert shard is not None
        assert shard.batch_id is not None
        world.batches.end(shard.batch_id, {"d": errored("api_error")})
        checker.tick()
        retry = world.state.get_shard(job_id, 1)
        assert retry is not None
        assert (retry.state, retry.attempt, retry.attempt_requests) == (ShardState.PENDING, 2, 1)

    world.state = _CheckerBetweenCreates(checker_meanwhile)
    source = world.upload("inbox/raced.jsonl", [request(cid) for cid in "abcd"])
    job_id = job_of(source)

    # When the submit function goes on to shard 1 with what it read at the start
    submit(world, source, limits=ShardLimits(max_requests=2))

    # Then it does not send shard 1's first attempt again as its second: "c" succeeded
    # already and is never sent twice, and any batch of attempt 2 carries exactly "d"
    # (the intent is fenced to the attempt and body the caller read).
    sent = [cid for batch in world.batches.requests.values() for cid in batch]
    assert sent.count("c") == 1, f"sent: {sorted(world.batches.requests.values())}"
    shard = world.state.get_shard(job_id, 1)
    assert shard is not None
    assert shard.attempt == 2
    assert shard.batch_id is None or world.batches.requests[shard.batch_id] == ["d"]


class _SlowProvider(FakeBatchesApi):
    """A provider whose first create is slow to answer: `meanwhile` runs while it is in flight,
    before its batch is made (`made_first=False`) or after (`made_first=True`)."""

    def __init__(self, clock: FakeClock, meanwhile: Callable[[], None], *, made_first: bool) -> None:
        super().__init__(clock)
        self._meanwhile: Callable[[], None] | None = meanwhile
        self._made_first = made_first

    def make(self, lines: Sequence[bytes]) -> dict[str, Any]:
        meanwhile, self._meanwhile = self._meanwhile, None
        if meanwhile is not None and not self._made_first:
            meanwhile()
        batch = super().make(lines)
        if meanwhile is not None and self._made_first:
            meanwhile()
        return batch


def _a_checker_past_the_intent(world: Fakes) -> Callable[[], None]:
    """The checker ticking once the create's intent is older than any create can take."""

    def tick() -> None:
        world.clock.advance(Timings().stale_intent + 1)
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    return tick


def test_a_batch_the_checker_adopted_while_its_create_was_answering_is_kept(world: Fakes) -> None:
    # Given a create whose batch is made, and adopted by the checker before the answer arrives
    world.batches = _SlowProvider(world.clock, _a_checker_past_the_intent(world), made_first=True)
    source = world.upload("inbox/slow.jsonl", [request("a")])

    # When the answer arrives
    outcome = submit(world, source)

    # Then the batch stays the shard's: nothing is canceled or sent again
    [batch_id] = world.batches.batches
    [shard] = world.state.shards(outcome.job_id)
    assert (shard.state, shard.batch_id) == (ShardState.SUBMITTED, batch_id)
    assert world.batches.canceled == []
    assert world.state.get_create_lease() is None


def test_a_batch_made_after_the_checker_sent_its_shard_again_is_canceled(world: Fakes) -> None:
    # Given a create still in flight, without a batch, when the checker settles it as never
    # made and sends the shard again
    world.batches = _SlowProvider(world.clock, _a_checker_past_the_intent(world), made_first=False)
    source = world.upload("inbox/late.jsonl", [request("a")])

    # When the first create makes its batch after all and answers
    outcome = submit(world, source)

    # Then that late batch, which no shard can own, is canceled; the shard keeps the checker's
    [kept, late] = world.batches.batches
    [shard] = world.state.shards(outcome.job_id)
    assert (shard.state, shard.batch_id) == (ShardState.SUBMITTED, kept)
    assert world.batches.canceled == [late]
    assert outcome.submitted == 0
