"""The completion event on EventBridge, so downstream systems need no polling."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchdrop.errors import EventNotPublishedError

SOURCE = "batchdrop"
DETAIL_TYPE = "Batchdrop Job Completed"
AWAITING_DETAIL_TYPE = "Batchdrop Job Awaiting Approval"


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

    def job_completed(self, detail: Mapping[str, Any]) -> None:
        self._put(DETAIL_TYPE, detail, "completion")

    def job_awaiting_approval(self, detail: Mapping[str, Any]) -> None:
        """A job over its budget waits for approval: said to whoever approves."""
        self._put(AWAITING_DETAIL_TYPE, detail, "awaiting-approval")

    def _put(self, detail_type: str, detail: Mapping[str, Any], what: str) -> None:
        response = self.client.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise EventNotPublishedError(f"{what} event not accepted: {response['Entries']}")
