"""Submitting one uploaded object: validate every line, write the rejected ones to
errors/, shard the rest into create bodies in work/, record them, and create one batch
per shard, recording intent before each create.

The job id derives from the object version, so a duplicate event finds its job and does
nothing; a job interrupted part-way resumes where it stopped, and a shard whose create
may have gone through (state UNKNOWN) is never sent again from here."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

from batchdrop.adapters.batches import BatchesApi, create_window
from batchdrop.adapters.objects import PART_BYTES, READ_BYTES, MultipartWriter, ObjectStore, SourceRange
from batchdrop.adapters.state import ShardPlan, StateTable
from batchdrop.domain import reconcile
from batchdrop.domain.jobs import (
    IdsDigest,
    job_id_for,
    manifest_key,
    rejected_key,
    rejected_record,
)
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.requests import RejectedLine, ValidLine, check_lines
from batchdrop.domain.shards import (
    ShardLimits,
    assign_shards,
    body_requests,
    create_body,
    create_body_bytes,
    holds_lines,
    lines_body_bytes,
    shard_key,
    whole_copy_key,
)
from batchdrop.errors import (
    ProviderOutcomeUnknownError,
    ProviderRejectedError,
    ProviderUnavailableError,
    ShardBodyError,
)
from batchdrop.observability import logger, metrics

if TYPE_CHECKING:
    from concurrent.futures import Executor

# A file of this size or more, up to one shard's, is copied by S3 while it is read (_EarlyCopy):
# below it, the copy at the end takes no time worth saving.
EARLY_COPY_BYTES = PART_BYTES
# How long the submit function waits for another create to release the workspace's lease
# before it leaves the shard to the checker's next tick.
LEASE_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class SourceObject:
    bucket: str
    key: str
    version_id: str
    size: int | None = None  # as the event reports it (None: not known); only the early copy reads it

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


class _LineReader:
    """The source's lines, passed through, with where the last one read lies in the object."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self.start = 0  # offset of the last line read
        self.end = 0  # offset after it: the bytes read so far
        self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._lines:
            self.start = self.end
            self.end += len(raw)
            self.last = raw
            yield raw


class _ShardOut:
    """One shard as the split makes it, in JSON Lines. While its lines are the source's own
    bytes, one after another, it is only a range of the source, which S3 copies when the shard
    ends: the Lambda never uploads it. The first line that is not (a rejected or blank line
    before it, `\\r\\n`, a BOM, a gzip source) turns it into a written object that begins with
    the range so far (copied by S3 too when it is a part's size or more)."""

    def __init__(self, store: ObjectStore, source: SourceObject, index: int, key: str, *, copyable: bool) -> None:
        self._store = store
        self._source = source
        self.index = index
        self.key = key
        self._copyable = copyable
        self._range: tuple[int, int] | None = None  # [start, end) of the source, while copying
        self._writer: MultipartWriter | None = None
        self._requests = 0
        self._line_bytes = 0
        self._digest = IdsDigest()

    def add(self, line: ValidLine, start: int, raw: bytes) -> None:
        """Add a valid line, read from the source's bytes [start, start + len(raw))."""
        body = line.body
        self._requests += 1
        self._line_bytes += len(body)
        self._digest.add(line.custom_id)
        if self._writer is None:
            # The line as the source holds it: its body and one \n, or no \n at the end of the file.
            exact = len(raw) == len(body) or (len(raw) == len(body) + 1 and raw[-1] == _NEWLINE)
            if exact and self._copyable and (self._range is None or self._range[1] == start):
                self._range = (start if self._range is None else self._range[0], start + len(raw))
                return
            self._writer = self._store.writer(self.key, SHARD_CONTENT_TYPE, if_absent=True)
            if self._range is not None:
                self._writer.copy_from(self._source_range(*self._range))
                self._range = None
        self._writer.write(body)
        self._writer.write(b"\n")

    def spans(self, start: int, end: int) -> bool:
        """Whether the shard is still exactly the source's bytes [start, end)."""
        return self._writer is None and self._range == (start, end)

    def close(self, *, whole: bool) -> ShardPlan:
        """Finish the object (`whole`: the shard is the whole source object); its plan."""
        if self._writer is not None:
            self._writer.close()
        elif self._range is not None:
            self._store.copy(
                self._source_range(*self._range), self.key, SHARD_CONTENT_TYPE, whole=whole, if_absent=True
            )
        return self.plan(self.key)

    def plan(self, key: str) -> ShardPlan:
        """The shard as recorded, kept at `key` (its own, or a copy of the same bytes)."""
        size = create_body_bytes(self._requests, self._line_bytes)
        return ShardPlan(self.index, key, self._requests, size, self._digest.hex)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()

    def _source_range(self, start: int, end: int) -> SourceRange:
        return SourceRange(self._source.bucket, self._source.key, self._source.version_id, start, end)


