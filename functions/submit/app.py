"""SubmitFunction: an object created under inbox/ becomes a job and its batches; one created
at cancel/<job_id> cancels that job, and one at approve/<job_id> sends a job that waits over
its budget; the sweeper's schedule starts a job for any inbox/ object whose event was lost,
and drops a job not approved in time. A record that is not S3 telling of an object in our
bucket's inbox/, cancel/ or approve/ (services/intake.check_record) is refused and logged,
and runs nothing.

S3 records are read as the plain dicts they are, the way Powertools' S3Event reads them:
importing S3Event loads its whole data_classes package, some thirty modules of event
classes, at every cold start (bench/cold_start.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchdrop import wiring
from batchdrop.domain.records import SourceRef
from batchdrop.errors import BadEventError
from batchdrop.observability import logger, metrics, tracer
from batchdrop.ports import Wiring
from batchdrop.services.approval import Approver
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake, RefusedRecord, check_record
from batchdrop.services.sweeper import Sweeper

SWEEP_SOURCE = "batchdrop.sweeper"


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    wired = wiring.from_env()
    # A split that runs short of the invocation's time stops at a shard boundary; the sweep
    # goes on with it (services/segments.py).
    intake = Intake(wired, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000)
    if event.get("source") == SWEEP_SOURCE:
        return _sweep(wired, intake, context)
    if "Records" not in event:
        raise BadEventError(f"not an S3 event nor a sweep: keys {sorted(event)}")
    outcomes: list[dict[str, Any]] = []
    for record in event["Records"]:
        upload = check_record(record, wired.store.bucket)
        if isinstance(upload, RefusedRecord):
            # Not S3 telling of an upload of ours: a made-up or misrouted event runs no job.
            logger.warning("S3 record refused", extra={"key": upload.key, "reason": upload.reason})
            metrics.add_metric("RecordsRefused", MetricUnit.Count, 1)
            outcomes.append({"refused": upload.reason, "key": upload.key})
            continue
        if upload.is_cancel:
            canceled = Canceler(wired).cancel_from_key(upload.key)
            metrics.add_metric("CancelRequests", MetricUnit.Count, 1)
            outcomes.append({"job_id": canceled.job_id, "status": canceled.status, "cancel": True})
            continue
        if upload.is_approval:
            approved = Approver(wired, intake).approve_from_key(upload.key)
            metrics.add_metric("Approvals", MetricUnit.Count, 1)
            metrics.add_metric("BatchesCreated", MetricUnit.Count, approved.submitted)
            outcomes.append({"job_id": approved.job_id, "status": approved.status, "approve": True})
            continue
        if not upload.version_id:
            # The bucket is versioned: without a version id the job's identity is unknown.
            raise BadEventError(f"S3 record for {upload.key!r} has no versionId; refusing to guess the object version")
        outcome = intake.submit(SourceRef(wired.store.bucket, upload.key, upload.version_id), upload.size)
        metrics.add_metric("DuplicateEvents" if outcome.duplicate else "ObjectsReceived", MetricUnit.Count, 1)
        metrics.add_metric("BatchesCreated", MetricUnit.Count, outcome.submitted)
        outcomes.append({"job_id": outcome.job_id, "status": outcome.status, "duplicate": outcome.duplicate})
    return {"jobs": outcomes}


def _sweep(wired: Wiring, intake: Intake, context: LambdaContext) -> dict[str, Any]:
    report = Sweeper(wired, intake, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000).sweep()
    metrics.add_metric("ObjectsSwept", MetricUnit.Count, len(report.started))
    metrics.add_metric(
        "StuckJobsRedriven", MetricUnit.Count, len(report.redrive.redriven) - len(report.redrive.continued)
    )
    metrics.add_metric("SplitsContinued", MetricUnit.Count, len(report.redrive.continued))
    metrics.add_metric("StuckJobsFailed", MetricUnit.Count, len(report.redrive.failed))
    metrics.add_metric("ApprovalsExpired", MetricUnit.Count, len(report.expired))
    return {
        "seen": report.seen,
        "started": report.started,
        "left": report.left + report.redrive.left,
        "redriven": report.redrive.redriven,
        "continued": report.redrive.continued,
        "stuck_failed": report.redrive.failed,
        "approval_expired": report.expired,
    }
