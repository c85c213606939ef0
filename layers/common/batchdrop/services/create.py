"""Creating one shard's batch: the one path the submit function and the checker share. Take
the workspace's create lease, record the intent (PENDING → SUBMITTING), send the body once,
record what came of it. docs/guarantees.md explains why each step is there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from enum import Enum

from aws_lambda_powertools.metrics import MetricUnit

from batchdrop.domain import job_events
from batchdrop.domain.records import JobRecord, ShardRecord, lease_owner
from batchdrop.domain.shards import create_body, lines_body_bytes
from batchdrop.domain.states import UNSETTLED_SHARD_STATES, ShardState
from batchdrop.domain.timings import parse_stamp, stamp
from batchdrop.errors import (
    ApiKeyRefusedError,
    ProviderOutcomeUnknownError,
    ProviderRejectedError,
    ProviderUnavailableError,
    ShardBodyError,
)
from batchdrop.observability import count_key_refused, logger, metrics
from batchdrop.ports import READ_BYTES, Body, Wiring
from batchdrop.services.job_estimate import MAX_ESTIMATE_BYTES, estimate_key, read_json


class CreateResult(Enum):
    CREATED = "created"  # a batch was created and recorded for the shard
    DEFERRED = "deferred"  # the provider's queue is full: the shard stays PENDING
    BUSY = "busy"  # another create holds the workspace's lease: the shard stays PENDING
    REFUSED = "refused"  # the provider refused the body for good: the checker writes errored results
    SKIPPED = "skipped"  # another invocation holds the shard's create, or it lost its batch


# Refusals that sending the same body again cannot change (a body the API will never take).
# Any other 4xx (401/403/404: a key or workspace problem) leaves the shard pending.
FINAL_REFUSALS = frozenset({400, 413, 422})


def create_body_size(key: str, object_bytes: int, shard: ShardRecord) -> int:
    """The create body size recorded for a shard, checked against its object before
    anything is sent: a body of another length would never be a whole request."""
    if shard.size not in lines_body_bytes(object_bytes, shard.attempt_requests):
        raise ShardBodyError(
            f"{key}: {object_bytes} bytes and {shard.attempt_requests} requests cannot make the recorded "
            f"{shard.size}-byte create body; the shard is left unsent"
        )
    return shard.size


class ShardCreator:
    """A full queue (429) releases the shard to PENDING and returns DEFERRED; a final refusal
    (400/413/422) claims it REFUSED (the checker writes an errored result for each request);
    any other 4xx releases it and re-raises ProviderRejectedError. A 5xx, timeout or dropped
    connection marks it UNKNOWN, keeps the lease and re-raises ProviderOutcomeUnknownError:
    only the checker's listing settles it. A batch whose recording loses (its shard moved,
    or it is owned already) is canceled, since nothing would ever collect it.

    A refused key (401/403: no batch was made, the shard is PENDING again) is sent once more,
    the body read again, with the key the adapter has just fetched anew; refused again, it
    raises ApiKeyRefusedError and counts one ApiKeyRefused metric."""

    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._state = wired.state
        self._timings = wired.timings

    def create(self, shard: ShardRecord, *, lease_wait: float = 0.0) -> CreateResult:
        owner = lease_owner(shard.job_id, shard.index, uuid.uuid4().hex)
        if not self._take_lease(owner, lease_wait):
            logger.info("another create holds the lease: shard left pending", extra={"shard": shard.index})
            return CreateResult.BUSY
        try:
            result = self._create_refetching_key(shard, owner)
        except ProviderOutcomeUnknownError:
            # The lease stays: no other create may run until the checker has settled this
            # one (it releases the lease then), as a create in its window could be taken for it.
            raise
        except Exception:
            self._state.release_create_lease(owner)
            raise
        self._state.release_create_lease(owner)
        return result

    def _take_lease(self, owner: str, wait_seconds: float) -> bool:
        clock = self._wired.clock
        deadline = clock.monotonic() + wait_seconds
        while True:
            now = clock.now()
            until = now + timedelta(seconds=self._timings.stale_intent)
            if self._state.acquire_create_lease(owner, stamp(now), stamp(until)):
                return True
            if self.free_stale_lease():
                continue
            if clock.monotonic() >= deadline:
                return False
            clock.sleep(self._timings.lease_poll)

    def free_stale_lease(self) -> bool:
        """Free the lease of a holder that is gone: its shard has moved on (it has its
        batch, or another intent holds it), or is still PENDING a while after the lease was
        taken (the holder died before recording its intent). A holder whose intent is still
        SUBMITTING or UNKNOWN keeps the lease until the checker settles that create, however
        long it takes. True if the lease is free now."""
        lease = self._state.get_create_lease()
        if lease is None:
            return True
        held_for = lease.shard
        shard = self._state.get_shard(*held_for) if held_for else None
        state = shard.state if shard else None
        if shard is not None and shard.state in UNSETTLED_SHARD_STATES:
            alive = shard.lease_owner == lease.owner
        else:
            age = (self._wired.clock.now() - parse_stamp(lease.taken_at)).total_seconds()
            alive = state is ShardState.PENDING and age <= self._timings.stale_pending_lease
        if alive:
            return False
        logger.warning("freed a create lease its holder left behind", extra={"owner": lease.owner, "state": state})
        return self._state.release_create_lease(lease.owner)

    def _create_refetching_key(self, shard: ShardRecord, owner: str) -> CreateResult:
        try:
            return self._create_holding_lease(shard, owner)
        except ApiKeyRefusedError as exc:
            logger.warning("API key refused: create sent again with the key fetched anew", extra={"reason": str(exc)})
        try:
            return self._create_holding_lease(shard, owner)
        except ApiKeyRefusedError:
            logger.error("API key refused after fetching it again: shard left pending", extra={"shard": shard.index})
            count_key_refused()
            raise

    def _create_holding_lease(self, shard: ShardRecord, owner: str) -> CreateResult:
        """The create itself, under the lease."""
        # Opened before the intent: a shard that cannot be read never becomes "maybe sent".
        # The version recorded when the body was written: one replaced since is never sent.
        object_bytes, body = self._wired.store.open(shard.key, shard.version_id)
        try:
            size = create_body_size(shard.key, object_bytes, shard)
            sent_at = self._wired.stamp()
            # Fenced to the attempt and body read: a shard retried meanwhile is not sent from here.
            if not self._state.begin_submit(shard, sent_at, owner):
                return CreateResult.SKIPPED  # the shard moved, the job is canceled, or the lease was lost
            return self._send(shard, _chunks(body), size, sent_at)
        finally:
            body.close()

    def _send(self, shard: ShardRecord, chunks: Iterator[bytes], size: int, sent_at: str) -> CreateResult:
        job_id, index = shard.job_id, shard.index
        try:
            batch = self._wired.batches.create(create_body(chunks), size, self._timings.create_timeout)
        except ProviderRejectedError as exc:
            if exc.status in FINAL_REFUSALS:
                # Claimed as REFUSED before anything is written; the checker writes an
                # errored result for each of its requests and collects it.
                self._state.refuse(job_id, index, str(exc), sent_at)
                logger.error("the provider refused the batch for good", extra={"shard": index, "reason": str(exc)})
                return CreateResult.REFUSED
            self._state.release_submit(job_id, index, str(exc), sent_at)
            if exc.queue_full:
                logger.warning("provider queue full: shard left pending", extra={"shard": index})
                return CreateResult.DEFERRED
            raise
        except ProviderOutcomeUnknownError as exc:
            self._state.mark_unknown(job_id, index, str(exc), sent_at)
            logger.error("create outcome unknown: shard not resent", extra={"shard": index})
            raise
        if not self._state.mark_submitted(job_id, index, batch["id"], sent_at):
            return self._unrecorded(shard, batch["id"])
        logger.info(
            "batch created", extra={"shard": index, "batch_id": batch["id"], "requests": shard.attempt_requests}
        )
        return CreateResult.CREATED

    def _unrecorded(self, shard: ShardRecord, batch_id: str) -> CreateResult:
        """A batch created for a shard that moved meanwhile: adopted already, or canceled."""
        current = self._state.get_shard(shard.job_id, shard.index)
        owner_batch = current.batch_id if current else None
        if owner_batch == batch_id:
            return CreateResult.CREATED  # the checker's listing adopted it first
        try:
            self._wired.batches.cancel(batch_id)
        except ProviderUnavailableError:
            logger.exception("could not cancel an unrecorded batch", extra={"batch_id": batch_id})
        logger.warning(
            "DuplicateBatch: a created batch could not be recorded and was canceled",
            extra={"shard": shard.index, "batch_id": batch_id, "owner_batch": owner_batch},
        )
        metrics.add_metric("DuplicateBatches", MetricUnit.Count, 1)
        return CreateResult.SKIPPED


def _chunks(body: Body) -> Iterator[bytes]:
    return body.iter_chunks(READ_BYTES)


def mark_running(wired: Wiring, job: JobRecord) -> bool:
    """SUBMITTING → RUNNING for `job`, every shard of which has its batch; True if this call
    moved it. The call that moved it announces the job as submitted, unless a cancel was
    asked for (its shards may have been closed unsent)."""
    if not wired.state.mark_job_running(job.job_id):
        return False
    if not job.cancel_requested:
        estimate = read_json(wired.store, estimate_key(job.job_id), MAX_ESTIMATE_BYTES)
        wired.events.publish(job_events.submitted(job, estimate))
    return True
