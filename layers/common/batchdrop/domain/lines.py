"""Reading an uploaded object's lines with bounded memory, whatever its bytes.

A gzip stream is recognised by its first two bytes (1f 8b), whatever the object's name; an
object named .gz that does not begin with them is refused. A line longer than the cap is not
held: only its length is kept, to be named in its rejection, and reading goes on. Inflating
stops at MAX_FILE_BYTES decompressed, as for a plain file, and, beyond its first 256 MiB, as
soon as the data inflates more than MAX_GZIP_RATIO times: a small gzip that inflates to
gigabytes (a "gzip bomb") ends the job with that reason instead of running out the
function's time. A truncated or corrupt gzip is a file-level error, like an empty file.

Every refusal of the file as a whole raises UnreadableFileError, whose message is the reason
the job's manifest gives."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

GZIP_MAGIC = b"\x1f\x8b"
# The Messages API refuses a request over 32 MB; a line longer than that cannot be sent, and
# parsing one holds several times its size in memory.
# https://docs.claude.com/en/api/overview#request-size-limits
MAX_LINE_BYTES = 32 * 1024 * 1024
# Decompressed bytes read before the ratio is judged; beyond them, at most MAX_GZIP_RATIO
# decompressed bytes per compressed byte read.
GZIP_FREE_BYTES = 256 * 1024 * 1024
# The largest file taken, by the size its event reports, before a byte is read: the largest
# object S3 holds (5 TiB). A file too large to split within one invocation is split in
# segments, each going on from where the last one stopped (services/segments.py).
MAX_FILE_BYTES = 5 * 1024**4
# Deflate inflates at most some 1,030 times (a run of one byte); templated JSON Lines files
# with a long shared prompt measured 160 to 330.
MAX_GZIP_RATIO = 500
_CHUNK = 1024 * 1024
_NEWLINE = ord("\n")


class ByteSource(Protocol):
    """What the lines are read from: an S3 body, or a file."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


class UnreadableFileError(ValueError):
    """The object cannot be read as JSON Lines at all; the message is the reason."""


class OverlongLine(bytes):
    """A line over the cap, not held: empty, with the bytes the whole line took in the
    object (`size`) and the length of its text without its line end (`length`)."""

    size: int
    length: int

    def __new__(cls, size: int, length: int) -> OverlongLine:
        line = super().__new__(cls, b"")
        line.size = size
        line.length = length
        return line


class SourceLines:
    """The lines of one object (each with its \\n, the last one maybe without), split on \\n
    only. `compressed` tells, once the first line is read, whether the bytes were gzip."""

    def __init__(
        self, raw: ByteSource, name: str, *, max_line_bytes: int = MAX_LINE_BYTES, plain: bool = False
    ) -> None:
        self._raw = _Counting(raw)
        self._name = name
        self._max_line_bytes = max_line_bytes
        # `plain`: the bytes are known not to be gzip (a range read from the middle of a
        # plain file, whose first bytes say nothing about it).
        self._plain = plain
        self.compressed: bool | None = False if plain else None
        self._lines = self._read()

    def __iter__(self) -> Iterator[bytes]:
        return self._lines  # the generator itself: no call of ours between two lines

    def _read(self) -> Iterator[bytes]:
        buffered = io.BufferedReader(self._raw, _CHUNK)
        with buffered:
            if self._plain:
                yield from _bounded_lines(buffered, self._max_line_bytes)
                return
            self.compressed = buffered.peek(2)[:2] == GZIP_MAGIC
            if not self.compressed:
                if self._name.lower().endswith(".gz"):
                    raise UnreadableFileError("the file is named .gz but is not gzip (it does not begin with 1f 8b)")
                yield from _bounded_lines(buffered, self._max_line_bytes)
                return
            inflated = io.BufferedReader(_Inflated(gzip.GzipFile(fileobj=buffered), self._raw), _CHUNK)
            try:
                yield from _bounded_lines(inflated, self._max_line_bytes)
            except EOFError as exc:
                raise UnreadableFileError("the gzip file is truncated: it ends before its last member does") from exc
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise UnreadableFileError(f"the gzip file is corrupt: {exc}") from exc


class _Readable(Protocol):
    def readline(self, limit: int, /) -> bytes: ...


def line_size(line: bytes) -> int:
    """How many bytes of the object the line took (an overlong line's whole length)."""
    return line.size if isinstance(line, OverlongLine) else len(line)


def _bounded_lines(stream: _Readable, cap: int) -> Iterator[bytes]:
    readline, limit = stream.readline, cap + 1
    while line := readline(limit):
        if len(line) <= cap or line[-1] == _NEWLINE:
            yield line
            continue
        size, tail = len(line), line[-2:]
        while not line.endswith(b"\n"):  # the rest of the long line, read and dropped
            line = stream.readline(_CHUNK)
            if not line:
                break
            size, tail = size + len(line), (tail + line)[-2:]
        yield OverlongLine(size, size - (len(tail) - len(tail.rstrip(b"\r\n"))))


class _Counting(io.RawIOBase):
    """A raw stream that counts the bytes read from it."""

    def __init__(self, raw: ByteSource) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        view[: len(data)] = data
        self.count += len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Inflated(io.RawIOBase):
    """A gzip stream's bytes, inflated a chunk at a time, stopping when their size is not
    plausible (read through a buffer, which splits the lines)."""

    def __init__(self, stream: gzip.GzipFile, compressed: _Counting) -> None:
        self._stream = stream
        self._compressed = compressed
        self._inflated = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        read = self._stream.readinto(buffer)
        self._inflated += read
        if self._inflated > MAX_FILE_BYTES:
            raise UnreadableFileError(f"the gzip file inflates to more than {MAX_FILE_BYTES} bytes, the most taken")
        if self._inflated > GZIP_FREE_BYTES and self._inflated > MAX_GZIP_RATIO * max(self._compressed.count, 1):
            raise UnreadableFileError(
                f"the gzip file inflates more than {MAX_GZIP_RATIO} times ({self._inflated} bytes from"
                f" {self._compressed.count} read): refused as a decompression bomb"
            )
        return read
