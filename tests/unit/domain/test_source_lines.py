"""Reading an object's lines with bounded memory (batchdrop.domain.lines): gzip by its magic
bytes, long lines dropped with their length, and a file that cannot be read refused whole."""

from __future__ import annotations

import gzip
import io
import zlib

import pytest

from batchdrop.domain import lines as lines_module
from batchdrop.domain.lines import OverlongLine, SourceLines, UnreadableFileError, line_size


def read(data: bytes, name: str = "inbox/a.jsonl", **kwargs: int) -> list[bytes]:
    return list(SourceLines(io.BytesIO(data), name, **kwargs))


def test_lines_are_split_on_newline_only_and_keep_their_ends() -> None:
    # Given text with \r\n, a lone \r and no final newline
    # When it is read
    # Then each line keeps its bytes, and the last one has no \n
    assert read(b"a\r\nb\rc\nd") == [b"a\r\n", b"b\rc\n", b"d"]


@pytest.mark.parametrize("name", ["inbox/a.jsonl", "inbox/a.jsonl.gz", "inbox/A.JSONL.GZ", "inbox/a"])
def test_a_gzip_file_is_recognised_by_its_magic_bytes_whatever_its_name(name: str) -> None:
    # Given gzip bytes under any name
    reader = SourceLines(io.BytesIO(gzip.compress(b"x\ny\n")), name)
    # When it is read
    # Then it is inflated, and said to be compressed
    assert list(reader) == [b"x\n", b"y\n"]
    assert reader.compressed is True


def test_text_is_read_as_it_is_and_said_not_compressed() -> None:
    reader = SourceLines(io.BytesIO(b"x\n"), "inbox/a.jsonl")
    assert list(reader) == [b"x\n"]
    assert reader.compressed is False


@pytest.mark.parametrize("name", ["inbox/a.jsonl.gz", "inbox/a.JSONL.GZ"])
def test_text_named_gz_is_refused(name: str) -> None:
    with pytest.raises(UnreadableFileError, match=r"named \.gz but is not gzip"):
        read(b'{"custom_id": "a"}\n', name)


def test_a_truncated_gzip_is_refused_as_truncated() -> None:
    whole = gzip.compress(b"line\n" * 1000)
    with pytest.raises(UnreadableFileError, match="the gzip file is truncated"):
        read(whole[: len(whole) // 2])


def test_a_corrupt_gzip_is_refused_as_corrupt() -> None:
    # Given a gzip header followed by bytes that are not deflate data
    corrupt = gzip.compress(b"line\n")[:10] + b"\xff" * 64
    with pytest.raises(UnreadableFileError, match="the gzip file is corrupt"):
        read(corrupt)


def test_a_line_over_the_cap_is_dropped_with_its_length_and_reading_goes_on() -> None:
    # Given a short line, a line of 10,000 bytes and another short line, read with a cap of 100
    data = b"a\n" + b"x" * 9_998 + b"\r\n" + b"b"
    # When it is read
    lines = read(data, max_line_bytes=100)
    # Then the long line is not held: only its length, and the lines around it are whole
    assert lines[0] == b"a\n"
    assert isinstance(lines[1], OverlongLine)
    assert (bytes(lines[1]), line_size(lines[1]), lines[1].length) == (b"", 10_000, 9_998)
    assert lines[2] == b"b"
    assert sum(line_size(line) for line in lines) == len(data)


def test_a_line_of_exactly_the_cap_is_kept() -> None:
    assert read(b"x" * 100 + b"\n", max_line_bytes=100) == [b"x" * 100 + b"\n"]


def test_a_gzip_bomb_is_refused_once_past_the_free_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a gzip of 64 MiB of zeros, without a newline (some 64 KiB compressed)
    monkeypatch.setattr(lines_module, "GZIP_FREE_BYTES", 4 * 1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b"\0" * (1024 * 1024)) for _ in range(64)) + packer.flush()
    # When it is read
    # Then reading stops, naming the ratio, within a line of the larger of the allowance and
    # 500 times the compressed bytes read (here all of them: the reader's buffer holds them)
    with pytest.raises(UnreadableFileError, match="inflates more than 500 times") as caught:
        read(bomb, max_line_bytes=1024 * 1024)
    inflated = int(str(caught.value).split("(")[1].split(" ")[0])
    assert inflated <= max(4 * 1024 * 1024, 500 * len(bomb)) + 1024 * 1024 + 1
    assert inflated < 64 * 1024 * 1024


def test_a_gzip_of_ordinary_text_inflates_past_the_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given text that compresses a few times over, larger than a (shrunken) allowance
    monkeypatch.setattr(lines_module, "GZIP_FREE_BYTES", 1024)
    text = b"".join(b'{"custom_id": "r-%d", "n": %d}\n' % (i, i * 7919 % 104729) for i in range(5000))
    # When / Then it reads whole
    assert b"".join(read(gzip.compress(text))) == text


def test_a_gzip_stops_at_the_most_a_file_may_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a gzip of 2 MiB of varied text, read where a file may hold at most 1 MiB
    monkeypatch.setattr(lines_module, "MAX_FILE_BYTES", 1024 * 1024)
    text = b"".join(b"line %d of some text\n" % (i * 7919 % 1_000_003) for i in range(100_000))
    assert len(text) > 2 * 1024 * 1024
    # When it is read, then it is refused once past the limit, naming it
    with pytest.raises(UnreadableFileError, match="inflates to more than 1048576 bytes, the most taken"):
        read(gzip.compress(text))


def test_a_templated_file_with_a_long_shared_prompt_inflates_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given 5,000 requests sharing a long system prompt (over 200 times smaller gzipped)
    monkeypatch.setattr(lines_module, "GZIP_FREE_BYTES", 1024 * 1024)
    prompt = "You are a careful classifier. " * 100
    text = b"".join(
        b'{"custom_id": "r-%08d", "params": {"system": "%s", "messages": [{"role": "user", "content": "x"}]}}\n'
        % (i, prompt.encode())
        for i in range(5_000)
    )
    packed = gzip.compress(text, 9)
    assert len(text) / len(packed) > 200
    # When it is read, then it is read whole: such a ratio is not a bomb's
    assert sum(map(len, read(packed))) == len(text)
