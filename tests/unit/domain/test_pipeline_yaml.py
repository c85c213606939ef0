"""Specification of YAML pipelines: a `.yaml` pipeline is the same pipeline, with the same
problems, as its JSON form, and whatever YAML can say that JSON cannot (duplicate keys kept
silently, aliases, keys that are not text, dates, YAML 1.1's `yes` and `012`, NaN, tags) is
refused with the field and the line, never guessed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchdrop.domain import pipeline_yaml
from batchdrop.domain.pipelines import (
    Pipeline,
    PipelineError,
    parse_pipeline,
    pipeline_name_problem,
    syntax_of,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]

REVIEWS_JSON: dict[str, Any] = {
    "description": "Sentiment of product reviews",
    "model": "claude-haiku-4-5",
    "max_tokens": 200,
    "params": {"temperature": 0.5, "stop_sequences": ["###"], "metadata": {"user_id": "u-1"}},
    "system": [{"type": "text", "text": "You classify product reviews.", "cache_control": {"type": "ephemeral"}}],
    "prompt": "Review of {{product}} titled {{title}}:\n\n{{review}}",
    "id_field": "review_id",
    "output": {
        "schema": {
            "type": "object",
            "properties": {
                "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
                "confidence": {"type": ["number", "null"]},
            },
            "required": ["sentiment", "confidence"],
            "additionalProperties": False,
        }
    },
    "keep_fields": ["product"],
    "on_bad_record": "skip",
}

REVIEWS_YAML = """\
# The same pipeline as REVIEWS_JSON, as a person writes it in YAML.
description: Sentiment of product reviews
model: claude-haiku-4-5
max_tokens: 200
params:
  temperature: 0.5
  stop_sequences: ["###"]
  metadata: {user_id: u-1}
system:
  - type: text
    text: You classify product reviews.
    cache_control: {type: ephemeral}
prompt: |-
  Review of {{product}} titled {{title}}:

  {{review}}
id_field: review_id
output:
  schema:
    type: object
    properties:
      sentiment: {type: string, enum: [positive, negative, mixed]}
      confidence:
        type: [number, "null"]
    required: [sentiment, confidence]
    additionalProperties: false
keep_fields: [product]
on_bad_record: skip
"""

RECORD = {"review_id": "r-1", "product": "blender", "title": "Loud", "review": 'Says {{title}} and "quotes"'}


@pytest.fixture(params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with libyaml's C parser and with PyYAML's own (where libyaml is missing)."""
    if request.param == "pure-python":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("this PyYAML is built without libyaml")
    return str(request.param)


def from_yaml(text: str | bytes, name: str = "reviews") -> Pipeline:
    return parse_pipeline(name, text, syntax="yaml", source=f"pipelines/{name}.yaml")


def yaml_problems(text: str | bytes) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        from_yaml(text)
    return caught.value.problems


def json_problems(document: Any) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline("reviews", json.dumps(document))
    return caught.value.problems


# --- the same pipeline ----------------------------------------------------------------------


def test_a_yaml_pipeline_is_the_same_pipeline_as_its_json(parser: str) -> None:
    # Given the same pipeline written as JSON and as YAML (block text, flow lists, comments)
    from_json = parse_pipeline("reviews", json.dumps(REVIEWS_JSON))
    # When the YAML is parsed
    p = from_yaml(REVIEWS_YAML)
    # Then every field is the same, and a record renders to the same request line, byte for byte
    for name in ("model", "max_tokens", "prompt", "id_field", "output", "keep_fields", "on_bad_record"):
        assert getattr(p, name) == getattr(from_json, name), name
    assert json.dumps(p.fixed_params) == json.dumps(from_json.fixed_params)  # the same order too
    assert p.render(RECORD, 1) == from_json.render(RECORD, 1)
    assert isinstance(p.fixed_params["temperature"], float)


