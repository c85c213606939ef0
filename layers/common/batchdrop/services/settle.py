"""Settling creates whose outcome is unknown (docs/guarantees.md): the shards whose create
may have made a batch are matched against the provider's recent batches by creation time
and request count. A match is adopted, a shard shown to have made none goes back to be
sent again, and a second batch for one shard is canceled."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batchdrop.domain import reconcile
from batchdrop.domain.records import ShardRecord
from batchdrop.domain.states import UNSETTLED_SHARD_STATES, ShardState
from batchdrop.domain.timings import parse_stamp
from batchdrop.errors import ProviderUnavailableError
from batchdrop.observability import logger
from batchdrop.ports import Wiring


@dataclass
class Settled:
    """What one settling did."""

    adopted: list[str] = field(default_factory=list)  # batches found and taken by their shard
    resubmitted: int = 0  # unknown creates shown to have made no batch, back to PENDING
    canceled: list[str] = field(default_factory=list)  # duplicate batches canceled
    waiting: int = 0  # left to a later tick

    @property
    def moved(self) -> bool:
        return bool(self.adopted or self.resubmitted)


class Settler:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._timings = wired.timings

    def settle(self, shards: list[ShardRecord]) -> Settled:
        """Settle what can be among `shards` (those of the jobs still submitting). Raises
        ProviderUnavailableError when the batches cannot be listed."""
        done = Settled()
        now = self._wired.clock.now()
        unsettled, in_flight = self._unsettled(shards, now)
        if not unsettled:
            return done
        by_key = {(shard.job_id, shard.index): shard for shard in shards}
        oldest = min(shard.sent_at for shard in unsettled)
        recent = self._wired.batches.list_recent(oldest - timedelta(seconds=self._timings.skew))
        # A batch already being canceled (a duplicate we canceled) is never adopted.
        listed = [reconcile.Listed.from_api(b) for b in recent.batches if not b.get("cancel_initiated_at")]
        owned = {shard.batch_id for shard in shards if shard.batch_id}
        window, skew = self._timings.create_window, self._timings.skew
        maybe = {b.id for b in listed if any(reconcile.matches(s, b, window, skew) for s in unsettled)} - owned
        owned |= self._wired.state.owned_batches(sorted(maybe))
        decision = reconcile.settle(
            unsettled,
            listed,
            owned=owned,
            covered=recent.complete,
            now=now,
            create_timeout=window,
            grace=self._timings.grace,
            skew=skew,
            blocked_sizes=in_flight,
        )
        for key, batch_id in decision.adopt.items():
            self._adopt(by_key[key], batch_id, done)
        for key in decision.resubmit:
            self._resubmit(by_key[key], done)
        for batch_id in decision.cancel:
            self._cancel_duplicate(batch_id, done)
        done.waiting += len(decision.wait)
        return done

    def _unsettled(self, shards: list[ShardRecord], now: datetime) -> tuple[list[reconcile.Unsettled], set[int]]:
        """Shards whose create may have made a batch, and the sizes of creates in flight."""
        unsettled: list[reconcile.Unsettled] = []
        in_flight: set[int] = set()
        for shard in shards:
            if shard.state not in UNSETTLED_SHARD_STATES or not shard.sent_at:
                continue
            sent_at = parse_stamp(shard.sent_at)
            if shard.state is ShardState.SUBMITTING and (now - sent_at).total_seconds() < self._timings.stale_intent:
                in_flight.add(shard.attempt_requests)
                continue
            unsettled.append(reconcile.Unsettled(shard.job_id, shard.index, shard.attempt_requests, sent_at))
        return unsettled, in_flight

    def _adopt(self, shard: ShardRecord, batch_id: str, done: Settled) -> None:
        if not self._wired.state.adopt_batch(shard, batch_id):
            return
        self._wired.state.release_create_lease(shard.lease_owner or "")
        logger.warning(
            "unknown create settled: batch adopted",
            extra={"job_id": shard.job_id, "shard": shard.index, "batch_id": batch_id},
        )
        done.adopted.append(batch_id)

    def _resubmit(self, shard: ShardRecord, done: Settled) -> None:
        reason = f"no batch matched the create sent at {shard.sent_at}: submitted again"
        if not self._wired.state.resubmit_unsettled(shard, reason):
            return
        self._wired.state.release_create_lease(shard.lease_owner or "")
        logger.warning(
            "unknown create settled: no batch, shard pending again",
            extra={"job_id": shard.job_id, "shard": shard.index},
        )
        done.resubmitted += 1

    def _cancel_duplicate(self, batch_id: str, done: Settled) -> None:
        try:
            self._wired.batches.cancel(batch_id)
        except ProviderUnavailableError as exc:
            logger.warning("duplicate batch not canceled yet", extra={"batch_id": batch_id, "error": str(exc)})
            return
        logger.warning("DuplicateBatch: a second batch for one shard was canceled", extra={"batch_id": batch_id})
        done.canceled.append(batch_id)
