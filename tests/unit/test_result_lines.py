"""A results download is cut into lines as bytes, however its chunks fall: a line split
across chunks (a CRLF's CR and LF in two of them too) comes whole, line ends go, blank lines
are skipped and a last line without its LF still counts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.adapters.batches import _lines_of

pytestmark = pytest.mark.unit

# Lines as JSON Lines holds them: no raw CR or LF inside.
_LINE = st.binary(max_size=40).map(lambda line: line.replace(b"\n", b"n").replace(b"\r", b"r"))


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@given(
    lines=st.lists(_LINE, max_size=30),
    ends=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=30, max_size=30),
    last_end=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_the_lines_come_whole_whatever_the_chunks(
    lines: list[bytes], ends: list[bytes], last_end: bool, cuts: list[int]
) -> None:
    data = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    if lines and not last_end:
        data = data[: -len(ends[len(lines) - 1])]  # the last line without its line end
    assert list(_lines_of(_chunked(data, cuts))) == [line for line in lines if line.strip()]


def test_a_crlf_cut_between_its_cr_and_its_lf() -> None:
    assert list(_lines_of([b'{"a": 1}\r', b'\n{"b": 2}\r\n', b"\r\n  \n", b'{"c"', b": 3}"])) == [
        b'{"a": 1}',
        b'{"b": 2}',
        b'{"c": 3}',
    ]