def test_invalid_yaml_gives_the_json_forms_problems_each_with_its_line(parser: str) -> None:
    # Given a pipeline wrong in several fields, as JSON and as YAML
    document = {"model": "", "max_tokens": 0, "params": {"stream": True}, "prompt": "x", "colour": "blue"}
    text = 'model: ""\nmax_tokens: 0\nparams:\n  stream: true\nprompt: x\ncolour: blue\n'
    # When both are parsed
    from_json, from_yaml_ = json_problems(document), yaml_problems(text)
    # Then the YAML's problems are the JSON's, in the same order, each with the line of its field
    lines = ["line 6", "line 1", "line 2", "line 4"]
    assert from_yaml_ == [f"{problem} ({line})" for problem, line in zip(from_json, lines, strict=True)]


def test_the_error_names_the_pipeline_file() -> None:
    with pytest.raises(PipelineError) as caught:
        from_yaml("model: x\nprompt: hi\n")
    assert str(caught.value) == "pipelines/reviews.yaml: pipeline reviews is not valid: max_tokens: missing"
    assert caught.value.source == "pipelines/reviews.yaml"


def test_a_nested_problem_gets_the_line_of_its_field(parser: str) -> None:
    text = REVIEWS_YAML.replace("cache_control: {type: ephemeral}", "cache_control: ephemeral")
    assert yaml_problems(text) == ['system[0].cache_control: must be an object such as {"type": "ephemeral"} (line 12)']


# --- what YAML says that JSON cannot --------------------------------------------------------


def test_a_duplicate_key_is_refused_with_its_path_and_line(parser: str) -> None:
    # Given a pipeline whose schema names a property twice (YAML loaders keep the last silently)
    text = "model: m\nmax_tokens: 5\nprompt: p\noutput:\n  schema:\n    type: object\n    type: string\n"
    # Then it is refused, naming the field and the line of the second key
    assert yaml_problems(text) == ["output.schema.type: appears twice in one object (line 7)"]


def test_an_alias_is_refused_and_an_alias_bomb_costs_nothing(parser: str) -> None:
    # Given a value repeated through an alias
    assert yaml_problems("model: &m claude\nmax_tokens: 5\nprompt: *m\n") == [
        "prompt: the alias *m is not accepted (line 3); write the value out"
    ]
    # And a "billion laughs": nine levels of nine aliases each, 387 million strings once expanded
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    started = time.monotonic()
    problems = yaml_problems("\n".join(levels))
    # Then it is refused at its first alias, at once
    assert problems == ["a1[0]: the alias *a0 is not accepted (line 2); write the value out"]
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("key", "shown"),
    [("1", '"1"'), ("true", '"true"'), ("null", '"null"'), ("~", '"~"'), ("1.5", '"1.5"')],
)
def test_a_key_that_is_not_text_is_refused(parser: str, key: str, shown: str) -> None:
    assert yaml_problems(f"model: m\nparams:\n  {key}: x\n") == [
        f"params: the key {key} is not text (line 3); quote it: {shown}"
    ]


def test_a_mapping_or_list_as_a_key_is_refused(parser: str) -> None:
    assert yaml_problems("? [a, b]\n: x\n") == ["(file): a key must be text, not a list (line 1)"]
    assert yaml_problems("params:\n  ? {a: 1}\n  : x\n") == ["params: a key must be text, not a mapping (line 2)"]


def test_a_quoted_key_that_looks_like_a_number_is_text(parser: str) -> None:
    p = from_yaml('model: m\nmax_tokens: 5\nprompt: p\nparams:\n  metadata: {"1": x}\n')
    assert p.fixed_params["metadata"] == {"1": "x"}


def test_a_merge_key_is_refused(parser: str) -> None:
    assert yaml_problems("params:\n  <<: {temperature: 1}\n") == [
        "params: merge keys (<<) are not accepted (line 2); write the fields out"
    ]


