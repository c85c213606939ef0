"""A responder for the demo: reads a product review and classifies it by counting telling
words. It is the emulator talking, not Claude.

A plain request (native mode's sample) is answered with one word: POSITIVE, NEGATIVE or
NEUTRAL. A request asking for structured outputs (`output_config.format` with a JSON schema,
as records mode sends for a pipeline's `output.schema`) is answered with a JSON object that
conforms to the schema: `sentiment` from the words found (one of the schema's enum, when it
has one), `confidence` from how far the words lean one way, `reason` naming the words, and
any other property the schema asks for drawn by the emulator's own schema sampler."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from batchdrop_local.emulator.structured import SchemaSampler, output_schema

_POSITIVE = {"love", "best", "great", "excellent", "incredible", "exceeded", "fast", "sturdy", "new"}
_NEGATIVE = {"stopped", "never", "broke", "terrible", "disappointed", "waste", "cheap", "cracked", "confusing"}


@dataclass(frozen=True)
class Reading:
    """What the words of a review say: the telling words found on each side."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    @property
    def score(self) -> int:
        return len(self.positive) - len(self.negative)

    @property
    def sentiment(self) -> str:
        """positive or negative when the words lean one way only; mixed when they go both ways
        or say nothing."""
        if self.positive and not self.negative:
            return "positive"
        if self.negative and not self.positive:
            return "negative"
        return "mixed"

    @property
    def confidence(self) -> float:
        """0.3 when no word tells; 0.6 for one word one way, up to 0.95; for words both ways,
        lower the more evenly they balance (0.5 when even)."""
        if not self.positive and not self.negative:
            return 0.3
        if self.sentiment == "mixed":
            return round(min(0.9, 0.5 + 0.1 * abs(self.score)), 2)
        return round(min(0.95, 0.45 + 0.15 * abs(self.score)), 2)

    @property
    def reason(self) -> str:
        found = [
            f"{side} words: {', '.join(words)}"
            for side, words in (("positive", self.positive), ("negative", self.negative))
            if words
        ]
        return "; ".join(found) if found else "no telling words found"


def read_review(text: str) -> Reading:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return Reading(tuple(sorted(words & _POSITIVE)), tuple(sorted(words & _NEGATIVE)))


def classify_review(params: dict[str, Any], custom_id: str) -> str:
    """The emulator's answer to one request (the responder signature): one word, or the JSON
    text of an answer conforming to the request's output schema."""
    reading = read_review(_user_text(params))
    schema = output_schema(params)
    if schema is not None:
        return json.dumps(structured_answer(reading, schema, custom_id), ensure_ascii=False)
    if reading.score > 0:
        return "POSITIVE"
    return "NEGATIVE" if reading.score < 0 else "NEUTRAL"


def structured_answer(reading: Reading, schema: dict[str, Any], custom_id: str) -> dict[str, Any]:
    """An object conforming to `schema`: the reading's values for the properties named
    sentiment, confidence and reason (where the schema's types allow them), the sampler's for
    any other (deterministic per custom_id)."""
    answer = SchemaSampler(schema, random.Random(custom_id)).object(schema)
    properties = schema.get("properties") or {}
    ours: dict[str, Any] = {
        "sentiment": _label(reading.sentiment, properties.get("sentiment")),
        "confidence": reading.confidence,
        "reason": reading.reason,
    }
    for name, value in ours.items():
        sub = properties.get(name)
        if isinstance(sub, dict) and value is not None and _fits(value, sub):
            answer[name] = value
    return answer


def _label(sentiment: str, schema: Any) -> str | None:
    """`sentiment` as the schema's enum spells it; for mixed, a neutral label will do; None when
    the enum has neither."""
    options = schema.get("enum") if isinstance(schema, dict) else None
    if not isinstance(options, list):
        return sentiment
    wanted = (sentiment, "neutral") if sentiment == "mixed" else (sentiment,)
    for label in wanted:
        for option in options:
            if isinstance(option, str) and option.lower() == label:
                return option
    return None


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds is None:
        return "enum" not in schema or value in schema["enum"]
    wanted = "string" if isinstance(value, str) else "number"
    return wanted in kinds and ("enum" not in schema or value in schema["enum"])


def _user_text(params: dict[str, Any]) -> str:
    texts = []
    for message in params.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return " ".join(texts)
