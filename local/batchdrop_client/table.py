"""An aligned text table of rows of text, fitted to a terminal's width: what `batchdrop results
JOB --show` prints of a job's outputs.csv. Cells are shown on one line (a line break as `↵`, a
tab as a space); when the columns do not fit, the widest are narrowed first and a cut cell
ends in `…`. Widths count what a terminal shows: a wide character (CJK, most emoji) takes two
columns, a combining mark none."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

ELLIPSIS = "…"
GAP = "  "
MIN_WIDTH = 4  # no column is narrowed below this (or its own width, when less)
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029]")


def char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Cf", "Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(char) for char in text)


def one_line(text: str) -> str:
    """A cell's text on one line, with nothing that moves a terminal's cursor."""
    text = _BREAKS.sub("↵", text).replace("\t", " ")
    return "".join(char if char.isprintable() or char == " " else "\ufffd" for char in text)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` columns, ending in `…` when it was cut."""
    if text_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        size = char_width(char)
        if used + size > width - 1:
            break
        kept.append(char)
        used += size
    return "".join(kept) + ELLIPSIS


def fit_widths(natural: Sequence[int], width: int) -> list[int]:
    """Column widths within `width` (gaps included): the widest columns are narrowed to a common
    cap, none below MIN_WIDTH (or its own width). When even that does not fit, every column is at
    its minimum and the line is wider than `width` (the terminal wraps it)."""
    room = width - len(GAP) * max(len(natural) - 1, 0)
    if sum(natural) <= room:
        return list(natural)
    floors = [min(size, MIN_WIDTH) for size in natural]
    if sum(floors) >= room:
        return floors
    low, high = 0, max(natural)
    while low < high:  # the largest cap whose columns fit
        cap = (low + high + 1) // 2
        if sum(max(min(size, cap), floor) for size, floor in zip(natural, floors, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    return [max(min(size, low), floor) for size, floor in zip(natural, floors, strict=True)]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[str]:
    """The header, a rule and each row, aligned in columns that fit `width`; a column whose
    cells are all numbers (or empty) is aligned right."""
    cells = [[one_line(cell) for cell in row] for row in [header, *rows]]
    count = len(header)
    cells = [(row + [""] * count)[:count] for row in cells]  # a short or long row is squared up
    natural = [max(text_width(row[i]) for row in cells) for i in range(count)]
    widths = fit_widths(natural, width)
    body = cells[1:]
    numeric = [bool(body) and all(not row[i] or _NUMBER.fullmatch(row[i]) for row in body) for i in range(count)]
    lines = []
    for index, row in enumerate(cells):
        shown = []
        for i, cell in enumerate(row):
            text = cut(cell, widths[i])
            pad = " " * (widths[i] - text_width(text))
            shown.append(pad + text if numeric[i] and index > 0 else text + pad)
        lines.append(GAP.join(shown).rstrip())
        if index == 0:
            lines.append(GAP.join("-" * size for size in widths))
    return lines
