"""Records mode's row bookkeeping: what the intake writes for each record, read back as the
outputs read it."""

from __future__ import annotations

import json

import pytest

from batchdrop.domain.rows import RowRef, outputs_keys, parse_row, rejected_row_record, row_id, row_line, rows_key

pytestmark = pytest.mark.unit


def test_a_row_reads_back_as_written() -> None:
    ref = RowRef(7, "ticket-7", {"product": 'kettle, "blue"', "note": "line\nbreak"})
    line = row_line(ref)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert parse_row(line) == ref


def test_a_rejected_record_keeps_native_fields_and_adds_its_row() -> None:
    ref = RowRef(3, None, {"product": "kettle"}, reason="the record has no field 'review', which the prompt uses")
    line = rejected_row_record(ref, line=5, source_key="inbox/reviews/a.csv")
    record = json.loads(line)
    assert record["line"] == 5
    assert record["source"] == "inbox/reviews/a.csv"
    assert record["custom_id"] is None
    assert record["reason"] == ref.reason
    assert parse_row(line) == ref


def test_text_that_is_not_valid_unicode_is_escaped_not_lost() -> None:
    ref = RowRef(1, "a\ud800", {"f": "\udcff"})
    assert parse_row(row_line(ref)) == ref


def test_a_line_that_is_not_a_row_is_refused() -> None:
    with pytest.raises(ValueError, match="not a row record"):
        parse_row(b'{"line": 3}\n')


def test_fields_that_are_not_an_object_are_refused_and_values_that_are_not_text_made_text() -> None:
    with pytest.raises(ValueError, match="fields must be an object"):
        parse_row(b'{"row": 3, "id": "a", "fields": ["x"]}\n')
    assert parse_row(b'{"row": 3, "id": "a", "fields": {"n": 7}}\n') == RowRef(3, "a", {"n": "7"})


def test_keys() -> None:
    assert rows_key("j1", 12) == "work/j1/rows-00012.jsonl"
    assert outputs_keys("j1") == {"csv": "results/j1/outputs.csv", "jsonl": "results/j1/outputs.jsonl"}


@pytest.mark.parametrize(
    "line",
    [
        row_line(RowRef(12, "row-000012", {"product": "kettle"})),
        row_line(RowRef(3, "a_B-9", {})),
        b'{"row": 3, "id": "spaced", "fields": {}}\n',  # not as row_line writes it: parsed
        b'{"id": "first", "row": 3}\n',
        b'{"row":4,"id":"a\\u0062","fields":{}}\n',  # an escape: the leading bytes do not show the id
        rejected_row_record(RowRef(5, None, {}, reason="no id"), line=6, source_key="inbox/r/a.csv"),
    ],
)
def test_a_rows_line_id_is_its_parsed_custom_id(line: bytes) -> None:
    assert row_id(line) == parse_row(line).custom_id


def test_a_line_that_is_not_a_row_has_no_id() -> None:
    with pytest.raises(ValueError, match="not a row record"):
        row_id(b'{"line": 3}\n')
