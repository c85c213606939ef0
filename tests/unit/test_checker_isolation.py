"""One bad batch must not stop a checker tick: the others are collected, and the failure
still reaches Lambda (and so the failure destination and its alarm) at the end."""

from __future__ import annotations

from typing import Any

import pytest

from batchdrop.checker import Checker
from batchdrop.errors import CheckerItemsFailedError


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
    def __init__(self, shards: list[dict[str, Any]]) -> None:
        self.shards = shards
        self.collected: list[str] = []

    def open_items(self) -> list[dict[str, Any]]:
        return self.shards

    def get_shard(self, job_id: str, index: int) -> dict[str, Any]:
        return next(s for s in self.shards if s["job_id"] == job_id and s["index"] == index)

    def mark_collected(self, job_id: str, index: int, **_figures: Any) -> bool:
        self.collected.append(job_id)
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


def _shard(job_id: str, batch_id: str) -> dict[str, Any]:
    return {
        "SK": f"SHARD#{job_id}#00000",
        "job_id": job_id,
        "index": 0,
        "state": "SUBMITTED",
        "batch_id": batch_id,
        "requests": 1,
    }


def test_a_failing_batch_does_not_stop_the_others_and_the_tick_still_fails() -> None:
    # Given three open batches, the middle one failing in an unexpected way
    state = _State([_shard("j-a", "a"), _shard("j-b", "broken"), _shard("j-c", "c")])
    checker = Checker(_Store(), state, _Api(), events=None, clock=lambda: "now", seconds_left=lambda: 900)  # type: ignore[arg-type]

    # When the checker ticks, Then it raises at the end, naming the failed batch...
    with pytest.raises(CheckerItemsFailedError, match="batch broken"):
        checker.tick()

    # ...after collecting the two healthy batches
    assert sorted(state.collected) == ["j-a", "j-c"]


class _JobState:
    """A job that recorded two shards, of which only one item exists, collected."""

    def job_items(self, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        job = {"job_id": job_id, "status": "RUNNING", "shards": 2, "requested": 2, "rejected": 0}
        return job, [{"index": 0, "state": "COLLECTED", "counts": {"succeeded": 1}}]


def test_a_job_missing_a_recorded_shard_is_never_closed() -> None:
    checker = Checker(_Store(), _JobState(), _Api(), events=None, clock=lambda: "now", seconds_left=lambda: 900)  # type: ignore[arg-type]
    assert checker._finish_if_done("j-partial") is False


def test_results_of_other_requests_are_never_recorded_even_when_the_count_matches() -> None:
    # Given a shard whose one request is "mine", and a batch that returns one result for "theirs"
    shard = {**_shard("j-a", "a"), "ids_digest": _digest_of("mine")}
    state = _State([shard])
    checker = Checker(_Store(), state, _Api(), events=None, clock=lambda: "now", seconds_left=lambda: 900)  # type: ignore[arg-type]

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
    checker = Checker(
        _Store(),
        state,  # type: ignore[arg-type]
        _Api(),  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
        clock=lambda: "now",
        seconds_left=lambda: 900,
        budget_seconds=0,
    )
    # When it ticks
    report = checker.tick()
    # Then it collects nothing and defers all three to the next tick (long before Lambda's timeout)
    assert state.collected == []
    assert report.deferred == 3
