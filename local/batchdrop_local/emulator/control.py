"""A small client for the emulator's `/_emulator/` control endpoint (tests, demo, local stack).
Standard library only, so it adds nothing to import time."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


class EmulatorControl:
    def __init__(self, base_url: str, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, action: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is the emulator's, http on loopback
            f"{self.base_url}/_emulator/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            return json.load(response)

    def health(self) -> bool:
        return bool(self._call("GET", "health")["ok"])

    def end(self, batch_ids: list[str] | None = None) -> list[str]:
        """End open batches now, their processing complete."""
        return list(self._call("POST", "end", _ids(batch_ids))["ended"])

    def expire(self, batch_ids: list[str] | None = None) -> list[str]:
        return list(self._call("POST", "expire", _ids(batch_ids))["ended"])

    def archive(self, batch_ids: list[str] | None = None) -> list[str]:
        return list(self._call("POST", "archive", _ids(batch_ids))["archived"])

    def counters(self) -> dict[str, Any]:
        return dict(self._call("GET", "counters"))

    def custom_ids(self, minimum: int = 1) -> dict[str, int]:
        return dict(self._call("GET", f"custom-ids?min={minimum}"))

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "faults"))

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PUT", "faults", faults))

    def reset(self, *, faults: bool = False) -> None:
        """Forget every batch and counter; faults go back to the emulator's settings, or to
        none with `faults=True`."""
        self._call("POST", "reset", {"faults": True} if faults else {})


def _ids(batch_ids: list[str] | None) -> dict[str, Any]:
    return {} if batch_ids is None else {"batch_ids": batch_ids}
