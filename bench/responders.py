"""Emulator responders for benchmarks: replies of a fixed size, so a batch's results reach a
chosen number of bytes (100,000 results of about 1.1 KB each make 110 MB)."""

from __future__ import annotations

import json
from typing import Any

_TEXT = ("Emulated reply for the results benchmark, padded to a steady length. " * 12)[:800]


def padded(params: dict[str, Any], custom_id: str) -> str:  # noqa: ARG001 - the responder signature
    return _TEXT


_LONG_TEXT = (_TEXT * 6)[:4000]


def padded_long(params: dict[str, Any], custom_id: str) -> str:  # noqa: ARG001 - the responder signature
    """4 KB replies: many bytes of results from few requests (tests keep the emulator's work small)."""
    return _LONG_TEXT


_REASON_PADDING = "x" * 940


def sentiment(params: dict[str, Any], custom_id: str) -> str:  # noqa: ARG001 - the responder signature
    """A records job's structured answer of about 1 KB, as the outputs bench's pipeline asks
    (bench.records.SENTIMENT): valid JSON that matches the schema, its reason padded."""
    return json.dumps({"sentiment": "mixed", "confidence": 0.5, "reason": f"{custom_id}: {_REASON_PADDING}"})
