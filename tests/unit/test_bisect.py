"""A refused create body is halved until only the requests the API refuses on their own end
`errored` (services/bisect.py), against in-memory fakes: the fake API refuses, with 400,
any create holding a line with its `poison` text, as the API refuses a body holding a value
it cannot read."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.errors import ProviderRejectedError
from batchdrop.ports import StateStore
from batchdrop.services import bisect
from batchdrop.services.bisect import MAX_REASON_CHARS, ShardBisector, refusal_reason
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, FakeStateStore, request

pytestmark = pytest.mark.unit

POISON = "POISON"
IDS = [f"r{i}" for i in range(8)]


class Crash(BaseException):
    """The process dies here: no cleanup runs."""


@pytest.fixture
def world() -> Fakes:
    world = Fakes()
    world.batches.poison = POISON
    return world


def submit(world: Fakes, bad: set[int]) -> str:
    """A file of the 8 requests, those at `bad` holding the poison; its job id."""
    lines = [request(cid, POISON if i in bad else "Hello") for i, cid in enumerate(IDS)]
    source = world.upload("inbox/file.jsonl", lines)
    return Intake(world.wiring()).submit(source).job_id


def tick(world: Fakes) -> None:
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()


def run_to_the_end(world: Fakes, job_id: str, ticks: int = 12) -> dict[str, Any]:
    """Tick, ending every open batch, until the job finishes; its manifest."""
    for _ in range(ticks):
        for batch_id, batch in world.batches.batches.items():
            if batch["processing_status"] != "ended":
                world.batches.end(batch_id)
        tick(world)
        job = world.state.get_job(job_id)
        assert job is not None
        if job.status not in (JobStatus.SUBMITTING, JobStatus.RUNNING):
            manifest: dict[str, Any] = world.store.get_json(manifest_key(job_id))
            return manifest
    raise AssertionError(f"job {job_id} not finished after {ticks} ticks")


def results(world: Fakes, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each custom_id's result line across the job's parts; each must appear once."""
    lines = [json.loads(line) for key in manifest["results"] for line in world.store.get(key).splitlines()]
    seen = Counter(line["custom_id"] for line in lines)
    assert sorted(seen) == sorted(IDS)
    assert set(seen.values()) == {1}, seen
    return {line["custom_id"]: line["result"] for line in lines}


def sent_in_batches(world: Fakes) -> Counter[str]:
    """How many batches each custom_id went out in."""
    return Counter(cid for ids in world.batches.requests.values() for cid in ids)


def assert_only_these_errored(world: Fakes, job_id: str, bad: set[int]) -> dict[str, Any]:
    manifest = run_to_the_end(world, job_id)
    outcome = results(world, manifest)
    bad_ids = {IDS[i] for i in bad}
    for cid, result in outcome.items():
        if cid in bad_ids:
            error = result["error"]["error"]
            assert (result["type"], error["type"]) == ("errored", "invalid_request_error")
            # The request's own refusal: its reason, without the location of a request in a body
            assert error["message"] == "batchdrop: the batch was refused: 400: params: integer overflow"
        else:
            assert result["type"] == "succeeded", (cid, result)
    # Every good request went out in exactly one batch; a refused one in none
    assert sent_in_batches(world) == Counter({cid: 1 for cid in IDS if cid not in bad_ids})
    counts = manifest["counts"]
    assert (counts["requests"], counts["succeeded"], counts["errored"]) == (8, 8 - len(bad), len(bad))
    assert manifest["status"] == ("COMPLETED_WITH_ERRORS" if bad else "COMPLETED")
    return manifest


def test_one_bad_request_of_eight_is_the_only_one_errored(world: Fakes) -> None:
    # Given a file of 8 requests, the fourth holding a value the API refuses the whole body for
    job_id = submit(world, {3})
    [shard] = world.state.shards(job_id)
    assert shard.state is ShardState.REFUSED

    # When the checker runs the job to its end / Then only that request is errored
    manifest = assert_only_these_errored(world, job_id, {3})

    # Halved 8 → 4 → 2 → 1: four creates refused (8, 4, 2 and the 1), three batches made
    # (of 4, 2 and 1 good requests), three refused bodies split
    assert world.batches.creates == 7
    assert len(world.batches.batches) == 3
    assert manifest["attempts"]["batches_created"] == 3
    split = [s for s in world.state.shards(job_id) if s.state is ShardState.SPLIT]
    assert len(split) == 3
    assert all(s.requests == 0 and not s.counts for s in split)
    job = world.state.get_job(job_id)
    assert job is not None
    assert job.shard_count == 7 == len(world.state.shards(job_id))


