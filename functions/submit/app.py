"""SubmitFunction: an object created under inbox/ becomes a job and its batches."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchdrop import wiring
from batchdrop.errors import BadEventError
from batchdrop.observability import logger, metrics, tracer
from batchdrop.submit import SourceObject, Submitter


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - Powertools reads the context
    wired = wiring.adapters()
    submitter = Submitter(wired.store, wired.state, wired.batches, wiring.utc_now)
    outcomes = []
    for record in S3Event(event).records:
        obj = record.s3.get_object
        key = unquote_plus(obj.key)  # S3 sends keys URL-encoded ("a b+c" arrives as "a+b%2Bc")
        if not obj.version_id:
            # The bucket is versioned: without a version id the job's identity is unknown.
            raise BadEventError(f"S3 record for {key!r} has no versionId; refusing to guess the object version")
        outcome = submitter.submit(SourceObject(record.s3.bucket.name, key, obj.version_id))
        metrics.add_metric("DuplicateEvents" if outcome.duplicate else "ObjectsReceived", MetricUnit.Count, 1)
        metrics.add_metric("BatchesCreated", MetricUnit.Count, outcome.submitted)
        outcomes.append({"job_id": outcome.job_id, "status": outcome.status, "duplicate": outcome.duplicate})
    return {"jobs": outcomes}
