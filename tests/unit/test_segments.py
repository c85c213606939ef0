"""A split too long for one invocation goes on in segments (services/segments.py): each
stops at a shard boundary once its time runs short, keeps what it finished and a checkpoint,
and the next one goes on from there. Whatever the segments, and whatever crash or duplicate
run befalls one, the job ends with the same shards, ids digests, counts and rejected.jsonl as
the same file split in one go. Against in-memory fakes; a split runs in segments here
because the invocation's time left (a fixed 5 s) is under the reserve (10 s): each segment
makes one shard."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest

import batchdrop.services.intake
import batchdrop.services.segments
from batchdrop.domain.jobs import job_id_for, rejected_key
from batchdrop.domain.records import JobRecord, SourceRef
from batchdrop.domain.shards import ShardLimits
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings
from batchdrop.ports import Wiring
from batchdrop.services.intake import Intake, SubmitOutcome
from batchdrop.services.redrive import REDRIVE_TRIES
from batchdrop.services.sweeper import Sweeper, SweepReport
from tests.records_jobs import pipeline_document
from tests.unit.fakes import Fakes, FakeStateStore, request

pytestmark = pytest.mark.unit

LEFT = 5.0  # seconds each invocation has left
TIMINGS = Timings(split_reserve=10.0, sweep_min_age=0.0, sweep_safety=0.0)
LIMITS = ShardLimits(max_requests=2)
KEY = "inbox/segments.jsonl"
# Shards of 2 requests: [a b] [c d] [e f] [g]. Line 3 is rejected, line 4 blank, and line 7
# uses again the custom_id of line 1, across the boundaries of two segments.
LINES = [
    request("a"),
    request("b"),
    b'{"custom_id": "bad id"}',
    b"   ",
    request("c"),
    request("d"),
    request("a", "again"),
    request("e"),
    b"{not json",
    request("f"),
    request("g"),
]
BODY = b"".join(line + b"\n" for line in LINES)


class Died(BaseException):
    """The process dies here: nothing in it can catch this."""


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def wiring(world: Fakes) -> Wiring:
    return world.wiring(limits=LIMITS, timings=TIMINGS)


def upload(world: Fakes, body: bytes = BODY) -> SourceRef:
    return SourceRef(world.store.bucket, KEY, world.store.put(KEY, body))


def job_of(source: SourceRef) -> str:
    return job_id_for(source.bucket, source.key, source.version_id)


def job(state: FakeStateStore, job_id: str) -> JobRecord:
    record = state.get_job(job_id)
    assert record is not None
    return record


def short_of_time(world: Fakes, source: SourceRef) -> SubmitOutcome:
    """One invocation of the submit function with LEFT seconds left."""
    return Intake(wiring(world), seconds_left=lambda: LEFT).submit(source)


def in_one_go(world: Fakes, source: SourceRef) -> SubmitOutcome:
    return Intake(wiring(world)).submit(source)


def sweep(world: Fakes) -> SweepReport:
    wired = wiring(world)
    return Sweeper(wired, Intake(wired, seconds_left=lambda: LEFT), seconds_left=lambda: LEFT).sweep()


def past_the_lease(world: Fakes) -> None:
    world.clock.advance(LEFT)


@dataclass(frozen=True)
class Split:
    """What a job's split left behind, the job's own id and source key set aside."""

    shards: list[tuple[int, bytes, int, str, int]]  # index, body, requests, ids digest, size
    counts: tuple[int, int, int]  # requested, rejected, shard count
    rejected: list[dict[str, Any]]


def split_of(world: Fakes, job_id: str) -> Split:
    record, shards = world.state.job_and_shards(job_id)
    assert record is not None
    assert record.status is not JobStatus.RECEIVED
    bodies = [(s.index, world.store.get(s.key), s.requests, s.ids_digest, s.size) for s in shards]
    rejected = [json.loads(line) for line in world.store.get(rejected_key(job_id)).splitlines()]
    return Split(bodies, (record.requested, record.rejected, record.shard_count), rejected)


def reference(body: bytes = BODY) -> Split:
    """The same file split in one go, in a world of its own."""
    other = Fakes()
    source = upload(other, body)
    in_one_go(other, source)
    return split_of(other, job_of(source))


def segments_to_the_end(world: Fakes, source: SourceRef) -> int:
    """The upload's event, then the sweeps it takes to finish the split; the segments run."""
    runs = 1
    short_of_time(world, source)
    while job(world.state, job_of(source)).status is JobStatus.RECEIVED:
        past_the_lease(world)
        assert sweep(world).redrive.continued == [job_of(source)]
        runs += 1
        assert runs < 20
    return runs


