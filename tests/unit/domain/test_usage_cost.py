"""Specification of token usage and cost: exact Decimal figures, batch at exactly half price."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.domain.prices import PRICE_KINDS, price_table
from batchdrop.domain.usage import FALLBACK_FAMILY, Usage, cost_usd, price_family

MILLION = 1_000_000


def test_a_message_usage_is_added_including_cache_lifetimes() -> None:
    # Given an empty tally and a Message's usage object as the API returns it
    usage = Usage()
    api_usage = {
        "input_tokens": 2000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
        "server_tool_use": None,
        "service_tier": "batch",
    }
    # When it is added twice
    usage.add_message_usage(api_usage)
    usage.add_message_usage(api_usage)
    # Then every figure doubles
    assert usage.as_dict() == {
        "input_tokens": 4000,
        "output_tokens": 1000,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 20000,
        "cache_creation_5m": 1200,
        "cache_creation_1h": 800,
    }


def test_none_and_missing_figures_count_as_zero() -> None:
    usage = Usage()
    usage.add_message_usage(
        {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": None, "cache_creation": None}
    )
    assert usage == Usage(input_tokens=10, output_tokens=5)


def test_merge_adds_every_figure() -> None:
    # Given two tallies
    total = Usage(1, 2, 3, 4, 5, 6)
    # When one is merged into the other
    total.merge(Usage(10, 20, 30, 40, 50, 60))
    # Then each figure is the sum
    assert total == Usage(11, 22, 33, 44, 55, 66)


def test_figures_read_back_from_dynamodb_as_decimal_become_ints() -> None:
    # Given the as_dict of a tally stored in DynamoDB (numbers come back as Decimal)
    stored = {name: Decimal(value) for name, value in Usage(1, 2, 3, 4, 5, 6).as_dict().items()}
    # When a Usage is rebuilt from it
    usage = Usage(**stored)
    # Then its figures are ints again
    assert usage == Usage(1, 2, 3, 4, 5, 6)
    assert all(type(value) is int for value in usage.as_dict().values())


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("claude-opus-4-5-20251101", "opus-4.5+"),
        ("claude-opus-4-5", "opus-4.5+"),
        ("claude-opus-4-8", "opus-4.5+"),
        ("claude-opus-4-5@20251101", "opus-4.5+"),
        ("claude-sonnet-4-20250514", "sonnet-4"),
        ("claude-sonnet-4-5-20250929", "sonnet-4"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "sonnet-4"),
        ("claude-haiku-4-5-20251001", "haiku-4.5"),
        ("claude-haiku-4-5", "haiku-4.5"),
        ("claude-opus-4-1-20250805", FALLBACK_FAMILY),
        ("claude-opus-4-20250514", FALLBACK_FAMILY),
        ("claude-3-5-haiku-20241022", FALLBACK_FAMILY),
        ("claude-3-7-sonnet-20250219", FALLBACK_FAMILY),
        ("some-future-model", FALLBACK_FAMILY),
    ],
)
def test_models_are_priced_by_family_with_older_and_unknown_ones_at_the_fallback(model: str, family: str) -> None:
    assert price_family(model) == family


def test_the_fallback_is_the_highest_price_in_the_table() -> None:
    # An unknown model's cost may be overstated, never understated
    table = price_table()
    fallback = table.by_name(FALLBACK_FAMILY)
    assert table.fallback == FALLBACK_FAMILY
    for kind in PRICE_KINDS:
        assert all(fallback.price(kind) >= family.price(kind) for family in table.families)


@pytest.mark.parametrize(
    ("model", "standard", "batch"),
    [
        ("claude-haiku-4-5", Decimal("6"), Decimal("3")),  # $1 + $5
        ("claude-sonnet-4-5", Decimal("18"), Decimal("9")),  # $3 + $15
        ("claude-opus-4-5", Decimal("30"), Decimal("15")),  # $5 + $25
        ("claude-opus-4-1", Decimal("90"), Decimal("45")),  # fallback: $15 + $75
    ],
)
def test_a_million_tokens_in_and_out_cost_the_list_price(model: str, standard: Decimal, batch: Decimal) -> None:
    # Given a million input and a million output tokens on one model
    usage = {model: Usage(input_tokens=MILLION, output_tokens=MILLION)}
    # When it is priced / Then it costs exactly the list price, and the docs' batch price
    assert cost_usd(usage, batch=False) == standard
    assert cost_usd(usage, batch=True) == batch


def test_the_batch_table_of_the_docs_is_half_the_standard_table() -> None:
    # The docs' batch table: Opus 4.5-4.8 $2.50/$12.50, Sonnet 4.x $1.50/$7.50, Haiku 4.5 $0.50/$2.50 per MTok
    for model, batch_in, batch_out in [
        ("claude-opus-4-6", "2.50", "12.50"),
        ("claude-sonnet-4-5", "1.50", "7.50"),
        ("claude-haiku-4-5", "0.50", "2.50"),
    ]:
        assert cost_usd({model: Usage(input_tokens=MILLION)}, batch=True) == Decimal(batch_in)
        assert cost_usd({model: Usage(output_tokens=MILLION)}, batch=True) == Decimal(batch_out)


def test_cache_writes_and_reads_use_their_multipliers_on_the_input_price() -> None:
    # Given a million tokens of each cache kind on Sonnet ($3 input)
    def priced(**figures: int) -> Decimal:
        return cost_usd({"claude-sonnet-4-5": Usage(**figures)}, batch=False)

    # When / Then 5-minute writes cost 1.25x, 1-hour writes 2x, reads 0.1x
    assert priced(cache_creation_input_tokens=MILLION, cache_creation_5m=MILLION) == Decimal("3.75")
    assert priced(cache_creation_input_tokens=MILLION, cache_creation_1h=MILLION) == Decimal("6")
    assert priced(cache_read_input_tokens=MILLION) == Decimal("0.3")


def test_cache_writes_without_a_lifetime_breakdown_are_priced_as_5_minute_writes() -> None:
    # Given cache writes the API did not attribute to a lifetime
    usage = {"claude-haiku-4-5": Usage(cache_creation_input_tokens=1000)}
    # When priced / Then they cost 1.25x the $1 input price
    assert cost_usd(usage, batch=False) == Decimal("0.00125")


def test_a_known_mixed_usage_costs_an_exact_figure() -> None:
    # Given a mixed usage on Sonnet ($3 / $15)
    usage = Usage()
    usage.add_message_usage(
        {
            "input_tokens": 2000,
            "output_tokens": 500,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 10000,
            "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 400},
        }
    )
    # When priced
    standard = cost_usd({"claude-sonnet-4-5": usage}, batch=False)
    # Then: 2000*3 + 600*1.25*3 + 400*2*3 + 10000*0.1*3 + 500*15 = 21150 per million tokens
    assert standard == Decimal("0.02115")
    assert cost_usd({"claude-sonnet-4-5": usage}, batch=True) == Decimal("0.010575")


def test_costs_of_several_models_add_up() -> None:
    usage = {
        "claude-haiku-4-5": Usage(input_tokens=MILLION),
        "claude-opus-4-5": Usage(output_tokens=MILLION),
    }
    assert cost_usd(usage, batch=False) == Decimal("26")
    assert cost_usd({}, batch=False) == Decimal("0")


@given(
    model=st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4", "claude-opus-4-7", "claude-2"]),
    figures=st.lists(st.integers(0, 10**12), min_size=6, max_size=6),
)
def test_batch_is_exactly_half_of_standard(model: str, figures: list[int]) -> None:
    usage = {model: Usage(*figures)}
    assert cost_usd(usage, batch=True) * 2 == cost_usd(usage, batch=False)
