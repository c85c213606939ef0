"""What batchdrop says on its EventBridge bus about a job: one event for each state change a
consumer may act on (received, submitted, awaiting approval, completed, failed, canceled).

Every detail is built here, from the job and its manifest, so the six share one layout
(docs/events.md) and the services only say when one goes out. Each detail carries the same
fields, null where the job has no such thing yet (no manifest before the job ends, no cost
before it is estimated); an awaiting-approval detail adds why it waits (budget.json's fields),
a failed one its reason. `schema_version` changes only when a field changes meaning or goes
away; fields may be added without it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchdrop.domain.jobs import manifest_key, report_key
from batchdrop.domain.manifest import cost_summary
from batchdrop.domain.records import JobRecord, SourceRef
from batchdrop.domain.states import JobStatus

SOURCE = "batchdrop"
SCHEMA_VERSION = 1

RECEIVED = "Batchdrop Job Received"
SUBMITTED = "Batchdrop Job Submitted"
AWAITING_APPROVAL = "Batchdrop Job Awaiting Approval"
COMPLETED = "Batchdrop Job Completed"
FAILED = "Batchdrop Job Failed"
CANCELED = "Batchdrop Job Canceled"
ENDED = (COMPLETED, FAILED, CANCELED)  # one of these, once per job, when it is closed
DETAIL_TYPES = (RECEIVED, SUBMITTED, AWAITING_APPROVAL, *ENDED)

_ENDED_AS = {
    JobStatus.COMPLETED: COMPLETED,
    JobStatus.COMPLETED_WITH_ERRORS: COMPLETED,
    JobStatus.FAILED: FAILED,
    JobStatus.CANCELED: CANCELED,
}


@dataclass(frozen=True)
class JobEvent:
    """One event for the bus: its detail-type and its JSON-ready detail."""

    detail_type: str
    detail: dict[str, Any]


def received(job_id: str, source: SourceRef) -> JobEvent:
    """A new job for an uploaded file: nothing of it read yet."""
    return JobEvent(RECEIVED, _detail(job_id, source.bucket, source.key, JobStatus.RECEIVED))


def submitted(job: JobRecord, estimate: Mapping[str, Any] | None) -> JobEvent:
    """Every shard of the job has its batch: the job is RUNNING. `estimate`: its
    estimate.json, if one was made (the cost it gives is the estimate's)."""
    counts = _read_counts(job.requested, job.rejected)
    detail = _detail(
        job.job_id, job.source.bucket, job.source.key, JobStatus.RUNNING, counts=counts, cost=_estimated(estimate)
    )
    return JobEvent(SUBMITTED, detail)


def awaiting_approval(
    job_id: str,
    source: SourceRef,
    requested: int,
    rejected: int,
    estimate: Mapping[str, Any] | None,
    held: Mapping[str, Any],
) -> JobEvent:
    """The job is over its budget and sends nothing until approved. `requested`, `rejected`:
    what its split found; `estimate`: its estimate.json, if made; `held`: its budget.json
    (domain/budget.py), whose fields the detail carries beside the common ones."""
    counts = _read_counts(requested, rejected)
    status = JobStatus.AWAITING_APPROVAL
    common = _detail(job_id, source.bucket, source.key, status, counts=counts, cost=_estimated(estimate))
    why = {name: value for name, value in held.items() if name not in common}
    return JobEvent(AWAITING_APPROVAL, {**common, **why})


def ended(manifest: Mapping[str, Any], *, with_report: bool = True) -> JobEvent:
    """The job is closed, as its manifest says: Completed (COMPLETED or COMPLETED_WITH_ERRORS),
    Failed or Canceled. `with_report`: the checker wrote its report (a file refused at intake
    has none)."""
    job_id, status = str(manifest["job_id"]), JobStatus(manifest["status"])
    source = manifest["source"]
    detail = _detail(
        job_id,
        source["bucket"],
        source["key"],
        status,
        counts=dict(manifest["counts"]),
        cost=cost_summary(manifest),
        manifest_key=manifest_key(job_id),
        outputs=dict(manifest["outputs"]) if manifest.get("outputs") else None,
        report_key=report_key(job_id) if with_report else None,
    )
    detail_type = _ENDED_AS[status]
    if detail_type == FAILED:
        detail["reason"] = manifest.get("reason")
    return JobEvent(detail_type, detail)


def _detail(
    job_id: str,
    bucket: str,
    source_key: str,
    status: JobStatus,
    *,
    counts: Mapping[str, int] | None = None,
    cost: Mapping[str, str] | None = None,
    manifest_key: str | None = None,
    outputs: Mapping[str, str] | None = None,
    report_key: str | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id,
        "bucket": bucket,
        "source_key": source_key,
        "status": str(status),
        "counts": None if counts is None else dict(counts),
        "cost": None if cost is None else dict(cost),
        "manifest_key": manifest_key,
        "outputs": None if outputs is None else dict(outputs),
        "report_key": report_key,
    }


def _read_counts(requested: int, rejected: int) -> dict[str, int]:
    """What the split found, under the names the manifest's counts use."""
    return {"requests": int(requested), "rejected": int(rejected)}


def _estimated(estimate: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The estimate's expected and highest cost, under the names the ended events use."""
    figures = cost_summary({"estimate": estimate}) if estimate is not None else {}
    return figures or None
