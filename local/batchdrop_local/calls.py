"""Counting the AWS calls code makes: every botocore client built from boto3's default
session after `CallCounter` starts reports each call it sends, by service and operation.
Tests use it to hold a tick to its query budget; benchmarks to price a run."""

from __future__ import annotations

import threading
from collections import Counter
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
