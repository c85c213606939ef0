"""Cutting a stream of valid request lines into batches that respect both API limits (requests
per batch and bytes per create body), and streaming each batch's create body.

A shard is kept in work/ as JSON Lines, one request per line (`shard-00000.jsonl`): when the
source's lines are already exactly that, the shard is a server-side copy of their bytes.
Its create body is made while it is sent: `{"requests":[` + the lines joined by `,` + `]}`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchdrop.domain.requests import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, ValidLine

SHARD_CONTENT_TYPE = "application/x-ndjson"
# The create body around a shard's lines. A request line never holds a raw newline (JSON
# escapes them in strings), so the lines can be read back one by one.
ENVELOPE_OPEN = b'{"requests":[\n'
ENVELOPE_CLOSE = b"\n]}"
SEPARATOR = b",\n"
ENVELOPE_BYTES = len(ENVELOPE_OPEN) + len(ENVELOPE_CLOSE)


@dataclass(frozen=True, slots=True)
class ShardLimits:
    max_requests: int = MAX_BATCH_REQUESTS
    max_bytes: int = MAX_BATCH_BYTES  # bytes of the whole create body: envelope + lines + commas

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {self.max_requests}")
        if self.max_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must leave room for a request after the envelope, got {self.max_bytes}")


DEFAULT_LIMITS = ShardLimits()  # the API's own


def create_body_bytes(requests: int, line_bytes: int) -> int:
    """Size of a create body holding `requests` lines of `line_bytes` bytes in total."""
    return ENVELOPE_BYTES + line_bytes + max(requests - 1, 0) * len(SEPARATOR)


def assign_shards(lines: Iterable[ValidLine], limits: ShardLimits = DEFAULT_LIMITS) -> Iterator[tuple[int, ValidLine]]:
    """(shard index from 0, line), streaming: a new shard starts whenever adding the line would exceed
    max_requests or max_bytes of the create body. A single line that alone exceeds max_bytes raises
    ValueError (check_lines rejects those first)."""
    index = 0
    requests = 0
    body_bytes = ENVELOPE_BYTES
    for line in lines:
        size = len(line.body)
        if ENVELOPE_BYTES + size > limits.max_bytes:  # create_body_bytes(1, size), inline: it runs per line
            raise ValueError(
                f"line {line.line} ({size} bytes) cannot fit in a create body of at most {limits.max_bytes} bytes"
            )
        if requests and (requests >= limits.max_requests or body_bytes + len(SEPARATOR) + size > limits.max_bytes):
            index += 1
            requests = 0
            body_bytes = ENVELOPE_BYTES
        body_bytes += size + (len(SEPARATOR) if requests else 0)
        requests += 1
        yield index, line


def shard_key(job_id: str, index: int, attempt: int = 1) -> str:
    """Where a shard's requests are kept: work/<job_id>/shard-00000.jsonl, and the requests
    of its retry at attempt N (those to send again): work/<job_id>/shard-00000-aN.jsonl."""
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"work/{job_id}/shard-{index:05d}{suffix}.jsonl"


def whole_copy_key(job_id: str) -> str:
    """Where S3 copies a whole uploaded file while the function reads it, when the file may
    be one clean shard: work/<job_id>/source.jsonl. It is the job's one shard when the file
    turns out to be exactly that (every line a request, one after another); else it is not
    used, and expires with work/. Always a byte copy of the job's own object version."""
    return f"work/{job_id}/source.jsonl"


def create_body(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The create body of a JSON Lines shard read as `chunks` of any size: ENVELOPE_OPEN, the
    lines joined by SEPARATOR, ENVELOPE_CLOSE; the last line's newline, if any, is dropped.
    Each chunk is rewritten once (`bytes.replace`), so the body streams at memory speed."""
    yield ENVELOPE_OPEN
    newline_held = False
    for chunk in chunks:
        if not chunk:
            continue
        if newline_held:  # more bytes follow: the held newline ended a line that is not the last
            yield SEPARATOR
        newline_held = chunk.endswith(b"\n")
        yield (chunk[:-1] if newline_held else chunk).replace(b"\n", SEPARATOR)
    yield ENVELOPE_CLOSE


def lines_body_bytes(object_bytes: int, requests: int) -> tuple[int, int]:
    """The create body sizes a JSON Lines shard of `object_bytes` holding `requests` lines
    can have: its last line ends in a newline, or (copied from the end of a file) it does not."""
    with_newline = create_body_bytes(requests, object_bytes - requests)
    return with_newline, with_newline + 1


def request_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    """A shard's requests, read back from its lines: each less its line ending."""
    for raw in lines:
        yield raw.rstrip(b"\r\n")
