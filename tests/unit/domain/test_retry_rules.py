"""Which outcomes are worth another attempt, where each attempt's outcomes go, and the
lines batchdrop writes itself for requests the provider never took."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchdrop.domain.jobs import (
    IdsDigest,
    canceled_result_line,
    error_type,
    is_retryable,
    refused_result_line,
    results_part_key,
)
from batchdrop.domain.shards import shard_key


def _errored(kind: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "m"}}}


@pytest.mark.parametrize(
    ("result", "retry"),
    [
        ({"type": "expired"}, True),
        (_errored("api_error"), True),
        (_errored("overloaded_error"), True),
        (_errored("invalid_request_error"), False),
        (_errored("authentication_error"), False),
        ({"type": "errored", "error": {"type": "overloaded_error", "message": "flat"}}, True),
        ({"type": "errored"}, False),
        ({"type": "canceled"}, False),
        ({"type": "succeeded", "message": {}}, False),
    ],
)
def test_only_expired_and_provider_side_errors_are_retried(result: dict[str, Any], retry: bool) -> None:
    assert is_retryable(result) is retry


def test_the_error_type_is_read_from_the_nested_envelope() -> None:
    assert error_type(_errored("api_error")) == "api_error"
    assert error_type({"type": "errored", "error": "not an object"}) is None


def test_each_attempt_has_its_own_part_and_body() -> None:
    assert results_part_key("jabc", 3, 1) == "results/jabc/results-00003.jsonl"
    assert results_part_key("jabc", 3, 2) == "results/jabc/results-00003-a2.jsonl"
    assert shard_key("jabc", 3) == "work/jabc/shard-00003.jsonl"
    assert shard_key("jabc", 3, 3) == "work/jabc/shard-00003-a3.jsonl"


def test_lines_for_requests_never_taken_have_the_api_shape() -> None:
    refused = json.loads(refused_result_line("doc-1", "400: body too large"))
    assert refused["custom_id"] == "doc-1"
    assert error_type(refused["result"]) == "invalid_request_error"
    assert not is_retryable(refused["result"])
    assert "400: body too large" in refused["result"]["error"]["error"]["message"]
    assert json.loads(canceled_result_line("doc-2")) == {"custom_id": "doc-2", "result": {"type": "canceled"}}


def _digest(ids: list[str]) -> str:
    digest = IdsDigest()
    for custom_id in ids:
        digest.add(custom_id)
    return digest.hex


def test_the_ids_digest_ignores_order_and_tells_sets_of_the_same_size_apart() -> None:
    assert _digest(["a", "b", "c"]) == _digest(["c", "a", "b"])
    assert _digest(["a", "b", "c"]) != _digest(["a", "b", "d"])
    assert _digest([]) == "0" * 32
