"""One bad batch must not stop a checker tick: the others are collected, and the failure
still reaches Lambda (and so the failure destination and its alarm) at the end. Nor may a
tick record results that are not its shard's, or close a job on part of its shards."""

from __future__ import annotations

import json

import pytest

from batchdrop.domain.jobs import IdsDigest, manifest_key, results_part_key
from batchdrop.domain.records import JobRecord, ShardRecord, SourceRef
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings
from batchdrop.errors import CheckerItemsFailedError
from batchdrop.services.finish import Finisher
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, request, succeeded

pytestmark = pytest.mark.unit


def _digest_of(*custom_ids: str) -> str:
    digest = IdsDigest()
    for custom_id in custom_ids:
        digest.add(custom_id)
    return digest.hex


def _running(world: Fakes, job_id: str, custom_id: str) -> ShardRecord:
    """A running job of one request, `custom_id`, whose batch has ended with it succeeded."""
    batch_id = world.batches.make([request(custom_id)])["id"]
    world.batches.end(batch_id)
    world.state.put_job(
        JobRecord(job_id, JobStatus.RUNNING, SourceRef("b", f"inbox/{job_id}.jsonl", "v1"), "t", 1, shard_count=1)
    )
    shard = ShardRecord(
        job_id=job_id,
        index=0,
        state=ShardState.SUBMITTED,
        key=f"work/{job_id}/shard-00000.jsonl",
        requests=1,
        attempt_requests=1,
        size=100,
        ids_digest=_digest_of(custom_id),
        attempt=1,
        creates_sent=1,
        max_attempts=3,
        batch_id=batch_id,
    )
    world.state.put_shard(shard)
    return shard


def _tick(world: Fakes, timings: Timings | None = None) -> Checker:
    return Checker(world.wiring(timings=timings or Timings()), seconds_left=lambda: 900)


def _collected(world: Fakes) -> list[str]:
    return sorted(s.job_id for s in world.state.shard_items.values() if s.state is ShardState.COLLECTED)


def test_a_failing_batch_does_not_stop_the_others_and_the_tick_still_fails() -> None:
    # Given three ended batches, the middle one's results of an unexpected shape
    world = Fakes()
    _running(world, "j-a", "a")
    broken = _running(world, "j-b", "b").batch_id or ""
    _running(world, "j-c", "c")
    world.batches.results[broken] = [b'{"custom_id": "b", "outcome": "an unexpected shape"}']

    # When the checker ticks, Then it raises at the end, naming the failed batch...
    with pytest.raises(CheckerItemsFailedError, match=f"batch {broken}"):
        _tick(world).tick()

    # ...after collecting the two healthy batches
    assert _collected(world) == ["j-a", "j-c"]


def test_a_job_missing_a_recorded_shard_is_never_closed() -> None:
    # Given a job that recorded two shards, of which only one item exists, collected
    world = Fakes()
    source = SourceRef("b", "inbox/x.jsonl", "v1")
    world.state.put_job(JobRecord("j-partial", JobStatus.RUNNING, source, "t", 2, 0, shard_count=2))
    world.state.put_shard(
        ShardRecord(
            job_id="j-partial",
            index=0,
            state=ShardState.COLLECTED,
            key="work/j-partial/shard-00000.jsonl",
            requests=1,
            attempt_requests=1,
            size=100,
            ids_digest="",
            attempt=1,
            creates_sent=1,
            max_attempts=3,
            batch_id="a",
            counts={"succeeded": 1},
        )
    )

    # When the checker tries to finish it / Then it is not closed, and nothing is published
    assert Finisher(world.wiring()).finish_if_done("j-partial") is False
    assert not world.store.exists(manifest_key("j-partial"))
    assert world.events.published == []
    job = world.state.get_job("j-partial")
    assert job is not None
    assert job.status is JobStatus.RUNNING


def test_results_of_other_requests_are_never_recorded_even_when_the_count_matches() -> None:
    # Given a shard whose one request is "mine", and a batch that returns one result for "theirs"
    world = Fakes()
    shard = _running(world, "j-a", "mine")
    batch_id = shard.batch_id or ""
    world.batches.end(batch_id, lines=[json.dumps({"custom_id": "theirs", "result": succeeded("theirs")}).encode()])

    # When the checker ticks / Then the batch fails and nothing is recorded
    with pytest.raises(CheckerItemsFailedError, match=f"batch {batch_id}"):
        _tick(world).tick()
    assert _collected(world) == []
    assert world.state.get_shard("j-a", 0) == shard
    assert not world.store.exists(results_part_key("j-a", 0))


def test_a_tick_stops_starting_work_at_its_budget_and_leaves_the_rest() -> None:
    # Given three ended batches and a tick whose budget is already spent
    world = Fakes()
    for job_id, custom_id in (("j-a", "a"), ("j-b", "b"), ("j-c", "c")):
        _running(world, job_id, custom_id)

    # When it ticks
    report = _tick(world, Timings(tick_budget=0)).tick()

    # Then it collects nothing and defers all three to the next tick (long before Lambda's timeout)
    assert _collected(world) == []
    assert report.deferred == 3
