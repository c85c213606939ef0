"""`POST /v1/messages/count_tokens` through the SDK: the count equals the input tokens a batch
result reports for the same params, errors come as the API gives them (400, 401, 413, 405),
and faults can target the endpoint."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.faults import FaultSettings
from batchdrop_local.emulator.server import Emulator
from tests.integration.emulator_support import MODEL, MakeClient, StartEmulator, api_error, api_headers

SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["a", "b"]}, "why": {"type": "string"}},
    "required": ["label"],
    "additionalProperties": False,
}
TOOL = {"name": "lookup", "description": "Look a word up.", "input_schema": {"type": "object", "properties": {}}}
# Long enough to be cached: Claude Haiku 4.5 caches prefixes from 4096 tokens
SYSTEM = [{"type": "text", "text": "You label reviews carefully. " * 600, "cache_control": {"type": "ephemeral"}}]

BODIES: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "Hello there, how are you?"}]},
    "structured": {
        "system": "Label the review.",
        "messages": [
            {"role": "user", "content": "Great value."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": [{"type": "text", "text": "And this one: it broke."}]},
        ],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    },
    "tools": {
        "messages": [{"role": "user", "content": "Look up 'batch'."}],
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "lookup"},
    },
    "cached": {"system": SYSTEM, "messages": [{"role": "user", "content": "Label: meh."}]},
}


def usage_of_batch_result(client: anthropic.Anthropic, emulator: Emulator, body: dict[str, Any]) -> Any:
    batch = client.messages.batches.create(
        requests=[{"custom_id": "one", "params": {"model": MODEL, "max_tokens": 2048, **body}}]
    )
    EmulatorControl(emulator.url, timeout=30).end([batch.id])
    (row,) = client.messages.batches.results(batch.id)
    assert row.result.type == "succeeded", row.result
    return row.result.message.usage


@pytest.mark.parametrize("name", sorted(BODIES))
def test_count_tokens_equals_the_input_tokens_of_a_batch_result_for_the_same_params(
    start_emulator: StartEmulator, make_client: MakeClient, name: str
) -> None:
    # Given a Messages body (no max_tokens), counted through the SDK
    emulator = start_emulator()
    client = make_client(emulator)
    counted = client.messages.count_tokens(model=MODEL, **BODIES[name])

    # When the same params run in a batch
    usage = usage_of_batch_result(client, emulator, BODIES[name])

    # Then the count is every input token the result reports (all of it input_tokens when nothing
    # was cached; a cache breakpoint moves some into cache_creation_input_tokens)
    assert counted.input_tokens > 0
    total = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    assert counted.input_tokens == total
    if name != "cached":
        assert counted.input_tokens == usage.input_tokens
    else:
        assert usage.cache_creation_input_tokens > 0


def test_count_tokens_counts_the_output_schema_and_writes_no_cache(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    emulator = start_emulator()
    client = make_client(emulator)
    plain = client.messages.count_tokens(model=MODEL, messages=BODIES["structured"]["messages"])
    with_schema = client.messages.count_tokens(
        model=MODEL, messages=BODIES["structured"]["messages"], output_config=BODIES["structured"]["output_config"]
    )
    assert with_schema.input_tokens > plain.input_tokens

    # Counting a prompt with a breakpoint leaves the cache as it was: the first batch still writes it
    client.messages.count_tokens(model=MODEL, **BODIES["cached"])
    assert usage_of_batch_result(client, emulator, BODIES["cached"]).cache_read_input_tokens == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model: Field required"),
        ({"model": MODEL}, "messages: Field required"),
        ({"model": MODEL, "messages": []}, "messages: List should have at least 1 item after validation, not 0"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "output_config": {"format": {"type": "x"}},
            },
            "output_config.format.type: Input should be 'json_schema'",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "output_config": {"format": {"type": "json_schema", "schema": "{}"}},
            },
            "output_config.format.schema: Input should be a valid dictionary",
        ),
    ],
)
def test_an_invalid_body_answers_400_naming_the_field(
    client: anthropic.Anthropic, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages/count_tokens", body=body, cast_to=httpx2.Response)
    assert caught.value.status_code == 400
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}


def test_a_body_that_is_not_a_json_object_answers_400(http: httpx2.Client) -> None:
    for content in (b"{not json", b"[1, 2]"):
        response = http.post("/v1/messages/count_tokens", content=content, headers=api_headers())
        assert response.status_code == 400
        assert api_error(response).error.type == "invalid_request_error"


def test_count_tokens_needs_an_api_key_and_takes_only_post(http: httpx2.Client) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    unauthenticated = http.post("/v1/messages/count_tokens", json=body)
    assert unauthenticated.status_code == 401
    assert api_error(unauthenticated).error.type == "authentication_error"
    wrong_method = http.get("/v1/messages/count_tokens", headers=api_headers())
    assert wrong_method.status_code == 405
    assert api_error(wrong_method).error.type == "invalid_request_error"


def test_a_body_over_32_mb_answers_413(http: httpx2.Client) -> None:
    # The token-counting endpoint's own limit, far below the batch endpoint's 256 MB
    text = "x" * (32 * 1024 * 1024)
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    response = http.post("/v1/messages/count_tokens", json=body, headers=api_headers())
    assert response.status_code == 413
    assert response.json()["error"] == {
        "type": "request_too_large",
        "message": "Request exceeds the maximum allowed number of bytes.",
    }


def test_a_chunked_body_over_the_limit_answers_413_and_one_under_it_is_counted(
    start_emulator: StartEmulator,
) -> None:
    emulator = start_emulator(max_count_tokens_bytes=4096)

    def chunks(size: int) -> Any:
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "'
        yield b"y" * size
        yield b'"}]}'

    with httpx2.Client(base_url=emulator.url, timeout=30) as raw:
        too_large = raw.post("/v1/messages/count_tokens", content=chunks(8000), headers=api_headers())
        fits = raw.post("/v1/messages/count_tokens", content=chunks(2000), headers=api_headers())
    assert too_large.status_code == 413
    assert too_large.json()["error"]["type"] == "request_too_large"
    assert fits.status_code == 200
    assert fits.json() == {"input_tokens": 500}


def test_a_fault_can_target_count_tokens(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    faults = FaultSettings.model_validate({"http_errors": [{"endpoint": "count_tokens", "status": 529, "rate": 1}]})
    client = make_client(start_emulator(faults=faults))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    client.messages.batches.list()  # the other endpoints are left alone
