"""Specification of records mode's fast path: a pipeline renders each record from a layout laid
out once (byte for byte what json.dumps of the whole request gives, with the same rejections),
and check_rendered gives the rendered lines the very verdicts and reasons of check_lines while
parsing only until one line has passed the whole check."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain import pipelines as pipelines_module
from batchdrop.domain import requests as requests_module
from batchdrop.domain.pipelines import Pipeline, pipeline_from
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.requests import RejectedLine, check_lines, check_rendered

pytestmark = pytest.mark.unit

FIELDS = ("a", "b", "c")
# The markers the layout is found with, and text that looks like them: a pipeline holding
# them must still render as json.dumps does.
MARKERISH = ("\ue0000:0\ue001", "\ue0000:1\ue001", '"\ue0000:1\ue001"', "\ue000")
TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(['"', "\\", "\\ud800", "{{a}}", "\n\r\t\x00\x1f\x7f", " ", "", "é😀", "}", "{", *MARKERISH]),
)
# Values a record holds: any text, lone surrogates included (a JSONL "\ud800" is one), and
# long ones, which make some lines longer than the limits tried and others not.
VALUES = st.one_of(
    TEXT,
    st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=4),
    st.integers(min_value=50, max_value=900).map(lambda size: 'é"' * size),
)
IDS = st.sampled_from(["r1", "r2", "r-3", "R_4", "bad id", "", "x" * 65, "é"])
PIECES = st.lists(st.one_of(TEXT, st.sampled_from([f"{{{{{name}}}}}" for name in FIELDS])), min_size=1, max_size=5)
TEMPLATES = PIECES.map("".join).filter(lambda text: bool(text.strip()))
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
BLOCKS = st.lists(
    st.one_of(
        TEMPLATES.map(lambda text: {"type": "text", "text": text}),
        TEMPLATES.map(lambda text: {"cache_control": {"type": "ephemeral"}, "type": "text", "text": text}),
        st.just({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {
        "model": draw(st.sampled_from(["claude-haiku-4-5", " m ", "\ue0000:0\ue001"])),
        # Over 64 bits the API refuses it: every line is rejected, by the whole check.
        "max_tokens": draw(st.sampled_from([1, 64, 2**63, 2**64])),
        "prompt": draw(st.one_of(TEMPLATES, BLOCKS)),
        "params": draw(st.dictionaries(st.sampled_from(["temperature", "metadata", "stop_sequences"]), JSON_VALUES)),
    }
    if draw(st.booleans()):
        # an unpaired surrogate in the pipeline's own text refuses every record that gets that far
        unpaired = st.just("Be brief \ud800")
        document["system"] = draw(
            st.one_of(TEXT.filter(lambda text: bool(text.strip())), st.sampled_from(MARKERISH), unpaired)
        )
    if draw(st.booleans()):
        document["id_field"] = "id"
    if draw(st.booleans()):
        document["keep_fields"] = ["b"]
    return document


RECORDS = st.lists(
    st.dictionaries(st.sampled_from([*FIELDS, "id"]), VALUES, min_size=0, max_size=4).flatmap(
        lambda record: IDS.map(lambda ident: {**record, "id": ident})
    ),
    max_size=12,
)


def reference_render(pipeline: Pipeline, record: Mapping[str, str], row: int) -> bytes | Rejection:
    """How a record was rendered before the layout: the request built as objects, then json.dumps."""
    custom_id = pipeline.custom_id(record, row)
    if isinstance(custom_id, Rejection):
        return custom_id
    missing = [name for name in pipeline.placeholders() if name not in record]
    if missing:
        names = ", ".join(json.dumps(name, ensure_ascii=False) for name in missing)
        return Rejection(f"the record has no field {names}, which the prompt uses", custom_id)
    content: Any
    prompt = pipeline.prompt
    if isinstance(prompt, str):
        content = _filled(prompt, record)
        if not content.strip():
            return Rejection(_empty_reason(prompt), custom_id)
    else:
        content = []
        for block in prompt:
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = _filled(block["text"], record)
                if not text.strip():
                    return Rejection(_empty_reason(block["text"]), custom_id)
                content.append({**block, "text": text})
            else:
                content.append(dict(block))
    request = {
        "custom_id": custom_id,
        "params": {**pipeline.fixed_params, "messages": [{"role": "user", "content": content}]},
    }
    try:
        return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return Rejection("a field holds text that is not valid Unicode (an unpaired surrogate)", custom_id)


def _filled(template: str, record: Mapping[str, str]) -> str:
    pieces = pipelines_module._PLACEHOLDER.split(template)
    return "".join(record[piece] if index % 2 else piece for index, piece in enumerate(pieces))


def _empty_reason(template: str) -> str:
    names = dict.fromkeys(pipelines_module._PLACEHOLDER.split(template)[1::2])
    shown = ", ".join(json.dumps(name, ensure_ascii=False) for name in names) or "none"
    return f"the prompt is empty once filled in (from the record's empty fields: {shown})"


@settings(max_examples=200, deadline=None)
@given(documents(), RECORDS)
def test_a_record_renders_byte_for_byte_as_json_dumps_of_its_request(
    document: dict[str, Any], records: list[Any]
) -> None:
    pipeline = pipeline_from("p", document)
    for row, record in enumerate(records, start=1):
        assert pipeline.render(record, row) == reference_render(pipeline, record, row)


@settings(max_examples=200, deadline=None)
@given(
    documents(),
    RECORDS,
    st.sampled_from([300, 600, 1_000, 2_000, 32 * 1024 * 1024]),
    st.lists(st.booleans(), max_size=12),
)
def test_check_rendered_gives_the_verdicts_and_reasons_of_check_lines(
    document: dict[str, Any], records: list[Any], max_line_bytes: int, blanks: list[bool]
) -> None:
    # Given a pipeline's rendered lines, with blank lines between some (as the records intake
    # numbers lines: a record's request is on the line it starts on), and limits they may pass
    pipeline = pipeline_from("p", document)
    lines: list[bytes] = []
    for row, record in enumerate(records, start=1):
        if row <= len(blanks) and blanks[row - 1]:
            lines.append(b"")
        rendered = pipeline.render(record, row)
        if isinstance(rendered, bytes):
            lines.append(rendered)
    # When both checks read them, Then each verdict is the same, reason and all
    assert list(check_rendered(lines, max_line_bytes=max_line_bytes)) == list(
        check_lines(lines, max_line_bytes=max_line_bytes)
    )


def test_check_rendered_parses_only_until_a_line_passes_the_whole_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 50 rendered lines of one pipeline, the 40th reusing the 10th's id
    pipeline = pipeline_from("p", {"model": "m", "max_tokens": 5, "prompt": "Say {{a}}", "id_field": "id"})
    records = [{"a": f"value {n}", "id": f"r{n if n != 40 else 10}"} for n in range(1, 51)]
    lines = [
        line for row, record in enumerate(records, start=1) if isinstance(line := pipeline.render(record, row), bytes)
    ]
    parsed: list[int] = []
    whole_check = requests_module._check_line

    def counted(number: int, *args: Any) -> Any:
        parsed.append(number)
        return whole_check(number, *args)

    monkeypatch.setattr(requests_module, "_check_line", counted)
    # When check_rendered reads them
    verdicts = list(check_rendered(lines))
    # Then only the first line and the one reusing an id were parsed, and the reuse is named
    assert parsed == [1, 40]
    rejected = [verdict for verdict in verdicts if isinstance(verdict, RejectedLine)]
    assert [(verdict.line, verdict.reason) for verdict in rejected] == [
        (40, 'custom_id: "r10" is already used on line 10; it must be unique')
    ]
    assert len(verdicts) == 50


def test_a_record_is_rendered_without_json_dumps_once_the_pipeline_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a pipeline read as usual
    pipeline = pipeline_from("p", {"model": "m", "max_tokens": 5, "prompt": "Say {{a}}", "system": "Be brief."})

    def refused(*_args: Any, **_kwargs: Any) -> str:
        raise AssertionError("json.dumps called while rendering a record")

    # When json.dumps is out of reach and a record is rendered
    monkeypatch.setattr(pipelines_module.json, "dumps", refused)
    line = pipeline.render({"a": 'a "quoted"\nword'}, 7)
    monkeypatch.undo()
    # Then it is the request json.dumps would give
    assert isinstance(line, bytes)
    assert json.loads(line) == {
        "custom_id": "row-000007",
        "params": {
            "model": "m",
            "max_tokens": 5,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": 'Say a "quoted"\nword'}],
        },
    }


def test_an_empty_text_is_named_before_an_unpaired_surrogate_in_an_earlier_one() -> None:
    # Given a prompt of two text blocks, and a record whose first fills with an unpaired
    # surrogate and whose second fills empty
    blocks = [{"type": "text", "text": "{{a}}"}, {"type": "text", "text": "{{b}}"}]
    pipeline = pipeline_from("p", {"model": "m", "max_tokens": 5, "prompt": blocks})
    record = {"a": "half \ud800", "b": " "}
    # When it is rendered
    rendered = pipeline.render(record, 1)
    # Then the empty text is its reason, as json.dumps of the whole request would have it
    assert rendered == reference_render(pipeline, record, 1)
    assert rendered == Rejection(
        'the prompt is empty once filled in (from the record\'s empty fields: "b")', "row-000001"
    )
