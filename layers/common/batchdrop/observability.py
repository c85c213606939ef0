"""Logger, Metrics and Tracer, created once for every handler and module.

Every log line's `service` is the POWERTOOLS_SERVICE_NAME of the invocation under way
(`config.service_name()`), set on each record as it is logged. On Lambda that is the name the
Logger was made with. Locally both functions share this Logger in one process and may run at
the same time, so a name fixed at import, or kept in the Logger's keys, would be one
function's for both: `inject_lambda_context(clear_state=True)` resets those keys, the
thread-safe ones included, at the start of every invocation."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer

from batchdrop import config

SERVICE_KEY = "service"


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
