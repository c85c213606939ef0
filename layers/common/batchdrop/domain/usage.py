"""Token usage summed from results, and what it costs at the batch and the standard price."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

# Standard (non-batch) list prices in USD per million tokens, by model family, matched on the model
# name. The docs' batch table (https://docs.claude.com/en/docs/build-with-claude/batch-processing#pricing)
# lists exactly half of these: Opus 4.5-4.8 $2.50 / $12.50, Sonnet 4.x $1.50 / $7.50,
# Haiku 4.5 $0.50 / $2.50.
# A model no pattern matches (older or newer than this table) is priced as FALLBACK_FAMILY: the
# highest list price any Claude model has had (Opus 4 / 4.1 / 3: $15 / $75; the same docs page lists
# them at $7.50 / $37.50 batch), so the manifest may overstate such a model's cost, never understate
# it. The manifest names the family each model was priced as.
FALLBACK_FAMILY = "fallback-highest-list-price"
PRICES_PER_MTOK: dict[str, tuple[str | None, Decimal, Decimal]] = {
    # family: (pattern on the lower-cased model name, input, output)
    "opus-4.5+": (r"opus-4[-.][5-9](?!\d)", Decimal("5"), Decimal("25")),
    "sonnet-4": (r"sonnet-4(?!\d)", Decimal("3"), Decimal("15")),
    "haiku-4.5": (r"haiku-4[-.]5(?!\d)", Decimal("1"), Decimal("5")),
    FALLBACK_FAMILY: (None, Decimal("15"), Decimal("75")),
}
# Prompt-caching multipliers on the input price; the batch discount applies on top of them.
CACHE_WRITE_5M = Decimal("1.25")
CACHE_WRITE_1H = Decimal("2")
CACHE_READ = Decimal("0.1")
BATCH_DISCOUNT = Decimal("0.5")

_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
_FAMILY_PATTERNS = [
    (family, re.compile(pattern)) for family, (pattern, _, _) in PRICES_PER_MTOK.items() if pattern is not None
]


@dataclass(slots=True)
class Usage:
    """Token counts of one model, as the API reports them: input_tokens excludes cache reads and
    writes; cache_creation_input_tokens is all cache writes, of which cache_creation_5m and
    cache_creation_1h are the part the API attributed to each lifetime."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0

    def __post_init__(self) -> None:
        # Figures read back from DynamoDB arrive as Decimal; keep them ints.
        for field in fields(self):
            setattr(self, field.name, int(getattr(self, field.name) or 0))

    def add_message_usage(self, usage: Mapping[str, Any]) -> None:
        """Add a Message's `usage` object (None values count as 0). Server-tool requests (web search)
        are billed per use, not per token, and are not counted here."""
        self.input_tokens += _tokens(usage.get("input_tokens"))
        self.output_tokens += _tokens(usage.get("output_tokens"))
        self.cache_creation_input_tokens += _tokens(usage.get("cache_creation_input_tokens"))
        self.cache_read_input_tokens += _tokens(usage.get("cache_read_input_tokens"))
        by_lifetime = usage.get("cache_creation") or {}
        self.cache_creation_5m += _tokens(by_lifetime.get("ephemeral_5m_input_tokens"))
        self.cache_creation_1h += _tokens(by_lifetime.get("ephemeral_1h_input_tokens"))

    def merge(self, other: Usage) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def price_family(model: str) -> str:
    """The PRICES_PER_MTOK family a model name is priced as (FALLBACK_FAMILY when none matches)."""
    name = model.lower()
    for family, pattern in _FAMILY_PATTERNS:
        if pattern.search(name):
            return family
    return FALLBACK_FAMILY


def cost_usd(usage_by_model: Mapping[str, Usage], *, batch: bool) -> Decimal:
    """Exact cost in USD (unrounded) of the usage, at the batch price or the standard price."""
    total = sum((_standard_cost(model, usage) for model, usage in usage_by_model.items()), Decimal(0))
    return total * BATCH_DISCOUNT if batch else total


def _standard_cost(model: str, usage: Usage) -> Decimal:
    _, input_price, output_price = PRICES_PER_MTOK[price_family(model)]
    # Cache writes the API did not attribute to a lifetime were written with the default, 5 minutes.
    unattributed = max(usage.cache_creation_input_tokens - usage.cache_creation_5m - usage.cache_creation_1h, 0)
    input_equivalent = (
        usage.input_tokens
        + (usage.cache_creation_5m + unattributed) * CACHE_WRITE_5M
        + usage.cache_creation_1h * CACHE_WRITE_1H
        + usage.cache_read_input_tokens * CACHE_READ
    )
    return (input_equivalent * input_price + usage.output_tokens * output_price) / _TOKENS_PER_PRICE_UNIT


def _tokens(value: Any) -> int:
    return int(value) if value is not None else 0
