"""In-memory fakes of the ports (batchdrop.ports), for unit tests of the services' decisions.

Each satisfies its Protocol structurally, so a test builds a real `Wiring` from them. The
state store keeps the state table adapter's semantics (adapters/state.py): every move is
checked against the state machines and fenced on the same attributes, and a condition that
does not hold makes the write return False and change nothing. tests/unit/test_state_moves.py
runs the same moves against the adapter on moto and against this fake, so the two cannot
drift apart."""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Self

from batchdrop.domain import job_events
from batchdrop.domain.budget import DailyBudgetTaken, DaySpend
from batchdrop.domain.job_events import JobEvent
from batchdrop.domain.lines import SourceLines
from batchdrop.domain.records import (
    CreateLease,
    JobRecord,
    NextAttempt,
    OpenWork,
    Outcome,
    PipelineRef,
    ShardPlan,
    ShardRecord,
    SourceRef,
    SplitCheckpoint,
)
from batchdrop.domain.shards import ENVELOPE_CLOSE, ENVELOPE_OPEN, SEPARATOR
from batchdrop.domain.states import (
    OPEN_JOB_STATUSES,
    UNSETTLED_SHARD_STATES,
    JobStatus,
    ShardState,
    check_job_move,
    check_shard_move,
)
from batchdrop.domain.timings import parse_stamp, stamp
from batchdrop.errors import ProviderOutcomeUnknownError, ProviderRejectedError, ProviderUnavailableError
from batchdrop.ports import ObjectVersion, RecentBatches, SmallObject, SourceRange, Wiring

START = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
MODEL = "claude-haiku-4-5"


# --- the clock ---------------------------------------------------------------------------


class FakeClock:
    """A wall clock the test sets or advances; `monotonic` and `sleep` move with it."""

    def __init__(self, now: datetime = START) -> None:
        self.wall = now
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.elapsed += seconds


# --- objects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredVersion:
    version_id: str
    data: bytes
    last_modified: datetime
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata, as S3 gives it back


class FakeBody:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.closed = False

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        for start in range(0, len(self._data), chunk_size):
            yield self._data[start : start + chunk_size]

    def close(self) -> None:
        self.closed = True


