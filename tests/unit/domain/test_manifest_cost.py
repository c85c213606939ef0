"""Specification of the manifest's cost section: what the job cost at the batch and the
standard price, what the batch price saved, and what caching saved, each figure worked out by
hand from a price table of round numbers (USD per million tokens)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchdrop.domain.manifest import build_manifest, cost_summary
from batchdrop.domain.prices import parse_price_table
from batchdrop.domain.usage import Usage

MILLION = 1_000_000
# "small" prices as Haiku 4.5 does, "large" three times that; the fallback's own prices are
# raised to the highest of the table's, the large family's.
PRICES = parse_price_table(
    json.dumps(
        {
            "source": "tests",
            "as_of": "2026-12-07",
            "batch_discount": 0.5,
            "fallback": "unknown",
            "families": {
                "small": {
                    "match": "^small",
                    "input": 1,
                    "output": 5,
                    "cache_write_5m": 1.25,
                    "cache_write_1h": 2,
                    "cache_read": 0.1,
                    "cache_min_tokens": 1024,
                },
                "large": {
                    "match": "^large",
                    "input": 3,
                    "output": 15,
                    "cache_write_5m": 3.75,
                    "cache_write_1h": 6,
                    "cache_read": 0.3,
                    "cache_min_tokens": 1024,
                },
                "unknown": {
                    "match": None,
                    "input": 0,
                    "output": 0,
                    "cache_write_5m": 0,
                    "cache_write_1h": 0,
                    "cache_read": 0,
                    "cache_min_tokens": 1024,
                },
            },
        }
    )
)


def cost_of(usage_by_model: dict[str, Usage]) -> dict[str, Any]:
    manifest = build_manifest(
        job_id="j0123456789abcdef01234567",
        source={"bucket": "batchdrop-bucket", "key": "inbox/a.jsonl", "version_id": "v1"},
        status="COMPLETED",
        requested=1,
        rejected=0,
        counts={"succeeded": 1},
        batches=[],
        usage_by_model=usage_by_model,
        result_keys=[],
        rejected_key=None,
        created_at="2026-12-07T00:00:00Z",
        completed_at="2026-12-07T01:00:00Z",
        prices=PRICES,
    )
    cost: dict[str, Any] = manifest["cost"]
    return cost


FIGURES = ("batch_usd", "standard_usd", "saved_vs_standard_usd", "saved_by_caching_usd")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # 1M input at $1: $0.50 at batch; nothing cached, so caching saved nothing.
        (Usage(input_tokens=MILLION), ("0.500000", "1.000000", "0.500000", "0.000000")),
        # 1M output at $5: $2.50 at batch.
        (Usage(output_tokens=MILLION), ("2.500000", "5.000000", "2.500000", "0.000000")),
        # 1M written for 5 minutes at $1.25 ($0.625 batch) that as plain input cost $0.50: -$0.125.
        (
            Usage(cache_creation_input_tokens=MILLION, cache_creation_5m=MILLION),
            ("0.625000", "1.250000", "0.625000", "-0.125000"),
        ),
        # 1M written for an hour at $2 ($1 batch), $0.50 as plain input: caching cost $0.50 more.
        (
            Usage(cache_creation_input_tokens=MILLION, cache_creation_1h=MILLION),
            ("1.000000", "2.000000", "1.000000", "-0.500000"),
        ),
        # 1M writes the API gave no lifetime: priced as 5-minute writes.
        (Usage(cache_creation_input_tokens=MILLION), ("0.625000", "1.250000", "0.625000", "-0.125000")),
        # 1M read at $0.10 ($0.05 batch) that as plain input cost $0.50: $0.45 saved.
        (Usage(cache_read_input_tokens=MILLION), ("0.050000", "0.100000", "0.050000", "0.450000")),
    ],
    ids=["input", "output", "write-5m", "write-1h", "write-unattributed", "cache-read"],
)
def test_each_kind_of_token_is_priced_and_its_caching_saving_counted(
    usage: Usage, expected: tuple[str, str, str, str]
) -> None:
    cost = cost_of({"small-model": usage})
    assert tuple(cost[name] for name in FIGURES) == expected
    assert cost["priced_as"] == {"small-model": "small"}


def test_a_job_of_every_kind_of_token_on_two_models_adds_them_up() -> None:
    # Given, on the small family: 1M input ($1), 200k output ($1), 400k 5-minute writes ($0.50),
    # 100k 1-hour writes ($0.20), 2M reads ($0.20): $2.90 standard, $1.45 batch.
    # Uncached, the 3.5M input, written and read tokens cost $3.50 and the output $1: $2.25 batch.
    small = Usage(
        input_tokens=MILLION,
        output_tokens=200_000,
        cache_creation_input_tokens=500_000,
        cache_creation_5m=400_000,
        cache_creation_1h=100_000,
        cache_read_input_tokens=2 * MILLION,
    )
    # And on the large family: 100k input ($0.30) and 1M reads ($0.30): $0.60 standard,
    # $0.30 batch; uncached, 1.1M input at $3: $3.30 standard, $1.65 batch.
    large = Usage(input_tokens=100_000, cache_read_input_tokens=MILLION)

    cost = cost_of({"small-model": small, "large-model": large})

    assert tuple(cost[name] for name in FIGURES) == ("1.750000", "3.500000", "1.750000", "2.150000")
    assert cost["saved_usd"] == cost["saved_vs_standard_usd"]


def test_an_unknown_model_is_priced_at_the_highest_list_price_and_named() -> None:
    # Given a model no family matches: priced as the fallback, raised to the large family's
    # prices. 1M input ($3) and 1M reads ($0.30): $3.30 standard, $1.65 batch; uncached,
    # 2M input at $3: $3 batch, so caching saved $1.35.
    cost = cost_of({"mystery-model": Usage(input_tokens=MILLION, cache_read_input_tokens=MILLION)})

    assert tuple(cost[name] for name in FIGURES) == ("1.650000", "3.300000", "1.650000", "1.350000")
    assert cost["priced_as"] == {"mystery-model": "unknown"}


def test_a_job_with_no_usage_cost_nothing_and_saved_nothing() -> None:
    cost = cost_of({})
    assert tuple(cost[name] for name in FIGURES) == ("0.000000", "0.000000", "0.000000", "0.000000")


def test_the_savings_come_from_the_rounded_figures_so_they_agree_with_them() -> None:
    # Given 3 output tokens and 3 cache reads: $0.0000075 + $0.00000015 at batch rounds to
    # $0.000008; uncached, $0.0000075 + $0.0000015 = $0.000009 at batch.
    cost = cost_of({"small-model": Usage(output_tokens=3, cache_read_input_tokens=3)})
    assert cost["batch_usd"] == "0.000008"
    assert cost["saved_by_caching_usd"] == "0.000001"


def test_the_cost_summary_carries_batch_standard_and_caching_figures() -> None:
    manifest = {"cost": cost_of({"small-model": Usage(cache_read_input_tokens=MILLION)})}
    assert cost_summary(manifest) == {
        "batch_usd": "0.050000",
        "standard_usd": "0.100000",
        "saved_by_caching_usd": "0.450000",
    }
    # A manifest written before saved_by_caching_usd existed gives what it has.
    older = {"cost": {"batch_usd": "0.050000", "standard_usd": "0.100000", "saved_usd": "0.050000"}}
    assert cost_summary(older) == {"batch_usd": "0.050000", "standard_usd": "0.100000"}


def test_the_cost_summary_carries_the_estimate_made_before_sending() -> None:
    manifest = {
        "cost": {"batch_usd": "0.050000", "standard_usd": "0.100000"},
        "estimate": {"cost_usd": {"batch_cached_expected": "0.060000", "batch_max": "0.200000", "batch": "0.06"}},
    }
    assert cost_summary(manifest) == {
        "batch_usd": "0.050000",
        "standard_usd": "0.100000",
        "estimated_usd": "0.060000",
        "estimated_max_usd": "0.200000",
    }
