"""The batch encoder of output rows (domain/output_lines.py) writes byte for byte what
domain/outputs.csv_line and jsonl_line write, row by row; and a JSON line means what
json.dumps would have written, a float JSON cannot hold made null."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain.output_lines import RowsEncoder, csv_text, json_line, tail_cells
from batchdrop.domain.outputs import csv_line, jsonl_line

pytestmark = pytest.mark.unit

TRICKY = ["", " ", "a,b", 'say "hi"', "line\nbreak", "cr\rlone", "crlf\r\n", "naïve — ✓", "\ud800", "=1+1", "-0.5"]
TRICKY += ["back\\slash", "nul\x00", "unit\x1fsep", "del\x7f", "tab\tbell\x07", "\u2028line sep"]
VALUES: list[Any] = [None, 0, -3, 2**70, 0.1, 1e-07, 1e300, -0.0, True, False, ["a", 1], {"k": 'v,"'}, *TRICKY]
VALUES += [float("nan"), float("inf"), float("-inf"), {"k": [float("nan"), "\x00\\"]}]

texts = st.text(alphabet=st.sampled_from(list('ab ,"\r\n\t\\\x00\x1f\x7f=é\ud800✓')), max_size=12)
cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    texts,
    st.lists(st.integers() | texts | st.floats(), max_size=3),
    st.dictionaries(texts, texts | st.none(), max_size=2),
)


def rows_of(values: list[Any]) -> list[dict[str, Any]]:
    rows = [{"id": "x", "v": value, "w": other} for value in values for other in (None, "", "z")]
    return rows + [{'a "quoted"\\name': value, "é\x01": 1} for value in values]


@pytest.mark.parametrize("row", rows_of(VALUES))
def test_each_tricky_value_is_written_as_csv_line_and_jsonl_line_write_it(row: dict[str, Any]) -> None:
    encoder = RowsEncoder()
    encoder.add(row)
    assert encoder.take() == (csv_line(row), jsonl_line(row))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(cells, min_size=2, max_size=5), min_size=1, max_size=6),
    st.lists(texts, min_size=5, max_size=5),
)
def test_any_rows_are_written_as_the_row_by_row_writers_write_them(table: list[list[Any]], names: list[str]) -> None:
    encoder = RowsEncoder()
    rows = [{f"c{n}{names[n]}": value for n, value in enumerate(values)} for values in table]
    for row in rows:
        encoder.add(row)
    csv_bytes, jsonl_bytes = encoder.take()
    assert csv_bytes == b"".join(csv_line(row) for row in rows)
    assert jsonl_bytes == b"".join(jsonl_line(row) for row in rows)
    assert encoder.take() == (b"", b"")  # taken: nothing held


def test_what_is_written_reads_back_with_the_csv_module() -> None:
    text = csv_text(["a,b", 'q"q', "l\r\nm", "", 1.5])
    assert next(csv.reader(io.StringIO(text, newline=""))) == ["a,b", 'q"q', "l\r\nm", "", "1.5"]


def finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


@pytest.mark.parametrize("row", rows_of(VALUES))
def test_a_json_line_reads_back_as_the_row_with_what_json_cannot_hold_made_null(row: dict[str, Any]) -> None:
    line = json_line(row)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    text = line.decode()  # valid UTF-8: a lone surrogate is written as its escape
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} written")) == finite(row)
    assert list(json.loads(text)) == list(row)  # the columns in order


@settings(max_examples=300, deadline=None)
@given(st.lists(cells, min_size=1, max_size=5), st.lists(texts, min_size=5, max_size=5))
def test_any_row_is_one_json_line_that_reads_back_as_it(values: list[Any], names: list[str]) -> None:
    row = {f"c{n}{names[n]}": value for n, value in enumerate(values)}
    line = json_line(row)
    assert line.count(b"\n") == 1
    assert json.loads(line.decode()) == finite(row)


def test_integers_beyond_64_bits_and_lone_surrogates_are_written_exactly() -> None:
    row = {"big": 2**70, "neg": -(2**64), "bad": "x\ud800y", "ok": 1}
    assert json.loads(json_line(row)) == row
    assert json_line({"f": 1e-07, "g": 0.1}) in (b'{"f":1e-7,"g":0.1}\n', b'{"f":1e-07,"g":0.1}\n')


@settings(max_examples=300, deadline=None)
@given(st.lists(texts | st.none(), min_size=1, max_size=3), st.lists(cells, min_size=1, max_size=5))
def test_a_row_joined_from_its_head_and_its_tail_is_the_row_encoded_whole(heads: list[Any], tails: list[Any]) -> None:
    head = {f"h{n}": value for n, value in enumerate(heads)}
    tail = {f"t{n}": value for n, value in enumerate(tails)}
    joined = RowsEncoder()
    joined.add_joined(head, *tail_cells(tail))
    whole = RowsEncoder()
    whole.add({**head, **tail})
    (csv_joined, jsonl_joined), (csv_whole, jsonl_whole) = joined.take(), whole.take()
    assert csv_joined == csv_whole
    assert json.loads(jsonl_joined.decode()) == json.loads(jsonl_whole.decode()) == finite({**head, **tail})
    if not any(value and "\ud800" in value for value in heads):  # else a float may be spelt otherwise
        assert jsonl_joined == jsonl_whole
