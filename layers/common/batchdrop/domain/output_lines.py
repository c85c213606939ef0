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
from collections.abc import Iterable, Mapping
from typing import Any

from batchdrop.domain.outputs import cell


def _text(value: Any) -> str:
    """A value as its cell's text: what outputs.cell gives, numbers without a json.dumps call
    (the JSON text of a finite int or float is its repr; NaN and infinities never reach a row)."""
    kind = type(value)
    if kind is str:
        return str(value)
    if value is None:
        return ""
    if kind is int or kind is float:
        return repr(value)
    return cell(value)


def csv_text(values: Iterable[Any]) -> str:
    """One CSV line of a row's values (or a header's names), as text, CRLF included."""
    cells = []
    for value in values:
        text = _text(value)
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
        line = json.dumps(dict(values), ensure_ascii=False, separators=(",", ":")) + "\n"
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
