"""What the services need from the outside world, as small Protocols the adapters satisfy
(and the unit tests' in-memory fakes), and the one wiring value every service is built from."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, Self

from batchdrop.domain.budget import DaySpend
from batchdrop.domain.job_events import JobEvent
from batchdrop.domain.lines import MAX_FILE_BYTES, SourceLines
from batchdrop.domain.prices import PriceTable
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
from batchdrop.domain.shards import ShardLimits
from batchdrop.domain.states import JobStatus
from batchdrop.domain.timings import Timings, stamp

# A file of this size or more, up to one shard's, is copied by S3 while it is read: below
# it, the copy at the end takes no time worth saving. (8 MiB: one multipart part.)
EARLY_COPY_BYTES = 8 * 1024 * 1024
# How much of an object a stream reads at once.
READ_BYTES = 1024 * 1024


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall clock, in UTC."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --- objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRange:
    """Bytes [start, end) of one object version in `bucket` (0, 0: the whole version)."""

    bucket: str
    key: str
    version_id: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str | None
    last_modified: datetime
    size: int | None = None


@dataclass(frozen=True)
class SmallObject:
    """One object version read whole in one GET (records mode's pipelines): its version id,
    its size, and its bytes, or None when it is over the size the reader asked for (unread)."""

    version_id: str
    size: int
    data: bytes | None


class Body(Protocol):
    """An object's open body."""

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Writer(Protocol):
    """One object written as a stream; `close` completes it (False: written if absent, and
    another writer got there first), `abort` drops it. `version_id` is the version it wrote
    (S3's "null" in a bucket without versioning), None until then."""

    key: str
    size: int
    created: bool
    version_id: str | None

    def write(self, data: bytes) -> None: ...

    def copy_from(self, source: SourceRange) -> None: ...

    def close(self) -> bool: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: object, *rest: object) -> None: ...


class ObjectStore(Protocol):
    bucket: str

    def lines(self, key: str, version_id: str | None = None, *, start: int = 0) -> SourceLines:
        """The object's lines; from byte `start` on (a ranged GET, read as plain text), if not 0."""
        ...

    def open(self, key: str, version_id: str | None = None) -> tuple[int, Body]: ...

    def version_of(self, key: str) -> str: ...

    def read_small(self, key: str, version_id: str | None = None, *, max_bytes: int) -> SmallObject | None:
        """An object version (the current one without `version_id`) read whole, with the
        version read; None when there is no such object or version."""
        ...

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """An object version's user metadata (`x-amz-meta-*`, names lower-cased, without the prefix)."""
        ...

    def put_json(self, key: str, document: Any, *, if_absent: bool = False) -> bool: ...

    def get_json(self, key: str) -> Any: ...

    def versions(self, prefix: str) -> Iterator[ObjectVersion]: ...

    def copy(
        self, source: SourceRange, key: str, content_type: str, *, whole: bool, if_absent: bool = False
    ) -> str | None: ...

    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> Writer: ...


# --- the state table -------------------------------------------------------------------


class StateStore(Protocol):
    def create_job(
        self, job_id: str, source: SourceRef, created_at: str, pipeline: PipelineRef | None = None
    ) -> bool: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def job_and_shards(self, job_id: str) -> tuple[JobRecord | None, list[ShardRecord]]: ...

    def shards(self, job_id: str) -> list[ShardRecord]: ...

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
    ) -> bool: ...

    def add_missing_shard(self, job_id: str, shard: ShardPlan, max_attempts: int) -> bool: ...

    def fail_job(self, job_id: str, reason: str, *, requested: int, rejected: int, manifest_key: str) -> bool: ...

    def mark_job_running(self, job_id: str) -> bool: ...

    def release_job(self, job_id: str, spend: DaySpend | None = None) -> bool: ...

    def reopen_job(self, job_id: str) -> bool: ...

    def finish_job(
        self, job_id: str, status: JobStatus, manifest_key: str, completed_at: str, settle: DaySpend | None = None
    ) -> bool: ...

    def spent_on(self, day: str) -> Decimal: ...

    def request_cancel(self, job_id: str, requested_at: str) -> JobRecord | None: ...

    def acquire_create_lease(self, owner: str, now: str, until: str) -> bool: ...

    def get_create_lease(self) -> CreateLease | None: ...

    def release_create_lease(self, owner: str) -> bool: ...

    def get_shard(self, job_id: str, index: int) -> ShardRecord | None: ...

    def open_work(self) -> OpenWork: ...

    def owned_batches(self, batch_ids: Iterable[str]) -> set[str]: ...

    def begin_submit(self, shard: ShardRecord, sent_at: str, lease_owner: str) -> bool: ...

    def mark_submitted(self, job_id: str, index: int, batch_id: str, sent_at: str) -> bool: ...

    def adopt_batch(self, shard: ShardRecord, batch_id: str) -> bool: ...

    def resubmit_unsettled(self, shard: ShardRecord, reason: str) -> bool: ...

    def mark_unknown(self, job_id: str, index: int, reason: str, sent_at: str) -> bool: ...

    def release_submit(self, job_id: str, index: int, reason: str, sent_at: str) -> bool: ...

    def refuse(self, job_id: str, index: int, reason: str, sent_at: str) -> bool: ...

    def split_refused(
        self, shard: ShardRecord, shard_count: int, halves: Sequence[ShardPlan], entry: Mapping[str, Any]
    ) -> bool: ...

    def cancel_unsent(self, shard: ShardRecord, reason: str) -> bool: ...

    def mark_collected(self, shard: ShardRecord, outcome: Outcome) -> bool: ...

    def schedule_retry(self, shard: ShardRecord, outcome: Outcome, next_attempt: NextAttempt) -> bool: ...

    def flag_overdue(self, shard: ShardRecord, at: str) -> bool: ...

    def note_progress(self, shard: ShardRecord, counts: Mapping[str, int], expires_at: str | None) -> bool: ...

    # jobs left RECEIVED, for the sweeper's re-drive

    def get_jobs(self, job_ids: Iterable[str]) -> dict[str, JobRecord]: ...

    def count_redrive(self, job_id: str, seen: int, at: str, *, lease: str | None = None) -> bool: ...

    def note_redrive_error(self, job_id: str, error: str) -> bool: ...

    # a split that continues across invocations (services/segments.py)

    def save_checkpoint(self, job_id: str, checkpoint: SplitCheckpoint, *, previous: int | None, lease: str) -> bool:
        """The job's split checkpoint, if the job is still RECEIVED and its checkpoint is still
        at offset `previous` (None: it has none); the job's re-drive count starts over."""
        ...