def test_two_bad_requests_of_eight_are_the_only_ones_errored(world: Fakes) -> None:
    job_id = submit(world, {1, 6})
    assert_only_these_errored(world, job_id, {1, 6})


def test_when_every_request_is_bad_each_is_refused_on_its_own_and_none_is_sent(world: Fakes) -> None:
    job_id = submit(world, set(range(8)))
    assert_only_these_errored(world, job_id, set(range(8)))
    # 1 + 2 + 4 + 8 refused creates, and no batch
    assert world.batches.creates == 15
    assert world.batches.batches == {}


def test_a_job_is_halved_at_most_so_often_and_the_rest_ends_errored(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a refusal that every request earns (a model that does not exist, say), and a cap
    # of two halvings a job
    monkeypatch.setattr(bisect, "MAX_SPLITS_PER_JOB", 2)
    job_id = submit(world, set(range(8)))

    # Then every request ends errored with the reason, after the whole body and two halvings'
    # four halves were refused: not the 15 creates of halving down to single requests
    assert_only_these_errored(world, job_id, set(range(8)))
    assert world.batches.creates == 1 + 2 * 2
    assert world.batches.batches == {}
    assert sum(shard.state is ShardState.SPLIT for shard in world.state.shards(job_id)) == 2


def test_a_body_refused_only_whole_runs_every_request_once_halved(world: Fakes) -> None:
    # Given a body refused once for good, whose halves the API takes (a 413 for its size, say)
    world.batches.fail_create(ProviderRejectedError(413, "request too large"))
    job_id = submit(world, set())

    # Then each request succeeds, sent in one of two batches
    manifest = assert_only_these_errored(world, job_id, set())
    assert len(world.batches.batches) == 2
    [split] = [entry for batch in manifest["batches"] for entry in batch["attempts"] if entry.get("refused")]
    assert (split["requests"], split["retried"], split["batch_id"]) == (8, 8, None)


def test_a_crash_after_the_halves_are_written_before_they_are_recorded_splits_once(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a refused shard, and a checker that dies as it records the halves it has written
    job_id = submit(world, {5})
    real = FakeStateStore.split_refused

    def dies(*_args: Any, **_kwargs: Any) -> bool:
        raise Crash

    monkeypatch.setattr(FakeStateStore, "split_refused", dies)
    with pytest.raises(Crash):
        tick(world)
    [shard] = world.state.shards(job_id)
    assert shard.state is ShardState.REFUSED
    assert world.batches.creates == 1

    # When the next checker runs / Then it finds the same halves, records them once, and the
    # job ends with the one bad request errored and every other sent once
    monkeypatch.setattr(FakeStateStore, "split_refused", real)
    assert_only_these_errored(world, job_id, {5})


def test_a_crash_after_the_halves_are_recorded_before_they_are_sent_sends_each_once(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a refused shard, and a checker that dies right after recording its halves
    job_id = submit(world, {0})
    real = FakeStateStore.split_refused

    def records_then_dies(store: StateStore, *args: Any, **kwargs: Any) -> bool:
        assert isinstance(store, FakeStateStore)
        if real(store, *args, **kwargs):
            raise Crash
        return False

    monkeypatch.setattr(FakeStateStore, "split_refused", records_then_dies)
    with pytest.raises(Crash):
        tick(world)
    shards = world.state.shards(job_id)
    assert [s.state for s in shards] == [ShardState.SPLIT, ShardState.PENDING, ShardState.PENDING]
    assert world.batches.creates == 1

    # When the next checkers run (each split recorded, then the checker dies, once more)
    monkeypatch.setattr(FakeStateStore, "split_refused", real)
    assert_only_these_errored(world, job_id, {0})


def test_a_refused_shard_split_by_a_stale_checker_is_recorded_once(world: Fakes) -> None:
    # Given a refused shard that one checker split
    job_id = submit(world, {2})
    [refused] = world.state.shards(job_id)
    tick(world)
    shards = len(world.state.shards(job_id))
    assert shards == 3

    # When a second checker, that read the shard REFUSED before, splits it too
    assert ShardBisector(world.wiring()).split(refused) is False

    # Then nothing more is recorded
    assert len(world.state.shards(job_id)) == shards


def test_a_refusal_reason_is_bounded_and_drops_a_single_requests_own_location() -> None:
    quoted = "400: requests.0.params.metadata: bad value " + "x" * 1000
    reason = refusal_reason(quoted, single=True)
    assert reason.startswith("400: params.metadata: bad value xx")
    assert len(reason) == MAX_REASON_CHARS
    # In a body of several requests, the location names which one: kept
    assert refusal_reason("400: requests.3.params: integer overflow", single=False) == (
        "400: requests.3.params: integer overflow"
    )