_NEWLINE = ord("\n")
SHARD_CONTENT_TYPE = "application/x-ndjson"


class _EarlyCopy:
    """S3 copying the whole source version to work/ while the function reads and checks it.
    A file that is one clean shard (the common large upload) is then ready as its shard when
    the check ends, instead of being copied after it: the copy overlaps the reading.

    Begun only once the first line is exact, for a file that may be one shard. Whatever the
    check finds, the copy is the version's own bytes, so a copy an earlier or concurrent run
    of the job made (the write is if-absent) is as good as this one's. A copy that is not
    used (the file was not one clean shard) is left to expire with work/: no function may
    delete an object."""

    def __init__(self, store: ObjectStore, source: SourceObject, key: str, pool: Executor) -> None:
        self.key = key
        whole = SourceRange(source.bucket, source.key, source.version_id, 0, 0)
        self._copying = pool.submit(store.copy, whole, key, SHARD_CONTENT_TYPE, whole=True, if_absent=True)

    def ready(self) -> bool:
        """Wait for the copy: whether the key now holds the whole version."""
        try:
            self._copying.result()
        except Exception:  # the shard is then copied at the end, as without an early copy  # noqa: BLE001
            logger.warning("the early copy of the file failed: its shard is copied now", exc_info=True)
            return False
        return True


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
        max_attempts: int = 3,
        lease_wait_seconds: float = LEASE_WAIT_SECONDS,
        early_copy_bytes: int = EARLY_COPY_BYTES,
    ) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._now = clock
        self._limits = limits or ShardLimits()
        self._max_attempts = max_attempts
        self._lease_wait = lease_wait_seconds
        self._early_copy_bytes = early_copy_bytes

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
            recorded = self._state.record_shards(
                job_id,
                split.shards,
                requested=split.requested,
                rejected=split.rejected,
                max_attempts=self._max_attempts,
            )
            if not recorded:
                logger.info("another invocation recorded this job's shards first")
        else:
            self._complete_recording(job_id)
            # A run that died holding the create lease would stall every create until it ran out.
            ShardCreator(self._store, self._state, self._api, self._now).free_stale_lease(self._now())
        return self._submit_pending(job_id)

    def _complete_recording(self, job_id: str) -> None:
        """A recording of more than 99 shards spans several transactions: a crash between
        them leaves shards unrecorded. Their bodies are in work/ already; record them."""
        job, shards = self._state.job_items(job_id)
        expected = int((job or {}).get("shards", 0))
        have = {int(shard["index"]) for shard in shards}
        for index in sorted(set(range(expected)) - have):
            key = shard_key(job_id, index)
            digest, requests, line_bytes = IdsDigest(), 0, 0
            for request in body_requests(self._store.lines(key)):
                digest.add(str(json.loads(request)["custom_id"]))
                requests += 1
                line_bytes += len(request)
            plan = ShardPlan(index, key, requests, create_body_bytes(requests, line_bytes), digest.hex)
            if self._state.add_missing_shard(job_id, plan, self._max_attempts):
                logger.warning("recorded a shard an interrupted recording left out", extra={"shard": index})

    # --- validating and sharding ------------------------------------------------------

    def _split(self, job_id: str, source: SourceObject) -> _Split:
        """Stream the object once: rejected lines to errors/, valid ones into shards. A shard
        that ends before the object does is finished in the background (S3 copying a range,
        or the last parts going up) while the next one fills; all are done before this returns.
        A file that may be one clean shard is copied whole by S3 meanwhile (_EarlyCopy)."""
        from concurrent.futures import Future, ThreadPoolExecutor

        split = _Split(shards=[])
        rejects = _RejectSink(self._store, rejected_key(job_id), source.key)
        reader = _LineReader(self._store.lines(source.key, source.version_id))
        # A gzip object's line offsets are not its bytes: its shards are always written.
        copyable = not source.key.endswith(".gz")
        shard: _ShardOut | None = None
        closing: list[Future[ShardPlan]] = []
        early: _EarlyCopy | None = None
        may_copy_early = copyable and self._early_copy_bytes <= (source.size or 0) <= self._limits.max_bytes
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-close") as closer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-copy") as copier,
        ):
            try:
                for index, line in assign_shards(self._valid(check_lines(reader), split, rejects), self._limits):
                    if shard is None or index != shard.index:
                        if shard is not None:
                            closing.append(closer.submit(shard.close, whole=False))
                        # If absent: a duplicate invocation splitting at the same time (or a
                        # resumed one) writes the same bytes; the first complete copy stays.
                        shard = _ShardOut(self._store, source, index, shard_key(job_id, index), copyable=copyable)
                    shard.add(line, reader.start, reader.last)
                    if may_copy_early:  # the first valid line only
                        may_copy_early = False
                        if shard.spans(0, reader.end):
                            early = _EarlyCopy(self._store, source, whole_copy_key(job_id), copier)
                last = self._close_last(shard, reader, early) if shard is not None else None
                shard = None
                split.shards = [done.result() for done in closing] + ([last] if last else [])
                rejects.close()
            except BaseException:
                if shard is not None:
                    shard.abort()
                rejects.abort()
                raise
        return split

    @staticmethod
    def _close_last(shard: _ShardOut, reader: _LineReader, early: _EarlyCopy | None) -> ShardPlan:
        """The last shard: the early copy, when the file is this one clean shard and S3 made it."""
        whole = shard.spans(0, reader.end)
        if early is not None and whole and early.ready():
            return shard.plan(early.key)
        # An early copy not used is left to expire with work/ (no function deletes an object).
        return shard.close(whole=whole)

    @staticmethod
    def _valid(lines: Iterator[ValidLine | RejectedLine], split: _Split, rejects: _RejectSink) -> Iterator[ValidLine]:
        for line in lines:
            if isinstance(line, RejectedLine):
                split.rejected += 1
                rejects.write(line)
            else:
                split.requested += 1
                yield line

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
            if shard["state"] != "PENDING":
                continue
            if (self._state.get_job(job_id) or {}).get("cancel_requested_at"):
                logger.info("job canceled: its unsent shards are left to the checker")
                break
            if creator.create(job_id, shard, lease_wait_seconds=self._lease_wait) is CreateResult.CREATED:
                submitted += 1
        _, shards = self._state.job_items(job_id)
        if all(s["state"] in ("SUBMITTED", "COLLECTED") for s in shards):
            self._state.mark_job_running(job_id)
        job = self._state.get_job(job_id) or {}
        return SubmitOutcome(job_id, str(job.get("status")), submitted=submitted)


