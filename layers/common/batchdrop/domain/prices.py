"""The price table: list prices per model family, kept as data in batchdrop/prices.json (its
source page and date inside it), read once and only when a price is first needed.

Each family has a pattern on the lower-cased model name and five prices in USD per million
tokens at the standard (synchronous) price: input, output, 5-minute and 1-hour cache writes,
cache reads; and the shortest prefix the model caches (`cache_min_tokens`). The Message Batches
API bills `batch_discount` (one half) of every one of them. A model no pattern matches is
priced as the fallback family, whose every price is raised to the highest of the table's, so
that an unknown model's cost may be overstated, never understated.

An override (BATCHDROP_PRICES_JSON, a JSON object shaped like the file) changes the table
without a code change: `families` in it replace the named fields of a family of the same name,
or add a new family (all fields required), matched before the shipped ones; `source`, `as_of`
and `batch_discount` replace the file's."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

PRICE_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_FAMILY_FIELDS = ("match", *PRICE_KINDS, "cache_min_tokens")
SHIPPED_TABLE = Path(__file__).resolve().parents[1] / "prices.json"


class PriceTableError(ValueError):
    """A price table (the shipped file or an override) that cannot be used, and why."""


@dataclass(frozen=True, slots=True)
class FamilyPrices:
    """One model family's standard prices in USD per million tokens."""

    name: str
    match: str | None
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    cache_min_tokens: int

    def price(self, kind: str) -> Decimal:
        value: Decimal = getattr(self, kind)
        return value


