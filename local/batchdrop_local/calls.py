"""Counting the AWS calls code makes: every botocore client built from boto3's default
session after `CallCounter` starts reports each call it sends, by service and operation.
Tests use it to hold a tick to its query budget; benchmarks to price a run."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3

_EVENT = "before-call"


class CallCounter:
    """`with CallCounter() as calls:` … `calls.of("dynamodb")` → Counter of operations.

    Hooks boto3's default session, where `boto3.client()`/`boto3.resource()` (and so the
    handlers' adapters) build their clients. A client copies the session's hooks when it is
    made: only clients made after `start()` are counted, so start it before the code under
    test builds its adapters. Clients of other sessions are not counted: Powertools'
    SecretsProvider makes its own (bench/cost.py counts at the botocore client instead)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._session: Any = None

    def _count(self, model: Any, **_kwargs: Any) -> None:
        with self._lock:
            self.calls[(model.service_model.service_name, model.name)] += 1

    def start(self) -> CallCounter:
        self._session = boto3._get_default_session()  # the session boto3.client() uses
        self._session.events.register(_EVENT, self._count, unique_id=f"batchdrop-count-{id(self)}")
        return self

    def stop(self) -> None:
        if self._session is not None:
            self._session.events.unregister(_EVENT, unique_id=f"batchdrop-count-{id(self)}")
            self._session = None

    def __enter__(self) -> CallCounter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def of(self, service: str) -> Counter[str]:
        with self._lock:
            return Counter({op: n for (svc, op), n in self.calls.items() if svc == service})

    def total(self, service: str | None = None) -> int:
        with self._lock:
            return sum(n for (svc, _op), n in self.calls.items() if service is None or svc == service)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()


@dataclass(frozen=True)
class FreshAdapters:
    """The layer's adapters on clients of their own (see `fresh_adapters`); `close()` them."""

    store: Any
    state: Any
    api: Any
    events: Any

    def wiring(self, **settings: Any) -> Any:
        """The services' wiring on these adapters; `settings`: Wiring's other fields."""
        from batchdrop.ports import Wiring

        return Wiring(self.store, self.state, self.api, self.events, **settings)

    def close(self) -> None:
        self.store.client.close()
        self.state.table.meta.client.close()
        self.events.client.close()
        self.api.client.close()


def fresh_adapters(stack: Any, *, max_pool_connections: int = 10) -> FreshAdapters:
    """The layer's adapters bound to a local stack, on clients made now rather than the
    stack's cached ones, so that a CallCounter started before this counts all their calls."""
    import anthropic
    from botocore.config import Config

    from batchdrop.adapters.batches import BatchesApi
    from batchdrop.adapters.events import EventPublisher
    from batchdrop.adapters.objects import ObjectStore
    from batchdrop.adapters.state import StateTable
    from batchdrop_local.stack import DUMMY_AWS_KEY

    aws: dict[str, Any] = {
        "endpoint_url": stack.moto_url,
        "region_name": stack.region,
        "aws_access_key_id": DUMMY_AWS_KEY,
        "aws_secret_access_key": DUMMY_AWS_KEY,
        "config": Config(request_checksum_calculation="when_required", max_pool_connections=max_pool_connections),
    }
    sdk = anthropic.Anthropic(api_key=stack.api_key, base_url=stack.emulator_url, max_retries=3)
    return FreshAdapters(
        ObjectStore(stack.bucket_name, client=boto3.client("s3", **aws)),
        StateTable(stack.table_name, resource=boto3.resource("dynamodb", **aws)),
        BatchesApi(lambda: stack.api_key, base_url=stack.emulator_url, client=sdk),
        EventPublisher(stack.event_bus_name, client=boto3.client("events", **aws)),
    )
