"""The emulator's answers, read over HTTP through the SDK: complete messages with full usage,
prompt caching across batches, forced tools, max_tokens, and a user's own responder."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message

from batchdrop_local.emulator.control import EmulatorControl
from tests.integration.emulator_support import (
    MODEL,
    MakeClient,
    StartEmulator,
    api_headers,
    request,
    requests_for,
)

USAGE_FIELDS = {
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "server_tool_use",
    "service_tier",
}
# Long enough to be cached: Claude Haiku 4.5 caches prefixes from 4096 tokens
LONG_SYSTEM = "You are a careful reviewer of product feedback. " * 400


def run_one(client: anthropic.Anthropic, control: EmulatorControl, custom_id: str, **overrides: Any) -> Message:
    """Submit one request, end its batch and return its succeeded message."""
    batch = client.messages.batches.create(requests=[request(custom_id, **overrides)])
    control.end([batch.id])
    (row,) = client.messages.batches.results(batch.id)
    assert row.result.type == "succeeded", row.result
    return row.result.message


def test_a_succeeded_message_carries_every_usage_field(
    client: anthropic.Anthropic, control: EmulatorControl, http: httpx2.Client
) -> None:
    # Given an ended batch of one plain request
    batch = client.messages.batches.create(requests=requests_for(1))
    control.end([batch.id])

    # When its result line is read as sent
    line = http.get(f"/v1/messages/batches/{batch.id}/results", headers=api_headers()).content.splitlines()[0]
    message = json.loads(line)["result"]["message"]

    # Then the message is complete and its usage carries every field, cache ones included
    assert set(message) >= {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    usage = message["usage"]
    assert set(usage) >= USAGE_FIELDS
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (0, 0)
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert usage["server_tool_use"] is None
    assert usage["service_tier"] == "batch"


@pytest.mark.parametrize(("ttl", "bucket"), [(None, "ephemeral_5m_input_tokens"), ("1h", "ephemeral_1h_input_tokens")])
def test_cache_control_writes_the_cache_in_one_batch_and_reads_it_in_the_next(
    client: anthropic.Anthropic, control: EmulatorControl, ttl: str | None, bucket: str
) -> None:
    # Given a long system prompt marked as a cache breakpoint
    cache_control = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": cache_control}]

    # When two batches, one after the other, send it with different questions
    first = run_one(client, control, "first", system=system).usage
    second = run_one(client, control, "second", system=system).usage

    # Then the first writes the prefix to the cache (under its ttl) and the second reads it
    assert first.cache_creation_input_tokens is not None
    assert first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation is not None
    assert getattr(first.cache_creation, bucket) == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens < first.cache_creation_input_tokens


def test_a_forced_tool_gets_a_tool_use_block_whose_input_fits_the_schema(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    # Given a request forcing a tool with typed, required and enumerated properties
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["label", "score"],
    }
    tools = [{"name": "record_sentiment", "description": "Record the sentiment.", "input_schema": schema}]

    # When it is answered
    message = run_one(client, control, "tool", tools=tools, tool_choice={"type": "tool", "name": "record_sentiment"})

    # Then the answer is a call of that tool, with an input the schema accepts
    assert message.stop_reason == "tool_use"
    (block,) = [block for block in message.content if block.type == "tool_use"]
    assert block.name == "record_sentiment"
    assert block.id.startswith("toolu_01")
    assert block.input["label"] in {"positive", "negative", "neutral"}
    assert isinstance(block.input["score"], int | float)
    assert all(isinstance(tag, str) for tag in block.input.get("tags", []))


def test_max_tokens_cuts_the_answer_with_stop_reason_max_tokens(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    message = run_one(client, control, "short", max_tokens=2)

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 2


def test_the_same_request_gets_the_same_answer(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    first = run_one(client, control, "same")
    second = run_one(client, control, "same")

    assert first.content == second.content
    assert first.usage == second.usage


def test_a_user_responder_named_in_the_settings_writes_the_answers(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator answering with the tests' own responder
    emulator = start_emulator(responder="tests.integration.emulator_responders:echo")
    client = make_client(emulator)

    # When a batch of a plain request, one the responder fails and one it crashes on is processed
    ids = ["plain-1", "overloaded-1", "crash-1"]
    batch = client.messages.batches.create(requests=[request(custom_id) for custom_id in ids])
    EmulatorControl(emulator.url).end([batch.id])
    results = {row.custom_id: row.result for row in client.messages.batches.results(batch.id)}

    # Then the plain one carries the responder's text, with usage computed as usual
    plain = results["plain-1"]
    assert plain.type == "succeeded"
    assert [(block.type, block.text) for block in plain.message.content] == [("text", f"echo plain-1 from {MODEL}")]
    assert plain.message.usage.input_tokens > 0
    assert plain.message.usage.output_tokens > 0
    # And the failed one is errored as the responder said; the crash is an api_error
    overloaded = results["overloaded-1"]
    assert overloaded.type == "errored"
    assert overloaded.error.error.type == "overloaded_error"
    crash = results["crash-1"]
    assert crash.type == "errored"
    assert crash.error.error.type == "api_error"
    assert "the responder crashed" in crash.error.error.message