@dataclass(frozen=True)
class PriceTable:
    source: str
    as_of: str
    batch_discount: Decimal
    fallback: str
    families: tuple[FamilyPrices, ...]  # in the order their patterns are tried

    @functools.cached_property
    def _patterns(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        return tuple((f.name, re.compile(f.match)) for f in self.families if f.match is not None)

    def family(self, model: str) -> str:
        """The family a model name is priced as (the fallback when no pattern matches)."""
        name = model.lower()
        for family, pattern in self._patterns:
            if pattern.search(name):
                return family
        return self.fallback

    def prices(self, model: str) -> FamilyPrices:
        return self.by_name(self.family(model))

    def by_name(self, family: str) -> FamilyPrices:
        for prices in self.families:
            if prices.name == family:
                return prices
        raise KeyError(family)


@functools.cache
def shipped_price_table() -> PriceTable:
    """The table shipped in the layer, read on first use."""
    return parse_price_table(SHIPPED_TABLE.read_text(encoding="utf-8"), where=SHIPPED_TABLE.name)


@functools.lru_cache(maxsize=8)
def price_table(override: str | None = None) -> PriceTable:
    """The shipped table, with `override` (BATCHDROP_PRICES_JSON's text) applied if given."""
    base = shipped_price_table()
    return base if not override else apply_override(base, override)


def parse_price_table(text: str, *, where: str = "price table") -> PriceTable:
    document = _object(text, where)
    families = document.get("families")
    if not isinstance(families, dict) or not families:
        raise PriceTableError(f"{where}: `families` must be a non-empty object")
    fallback = document.get("fallback")
    if fallback not in families:
        raise PriceTableError(f"{where}: `fallback` must name one of the families, got {fallback!r}")
    built = tuple(_family(name, fields, where) for name, fields in families.items())
    return _with_raised_fallback(
        PriceTable(
            source=_text(document, "source", where),
            as_of=_text(document, "as_of", where),
            batch_discount=_discount(document.get("batch_discount"), where),
            fallback=str(fallback),
            families=built,
        )
    )


def apply_override(base: PriceTable, text: str, *, where: str = "BATCHDROP_PRICES_JSON") -> PriceTable:
    """`base` with the override's families merged in (see the module's docstring)."""
    document = _object(text, where)
    changes = document.get("families", {})
    if not isinstance(changes, dict):
        raise PriceTableError(f"{where}: `families` must be an object")
    known = {family.name: family for family in base.families}
    merged = [_merged(known[name], fields, where) for name, fields in changes.items() if name in known]
    by_name = {family.name: family for family in merged}
    added = tuple(_family(name, fields, where) for name, fields in changes.items() if name not in known)
    table = PriceTable(
        source=str(document.get("source", base.source)),
        as_of=str(document.get("as_of", base.as_of)),
        batch_discount=_discount(document.get("batch_discount", base.batch_discount), where),
        fallback=base.fallback,
        families=added + tuple(by_name.get(family.name, family) for family in base.families),
    )
    return _with_raised_fallback(table)


def _with_raised_fallback(table: PriceTable) -> PriceTable:
    """The fallback family's every price raised to the highest of the table's."""
    fallback = table.by_name(table.fallback)
    highest = {kind: max(family.price(kind) for family in table.families) for kind in PRICE_KINDS}
    raised = FamilyPrices(
        name=fallback.name,
        match=fallback.match,
        input=highest["input"],
        output=highest["output"],
        cache_write_5m=highest["cache_write_5m"],
        cache_write_1h=highest["cache_write_1h"],
        cache_read=highest["cache_read"],
        cache_min_tokens=fallback.cache_min_tokens,
    )
    return replace(table, families=tuple(raised if f.name == table.fallback else f for f in table.families))


def _object(text: str, where: str) -> dict[str, Any]:
    try:
        document = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise PriceTableError(f"{where}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PriceTableError(f"{where}: must be a JSON object")
    return document


def _family(name: str, fields: Any, where: str) -> FamilyPrices:
    if not isinstance(fields, dict):
        raise PriceTableError(f"{where}: family {name!r} must be an object")
    missing = [field for field in _FAMILY_FIELDS if field not in fields]
    if missing:
        raise PriceTableError(f"{where}: family {name!r} lacks {', '.join(missing)}")
    return _merged(None, fields, where, name=name)


def _merged(base: FamilyPrices | None, fields: Any, where: str, *, name: str | None = None) -> FamilyPrices:
    name = base.name if base is not None else str(name)
    if not isinstance(fields, dict):
        raise PriceTableError(f"{where}: family {name!r} must be an object")
    unknown = sorted(set(fields) - set(_FAMILY_FIELDS))
    if unknown:
        raise PriceTableError(f"{where}: family {name!r}: unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {} if base is None else {field: getattr(base, field) for field in _FAMILY_FIELDS}
    values.update(fields)
    match = values["match"]
    if match is not None:
        if not isinstance(match, str):
            raise PriceTableError(f"{where}: family {name!r}: `match` must be a regular expression or null")
        try:
            re.compile(match)
        except re.error as exc:
            raise PriceTableError(f"{where}: family {name!r}: `match` is not a regular expression: {exc}") from None
    prices = {kind: _price(values[kind], f"{where}: family {name!r}: {kind}") for kind in PRICE_KINDS}
    minimum = values["cache_min_tokens"]
    if isinstance(minimum, bool) or not isinstance(minimum, int | Decimal) or minimum != int(minimum) or minimum < 0:
        raise PriceTableError(f"{where}: family {name!r}: cache_min_tokens must be a whole number >= 0")
    return FamilyPrices(name=name, match=match, cache_min_tokens=int(minimum), **prices)


def _price(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or not Decimal(value).is_finite() or value < 0:
        raise PriceTableError(f"{where} must be a number >= 0, got {value!r}")
    return Decimal(value)


def _discount(value: Any, where: str) -> Decimal:
    discount = _price(value, f"{where}: batch_discount")
    if discount > 1:
        raise PriceTableError(f"{where}: batch_discount is the share of the standard price billed, at most 1")
    return discount


def _text(document: Mapping[str, Any], field: str, where: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise PriceTableError(f"{where}: `{field}` must be a non-empty string")
    return value
