"""Settling creates whose outcome is unknown (docs/guarantees.md): the API has no
idempotency key, so a shard whose create timed out, got a 5xx or lost its connection is
matched against the provider's recent batches by creation time and request count.

Pure decisions only: the checker lists the batches, reads which ids are owned already,
and carries out what `settle` decides."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from batchdrop.domain.timings import parse_stamp


@dataclass(frozen=True)
class Unsettled:
    """A shard whose create may have made a batch: UNKNOWN, or SUBMITTING past its lease."""

    job_id: str
    index: int
    requests: int
    sent_at: datetime

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.index)


@dataclass(frozen=True)
class Listed:
    """A provider batch as the list endpoint shows it."""

    id: str
    created_at: datetime
    requests: int

    @classmethod
    def from_api(cls, batch: Mapping[str, Any]) -> Listed:
        counts = batch.get("request_counts") or {}
        return cls(str(batch["id"]), parse_stamp(str(batch["created_at"])), sum(int(v) for v in counts.values()))


@dataclass
class Settlement:
    adopt: dict[tuple[str, int], str] = field(default_factory=dict)  # shard → the batch it takes
    resubmit: list[tuple[str, int]] = field(default_factory=list)  # shards provably never created
    cancel: list[str] = field(default_factory=list)  # duplicate batches nobody owns
    wait: list[tuple[str, int]] = field(default_factory=list)  # left to a later tick


def window(sent_at: datetime, create_timeout: float, skew: float) -> tuple[datetime, datetime]:
    """When a batch made by a create sent at `sent_at` can carry as its created_at."""
    return sent_at - timedelta(seconds=skew), sent_at + timedelta(seconds=create_timeout + skew)


def matches(shard: Unsettled, batch: Listed, create_timeout: float, skew: float) -> bool:
    start, end = window(shard.sent_at, create_timeout, skew)
    return start <= batch.created_at <= end and batch.requests == shard.requests


def settle(
    shards: Sequence[Unsettled],
    listed: Iterable[Listed],
    *,
    owned: set[str],
    covered: bool,
    now: datetime,
    create_timeout: float,
    grace: float,
    skew: float,
    blocked_sizes: set[int] | None = None,
) -> Settlement:
    """Each unsettled shard, oldest intent first, adopts the earliest matching batch that
    no shard owns. A shard with no match goes back to be submitted once the listing
    covered its window and its intent is older than `grace`; otherwise it waits. Matching
    batches left over once every shard has its own are duplicates, to cancel.
    `blocked_sizes`: request counts of shards whose create is in flight right now; their
    batch could be mistaken for another's, so shards of that size wait."""
    blocked = blocked_sizes or set()
    free = sorted((b for b in listed if b.id not in owned), key=lambda b: (b.created_at, b.id))
    result = Settlement()
    taken: set[str] = set()
    matched: set[str] = set()
    for shard in sorted(shards, key=lambda s: (s.sent_at, s.key)):
        if shard.requests in blocked:
            result.wait.append(shard.key)
            continue
        candidates = [b for b in free if matches(shard, b, create_timeout, skew)]
        matched.update(b.id for b in candidates)
        chosen = next((b for b in candidates if b.id not in taken), None)
        if chosen is not None:
            taken.add(chosen.id)
            result.adopt[shard.key] = chosen.id
        elif covered and (now - shard.sent_at).total_seconds() >= grace:
            result.resubmit.append(shard.key)
        else:
            result.wait.append(shard.key)
    waiting = [s for s in shards if s.key in set(result.wait)]
    maybe_theirs = {b.id for b in free for s in waiting if matches(s, b, create_timeout, skew)}
    result.cancel = sorted(matched - taken - maybe_theirs)
    return result
