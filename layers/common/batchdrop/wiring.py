"""Production wiring shared by the handlers: the adapters with their real clients, built
once per environment (so once per Lambda container; locally, once per local stack) and
the Anthropic key fetched from Secrets Manager, never from an environment variable."""

from __future__ import annotations

from functools import cache

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.config import Settings
from batchdrop.domain.shards import ShardLimits
from batchdrop.ports import Wiring


def from_env() -> Wiring:
    return _build(Settings.from_env())


@cache
def _build(settings: Settings) -> Wiring:
    secrets: list[object] = []  # the provider, made on first use: its import is not free

    def api_key() -> str:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        if not secrets:
            secrets.append(SecretsProvider())  # its own client: built for this environment
        # Cached by the provider for POWERTOOLS_PARAMETERS_MAX_AGE seconds.
        return str(secrets[0].get(settings.secret_arn))  # type: ignore[attr-defined]

    return Wiring(
        store=ObjectStore(settings.bucket),
        state=StateTable(settings.table),
        batches=BatchesApi(api_key, base_url=settings.base_url),
        events=EventPublisher(settings.event_bus),
        timings=settings.timings,
        limits=ShardLimits(max_requests=settings.shard_max_requests),
        max_attempts=settings.max_attempts,
    )
