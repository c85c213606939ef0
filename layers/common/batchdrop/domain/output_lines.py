"""Records mode's output rows encoded, one at a time (csv_line and jsonl_line in
domain/outputs.py) or many at a time (RowsEncoder), byte for byte alike, at a fraction of
what the csv module and json.dumps cost per row: the csv module copies a long cell one
character at a time, and json.dumps is some ten times slower than orjson on a row, so a job
of 100,000 rows is encoded in about a second.

A row may also be encoded in two pieces: its tail (the columns a result decides, from
`status` on) when its result is read, whatever the order results come in, and its head (`id`
and the kept fields) when its turn comes in input order (tail_cells, RowsEncoder.add_joined).
Joined, they are the bytes of the whole row encoded at once, but for a row whose head text
holds a lone surrogate beside a float in its tail: json then writes the head and orjson the
tail, and the float may be spelt otherwise (1e-07 for 1e-7), the same number.

Cells are quoted as the csv module quotes them by default (QUOTE_MINIMAL, doubled quotes,
CRLF ends): a cell holding a comma, a quote, a CR or an LF is quoted, and nothing else is.
That rule differs from the module's for a row of one empty cell only, and a row of outputs
always has more than one cell (id, status and the usage columns at least)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

_JSON_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def cell(value: Any) -> str:
    """A value as one CSV cell: empty for none, text as it is, anything else as its JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _JSON_TEXT.encode(value)


def json_line(values: Mapping[str, Any]) -> bytes:
    """A row as one compact JSON line (newline included), its text as UTF-8. orjson writes it;
    what orjson refuses (an integer beyond 64 bits, text holding a lone surrogate, which
    comes from a JSONL record's \\ud800 escape) json writes instead, the surrogate as its
    escape. A float JSON cannot hold (inf, from an answer's 1e400) is null, as orjson writes it."""
    row = values if type(values) is dict else dict(values)
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError
        text = json.dumps(_finite(row), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8", "backslashreplace") + b"\n"


def _finite(value: Any) -> Any:
    """`value` with each float JSON cannot hold (inf, -inf, nan) made None, as orjson writes it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def csv_text(values: Iterable[Any], end: str = "\r\n") -> str:
    """One CSV line of a row's values (or a header's names), as text, `end` (CRLF) included. A
    cell's text is what outputs.cell gives; numbers are written without a json.dumps call (the
    JSON text of an int or a finite float is its repr)."""
    cells: list[str] = []
    add = cells.append
    for value in values:
        kind = type(value)
        if kind is str:
            text: str = value
        elif value is None:
            add("")
            continue
        elif kind is int or (kind is float and math.isfinite(value)):
            add(repr(value))
            continue
        else:
            text = cell(value)
        if '"' in text:
            add('"' + text.replace('"', '""') + '"')
        elif "," in text or "\n" in text or "\r" in text:
            add('"' + text + '"')
        else:
            add(text)
    return ",".join(cells) + end


def tail_cells(tail: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The tail of a row (its columns from `status` on, never none) as the end of its CSV line
    and the end of its JSON line, to be joined to its head by RowsEncoder.add_joined."""
    return csv_text(tail.values()).encode("utf-8", "backslashreplace"), json_line(tail)[1:]


class RowsEncoder:
    """Rows gathered as outputs.csv and outputs.jsonl, taken as bytes a batch at a time. A lone
    surrogate in a CSV cell (from a JSONL record's \\ud800 escape) is written as that escape,
    as csv_line does."""

    def __init__(self) -> None:
        self._csv: list[bytes | memoryview] = []
        self._jsonl: list[bytes | memoryview] = []
        self.chars = 0  # bytes held now, both files

    def add(self, values: Mapping[str, Any]) -> None:
        table = csv_text(values.values()).encode("utf-8", "backslashreplace")
        line = json_line(values)
        self._csv.append(table)
        self._jsonl.append(line)
        self.chars += len(table) + len(line)

    def add_joined(self, head: Mapping[str, Any], csv_tail: bytes | memoryview, jsonl_tail: bytes | memoryview) -> None:
        """A row from its head (`id` and the kept fields) and its tail's cells (tail_cells),
        each piece kept as it is until take() joins them: the tail is copied once."""
        table = csv_text(head.values(), ",").encode("utf-8", "backslashreplace")
        line = json_line(head)[:-2] + b","
        self._csv += (table, csv_tail)
        self._jsonl += (line, jsonl_tail)
        self.chars += len(table) + len(csv_tail) + len(line) + len(jsonl_tail)

    def take(self) -> tuple[bytes, bytes]:
        """The rows added since the last take: (CSV bytes, JSONL bytes)."""
        table = b"".join(self._csv)
        lines = b"".join(self._jsonl)
        self._csv.clear()
        self._jsonl.clear()
        self.chars = 0
        return table, lines
