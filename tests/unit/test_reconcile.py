"""Settling unknown creates by listing (docs/guarantees.md): the pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batchdrop.domain.reconcile import Listed, Settlement, Unsettled, settle
from batchdrop.domain.timings import parse_stamp

SENT = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
TIMEOUT = 300.0


def _shard(index: int = 1, requests: int = 10, sent: datetime = SENT, job: str = "j") -> Unsettled:
    return Unsettled(job, index, requests, sent)


def _batch(batch_id: str, seconds_after: float, requests: int = 10) -> Listed:
    return Listed(batch_id, SENT + timedelta(seconds=seconds_after), requests)


def _settle(
    shards: list[Unsettled],
    listed: list[Listed],
    *,
    owned: set[str] | None = None,
    covered: bool = True,
    now: datetime = SENT + timedelta(seconds=10),
    blocked_sizes: set[int] | None = None,
) -> Settlement:
    return settle(
        shards,
        listed,
        owned=owned or set(),
        covered=covered,
        now=now,
        create_timeout=TIMEOUT,
        grace=120.0,
        skew=60.0,
        blocked_sizes=blocked_sizes,
    )


def test_the_one_matching_batch_is_adopted() -> None:
    decision = _settle([_shard()], [_batch("b-other-size", 1, requests=11), _batch("b1", 1)])
    assert decision.adopt == {("j", 1): "b1"}
    assert decision.cancel == []


def test_batches_outside_the_window_or_owned_do_not_match() -> None:
    listed = [_batch("too-early", -61), _batch("too-late", TIMEOUT + 61), _batch("owned", 2)]
    decision = _settle([_shard()], listed, owned={"owned"})
    assert decision.adopt == {}
    assert decision.wait == [("j", 1)]  # still within the grace period


def test_no_match_after_the_grace_period_sends_the_shard_again_only_if_the_listing_covered_the_window() -> None:
    later = SENT + timedelta(seconds=121)
    assert _settle([_shard()], [], now=later).resubmit == [("j", 1)]
    assert _settle([_shard()], [], now=later, covered=False).wait == [("j", 1)]


def test_duplicates_keep_the_earliest_and_cancel_the_rest() -> None:
    decision = _settle([_shard()], [_batch("b2", 5), _batch("b1", 1), _batch("b3", 9)])
    assert decision.adopt == {("j", 1): "b1"}
    assert decision.cancel == ["b2", "b3"]


def test_two_unknown_shards_of_one_size_each_take_their_own_batch() -> None:
    shards = [_shard(1), _shard(2, sent=SENT + timedelta(seconds=3))]
    decision = _settle(shards, [_batch("b1", 1), _batch("b2", 4)])
    assert decision.adopt == {("j", 1): "b1", ("j", 2): "b2"}
    assert decision.cancel == []


def test_a_create_in_flight_of_the_same_size_makes_the_shard_wait_and_nothing_is_canceled() -> None:
    decision = _settle([_shard()], [_batch("b1", 1), _batch("b2", 2)], blocked_sizes={10})
    assert decision.adopt == {}
    assert decision.wait == [("j", 1)]
    assert decision.cancel == []


def test_listed_batches_count_every_request_state() -> None:
    batch = Listed.from_api(
        {
            "id": "b",
            "created_at": "2026-11-23T10:00:01.5Z",
            "request_counts": {"processing": 3, "succeeded": 4, "errored": 1, "canceled": 1, "expired": 1},
        }
    )
    assert batch.requests == 10
    assert batch.created_at == parse_stamp("2026-11-23T10:00:01.500+00:00")