class CreateResult(Enum):
    CREATED = "created"  # a batch was created and recorded for the shard
    DEFERRED = "deferred"  # the provider's queue is full: the shard stays PENDING
    BUSY = "busy"  # another create holds the workspace's lease: the shard stays PENDING
    REFUSED = "refused"  # the provider refused the body for good: the checker writes errored results
    SKIPPED = "skipped"  # another invocation holds the shard's create, or it lost its batch


# Refusals that sending the same body again cannot change (a body the API will never take).
# Any other 4xx (401/403/404: a key or workspace problem) leaves the shard pending.
FINAL_REFUSALS = frozenset({400, 413, 422})
# Recorded with the lease (informative): the longest a create can take, plus this margin.
LEASE_MARGIN_SECONDS = 60.0
LEASE_POLL_SECONDS = 0.5
# A lease whose shard is still PENDING this long after it was taken lost its holder between
# taking the lease and recording the intent.
STALE_PENDING_LEASE = 60.0


def _lines_body_size(key: str, object_bytes: int, shard: dict[str, object]) -> int:
    """The create body size recorded for a JSON Lines shard, checked against its object
    before anything is sent: a body of another length would never be a whole request."""
    recorded = int(shard["size"])  # type: ignore[call-overload]
    if recorded not in lines_body_bytes(object_bytes, int(shard["requests"])):  # type: ignore[call-overload]
        raise ShardBodyError(
            f"{key}: {object_bytes} bytes and {shard['requests']} requests cannot make the recorded "
            f"{recorded}-byte create body; the shard is left unsent"
        )
    return recorded


def _iso(moment: datetime) -> str:
    """The clock's own format (milliseconds, Z), so lease times compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lease_owner(job_id: str, index: int) -> str:
    """The start of the lease owner of a shard's creates (a unique suffix follows)."""
    return f"{job_id}#{index}#"


