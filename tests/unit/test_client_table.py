"""The table `batchdrop results JOB --show` prints of outputs.csv: columns aligned, every line
within the terminal's width (the widest columns narrowed first, a cut cell ending in `…`),
numbers aligned right, each cell on one line, and widths counted as a terminal shows them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop_client.table import MIN_WIDTH, cut, fit_widths, format_table, one_line, text_width

pytestmark = pytest.mark.unit

HEADER = ["id", "status", "sentiment", "input_tokens", "error"]
ROWS = [
    ["row-000001", "succeeded", "positive", "120", ""],
    ["row-000002", "rejected", "", "", 'the record has no field "review", which the prompt uses'],
]


def test_a_table_that_fits_is_shown_whole_and_aligned() -> None:
    lines = format_table(HEADER, ROWS, 200)
    assert lines[0] == "id          status     sentiment  input_tokens  error"
    assert lines[1] == "----------  ---------  ---------  ------------  " + "-" * 55
    assert lines[2] == "row-000001  succeeded  positive            120"  # a number column aligns right
    assert lines[3].endswith('the record has no field "review", which the prompt uses')
    assert "…" not in "".join(lines)


def test_a_wide_table_narrows_its_widest_column_first_to_fit_the_width() -> None:
    # Given a table whose error column alone is wider than the terminal
    lines = format_table(HEADER, ROWS, 70)
    # Then every line fits, the narrow columns are whole, and the long cell is cut with an ellipsis
    assert all(text_width(line) <= 70 for line in lines)
    assert lines[2].startswith("row-000001  succeeded  positive")
    assert lines[3].endswith("…")
    assert lines[3].startswith("row-000002  rejected")


def test_when_even_the_narrowest_columns_do_not_fit_each_keeps_its_minimum() -> None:
    widths = fit_widths([10, 20, 30, 2], 10)
    assert widths == [MIN_WIDTH, MIN_WIDTH, MIN_WIDTH, 2]


def test_fit_widths_gives_the_largest_common_cap_that_fits() -> None:
    # Given 3 columns in 40 (two gaps of 2: 36 for the cells), one narrow and two wide
    # Then the narrow one is whole, and the wide ones share the largest cap that fits (15; 16 would not)
    assert fit_widths([5, 50, 40], 40) == [5, 15, 15]
    assert fit_widths([5, 50, 10], 40) == [5, 21, 10]


@given(
    st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=12),
    st.integers(min_value=10, max_value=400),
)
def test_fitted_widths_fit_or_are_all_at_their_floor(natural: list[int], width: int) -> None:
    widths = fit_widths(natural, width)
    floors = [min(size, MIN_WIDTH) for size in natural]
    assert all(floor <= got <= size for floor, got, size in zip(floors, widths, natural, strict=True))
    assert sum(widths) + 2 * (len(natural) - 1) <= width or widths == floors


def test_cells_are_shown_on_one_line_with_nothing_that_moves_the_cursor() -> None:
    assert one_line("two\nlines\r\nand\ttab") == "two↵lines↵and tab"
    assert one_line("bell\x07 escape\x1b[2J") == "bell\ufffd escape\ufffd[2J"
    lines = format_table(["id", "text"], [["a", "line one\nline two"]], 80)
    assert lines[2] == "a   line one↵line two"


def test_wide_characters_count_two_columns_and_are_never_split() -> None:
    assert text_width("日本語") == 6
    assert text_width("e\u0301") == 1  # e and a combining accent
    assert cut("日本語テキスト", 6) == "日本…"
    assert text_width(cut("日本語テキスト", 6)) <= 6
    assert cut("short", 5) == "short"
    assert cut("longer", 5) == "long…"


def test_short_and_long_rows_are_squared_to_the_header() -> None:
    lines = format_table(["a", "b"], [["1"], ["2", "3", "4"]], 80)
    assert lines[2:] == ["1", "2  3"]


def test_a_header_alone_prints_with_its_rule() -> None:
    assert format_table(["id", "status"], [], 80) == ["id  status", "--  ------"]
