"""Records mode's output rows encoded many at a time: byte for byte the lines that
domain/outputs.csv_line and jsonl_line give, at a fraction of their cost per row (the csv
module copies a long cell one character at a time, and json.dumps of a lone number is slow
for what it does), so a job of 100,000 rows is encoded in seconds.

Cells are quoted as the csv module quotes them by default (QUOTE_MINIMAL, doubled quotes,
CRLF ends): a cell holding a comma, a quote, a CR or an LF is quoted, and nothing else is.
That rule differs from the module's for a row of one empty cell only, and a row of outputs
always has more than one cell (id, status and the usage columns at least)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from batchdrop.domain.outputs import cell

# What jsonl_line's json.dumps builds anew on each call, built once.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# The C encoder that _JSON.encode builds anew on each call, built once too: a row is one dict
# of JSON values, never circular, so it goes without the circular-reference bookkeeping.
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ROW_ENCODER = (
    _C_ENCODER(None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _C_ENCODER is not None
    else None
)


def json_text(values: Mapping[str, Any]) -> str:
    """A row as compact JSON text, as _JSON.encode(dict(values)) writes it."""
    row = values if type(values) is dict else dict(values)
    if _ROW_ENCODER is None:
        return _JSON.encode(row)
    return "".join(_ROW_ENCODER(row, 0))


def csv_text(values: Iterable[Any]) -> str:
    """One CSV line of a row's values (or a header's names), as text, CRLF included. A cell's
    text is what outputs.cell gives; numbers are written without a json.dumps call (the JSON
    text of an int or a finite float is its repr)."""
    cells = []
    for value in values:
        kind = type(value)
        if kind is str:
            text = str(value)
        elif value is None:
            cells.append("")
            continue
        elif kind is int or (kind is float and math.isfinite(value)):
            cells.append(repr(value))
            continue
        else:
            text = cell(value)
        if '"' in text:
            text = '"' + text.replace('"', '""') + '"'
        elif "," in text or "\n" in text or "\r" in text:
            text = '"' + text + '"'
        cells.append(text)
    return ",".join(cells) + "\r\n"


class RowsEncoder:
    """Rows gathered as outputs.csv and outputs.jsonl text, taken as bytes a batch at a time."""

    def __init__(self) -> None:
        self._csv: list[str] = []
        self._jsonl: list[str] = []
        self.chars = 0  # held now, both files

    def add(self, values: Mapping[str, Any]) -> None:
        table = csv_text(values.values())
        line = json_text(values) + "\n"
        self._csv.append(table)
        self._jsonl.append(line)
        self.chars += len(table) + len(line)

    def take(self) -> tuple[bytes, bytes]:
        """The rows added since the last take: (CSV bytes, JSONL bytes). A lone surrogate (from
        a JSONL record's \\ud800 escape) is written as that escape, as csv_line does."""
        table = "".join(self._csv).encode("utf-8", "backslashreplace")
        lines = "".join(self._jsonl).encode("utf-8", "backslashreplace")
        self._csv.clear()
        self._jsonl.clear()
        self.chars = 0
        return table, lines
