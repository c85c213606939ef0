"""CheckerFunction: on every scheduled tick, follow open batches and finish jobs."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchdrop import wiring
from batchdrop.observability import logger, metrics, tracer
from batchdrop.services.tick import Checker


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:  # noqa: ARG001 - the schedule's payload carries nothing to act on
    checker = Checker(wiring.from_env(), seconds_left=lambda: context.get_remaining_time_in_millis() / 1000)
    report = checker.tick()
    metrics.add_metric("OpenBatches", MetricUnit.Count, report.open_batches)
    metrics.add_metric("BatchesCollected", MetricUnit.Count, len(report.collected))
    metrics.add_metric("JobsFinished", MetricUnit.Count, len(report.finished_jobs))
    metrics.add_metric("RequestsRetried", MetricUnit.Count, report.retried)
    metrics.add_metric("DuplicateBatches", MetricUnit.Count, len(report.canceled))
    metrics.add_metric("BatchesPastExpiry", MetricUnit.Count, len(report.past_expiry))
    if report.oldest_batch_age is not None:
        metrics.add_metric("OldestOpenBatchAge", MetricUnit.Seconds, report.oldest_batch_age)
    return {
        "open_batches": report.open_batches,
        "collected": report.collected,
        "finished_jobs": report.finished_jobs,
        "deferred": report.deferred,
        "retried": report.retried,
        "past_expiry": report.past_expiry,
    }
