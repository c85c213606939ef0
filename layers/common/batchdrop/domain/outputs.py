"""Records mode's outputs: one row per input record, from its result line (or its rejection).

Columns, in order: `id`, the pipeline's keep_fields, `status`, the answer, then
`stop_reason`, the four token counts and `error`. The answer is `text` for a pipeline with no
output; with an output schema or a forced tool it is one column per top-level property of the
schema, followed by `raw`, which holds the answer's own text only when it is `invalid_output`
(not valid JSON, or not matching the schema), so nothing the model wrote is lost.

In a row, answer values are the JSON values the model gave; `csv_line` writes numbers,
booleans and nested values as their JSON text, `jsonl_line` keeps them as JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

from batchdrop.domain import quick_json
from batchdrop.domain.output_lines import cell, json_line
from batchdrop.domain.pipelines import Pipeline
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.schemas import compile_schema

STATUSES: Final = ("succeeded", "invalid_output", "errored", "expired", "canceled", "rejected")
USAGE_COLUMNS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")

Row = dict[str, Any]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_STRICT_JSON: Final = json.JSONDecoder(parse_constant=_refuse_constant)


class ResultLineError(ValueError):
    """A result line that is not one the Message Batches API writes; the message says why."""


def header(pipeline: Pipeline) -> list[str]:
    return [
        "id",
        *pipeline.keep_fields,
        "status",
        *pipeline.answer_columns(),
        "stop_reason",
        *USAGE_COLUMNS,
        "error",
    ]


def row(
    pipeline: Pipeline,
    kept_fields: Mapping[str, str],
    result: bytes | str | Mapping[str, Any] | Rejection,
    *,
    record_id: str | None = None,
) -> Row:
    """The output row of one record. `kept_fields` holds the record's values of keep_fields
    (a field it lacks stays empty); `result` is its line from the batch results, parsed or not,
    or its Rejection; `record_id` is the id to show for a rejection that has none. (For many
    rows of one pipeline, RowMaker prepares what this prepares per call once.)"""
    return RowMaker(pipeline).row(kept_fields, result, record_id=record_id)


class RowMaker:
    """`row` for the records of one pipeline: its columns and its answer's schema (compiled
    into a validator) prepared once, so a job's rows cost only their own parsing."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.columns: tuple[str, ...] = tuple(header(pipeline))
        self._blank: Row = dict.fromkeys(self.columns)
        # A row's head (id and the kept fields) comes from its record, its tail from its result.
        self.head_columns: tuple[str, ...] = ("id", *pipeline.keep_fields)
        self._blank_tail: Row = dict.fromkeys(self.columns[len(self.head_columns) :])
        schema = pipeline.answer_schema
        self._check = compile_schema(schema) if schema is not None else None
        self._properties: tuple[str, ...] = tuple(schema["properties"]) if schema is not None else ()
        self._keep = pipeline.keep_fields
        self._output = pipeline.output

    def row(
        self,
        kept_fields: Mapping[str, str],
        result: bytes | str | Mapping[str, Any] | Rejection,
        *,
        record_id: str | None = None,
    ) -> Row:
        """What `row(pipeline, kept_fields, result, record_id=...)` gives."""
        out = self._blank.copy()
        for name in self._keep:
            out[name] = kept_fields.get(name)
        if isinstance(result, Rejection):
            out.update(id=result.custom_id or record_id, status="rejected", error=result.reason)
            return out
        out["id"] = self._fill(out, result)
        return out

    def tail(self, result: bytes | str | Mapping[str, Any]) -> tuple[str, Row]:
        """The custom_id of a result and its row's tail: the columns from `status` on, which
        the result alone decides (row() is the head, then this)."""
        out = self._blank_tail.copy()
        return self._fill(out, result), out

    def _fill(self, out: Row, result: bytes | str | Mapping[str, Any]) -> str:
        """Fill the columns a result decides in `out`; its custom_id."""
        parsed = _parsed(result)
        outcome = parsed["result"]
        kind = outcome["type"]
        if kind == "succeeded":
            self._succeeded(out, _message(outcome))
        elif kind == "errored":
            out.update(status="errored", error=_error_text(outcome.get("error")))
        elif kind in ("expired", "canceled"):
            out["status"] = kind
        else:
            raise ResultLineError(f"result of {parsed['custom_id']!r}: unknown result type {kind!r}")
        return str(parsed["custom_id"])

    def _succeeded(self, out: Row, message: Mapping[str, Any]) -> None:
        """Fill a succeeded result's columns in `out` (every one of them is already a key)."""
        usage = message.get("usage")
        if type(usage) is not dict and not _is_mapping(usage):
            usage = {}
        for name in USAGE_COLUMNS:
            out[name] = usage.get(name)
        out["stop_reason"] = message.get("stop_reason")
        text = _text_of(message["content"])
        if self._output == "text":
            out["status"] = "succeeded"
            out["text"] = text
            return
        answer = self._answer(message, text)
        if isinstance(answer, _Invalid):
            out.update(status="invalid_output", raw=answer.raw, error=answer.reason)
            return
        out["status"] = "succeeded"
        for name in self._properties:
            out[name] = answer.get(name)

    def _answer(self, message: Mapping[str, Any], text: str) -> dict[str, Any] | _Invalid:
        """The answer (an object matching the schema), or why it is invalid_output and the
        text it was made of."""
        assert self._check is not None  # a pipeline with an output has its schema
        if self._output == "tool":
            tool_name = self.pipeline.tool_name
            calls = [
                block
                for block in message["content"]
                if isinstance(block, Mapping) and block.get("type") == "tool_use" and block.get("name") == tool_name
            ]
            if not calls:
                return _Invalid(f"the answer does not call the tool {tool_name!r}{_cut(message)}", text)
            value = calls[0].get("input")
            raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            raw = text
            try:
                value = quick_json.parse(text, _STRICT_JSON.decode)
            except ValueError as exc:
                reason = f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                return _Invalid(f"the answer is not valid JSON: {reason}{_cut(message)}", text)
        problem = self._check(value)
        if problem is not None:
            return _Invalid(f"the answer does not match the schema: {problem}{_cut(message)}", raw)
        assert isinstance(value, dict)  # the schema is an object schema, and value matched it
        return value


