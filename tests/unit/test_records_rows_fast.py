"""Specification of the records intake's rows lines: written without json.dumps, they are byte
for byte domain/rows.py's row_line, whatever the kept fields hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain.rows import RowRef, parse_row, row_line
from batchdrop.services.records_intake import _row_line

pytestmark = pytest.mark.unit

TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(['"', "\\", "\n\r\t\x00\x08\x0c\x1f\x7f", "é😀", "\u2028", "half \ud800", ""]),
)


@settings(max_examples=300, deadline=None)
@given(
    row=st.integers(min_value=1, max_value=10**7),
    custom_id=st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True),
    fields=st.dictionaries(TEXT, TEXT, max_size=4),
)
def test_a_rows_line_is_row_lines_bytes(row: int, custom_id: str, fields: dict[str, str]) -> None:
    # Given a written record's row number, usable id and kept fields (unpaired surrogates included)
    # When its rows line is written, Then it is row_line's, and reads back as the same row
    line = _row_line(row, custom_id, fields)
    assert line == row_line(RowRef(row, custom_id, fields))
    assert parse_row(line) == RowRef(row, custom_id, fields)
