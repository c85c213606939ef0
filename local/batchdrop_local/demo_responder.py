"""A responder for the demo: reads a product review and answers POSITIVE, NEGATIVE or
NEUTRAL by counting telling words. It is the emulator talking, not Claude."""

from __future__ import annotations

import re
from typing import Any

_POSITIVE = {"love", "best", "great", "excellent", "incredible", "exceeded", "fast", "sturdy", "new"}
_NEGATIVE = {"stopped", "never", "broke", "terrible", "disappointed", "waste", "cheap", "cracked", "confusing"}


def classify_review(params: dict[str, Any], custom_id: str) -> str:  # noqa: ARG001 - the responder signature
    text = " ".join(
        message["content"] for message in params.get("messages", []) if isinstance(message.get("content"), str)
    )
    words = set(re.findall(r"[a-z]+", text.lower()))
    score = len(words & _POSITIVE) - len(words & _NEGATIVE)
    if score > 0:
        return "POSITIVE"
    return "NEGATIVE" if score < 0 else "NEUTRAL"
