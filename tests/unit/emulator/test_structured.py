"""Structured answers from the emulator's built-in responder: a JSON document that conforms to
`output_config.format`'s schema (or a forced tool's input that conforms to its input_schema),
checked with the layer's own validator; the `invalid_output` fault's spoilt answers, which that
validator refuses; and the validation of `output_config` and of a count_tokens body."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain.schemas import validate
from batchdrop_local.cli import main
from batchdrop_local.emulator.faults import FaultInjector, FaultSettings
from batchdrop_local.emulator.responder import Responder, prompt_tokens
from batchdrop_local.emulator.structured import SchemaSampler, output_schema, violation
from batchdrop_local.emulator.validation import count_tokens_error, output_config_error, params_error

pytestmark = pytest.mark.unit

MODEL = "claude-haiku-4-5"
MESSAGE_ID = "msg_01TestTestTestTestTestTe"
REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "confidence": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "source": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/source"}]},
        "version": {"const": 2},
        "count": {"type": ["integer", "null"]},
        "when": {"type": "string", "format": "date-time"},
        "done": {"type": "boolean"},
    },
    "required": ["sentiment", "confidence", "tags", "source", "version", "count", "when", "done"],
    "additionalProperties": False,
    "$defs": {
        "source": {
            "type": "object",
            "properties": {"url": {"type": "string", "format": "uri"}, "note": {"type": "string"}},
            "required": ["url"],
            "additionalProperties": False,
        }
    },
}


class SetCache:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def add(self, key: str, ttl: str) -> None:
        self.keys.add(key)


def structured_params(
    schema: dict[str, Any], text: str = "Review: it broke on day two.", **extra: Any
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": text}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    } | extra


def tool_params(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    tool = {"name": "record_review", "description": "Record the review.", "input_schema": schema}
    return {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Review: great value."}],
        "tools": [tool],
        "tool_choice": {"type": "tool", "name": "record_review"},
    } | extra


def message(params: dict[str, Any], custom_id: str = "rec-1", **options: Any) -> dict[str, Any]:
    result = Responder(cache=SetCache()).result(params, custom_id=custom_id, message_id=MESSAGE_ID, **options)
    assert result["type"] == "succeeded"
    return dict(result["message"])


def answer_of(params: dict[str, Any], custom_id: str = "rec-1") -> Any:
    (block,) = message(params, custom_id)["content"]
    assert block["type"] == "text"
    return json.loads(block["text"])


# --- structured outputs -----------------------------------------------------------------------


def test_the_answer_is_a_json_document_that_conforms_to_the_schema_and_ends_the_turn() -> None:
    # Given a request whose output_config asks for every construct of the subset
    params = structured_params(REVIEW)

    # When the built-in responder answers it
    result = message(params)

    # Then its one text block is JSON conforming to the schema, and the turn ended
    (block,) = result["content"]
    assert validate(json.loads(block["text"]), REVIEW) is None
    assert result["stop_reason"] == "end_turn"
    assert result["stop_sequence"] is None
    assert result["usage"]["output_tokens"] == math.ceil(len(block["text"]) / 4)


def test_the_same_request_gets_the_same_answer_and_other_records_get_other_values() -> None:
    # Given one request, and the same params under other custom_ids and other prompts
    params = structured_params(REVIEW)

    # When each is answered
    first, again = answer_of(params, "rec-1"), answer_of(params, "rec-1")
    by_custom_id = {json.dumps(answer_of(params, f"rec-{i}"), sort_keys=True) for i in range(20)}
    by_prompt = {json.dumps(answer_of(structured_params(REVIEW, f"text {i}")), sort_keys=True) for i in range(20)}

    # Then the same request repeats its answer and the others vary
    assert first == again
    assert len(by_custom_id) > 10
    assert len(by_prompt) > 10


def test_optional_properties_and_enum_choices_all_show_up_across_answers() -> None:
    # Given a schema with optional properties, an enum and a type list
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["a", "b", "c"]},
            "note": {"type": "string"},
            "either": {"type": ["integer", "string"]},
        },
        "required": ["label"],
        "additionalProperties": False,
    }

    # When many records are answered
    answers = [answer_of(structured_params(schema), f"rec-{i}") for i in range(60)]

    # Then every enum value, both optional properties present and absent, and both types occur
    assert {a["label"] for a in answers} == {"a", "b", "c"}
    assert any("note" in a for a in answers)
    assert any("note" not in a for a in answers)
    kinds = {type(a["either"]).__name__ for a in answers if "either" in a}
    assert kinds == {"int", "str"}


def test_a_recursive_schema_gets_a_finite_conforming_tree() -> None:
    # Given a tree whose nodes hold an array of nodes, through $ref
    tree = {
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
                "required": ["name", "children"],
                "additionalProperties": False,
            }
        },
    }

    # Then every answer is a tree that conforms
    for i in range(30):
        assert validate(answer_of(structured_params(tree), f"rec-{i}"), tree) is None


def test_the_schema_counts_as_input_and_max_tokens_cuts_the_json() -> None:
    # Given the same prompt with and without an output format
    plain = structured_params(REVIEW)
    del plain["output_config"]

    # Then the format's tokens are input tokens
    assert message(structured_params(REVIEW))["usage"]["input_tokens"] > message(plain)["usage"]["input_tokens"]

    # And a budget too small for the document cuts it, as a model would
    cut = message(structured_params(REVIEW, max_tokens=5))
    assert cut["stop_reason"] == "max_tokens"
    assert len(cut["content"][0]["text"]) == 20


def test_a_forced_tool_wins_over_an_output_format() -> None:
    params = tool_params(REVIEW) | {"output_config": {"format": {"type": "json_schema", "schema": {"type": "null"}}}}
    (block,) = message(params)["content"]
    assert block["type"] == "tool_use"
    assert validate(block["input"], REVIEW) is None


def test_a_forced_tool_gets_one_tool_use_block_whose_input_conforms() -> None:
    # Given a forced tool whose input_schema uses $ref, anyOf and a type list
    result = message(tool_params(REVIEW))

    # Then the content is one tool_use block for that tool, and the turn stops for it
    (block,) = result["content"]
    assert block["type"] == "tool_use"
    assert block["name"] == "record_review"
    assert block["id"].startswith("toolu_01")
    assert validate(block["input"], REVIEW) is None
    assert result["stop_reason"] == "tool_use"


# --- any schema of the subset -----------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "d"])
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, -2.25]) | st.sampled_from(["", "x"])
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
FORMATS = st.sampled_from(["date-time", "date", "time", "email", "uri", "uuid", "hostname"])

LEAVES = (
    st.sampled_from(TYPES).map(lambda name: {"type": name})
    | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True).map(lambda names: {"type": names})
    | st.lists(SCALARS, min_size=1, max_size=3).map(lambda options: {"enum": options})
    | st.lists(st.text(max_size=3), min_size=1, max_size=3).map(lambda options: {"type": "string", "enum": options})
    | SCALARS.map(lambda value: {"const": value})
    | FORMATS.map(lambda fmt: {"type": "string", "format": fmt, "description": "annotation"})
    | st.just({})
    | st.just(True)
)


def _object(props: dict[str, Any], required: list[str], extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = [name for name in required if name in props or extra is not False]
    if extra is not None:
        schema["additionalProperties"] = extra
    return schema


def _composite(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        _object,
        st.dictionaries(NAMES, inner, max_size=4),
        st.lists(NAMES, max_size=3, unique=True),
        st.none() | st.booleans() | inner,
    )
    arrays = st.builds(
        lambda items, low, span: {
            "type": "array",
            "items": items,
            **({} if low is None else {"minItems": low}),
            **({} if span is None else {"maxItems": (low or 0) + span}),
        },
        inner,
        st.none() | st.integers(0, 3),
        st.none() | st.integers(0, 2),
    )
    choices = st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options})
    # An object whose anyOf choices add properties of their own: the value must satisfy both.
    own = st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    added = st.lists(
        st.dictionaries(st.sampled_from(["c", "d"]), inner, min_size=1, max_size=2), min_size=1, max_size=2
    )
    joined = st.builds(
        lambda props, more: (
            _object(props, sorted(props), None) | {"anyOf": [_object(extra, sorted(extra), None) for extra in more]}
        ),
        own,
        added,
    )
    return objects | arrays | choices | joined


SCHEMAS = st.recursive(LEAVES, _composite, max_leaves=10)
ROOTS = st.builds(
    lambda schema, shared, how: {
        "plain": schema,
        "ref": {"$ref": "#/$defs/shared", "$defs": {"shared": shared}},
        "choice": {"anyOf": [schema, {"$ref": "#/$defs/shared"}], "$defs": {"shared": shared}},
        "property": _object({"x": {"$ref": "#/$defs/shared"}, "y": schema}, ["x", "y"], False)
        | {"$defs": {"shared": shared}},
        "ref_and_siblings": {"$ref": "#/$defs/shared", "description": "shared", "$defs": {"shared": shared}},
    }[how],
    SCHEMAS.filter(lambda s: isinstance(s, dict)),
    SCHEMAS,
    st.sampled_from(["plain", "ref", "choice", "property", "ref_and_siblings"]),
).filter(lambda root: isinstance(root, dict))


@settings(max_examples=200, deadline=None)
@given(schema=ROOTS, custom_id=st.text(alphabet="abc123-_", min_size=1, max_size=8))
def test_every_answer_conforms_to_any_schema_of_the_subset(schema: dict[str, Any], custom_id: str) -> None:
    # Given any schema of the subset (reached directly, through $ref or anyOf) and any record
    params = structured_params(schema)

    # When the built-in responder answers
    result = message(params, custom_id)

    # Then the text is JSON that the layer's validator accepts, and the turn ended
    (block,) = result["content"]
    assert validate(json.loads(block["text"]), schema) is None, block["text"]
    assert result["stop_reason"] == "end_turn"


@settings(max_examples=200, deadline=None)
@given(schema=ROOTS, seed=st.integers(0, 2**32), kind=st.sampled_from(["not_json", "not_conforming"]))
def test_a_spoilt_answer_never_passes_for_any_schema(schema: dict[str, Any], seed: int, kind: str) -> None:
    # Given a conforming value of any schema, broken on purpose where the schema has a rule to break
    rng = random.Random(seed)
    value = SchemaSampler(schema, rng).value(schema)
    broken, spoilt = violation(value, schema, schema, rng)
    if broken:
        assert validate(spoilt, schema) is not None, (value, spoilt)

    # When the responder answers a request for it spoilt either way
    (block,) = message(structured_params(schema), str(seed), invalid_output=kind)["content"]

    # Then the answer is not JSON, or JSON the validator refuses
    try:
        document = json.loads(block["text"])
    except json.JSONDecodeError:
        return
    assert kind == "not_conforming"
    assert validate(document, schema) is not None, block["text"]


# --- the invalid_output fault -----------------------------------------------------------------


def test_not_json_wraps_the_document_so_that_it_does_not_parse() -> None:
    (block,) = message(structured_params(REVIEW), invalid_output="not_json")["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(block["text"])
    inner = block["text"].removeprefix("```json\n").removesuffix("\n```")
    assert validate(json.loads(inner), REVIEW) is None


def test_not_conforming_breaks_a_property_and_the_validator_names_it() -> None:
    # When records are answered spoilt
    problems = [
        validate(
            json.loads(
                message(structured_params(REVIEW), f"r{i}", invalid_output="not_conforming")["content"][0]["text"]
            ),
            REVIEW,
        )
        for i in range(30)
    ]

    # Then every answer is valid JSON that fails the schema at a named property
    assert all(problem is not None and problem.startswith("$.") for problem in problems), problems
    assert any(problem and problem.startswith("$.sentiment: must be one of") for problem in problems)


def test_a_schema_with_no_rule_to_break_gets_the_not_json_kind() -> None:
    (block,) = message(structured_params({}), invalid_output="not_conforming")["content"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(block["text"])


def test_a_spoilt_forced_tool_is_either_not_called_or_called_with_a_nonconforming_input() -> None:
    # Not JSON, for a tool: the model answers in text instead of calling it
    result = message(tool_params(REVIEW), invalid_output="not_json")
    assert [block["type"] for block in result["content"]] == ["text"]
    assert result["stop_reason"] == "end_turn"

    # Not conforming: the tool is called with an input the schema refuses
    result = message(tool_params(REVIEW), invalid_output="not_conforming")
    (block,) = result["content"]
    assert block["type"] == "tool_use"
    assert validate(block["input"], REVIEW) is not None
    assert result["stop_reason"] == "tool_use"


def test_only_structured_requests_of_the_built_in_responder_can_be_spoilt() -> None:
    responder = Responder(cache=SetCache())
    plain = structured_params(REVIEW)
    del plain["output_config"]
    assert responder.structured(structured_params(REVIEW))
    assert responder.structured(tool_params(REVIEW))
    assert not responder.structured(plain)
    assert not Responder(cache=SetCache(), user=lambda _p, _c: "x").structured(structured_params(REVIEW))
    # and a plain request asked to be spoilt still answers in prose
    assert message(plain, invalid_output="not_json")["content"][0]["text"].startswith("Emulated reply")


def test_the_fault_spoils_its_share_both_ways_deterministically_and_redraws_on_a_resubmission() -> None:
    # Given a 30 % invalid_output rate
    injector = FaultInjector(FaultSettings(invalid_output=0.3), seed=7)

    # When 4,000 first submissions are drawn
    draws = [injector.invalid_output(f"rec-{i}", 0) for i in range(4000)]

    # Then about 30 % are spoilt, half of them each way, and the injector counted them
    spoilt = [kind for kind in draws if kind is not None]
    assert 0.27 < len(spoilt) / len(draws) < 0.33
    assert 0.4 < spoilt.count("not_json") / len(spoilt) < 0.6
    assert injector.injected["invalid_output_not_json"] + injector.injected["invalid_output_not_conforming"] == len(
        spoilt
    )
    # And the same request draws the same, another attempt draws afresh
    again = FaultInjector(FaultSettings(invalid_output=0.3), seed=7)
    assert [again.invalid_output(f"rec-{i}", 0) for i in range(4000)] == draws
    assert [again.invalid_output(f"rec-{i}", 1) for i in range(4000)] != draws
    # And no rate spoils nothing
    assert all(FaultInjector(FaultSettings(), 7).invalid_output(f"rec-{i}", 0) is None for i in range(500))


# --- validation and count_tokens --------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_config", "problem"),
    [
        ("json", "output_config: Input should be a valid dictionary"),
        ({"format": "json"}, "output_config.format: Input should be a valid dictionary"),
        ({"format": {"schema": {}}}, "output_config.format.type: Field required"),
        ({"format": {"type": "json_object", "schema": {}}}, "output_config.format.type: Input should be 'json_schema'"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema: Field required"),
        (
            {"format": {"type": "json_schema", "schema": []}},
            "output_config.format.schema: Input should be a valid dictionary",
        ),
        ({"effort": "extreme"}, "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"),
    ],
)
def test_a_malformed_output_config_is_refused_naming_the_field(output_config: Any, problem: str) -> None:
    params = structured_params(REVIEW) | {"output_config": output_config}
    assert output_config_error(params) == problem
    assert params_error(params, 64_000) == problem
    assert output_schema(params) is None


@pytest.mark.parametrize(
    "output_config",
    [
        None,
        {},
        {"effort": "low"},
        {"format": None},
        {"format": {"type": "json_schema", "schema": REVIEW}, "effort": "max"},
    ],
)
def test_a_well_formed_output_config_passes(output_config: Any) -> None:
    assert params_error(structured_params(REVIEW) | {"output_config": output_config}, 64_000) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "Input should be a valid dictionary or object to extract fields from"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model: Field required"),
        ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, "model: unknown model 'gpt-4'"),
        ({"model": MODEL}, "messages: Field required"),
        (
            {"model": MODEL, "messages": [{"role": "bot", "content": "hi"}]},
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "output_config": {"format": {"type": "text"}},
            },
            "output_config.format.type: Input should be 'json_schema'",
        ),
    ],
)
def test_a_count_tokens_body_is_checked_without_max_tokens(body: Any, problem: str) -> None:
    assert count_tokens_error(body) == problem


def test_count_tokens_needs_no_max_tokens_and_equals_every_input_token_a_result_reports() -> None:
    # Given params with tools, a system prompt, an output format and cache breakpoints
    # (long enough for Haiku 4.5, which caches from 4096 tokens)
    system = [{"type": "text", "text": "Grade reviews. " * 1100, "cache_control": {"type": "ephemeral"}}]
    params = tool_params(REVIEW, system=system) | {
        "output_config": {"format": {"type": "json_schema", "schema": REVIEW}}
    }
    body = {key: value for key, value in params.items() if key != "max_tokens"}
    assert count_tokens_error(body) is None

    # When the same params are answered twice (the second reads the cache the first wrote)
    responder = Responder(cache=SetCache())
    usages = [responder.result(params, custom_id="c", message_id=MESSAGE_ID)["message"]["usage"] for _ in range(2)]

    # Then count_tokens equals every input token of each, however the cache split them
    for usage in usages:
        total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        assert prompt_tokens(body) == total
    assert usages[0]["cache_creation_input_tokens"] > 0
    assert usages[1]["cache_read_input_tokens"] > 0


def test_the_invalid_output_rate_flag_becomes_the_fault_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an emulator class that records the settings it is given and refuses to listen
    seen: list[Any] = []

    def record(settings: Any) -> None:
        seen.append(settings)
        raise OSError("not listening in a unit test")

    monkeypatch.setattr("batchdrop_local.emulator.server.Emulator", record)

    # When the command is run with the flag
    with pytest.raises(SystemExit):
        main(["emulator", "--port", "0", "--invalid-output-rate", "0.25"])

    # Then the fault settings carry the rate
    assert seen[0].faults.invalid_output == 0.25


def test_an_invalid_output_rate_above_1_exits_with_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--port", "0", "--invalid-output-rate", "1.5"])
    assert exited.value.code == 2
    assert "less than or equal to 1" in capsys.readouterr().err
