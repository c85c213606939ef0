"""Token usage summed from results, and what it costs at the batch and the standard price."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

from batchdrop.domain.prices import PriceTable, price_table

# The prices are data: batchdrop/prices.json, read by domain/prices.py (its docstring says how
# to override them). A model no family matches is priced as the table's fallback family, at the
# highest list price of every kind, so the manifest may overstate such a model's cost, never
# understate it; the manifest names the family each model was priced as.
FALLBACK_FAMILY = "fallback-highest-list-price"
_TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)


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

    @property
    def unattributed_cache_writes(self) -> int:
        """Cache writes the API did not attribute to a lifetime: written with the default, 5 minutes."""
        return max(self.cache_creation_input_tokens - self.cache_creation_5m - self.cache_creation_1h, 0)

    def without_caching(self) -> Usage:
        """The same tokens had nothing been cached: every cache write and read sent as plain
        input. Its cost minus the usage's own is what caching saved (negative when it cost
        more: prefixes written and never read)."""
        written = self.cache_creation_5m + self.unattributed_cache_writes + self.cache_creation_1h
        return Usage(
            input_tokens=self.input_tokens + written + self.cache_read_input_tokens,
            output_tokens=self.output_tokens,
        )


def price_family(model: str, prices: PriceTable | None = None) -> str:
    """The family a model name is priced as (the table's fallback when none matches)."""
    return (prices or price_table()).family(model)


def cost_usd(usage_by_model: Mapping[str, Usage], *, batch: bool, prices: PriceTable | None = None) -> Decimal:
    """Exact cost in USD (unrounded) of the usage, at the batch price or the standard price, by
    `prices` (the shipped table by default)."""
    table = prices or price_table()
    total = sum((_standard_cost(table, model, usage) for model, usage in usage_by_model.items()), Decimal(0))
    return total * table.batch_discount if batch else total


def uncached_cost_usd(usage_by_model: Mapping[str, Usage], *, batch: bool, prices: PriceTable | None = None) -> Decimal:
    """What `cost_usd` would be had nothing been cached (see `Usage.without_caching`)."""
    uncached = {model: usage.without_caching() for model, usage in usage_by_model.items()}
    return cost_usd(uncached, batch=batch, prices=prices)


def _standard_cost(table: PriceTable, model: str, usage: Usage) -> Decimal:
    family = table.prices(model)
    total = (
        usage.input_tokens * family.input
        + usage.output_tokens * family.output
        + (usage.cache_creation_5m + usage.unattributed_cache_writes) * family.cache_write_5m
        + usage.cache_creation_1h * family.cache_write_1h
        + usage.cache_read_input_tokens * family.cache_read
    )
    return total / _TOKENS_PER_PRICE_UNIT


def _tokens(value: Any) -> int:
    return int(value) if value is not None else 0
