"""Reading records mode's input, streaming: a CSV with a header row, or JSONL objects. Each
record comes out as (line_number, record) or (line_number, Rejection), where line_number is
the line the record starts on (1-based, the header is line 1) and a record maps each field
name to its text. Nothing holds the file: memory stays flat whatever its size.

CSV is read by the stdlib csv module (quotes, commas, quotes and newlines inside quoted
fields, CRLF) over lines decoded with `surrogateescape`, so a record holding bytes that are
not UTF-8 is parsed like any other and then rejected on its own line, the rest go on (only a
record read from such a line has its fields searched for the escaped bytes: the others are
known to hold none). A
problem with the file itself (empty, unreadable header, a line over the size limit) raises
RecordFileError: the whole file fails, before anything is sent."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, Final

from batchdrop.domain.strict_json import STRICT_DECODER, DuplicateKeyError, NotANumberError

CHUNK_BYTES: Final = 64 * 1024
# A physical line longer than this is not held: in CSV it fails the file, in JSONL it rejects the record.
MAX_LINE_BYTES: Final = 8 * 1024 * 1024
_UTF8_BOM: Final = b"\xef\xbb\xbf"
# What `surrogateescape` turns a byte that is not UTF-8 into: U+DC80..U+DCFF.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that will not be sent: why, and its custom_id when it is known."""

    reason: str
    custom_id: str | None = None


class RecordFileError(ValueError):
    """The file as a whole cannot be read as records; the message names the line and the reason."""


Record = dict[str, str]
Source = Iterable[bytes] | BinaryIO | bytes
ReadItem = tuple[int, Record | Rejection]


class _TooLong:
    """Stands for a physical line over the size limit, whose bytes were dropped as they came."""


_TOO_LONG: Final = _TooLong()


def _chunks(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray):  # a whole file in memory: one chunk
        return iter((bytes(source),))
    read = getattr(source, "read", None)
    if read is not None:
        return iter(partial(read, CHUNK_BYTES), b"")
    return iter(source)


def physical_lines(source: Source, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | _TooLong]:
    """The stream's lines, each with its ending (b"\\n" or b"\\r\\n"); the last may have none.
    A line over `max_line_bytes` is dropped as it comes and stands as _TOO_LONG."""
    pending = bytearray()
    too_long = False
    for chunk in _chunks(source):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if too_long or len(pending) + end + 1 - start > max_line_bytes:
                yield _TOO_LONG
            else:
                yield bytes(pending) + chunk[start : end + 1]
            pending.clear()
            too_long = False
            start = end + 1
        if not too_long:
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                too_long = True
                pending.clear()
    if too_long:
        yield _TOO_LONG
    elif pending:
        yield bytes(pending)


# --- CSV ------------------------------------------------------------------------------


