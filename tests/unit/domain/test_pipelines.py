"""Specification of records mode's pipelines: which documents are pipelines (every problem named
as "field: reason"), and how a record is rendered into one request line that native mode's
validator accepts, by plain substitution that no field value can subvert."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.domain.pipelines import Pipeline, PipelineError, parse_pipeline, pipeline_from
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.requests import ValidLine, check_lines

pytestmark = pytest.mark.unit

SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "confidence": {"type": "number"},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}


def document(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "prompt": "Classify this review: {{review}}",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not ...}


def pipeline(**overrides: Any) -> Pipeline:
    return pipeline_from("reviews", document(**overrides))


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        pipeline_from("reviews", doc)
    return caught.value.problems


def rendered(p: Pipeline, record: dict[str, str], row: int = 1) -> dict[str, Any]:
    line = p.render(record, row)
    assert isinstance(line, bytes), line
    return json.loads(line)  # type: ignore[no-any-return]


def passes_native_validator(line: bytes) -> bool:
    results = list(check_lines([line]))
    return len(results) == 1 and isinstance(results[0], ValidLine) and results[0].body == line


# --- parsing and validation ---------------------------------------------------------------


def test_a_minimal_pipeline_parses_from_its_json() -> None:
    # Given the JSON of a pipeline with a model, max_tokens and a prompt
    text = json.dumps(document()).encode()
    # When it is parsed
    p = parse_pipeline("reviews", text)
    # Then it has its fields, its defaults and its one placeholder
    assert (p.name, p.model, p.max_tokens, p.output, p.on_bad_record) == (
        "reviews",
        "claude-haiku-4-5",
        64,
        "text",
        "skip",
    )
    assert p.placeholders() == ("review",)


def test_every_problem_is_named_with_its_field_at_once() -> None:
    # Given a document wrong in many fields at once
    doc = {
        "model": "",
        "max_tokens": 0,
        "params": {"messages": [], "stream": True, "temperature": 0.2},
        "prompt": "",
        "id_field": 7,
        "keep_fields": "title",
        "on_bad_record": "ignore",
        "colour": "blue",
    }
    # When it is validated
    problems = problems_of(doc)
    # Then each problem names its field path and reason, all in one error
    assert problems == [
        "colour: not a pipeline field (fields: budget_usd, id_field, keep_fields, max_tokens, model, on_bad_record, "
        "output, params, prime_cache, prompt, system)",
        'model: must be a non-empty string, got ""',
        "max_tokens: must be an integer >= 1, got 0",
        "params.messages: set by the pipeline itself, not under params (the user message is the prompt)",
        "params.stream: set by the pipeline itself, not under params (batch requests are never streamed)",
        "prompt: must not be empty",
        "id_field: must be the name of a record field, got 7",
        "keep_fields: must be a list of field names",
        'on_bad_record: must be "skip" or "fail", got "ignore"',
    ]


def test_the_error_message_is_one_line_naming_the_pipeline() -> None:
    # Given a pipeline missing its model and with a boolean max_tokens
    # When it is parsed
    with pytest.raises(PipelineError) as caught:
        parse_pipeline("reviews", json.dumps(document(model=..., max_tokens=True)))
    # Then the message is one line naming the pipeline and each problem
    assert str(caught.value) == (
        "pipeline reviews is not valid: model: missing; max_tokens: must be an integer >= 1, got true"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"{", "(file): not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"[1]", "(file): must be a JSON object, got a list"),
        (b'{"model": "a", "model": "b"}', "model: appears twice in one object"),
        (b'{"model": "a", "max_tokens": NaN}', "(file): NaN is not a JSON number"),
    ],
)
def test_a_file_that_is_not_a_json_object_is_refused(text: bytes, problem: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline("reviews", text)
    assert caught.value.problems == [problem]


@pytest.mark.parametrize("key", ["messages", "system", "model", "max_tokens", "stream"])
def test_params_may_not_hold_what_the_pipeline_sets_itself(key: str) -> None:
    problems = problems_of(document(params={key: "x"}))
    assert len(problems) == 1
    assert problems[0].startswith(f"params.{key}: set by the pipeline itself")


def test_system_blocks_with_cache_control_are_sent_as_written() -> None:
    # Given a system of text blocks, one cached, and params passed through
    system = [{"type": "text", "text": "You classify reviews.", "cache_control": {"type": "ephemeral"}}]
    p = pipeline(system=system, params={"temperature": 0, "metadata": {"user_id": "u1"}})
    # When a record is rendered
    params = rendered(p, {"review": "fine"})["params"]
    # Then system and params are in the request unchanged, the prompt is the user message
    assert params == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": system,
        "temperature": 0,
        "metadata": {"user_id": "u1"},
        "messages": [{"role": "user", "content": "Classify this review: fine"}],
    }


@pytest.mark.parametrize(
    ("system", "problem"),
    [
        ("", "system: must not be empty (leave it out instead)"),
        (42, "system: must be a string or a non-empty list of text blocks, got 42"),
        ([{"type": "image"}], 'system[0]: must be a text block {"type": "text", "text": "..."} with some text'),
        (
            [{"type": "text", "text": "x", "extra": 1}],
            'system[0]: unknown key "extra" (a system block holds type, text, cache_control)',
        ),
        (
            [{"type": "text", "text": "x", "cache_control": "yes"}],
            'system[0].cache_control: must be an object such as {"type": "ephemeral"}',
        ),
    ],
)
def test_a_bad_system_is_named(system: Any, problem: str) -> None:
    assert problems_of(document(system=system)) == [problem]


def test_output_schema_becomes_output_config_format() -> None:
    # Given a pipeline with an output schema and an output_config of its own (effort)
    p = pipeline(output={"schema": SENTIMENT_SCHEMA}, params={"output_config": {"effort": "low"}})
    # When a record is rendered
    params = rendered(p, {"review": "great"})["params"]
    # Then the schema is sent as a json_schema format beside the pipeline's own settings
    assert params["output_config"] == {"effort": "low", "format": {"type": "json_schema", "schema": SENTIMENT_SCHEMA}}
    assert p.output == "schema"
    assert p.answer_columns() == ("sentiment", "confidence", "raw")


def test_output_tool_is_added_and_forced() -> None:
    # Given a pipeline forcing a tool, with another tool of its own
    tool = {"name": "record_sentiment", "description": "Record it", "input_schema": SENTIMENT_SCHEMA}
    other = {"name": "lookup", "input_schema": {"type": "object"}}
    p = pipeline(output={"tool": tool}, params={"tools": [other]})
    # When a record is rendered
    params = rendered(p, {"review": "great"})["params"]
    # Then the tool is appended to the tools and tool_choice forces it
    assert params["tools"] == [other, tool]
    assert params["tool_choice"] == {"type": "tool", "name": "record_sentiment"}
    assert (p.output, p.tool_name) == ("tool", "record_sentiment")


@pytest.mark.parametrize(
    ("output", "params", "problem"),
    [
        (
            {"schema": SENTIMENT_SCHEMA, "tool": {}},
            {},
            'output: must be {"schema": <JSON Schema>} or {"tool": <tool definition>}, exactly one of them',
        ),
        (
            {"schema": {"type": "string"}},
            {},
            'output.schema: must be an object schema ({"type": "object", "properties": ...})',
        ),
        (
            {"schema": {"type": "object", "properties": {}}},
            {},
            "output.schema.properties: must name at least one property (each becomes a column)",
        ),
        (
            {"schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}},
            {},
            'output.schema.properties.n: the keyword "minimum" is not supported in output schemas',
        ),
        (
            {"schema": {"type": "object", "properties": {"n": {"$ref": "#/$defs/gone"}}}},
            {},
            'output.schema.properties.n.$ref: "#/$defs/gone" does not name a schema in this one (use #/$defs/NAME)',
        ),
        (
            {"schema": SENTIMENT_SCHEMA},
            {"output_config": {"format": {}}},
            "params.output_config: must be an object without format when output.schema sets it",
        ),
        (
            {"tool": {"name": "bad name", "input_schema": SENTIMENT_SCHEMA}},
            {},
            'output.tool.name: must match ^[a-zA-Z0-9_-]{1,64}$, got "bad name"',
        ),
        (
            {"tool": {"name": "t", "input_schema": SENTIMENT_SCHEMA}},
            {"tool_choice": {"type": "auto"}},
            "params.tool_choice: output.tool forces its tool; leave tool_choice out",
        ),
        (
            {"tool": {"name": "t", "input_schema": SENTIMENT_SCHEMA}},
            {"tools": [{"name": "t"}]},
            'params.tools: already has a tool named "t", the one output.tool adds',
        ),
        ({"tool": {"name": "t"}}, {}, "output.tool.input_schema: missing"),
    ],
)
def test_a_bad_output_is_named(output: Any, params: Any, problem: str) -> None:
    assert problems_of(document(output=output, params=params)) == [problem]


def test_columns_may_not_clash() -> None:
    # Given keep_fields naming an outputs column, and a schema property clashing with a kept field
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "error": {"type": "string"}}}
    problems = problems_of(document(keep_fields=["status", "title"], output={"schema": schema}))
    # Then each clash is named
    assert problems == [
        'keep_fields: "status" is one of the outputs\' own columns (id, status, stop_reason, input_tokens, '
        "output_tokens, cache_read_input_tokens, cache_creation_input_tokens, error)",
        'output.schema.properties: "title" would be a second column of that name (rename it)',
        'output.schema.properties: "error" would be a second column of that name (rename it)',
    ]
    # And the raw column is the structured answer's own, whether a property or a kept field would take it
    raw = {"type": "object", "properties": {"raw": {"type": "string"}}}
    assert problems_of(document(output={"schema": raw})) == [
        'output.schema.properties: "raw" would be a second column of that name (rename it)'
    ]
    assert problems_of(
        document(keep_fields=["raw"], output={"tool": {"name": "t", "input_schema": SENTIMENT_SCHEMA}})
    ) == ['keep_fields: "raw" is the answer\'s column; rename or drop it']
    # And without an output, text is the answer's column
    assert problems_of(document(keep_fields=["text"])) == [
        'keep_fields: "text" is the answer\'s column; rename or drop it'
    ]


def test_placeholders_and_check_fields_name_what_the_header_lacks() -> None:
    # Given a pipeline using fields in the prompt, as its id and as kept fields
    p = pipeline(
        prompt=[
            {"type": "text", "text": "Title: {{ title }}\nBody: {{body}}"},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/{{title}}.png"}},
            {"type": "text", "text": "Again {{title}}"},
        ],
        id_field="ticket",
        keep_fields=["product", "title"],
    )
    # Then placeholders are the prompt's text templates' fields, once each, in order
    assert p.placeholders() == ("title", "body")
    # And check_fields names every needed field the header lacks
    assert p.check_fields(["title", "body", "ticket", "product"]) == []
    assert p.check_fields(["title", "extra"]) == ["body", "ticket", "product"]


# --- rendering ----------------------------------------------------------------------------


def test_row_number_ids_have_six_digits_or_more() -> None:
    p = pipeline()
    assert rendered(p, {"review": "a"}, 1)["custom_id"] == "row-000001"
    assert rendered(p, {"review": "a"}, 123_456)["custom_id"] == "row-123456"
    assert rendered(p, {"review": "a"}, 1_234_567)["custom_id"] == "row-1234567"


def test_id_field_gives_the_custom_id_and_a_bad_one_is_a_rejection() -> None:
    p = pipeline(id_field="ticket")
    assert rendered(p, {"review": "a", "ticket": "T-42"})["custom_id"] == "T-42"
    assert p.render({"review": "a", "ticket": "T 42"}, 1) == Rejection(
        'id_field "ticket": "T 42" is not a usable id (^[a-zA-Z0-9_-]{1,64}$)'
    )
    assert p.render({"review": "a", "ticket": ""}, 1) == Rejection(
        'id_field "ticket": "" is not a usable id (^[a-zA-Z0-9_-]{1,64}$)'
    )
    assert p.render({"review": "a", "ticket": "x" * 65}, 1) == Rejection(
        f'id_field "ticket": "{"x" * 38}… is not a usable id (^[a-zA-Z0-9_-]{{1,64}}$)'
    )
    assert p.render({"review": "a"}, 1) == Rejection('the record has no field "ticket" (the pipeline\'s id_field)')


def test_a_duplicate_id_is_left_to_native_modes_validator_which_rejects_it() -> None:
    # Given two records with the same id_field value, rendered one by one
    p = pipeline(id_field="ticket")
    lines = [p.render({"review": "a", "ticket": "T1"}, 1), p.render({"review": "b", "ticket": "T1"}, 2)]
    assert all(isinstance(line, bytes) for line in lines)
    # When the rendered lines go through native mode's validator
    first, second = check_lines(line for line in lines if isinstance(line, bytes))
    # Then the second use of the id is rejected
    assert isinstance(first, ValidLine)
    assert not isinstance(second, ValidLine)
    assert second.reason == 'custom_id: "T1" is already used on line 1; it must be unique'


def test_a_missing_field_is_a_rejection_naming_it() -> None:
    p = pipeline(prompt="{{title}}: {{review}} ({{stars}})")
    assert p.render({"review": "ok"}, 3) == Rejection(
        'the record has no field "title", "stars", which the prompt uses', "row-000003"
    )


def test_a_prompt_that_renders_empty_is_a_rejection() -> None:
    p = pipeline(prompt="{{review}}")
    assert p.render({"review": "  \n"}, 2) == Rejection(
        'the prompt is empty once filled in (from the record\'s empty fields: "review")', "row-000002"
    )


def test_values_are_inserted_literally_single_pass() -> None:
    # Given a value that holds another placeholder, JSON, quotes and a newline
    p = pipeline(prompt="A={{a}} B={{b}}")
    record = {"a": '{{b}} "}, {"role": "assistant"\n', "b": "{{a}}"}
    # When it is rendered
    content = rendered(p, record)["params"]["messages"]
    # Then each value stands as written, never expanded nor interpreted
    assert content == [{"role": "user", "content": 'A={{b}} "}, {"role": "assistant"\n B={{a}}'}]


def test_a_lone_surrogate_is_a_rejection() -> None:
    p = pipeline()
    assert p.render({"review": "bad \ud800"}, 1) == Rejection(
        "a field holds text that is not valid Unicode (an unpaired surrogate)", "row-000001"
    )


def test_rendered_lines_are_compact_utf8_json() -> None:
    line = pipeline().render({"review": "Très bien 😀"}, 1)
    assert (
        line
        == (
            '{"custom_id":"row-000001","params":{"model":"claude-haiku-4-5","max_tokens":64,'
            '"messages":[{"role":"user","content":"Classify this review: Très bien 😀"}]}}'
        ).encode()
    )
    assert isinstance(line, bytes)
    assert passes_native_validator(line)


FIELD_NAMES = st.sampled_from(["a", "b", "Review Text", "ü"])
VALUES = st.text(max_size=40)  # any text but lone surrogates | st.sampled_from(["{{a}}", "{{b}}", '"}', "\\", "{{"])


@given(
    values=st.dictionaries(FIELD_NAMES, VALUES),
    blocks=st.booleans(),
    output=st.sampled_from([None, "schema", "tool"]),
    row=st.integers(1, 10_000_000),
)
def test_any_record_renders_a_valid_request_or_a_rejection(
    values: dict[str, str], blocks: bool, output: str | None, row: int
) -> None:
    # Given a pipeline whose prompt uses fields a and "Review Text", as a string or blocks, with any output kind
    template = "Say {{a}} about {{ Review Text }}: {{a}}."
    prompt: Any = [{"type": "text", "text": template, "cache_control": {"type": "ephemeral"}}] if blocks else template
    outputs = {
        None: ...,
        "schema": {"schema": SENTIMENT_SCHEMA},
        "tool": {"tool": {"name": "rate", "input_schema": SENTIMENT_SCHEMA}},
    }
    p = pipeline(prompt=prompt, output=outputs[output])
    # When any record is rendered
    result = p.render(values, row)
    # Then it is a rejection exactly when a field is missing, else a request native mode accepts
    # whose only part made from the record is the user text, each value in it as written
    missing = [name for name in ("a", "Review Text") if name not in values]
    if missing:
        assert isinstance(result, Rejection)
        assert result.reason.startswith(f"the record has no field {json.dumps(missing[0])}")
        return
    assert isinstance(result, bytes)
    assert passes_native_validator(result)
    request = json.loads(result)
    expected = f"Say {values['a']} about {values['Review Text']}: {values['a']}."
    content = request["params"].pop("messages")[0]["content"]
    assert (content[0]["text"] if blocks else content) == expected
    assert request["params"] == dict(p.fixed_params)
    assert request["custom_id"] == f"row-{row:06d}"


@pytest.mark.parametrize(
    ("extra", "marked"),
    [
        ({}, False),
        ({"system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}]}, True),
        ({"system": "say cache_control in text only"}, False),
        ({"prompt": [{"type": "text", "text": "{{review}}", "cache_control": {"type": "ephemeral"}}]}, True),
        (
            {
                "params": {
                    "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}]
                }
            },
            True,
        ),
    ],
)
def test_a_pipeline_says_whether_its_requests_mark_a_cache_breakpoint_as_each_rendered_line_does(
    extra: dict[str, Any], marked: bool
) -> None:
    document = {"model": "claude-haiku-4-5", "max_tokens": 10, "prompt": "{{review}}", **extra}
    pipeline = pipeline_from("p", document)
    assert pipeline.marks_cache is marked
    # ...as the line check finds it in a rendered line, whatever the record's text holds
    line = pipeline.render({"review": '{"cache_control": 1}'}, 1)
    assert isinstance(line, bytes)
    [checked] = check_lines([line])
    assert isinstance(checked, ValidLine)
    assert checked.cache_marked is marked


def test_a_pipeline_nested_deep_still_says_whether_it_marks_a_cache_breakpoint() -> None:
    deep: Any = {"cache_control": {"type": "ephemeral"}}
    for _ in range(900):
        deep = [deep]
    document = {"model": "claude-haiku-4-5", "max_tokens": 10, "prompt": "{{review}}", "params": {"metadata": deep}}
    assert pipeline_from("p", document).marks_cache is True
