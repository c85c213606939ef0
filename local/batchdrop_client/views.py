"""What the client shows of a job: typed views built from the state table's records and the
manifest. `JobView.as_dict()` is `batchdrop status --json`'s documented schema (docs/local.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchdrop.domain.records import JobRecord, ShardRecord

STATUS_SCHEMA = 1
FINAL = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"})
SUCCEEDED = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS"})
OUTCOMES = ("succeeded", "errored", "canceled", "expired")
PROGRESS_COUNTS = ("processing", *OUTCOMES)
_OPEN = "SUBMITTED"  # a shard whose batch is open
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Progress:
    """How far a job has come, for a progress line: `done` counts the requests with a final
    outcome plus those the open batches have processed; `total` is None until the file is read."""

    status: str
    done: int
    total: int | None
    batches_open: int
    expires_at: datetime | None  # the nearest expiry of an open batch
    elapsed: float  # seconds since the wait began


@dataclass(frozen=True)
class BatchView:
    shard: int
    state: str
    batch_id: str | None
    attempt: int
    requests: int
    counts: Mapping[str, int]
    progress: Mapping[str, int] | None  # the open batch's request_counts as last seen; None when not open
    expires_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "state": self.state,
            "batch_id": self.batch_id,
            "attempt": self.attempt,
            "requests": self.requests,
            "counts": dict(self.counts),
            "progress": None if self.progress is None else dict(self.progress),
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class JobView:
    job_id: str
    status: str
    source: Mapping[str, str]  # bucket, key, version_id
    total: int | None
    done: int
    rejected: int | None
    counts: Mapping[str, int]
    created_at: str
    completed_at: str | None
    reason: str | None
    manifest_key: str | None
    result_keys: Sequence[str]
    cost: Mapping[str, str] | None
    batches: Sequence[BatchView] | None = None  # None: not read (a listing)
    in_flight: int = 0  # requests the open batches have processed, not yet collected
    batches_open: int = 0
    expires_at: str | None = None  # the nearest expiry of an open batch
    manifest: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED

    def progress(self, elapsed: float = 0.0) -> Progress:
        expires = parse_time(self.expires_at) if self.expires_at else None
        return Progress(self.status, self.done + self.in_flight, self.total, self.batches_open, expires, elapsed)

    def as_dict(self) -> dict[str, Any]:
        """The `status --json` object: schema 1's keys, and `progress` (added in the same schema)."""
        view: dict[str, Any] = {
            "schema": STATUS_SCHEMA,
            "job_id": self.job_id,
            "status": self.status,
            "source": dict(self.source),
            "requests": {"total": self.total, "done": self.done, "rejected": self.rejected},
            "counts": dict(self.counts),
            "timings": {"created_at": self.created_at, "completed_at": self.completed_at},
            "reason": self.reason,
            "manifest_key": self.manifest_key,
            "result_keys": list(self.result_keys),
            "cost": None if self.cost is None else dict(self.cost),
            "progress": {
                "in_flight": self.in_flight,
                "batches_open": self.batches_open,
                "expires_at": self.expires_at,
            },
        }
        if self.batches is not None:
            view["batches"] = [batch.as_dict() for batch in self.batches]
        return view


def batch_view(shard: ShardRecord) -> BatchView:
    is_open = str(shard.state) == _OPEN
    return BatchView(
        shard=shard.index,
        state=str(shard.state),
        batch_id=shard.batch_id,
        attempt=shard.attempt,
        requests=shard.requests,
        counts={name: int(shard.counts.get(name, 0)) for name in OUTCOMES},
        progress={name: int(shard.progress.get(name, 0)) for name in PROGRESS_COUNTS}
        if is_open and shard.progress
        else None,
        expires_at=shard.expires_at if is_open else None,
    )


def job_view(
    job: JobRecord,
    shards: Sequence[ShardRecord],
    manifest: Mapping[str, Any] | None,
    *,
    with_batches: bool = False,
) -> JobView:
    """One job: a finished job's counts, result parts and cost from its manifest, an open job's
    from its shards so far (with what its open batches have processed)."""
    if manifest is not None:
        counts = {name: int(manifest["counts"].get(name, 0)) for name in OUTCOMES}
        result_keys = list(manifest.get("results") or [])
        from batchdrop.domain.manifest import cost_summary  # the figures the completion event carries

        cost = cost_summary(manifest)
    else:
        counts = {name: sum(int(shard.counts.get(name, 0)) for shard in shards) for name in OUTCOMES}
        result_keys = [key for shard in shards for key in shard.result_keys]
        cost = None
    batches = [batch_view(shard) for shard in shards]
    open_batches = [batch for batch in batches if batch.state == _OPEN]
    in_flight = sum(sum(batch.progress.get(name, 0) for name in OUTCOMES) for batch in open_batches if batch.progress)
    expiries = sorted(batch.expires_at for batch in open_batches if batch.expires_at)
    read = str(job.status) != "RECEIVED"  # until its lines are read, a job's totals are not known
    return JobView(
        job_id=job.job_id,
        status=str(job.status),
        source=job.source.as_dict(),
        total=job.requested if read else None,
        done=sum(counts.values()),
        rejected=job.rejected if read else None,
        counts=counts,
        created_at=job.created_at,
        completed_at=job.completed_at,
        reason=job.reason,
        manifest_key=job.manifest_key,
        result_keys=result_keys,
        cost=cost,
        batches=batches if with_batches else None,
        in_flight=0 if manifest is not None else in_flight,
        batches_open=len(open_batches),
        expires_at=min(expiries, key=parse_time) if expiries else None,
        manifest=manifest,
    )


def parse_time(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_since(text: str, now: datetime) -> datetime:
    """The moment `--since` names: a duration back from `now` (`90s`, `30m`, `2h`, `3d`, `1w`) or
    an ISO date or time (UTC unless it carries an offset). ValueError on anything else."""
    text = text.strip()
    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS and number.isdigit():
        return now - timedelta(seconds=int(number) * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "give a duration (30m, 2h, 3d, 1w) or an ISO date or time (2026-12-01, 2026-12-01T09:30Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
