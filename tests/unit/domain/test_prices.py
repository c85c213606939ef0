"""The price table as data: the shipped file, every token kind priced by hand, the override."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from batchdrop.config import ENV_PRICES_JSON, Settings
from batchdrop.domain.prices import SHIPPED_TABLE, PriceTableError, apply_override, price_table, shipped_price_table
from batchdrop.domain.usage import FALLBACK_FAMILY, Usage, cost_usd, price_family
from batchdrop.errors import ConfigurationError

pytestmark = pytest.mark.unit

EVERY_KIND = {
    "input_tokens": 1000,
    "output_tokens": 2000,
    "cache_creation_input_tokens": 7000,
    "cache_creation_5m": 3000,
    "cache_creation_1h": 4000,
    "cache_read_input_tokens": 5000,
}


def test_the_shipped_table_names_its_source_and_date() -> None:
    document = json.loads(SHIPPED_TABLE.read_text(encoding="utf-8"))
    table = shipped_price_table()
    assert table.source.startswith("https://")
    assert table.source == document["source"]
    assert table.as_of == document["as_of"]
    assert len(table.as_of) == 10
    assert table.batch_discount == Decimal("0.5")


def test_every_token_kind_on_haiku_costs_a_hand_computed_figure() -> None:
    # 1000 x $1 + 2000 x $5 + 3000 x $1.25 + 4000 x $2 + 5000 x $0.10 = 23,250 per million tokens
    usage = {"claude-haiku-4-5": Usage(**EVERY_KIND)}
    assert cost_usd(usage, batch=False) == Decimal("0.02325")
    assert cost_usd(usage, batch=True) == Decimal("0.011625")


def test_an_unknown_model_is_named_and_priced_at_the_highest_price_of_every_kind() -> None:
    # 1000 x $15 + 2000 x $75 + 3000 x $18.75 + 4000 x $30 + 5000 x $1.50 = 348,750 per million tokens
    usage = {"claude-next-9": Usage(**EVERY_KIND)}
    assert price_family("claude-next-9") == FALLBACK_FAMILY
    assert cost_usd(usage, batch=False) == Decimal("0.34875")
    assert cost_usd(usage, batch=True) == Decimal("0.174375")


def test_an_override_replaces_a_familys_fields_and_keeps_the_rest() -> None:
    override = json.dumps({"as_of": "2030-01-01", "families": {"haiku-4.5": {"input": 2}}})
    table = price_table(override)
    haiku = table.by_name("haiku-4.5")
    assert (haiku.input, haiku.output, haiku.cache_read) == (Decimal(2), Decimal(5), Decimal("0.1"))
    assert table.as_of == "2030-01-01"
    assert table.source == shipped_price_table().source
    # 1000 input tokens now cost $2 per million, not $1
    assert cost_usd({"claude-haiku-4-5": Usage(input_tokens=1000)}, batch=False, prices=table) == Decimal("0.002")
    assert shipped_price_table().by_name("haiku-4.5").input == Decimal(1)


def test_an_added_family_is_matched_before_the_shipped_ones_and_raises_the_fallback() -> None:
    added = {
        "sonnet-4.9": {
            "match": r"sonnet-4[-.]9",
            "input": 40,
            "output": 80,
            "cache_write_5m": 50,
            "cache_write_1h": 80,
            "cache_read": 4,
            "cache_min_tokens": 2048,
        }
    }
    table = apply_override(shipped_price_table(), json.dumps({"families": added}))
    assert table.family("claude-sonnet-4-9") == "sonnet-4.9"
    assert table.family("claude-sonnet-4-5") == "sonnet-4"
    fallback = table.by_name(FALLBACK_FAMILY)
    assert (fallback.input, fallback.output, fallback.cache_write_5m) == (Decimal(40), Decimal(80), Decimal(50))
    assert fallback.cache_write_1h == Decimal(80)
    assert fallback.cache_read == Decimal(4)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("[1]", "must be a JSON object"),
        ("{", "not JSON"),
        ('{"families": {"haiku-4.5": {"input": -1}}}', "input must be a number >= 0"),
        ('{"families": {"haiku-4.5": {"price": 1}}}', "unknown field(s) price"),
        ('{"families": {"new": {"input": 1}}}', "family 'new' lacks match"),
        ('{"families": {"haiku-4.5": {"match": "("}}}', "is not a regular expression"),
        ('{"batch_discount": 2}', "at most 1"),
    ],
)
def test_a_bad_override_is_refused_with_its_reason(override: str, reason: str) -> None:
    with pytest.raises(PriceTableError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        apply_override(shipped_price_table(), override)


def test_the_settings_carry_a_valid_override_and_refuse_a_bad_one() -> None:
    env = {
        "BATCHDROP_BUCKET": "b",
        "BATCHDROP_TABLE": "t",
        "BATCHDROP_EVENT_BUS": "e",
        "ANTHROPIC_SECRET_ARN": "arn",
    }
    assert Settings.from_env(env).prices_json is None
    good = '{"families": {"haiku-4.5": {"input": 2}}}'
    assert Settings.from_env({**env, ENV_PRICES_JSON: good}).prices_json == good
    with pytest.raises(ConfigurationError, match="BATCHDROP_PRICES_JSON: not JSON"):
        Settings.from_env({**env, ENV_PRICES_JSON: "{nope"})
