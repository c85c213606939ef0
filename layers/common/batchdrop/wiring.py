"""Production wiring shared by the handlers: settings read once, adapters built once per
container with their real clients, the Anthropic key fetched from Secrets Manager."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.config import Settings


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@cache
def settings() -> Settings:
    return Settings.from_env()


def _api_key() -> str:
    from aws_lambda_powertools.utilities import parameters

    # Cached for POWERTOOLS_PARAMETERS_MAX_AGE seconds; the key never sits in an env var.
    return str(parameters.get_secret(settings().secret_arn))


@cache
def store() -> ObjectStore:
    return ObjectStore(settings().bucket)


@cache
def state() -> StateTable:
    return StateTable(settings().table)


@cache
def batches_api() -> BatchesApi:
    return BatchesApi(_api_key, base_url=settings().base_url)


@cache
def events() -> EventPublisher:
    return EventPublisher(settings().event_bus)