class CsvRecords:
    """A CSV file's records, from its lines (each with its ending, as physical_lines gives
    them). The header is read when it is made (RecordFileError if there is none or it cannot
    be read); iterating yields each record after it, once."""

    def __init__(self, lines: Iterable[bytes | _TooLong], *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max_line_bytes = max_line_bytes
        self._escaped = False  # a line read since the last record held bytes that are not UTF-8
        self._reader = csv.reader(self._text_lines(lines), strict=True)
        self._consumed = 0  # lines the reader has taken so far
        self.header = self._read_header()
        self._all_named = all(self.header)

    def _text_lines(self, lines: Iterable[bytes | _TooLong]) -> Iterator[str]:
        for number, line in enumerate(lines, start=1):
            if isinstance(line, _TooLong) or len(line) > self._max_line_bytes:
                raise RecordFileError(f"line {number}: longer than {self._max_line_bytes} bytes")
            if number == 1 and line.startswith(_UTF8_BOM):
                line = line[len(_UTF8_BOM) :]
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                self._escaped = True
                text = line.decode("utf-8", "surrogateescape")
            yield text

    def _rows(self) -> Iterator[tuple[int, list[str] | str]]:
        """(start line, fields) or (start line, a csv error's reason); blank lines skipped."""
        while True:
            start = self._consumed + 1
            self._escaped = False
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._consumed = self._reader.line_num
                yield start, _csv_reason(str(exc))
                continue
            self._consumed = self._reader.line_num
            if fields:
                yield start, fields

    def _read_header(self) -> tuple[str, ...]:
        for line, fields in self._rows():
            if isinstance(fields, str):
                raise RecordFileError(f"line {line}: the header row cannot be read: {fields}")
            for index, name in enumerate(fields, start=1):
                if _ESCAPED_BYTE.search(name):
                    raise RecordFileError(f"line {line}: column {index} of the header is not valid UTF-8")
            named = [name for name in fields if name]
            duplicates = sorted({name for name in named if named.count(name) > 1})
            if duplicates:
                names = ", ".join(json.dumps(name, ensure_ascii=False) for name in duplicates)
                raise RecordFileError(f"line {line}: the header names {names} more than once")
            return tuple(fields)
        raise RecordFileError("the file is empty: a CSV needs a header row naming its fields")

    def __iter__(self) -> Iterator[ReadItem]:
        width = len(self.header)
        for line, fields in self._rows():
            if isinstance(fields, str):
                yield line, Rejection(fields)
            elif len(fields) != width:
                few_or_many = "few" if len(fields) < width else "many"
                reason = f"too {few_or_many} fields: {len(fields)}, the header has {width}"
                yield line, Rejection(reason)
            else:
                yield line, self._record(fields)

    def _record(self, fields: list[str]) -> Record | Rejection:
        if self._escaped:  # else no field can hold an escaped byte: its lines decoded as UTF-8
            for name, value in zip(self.header, fields, strict=True):
                if (found := _ESCAPED_BYTE.search(value)) is not None:
                    byte = ord(found.group()) - 0xDC00
                    column = json.dumps(name, ensure_ascii=False)
                    return Rejection(f"not valid UTF-8: byte 0x{byte:02x} in field {column}")
        if self._all_named:  # no column without a name to leave out
            return dict(zip(self.header, fields, strict=True))
        return {name: value for name, value in zip(self.header, fields, strict=True) if name}


def read_csv_lines(lines: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> CsvRecords:
    """A CSV file's records from its lines, split already (each with its ending): as read_csv
    reads the same bytes, without splitting them again."""
    return CsvRecords(lines, max_line_bytes=max_line_bytes)


def read_csv(source: Source, *, max_line_bytes: int = MAX_LINE_BYTES) -> CsvRecords:
    return CsvRecords(physical_lines(source, max_line_bytes), max_line_bytes=max_line_bytes)


def _csv_reason(message: str) -> str:
    if "field larger than field limit" in message:
        return f"a field is longer than the {csv.field_size_limit()} characters a CSV field may hold"
    if "expected after" in message:
        return 'a quoted field has text after its closing quote (write a quote inside a quoted field as "")'
    if "unexpected end of data" in message:
        return "a quoted field is never closed: the file ends inside it"
    if "new-line character seen in unquoted field" in message:
        return "a line break inside an unquoted field (a lone carriage return?); quote the field"
    return f"not readable as CSV: {message}"


# --- JSONL ----------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """A record value as the text a template inserts: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_jsonl(source: Source, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[ReadItem]:
    """Each non-blank line -> (line number, record) or (line number, Rejection); a record is a
    JSON object, its non-string values turned into their compact JSON text."""
    for number, line in enumerate(physical_lines(source, max_line_bytes), start=1):
        if isinstance(line, _TooLong):
            yield number, Rejection(f"the line is longer than {max_line_bytes} bytes")
            continue
        if number == 1 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM) :]
        if not line.strip():
            continue
        yield number, _jsonl_record(line)


def _jsonl_record(line: bytes) -> Record | Rejection:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(f"not valid UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start}")
    try:
        parsed = STRICT_DECODER.decode(text.strip())
    except DuplicateKeyError as exc:
        return Rejection(f"key {json.dumps(exc.args[0], ensure_ascii=False)} appears twice in the object")
    except NotANumberError as exc:
        return Rejection(f"not valid JSON: {exc.args[0]} is not a JSON number")
    except json.JSONDecodeError as exc:
        return Rejection(f"not valid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:  # too many digits, nested too deeply
        return Rejection(f"not valid JSON: {type(exc).__name__}")
    if not isinstance(parsed, dict):
        return Rejection(f"a record must be a JSON object, got {_json_kind(parsed)}")
    return {key: as_text(value) for key, value in parsed.items()}


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
