"""Submitting one uploaded object: validate every line, write the rejected ones to
errors/, shard the rest into create bodies in work/, record them, and create one batch
per shard, recording intent before each create.

The job id derives from the object version, so a duplicate event finds its job and does
nothing; a job interrupted part-way resumes where it stopped, and a shard whose create
may have gone through (state UNKNOWN) is never sent again from here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.objects import READ_BYTES, MultipartWriter, ObjectStore
from batchdrop.adapters.state import ShardPlan, StateTable
from batchdrop.domain.jobs import job_id_for, manifest_key, rejected_key, rejected_record
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.requests import RejectedLine, ValidLine, check_lines
from batchdrop.domain.shards import ENVELOPE_CLOSE, ENVELOPE_OPEN, ShardLimits, assign_shards, shard_key
from batchdrop.errors import ProviderOutcomeUnknownError, ProviderRejectedError, ProviderUnavailableError
from batchdrop.observability import logger


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    version_id: str

    def as_dict(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "version_id": self.version_id}


@dataclass(frozen=True)
class SubmitOutcome:
    job_id: str
    status: str  # the job's status after this invocation
    duplicate: bool = False
    submitted: int = 0  # shards created by this invocation


class _RejectSink:
    """errors/<job_id>/rejected.jsonl, opened only when a first line is rejected."""

    def __init__(self, store: ObjectStore, key: str, source_key: str) -> None:
        self._store = store
        self._key = key
        self._source_key = source_key
        self._writer: MultipartWriter | None = None

    def write(self, rejected: RejectedLine) -> None:
        if self._writer is None:
            self._writer = self._store.writer(self._key, "application/x-jsonl")
        self._writer.write(rejected_record(rejected, self._source_key))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


@dataclass
class _Split:
    shards: list[ShardPlan]
    requested: int = 0
    rejected: int = 0


class Submitter:
    def __init__(
        self,
        store: ObjectStore,
        state: StateTable,
        api: BatchesApi,
        clock: Callable[[], str],
        limits: ShardLimits | None = None,
    ) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._now = clock
        self._limits = limits or ShardLimits()

    def submit(self, source: SourceObject) -> SubmitOutcome:
        job_id = job_id_for(source.bucket, source.key, source.version_id)
        logger.append_keys(job_id=job_id, source_key=source.key)
        status = "RECEIVED"
        if not self._state.create_job(job_id, source.as_dict(), self._now()):
            status = str((self._state.get_job(job_id) or {}).get("status"))
            if status not in ("RECEIVED", "SUBMITTING"):
                logger.info("duplicate event for a job already under way", extra={"status": status})
                return SubmitOutcome(job_id, status, duplicate=True)
            logger.info("resuming an interrupted job", extra={"status": status})
        if status == "RECEIVED":
            split = self._split(job_id, source)
            if not split.shards:
                return self._fail(job_id, source, split)
            if not self._state.record_shards(job_id, split.shards, requested=split.requested, rejected=split.rejected):
                logger.info("another invocation recorded this job's shards first")
        return self._submit_pending(job_id)

    # --- validating and sharding ------------------------------------------------------

    def _split(self, job_id: str, source: SourceObject) -> _Split:
        """Stream the object once: rejected lines to errors/, valid ones into shard bodies."""
        split = _Split(shards=[])
        rejects = _RejectSink(self._store, rejected_key(job_id), source.key)
        shard: MultipartWriter | None = None
        shard_requests = 0
        try:
            lines = check_lines(self._store.lines(source.key, source.version_id))
            for index, line in assign_shards(self._valid(lines, split, rejects), self._limits):
                if shard is None or index != split.shards[-1].index:
                    if shard is not None:
                        self._close_shard(shard, split, shard_requests)
                    shard = self._store.writer(shard_key(job_id, index), "application/json")
                    shard.write(ENVELOPE_OPEN)
                    split.shards.append(ShardPlan(index, shard.key, 0, 0))
                    shard_requests = 0
                else:
                    shard.write(b",")
                shard.write(line.body)
                shard_requests += 1
            if shard is not None:
                self._close_shard(shard, split, shard_requests)
                shard = None
            rejects.close()
        except BaseException:
            if shard is not None:
                shard.abort()
            rejects.abort()
            raise
        return split

    @staticmethod
    def _valid(lines: Iterator[ValidLine | RejectedLine], split: _Split, rejects: _RejectSink) -> Iterator[ValidLine]:
        for line in lines:
            if isinstance(line, RejectedLine):
                split.rejected += 1
                rejects.write(line)
            else:
                split.requested += 1
                yield line

    @staticmethod
    def _close_shard(shard: MultipartWriter, split: _Split, requests: int) -> None:
        shard.write(ENVELOPE_CLOSE)
        shard.close()
        last = split.shards[-1]
        split.shards[-1] = ShardPlan(last.index, last.key, requests, shard.size)

    def _fail(self, job_id: str, source: SourceObject, split: _Split) -> SubmitOutcome:
        if split.rejected:
            reason = f"no valid request: all {split.rejected} lines were rejected (see {rejected_key(job_id)})"
        else:
            reason = "the file holds no request (it is empty or blank)"
        now = self._now()
        manifest = build_manifest(
            job_id=job_id,
            source=source.as_dict(),
            status="FAILED",
            requested=0,
            rejected=split.rejected,
            counts={},
            batches=[],
            usage_by_model={},
            result_keys=[],
            rejected_key=rejected_key(job_id) if split.rejected else None,
            created_at=now,
            completed_at=now,
            reason=reason,
        )
        if not split.rejected:
            self._store.put_json(f"errors/{job_id}/failure.json", {"job_id": job_id, "reason": reason})
        self._store.put_json(manifest_key(job_id), manifest)
        self._state.fail_job(job_id, reason, requested=0, rejected=split.rejected, manifest_key=manifest_key(job_id))
        logger.warning("job failed", extra={"reason": reason})
        return SubmitOutcome(job_id, "FAILED")

    # --- creating batches -------------------------------------------------------------

    def _submit_pending(self, job_id: str) -> SubmitOutcome:
        submitted = 0
        _, shards = self._state.job_items(job_id)
        creator = ShardCreator(self._store, self._state, self._api, self._now)
        for shard in shards:
            if shard["state"] == "PENDING" and creator.create(job_id, shard) is CreateResult.CREATED:
                submitted += 1
        _, shards = self._state.job_items(job_id)
        if all(s["state"] in ("SUBMITTED", "COLLECTED") for s in shards):
            self._state.mark_job_running(job_id)
        job = self._state.get_job(job_id) or {}
        return SubmitOutcome(job_id, str(job.get("status")), submitted=submitted)


class CreateResult(Enum):
    CREATED = "created"  # a batch was created and recorded for the shard
    DEFERRED = "deferred"  # the provider's queue is full: the shard stays PENDING
    SKIPPED = "skipped"  # another invocation holds the shard's create, or it lost its batch


class ShardCreator:
    """One shard's create, the one path the submit function and the checker share: record
    the intent (PENDING → SUBMITTING), send the body once, record the outcome.

    A 4xx releases the shard to PENDING (a full queue returns DEFERRED; any other refusal
    re-raises ProviderRejectedError); a 5xx, timeout or dropped connection marks it UNKNOWN
    and re-raises ProviderOutcomeUnknownError: only the checker's reconciliation settles
    it. A batch whose recording loses (its shard moved, or it is owned already) is
    canceled, since nothing would ever collect it."""

    def __init__(self, store: ObjectStore, state: StateTable, api: BatchesApi, clock: Callable[[], str]) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._now = clock

    def create(self, job_id: str, shard: dict[str, object]) -> CreateResult:
        index = int(shard["index"])  # type: ignore[call-overload]
        # Opened before the intent: a shard that cannot be read never becomes "maybe sent".
        size, body = self._store.open(str(shard["key"]))
        try:
            sent_at = self._now()
            if not self._state.begin_submit(job_id, index, sent_at):
                return CreateResult.SKIPPED  # someone else holds this shard's create
            batch = self._api.create(body.iter_chunks(READ_BYTES), size)
        except ProviderRejectedError as exc:
            self._state.release_submit(job_id, index, str(exc))
            if exc.queue_full:
                logger.warning("provider queue full: shard left pending", extra={"shard": index})
                return CreateResult.DEFERRED
            raise
        except ProviderOutcomeUnknownError as exc:
            self._state.mark_unknown(job_id, index, str(exc))
            logger.error("create outcome unknown: shard not resent", extra={"shard": index})
            raise
        finally:
            body.close()
        if not self._state.mark_submitted(job_id, index, batch["id"], sent_at=sent_at):
            current = self._state.get_shard(job_id, index) or {}
            if current.get("batch_id") == batch["id"]:
                return CreateResult.CREATED  # reconciliation adopted it first
            try:
                self._api.cancel(batch["id"])
            except ProviderUnavailableError:
                logger.exception("could not cancel an unrecorded batch", extra={"batch_id": batch["id"]})
            logger.warning(
                "DuplicateBatch: a created batch could not be recorded and was canceled",
                extra={"shard": index, "batch_id": batch["id"], "owner_batch": current.get("batch_id")},
            )
            return CreateResult.SKIPPED
        logger.info("batch created", extra={"shard": index, "batch_id": batch["id"], "requests": shard["requests"]})
        return CreateResult.CREATED
