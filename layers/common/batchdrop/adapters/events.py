"""batchdrop's job events on the stack's EventBridge bus, so downstream systems need no
polling. What each says is built in domain/job_events.py; this sends one."""

from __future__ import annotations

import json
from typing import Any

from batchdrop.domain.job_events import SOURCE, JobEvent
from batchdrop.errors import EventNotPublishedError


class EventPublisher:
    def __init__(self, bus_name: str, client: Any = None) -> None:
        self._bus = bus_name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("events")
        return self._client

    def publish(self, event: JobEvent) -> None:
        """Put one event on the bus; EventNotPublishedError if the bus did not take it."""
        response = self.client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": event.detail_type,
                    "Detail": json.dumps(event.detail),
                    "EventBusName": self._bus,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise EventNotPublishedError(f"{event.detail_type!r} event not accepted: {response['Entries']}")
