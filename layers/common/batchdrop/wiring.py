"""Production wiring shared by the handlers: the adapters with their real clients, built
once per environment (so once per Lambda container; locally, once per local stack) and
the Anthropic key fetched from Secrets Manager, never from an environment variable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.config import Settings


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Adapters:
    settings: Settings
    store: ObjectStore
    state: StateTable
    batches: BatchesApi
    events: EventPublisher


def adapters() -> Adapters:
    return _build(Settings.from_env())


@cache
def _build(settings: Settings) -> Adapters:
    secrets: list[object] = []  # the provider, made on first use: its import is not free

    def api_key() -> str:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        if not secrets:
            secrets.append(SecretsProvider())  # its own client: built for this environment
        # Cached by the provider for POWERTOOLS_PARAMETERS_MAX_AGE seconds.
        return str(secrets[0].get(settings.secret_arn))  # type: ignore[attr-defined]

    return Adapters(
        settings=settings,
        store=ObjectStore(settings.bucket),
        state=StateTable(settings.table),
        batches=BatchesApi(api_key, base_url=settings.base_url),
        events=EventPublisher(settings.event_bus),
    )
