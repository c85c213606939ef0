"""One bad batch must not stop a checker tick: the others are collected, and the failure
still reaches Lambda (and so the failure destination and its alarm) at the end."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from batchdrop.domain.records import JobRecord, OpenWork, Outcome, ShardRecord, SourceRef
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings
from batchdrop.errors import CheckerItemsFailedError
from batchdrop.ports import Wiring
from batchdrop.services.finish import Finisher
from batchdrop.services.tick import Checker


class _Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> bool:
        return True

    def abort(self) -> None:
        self.data = b""

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


class _Store:
    def __init__(self) -> None:
        self.parts: dict[str, _Writer] = {}

    def writer(self, key: str, _content_type: str, **_conditions: Any) -> _Writer:
        return self.parts.setdefault(key, _Writer())


class _State:
    def __init__(self, shards: list[ShardRecord]) -> None:
        self.shards = shards
        self.collected: list[str] = []

    def open_work(self) -> OpenWork:
        return OpenWork(jobs=[], batches=self.shards)

    def get_shard(self, job_id: str, index: int) -> ShardRecord:
        return next(s for s in self.shards if s.job_id == job_id and s.index == index)

    def mark_collected(self, shard: ShardRecord, outcome: Outcome) -> bool:
        self.collected.append(shard.job_id)
        return True


class _Api:
    """Batch "broken" fails with an unexpected error; the others have ended with one result."""

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        if batch_id == "broken":
            raise KeyError("an unexpected shape")
        return {"id": batch_id, "processing_status": "ended", "ended_at": "2026-11-23T10:00:00Z"}

    def find_recent(self, _ids: list[str], _not_before: object, _max_calls: int) -> dict[str, Any]:
        return {}  # the list shows none of them: each is retrieved

    def result_lines(self, batch: dict[str, Any]) -> list[bytes]:
        return [b'{"custom_id":"' + batch["id"].encode() + b'","result":{"type":"canceled"}}']


def _shard(job_id: str, batch_id: str, state: ShardState = ShardState.SUBMITTED) -> ShardRecord:
    return ShardRecord(
        job_id=job_id,
        index=0,
        state=state,
        key=f"work/{job_id}/shard-00000.jsonl",
        requests=1,
        attempt_requests=1,
        size=100,
        ids_digest="",
        attempt=1,
        creates_sent=1,
        max_attempts=3,
        batch_id=batch_id,
    )


def _checker(state: Any, timings: Timings | None = None) -> Checker:
    wired = Wiring(_Store(), state, _Api(), None, timings=timings or Timings())  # type: ignore[arg-type]
    return Checker(wired, seconds_left=lambda: 900)


def test_a_failing_batch_does_not_stop_the_others_and_the_tick_still_fails() -> None:
    # Given three open batches, the middle one failing in an unexpected way
    state = _State([_shard("j-a", "a"), _shard("j-b", "broken"), _shard("j-c", "c")])
    checker = _checker(state)

    # When the checker ticks, Then it raises at the end, naming the failed batch...
    with pytest.raises(CheckerItemsFailedError, match="batch broken"):
        checker.tick()

    # ...after collecting the two healthy batches
    assert sorted(state.collected) == ["j-a", "j-c"]


class _JobState:
    """A job that recorded two shards, of which only one item exists, collected."""

    def job_and_shards(self, job_id: str) -> tuple[JobRecord, list[ShardRecord]]:
        source = SourceRef("b", "inbox/x.jsonl", "v1")
        job = JobRecord(job_id, JobStatus.RUNNING, source, "2026-11-23T10:00:00Z", 2, 0, shard_count=2)
        collected = replace(_shard(job_id, "a", ShardState.COLLECTED), counts={"succeeded": 1})
        return job, [collected]


def test_a_job_missing_a_recorded_shard_is_never_closed() -> None:
    wired = Wiring(_Store(), _JobState(), _Api(), None)  # type: ignore[arg-type]
    assert Finisher(wired).finish_if_done("j-partial") is False


def test_results_of_other_requests_are_never_recorded_even_when_the_count_matches() -> None:
    # Given a shard whose one request is "mine", and a batch that returns one result for "theirs"
    shard = replace(_shard("j-a", "a"), ids_digest=_digest_of("mine"))
    state = _State([shard])
    checker = _checker(state)

    # When the checker ticks / Then the batch fails and nothing is recorded
    with pytest.raises(CheckerItemsFailedError, match="batch a"):
        checker.tick()
    assert state.collected == []


def _digest_of(custom_id: str) -> str:
    from batchdrop.domain.jobs import IdsDigest

    digest = IdsDigest()
    digest.add(custom_id)
    return digest.hex


def test_a_tick_stops_starting_work_at_its_budget_and_leaves_the_rest() -> None:
    # Given three ended batches and a tick whose budget is already spent
    state = _State([_shard("j-a", "a"), _shard("j-b", "b"), _shard("j-c", "c")])
    checker = _checker(state, Timings(tick_budget=0))
    # When it ticks
    report = checker.tick()
    # Then it collects nothing and defers all three to the next tick (long before Lambda's timeout)
    assert state.collected == []
    assert report.deferred == 3