def test_a_file_split_in_segments_ends_as_the_same_file_split_in_one_go(world: Fakes) -> None:
    # Given a file of four shards, with a rejected line, a blank one and a custom_id used twice
    source = upload(world)
    job_id = job_of(source)

    # When its event's invocation runs short of time after one shard
    outcome = short_of_time(world, source)

    # Then it stopped at the shard boundary: shard 0 recorded, unsent, the job still RECEIVED
    assert outcome == SubmitOutcome(job_id, JobStatus.RECEIVED)
    first = job(world.state, job_id)
    assert first.checkpoint is not None
    assert (first.checkpoint.offset, first.checkpoint.line) == (len(b"".join(line + b"\n" for line in LINES[:4])), 4)
    assert (first.checkpoint.requested, first.checkpoint.rejected, first.checkpoint.next_shard) == (2, 1, 1)
    assert [(s.index, s.state) for s in world.state.shards(job_id)] == [(0, ShardState.PENDING)]
    assert world.batches.creates == 0
    assert all(entry[0] != job_id for entry in world.state.open_index)

    # When the sweeps go on with it, each after the last invocation's deadline
    runs = 1
    while _next_segment(world, job_id):
        runs += 1

    # Then four segments made the shards, the counts and the rejected lines of one go, line
    # 7's custom_id rejected as first used on line 1; then its batches went out
    assert runs == 4
    assert split_of(world, job_id) == reference()
    rejected = split_of(world, job_id).rejected
    assert [entry["line"] for entry in rejected] == [3, 7, 9]
    assert 'custom_id: "a" is already used on line 1' in rejected[1]["reason"]
    assert job(world.state, job_id).status is JobStatus.RUNNING
    assert sorted(cid for ids in world.batches.requests.values() for cid in ids) == list("abcdefg")
    # ...each segment after the first read the file from its checkpoint on, by a ranged read
    starts = [start for key, start in world.store.line_reads if key == KEY]
    assert starts[0] == 0
    assert all(start > 0 for start in starts[1:])
    assert starts == sorted(starts)


def _next_segment(world: Fakes, job_id: str) -> bool:
    """The next sweep's segment, once the last one's lease has passed; False when done."""
    if job(world.state, job_id).status is not JobStatus.RECEIVED:
        return False
    past_the_lease(world)
    assert sweep(world).redrive.continued == [job_id]
    return True


def test_the_sweep_goes_on_only_after_the_lease_and_counts_no_try_for_a_segment_that_advanced(
    world: Fakes,
) -> None:
    # Given a split stopped by its event's invocation
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)

    # When a sweep comes a second before the invocation's deadline
    world.clock.advance(LEFT - 1)
    early = sweep(world)

    # Then it leaves the split alone; the next one, after it, goes on, without waiting for stuck_after
    assert early.redrive.redriven == []
    world.clock.advance(1)
    assert sweep(world).redrive.continued == [job_id]
    after = job(world.state, job_id)
    assert after.checkpoint is not None
    assert after.checkpoint.next_shard == 2
    assert after.redrives == 0  # the segment advanced: no try counted


def test_segments_that_make_no_progress_count_as_tries_and_the_job_fails_after_them(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a split stopped after its first segment, whose later segments all die
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)
    monkeypatch.setattr(batchdrop.services.intake, "split_object", _dying)

    # When the sweeps try to go on with it, one per lease
    for tried in range(1, REDRIVE_TRIES + 1):
        past_the_lease(world)
        with pytest.raises(Died):
            sweep(world)
        assert job(world.state, job_id).redrives == tried
        assert sweep(world).redrive.redriven == []  # the dead try's lease still holds
    past_the_lease(world)
    failing = sweep(world)

    # Then the job is failed with its reason, its manifest naming the lines rejected so far
    assert failing.redrive.failed == [job_id]
    failed = job(world.state, job_id)
    assert failed.status is JobStatus.FAILED
    assert (failed.rejected, world.batches.creates) == (1, 0)
    assert world.store.get_json(f"results/{job_id}/manifest.json")["errors"] == rejected_key(job_id)