def test_dates_and_times_are_kept_as_the_text_written(parser: str) -> None:
    # Given dates and times, which YAML 1.1 would turn into date objects JSON cannot hold
    text = (
        "model: m\nmax_tokens: 5\nprompt: p\ndescription: 2024-01-01\n"
        "params:\n  metadata: {user_id: 2024-01-01T10:00:00Z}\n  stop_sequences: [2001-12-14 21:59:43.10 -5]\n"
    )
    # Then each is the text as written
    p = from_yaml(text)
    assert p.fixed_params["metadata"] == {"user_id": "2024-01-01T10:00:00Z"}
    assert p.fixed_params["stop_sequences"] == ["2001-12-14 21:59:43.10 -5"]


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf"])
def test_nan_and_infinity_are_refused_as_in_json(parser: str, value: str) -> None:
    assert yaml_problems(f"model: m\nmax_tokens: 5\nprompt: p\nparams:\n  temperature: {value}\n") == [
        f"params.temperature: {value} is not a JSON number (line 5)"
    ]


def test_a_number_beyond_a_floats_range_is_refused(parser: str) -> None:
    assert yaml_problems("model: m\nmax_tokens: 1.0e+999\n") == [
        "max_tokens: 1.0e+999 is beyond a JSON number's range (line 2)"
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("yes", "a boolean in YAML 1.1, text in 1.2"),
        ("off", "a boolean in YAML 1.1, text in 1.2"),
        ("NO", "a boolean in YAML 1.1, text in 1.2"),
        ("012", "octal, hex, binary, 1_000 or 1:30"),
        ("0x1F", "octal, hex, binary, 1_000 or 1:30"),
        ("0b101", "octal, hex, binary, 1_000 or 1:30"),
        ("1_000", "octal, hex, binary, 1_000 or 1:30"),
        ("1:30", "octal, hex, binary, 1_000 or 1:30"),
        ("1_000.5", "1_000.5 or 1:30.5"),
        ("1e3", "text in YAML 1.1, a number in 1.2"),
        ("1.5e3", "text in YAML 1.1, a number in 1.2"),
        ("08", "text in YAML 1.1, a number in 1.2"),
    ],
)
def test_a_plain_scalar_yaml_11_and_12_read_differently_is_refused(parser: str, value: str, why: str) -> None:
    # Given a value a YAML 1.1 loader and a YAML 1.2 loader would read as different things
    problems = yaml_problems(f"model: m\nmax_tokens: 5\nprompt: p\nparams:\n  stop_sequences: [a, {value}]\n")
    # Then it is refused, naming the field, why and the line, rather than guessed
    assert len(problems) == 1
    assert problems[0].startswith(f"params.stop_sequences[1]: {value} is ambiguous in YAML ({why}): quote it")
    assert problems[0].endswith("(line 5)")


def test_quoted_values_are_text_and_plain_json_values_keep_their_types(parser: str) -> None:
    # Given quoted look-alikes, and plain values with one meaning in every YAML and in JSON
    text = (
        'model: m\nmax_tokens: +5\nprompt: p\nparams:\n  stop_sequences: ["yes", \'012\', "1e3", "2024-01-01"]\n'
        "  top_k: 0\n  temperature: -0.5\n  top_p: .5\n  x: [true, False, null, ~, 1.0e+3]\n  y:\n"
    )
    # When it is read
    params = from_yaml(text).fixed_params
    # Then the quoted ones are text, and the plain ones JSON's values
    assert params["stop_sequences"] == ["yes", "012", "1e3", "2024-01-01"]
    assert (params["max_tokens"], params["top_k"], params["temperature"], params["top_p"]) == (5, 0, -0.5, 0.5)
    assert params["x"] == [True, False, None, None, 1000.0]
    assert isinstance(params["x"][-1], float)
    assert params["y"] is None


