"""Specification of records mode's readers: CSV as people export it and JSONL objects, read as
a stream into records or rejections, each with the line its record starts on, in flat memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.domain.record_readers import (
    ReadItem,
    RecordFileError,
    Rejection,
    physical_lines,
    read_csv,
    read_jsonl,
)

pytestmark = pytest.mark.unit


def csv_items(data: bytes, **kwargs: int) -> list[ReadItem]:
    return list(read_csv([data], **kwargs))


def in_chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[start : start + size] for start in range(0, len(data), size))


# --- CSV ----------------------------------------------------------------------------------


def test_a_plain_csv_gives_one_record_per_row_with_its_line() -> None:
    # Given a header and two rows
    records = read_csv([b"id,review\n1,great\n2,awful\n"])
    # Then the header is read first and each row maps the header's names to its fields
    assert records.header == ("id", "review")
    assert list(records) == [(2, {"id": "1", "review": "great"}), (3, {"id": "2", "review": "awful"})]


def test_quoted_fields_hold_commas_quotes_and_newlines_and_lines_are_where_records_start() -> None:
    # Given quoted fields with a comma, a doubled quote and line breaks (LF and CRLF) inside
    data = b'id,review\r\n1,"good, cheap"\r\n2,"she said ""wow"""\r\n3,"line one\nline two\r\nline three"\r\n4,end\r\n'
    # Then each field is read whole, and a record's line is the one it starts on
    assert csv_items(data) == [
        (2, {"id": "1", "review": "good, cheap"}),
        (3, {"id": "2", "review": 'she said "wow"'}),
        (4, {"id": "3", "review": "line one\nline two\r\nline three"}),
        (7, {"id": "4", "review": "end"}),
    ]


def test_bom_empty_fields_blank_lines_and_no_final_newline() -> None:
    # Given a file as a spreadsheet exports it: a BOM, an empty field, a blank line, no final line break
    data = "\ufeffname,note,score\r\nAda,,3\r\n\r\nBob,ok,\r\n,,".encode()
    items = read_csv([data])
    # Then the BOM is not part of the first column's name, empty fields are empty strings, blank lines are skipped
    assert items.header == ("name", "note", "score")
    assert list(items) == [
        (2, {"name": "Ada", "note": "", "score": "3"}),
        (4, {"name": "Bob", "note": "ok", "score": ""}),
        (5, {"name": "", "note": "", "score": ""}),
    ]


def test_rows_with_too_few_or_too_many_fields_are_rejected_with_their_line() -> None:
    data = b'a,b,c\n1,2\n1,2,3\n1,2,3,4\n"multi\nline",2\n'
    assert csv_items(data) == [
        (2, Rejection("too few fields: 2, the header has 3")),
        (3, {"a": "1", "b": "2", "c": "3"}),
        (4, Rejection("too many fields: 4, the header has 3")),
        (5, Rejection("too few fields: 2, the header has 3")),
    ]


def test_a_record_that_is_not_utf8_is_rejected_alone() -> None:
    # Given a row holding a Latin-1 byte between two good rows
    data = "id,review\n1,caf\xe9\n2,Café\n".encode("latin-1").replace(b"Caf\xe9", "Café".encode())
    # Then that row is rejected with its line and the byte, the others are read
    assert csv_items(data) == [
        (2, Rejection('not valid UTF-8: byte 0xe9 in field "review"')),
        (3, {"id": "2", "review": "Café"}),
    ]


def test_a_multi_line_record_that_is_not_utf8_is_rejected_at_its_first_line() -> None:
    data = b'id,review\n1,"first\nsecond \xff\nthird"\n2,ok\n'
    assert csv_items(data) == [
        (2, Rejection('not valid UTF-8: byte 0xff in field "review"')),
        (5, {"id": "2", "review": "ok"}),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            b'a,b\n1,"x"y\n2,z\n',
            'a quoted field has text after its closing quote (write a quote inside a quoted field as "")',
        ),
        (b"a,b\n1,x\ry\n2,z\n", "a line break inside an unquoted field (a lone carriage return?); quote the field"),
    ],
)
def test_malformed_quoting_rejects_that_record_and_reading_goes_on(data: bytes, reason: str) -> None:
    assert csv_items(data) == [(2, Rejection(reason)), (3, {"a": "2", "b": "z"})]


def test_a_quote_never_closed_is_rejected_at_the_line_it_opens() -> None:
    assert csv_items(b'a,b\n1,ok\n2,"never\nclosed\n') == [
        (2, {"a": "1", "b": "ok"}),
        (3, Rejection("a quoted field is never closed: the file ends inside it")),
    ]


def test_a_field_over_the_csv_limit_is_rejected_and_reading_goes_on() -> None:
    huge = b"x" * (csv.field_size_limit() + 1)
    items = csv_items(b"a,b\n1," + huge + b"\n2,ok\n")
    assert items == [
        (2, Rejection(f"a field is longer than the {csv.field_size_limit()} characters a CSV field may hold")),
        (3, {"a": "2", "b": "ok"}),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty: a CSV needs a header row naming its fields"),
        (b"\r\n\n", "the file is empty: a CSV needs a header row naming its fields"),
        (b"id,text,id\n1,2,3\n", 'line 1: the header names "id" more than once'),
        (b"id,caf\xe9\n", "line 1: column 2 of the header is not valid UTF-8"),
        (
            b'id,"text\n',
            "line 1: the header row cannot be read: a quoted field is never closed: the file ends inside it",
        ),
    ],
)
def test_a_file_without_a_readable_header_fails_whole(data: bytes, message: str) -> None:
    with pytest.raises(RecordFileError) as caught:
        read_csv([data])
    assert str(caught.value) == message


