"""What the state table holds, as typed values: a job, its shards, the create lease. Only
the state table adapter turns them into DynamoDB items and back; services read these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchdrop.domain.states import JobStatus, ShardState


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The object version a job is made from: its identity."""

    bucket: str
    key: str
    version_id: str

    def as_dict(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "version_id": self.version_id}


@dataclass(frozen=True, slots=True)
class PipelineRef:
    """The pipeline a records-mode job renders its records through: one version of an object
    under pipelines/, fixed when the job is created, so a pipeline changed mid-job never
    changes that job."""

    key: str
    version_id: str

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "version_id": self.version_id}


def is_folder_marker(key: str, size: int | None) -> bool:
    """An empty object whose key ends in "/": what the S3 console's "Create folder" makes.
    It names a folder, not a file of requests, and starts no job."""
    return key.endswith("/") and size == 0


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    status: JobStatus
    source: SourceRef
    created_at: str
    requested: int = 0  # valid requests read from the file
    rejected: int = 0  # lines refused, written to errors/
    shard_count: int = 0  # shards recorded for it (0 until they are)
    cancel_requested_at: str | None = None
    manifest_key: str | None = None
    completed_at: str | None = None
    reason: str | None = None  # why it FAILED
    # Re-drives of a job left RECEIVED (services/sweeper.py): how many were counted, when
    # the last was, and the error the last one raised (None: none raised, or its process died).
    redrives: int = 0
    redriven_at: str | None = None
    redrive_error: str | None = None
    pipeline: PipelineRef | None = None  # records mode's pipeline; None: native mode
    # A split that continues across invocations (services/segments.py): where the next
    # segment starts, and the deadline of the last invocation that ran or claimed one.
    checkpoint: SplitCheckpoint | None = None
    split_lease: str | None = None
    # The UTC day whose spend the job counts in, and what it added there as it was sent (its
    # upper-bound estimate), swapped for its actual cost as it finishes (domain/budget.py).
    spend_day: str | None = None
    spend_usd: Decimal | None = None

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None


@dataclass(frozen=True, slots=True)
class SplitCheckpoint:
    """Where a split that ran short of time stopped, at a shard boundary: everything before
    `offset` is split, its shards recorded, and the next segment starts there. Written on
    the job item only if the previous checkpoint is still the one read, so it only moves
    forward and a duplicate run of a segment can neither go back nor count twice."""

    offset: int  # bytes of the source (inflated, for a gzip) before the next shard's first line
    line: int  # lines read before it: the next segment's first line is line + 1
    requested: int  # valid lines so far
    rejected: int  # rejected lines so far, all in the version below
    next_shard: int  # the index of the next shard
    compressed: bool  # a gzip: read from the start, the bytes before `offset` skipped unchecked
    ids_keys: tuple[str, ...] = ()  # per finished segment: the custom_ids it saw first, with their line
    rejected_version: str | None = None  # the version of errors/<job_id>/rejected.jsonl holding them
    rejected_bytes: int = 0  # its size


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """A shard as the split made it, before it is recorded."""

    index: int
    key: str  # its requests, one per line, in work/
    requests: int
    size: int  # bytes of its create body
    ids_digest: str = ""  # IdsDigest of its custom_ids
    version_id: str | None = None  # the version of `key` the split wrote: the one sent


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """One shard and the batch that carries its current attempt.

    A shard's requests go out in attempt 1; those whose outcome was transient (errored on the
    provider's side, expired) go out again in attempt 2, and so on up to `max_attempts`.
    Each attempt has its own body in work/ (`key`), request count and digest, and may take
    more than one create (`creates_sent`) when a create's outcome was unknown and no batch
    was found for it."""

    job_id: str
    index: int
    state: ShardState
    key: str  # the current attempt's body in work/
    requests: int  # of the whole shard, whatever the attempt
    attempt_requests: int  # of the current attempt's batch
    size: int  # bytes of the current attempt's create body
    ids_digest: str  # of the current attempt's custom_ids
    attempt: int  # 1, then 2.. for the retries of transient failures
    creates_sent: int  # creates sent for the current attempt
    max_attempts: int  # fixed per shard, so re-running a collection decides alike
    batch_id: str | None = None
    sent_at: str | None = None  # when the current intent was recorded
    lease_owner: str | None = None  # the create lease holder that recorded the intent
    reason: str | None = None  # why it last moved back, or was refused
    overdue_at: str | None = None  # its batch ran past expiry and we canceled it
    counts: Mapping[str, int] = field(default_factory=dict)  # final outcomes so far
    usage: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # by model
    result_keys: tuple[str, ...] = ()
    attempts_log: tuple[Mapping[str, Any], ...] = ()  # one entry per attempt ended
    ended_at: str | None = None
    # The open batch's request_counts (processing, succeeded, errored, canceled, expired) and
    # expires_at as the checker last saw them, for clients to show progress; not a state move.
    progress: Mapping[str, int] = field(default_factory=dict)
    expires_at: str | None = None
    # The version of `key` written for the current attempt: every create reads that version,
    # so a body replaced in work/ afterwards is never sent. None on items recorded before
    # versions were kept: the current version is read.
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a shard's attempt ended with, as recorded with its move."""

    counts: Mapping[str, int]
    result_keys: tuple[str, ...]
    attempts_log: tuple[Mapping[str, Any], ...]
    usage: Mapping[str, Mapping[str, int]] | None = None
    ended_at: str | None = None


@dataclass(frozen=True, slots=True)
class NextAttempt:
    """The body of a shard's next attempt: the requests whose outcome was transient."""

    attempt: int
    key: str
    requests: int
    size: int
    ids_digest: str
    version_id: str | None = None  # the version of `key` written for it


@dataclass(frozen=True, slots=True)
class CreateLease:
    """The workspace's one create lease: at most one create is unresolved at a time."""

    owner: str  # "<job_id>#<index>#<unique>": the shard whose create holds it
    taken_at: str
    until: str  # informative: the longest the create can take, plus a margin

    @property
    def shard(self) -> tuple[str, int] | None:
        """The job and index of the shard whose create holds the lease, if readable."""
        job_id, _, rest = self.owner.partition("#")
        index = rest.partition("#")[0]
        return (job_id, int(index)) if index.isdigit() else None


def lease_owner(job_id: str, index: int, unique: str) -> str:
    return f"{job_id}#{index}#{unique}"


@dataclass(frozen=True, slots=True)
class OpenWork:
    """What the checker has to do: unfinished jobs, and shards whose batch is open."""

    jobs: list[JobRecord]
    batches: list[ShardRecord]