class FakeWriter:
    """One object written as a stream; stored only by `close`, and with `if_absent` only if
    the key holds no object by then."""

    def __init__(self, store: FakeObjectStore, key: str, content_type: str, *, if_absent: bool) -> None:
        self._store = store
        self._content_type = content_type
        self._if_absent = if_absent
        self._buffer = bytearray()
        self.key = key
        self.size = 0
        self.created = False
        self.version_id: str | None = None

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)

    def copy_from(self, source: SourceRange) -> None:
        if self.size:
            raise ValueError(f"{self.key}: a copied range must come first")
        self.write(self._store.read_range(source))

    def close(self) -> bool:
        data = bytes(self._buffer)
        self.version_id = self._store.store_version(self.key, data, self._content_type, if_absent=self._if_absent)
        self.created = self.version_id is not None
        return self.created

    def abort(self) -> None:
        self._buffer.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FakeObjectStore:
    """A versioned bucket in a dict: key → its versions, oldest first."""

    def __init__(self, bucket: str = "bucket", clock: FakeClock | None = None) -> None:
        self.bucket = bucket
        self._clock = clock or FakeClock()
        self._objects: dict[str, list[StoredVersion]] = {}
        self._versions = itertools.count(1)
        self._lock = threading.Lock()  # the split copies and closes shards from its own threads
        self.small_reads: list[tuple[str, str | None]] = []  # read_small's calls: (key, version asked)
        self.line_reads: list[tuple[str, int]] = []  # (key, start) of each `lines` call

    # what tests use

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store a new version of `key`, as an upload does (with its user `metadata`); its version id."""
        version_id = self.store_version(key, data, content_type, if_absent=False, metadata=metadata)
        assert version_id is not None
        return version_id

    def get(self, key: str) -> bytes:
        return self._current(key).data

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self._objects if key.startswith(prefix))

    def exists(self, key: str) -> bool:
        return key in self._objects

    def store(self, key: str, data: bytes, content_type: str, *, if_absent: bool) -> bool:
        """Write `key`; with `if_absent`, only if it holds no object yet (False: it stays)."""
        return self.store_version(key, data, content_type, if_absent=if_absent) is not None

    def store_version(
        self, key: str, data: bytes, content_type: str, *, if_absent: bool, metadata: Mapping[str, str] | None = None
    ) -> str | None:
        """Write `key` as `store` does; the version written, None when `if_absent` lost."""
        if len(key.encode()) > 1024:  # as S3 answers a longer key
            raise ValueError(f"KeyTooLongError: {len(key.encode())} bytes in {key[:40]!r}...")
        with self._lock:
            if if_absent and key in self._objects:
                return None
            now = self._clock.now()
            version = StoredVersion(f"v{next(self._versions)}", data, now, content_type, dict(metadata or {}))
            self._objects.setdefault(key, []).append(version)
            return version.version_id

    def read_range(self, source: SourceRange) -> bytes:
        if source.bucket != self.bucket:
            raise ValueError(f"no bucket {source.bucket!r} here")
        return self._version(source.key, source.version_id).data[source.start : source.end]

    def _version(self, key: str, version_id: str | None) -> StoredVersion:
        versions = self._objects.get(key)
        if not versions:
            raise KeyError(f"NoSuchKey: {key}")
        for version in reversed(versions):
            if version_id is None or version.version_id == version_id:
                return version
        raise KeyError(f"NoSuchVersion: {key} {version_id}")

    def _current(self, key: str) -> StoredVersion:
        return self._version(key, None)

    # the ObjectStore port

    def lines(self, key: str, version_id: str | None = None, *, start: int = 0) -> SourceLines:
        # Read as the adapter reads: by the same bounded reader, over the version's bytes
        # (from `start` on, as a ranged GET, read as plain text).
        self.line_reads.append((key, start))
        return SourceLines(io.BytesIO(self._version(key, version_id).data[start:]), key, plain=start > 0)

    def open(self, key: str, version_id: str | None = None) -> tuple[int, FakeBody]:
        data = self._version(key, version_id).data
        return len(data), FakeBody(data)

    def version_of(self, key: str) -> str:
        return self._current(key).version_id

    def read_small(self, key: str, version_id: str | None = None, *, max_bytes: int) -> SmallObject | None:
        self.small_reads.append((key, version_id))
        try:
            version = self._version(key, version_id)
        except KeyError:
            return None
        data = version.data if len(version.data) <= max_bytes else None
        return SmallObject(version.version_id, len(version.data), data)

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        return {name.lower(): value for name, value in self._version(key, version_id).metadata.items()}

    def put_json(self, key: str, document: Any, *, if_absent: bool = False) -> bool:
        body = json.dumps(document, indent=2, ensure_ascii=False).encode()
        return self.store(key, body, "application/json", if_absent=if_absent)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        for key in self.keys(prefix):
            for version in self._objects[key]:
                yield ObjectVersion(key, version.version_id, version.last_modified, len(version.data))

    def copy(
        self, source: SourceRange, key: str, content_type: str, *, whole: bool, if_absent: bool = False
    ) -> str | None:
        data = self._version(source.key, source.version_id).data if whole else self.read_range(source)
        return self.store_version(key, data, content_type, if_absent=if_absent)

    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> FakeWriter:
        return FakeWriter(self, key, content_type, if_absent=if_absent)


# --- the state table ---------------------------------------------------------------------

_Write = Callable[[], None]


class FakeStateStore:
    """The state table's items as records. Each move is built like the adapter's: the
    expected states go through check_shard_move/check_job_move (a move the machine does not
    have raises TransitionError before anything is written), then the state and the fences
    are compared; a transaction applies all of its writes or none."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.shard_items: dict[tuple[str, int], ShardRecord] = {}
        self.open_index: set[tuple[str, int | None]] = set()  # (job, None) for a job, (job, index) for a shard
        self.spent: dict[str, Decimal] = {}  # a UTC day's spend (domain/budget.py)
        self.day_jobs: dict[str, int] = {}
        self.batch_owners: dict[str, tuple[str, int]] = {}  # the PBATCH#<id> guard items
        self.lease: CreateLease | None = None
        self.progress_writes = 0  # note_progress calls that wrote

    # what tests use: items put as they are, in the open index as the adapter keeps it

    def put_job(self, job: JobRecord) -> None:
        self.jobs[job.job_id] = job
        self._index((job.job_id, None), job.status in (JobStatus.SUBMITTING, JobStatus.RUNNING))

    def put_shard(self, shard: ShardRecord) -> None:
        self.shard_items[(shard.job_id, shard.index)] = shard
        self._index((shard.job_id, shard.index), shard.state is ShardState.SUBMITTED)

    # building and applying writes

    def _shard_move(
        self,
        job_id: str,
        index: int,
        expected: ShardState | Iterable[ShardState],
        new: ShardState,
        *,
        fence: Mapping[str, Any] | None = None,
        changes: Mapping[str, Any] | None = None,
        add: str | None = None,
        open_index: bool | None = None,
    ) -> _Write | None:
        """The write moving a shard from `expected` to `new` with `changes` (a removed
        attribute is a change to None), or None when its condition does not hold."""
        states = check_shard_move(expected, new)
        shard = self.shard_items.get((job_id, index))
        if shard is None or shard.state not in states or not _fence_holds(shard, fence or {}):
            return None
        values = dict(changes or {})
        if add is not None:
            values[add] = getattr(shard, add) + 1

        def write() -> None:
            self.shard_items[(job_id, index)] = replace(shard, state=new, **values)
            self._index((job_id, index), open_index)

        return write

    def _job_move(
        self,
        job_id: str,
        expected: JobStatus | Iterable[JobStatus],
        new: JobStatus,
        changes: Mapping[str, Any] | None = None,
        *,
        open_index: bool | None = None,
    ) -> _Write | None:
        statuses = check_job_move(expected, new)
        job = self.jobs.get(job_id)
        if job is None or job.status not in statuses:
            return None

        def write() -> None:
            self.jobs[job_id] = replace(job, status=new, **(changes or {}))
            self._index((job_id, None), open_index)

        return write

    def _spend(self, spend: DaySpend, *, sent: bool) -> _Write | None:
        """The write adding `spend` to its day's spend, or None when it would cross its cap."""
        spent = self.spent.get(spend.day, Decimal(0))
        if spend.cap is not None and spent > spend.cap - spend.usd:
            return None

        def write() -> None:
            self.spent[spend.day] = self.spent.get(spend.day, Decimal(0)) + spend.usd
            self.day_jobs[spend.day] = self.day_jobs.get(spend.day, 0) + sent

        return write

    def spent_on(self, day: str) -> Decimal:
        return self.spent.get(day, Decimal(0))

    def _index(self, key: tuple[str, int | None], open_index: bool | None) -> None:
        if open_index is True:
            self.open_index.add(key)
        elif open_index is False:
            self.open_index.discard(key)

    @staticmethod
    def _apply(*writes: _Write | None) -> bool:
        """One conditional write, or a transaction: all of them, or none when one lost."""
        if any(write is None for write in writes):
            return False
        for write in writes:
            assert write is not None
            write()
        return True

    def _put_shard(self, job_id: str, shard: ShardPlan, max_attempts: int) -> _Write | None:
        """A new PENDING shard item, if absent."""
        if (job_id, shard.index) in self.shard_items:
            return None
        record = ShardRecord(
            job_id=job_id,
            index=shard.index,
            state=ShardState.PENDING,
            key=shard.key,
            requests=shard.requests,
            attempt_requests=shard.requests,
            size=shard.size,
            ids_digest=shard.ids_digest,
            attempt=1,
            creates_sent=0,
            max_attempts=max_attempts,
            version_id=shard.version_id,
        )
        return lambda: self.shard_items.__setitem__((job_id, shard.index), record)

    # jobs

    def create_job(self, job_id: str, source: SourceRef, created_at: str, pipeline: PipelineRef | None = None) -> bool:
        if job_id in self.jobs:
            return False
        self.jobs[job_id] = JobRecord(job_id, JobStatus.RECEIVED, source, created_at, pipeline=pipeline)
        return True

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def job_and_shards(self, job_id: str) -> tuple[JobRecord | None, list[ShardRecord]]:
        return self.jobs.get(job_id), self.shards(job_id)

    def shards(self, job_id: str) -> list[ShardRecord]:
        return [shard for (job, _), shard in sorted(self.shard_items.items()) if job == job_id]

    def get_jobs(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        return {job_id: self.jobs[job_id] for job_id in job_ids if job_id in self.jobs}

    def count_redrive(self, job_id: str, seen: int, at: str, *, lease: str | None = None) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status not in (JobStatus.RECEIVED, JobStatus.SUBMITTING) or job.redrives != seen:
            return False
        leased: dict[str, Any] = {"split_lease": lease} if lease is not None else {}
        self.jobs[job_id] = replace(job, redrives=seen + 1, redriven_at=at, **leased)
        return True

    def save_checkpoint(self, job_id: str, checkpoint: SplitCheckpoint, *, previous: int | None, lease: str) -> bool:
        if previous is not None and checkpoint.offset <= previous:
            raise ValueError(
                f"job {job_id}: a checkpoint moves forward only, not from {previous} to {checkpoint.offset}"
            )
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RECEIVED or not _checkpoint_at(job, previous):
            return False
        self.jobs[job_id] = replace(job, checkpoint=checkpoint, split_lease=lease, redrives=0, redrive_error=None)
        return True

    def note_redrive_error(self, job_id: str, error: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RECEIVED:
            return False
        self.jobs[job_id] = replace(job, redrive_error=error)
        return True

    def record_shards(
        self,
        job_id: str,
        shards: Sequence[ShardPlan],
        *,
        requested: int,
        rejected: int,
        max_attempts: int,
        shard_count: int | None = None,
        resumed_from: int | None = None,
        hold: bool = False,
        spend: DaySpend | None = None,
    ) -> bool:
        count = len(shards) if shard_count is None else shard_count
        values: dict[str, Any] = {"requested": requested, "rejected": rejected, "shard_count": count}
        if spend is not None:
            values |= {"spend_day": spend.day, "spend_usd": spend.usd}
        status = JobStatus.AWAITING_APPROVAL if hold else JobStatus.SUBMITTING
        job = self._job_move(job_id, JobStatus.RECEIVED, status, values, open_index=True)
        recorded = self.jobs.get(job_id)
        if recorded is None or not _checkpoint_at(recorded, resumed_from):
            job = None
        head = [job] if spend is None else [self._spend(spend, sent=True), job]
        if spend is not None and head[0] is None:
            raise DailyBudgetTaken()
        puts = [self._put_shard(job_id, shard, max_attempts) for shard in shards]
        # As the adapter: the job (and its day's spend) and 99 (98) shards in the first
        # transaction, 100 in each further one.
        first = 100 - len(head)
        if not self._apply(*head, *puts[:first]):
            return False
        return all(self._apply(*puts[start : start + 100]) for start in range(first, len(puts), 100))

    def add_missing_shard(self, job_id: str, shard: ShardPlan, max_attempts: int) -> bool:
        return self._apply(self._put_shard(job_id, shard, max_attempts))

    def fail_job(self, job_id: str, reason: str, *, requested: int, rejected: int, manifest_key: str) -> bool:
        values = {"reason": reason, "requested": requested, "rejected": rejected, "manifest_key": manifest_key}
        expected = (JobStatus.RECEIVED, JobStatus.SUBMITTING)
        return self._apply(self._job_move(job_id, expected, JobStatus.FAILED, values, open_index=False))

    def mark_job_running(self, job_id: str) -> bool:
        return self._apply(self._job_move(job_id, JobStatus.SUBMITTING, JobStatus.RUNNING))

    def release_job(self, job_id: str, spend: DaySpend | None = None) -> bool:
        if spend is None:
            return self._apply(self._job_move(job_id, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING))
        values = {"spend_day": spend.day, "spend_usd": spend.usd}
        move = self._job_move(job_id, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING, values)
        return self._apply(move, self._spend(spend, sent=True))

    def reopen_job(self, job_id: str) -> bool:
        return self._apply(self._job_move(job_id, JobStatus.RUNNING, JobStatus.SUBMITTING))

    def finish_job(
        self, job_id: str, status: JobStatus, manifest_key: str, completed_at: str, settle: DaySpend | None = None
    ) -> bool:
        final = (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.CANCELED)
        if status not in final:
            raise ValueError(f"a job finishes as one of {[str(s) for s in final]}, not {status}")
        values = {"manifest_key": manifest_key, "completed_at": completed_at}
        expected = (JobStatus.SUBMITTING, JobStatus.RUNNING)
        move = self._job_move(job_id, expected, status, values, open_index=False)
        return self._apply(move) if settle is None else self._apply(move, self._spend(settle, sent=False))

    def request_cancel(self, job_id: str, requested_at: str) -> JobRecord | None:
        job = self.jobs.get(job_id)
        if job is not None and job.status in OPEN_JOB_STATUSES and job.cancel_requested_at is None:
            job = self.jobs[job_id] = replace(job, cancel_requested_at=requested_at)
        return job

    # the create lease

    def acquire_create_lease(self, owner: str, now: str, until: str) -> bool:
        if self.lease is not None and self.lease.owner != owner:
            return False
        self.lease = CreateLease(owner, now, until)
        return True

    def get_create_lease(self) -> CreateLease | None:
        return self.lease

    def release_create_lease(self, owner: str) -> bool:
        if self.lease is None or self.lease.owner != owner:
            return False
        self.lease = None
        return True

    # shards

    def get_shard(self, job_id: str, index: int) -> ShardRecord | None:
        return self.shard_items.get((job_id, index))

    def open_work(self) -> OpenWork:
        jobs = sorted(job_id for job_id, index in self.open_index if index is None)
        batches = sorted((job_id, index) for job_id, index in self.open_index if index is not None)
        return OpenWork(jobs=[self.jobs[job_id] for job_id in jobs], batches=[self.shard_items[key] for key in batches])

    def owned_batches(self, batch_ids: Iterable[str]) -> set[str]:
        return {batch_id for batch_id in batch_ids if batch_id in self.batch_owners}

    def begin_submit(self, shard: ShardRecord, sent_at: str, lease_owner: str) -> bool:
        job_id = shard.job_id
        move = self._shard_move(
            job_id,
            shard.index,
            ShardState.PENDING,
            ShardState.SUBMITTING,
            fence={"attempt": shard.attempt, "key": shard.key},
            changes={"sent_at": sent_at, "lease_owner": lease_owner},
            add="creates_sent",
        )
        job = self.jobs.get(job_id)
        not_canceled = job is None or job.cancel_requested_at is None  # as attribute_not_exists on the job item
        lease_held = self.lease is not None and self.lease.owner == lease_owner
        return not_canceled and lease_held and self._apply(move)

    def mark_submitted(self, job_id: str, index: int, batch_id: str, sent_at: str) -> bool:
        return self._attach(job_id, index, batch_id, ShardState.SUBMITTING, sent_at)

    def adopt_batch(self, shard: ShardRecord, batch_id: str) -> bool:
        if shard.sent_at is None:
            raise ValueError(f"shard {shard.index} of {shard.job_id} has no intent to adopt a batch for")
        return self._attach(shard.job_id, shard.index, batch_id, UNSETTLED_SHARD_STATES, shard.sent_at)

    def _attach(
        self, job_id: str, index: int, batch_id: str, expected: ShardState | Iterable[ShardState], sent_at: str
    ) -> bool:
        shard = self._shard_move(
            job_id,
            index,
            expected,
            ShardState.SUBMITTED,
            fence={"sent_at": sent_at},
            changes={"batch_id": batch_id},
            open_index=True,
        )
        if batch_id in self.batch_owners:
            return False
        return self._apply(shard, lambda: self.batch_owners.__setitem__(batch_id, (job_id, index)))

    def resubmit_unsettled(self, shard: ShardRecord, reason: str) -> bool:
        return self._apply(
            self._shard_move(
                shard.job_id,
                shard.index,
                shard.state,
                ShardState.PENDING,
                fence={"sent_at": shard.sent_at},
                changes={"reason": reason},
            )
        )

    def mark_unknown(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        return self._end_intent(job_id, index, ShardState.UNKNOWN, reason, sent_at)

    def release_submit(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        return self._end_intent(job_id, index, ShardState.PENDING, reason, sent_at)

    def refuse(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        return self._end_intent(job_id, index, ShardState.REFUSED, reason, sent_at)

    def _end_intent(self, job_id: str, index: int, new: ShardState, reason: str, sent_at: str) -> bool:
        return self._apply(
            self._shard_move(
                job_id,
                index,
                ShardState.SUBMITTING,
                new,
                fence={"sent_at": sent_at},
                changes={"reason": reason, "overdue_at": None},
            )
        )

    def split_refused(
        self, shard: ShardRecord, shard_count: int, halves: Sequence[ShardPlan], entry: Mapping[str, Any]
    ) -> bool:
        changes = {
            "requests": shard.requests - shard.attempt_requests,
            "attempts_log": (*shard.attempts_log, dict(entry)),
        }
        update = self._shard_move(
            shard.job_id,
            shard.index,
            ShardState.REFUSED,
            ShardState.SPLIT,
            fence=_attempt_fence(shard),
            changes=changes,
            open_index=False,
        )
        job = self.jobs.get(shard.job_id)
        counted = job is not None and job.shard_count == shard_count
        changes = {"shard_count": shard_count + len(halves)}
        job_move = self._job_move(
            shard.job_id, (JobStatus.SUBMITTING, JobStatus.RUNNING), JobStatus.SUBMITTING, changes
        )
        max_attempts = max(shard.max_attempts - shard.attempt + 1, 1)
        puts = [self._put_shard(shard.job_id, half, max_attempts) for half in halves]
        return counted and self._apply(update, job_move, *puts)

    def cancel_unsent(self, shard: ShardRecord, reason: str) -> bool:
        return self._apply(
            self._shard_move(
                shard.job_id,
                shard.index,
                ShardState.PENDING,
                ShardState.CANCELING,
                fence={"attempt": shard.attempt, "key": shard.key},
                changes={"reason": reason, "overdue_at": None},
            )
        )

    def mark_collected(self, shard: ShardRecord, outcome: Outcome) -> bool:
        return self._apply(
            self._shard_move(
                shard.job_id,
                shard.index,
                shard.state,
                ShardState.COLLECTED,
                fence=_attempt_fence(shard),
                changes=_outcome_changes(outcome),
                open_index=False,
            )
        )

    def schedule_retry(self, shard: ShardRecord, outcome: Outcome, next_attempt: NextAttempt) -> bool:
        changes = {
            **_outcome_changes(outcome),
            "attempt": next_attempt.attempt,
            "key": next_attempt.key,
            "attempt_requests": next_attempt.requests,
            "size": next_attempt.size,
            "ids_digest": next_attempt.ids_digest,
            "version_id": next_attempt.version_id,
            "creates_sent": 0,
            "batch_id": None,
            "sent_at": None,
            "overdue_at": None,
            "progress": {},
            "expires_at": None,
        }
        update = self._shard_move(
            shard.job_id,
            shard.index,
            ShardState.SUBMITTED,
            ShardState.PENDING,
            fence=_attempt_fence(shard),
            changes=changes,
            open_index=False,
        )
        job = self._job_move(shard.job_id, (JobStatus.SUBMITTING, JobStatus.RUNNING), JobStatus.SUBMITTING)
        return self._apply(update, job)

    def flag_overdue(self, shard: ShardRecord, at: str) -> bool:
        current = self.shard_items.get((shard.job_id, shard.index))
        fenced = current is not None and current.state is ShardState.SUBMITTED
        if current is None or not fenced or shard.batch_id is None or current.batch_id != shard.batch_id:
            return False
        if current.overdue_at is None:
            self.shard_items[(shard.job_id, shard.index)] = replace(current, overdue_at=at)
        return True

    def note_progress(self, shard: ShardRecord, counts: Mapping[str, int], expires_at: str | None) -> bool:
        current = self.shard_items.get((shard.job_id, shard.index))
        if current is None or current.state is not ShardState.SUBMITTED or current.batch_id != shard.batch_id:
            return False
        self.progress_writes += 1
        changes: dict[str, Any] = {"progress": {name: int(n) for name, n in counts.items()}}
        if expires_at is not None:
            changes["expires_at"] = expires_at
        self.shard_items[(shard.job_id, shard.index)] = replace(current, **changes)
        return True


def _checkpoint_at(job: JobRecord, offset: int | None) -> bool:
    """Whether the job's split checkpoint is at `offset` (None: it has none)."""
    if job.checkpoint is None:
        return offset is None
    return job.checkpoint.offset == offset


def _fence_holds(shard: ShardRecord, fence: Mapping[str, Any]) -> bool:
    """As DynamoDB's `#f = :f`: an attribute the item lacks (None) never equals anything."""
    return all(value is not None and getattr(shard, name) == value for name, value in fence.items())


def _attempt_fence(shard: ShardRecord) -> dict[str, Any]:
    if shard.state is ShardState.SUBMITTED:
        return {"batch_id": shard.batch_id, "attempt": shard.attempt}
    return {"attempt": shard.attempt, "key": shard.key}


def _outcome_changes(outcome: Outcome) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "counts": dict(outcome.counts),
        "result_keys": tuple(outcome.result_keys),
        "attempts_log": tuple(dict(entry) for entry in outcome.attempts_log),
    }
    if outcome.usage is not None:
        changes["usage"] = {model: dict(figures) for model, figures in outcome.usage.items()}
    if outcome.ended_at is not None:
        changes["ended_at"] = outcome.ended_at
    return changes


# --- the Message Batches API -------------------------------------------------------------


def succeeded(custom_id: str, *, input_tokens: int = 10, output_tokens: int = 2) -> dict[str, Any]:
    """A `succeeded` result as the API gives it."""
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    message = {"id": f"msg_{custom_id}", "type": "message", "role": "assistant", "model": MODEL, "usage": usage}
    return {"type": "succeeded", "message": {**message, "content": [{"type": "text", "text": "OK"}]}}


def errored(kind: str) -> dict[str, Any]:
    """An `errored` result: api_error or overloaded_error are transient, invalid_request_error final."""
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": kind}}}


EXPIRED: dict[str, Any] = {"type": "expired"}
CANCELED: dict[str, Any] = {"type": "canceled"}


class FakeBatchesApi:
    """Batches made by creates, ended by the test. `fail_create` scripts the next creates'
    answers; every create body is read whole and its requests kept (`sent`)."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self.batches: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, list[str]] = {}  # custom_ids of each batch, as sent
        self.bodies: dict[str, list[bytes]] = {}  # request lines of each batch, as sent
        self.results: dict[str, list[bytes]] = {}  # result lines of each ended batch
        self.creates = 0  # creates received, whatever came of them
        self.canceled: list[str] = []  # cancel calls, in order
        self.listing_complete = True  # whether list_recent reaches back past not_before
        self._script: deque[tuple[Exception, bool]] = deque()
        self.poison: str | None = None  # a create holding a line with this text is refused (400)
        self.counted: list[Mapping[str, Any]] = []  # count_tokens bodies, in order
        self.warmed_on: list[str] = []  # the threads warm() ran on
        self.count_error: Exception | None = None  # every count_tokens raises it when set
        self.primed: list[Mapping[str, Any]] = []  # prime calls' params, in order
        self.prime_error: Exception | None = None  # every prime raises it when set

    # what tests use

    def fail_create(self, error: ProviderRejectedError | ProviderOutcomeUnknownError, *, made: bool = False) -> None:
        """The next create raises `error`; with `made`, after making its batch (a lost answer)."""
        self._script.append((error, made))

    def make(self, lines: Sequence[bytes]) -> dict[str, Any]:
        """A new open batch of these request lines."""
        batch_id = f"msgbatch_{next(self._ids):04d}"
        now = self._clock.now()
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": len(lines), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": stamp(now),
            "expires_at": stamp(now + timedelta(hours=24)),
            "ended_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        self.bodies[batch_id] = list(lines)
        self.requests[batch_id] = [str(json.loads(line)["custom_id"]) for line in lines]
        return dict(self.batches[batch_id])

    def end(
        self, batch_id: str, results: Mapping[str, dict[str, Any]] | None = None, *, lines: list[bytes] | None = None
    ) -> None:
        """End a batch: each request's result from `results` (default: succeeded, or canceled
        once a cancel was asked for), or exactly the raw result `lines` given."""
        batch = self.batches[batch_id]
        if lines is None:
            given = results or {}
            canceling = batch["cancel_initiated_at"] is not None
            lines = [
                json.dumps(
                    {"custom_id": cid, "result": given.get(cid) or (CANCELED if canceling else succeeded(cid))}
                ).encode()
                for cid in self.requests[batch_id]
            ]
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for line in lines:
            counts[json.loads(line)["result"]["type"]] += 1
        batch.update(
            processing_status="ended",
            request_counts=counts,
            ended_at=stamp(self._clock.now()),
            results_url=f"https://api.example/v1/messages/batches/{batch_id}/results",
        )
        self.results[batch_id] = lines

    # the BatchesApi port

    def warm(self) -> None:
        """Noted, with the thread it ran on."""
        self.warmed_on.append(threading.current_thread().name)

    def count_tokens(self, body: Mapping[str, Any]) -> int:
        """As the emulator counts: a token per 4 characters of the body's JSON, at least 1."""
        self.counted.append(body)
        if self.count_error is not None:
            raise self.count_error
        return max(1, len(json.dumps(body, separators=(",", ":"))) // 4)

    def prime(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """As a first synchronous request with a cached prefix: its tokens (a token per 4
        characters, as count_tokens here) written to the cache for 5 minutes, one output token."""
        self.primed.append(params)
        if self.prime_error is not None:
            raise self.prime_error
        written = max(1, len(json.dumps(params, separators=(",", ":"))) // 4)
        return {
            "input_tokens": 0,
            "output_tokens": 1,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        }

    def create(self, body: Iterable[bytes], size: int, timeout: float) -> dict[str, Any]:
        data = b"".join(body)
        self.creates += 1
        if len(data) != size:
            raise AssertionError(f"a create body of {len(data)} bytes sent as {size}")
        # The request lines exactly as sent (a line never holds a raw newline); the body must parse.
        lines = data[len(ENVELOPE_OPEN) : -len(ENVELOPE_CLOSE)].split(SEPARATOR)
        if len(json.loads(data)["requests"]) != len(lines):
            raise AssertionError("a create body whose lines are not its requests")
        poisoned = [i for i, line in enumerate(lines) if self.poison is not None and self.poison.encode() in line]
        if poisoned:
            # As the API refuses a body holding a value it cannot read, naming the request.
            raise ProviderRejectedError(400, f"requests.{poisoned[0]}.params: integer overflow")
        if self._script:
            error, made = self._script.popleft()
            if made:
                self.make(lines)
            raise error
        return self.make(lines)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        if batch_id not in self.batches:
            raise ProviderUnavailableError(f"retrieve {batch_id}: NotFoundError")
        return dict(self.batches[batch_id])

    def _newest_first(self, not_before: datetime | None) -> list[dict[str, Any]]:
        listed = [
            dict(batch)
            for batch in self.batches.values()
            if not_before is None or parse_stamp(batch["created_at"]) >= not_before
        ]
        return sorted(listed, key=lambda batch: (batch["created_at"], batch["id"]), reverse=True)

    def list_recent(self, not_before: datetime) -> RecentBatches:
        return RecentBatches(self._newest_first(not_before), complete=self.listing_complete)

    def find_recent(
        self, ids: Collection[str], not_before: datetime | None, max_calls: int
    ) -> dict[str, dict[str, Any]]:
        return {batch["id"]: batch for batch in self._newest_first(not_before) if batch["id"] in ids}

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        self.canceled.append(batch_id)
        batch = self.batches.get(batch_id)
        if batch is None or batch["processing_status"] == "ended":
            return None  # the API refuses to cancel an ended batch
        if batch["cancel_initiated_at"] is None:
            batch.update(processing_status="canceling", cancel_initiated_at=stamp(self._clock.now()))
        return dict(batch)

    def result_lines(self, batch: Mapping[str, Any]) -> Iterator[bytes]:
        if not batch.get("results_url"):
            raise ProviderUnavailableError(f"batch {batch['id']} has no results_url yet")
        yield from self.results[batch["id"]]


# --- the event bus -----------------------------------------------------------------------


@dataclass
class FakeEventBus:
    sent: list[JobEvent] = field(default_factory=list)  # every event, in the order sent

    def publish(self, event: JobEvent) -> None:
        self.sent.append(JobEvent(event.detail_type, dict(event.detail)))

    def of(self, *detail_types: str) -> list[dict[str, Any]]:
        """The details of the events of these detail-types, in the order sent."""
        return [event.detail for event in self.sent if event.detail_type in detail_types]

    @property
    def published(self) -> list[dict[str, Any]]:
        """The events that say a job ended: Completed, Failed or Canceled."""
        return self.of(*job_events.ENDED)

    def ends(self) -> list[tuple[str, str, str]]:
        """(detail-type, job id, status) of each job-ended event, in the order sent."""
        ended = [event for event in self.sent if event.detail_type in job_events.ENDED]
        return [(event.detail_type, event.detail["job_id"], event.detail["status"]) for event in ended]

    @property
    def awaiting(self) -> list[dict[str, Any]]:  # jobs held for approval
        return self.of(job_events.AWAITING_APPROVAL)


# --- all of them -------------------------------------------------------------------------


def request(custom_id: str, text: str = "Hello") -> bytes:
    """One valid input line (no newline)."""
    params = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": custom_id, "params": params}).encode()


class Fakes:
    """One fake of each port, sharing one clock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = FakeObjectStore("bucket", self.clock)
        self.state = FakeStateStore()
        self.batches = FakeBatchesApi(self.clock)
        self.events = FakeEventBus()

    def wiring(self, **settings: Any) -> Wiring:
        """A Wiring of the fakes; `settings`: timings, limits, max_attempts..."""
        return Wiring(self.store, self.state, self.batches, self.events, clock=self.clock, **settings)

    def upload(self, key: str, lines: Iterable[bytes]) -> SourceRef:
        """Upload one file of these lines; the object version a job is made from."""
        version_id = self.store.put(key, b"".join(line + b"\n" for line in lines))
        return SourceRef(self.store.bucket, key, version_id)
