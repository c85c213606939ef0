"""SubmitFunction: an object created under inbox/ becomes a job and its batches; one created
at cancel/<job_id> cancels that job; the sweeper's schedule starts a job for any inbox/
object whose event was lost.

S3 records are read as the plain dicts they are, the way Powertools' S3Event reads them:
importing S3Event loads its whole data_classes package, some thirty modules of event
classes, at every cold start (bench/cold_start.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchdrop import wiring
from batchdrop.domain.records import SourceRef
from batchdrop.errors import BadEventError
from batchdrop.observability import logger, metrics, tracer
from batchdrop.ports import Wiring
from batchdrop.services.cancel import CANCEL_PREFIX, Canceler
from batchdrop.services.intake import Intake
from batchdrop.services.sweeper import Sweeper

SWEEP_SOURCE = "batchdrop.sweeper"


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    wired = wiring.from_env()
    intake = Intake(wired)
    if event.get("source") == SWEEP_SOURCE:
        return _sweep(wired, intake, context)
    if "Records" not in event:
        raise BadEventError(f"not an S3 event nor a sweep: keys {sorted(event)}")
    outcomes = []
    for record in event["Records"]:
        s3 = record["s3"]
        obj = s3.get("get_object") or s3["object"]  # as S3Event.get_object: IntelligentTiering names it get_object
        key = unquote_plus(obj["key"])  # S3 sends keys URL-encoded ("a b+c" arrives as "a+b%2Bc")
        if key.startswith(CANCEL_PREFIX):
            canceled = Canceler(wired).cancel_from_key(key)
            metrics.add_metric("CancelRequests", MetricUnit.Count, 1)
            outcomes.append({"job_id": canceled.job_id, "status": canceled.status, "cancel": True})
            continue
        version_id = obj.get("versionId")
        if not version_id:
            # The bucket is versioned: without a version id the job's identity is unknown.
            raise BadEventError(f"S3 record for {key!r} has no versionId; refusing to guess the object version")
        outcome = intake.submit(SourceRef(s3["bucket"]["name"], key, version_id), obj.get("size"))
        metrics.add_metric("DuplicateEvents" if outcome.duplicate else "ObjectsReceived", MetricUnit.Count, 1)
        metrics.add_metric("BatchesCreated", MetricUnit.Count, outcome.submitted)
        outcomes.append({"job_id": outcome.job_id, "status": outcome.status, "duplicate": outcome.duplicate})
    return {"jobs": outcomes}


def _sweep(wired: Wiring, intake: Intake, context: LambdaContext) -> dict[str, Any]:
    report = Sweeper(wired, intake, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000).sweep()
    metrics.add_metric("ObjectsSwept", MetricUnit.Count, len(report.started))
    return {"seen": report.seen, "started": report.started, "left": report.left}