def test_unnamed_columns_are_allowed_and_left_out_of_records() -> None:
    # Given a spreadsheet export with two trailing unnamed columns
    assert csv_items(b"id,text,,\n1,hi,,\n") == [(2, {"id": "1", "text": "hi"})]


def test_a_line_over_the_size_limit_fails_the_file_when_reached() -> None:
    records = read_csv(in_chunks(b"a\n" + b"1\n" + b"y" * 100 + b"\n", 7), max_line_bytes=50)
    items = iter(records)
    assert next(items) == (2, {"a": "1"})
    with pytest.raises(RecordFileError) as caught:
        next(items)
    assert str(caught.value) == "line 3: longer than 50 bytes"


CELLS = st.lists(st.sampled_from(["a", "é", ",", '"', "\n", "\r\n", " ", "😀", "{"]), max_size=8).map("".join)


@given(
    rows=st.lists(st.lists(CELLS, min_size=3, max_size=3), max_size=6),
    chunk=st.integers(1, 64),
    as_file=st.booleans(),
)
def test_what_csv_writer_writes_is_read_back_whatever_the_chunks(
    rows: list[list[str]], chunk: int, as_file: bool
) -> None:
    # Given any rows written as a spreadsheet would (quoted as needed, CRLF), with a BOM
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["x", "y", "z"])
    writer.writerows(rows)
    data = b"\xef\xbb\xbf" + buffer.getvalue().encode()
    # When they are read from a stream in any chunks, or from a file object
    source = io.BytesIO(data) if as_file else in_chunks(data, chunk)
    items = list(read_csv(source))
    # Then every row comes back exactly, at the line it starts on
    expected, line = [], 2
    for row in rows:
        written = io.StringIO(newline="")
        csv.writer(written, lineterminator="\r\n").writerow(row)
        expected.append((line, dict(zip(("x", "y", "z"), row, strict=True))))
        line += written.getvalue().count("\n")
    assert items == expected


def test_memory_stays_flat_over_a_50_mb_csv() -> None:
    # Given a 50 MB CSV made on the fly (never held), with quoted multi-line fields
    row = b'%d,"a review, with a comma\nand a second line' + b" and more words" * 120 + b'",%d\n'
    rows = 50 * 1024 * 1024 // len(row % (100000, 100000))

    def generated() -> Iterator[bytes]:
        yield b"id,review,stars\n"
        batch = []
        for number in range(rows):
            batch.append(row % (number, number % 5))
            if len(batch) == 32:  # 60 KB chunks, as a stream would give
                yield b"".join(batch)
                batch.clear()
        yield b"".join(batch)

    # When it is read to the end under tracemalloc
    tracemalloc.start()
    try:
        count = last = 0
        for line, record in read_csv(generated()):
            assert not isinstance(record, Rejection)
            count, last = count + 1, line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then every record was read, and memory peaked under 2 MB (a few chunks and records)
    assert (count, last) == (rows, 2 * rows)
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"


def test_physical_lines_keep_their_endings_across_chunks() -> None:
    lines = list(physical_lines(in_chunks(b"ab\r\ncd\n\nef", 3)))
    assert lines == [b"ab\r\n", b"cd\n", b"\n", b"ef"]
    assert list(physical_lines(b"ab\ncd")) == [b"ab\n", b"cd"]  # bytes held whole are one chunk


# --- JSONL --------------------------------------------------------------------------------


def test_jsonl_objects_are_records_with_non_strings_as_json_text() -> None:
    data = (
        b'\xef\xbb\xbf{"id": "a", "n": 3, "ok": true, "none": null, "tags": ["x", "\xc3\xa9"], "o": {"k": 1.5}}\r\n'
        b"\n"
        b"   \n"
        b'{"id": "b", "text": "{{id}}"}'
    )
    assert list(read_jsonl([data])) == [
        (1, {"id": "a", "n": "3", "ok": "true", "none": "null", "tags": '["x","é"]', "o": '{"k":1.5}'}),
        (4, {"id": "b", "text": "{{id}}"}),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"id": "a",}', "not valid JSON: Expecting property name enclosed in double quotes at column 12"),
        (b"[1, 2]", "a record must be a JSON object, got an array"),
        (b'"text"', "a record must be a JSON object, got a string"),
        (b"null", "a record must be a JSON object, got null"),
        (b'{"a": 1, "a": 2}', 'key "a" appears twice in the object'),
        (b'{"a": NaN}', "not valid JSON: NaN is not a JSON number"),
        (b'{"a": "caf\xe9"}', "not valid UTF-8: byte 0xe9 at offset 10"),
    ],
)
def test_a_bad_jsonl_line_is_rejected_with_its_number_and_reading_goes_on(line: bytes, reason: str) -> None:
    data = b'{"a": "1"}\n' + line + b'\n{"a": "3"}\n'
    assert list(read_jsonl(io.BytesIO(data))) == [(1, {"a": "1"}), (2, Rejection(reason)), (3, {"a": "3"})]


def test_a_jsonl_line_over_the_limit_is_rejected_without_being_held() -> None:
    data = b'{"a": "1"}\n{"a": "' + b"x" * 200 + b'"}\n{"a": "3"}'
    items = list(read_jsonl(in_chunks(data, 16), max_line_bytes=64))
    assert items == [(1, {"a": "1"}), (2, Rejection("the line is longer than 64 bytes")), (3, {"a": "3"})]


@given(records=st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=10) | st.integers()), max_size=5))
def test_jsonl_reads_back_what_was_written(records: list[dict[str, str | int]]) -> None:
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    expected = [
        (number, {key: value if isinstance(value, str) else json.dumps(value) for key, value in record.items()})
        for number, record in enumerate(records, start=1)
    ]
    assert list(read_jsonl(in_chunks(data, 5) if data else [])) == expected
