"""Logger, Metrics and Tracer, created once for every handler and module.

Every log line's `service` is the POWERTOOLS_SERVICE_NAME of the invocation under way
(`config.service_name()`), set on each record as it is logged. On Lambda that is the name the
Logger was made with. Locally both functions share this Logger in one process and may run at
the same time, so a name fixed at import, or kept in the Logger's keys, would be one
function's for both: `inject_lambda_context(clear_state=True)` resets those keys, the
thread-safe ones included, at the start of every invocation.

The libraries' own loggers stay at WARNING or above whatever the root logger's level (see
`quiet_libraries`): at DEBUG, botocore logs every response body, GetSecretValue's (the API
key) among them, and the HTTP libraries log requests and their headers."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from batchdrop import config

SERVICE_KEY = "service"
# Loggers that may write a secret, a request or a response at DEBUG or INFO.
LIBRARY_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3", "httpx", "httpx2", "httpcore", "anthropic")
# One count each time the Anthropic API refused the key even after it was fetched anew.
KEY_REFUSED_METRIC = "ApiKeyRefused"
# One value per job the checker finishes: its cost at the batch price, and what caching saved
# (negative when caching cost more). In USD; CloudWatch has no currency unit. The daily cost
# alarm (DailyCostAlarm in template.yaml) sums the first.
JOB_COST_METRIC = "JobCostUsd"
CACHING_SAVED_METRIC = "CostSavedByCachingUsd"


class InvocationService(logging.Filter):
    """Gives each record the service of the invocation that logs it (a key a caller passes
    in `extra` is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        service = config.service_name()
        if service and SERVICE_KEY not in record.__dict__:
            setattr(record, SERVICE_KEY, service)
        return True


logger = Logger()
logger.addFilter(InvocationService())
metrics = Metrics()
tracer = Tracer()


def quiet_libraries() -> None:
    """Set each of LIBRARY_LOGGERS to WARNING, or keep a higher level it has: its records
    below WARNING are then dropped whatever the root logger's level. Called at import, and
    again after importing a library that sets its own levels (the Anthropic SDK does, from
    ANTHROPIC_LOG)."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.setLevel(max(logging.WARNING, library.level))


def count_key_refused() -> None:
    metrics.add_metric(KEY_REFUSED_METRIC, MetricUnit.Count, 1)


def record_job_cost(cost: Mapping[str, str]) -> None:
    """Emit a finished job's cost (the manifest's `batch_usd`, and `saved_by_caching_usd` when
    the manifest has it)."""
    metrics.add_metric(JOB_COST_METRIC, MetricUnit.NoUnit, float(cost["batch_usd"]))
    if "saved_by_caching_usd" in cost:
        metrics.add_metric(CACHING_SAVED_METRIC, MetricUnit.NoUnit, float(cost["saved_by_caching_usd"]))


quiet_libraries()