class ShardCreator:
    """One shard's create, the one path the submit function and the checker share: take the
    workspace's create lease (docs/guarantees.md), record the intent (PENDING →
    SUBMITTING), send the body once, record the outcome.

    A full queue (429) releases the shard to PENDING and returns DEFERRED; a final refusal
    (400/413/422) writes an errored result for each of its requests and returns REFUSED;
    any other 4xx releases it and re-raises ProviderRejectedError. A 5xx, timeout or dropped
    connection marks it UNKNOWN, keeps the lease until it runs out and re-raises
    ProviderOutcomeUnknownError: only the checker's reconciliation settles it. A batch
    whose recording loses (its shard moved, or it is owned already) is canceled, since
    nothing would ever collect it."""

    def __init__(
        self,
        store: ObjectStore,
        state: StateTable,
        api: BatchesApi,
        clock: Callable[[], str],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._now = clock
        self._sleep = sleep

    def create(self, job_id: str, shard: dict[str, object], *, lease_wait_seconds: float = 0.0) -> CreateResult:
        index = int(shard["index"])  # type: ignore[call-overload]
        owner = lease_owner(job_id, index) + uuid.uuid4().hex
        if not self._take_lease(owner, lease_wait_seconds):
            logger.info("another create holds the lease: shard left pending", extra={"shard": index})
            return CreateResult.BUSY
        try:
            result = self._create_holding_lease(job_id, index, shard, owner)
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
        deadline = time.monotonic() + wait_seconds
        while True:
            now = self._now()
            until = reconcile.parse_time(now) + timedelta(seconds=create_window() + LEASE_MARGIN_SECONDS)
            if self._state.acquire_create_lease(owner, now, _iso(until)):
                return True
            if self.free_stale_lease(now):
                continue
            if time.monotonic() >= deadline:
                return False
            self._sleep(LEASE_POLL_SECONDS)

    def free_stale_lease(self, now: str) -> bool:
        """Free the lease of a holder that is gone: its shard has moved on (it has its
        batch, or another intent holds it), or is still PENDING a while after the lease was
        taken (the holder died before recording its intent). A holder whose intent is still
        SUBMITTING or UNKNOWN keeps the lease until the checker settles that create, however
        long it takes. True if the lease is free now."""
        lease = self._state.get_create_lease()
        if lease is None:
            return True
        owner = str(lease["owner"])
        job_id, _, rest = owner.partition("#")
        index = rest.partition("#")[0]
        shard = (self._state.get_shard(job_id, int(index)) if index.isdigit() else None) or {}
        state = shard.get("state")
        age = (reconcile.parse_time(now) - reconcile.parse_time(str(lease["taken_at"]))).total_seconds()
        if state in ("SUBMITTING", "UNKNOWN"):
            alive = shard.get("lease_owner") == owner
        else:
            alive = state == "PENDING" and age <= STALE_PENDING_LEASE
        if alive:
            return False
        logger.warning("freed a create lease its holder left behind", extra={"owner": owner, "state": state})
        return self._state.release_create_lease(owner)

    def _create_holding_lease(self, job_id: str, index: int, shard: dict[str, object], owner: str) -> CreateResult:
        """The create itself, under the lease."""
        # Opened before the intent: a shard that cannot be read never becomes "maybe sent".
        key = str(shard["key"])
        size, body = self._store.open(key)
        try:
            chunks = body.iter_chunks(READ_BYTES)
            if holds_lines(key):
                size = _lines_body_size(key, size, shard)
                chunks = create_body(chunks)
            sent_at = self._now()
            if not self._state.begin_submit(job_id, index, sent_at, owner):
                return CreateResult.SKIPPED  # the shard moved, the job is canceled, or the lease was lost
            batch = self._api.create(chunks, size)
        except ProviderRejectedError as exc:
            if exc.status in FINAL_REFUSALS:
                # Claimed as REFUSED before anything is written; the checker writes an
                # errored result for each of its requests and collects it.
                self._state.claim_unsent(job_id, index, "SUBMITTING", "REFUSED", {"sent_at": sent_at}, str(exc))
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
            metrics.add_metric("DuplicateBatches", MetricUnit.Count, 1)
            return CreateResult.SKIPPED
        logger.info("batch created", extra={"shard": index, "batch_id": batch["id"], "requests": shard["requests"]})
        return CreateResult.CREATED
