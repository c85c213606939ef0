"""Specification of the CSV reader's fast path: a file's lines given split already (as the
records intake has them) read to exactly the records of its bytes read whole, and a record's
fields are searched for bytes that are not UTF-8 only when its lines held some, with no such
byte ever let through."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain.record_readers import Rejection, read_csv, read_csv_lines

pytestmark = pytest.mark.unit

ESCAPED = re.compile("[\udc80-\udcff]")
PLAIN = st.sampled_from([b"", b"a", b"word", b"caf\xc3\xa9", b"\xff", b"x\xc3", b"\xe2\x82", b" ", b"12"])
QUOTED = st.lists(st.sampled_from([b"a", b",", b'""', b"\r\n", b"\n", b"\xff", b"\xc3\xa9", b"{{a}}"]), max_size=4).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)
FIELDS = st.lists(st.one_of(PLAIN, QUOTED), min_size=1, max_size=4)
ROWS = st.lists(FIELDS.map(b",".join), max_size=8)


def split_lines(data: bytes) -> list[bytes]:
    """The lines as the object's line reader gives them: split on \\n only, each with its ending."""
    return re.findall(rb"[^\n]*\n|[^\n]+$", data)


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from([b"a,b,c", b"a,,c", b"\xef\xbb\xbfa,b", b"a"]),
    rows=ROWS,
    ending=st.sampled_from([b"\n", b"\r\n"]),
)
def test_lines_split_already_read_as_the_whole_file_does(header: bytes, rows: list[bytes], ending: bytes) -> None:
    # Given a CSV of tricky rows: quoted line breaks and commas, bytes that are not UTF-8, short rows
    data = ending.join([header, *rows]) + ending
    # When it is read from its bytes, and from its lines split already
    whole = read_csv([data])
    split = read_csv_lines(split_lines(data))
    # Then the header and every record (or rejection, line numbers and all) are the same
    assert split.header == whole.header
    items = list(split)
    assert items == list(whole)
    # And no record read holds a byte that is not UTF-8: such a record is rejected, naming it
    for _line, item in items:
        if isinstance(item, Rejection):
            continue
        assert not any(ESCAPED.search(value) for value in item.values())


def test_a_bad_byte_in_a_later_line_of_a_quoted_field_rejects_its_record_only() -> None:
    # Given a record whose quoted field spans lines, the second holding a byte that is not UTF-8,
    # between two clean records
    data = b'id,text\r\n1,fine\r\n2,"first line\r\nsecond \xff line"\r\n3,"also\r\nfine"\r\n'
    # When its lines are read
    items = list(read_csv_lines(split_lines(data)))
    # Then that record alone is rejected, on the line it starts on, naming the byte and field
    assert items == [
        (2, {"id": "1", "text": "fine"}),
        (3, Rejection('not valid UTF-8: byte 0xff in field "text"')),
        (5, {"id": "3", "text": "also\r\nfine"}),
    ]


def test_a_line_over_the_limit_fails_the_file_naming_it() -> None:
    # Given lines split already, the third longer than the limit
    lines = [b"id,text\n", b"1,short\n", b"2," + b"x" * 100 + b"\n"]
    # When they are read with a limit of 64 bytes
    records = read_csv_lines(lines, max_line_bytes=64)
    # Then the file fails at that line, as read_csv fails it
    with pytest.raises(ValueError, match="line 3: longer than 64 bytes"):
        list(records)
