"""Specification of the manifest: it adds up, or it is never built."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.usage import FALLBACK_FAMILY, Usage

SOURCE = {"bucket": "batchdrop-bucket", "key": "inbox/reviews.jsonl", "version_id": "v1"}


def manifest(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "job_id": "j0123456789abcdef01234567",
        "source": SOURCE,
        "status": "COMPLETED_WITH_ERRORS",
        "requested": 10,
        "rejected": 2,
        "counts": {"succeeded": 7, "errored": 1, "canceled": 0, "expired": 2},
        "batches": [
            {
                "shard": 0,
                "requests": 10,
                "counts": {"succeeded": 7, "errored": 1, "expired": 2},
                "attempts": [
                    {
                        "attempt": 1,
                        "batch_id": "msgbatch_01",
                        "requests": 10,
                        "counts": {"succeeded": 5, "expired": 5},
                        "retried": 5,
                    },
                    {
                        "attempt": 2,
                        "batch_id": "msgbatch_02",
                        "requests": 5,
                        "counts": {"succeeded": 2, "errored": 1, "expired": 2},
                        "retried": 0,
                    },
                ],
            }
        ],
        "usage_by_model": {"claude-haiku-4-5": Usage(input_tokens=1_000_000, output_tokens=100_000)},
        "result_keys": ["results/j0123456789abcdef01234567/results-00000.jsonl"],
        "rejected_key": "errors/j0123456789abcdef01234567/rejected.jsonl",
        "created_at": "2025-01-01T00:00:00Z",
        "completed_at": "2025-01-01T01:00:00Z",
    }
    arguments.update(overrides)
    return build_manifest(**arguments)


def test_a_manifest_that_adds_up_holds_everything_the_design_lists() -> None:
    # Given a finished job whose outcomes add up to its requests
    # When its manifest is built
    built = manifest()
    # Then it holds the source, status, counts, batches, usage, cost, timings and keys
    assert built["job_id"] == "j0123456789abcdef01234567"
    assert built["source"] == SOURCE
    assert built["status"] == "COMPLETED_WITH_ERRORS"
    assert built["counts"] == {"requests": 10, "rejected": 2, "succeeded": 7, "errored": 1, "canceled": 0, "expired": 2}
    assert built["batches"] == [
        {
            "shard": 0,
            "requests": 10,
            "counts": {"succeeded": 7, "errored": 1, "canceled": 0, "expired": 2},
            "attempts": [
                {
                    "attempt": 1,
                    "batch_id": "msgbatch_01",
                    "requests": 10,
                    "counts": {"succeeded": 5, "errored": 0, "canceled": 0, "expired": 5},
                    "retried": 5,
                },
                {
                    "attempt": 2,
                    "batch_id": "msgbatch_02",
                    "requests": 5,
                    "counts": {"succeeded": 2, "errored": 1, "canceled": 0, "expired": 2},
                    "retried": 0,
                },
            ],
        }
    ]
    # And which attempt gave each request its final outcome
    assert built["attempts"] == {"final_at_attempt": {"1": 5, "2": 5}, "requests_retried": 5, "batches_created": 2}
    assert built["usage"]["total"]["input_tokens"] == 1_000_000
    assert built["usage"]["by_model"]["claude-haiku-4-5"]["output_tokens"] == 100_000
    assert built["timings"] == {"created_at": "2025-01-01T00:00:00Z", "completed_at": "2025-01-01T01:00:00Z"}
    assert built["results"] == ["results/j0123456789abcdef01234567/results-00000.jsonl"]
    assert built["errors"] == "errors/j0123456789abcdef01234567/rejected.jsonl"


def test_cost_is_given_at_batch_and_standard_price_as_six_decimal_strings() -> None:
    # Given 1M input + 100k output tokens on Haiku 4.5: standard $1 + $0.50, batch half
    built = manifest()
    # When / Then the figures are exact strings, and saved is their difference
    assert built["cost"]["standard_usd"] == "1.500000"
    assert built["cost"]["batch_usd"] == "0.750000"
    assert built["cost"]["saved_usd"] == "0.750000"
    assert built["cost"]["priced_as"] == {"claude-haiku-4-5": "haiku-4.5"}


def test_tiny_costs_are_rounded_half_up_to_six_decimals_and_saved_matches_the_printed_figures() -> None:
    # Given 3 output tokens on Haiku: $0.000015 standard, $0.0000075 batch
    built = manifest(usage_by_model={"claude-haiku-4-5": Usage(output_tokens=3)})
    # When / Then batch rounds half up and saved is standard minus batch as printed
    assert built["cost"] == {
        "batch_usd": "0.000008",
        "standard_usd": "0.000015",
        "saved_usd": "0.000007",
        "saved_vs_standard_usd": "0.000007",
        "saved_by_caching_usd": "0.000000",
        "priced_as": {"claude-haiku-4-5": "haiku-4.5"},
    }


def test_usage_is_totalled_across_models_and_unknown_models_name_their_fallback() -> None:
    built = manifest(
        usage_by_model={
            "claude-sonnet-4-5": Usage(input_tokens=5),
            "claude-2.1": Usage(input_tokens=7, output_tokens=1),
        }
    )
    assert built["usage"]["total"]["input_tokens"] == 12
    assert built["usage"]["total"]["output_tokens"] == 1
    assert built["cost"]["priced_as"] == {"claude-2.1": FALLBACK_FAMILY, "claude-sonnet-4-5": "sonnet-4"}


def test_the_manifest_is_json_serialisable_even_from_dynamodb_decimals() -> None:
    # Given counts and batch figures as DynamoDB returns them (Decimal)
    built = manifest(
        counts={"succeeded": Decimal(7), "errored": Decimal(1), "expired": Decimal(2)},
        batches=[
            {
                "shard": Decimal(0),
                "requests": Decimal(10),
                "counts": {"succeeded": Decimal(7), "errored": Decimal(1), "expired": Decimal(2)},
                "attempts": [
                    {
                        "attempt": Decimal(1),
                        "batch_id": "msgbatch_01",
                        "requests": Decimal(10),
                        "counts": {"succeeded": Decimal(7), "errored": Decimal(1), "expired": Decimal(2)},
                    },
                ],
            }
        ],
    )
    # When it is serialised / Then it round-trips with ints
    assert json.loads(json.dumps(built)) == built
    assert built["batches"][0]["attempts"][0]["requests"] == 10


def test_a_shard_whose_final_outcomes_do_not_add_up_is_refused() -> None:
    shard = {"shard": 0, "requests": 10, "counts": {"succeeded": 9}, "attempts": []}
    with pytest.raises(ValueError, match="shard 0: final outcomes add up to 9, not to 10"):
        manifest(counts={"succeeded": 10}, batches=[shard])


@pytest.mark.parametrize(
    "counts",
    [
        {"succeeded": 7, "errored": 1},  # 8 of 10: two results missing
        {"succeeded": 11},  # more results than requests
        {},
    ],
)
def test_a_manifest_that_does_not_add_up_is_refused(counts: dict[str, int]) -> None:
    # Given outcomes that do not add up to the 10 requests submitted
    # When the manifest is built / Then it raises: such a manifest must never be written
    with pytest.raises(ValueError, match="not to the 10 requests"):
        manifest(counts=counts)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"counts": {"succeeded": 9, "pending": 1}}, "unknown result type"),
        ({"counts": {"succeeded": 11, "errored": -1}}, "whole number >= 0"),
        ({"counts": {"succeeded": 9.5, "errored": 0.5}}, "whole number >= 0"),
        ({"rejected": -1}, "whole number >= 0"),
        ({"status": "DONE"}, "DONE"),
    ],
)
def test_impossible_figures_are_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        manifest(**overrides)


def test_a_failed_job_with_no_request_adds_up_and_carries_its_reason() -> None:
    # Given a file whose every line was rejected
    built = manifest(
        status="FAILED",
        requested=0,
        rejected=3,
        counts={},
        batches=[],
        usage_by_model={},
        result_keys=[],
        reason="no valid request",
    )
    # When / Then it is built with zero outcomes, zero cost and the reason
    assert built["counts"] == {"requests": 0, "rejected": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert built["cost"]["batch_usd"] == "0.000000"
    assert built["reason"] == "no valid request"
    assert json.loads(json.dumps(built)) == built


def test_without_rejected_lines_errors_is_null() -> None:
    built = manifest(rejected=0, rejected_key=None)
    assert built["errors"] is None
    assert "reason" not in built


def test_the_cost_follows_the_price_table_given() -> None:
    # Given a table where Haiku's input costs $2 per million tokens instead of $1
    from batchdrop.domain.prices import price_table

    prices = price_table('{"families": {"haiku-4.5": {"input": 2}}}')
    # When the manifest of 1M input and 100k output tokens is built with it
    built = manifest(prices=prices)
    # Then: 1M x $2 + 100k x $5 = $2.50 standard, $1.25 batch
    assert built["cost"]["standard_usd"] == "2.500000"
    assert built["cost"]["batch_usd"] == "1.250000"
    assert manifest()["cost"]["standard_usd"] == "1.500000"
