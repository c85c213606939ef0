"""Production wiring shared by the handlers: the adapters with their real clients, built
once per function environment (so once per Lambda container; locally, once per function of
a local stack) and the Anthropic key fetched from Secrets Manager, never from an environment
variable.

Every client is made from the Settings alone: the endpoint, region, credentials and checksum
mode are passed to boto3, not left for it to find in the process environment. On Lambda the
two are the same variables; in the local runner, where both functions run in one process
and at the same time, each talks to what its own environment names, whatever os.environ holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.config import Settings
from batchdrop.domain.shards import ShardLimits
from batchdrop.ports import Wiring

# ObjectStore's own client settings (see its `client`): bodies are not SHA-256 signed.
S3_CLIENT_CONFIG: dict[str, Any] = {"s3": {"payload_signing_enabled": False}}


def from_env() -> Wiring:
    return _build(Settings.from_env())


@cache
def _build(settings: Settings) -> Wiring:
    aws = AwsClients(settings)
    secrets: list[Any] = []  # the provider, made on first use: its import is not free

    def api_key() -> str:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider

        with aws.lock:
            if not secrets:
                secrets.append(SecretsProvider(boto3_client=aws.make_client("secretsmanager")))
        # Cached by the provider for POWERTOOLS_PARAMETERS_MAX_AGE seconds.
        return str(secrets[0].get(settings.secret_arn, max_age=settings.secret_max_age))

    return Wiring(
        store=ObjectStore(settings.bucket, client=aws.client("s3", **S3_CLIENT_CONFIG)),
        state=StateTable(settings.table, resource=aws.resource("dynamodb")),
        batches=BatchesApi(api_key, base_url=settings.base_url),
        events=EventPublisher(settings.event_bus, client=aws.client("events")),
        timings=settings.timings,
        limits=ShardLimits(max_requests=settings.shard_max_requests),
        max_attempts=settings.max_attempts,
        max_file_bytes=settings.max_file_bytes,
    )


class AwsClients:
    """boto3 clients and resources for one Settings, from a boto3 session of their own. Each
    is made on first use (an adapter a run never needs costs nothing), under one lock: a
    boto3 session is not thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self._session: Any = None

    def client(self, service: str, **config: Any) -> Any:
        """The client, made on first use of any of its attributes."""
        return _OnFirstUse(lambda: self.make_client(service, **config), self.lock)

    def resource(self, service: str, **config: Any) -> Any:
        """The boto3 resource, made on first use of any of its attributes."""
        return _OnFirstUse(lambda: self.make_resource(service, **config), self.lock)

    def make_client(self, service: str, **config: Any) -> Any:
        with self.lock:
            return self.session().client(service, endpoint_url=self.settings.aws_endpoint, config=self._config(config))

    def make_resource(self, service: str, **config: Any) -> Any:
        with self.lock:
            return self.session().resource(
                service, endpoint_url=self.settings.aws_endpoint, config=self._config(config)
            )

    def session(self) -> Any:
        with self.lock:
            if self._session is None:
                import boto3

                settings = self.settings
                self._session = boto3.session.Session(
                    aws_access_key_id=settings.aws_access_key_id,
                    aws_secret_access_key=settings.aws_secret_access_key,
                    aws_session_token=settings.aws_session_token,
                    region_name=settings.region,
                )
            return self._session

    def _config(self, options: dict[str, Any]) -> Any:
        from botocore.config import Config

        if self.settings.checksum_calculation:
            options = {"request_checksum_calculation": self.settings.checksum_calculation, **options}
        return Config(**options)


class _OnFirstUse:
    """Stands for the object `make()` returns, made when an attribute is first asked for.
    The adapters only ever use attributes of their clients, so they cannot tell."""

    def __init__(self, make: Callable[[], Any], lock: threading.RLock) -> None:
        self._make = make
        self._lock = lock
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        made = self._made
        if made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
                made = self._made
        return getattr(made, name)
