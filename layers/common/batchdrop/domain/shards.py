"""Cutting a stream of valid request lines into batches that respect both API limits (requests
per batch and bytes per create body), and streaming each batch's create body."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchdrop.domain.requests import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS, ValidLine

# One request per line (a compact request body never holds a raw newline), so a shard's
# requests can be read back line by line to build a retry body.
ENVELOPE_OPEN = b'{"requests":[\n'
ENVELOPE_CLOSE = b"\n]}"
SEPARATOR = b",\n"
_SEPARATOR = SEPARATOR
ENVELOPE_BYTES = len(ENVELOPE_OPEN) + len(ENVELOPE_CLOSE)
SEPARATOR_BYTES = len(_SEPARATOR)


@dataclass(frozen=True, slots=True)
class ShardLimits:
    max_requests: int = MAX_BATCH_REQUESTS
    max_bytes: int = MAX_BATCH_BYTES  # bytes of the whole create body: envelope + lines + commas

    def __post_init__(self) -> None:
        if self.max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {self.max_requests}")
        if self.max_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_bytes must leave room for a request after the envelope, got {self.max_bytes}")


DEFAULT_LIMITS = ShardLimits()


def create_body_bytes(requests: int, line_bytes: int) -> int:
    """Size of a create body holding `requests` lines of `line_bytes` bytes in total."""
    return ENVELOPE_BYTES + line_bytes + max(requests - 1, 0) * len(_SEPARATOR)


def assign_shards(lines: Iterable[ValidLine], limits: ShardLimits = DEFAULT_LIMITS) -> Iterator[tuple[int, ValidLine]]:
    """(shard index from 0, line), streaming: a new shard starts whenever adding the line would exceed
    max_requests or max_bytes of the create body. A single line that alone exceeds max_bytes raises
    ValueError (check_lines rejects those first)."""
    index = 0
    requests = 0
    body_bytes = ENVELOPE_BYTES
    for line in lines:
        size = len(line.body)
        if create_body_bytes(1, size) > limits.max_bytes:
            raise ValueError(
                f"line {line.line} ({size} bytes) cannot fit in a create body of at most {limits.max_bytes} bytes"
            )
        if requests and (requests >= limits.max_requests or body_bytes + len(_SEPARATOR) + size > limits.max_bytes):
            index += 1
            requests = 0
            body_bytes = ENVELOPE_BYTES
        body_bytes += size + (len(_SEPARATOR) if requests else 0)
        requests += 1
        yield index, line


def body_chunks(lines: Iterable[ValidLine]) -> Iterator[bytes]:
    """The create body for one shard's lines as a stream of bytes: ENVELOPE_OPEN, lines joined by b",\\n",
    ENVELOPE_CLOSE. No lines gives an empty `requests` array, which the API refuses: callers send none."""
    yield ENVELOPE_OPEN
    first = True
    for line in lines:
        if not first:
            yield _SEPARATOR
        yield line.body
        first = False
    yield ENVELOPE_CLOSE


def shard_key(job_id: str, index: int, attempt: int = 1) -> str:
    """Where a shard's create body is kept: work/<job_id>/shard-00000.json, and the body of
    its retry at attempt N (the requests to send again): work/<job_id>/shard-00000-aN.json."""
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"work/{job_id}/shard-{index:05d}{suffix}.json"


def body_requests(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The request bodies of a create body written by `body_chunks` (or the submit path), read
    back line by line: the envelope lines are skipped and each request's separator dropped."""
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if line in (ENVELOPE_OPEN.rstrip(b"\n"), ENVELOPE_CLOSE.lstrip(b"\n")):
            continue
        yield line[:-1] if line.endswith(b",") else line