# --- the Message Batches API and the event bus -----------------------------------------


@dataclass(frozen=True)
class RecentBatches:
    batches: list[dict[str, Any]]
    complete: bool  # True when the listing reached back past `not_before` (or the oldest batch)


class BatchesApi(Protocol):
    def create(self, body: Iterable[bytes], size: int, timeout: float) -> dict[str, Any]:
        """Send one create body; the new batch. Raises ProviderRejectedError (no batch was
        created) or ProviderOutcomeUnknownError (a batch may exist)."""
        ...

    def count_tokens(self, body: Mapping[str, Any]) -> int:
        """The input tokens count_tokens gives for one request's countable fields."""
        ...

    def warm(self) -> None:
        """Make ready now what the first call needs (the client and its key), so that call
        does not wait for it. Never raises: a failure is left for that call to meet."""
        ...

    def prime(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request's `params` synchronously (the Messages API, standard price) so that
        its cached prefixes are written before a batch reads them; its `usage`. Raises
        ProviderUnavailableError when no answer came, ApiKeyRefusedError on a refused key."""
        ...

    def retrieve(self, batch_id: str) -> dict[str, Any]: ...

    def list_recent(self, not_before: datetime) -> RecentBatches: ...

    def find_recent(
        self, ids: Collection[str], not_before: datetime | None, max_calls: int
    ) -> dict[str, dict[str, Any]]: ...

    def cancel(self, batch_id: str) -> dict[str, Any] | None: ...

    def result_lines(self, batch: Mapping[str, Any]) -> Iterator[bytes]: ...


class EventBus(Protocol):
    def publish(self, event: JobEvent) -> None:
        """Put one job event (domain/job_events.py) on the stack's bus; raises if not taken."""
        ...


# --- the wiring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Wiring:
    """What every service is built from: the outside world and the pipeline's settings."""

    store: ObjectStore
    state: StateStore
    batches: BatchesApi
    events: EventBus
    clock: Clock = field(default_factory=SystemClock)
    timings: Timings = field(default_factory=Timings)
    limits: ShardLimits = field(default_factory=ShardLimits)
    max_attempts: int = 3
    early_copy_bytes: int = EARLY_COPY_BYTES
    max_file_bytes: int = MAX_FILE_BYTES  # a larger file is refused unread
    # The price table costs are figured with: the shipped one (None) or it with BATCHDROP_PRICES_JSON.
    prices: PriceTable | None = None
    # A job whose upper-bound estimate is over this waits for approval (None: no budget), for
    # at most approval_hours (domain/budget.py).
    job_budget_usd: Decimal | None = None
    approval_hours: float = 72.0
    # A job whose upper-bound estimate would take its UTC day's spend over this waits for
    # approval too (None: no daily budget).
    daily_budget_usd: Decimal | None = None
    # Whether a job warms the prompt cache before its first batch when neither its upload's
    # metadata nor its pipeline says (services/priming.py; the stack parameter PrimeCache).
    prime_cache: bool = False

    def stamp(self) -> str:
        """Now, as the state table stores moments."""
        return stamp(self.clock.now())