def _dying(*_args: Any, **_kwargs: Any) -> Any:
    raise Died("out of memory")


CRASHES = {
    "while-copying-a-shard": ("store", "copy", "shard-00001"),
    "while-writing-rejected-lines": ("store", "writer", "rejected.jsonl"),
    "while-writing-the-ids": ("store", "writer", "ids-"),
    "after-the-ids-before-the-shards": ("state", "add_missing_shard", None),
    "after-the-shards-before-the-checkpoint": ("state", "save_checkpoint", None),
    "after-the-checkpoint": ("state", "save_checkpoint", "after"),
}


@pytest.mark.parametrize("crash", CRASHES, ids=str)
def test_a_crash_at_any_step_of_a_segment_resumes_to_the_split_of_one_go(
    world: Fakes, monkeypatch: pytest.MonkeyPatch, crash: str
) -> None:
    # Given a split stopped after its first segment, whose second segment's process dies at a step
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)
    owner_name, method, detail = CRASHES[crash]
    owner = world.store if owner_name == "store" else world.state
    original = getattr(owner, method)
    fired: list[int] = []

    def dying(*args: Any, **kwargs: Any) -> Any:
        due = not fired and (detail in (None, "after") or detail in str(args))
        if due and detail != "after":
            fired.append(1)
            raise Died(crash)
        answer = original(*args, **kwargs)
        if due:
            fired.append(1)
            raise Died(crash)
        return answer

    monkeypatch.setattr(owner, method, dying)
    past_the_lease(world)
    with pytest.raises(Died):
        sweep(world)
    assert fired == [1]

    # When the sweeps go on after its lease
    while _next_segment(world, job_id):
        pass

    # Then the job is exactly the one-go split: no shard, line or count twice
    assert split_of(world, job_id) == reference()
    assert job(world.state, job_id).status is JobStatus.RUNNING