def _cut(message: Mapping[str, Any]) -> str:
    """What an invalid answer's reason adds when the model was cut off."""
    return " (cut off: stop_reason max_tokens)" if message.get("stop_reason") == "max_tokens" else ""


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """isinstance(value, Mapping), without the ABC's check for the dicts JSON parsing makes."""
    return type(value) is dict or isinstance(value, Mapping)


def _text_of(content: list[Any]) -> str:
    """The text blocks' texts, joined (a lone text block's text as it is)."""
    if len(content) == 1:
        block = content[0]
        if isinstance(block, dict) and block.get("type") == "text" and type(block.get("text")) is str:
            return str(block["text"])
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def _parsed(result: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if type(result) is bytes or isinstance(result, bytes | str):
        try:
            # As text for json: json.loads would first guess the bytes' encoding (a result line is UTF-8).
            result = quick_json.parse(result, json.loads)
        except json.JSONDecodeError as exc:
            raise ResultLineError(f"a result line is not valid JSON: {exc.msg} (column {exc.colno})") from exc
        except UnicodeDecodeError as exc:
            raise ResultLineError(f"a result line is not valid UTF-8 (byte {exc.start})") from exc
    if type(result) is dict and type(result.get("custom_id")) is str:
        outcome = result.get("result")
        if type(outcome) is dict and type(outcome.get("type")) is str:
            return result  # the usual line, checked by exact types
    if (
        not _is_mapping(result)
        or not isinstance(result.get("custom_id"), str)
        or not _is_mapping(result.get("result"))
        or not isinstance(result["result"].get("type"), str)
    ):
        raise ResultLineError('a result line must be {"custom_id": ..., "result": {"type": ...}}')
    return result


def _message(outcome: Mapping[str, Any]) -> Mapping[str, Any]:
    message = outcome.get("message")
    if type(message) is dict and type(message.get("content")) is list:
        return message
    if not _is_mapping(message) or not isinstance(message.get("content"), list):
        raise ResultLineError("a succeeded result has no message with content")
    return message


class _Invalid:
    def __init__(self, reason: str, raw: str) -> None:
        self.reason = reason
        self.raw = raw


def _error_text(error: Any) -> str:
    """ "type: message" of a batch result's error ({"type": "error", "error": {...}}, or the inner one)."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]
    if not isinstance(error, Mapping):
        return "errored (no error details)"
    kind, message = error.get("type"), error.get("message")
    return ": ".join(str(part) for part in (kind, message) if part) or "errored (no error details)"


# --- writing ----------------------------------------------------------------------------


def csv_line(values: Mapping[str, Any] | list[str]) -> bytes:
    """One CSV line (RFC 4180: quoted as needed, CRLF) of a row's values, or of a header's names."""
    buffer = io.StringIO()
    cells = [cell(value) for value in (values.values() if isinstance(values, Mapping) else values)]
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    # A lone surrogate (from a JSONL \\ud800 escape) is written as that escape, not dropped.
    return buffer.getvalue().encode("utf-8", "backslashreplace")


def jsonl_line(values: Mapping[str, Any]) -> bytes:
    """One JSONL line of a row: an object of its columns in order, answer values as JSON."""
    return json_line(values)
