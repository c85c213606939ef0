"""Helpers shared by the emulator's integration tests: request bodies, raw HTTP, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
from anthropic.types.messages import MessageBatch
from anthropic.types.shared import ErrorResponse

from batchdrop_local.emulator.server import Emulator

MODEL = "claude-haiku-4-5"

# Long enough that a batch only ends when a test says so (control `end`), unless the test
# asks for a short latency and waits.
HOLD_LATENCY = 60.0

StartEmulator = Callable[..., Emulator]
MakeClient = Callable[..., anthropic.Anthropic]


def params(text: str = "Hello there", **overrides: Any) -> dict[str, Any]:
    """A valid request's params, with `overrides` merged in (a None value removes the key)."""
    base: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }
    merged = base | overrides
    return {key: value for key, value in merged.items() if value is not None}


def request(custom_id: str, **overrides: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": params(f"Request {custom_id}", **overrides)}


def requests_for(count: int, prefix: str = "req") -> list[dict[str, Any]]:
    """`count` valid requests, custom_ids `{prefix}-0000`, `{prefix}-0001`, ..."""
    return [request(f"{prefix}-{i:04d}") for i in range(count)]


def wait_for[T](condition: Callable[[], T | None], *, timeout: float = 10.0, what: str = "the condition") -> T:
    """Poll `condition` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_until_ended(client: anthropic.Anthropic, batch_id: str, *, timeout: float = 10.0) -> MessageBatch:
    def ended() -> MessageBatch | None:
        batch = client.messages.batches.retrieve(batch_id)
        return batch if batch.processing_status == "ended" else None

    return wait_for(ended, timeout=timeout, what=f"{batch_id} to end")


def api_headers(key: str = "test-key", **extra: str) -> dict[str, str]:
    """The headers of an SDK 0.x/1.x client: the key as `x-api-key`, the classic version."""
    return {"x-api-key": key, "anthropic-version": "2023-06-01", **extra}


def outcomes(client: anthropic.Anthropic, batch_id: str) -> dict[str, str]:
    """custom_id -> result type, read through the SDK."""
    return {row.custom_id: row.result.type for row in client.messages.batches.results(batch_id)}


def api_error(response: httpx2.Response) -> ErrorResponse:
    """A raw error response's envelope, parsed with the SDK's type, after checking that the
    envelope's request_id is the response's `request-id` header."""
    error = ErrorResponse.model_validate(response.json())
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.request_id == response.headers["request-id"]
    return error