def test_explicit_tags_are_refused_but_str(parser: str) -> None:
    assert from_yaml("model: m\nmax_tokens: 5\nprompt: !!str 12\n").prompt == "12"
    assert from_yaml("model: m\nmax_tokens: 5\nprompt: ! 12\n").prompt == "12"
    for tagged, shown in [
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!python/object:os.system x", "!!python/object:os.system"),
        ("!custom x", "!custom"),
        ("!!set {a}", "!!set"),
        ("!!int 5", "!!int"),
    ]:
        assert yaml_problems(f"model: m\nmax_tokens: 5\nprompt: {tagged}\n") == [
            f"prompt: the YAML tag {shown} is not accepted (line 3); a pipeline holds only JSON's values"
        ]


# --- the file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model: [a\n", "(file): not valid YAML: "),
        ("model: m\n---\nmodel: n\n", "(file): a second YAML document starts at line 2; a pipeline is one document"),
        ("", "(file): must be a JSON object, got null"),
        ("- a\n- b\n", "(file): must be a JSON object, got a list"),
        ("just text\n", "(file): must be a JSON object, got a string"),
        ("model: m\x07\n", "(file): not valid YAML: "),
        (b"model: \xff\n", "(file): not valid UTF-8 at byte 7"),
        ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 110)), "(file): nested deeper than 100 levels (line 101)"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_refused(parser: str, text: str | bytes, problem: str) -> None:
    problems = yaml_problems(text)
    assert len(problems) == 1
    assert problems[0].startswith(problem), problems


def test_a_syntax_error_names_its_line_and_column(parser: str) -> None:
    (problem,) = yaml_problems("model: m\nmax_tokens: 5\nprompt: [a, b\n")
    assert problem.startswith("(file): not valid YAML: ")
    assert problem.endswith("at line 4 column 1")


def test_a_document_over_the_size_bound_is_refused_before_it_is_parsed() -> None:
    text = "model: m\ndescription: " + "x" * pipeline_yaml.MAX_YAML_BYTES + "\n"
    assert yaml_problems(text) == [
        f"(file): {len(text):,} bytes; a YAML pipeline is at most {pipeline_yaml.MAX_YAML_BYTES:,} bytes"
    ]


def test_a_byte_order_mark_is_allowed(parser: str) -> None:
    assert from_yaml("\ufeffmodel: m\nmax_tokens: 5\nprompt: p\n".encode()).model == "m"


# --- names, suffixes and cold start ---------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "syntax"),
    [("a.json", "json"), ("a.yaml", "yaml"), ("A.YML", "yaml"), ("a.jsonl", None), ("a.yaml.gz", None)],
)
def test_the_suffix_says_the_syntax(filename: str, syntax: str | None) -> None:
    assert syntax_of(filename) == syntax


@pytest.mark.parametrize("name", ["reviews", "r", "nightly-2024.v2", "A_b-9", "x" * 100])
def test_a_folder_name_is_a_pipeline_name(name: str) -> None:
    assert pipeline_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "must not be empty"),
        ("a/b", "holds a '/'"),
        ("..", "is not a usable pipeline name"),
        (".hidden", "is not a usable pipeline name"),
        ("has space", "is not a usable pipeline name"),
        ("semi;colon", "is not a usable pipeline name"),
        ("x" * 101, "is not a usable pipeline name"),
        ("naïve", "is not a usable pipeline name"),
    ],
)
def test_an_unsafe_name_is_refused_with_the_reason(name: str, why: str) -> None:
    problem = pipeline_name_problem(name)
    assert problem is not None
    assert why in problem


CHILD = """
import sys
from batchdrop.domain.pipelines import parse_pipeline
parse_pipeline("p", '{"model": "m", "max_tokens": 5, "prompt": "x"}')
print("yaml" in sys.modules)
parse_pipeline("p", "model: m\\nmax_tokens: 5\\nprompt: x\\n", syntax="yaml")
print("yaml" in sys.modules)
"""


def test_pyyaml_is_imported_only_when_a_yaml_pipeline_is_read() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["False", "True"]
