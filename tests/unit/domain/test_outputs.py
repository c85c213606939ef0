"""Specification of records mode's output rows: the columns of each output kind, one row per
result type (and per rejection), invalid answers kept with their reason, and the CSV and JSONL
lines a row is written as."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.domain.outputs import ResultLineError, cell, csv_line, header, jsonl_line, row
from batchdrop.domain.pipelines import Pipeline, pipeline_from
from batchdrop.domain.record_readers import Rejection

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "confidence": {"type": "number"},
        "topics": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}
USAGE = {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 3}
KEPT = {"title": "Nice", "product": "Mug"}


def pipeline(output: Any = None) -> Pipeline:
    doc: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "prompt": "{{review}}",
        "keep_fields": ["title", "product"],
    }
    if output is not None:
        doc["output"] = output
    return pipeline_from("reviews", doc)


TEXT = pipeline()
STRUCTURED = pipeline({"schema": SCHEMA})
TOOL = pipeline({"tool": {"name": "rate", "input_schema": SCHEMA}})


def succeeded(*content: dict[str, Any], stop_reason: str = "end_turn", custom_id: str = "row-000001") -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": list(content),
        "stop_reason": stop_reason,
        "usage": USAGE,
    }
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_call(name: str, value: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_1", "name": name, "input": value}


TAIL = {"stop_reason": "end_turn", **USAGE}
EMPTY_TAIL = dict.fromkeys(["stop_reason", *USAGE], None)


def test_headers_of_each_output_kind() -> None:
    tail = ["stop_reason", *USAGE, "error"]
    assert header(TEXT) == ["id", "title", "product", "status", "text", *tail]
    assert header(STRUCTURED) == [
        "id",
        "title",
        "product",
        "status",
        "sentiment",
        "confidence",
        "topics",
        "detail",
        "raw",
        *tail,
    ]
    assert header(TOOL) == header(STRUCTURED)


def test_a_text_answer_is_the_text_blocks_joined() -> None:
    result = succeeded(text_block("Positive, "), tool_call("other", {}), text_block("mostly."))
    assert row(TEXT, KEPT, result) == {
        "id": "row-000001",
        **KEPT,
        "status": "succeeded",
        "text": "Positive, mostly.",
        **TAIL,
        "error": None,
    }


def test_a_structured_answer_is_one_column_per_property() -> None:
    # Given an answer conforming to the schema, one optional property left out
    answer = {"sentiment": "positive", "confidence": 0.75, "topics": ["price", "size"]}
    out = row(STRUCTURED, KEPT, succeeded(text_block(json.dumps(answer))))
    # Then each property is its column, the missing one empty, and raw empty
    assert out == {
        "id": "row-000001",
        **KEPT,
        "status": "succeeded",
        "sentiment": "positive",
        "confidence": 0.75,
        "topics": ["price", "size"],
        "detail": None,
        "raw": None,
        **TAIL,
        "error": None,
    }
    # And in CSV nested values are their JSON text
    assert (
        csv_line(out) == b'row-000001,Nice,Mug,succeeded,positive,0.75,"[""price"",""size""]",,,end_turn,12,5,0,3,\r\n'
    )


def test_an_answer_that_is_not_json_is_invalid_output_with_its_text_kept() -> None:
    out = row(STRUCTURED, KEPT, succeeded(text_block('{"sentiment": "posi'), stop_reason="max_tokens"))
    assert (out["status"], out["raw"], out["sentiment"]) == ("invalid_output", '{"sentiment": "posi', None)
    assert (
        out["error"]
        == "the answer is not valid JSON: Unterminated string starting at (column 15) (cut off: stop_reason max_tokens)"
    )


def test_an_answer_not_matching_the_schema_is_invalid_output_with_the_reason() -> None:
    text = '{"sentiment": "meh", "confidence": 1}'
    out = row(STRUCTURED, KEPT, succeeded(text_block(text)))
    assert (out["status"], out["raw"]) == ("invalid_output", text)
    assert (
        out["error"]
        == 'the answer does not match the schema: $.sentiment: must be one of "positive", "negative"; got "meh"'
    )
    assert out["input_tokens"] == 12  # an invalid answer was still paid for


def test_nan_in_an_answer_is_not_json() -> None:
    out = row(STRUCTURED, KEPT, succeeded(text_block('{"sentiment": "positive", "confidence": NaN}')))
    assert (out["status"], out["error"]) == ("invalid_output", "the answer is not valid JSON: NaN is not a JSON number")


def test_a_forced_tool_answer_is_its_input() -> None:
    value = {"sentiment": "negative", "confidence": 0.1, "detail": {"ok": False}}
    out = row(TOOL, KEPT, succeeded(text_block("Calling."), tool_call("rate", value), stop_reason="tool_use"))
    assert {key: out[key] for key in ("status", "sentiment", "confidence", "detail", "raw", "stop_reason")} == {
        "status": "succeeded",
        "sentiment": "negative",
        "confidence": 0.1,
        "detail": {"ok": False},
        "raw": None,
        "stop_reason": "tool_use",
    }


def test_a_tool_answer_without_the_call_or_with_bad_input_is_invalid_output() -> None:
    missing = row(TOOL, KEPT, succeeded(text_block("I would rather not."), tool_call("other", {})))
    assert (missing["status"], missing["raw"], missing["error"]) == (
        "invalid_output",
        "I would rather not.",
        "the answer does not call the tool 'rate'",
    )
    bad = row(TOOL, KEPT, succeeded(tool_call("rate", {"sentiment": "positive", "confidence": "high"})))
    assert (bad["status"], bad["raw"], bad["error"]) == (
        "invalid_output",
        '{"sentiment":"positive","confidence":"high"}',
        "the answer does not match the schema: $.confidence: must be number, got string",
    )


def test_errored_expired_and_canceled_rows() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    errored = {"custom_id": "r1", "result": {"type": "errored", "error": error}}
    assert row(STRUCTURED, KEPT, errored) == {
        **dict.fromkeys(header(STRUCTURED)),
        "id": "r1",
        **KEPT,
        "status": "errored",
        **EMPTY_TAIL,
        "error": "overloaded_error: Overloaded",
    }
    for kind in ("expired", "canceled"):
        out = row(TEXT, {}, json.dumps({"custom_id": "r2", "result": {"type": kind}}))
        assert out == {**dict.fromkeys(header(TEXT)), "id": "r2", "status": kind}


def test_a_rejected_record_has_its_reason() -> None:
    rejection = Rejection('the record has no field "review", which the prompt uses', "row-000007")
    assert row(TEXT, {"title": "T"}, rejection) == {
        **dict.fromkeys(header(TEXT)),
        "id": "row-000007",
        "title": "T",
        "status": "rejected",
        "error": 'the record has no field "review", which the prompt uses',
    }
    unread = row(TEXT, {}, Rejection("too few fields: 1, the header has 2"), record_id="row-000008")
    assert (unread["id"], unread["status"]) == ("row-000008", "rejected")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            b"{",
            "a result line is not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        (b'{"a": "\xff"}', "a result line is not valid UTF-8 (byte 7)"),
        (b'{"custom_id": "a"}', 'a result line must be {"custom_id": ..., "result": {"type": ...}}'),
        (b'{"custom_id": "a", "result": {"type": "succeeded"}}', "a succeeded result has no message with content"),
        (b'{"custom_id": "a", "result": {"type": "done"}}', "result of 'a': unknown result type 'done'"),
    ],
)
def test_a_result_line_the_api_would_not_write_is_an_error(line: bytes, message: str) -> None:
    with pytest.raises(ResultLineError) as caught:
        row(TEXT, {}, line)
    assert str(caught.value) == message


def test_csv_and_jsonl_lines_of_a_header_and_a_row() -> None:
    assert csv_line(header(TEXT)) == (
        b"id,title,product,status,text,stop_reason,input_tokens,output_tokens,"
        b"cache_read_input_tokens,cache_creation_input_tokens,error\r\n"
    )
    out = row(TEXT, {"title": 'A "quoted", title', "product": "Tasse\nbleue"}, succeeded(text_block("Très bien")))
    assert (
        csv_line(out)
        == 'row-000001,"A ""quoted"", title","Tasse\nbleue",succeeded,Très bien,end_turn,12,5,0,3,\r\n'.encode()
    )
    assert (
        jsonl_line(out)
        == (
            '{"id":"row-000001","title":"A \\"quoted\\", title","product":"Tasse\\nbleue","status":"succeeded",'
            '"text":"Très bien","stop_reason":"end_turn","input_tokens":12,"output_tokens":5,'
            '"cache_read_input_tokens":0,"cache_creation_input_tokens":3,"error":null}\n'
        ).encode()
    )


def test_a_lone_surrogate_from_a_jsonl_field_is_written_as_its_escape() -> None:
    out = {"id": "r1", "title": "bad \ud800"}
    assert csv_line(out) == b"r1,bad \\ud800\r\n"
    assert json.loads(jsonl_line(out)) == out


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@given(values=st.dictionaries(st.text(min_size=1, max_size=5), JSON_VALUES, max_size=6))
def test_any_row_reads_back_from_its_lines(values: dict[str, Any]) -> None:
    # Given any row of JSON values
    # When it is written as a CSV line and as a JSONL line
    cells = next(csv.reader(io.StringIO(csv_line(values).decode(), newline="")), [])
    # Then the CSV line holds each value's cell, and the JSONL line the values themselves
    assert cells == [cell(value) for value in values.values()]
    assert json.loads(jsonl_line(values)) == values
