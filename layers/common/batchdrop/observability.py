"""Logger, Metrics and Tracer, created once for every handler and module."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