def test_two_runs_of_one_segment_at_once_record_it_once(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a split stopped after its first segment, and a second run of its next segment
    # (a duplicate event, say) that saves its checkpoint while this one runs
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)
    save = world.state.save_checkpoint
    answers: list[bool] = []

    def duplicate_first(*args: Any, **kwargs: Any) -> bool:
        monkeypatch.setattr(world.state, "save_checkpoint", save)
        short_of_time(world, source)  # the duplicate, all through its segment
        answers.append(save(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(world.state, "save_checkpoint", duplicate_first)
    short_of_time(world, source)

    # Then the duplicate's checkpoint stands and this run's is refused; the split ends as one go's
    assert answers == [False]
    checkpoint = job(world.state, job_id).checkpoint
    assert checkpoint is not None
    assert (checkpoint.next_shard, checkpoint.requested) == (2, 4)
    while _next_segment(world, job_id):
        pass
    assert split_of(world, job_id) == reference()


def test_a_gzip_is_inflated_from_its_start_and_the_bytes_before_the_checkpoint_skipped(world: Fakes) -> None:
    # Given the same lines, gzipped
    body = gzip.compress(BODY)
    source = upload(world, body)

    # When it is split in segments
    runs = segments_to_the_end(world, source)

    # Then each segment read it from the start, and the job is the one-go split of it
    assert runs == 4
    assert [start for key, start in world.store.line_reads if key == KEY] == [0, 0, 0, 0]
    assert split_of(world, job_of(source)) == reference(body)


def test_a_split_with_time_to_spare_runs_in_one_go(world: Fakes) -> None:
    source = upload(world)

    outcome = Intake(wiring(world), seconds_left=lambda: TIMINGS.split_reserve).submit(source)

    assert outcome.status is JobStatus.RUNNING
    assert job(world.state, outcome.job_id).checkpoint is None
    assert split_of(world, outcome.job_id) == reference()


def test_a_gzip_checkpoint_that_is_not_a_line_start_fails_the_file_with_its_reason(world: Fakes) -> None:
    # Given a gzip split stopped after its first segment, whose checkpoint then names a byte
    # inside a line (the file it was taken from is not the file read)
    source = upload(world, gzip.compress(BODY))
    job_id = job_of(source)
    short_of_time(world, source)
    stopped = job(world.state, job_id)
    assert stopped.checkpoint is not None
    world.state.put_job(replace(stopped, checkpoint=replace(stopped.checkpoint, offset=stopped.checkpoint.offset - 1)))

    # When the split goes on
    outcome = short_of_time(world, source)

    # Then the job fails, naming the checkpoint, and nothing is sent
    assert outcome.status is JobStatus.FAILED
    reason = job(world.state, job_id).reason or ""
    assert f"checkpoint at byte {stopped.checkpoint.offset - 1} is not a line's start" in reason
    assert world.batches.creates == 0


def test_a_file_of_records_too_large_for_one_invocation_is_refused_unread(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a folder with a pipeline, and records mode's limit shrunk to 20 bytes
    monkeypatch.setattr(batchdrop.services.segments, "RECORDS_MAX_BYTES", 20)
    world.store.put("pipelines/reviews.json", json.dumps(pipeline_document()).encode())
    body = b"review_id,product,title,review\n1,mug,Nice,Holds coffee well\n"
    key = "inbox/reviews/today.csv"
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))

    # When it is dropped
    outcome = Intake(wiring(world)).submit(source, len(body))

    # Then its job fails before a byte is read, naming the limit; a request file of that size is taken
    assert outcome.status is JobStatus.FAILED
    reason = job(world.state, outcome.job_id).reason or ""
    assert (
        reason == f"the file is {len(body)} bytes, over the 20 bytes a file of records may have (it is read in one go)"
    )
    assert [key for key, _ in world.store.line_reads] == []
    assert world.batches.creates == 0
    native = upload(world)
    assert Intake(wiring(world)).submit(native, len(BODY)).status is JobStatus.RUNNING


def _estimate_of(world: Fakes, job_id: str) -> dict[str, Any]:
    from batchdrop.services.job_estimate import estimate_key

    estimate = dict(world.store.get_json(estimate_key(job_id)))
    for own in ("job_id", "estimated_at"):
        del estimate[own]
    return estimate


def test_a_file_split_in_segments_gets_the_estimate_of_the_file_split_in_one_go(world: Fakes) -> None:
    # Given the same file split in one go, in a world of its own
    other = Fakes()
    whole = upload(other)
    in_one_go(other, whole)

    # When it is split in segments here, each keeping the estimate so far beside its ids
    source = upload(world)
    runs = segments_to_the_end(world, source)

    # Then the estimate is the same, every request counted, from the state the segments kept
    assert runs == 4
    assert _estimate_of(world, job_of(source)) == _estimate_of(other, job_of(whole))
    assert _estimate_of(world, job_of(source))["requests"] == 7
    assert len(world.store.keys(f"work/{job_of(source)}/estimate-")) == 3


def test_a_checkpoint_without_an_estimate_state_leaves_the_job_without_an_estimate(world: Fakes) -> None:
    from batchdrop.services.job_estimate import estimate_key

    # Given a split stopped after its first segment, whose estimate state is gone
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)
    (state,) = world.store.keys(f"work/{job_id}/estimate-")
    del world.store._objects[state]  # as a split made before estimates were kept leaves it

    # When the sweeps finish the split, then the job goes on, with no estimate rather than half of one
    while _next_segment(world, job_id):
        pass
    assert job(world.state, job_id).status is JobStatus.RUNNING
    assert not world.store.exists(estimate_key(job_id))


def test_an_estimate_state_of_another_version_leaves_the_job_without_an_estimate(world: Fakes) -> None:
    from batchdrop.services.job_estimate import estimate_key

    # Given a split stopped after its first segment, whose estimate state another version kept
    source = upload(world)
    job_id = job_of(source)
    short_of_time(world, source)
    (state,) = world.store.keys(f"work/{job_id}/estimate-")
    world.store.put(state, json.dumps({**world.store.get_json(state), "version": 1}).encode())

    # When the sweeps finish the split, then the job goes on, with no estimate rather than a wrong one
    while _next_segment(world, job_id):
        pass
    assert job(world.state, job_id).status is JobStatus.RUNNING
    assert not world.store.exists(estimate_key(job_id))
