"""Production wiring shared by the handlers: the adapters with their real clients, built
once per function environment (so once per Lambda container; locally, once per function of
a local stack) and the Anthropic key fetched from Secrets Manager, never from an environment
variable. The key is read through Powertools' SecretsProvider on every API call, so it is
cached for the secret's max age (POWERTOOLS_PARAMETERS_MAX_AGE) and no longer: a rotated
key is in use within that time, and at once after the API refuses the old one.

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
from batchdrop.domain.prices import price_table
from batchdrop.domain.shards import ShardLimits
from batchdrop.observability import quiet_libraries
from batchdrop.ports import Wiring

# ObjectStore's own client settings (see its `client`): bodies are not SHA-256 signed.
S3_CLIENT_CONFIG: dict[str, Any] = {"s3": {"payload_signing_enabled": False}}


def from_env() -> Wiring:
    return _build(Settings.from_env())


@cache
def _build(settings: Settings) -> Wiring:
    aws = AwsClients(settings)
    key = SecretKey(settings.secret_arn, settings.secret_max_age, lambda: aws.make_client("secretsmanager"))
    return Wiring(
        store=ObjectStore(settings.bucket, client=aws.client("s3", **S3_CLIENT_CONFIG)),
        state=StateTable(
            settings.table, resource=aws.resource("dynamodb"), job_retention_days=settings.job_retention_days
        ),
        batches=BatchesApi(key.get, base_url=settings.base_url, refetch_key=key.refetch),
        events=EventPublisher(settings.event_bus, client=aws.client("events")),
        timings=settings.timings,
        limits=ShardLimits(max_requests=settings.shard_max_requests),
        max_attempts=settings.max_attempts,
        max_file_bytes=settings.max_file_bytes,
        prices=price_table(settings.prices_json) if settings.prices_json else None,
        job_budget_usd=settings.job_budget_usd,
        daily_budget_usd=settings.daily_budget_usd,
        approval_hours=settings.approval_hours,
        prime_cache=settings.prime_cache,
    )


class SecretKey:
    """The API key, the SecretString of one secret, through Powertools' SecretsProvider: `get`
    answers from its cache while younger than `max_age` seconds (None: Powertools' default),
    `refetch` reads the secret again (force_fetch) and refreshes the cache. The provider and
    its client are made on first use: their import is not free."""

    def __init__(self, secret_arn: str, max_age: int | None, make_client: Callable[[], Any]) -> None:
        self._secret_arn = secret_arn
        self._max_age = max_age
        self._make_client = make_client
        self._lock = threading.Lock()
        self._provider: Any = None

    def get(self) -> str:
        return self._read(force=False)

    def refetch(self) -> str:
        return self._read(force=True)

    def _read(self, *, force: bool) -> str:
        quiet_libraries()  # even if something set botocore to DEBUG since: it would log the key
        with self._lock:
            if self._provider is None:
                from aws_lambda_powertools.utilities.parameters import SecretsProvider

                self._provider = SecretsProvider(boto3_client=self._make_client())
            return str(self._provider.get(self._secret_arn, max_age=self._max_age, force_fetch=force))


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
