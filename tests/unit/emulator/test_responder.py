"""The emulator's responder: deterministic answers, faithful usage, and results the SDK accepts."""

from __future__ import annotations

import json
import math
import re
import string
from typing import Any

import pytest
from anthropic.types import TextBlock, ThinkingBlock, ToolUseBlock
from anthropic.types.messages import (
    MessageBatchCanceledResult,
    MessageBatchErroredResult,
    MessageBatchExpiredResult,
    MessageBatchIndividualResponse,
    MessageBatchSucceededResult,
)
from hypothesis import given
from hypothesis import strategies as st

from batchdrop_local.emulator.responder import MEDIA_TOKENS, Responder, load_responder

MODEL = "claude-sonnet-4-5"
MESSAGE_ID = "msg_01TestTestTestTestTestTe"
QUESTION = "What is the capital of France?"
MESSAGE_KEYS = [
    "id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage", "container",
]  # fmt: skip
USAGE_KEYS = [
    "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
    "cache_creation", "server_tool_use", "service_tier",
]  # fmt: skip
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The forecast for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "hourly": {"type": "boolean"},
        },
        "required": ["city", "unit", "days"],
    },
}
CLOCK_TOOL = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


class SetCache:
    """The PromptCache protocol over a plain dict (key -> last ttl), so tests can look inside."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def add(self, key: str, ttl: str) -> None:
        self.keys[key] = ttl


def make_params(**overrides: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": QUESTION}],
    } | overrides


def answer(params: dict[str, Any], responder: Responder | None = None) -> dict[str, Any]:
    responder = responder or Responder(cache=SetCache())
    return responder.result(params, custom_id="req-1", message_id=MESSAGE_ID)


def usage_of(params: dict[str, Any], responder: Responder | None = None) -> dict[str, Any]:
    return answer(params, responder)["message"]["usage"]


def reply_text(params: dict[str, Any]) -> str:
    return answer(params)["message"]["content"][0]["text"]


def asking(question: Any, **overrides: Any) -> dict[str, Any]:
    return make_params(messages=[{"role": "user", "content": question}], **overrides)


def sdk_line(result: dict[str, Any]) -> MessageBatchIndividualResponse:
    """The results line as the official SDK types read it: proof the shape conforms."""
    return MessageBatchIndividualResponse.model_validate({"custom_id": "req-1", "result": result})


def sdk_message(result: dict[str, Any]) -> Any:
    line = sdk_line(result)
    assert isinstance(line.result, MessageBatchSucceededResult)
    return line.result.message


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def json_tokens(value: Any) -> int:
    return tokens(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def schema_violations(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """A tiny JSON Schema validator for the subset the responder promises to satisfy."""
    if "const" in schema:
        return [] if value == schema["const"] else [f"{path}: not the const"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: not in the enum"]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    type_checks = {
        "string": isinstance(value, str),
        "integer": is_number and float(value).is_integer(),
        "number": is_number,
        "boolean": isinstance(value, bool),
        "null": value is None,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(type_checks[k] for k in kinds):
        return [f"{path}: not of type {kind}"]
    problems = []
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        problems.append(f"{path}: shorter than minLength")
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        problems.append(f"{path}: longer than maxLength")
    if is_number and not schema.get("minimum", value) <= value <= schema.get("maximum", value):
        problems.append(f"{path}: out of range")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: fewer than minItems")
        for index, item in enumerate(value):
            problems += schema_violations(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(value, dict):
        problems += [f"{path}.{name}: missing" for name in schema.get("required", []) if name not in value]
        for name, item in value.items():
            problems += schema_violations(item, schema.get("properties", {}).get(name, {}), f"{path}.{name}")
    return problems


# --- the message ------------------------------------------------------------------------------


def test_default_answer_is_a_complete_message_the_sdk_accepts() -> None:
    # Given a plain request
    params = make_params()

    # When the responder answers it
    result = answer(params)

    # Then it is a succeeded result with every Message and usage field, in the API's order
    assert result["type"] == "succeeded"
    message = result["message"]
    assert list(message) == MESSAGE_KEYS
    assert list(message["usage"]) == USAGE_KEYS
    assert message["id"] == MESSAGE_ID
    assert (message["type"], message["role"], message["model"]) == ("message", "assistant", MODEL)
    assert message["container"] is None
    assert message["usage"]["server_tool_use"] is None
    assert message["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }
    # And the official SDK reads it as a Message
    parsed = sdk_message(result)
    assert isinstance(parsed.content[0], TextBlock)
    assert parsed.usage.service_tier == "batch"
    assert parsed.stop_reason == "end_turn"


def test_same_params_and_seed_give_the_same_answer() -> None:
    # Given two responders with the same seed and fresh caches
    first, second = Responder(cache=SetCache(), seed=7), Responder(cache=SetCache(), seed=7)

    # When both answer the same request
    # Then the results are identical
    assert answer(make_params(), first) == answer(make_params(), second)


def test_another_seed_or_another_prompt_gives_another_answer() -> None:
    # Given one request answered with seed 0
    baseline = answer(make_params())["message"]["content"]

    # When the seed or the prompt changes
    reseeded = answer(make_params(), Responder(cache=SetCache(), seed=1))["message"]["content"]
    reworded = answer(asking("What is the capital of Spain?"))["message"]["content"]

    # Then the answers differ
    assert reseeded != baseline
    assert reworded != baseline


def test_reply_says_it_is_emulated_and_echoes_the_last_user_text() -> None:
    # Given a conversation whose last user turn is a list of blocks with untidy whitespace
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "  second\n  question "}]},
    ]

    # When the responder answers
    text = reply_text(make_params(messages=messages))

    # Then the reply echoes a tidy snippet of that last user text
    assert text.startswith("Emulated reply to: 'second question'.")


def test_long_user_text_is_echoed_as_a_short_snippet() -> None:
    # Given a long question
    question = "word " * 100

    # When the responder answers
    text = reply_text(asking(question))

    # Then only its first 40 characters are echoed
    assert text.startswith(f"Emulated reply to: '{'word ' * 8}...'.")


def test_reply_lengths_vary_between_about_8_and_60_tokens() -> None:
    # Given many different questions
    questions = [f"question number {n}" for n in range(60)]

    # When the responder answers each
    lengths = {usage_of(asking(question))["output_tokens"] for question in questions}

    # Then the lengths vary, from 8 to 60 tokens give or take the last filler word
    assert len(lengths) > 10
    assert min(lengths) >= 8
    assert max(lengths) <= 60 + 3


# --- token estimates --------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["s" * 10, [{"type": "text", "text": "s" * 10}]])
def test_input_tokens_count_tools_system_and_messages_at_four_characters_per_token(
    system: str | list[dict[str, Any]],
) -> None:
    # Given a request with a tool, a system prompt (string or blocks) and three turns
    messages = [
        {"role": "user", "content": "u" * 8},
        {"role": "assistant", "content": [{"type": "text", "text": "a" * 5}]},
        {"role": "user", "content": "u"},
    ]
    params = make_params(tools=[WEATHER_TOOL], system=system, messages=messages)

    # When the responder answers
    usage = usage_of(params)

    # Then input tokens are the tool's JSON size plus ceil(characters / 4) of each text
    assert usage["input_tokens"] == json_tokens(WEATHER_TOOL) + 3 + 2 + 2 + 1


def test_output_tokens_are_estimated_from_the_answer_text() -> None:
    # Given a plain request
    # When the responder answers
    message = answer(make_params())["message"]

    # Then output tokens are ceil(characters / 4) of the reply
    assert message["usage"]["output_tokens"] == tokens(message["content"][0]["text"])


@pytest.mark.parametrize("kind", ["image", "document"])
def test_images_and_documents_cost_a_fixed_number_of_tokens_whatever_their_size(kind: str) -> None:
    # Given a small and a large attachment of the same kind
    def with_attachment(size: int) -> dict[str, Any]:
        source = {"type": "base64", "media_type": "image/png", "data": "A" * size}
        content = [{"type": kind, "source": source}, {"type": "text", "text": "Describe it."}]
        return asking(content)

    # When the responder answers both
    small = usage_of(with_attachment(10))["input_tokens"]
    large = usage_of(with_attachment(100_000))["input_tokens"]

    # Then both cost the fixed amount plus the text
    assert small == large == MEDIA_TOKENS + tokens("Describe it.")


def test_unusual_content_is_counted_by_its_json_size_without_failing() -> None:
    # Given blocks of unknown and tool-related types, and a message whose content is not a list
    mystery = {"type": "mystery", "payload": [1, 2, 3]}
    tool_result = {"type": "tool_result", "tool_use_id": "toolu_01x", "content": "sunny"}
    messages = [
        {"role": "user", "content": [mystery, tool_result]},
        {"role": "user", "content": 42},
    ]

    # When the responder answers
    result = answer(make_params(messages=messages))

    # Then it still succeeds, counting each odd block by the size of its JSON
    expected = json_tokens(mystery) + json_tokens(tool_result) + json_tokens(42)
    assert result["message"]["usage"]["input_tokens"] == expected
    assert sdk_message(result).content[0].text.startswith("Emulated reply to: ''.")


# --- max_tokens and stop sequences ------------------------------------------------------------


def test_answer_within_max_tokens_ends_the_turn() -> None:
    # Given a generous max_tokens
    # When the responder answers
    message = answer(make_params(max_tokens=1000))["message"]

    # Then the turn ends naturally
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def test_max_tokens_cuts_answer_and_reports_max_tokens() -> None:
    # Given the full answer to a request
    full_text = reply_text(make_params(max_tokens=1000))

    # When the same request allows only 3 tokens
    result = answer(make_params(max_tokens=3))

    # Then the answer is the first 3 tokens' worth of the full one, and says why it stopped
    message = sdk_message(result)
    assert message.content[0].text == full_text[:12]
    assert message.stop_reason == "max_tokens"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == 3


def test_stop_sequence_cuts_before_its_first_occurrence() -> None:
    # Given a question echoed into the reply and two stop sequences found in it
    params = asking("alpha STOP beta HALT", stop_sequences=["HALT", "STOP"])

    # When the responder answers
    message = sdk_message(answer(params))

    # Then the reply ends just before the earliest one, which is reported
    assert message.content[0].text == "Emulated reply to: 'alpha "
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "STOP"
    assert message.usage.output_tokens == tokens("Emulated reply to: 'alpha ")


def test_stop_sequence_absent_from_the_answer_changes_nothing() -> None:
    # Given a stop sequence the reply never contains
    plain = answer(make_params())["message"]

    # When the responder answers with it
    message = answer(make_params(stop_sequences=["\u2603"]))["message"]

    # Then the answer is the same and ends the turn
    assert message["content"] == plain["content"]
    assert message["stop_reason"] == "end_turn"


def test_max_tokens_reached_before_a_stop_sequence_wins() -> None:
    # Given a stop sequence late in the reply and a budget that runs out before it
    params = asking("alpha STOP", stop_sequences=["STOP"], max_tokens=2)

    # When the responder answers
    message = answer(params)["message"]

    # Then it stopped on max_tokens
    assert (message["stop_reason"], message["stop_sequence"]) == ("max_tokens", None)
    assert message["content"][0]["text"] == "Emulated"


@given(max_tokens=st.integers(min_value=1, max_value=150), question=st.text(max_size=80))
def test_built_in_answer_never_exceeds_max_tokens_and_is_a_prefix_of_the_full_one(
    max_tokens: int, question: str
) -> None:
    # Given a request with thinking, answered once without a tight budget
    params = asking(question, thinking={"type": "enabled"})
    full = answer(params | {"max_tokens": 10_000})["message"]

    # When the same request has a random max_tokens
    message = answer(params | {"max_tokens": max_tokens})["message"]

    # Then output stays within it, the answer is a prefix of the full one without empty blocks,
    # and max_tokens is reported exactly when the full answer did not fit
    assert message["usage"]["output_tokens"] <= max_tokens
    for cut, whole in zip(message["content"], full["content"], strict=False):
        field = "thinking" if whole["type"] == "thinking" else "text"
        assert cut[field]
        assert whole[field].startswith(cut[field])
    fits = full["usage"]["output_tokens"] <= max_tokens
    assert message["stop_reason"] == ("end_turn" if fits else "max_tokens")
    sdk_message({"type": "succeeded", "message": message})


# --- prompt caching ---------------------------------------------------------------------------

# 1100 tokens (Sonnet caches from 1024), with a 5-minute breakpoint
BIG_TOKENS = 1100
BIG_SYSTEM = {"type": "text", "text": "s" * 4 * BIG_TOKENS, "cache_control": {"type": "ephemeral"}}


def test_first_request_with_a_breakpoint_writes_the_cache_and_the_next_reads_it() -> None:
    # Given a responder and a request with a cached system prompt
    responder = Responder(cache=SetCache())
    params = make_params(system=[BIG_SYSTEM])

    # When the request is answered twice
    first = answer(params, responder)
    second = answer(params, responder)

    # Then the first writes the prefix (5 minutes by default) and the second reads it
    written = sdk_message(first).usage
    assert written.cache_creation_input_tokens == BIG_TOKENS
    assert written.cache_read_input_tokens == 0
    assert written.cache_creation is not None
    assert written.cache_creation.ephemeral_5m_input_tokens == BIG_TOKENS
    assert written.input_tokens == tokens(QUESTION)
    read = sdk_message(second).usage
    assert read.cache_creation_input_tokens == 0
    assert read.cache_read_input_tokens == BIG_TOKENS
    assert read.input_tokens == tokens(QUESTION)


def test_cache_writes_are_split_by_the_ttl_of_each_breakpoint() -> None:
    # Given a 1-hour breakpoint followed by a 5-minute one
    one_hour = {
        "type": "text",
        "text": "h" * 4400,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    five_minutes = {"type": "text", "text": "m" * 200, "cache_control": {"type": "ephemeral"}}

    # When the request is first answered
    usage = usage_of(make_params(system=[one_hour, five_minutes]))

    # Then each segment is written with the ttl of the breakpoint that ends it
    assert usage["cache_creation_input_tokens"] == 1150
    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 50,
        "ephemeral_1h_input_tokens": 1100,
    }


def test_longer_prompt_reads_the_cached_prefix_and_writes_the_rest() -> None:
    # Given a cached system prompt
    responder = Responder(cache=SetCache())
    answer(make_params(system=[BIG_SYSTEM]), responder)

    # When a request adds a cached document block after it
    document = {
        "type": "text",
        "text": "d" * 80,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    messages = [{"role": "user", "content": [document, {"type": "text", "text": QUESTION}]}]
    usage = usage_of(make_params(system=[BIG_SYSTEM], messages=messages), responder)

    # Then the shared prefix is read and only the new part is written
    assert usage["cache_read_input_tokens"] == BIG_TOKENS
    assert usage["cache_creation_input_tokens"] == 20
    assert usage["cache_creation"]["ephemeral_1h_input_tokens"] == 20
    assert usage["input_tokens"] == tokens(QUESTION)


def test_top_level_cache_control_marks_the_last_block() -> None:
    # Given a request with automatic caching and no block-level breakpoint
    responder = Responder(cache=SetCache())
    params = make_params(system="s" * 4096, cache_control={"type": "ephemeral"})

    # When it is answered twice
    first = usage_of(params, responder)
    second = usage_of(params, responder)

    # Then the whole prompt is written, then read
    whole_prompt = 1024 + tokens(QUESTION)
    assert (first["cache_creation_input_tokens"], first["input_tokens"]) == (whole_prompt, 0)
    assert (second["cache_read_input_tokens"], second["input_tokens"]) == (whole_prompt, 0)


def test_tools_can_carry_a_breakpoint() -> None:
    # Given a tool, long enough to be cached, marked as cached
    long_tool = WEATHER_TOOL | {"description": "The forecast for a city. " * 200}
    tool = long_tool | {"cache_control": {"type": "ephemeral"}}

    # When the request is answered
    usage = usage_of(make_params(tools=[tool]))

    # Then the tool's tokens, not counting its cache_control, are written
    assert usage["cache_creation_input_tokens"] == json_tokens(long_tool)


def test_cache_keys_are_the_model_and_a_hash_ignoring_cache_control() -> None:
    # Given a prefix cached with a 5-minute ttl
    cache = SetCache()
    responder = Responder(cache=cache)
    answer(make_params(system=[BIG_SYSTEM]), responder)

    # When the same prefix comes with a 1-hour ttl, and again for another model
    ttl_changed = BIG_SYSTEM | {"cache_control": {"type": "ephemeral", "ttl": "1h"}}
    same_prefix = usage_of(make_params(system=[ttl_changed]), responder)
    other_model = answer(make_params(system=[BIG_SYSTEM], model="claude-opus-4-1"), responder)

    # Then the first reads the cache, the other model writes its own entry
    assert same_prefix["cache_read_input_tokens"] == BIG_TOKENS
    assert other_model["message"]["usage"]["cache_creation_input_tokens"] == BIG_TOKENS
    assert all(re.fullmatch(r"claude-(sonnet-4-5|opus-4-1):[0-9a-f]{64}", key) for key in cache.keys)
    assert len(cache.keys) == 2


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-sonnet-4-5", 1024),
        ("claude-opus-4-1-20250805", 1024),
        ("claude-opus-4-5-20251101", 4096),
        ("claude-haiku-4-5", 4096),
        ("claude-3-5-haiku-20241022", 2048),
        ("claude-3-haiku-20240307", 2048),
        ("claude-unknown-9", 1024),
    ],
)
def test_a_breakpoint_below_the_models_minimum_caches_nothing(model: str, minimum: int) -> None:
    # Given a responder, and the same system prompt one token short of the minimum and at it
    responder = Responder(cache=SetCache())
    below = make_params(model=model, system=[BIG_SYSTEM | {"text": "b" * 4 * (minimum - 1)}])
    at = make_params(model=model, system=[BIG_SYSTEM | {"text": "a" * 4 * minimum}])

    # When each is answered twice
    below_usages = [usage_of(below, responder) for _ in range(2)]
    at_usages = [usage_of(at, responder) for _ in range(2)]

    # Then the short prefix is plain input both times; the one at the minimum is written, then read
    for usage in below_usages:
        assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (0, 0)
        assert usage["input_tokens"] == minimum - 1 + tokens(QUESTION)
    assert at_usages[0]["cache_creation_input_tokens"] == minimum
    assert at_usages[1]["cache_read_input_tokens"] == minimum


def test_without_breakpoints_every_cache_field_is_zero() -> None:
    # Given a responder that has already seen this prompt
    responder = Responder(cache=SetCache())
    answer(make_params(), responder)

    # When it is answered again, with no cache_control anywhere
    usage = usage_of(make_params(), responder)

    # Then nothing is written nor read
    assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }
    assert usage["input_tokens"] == tokens(QUESTION)


# --- tools ------------------------------------------------------------------------------------


def test_forced_tool_gets_a_tool_use_block_whose_input_satisfies_the_schema() -> None:
    # Given a request forcing the second of two tools
    params = make_params(tools=[CLOCK_TOOL, WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"})

    # When the responder answers
    result = answer(params)

    # Then the only block calls that tool with a valid input, and the turn stops for it
    message = sdk_message(result)
    (block,) = message.content
    assert isinstance(block, ToolUseBlock)
    assert block.name == "get_weather"
    assert re.fullmatch(r"toolu_01[1-9A-HJ-NP-Za-km-z]{22}", block.id)
    assert schema_violations(block.input, WEATHER_TOOL["input_schema"]) == []
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == json_tokens(result["message"]["content"][0])


def test_any_tool_choice_uses_the_first_tool() -> None:
    # Given a request that must use some tool
    params = make_params(tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice={"type": "any"})

    # When the responder answers
    message = answer(params)["message"]

    # Then it calls the first one
    assert [block["name"] for block in message["content"]] == ["get_weather"]
    assert message["stop_reason"] == "tool_use"


def test_forcing_a_tool_that_is_not_offered_falls_back_to_text() -> None:
    # Given a request forcing a tool missing from its tools
    params = make_params(tools=[CLOCK_TOOL], tool_choice={"type": "tool", "name": "get_weather"})

    # When the responder answers
    message = answer(params)["message"]

    # Then it answers in text
    assert [block["type"] for block in message["content"]] == ["text"]
    assert message["stop_reason"] == "end_turn"


@pytest.mark.parametrize("tool_choice", [{"type": "auto"}, {"type": "none"}, None])
def test_unforced_tool_choice_answers_in_text(tool_choice: dict[str, str] | None) -> None:
    # Given tools the model may, but need not, use
    params = make_params(tools=[WEATHER_TOOL], tool_choice=tool_choice)

    # When the responder answers
    message = answer(params)["message"]

    # Then it answers in text
    assert [block["type"] for block in message["content"]] == ["text"]


def test_tool_input_covers_every_schema_construct() -> None:
    # Given a schema using every type, nesting, enums, consts, bounds and minItems, all required
    point = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    address = {
        "type": "object",
        "properties": {"street": {"type": "string"}, "zip": {"type": "integer"}},
        "required": ["street", "zip"],
    }
    properties = {
        "name": {"type": "string", "minLength": 12, "maxLength": 14},
        "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.5},
        "count": {"type": "integer", "maximum": -3},
        "flag": {"type": "boolean"},
        "nothing": {"type": "null"},
        "maybe": {"type": ["string", "null"]},
        "mode": {"enum": ["fast", "slow"]},
        "version": {"const": 2},
        "address": address,
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        "points": {"type": "array", "items": point},
    }
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    params = make_params(tools=[{"name": "everything", "input_schema": schema}], tool_choice={"type": "any"})

    # When that tool is forced
    tool_input = answer(params)["message"]["content"][0]["input"]

    # Then every property is present and valid
    assert schema_violations(tool_input, schema) == []
    assert set(tool_input) == set(properties)
    assert len(tool_input["tags"]) >= 3


_NAMES = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6)
_LEAF_SCHEMAS = st.one_of(
    st.sampled_from(
        [
            {"type": "string"},
            {"type": "number"},
            {"type": "integer"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": ["integer", "null"]},
        ]
    ),
    st.builds(
        lambda low, extra: {"type": "string", "minLength": low, "maxLength": low + extra},
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    st.builds(
        lambda low, span: {"type": "integer", "minimum": low, "maximum": low + span},
        st.integers(-1000, 1000),
        st.integers(0, 50),
    ),
    st.builds(
        lambda low, span: {"type": "number", "minimum": low, "maximum": low + span},
        st.floats(-1000, 1000),
        st.floats(0, 100),
    ),
    st.lists(st.text(max_size=5), min_size=1, max_size=4, unique=True).map(lambda e: {"enum": e}),
    st.integers().map(lambda value: {"const": value}),
)


def _object_schemas(values: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def with_required(properties: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        required = st.lists(st.sampled_from(sorted(properties)), unique=True) if properties else st.just([])
        return required.map(lambda names: {"type": "object", "properties": properties, "required": names})

    return st.dictionaries(_NAMES, values, max_size=4).flatmap(with_required)


_SCHEMAS = st.recursive(
    _LEAF_SCHEMAS,
    lambda inner: st.one_of(
        st.builds(
            lambda items, least: {"type": "array", "items": items, "minItems": least},
            inner,
            st.integers(0, 4),
        ),
        _object_schemas(inner),
    ),
    max_leaves=12,
)


@given(schema=_object_schemas(_SCHEMAS))
def test_forced_tool_input_satisfies_any_generated_schema(schema: dict[str, Any]) -> None:
    # Given a tool with a randomly built input schema
    params = make_params(tools=[{"name": "random_tool", "input_schema": schema}], tool_choice={"type": "any"})

    # When that tool is forced
    result = answer(params)

    # Then its input validates against the schema, and the SDK reads the block
    assert schema_violations(result["message"]["content"][0]["input"], schema) == []
    assert isinstance(sdk_message(result).content[0], ToolUseBlock)


# --- thinking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("thinking", [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}])
def test_thinking_puts_a_signed_thinking_block_first_and_counts_it_as_output(
    thinking: dict[str, Any],
) -> None:
    # Given a request with thinking on
    params = make_params(thinking=thinking)

    # When the responder answers
    message = sdk_message(answer(params))

    # Then a signed thinking block comes before the text, and both count as output
    thought, reply = message.content
    assert isinstance(thought, ThinkingBlock)
    assert isinstance(reply, TextBlock)
    assert re.fullmatch(r"[A-Za-z0-9+/]{20,}={0,2}", thought.signature)
    assert message.usage.output_tokens == tokens(thought.thinking) + tokens(reply.text)


def test_thinking_counts_toward_max_tokens() -> None:
    # Given the thinking a request gets with room to spare
    params = make_params(thinking={"type": "enabled", "budget_tokens": 1024})
    thought = answer(params)["message"]["content"][0]["thinking"]

    # When max_tokens leaves room for only 2 tokens of text after it
    message = answer(params | {"max_tokens": tokens(thought) + 2})["message"]

    # Then the text is cut to those 2 tokens
    assert message["content"][1]["text"] == "Emulated"
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == tokens(thought) + 2


def test_disabled_thinking_adds_no_thinking_block() -> None:
    # Given thinking explicitly disabled
    # When the responder answers
    message = answer(make_params(thinking={"type": "disabled"}))["message"]

    # Then there is only text
    assert [block["type"] for block in message["content"]] == ["text"]


# --- user responders --------------------------------------------------------------------------


def test_user_responder_gets_params_and_custom_id_and_its_text_is_never_cut() -> None:
    # Given a user responder returning a long text, and a small max_tokens
    calls: list[tuple[dict[str, Any], str]] = []

    def long_answer(params: dict[str, Any], custom_id: str) -> str:
        calls.append((params, custom_id))
        return "long answer " * 20

    params = make_params(max_tokens=5)

    # When the responder answers
    message = sdk_message(answer(params, Responder(cache=SetCache(), user=long_answer)))

    # Then the user's text is one whole text block, ending the turn, with its tokens counted
    assert calls == [(params, "req-1")]
    assert [block.text for block in message.content if isinstance(block, TextBlock)] == ["long answer " * 20]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == tokens("long answer " * 20)
    assert message.id == MESSAGE_ID


def test_user_responder_list_is_the_content_and_a_tool_use_stops_for_the_tool() -> None:
    # Given a user responder returning text and a tool call
    blocks = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01abc", "name": "get_time", "input": {}},
    ]
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: blocks)

    # When the responder answers
    message = sdk_message(answer(make_params(), responder))

    # Then those are the content blocks and the turn stops for the tool
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.stop_reason == "tool_use"


def test_user_responder_partial_succeeded_message_is_completed() -> None:
    # Given a user responder returning a succeeded result with only content and a stop reason
    partial = {"content": [{"type": "text", "text": "I can't help."}], "stop_reason": "refusal"}
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: {"type": "succeeded", "message": partial})

    # When the responder answers
    result = answer(make_params(), responder)

    # Then every missing field is filled in and the given ones are kept
    assert list(result["message"]) == MESSAGE_KEYS
    message = sdk_message(result)
    assert message.stop_reason == "refusal"
    assert message.id == MESSAGE_ID
    assert message.model == MODEL
    assert message.usage.output_tokens == tokens("I can't help.")
    assert message.usage.input_tokens == tokens(QUESTION)


def test_user_succeeded_result_without_content_gets_the_built_in_answer_and_keeps_given_usage() -> None:
    # Given a user responder that only overrides the output token count
    override = {"type": "succeeded", "message": {"usage": {"output_tokens": 999}}}
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: override)

    # When the responder answers
    message = answer(make_params(), responder)["message"]

    # Then the content is the built-in reply and usage merges the given field into the computed ones
    assert message["content"] == answer(make_params())["message"]["content"]
    assert message["usage"]["output_tokens"] == 999
    assert message["usage"]["input_tokens"] == tokens(QUESTION)
    assert list(message["usage"]) == USAGE_KEYS


@pytest.mark.parametrize(
    "error",
    [
        {"type": "overloaded_error", "message": "Overloaded"},
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": None,
        },
    ],
    ids=["bare", "envelope"],
)
def test_user_errored_result_ends_up_in_the_nested_error_envelope(error: dict[str, Any]) -> None:
    # Given a user responder returning an errored result, bare or already wrapped
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: {"type": "errored", "error": error})

    # When the responder answers
    result = answer(make_params(), responder)

    # Then the error sits in the API's nested envelope
    assert result == {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": None,
        },
    }
    line = sdk_line(result)
    assert isinstance(line.result, MessageBatchErroredResult)
    assert line.result.error.error.type == "overloaded_error"


def test_user_errored_result_without_details_is_an_api_error() -> None:
    # Given a user responder returning an errored result and nothing more
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: {"type": "errored"})

    # When the responder answers
    line = sdk_line(answer(make_params(), responder))

    # Then it is an api_error with a message
    assert isinstance(line.result, MessageBatchErroredResult)
    assert line.result.error.error.type == "api_error"
    assert line.result.error.error.message


@pytest.mark.parametrize(
    ("kind", "sdk_type"),
    [("canceled", MessageBatchCanceledResult), ("expired", MessageBatchExpiredResult)],
)
def test_user_canceled_or_expired_result_is_passed_through(kind: str, sdk_type: type) -> None:
    # Given a user responder returning a canceled or expired result
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: {"type": kind})

    # When the responder answers
    result = answer(make_params(), responder)

    # Then that is the result
    assert result == {"type": kind}
    assert isinstance(sdk_line(result).result, sdk_type)


@pytest.mark.parametrize("bad_answer", [42, None, {"type": "text", "text": "hi"}])
def test_user_responder_other_answers_are_rejected_with_a_clear_error(bad_answer: Any) -> None:
    # Given a user responder returning something that is neither content nor a result
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: bad_answer)

    # When the responder answers
    # Then it raises, saying what a responder must return
    with pytest.raises(TypeError, match="a responder must return a str, a list of content blocks"):
        answer(make_params(), responder)


def test_user_responder_usage_includes_prompt_caching() -> None:
    # Given a user responder and a request with a cached system prompt
    responder = Responder(cache=SetCache(), user=lambda _params, _custom_id: "ok")
    params = make_params(system=[BIG_SYSTEM])

    # When the request is answered twice
    first = usage_of(params, responder)
    second = usage_of(params, responder)

    # Then caching is accounted as for the built-in responder
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (BIG_TOKENS, 0)
    assert (second["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (0, BIG_TOKENS)


# --- loading a user responder -----------------------------------------------------------------


def test_load_responder_returns_the_named_callable() -> None:
    # Given a spec naming a callable in an importable module
    # When it is loaded
    # Then it is that callable
    assert load_responder("json:dumps") is json.dumps


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("json.dumps", "must look like 'package.module:callable'"),
        ("json:", "must look like 'package.module:callable'"),
        (":dumps", "must look like 'package.module:callable'"),
        ("batchdrop_no_such_module:answer", "cannot import 'batchdrop_no_such_module'"),
        ("json:no_such_function", "module 'json' has no 'no_such_function'"),
        ("math:pi", "'pi' is not callable"),
    ],
)
def test_load_responder_rejects_a_bad_spec_naming_it(spec: str, reason: str) -> None:
    # Given a spec that does not lead to a callable
    # When it is loaded
    # Then a ValueError names the spec and the reason
    with pytest.raises(ValueError, match=re.escape(reason)) as raised:
        load_responder(spec)
    assert repr(spec) in str(raised.value)
