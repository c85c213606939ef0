"""Specification of sharding: every shard's create body respects both API limits, and a shard
only ends when the next line would break one of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import groupby

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchdrop.domain.requests import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, ValidLine
from batchdrop.domain.shards import (
    ENVELOPE_BYTES,
    ENVELOPE_CLOSE,
    ENVELOPE_OPEN,
    SEPARATOR,
    ShardLimits,
    assign_shards,
    create_body,
    create_body_bytes,
    lines_body_bytes,
    request_lines,
    shard_key,
)

SEPARATOR_BYTES = len(SEPARATOR)


def line_of(size: int, number: int = 1) -> ValidLine:
    return ValidLine(number, f"r{number}", b"x" * size)


def shards_of(lines: list[ValidLine], limits: ShardLimits) -> list[list[ValidLine]]:
    return [[line for _, line in group] for _, group in groupby(assign_shards(lines, limits), key=lambda pair: pair[0])]


def body_of(lines: list[ValidLine]) -> bytes:
    """The create body of these lines, as the API takes it (written out, not streamed)."""
    return ENVELOPE_OPEN + SEPARATOR.join(line.body for line in lines) + ENVELOPE_CLOSE


def shard_of(lines: list[ValidLine]) -> bytes:
    """The JSON Lines shard holding these lines."""
    return b"".join(line.body + b"\n" for line in lines)


def assert_shards_are_full_and_within(shards: list[list[ValidLine]], limits: ShardLimits) -> None:
    for position, shard in enumerate(shards):
        next_shard = shards[position + 1] if position + 1 < len(shards) else None
        assert 1 <= len(shard) <= limits.max_requests
        assert len(body_of(shard)) <= limits.max_bytes
        if next_shard is not None:  # the shard ended only because the next line would not fit
            with_next = [*shard, next_shard[0]]
            assert len(with_next) > limits.max_requests or len(body_of(with_next)) > limits.max_bytes


def test_the_create_body_is_the_envelope_around_lines_joined_by_commas() -> None:
    # Given two valid request bodies
    lines = [ValidLine(1, "a", b'{"custom_id":"a"}'), ValidLine(2, "b", b'{"custom_id":"b"}')]
    # When the body of their shard is streamed
    body = b"".join(create_body(iter([shard_of(lines)])))
    # Then it is the API's create body, one request per line
    assert body == b'{"requests":[\n{"custom_id":"a"},\n{"custom_id":"b"}\n]}'
    assert json.loads(body) == {"requests": [{"custom_id": "a"}, {"custom_id": "b"}]}
    assert create_body_bytes(2, sum(len(line.body) for line in lines)) == len(body)


@pytest.mark.parametrize("count", [1, 2, 5])
def test_a_shard_reads_back_as_its_request_bodies(count: int) -> None:
    # Given a shard of `count` requests, split into lines as S3 streams it
    tricky = '"params":{"x":",\\n]}"}'  # separators and envelope bytes inside a string
    lines = [ValidLine(n, f"id-{n}", f'{{"custom_id":"id-{n}",{tricky}}}'.encode()) for n in range(count)]
    # When its requests are read back
    read = list(request_lines(shard_of(lines).splitlines(keepends=True)))
    # Then they are exactly the request bodies, in order
    assert read == [line.body for line in lines]


def test_the_create_body_is_streamed_not_joined() -> None:
    # Given a body stream
    chunks = create_body(iter([shard_of([line_of(5, 1), line_of(5, 2)])]))
    # When it is read / Then it comes in pieces, envelope first
    assert next(chunks) == ENVELOPE_OPEN
    assert list(chunks)[-1] == ENVELOPE_CLOSE


def test_shards_hold_exactly_max_requests_at_the_count_boundary() -> None:
    # Given 7 small lines and a limit of 3 requests per shard
    limits = ShardLimits(max_requests=3, max_bytes=10_000)
    lines = [line_of(10, n) for n in range(1, 8)]
    # When they are assigned
    shards = shards_of(lines, limits)
    # Then shards are 3, 3, 1, in input order
    assert [[line.line for line in shard] for shard in shards] == [[1, 2, 3], [4, 5, 6], [7]]
    assert_shards_are_full_and_within(shards, limits)


def test_a_shard_ends_when_envelope_and_commas_would_exceed_the_byte_limit() -> None:
    # Given lines of 10 bytes, and a limit that fits exactly 3 of them with the envelope and 2 commas
    limits = ShardLimits(max_requests=100, max_bytes=ENVELOPE_BYTES + 3 * 10 + 2 * SEPARATOR_BYTES)
    lines = [line_of(10, n) for n in range(1, 8)]
    # When they are assigned
    shards = shards_of(lines, limits)
    # Then each shard is exactly at the limit, and a fourth line (1 comma + 10 bytes) would have overflowed it
    assert [len(shard) for shard in shards] == [3, 3, 1]
    assert len(body_of(shards[0])) == limits.max_bytes
    assert_shards_are_full_and_within(shards, limits)


def test_one_byte_less_and_the_comma_pushes_the_third_line_out() -> None:
    # Given the same lines and a limit one byte short of three
    limits = ShardLimits(max_requests=100, max_bytes=ENVELOPE_BYTES + 3 * 10 + 2 * SEPARATOR_BYTES - 1)
    # When they are assigned
    shards = shards_of([line_of(10, n) for n in range(1, 8)], limits)
    # Then shards hold two lines each
    assert [len(shard) for shard in shards] == [2, 2, 2, 1]
    assert_shards_are_full_and_within(shards, limits)


def test_a_line_that_alone_fills_the_body_gets_its_own_shard() -> None:
    # Given a line exactly as large as a body allows, between two small ones
    limits = ShardLimits(max_requests=100, max_bytes=100)
    lines = [line_of(5, 1), line_of(100 - ENVELOPE_BYTES, 2), line_of(5, 3)]
    # When they are assigned
    shards = shards_of(lines, limits)
    # Then it sits alone
    assert [[line.line for line in shard] for shard in shards] == [[1], [2], [3]]
    assert_shards_are_full_and_within(shards, limits)


def test_a_line_too_large_for_any_body_raises() -> None:
    # Given a line one byte over what a body can hold
    limits = ShardLimits(max_requests=100, max_bytes=100)
    lines = [line_of(5, 1), line_of(100 - ENVELOPE_BYTES + 1, 2)]
    # When they are assigned / Then the oversized line is refused, by number
    with pytest.raises(ValueError, match="line 2"):
        list(assign_shards(lines, limits))


def test_no_lines_make_no_shards() -> None:
    assert list(assign_shards([])) == []


@pytest.mark.parametrize(("max_requests", "max_bytes"), [(0, 100), (1, ENVELOPE_BYTES)])
def test_limits_that_cannot_hold_a_request_are_refused(max_requests: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must"):
        ShardLimits(max_requests=max_requests, max_bytes=max_bytes)


def test_the_default_limits_are_the_apis() -> None:
    assert ShardLimits() == ShardLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)


def test_at_the_real_count_limit_100001_requests_make_two_shards() -> None:
    # Given 100,001 small lines, streamed
    small = b'{"custom_id":"x","params":{}}'
    lines = (ValidLine(n, f"r{n}", small) for n in range(1, MAX_BATCH_REQUESTS + 2))
    # When they are assigned with the API's limits
    sizes: dict[int, int] = {}
    for index, _ in assign_shards(lines):
        sizes[index] = sizes.get(index, 0) + 1
    # Then the first shard holds exactly 100,000 and the second the one left
    assert sizes == {0: MAX_BATCH_REQUESTS, 1: 1}


def test_at_the_real_byte_limit_shards_hold_what_256_mb_allows() -> None:
    # Given 600 lines of 1 MiB each (one shared buffer: nothing near 256 MB is allocated)
    mib = b"x" * (1024 * 1024)
    lines = (ValidLine(n, f"r{n}", mib) for n in range(1, 601))
    # When they are assigned with the API's limits
    sizes: dict[int, int] = {}
    for index, _ in assign_shards(lines):
        sizes[index] = sizes.get(index, 0) + 1
    # Then each full shard holds the most lines whose body (envelope + lines + commas) fits in 256 MB:
    # 256 lines would need 256 MiB + 15 + 255 bytes, so 255 fit
    per_shard = max(n for n in range(1, 300) if create_body_bytes(n, n * len(mib)) <= MAX_BATCH_BYTES)
    assert per_shard == 255
    assert create_body_bytes(per_shard + 1, (per_shard + 1) * len(mib)) > MAX_BATCH_BYTES
    assert sizes == {0: 255, 1: 255, 2: 90}


def test_shard_keys_sort_in_shard_order() -> None:
    assert shard_key("jabc", 0) == "work/jabc/shard-00000.jsonl"
    assert shard_key("jabc", 12) == "work/jabc/shard-00012.jsonl"
    assert sorted(shard_key("j", n) for n in (10, 2, 1)) == [shard_key("j", n) for n in (1, 2, 10)]


# --- property: any sizes, any limits -----------------------------------------------------


@st.composite
def lines_and_limits(draw: st.DrawFn) -> tuple[list[ValidLine], ShardLimits]:
    max_bytes = draw(st.integers(ENVELOPE_BYTES + 1, 400))
    limits = ShardLimits(max_requests=draw(st.integers(1, 8)), max_bytes=max_bytes)
    sizes = draw(st.lists(st.integers(0, max_bytes - ENVELOPE_BYTES), max_size=80))
    return [line_of(size, n) for n, size in enumerate(sizes, start=1)], limits


@given(lines_and_limits())
def test_any_lines_are_cut_into_full_shards_within_both_limits(case: tuple[list[ValidLine], ShardLimits]) -> None:
    # Given lines of any size that fits a body, and any limits
    lines, limits = case
    # When they are assigned
    assigned = list(assign_shards(lines, limits))
    # Then every line is kept once, in order, with shard indexes counting up from 0 without gaps
    assert [line for _, line in assigned] == lines
    indexes = [index for index, _ in assigned]
    assert indexes == sorted(indexes)
    assert sorted(set(indexes)) == list(range(len(set(indexes))))
    # And every shard is within both limits, and ended only because the next line would not fit
    assert_shards_are_full_and_within(shards_of(lines, limits), limits)


def _endless_lines() -> Iterator[ValidLine]:
    number = 0
    while True:
        number += 1
        yield line_of(10, number)


def test_assign_shards_is_lazy() -> None:
    # Given an endless stream of lines
    assigned = assign_shards(_endless_lines(), ShardLimits(max_requests=2, max_bytes=1000))
    # When five are taken / Then they come, without the stream being exhausted
    assert [index for index, _ in (next(assigned) for _ in range(5))] == [0, 0, 1, 1, 2]


# --- JSON Lines shards: the create body is made while it is sent --------------------------


@st.composite
def shard_as_read(draw: st.DrawFn) -> tuple[list[ValidLine], bytes, list[bytes]]:
    """Request lines (separators and envelope bytes inside strings), their JSON Lines shard
    with or without a last newline, and that shard cut into chunks anywhere, as S3 streams."""
    texts = draw(st.lists(st.text(alphabet=',]}{[\\"\n\r x', max_size=12), min_size=1, max_size=20))
    lines = [
        ValidLine(n, f"id-{n}", json.dumps({"custom_id": f"id-{n}", "t": t}).encode()) for n, t in enumerate(texts)
    ]
    shard = b"\n".join(line.body for line in lines) + (b"\n" if draw(st.booleans()) else b"")
    cuts = sorted(draw(st.lists(st.integers(0, len(shard)), max_size=8)))
    chunks = [shard[a:b] for a, b in zip([0, *cuts], [*cuts, len(shard)], strict=True)]
    return lines, shard, chunks


@given(shard_as_read())
def test_a_lines_shard_streams_as_the_create_body_of_its_lines(
    case: tuple[list[ValidLine], bytes, list[bytes]],
) -> None:
    # Given a JSON Lines shard read in chunks cut anywhere (empty ones too)
    lines, shard, chunks = case
    # When its create body is streamed
    body = b"".join(create_body(iter(chunks)))
    # Then it is byte for byte the body of its lines, of one of the two sizes its object allows
    assert body == body_of(lines)
    assert json.loads(body) == {"requests": [json.loads(line.body) for line in lines]}
    with_newline, without = lines_body_bytes(len(shard), len(lines))
    assert len(body) == (with_newline if shard.endswith(b"\n") else without)
    # And its requests read back line by line, as retries read them
    assert list(request_lines(shard.splitlines(keepends=True))) == [line.body for line in lines]
