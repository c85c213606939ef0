"""The multipart writer makes the object of exactly the bytes written, however the writes
fall against its parts: many short lines, writes longer than a part, writes that end on a
part's boundary, a copied range first. After the first part, parts are filled in buffers
reused once sent, so a buffer refilled before its part had gone would show here as wrong
bytes: each object is random bytes, no two parts alike. Checked against moto's in-process
S3, its parts sent from the writer's threads as in the functions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from batchdrop.adapters.objects import PART_BYTES, ObjectStore
from batchdrop.ports import SourceRange
from tests.unit.moto_s3 import versioned_bucket

pytestmark = pytest.mark.unit

BUCKET = "writer-bucket"
MB = 1024 * 1024


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with versioned_bucket(monkeypatch, BUCKET) as client:
        yield client


def _sizes(total: int, pattern: str) -> list[int]:
    """The lengths of the writes that make `total` bytes, in the named pattern."""
    if pattern == "lines":
        sizes = [1000] * (total // 1000)
    elif pattern == "one write":
        sizes = [total]
    elif pattern == "whole parts":
        sizes = [PART_BYTES] * (total // PART_BYTES)
    elif pattern == "across boundaries":
        sizes = [3 * MB + 17] * (total // (3 * MB + 17))
    else:  # "mixed": short and long writes, some longer than a part
        rng = random.Random(7)
        sizes = []
        while sum(sizes) < total:
            sizes.append(rng.choice([1, 999, 64 * 1024, 2 * MB + 3, PART_BYTES - 1, PART_BYTES + 1]))
    left = total - sum(sizes)
    while left < 0:  # the mixed pattern overshot: trim its last writes
        left += sizes.pop()
    return [*sizes, left] if left else sizes


def _parts_of(client: Any, key: str) -> int | None:
    """How many parts the object was uploaded in; None for a plain PUT."""
    tag = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    return int(tag.rpartition("-")[2]) if "-" in tag else None


@pytest.mark.parametrize(
    ("total", "pattern"),
    [
        (3 * PART_BYTES + PART_BYTES // 2, "lines"),
        (2 * PART_BYTES + 12345, "one write"),
        (3 * PART_BYTES, "whole parts"),
        (4 * PART_BYTES + 5, "across boundaries"),
        (5 * PART_BYTES + 999, "mixed"),
        (PART_BYTES - 1, "lines"),
    ],
)
def test_the_object_holds_exactly_the_bytes_written(s3: Any, total: int, pattern: str) -> None:
    data = random.Random(total).randbytes(total)
    store = ObjectStore(BUCKET, client=s3)
    offset = 0
    with store.writer("results/j/out.jsonl", "application/x-jsonl") as writer:
        for size in _sizes(total, pattern):
            writer.write(data[offset : offset + size])
            offset += size
    assert offset == total == writer.size
    assert s3.get_object(Bucket=BUCKET, Key="results/j/out.jsonl")["Body"].read() == data
    # A small object is one plain PUT; a larger one, parts of PART_BYTES or more but the last
    parts = _parts_of(s3, "results/j/out.jsonl")
    assert (parts is not None) == (total >= PART_BYTES)
    if parts is not None:
        assert parts <= -(-total // PART_BYTES)


def test_writes_after_a_copied_range_follow_it(s3: Any) -> None:
    rng = random.Random(3)
    source = rng.randbytes(PART_BYTES + 5)
    version = s3.put_object(Bucket=BUCKET, Key="inbox/f.jsonl", Body=source)["VersionId"]
    tail = rng.randbytes(2 * PART_BYTES + 77)
    store = ObjectStore(BUCKET, client=s3)
    with store.writer("errors/j/rejected.jsonl", "application/x-jsonl") as writer:
        writer.copy_from(SourceRange(BUCKET, "inbox/f.jsonl", version, 0, len(source)))
        for start in range(0, len(tail), 3 * MB):
            writer.write(tail[start : start + 3 * MB])
    assert s3.get_object(Bucket=BUCKET, Key="errors/j/rejected.jsonl")["Body"].read() == source + tail


def test_a_failed_write_leaves_no_object_and_no_open_upload(s3: Any) -> None:
    store = ObjectStore(BUCKET, client=s3)

    def produce_then_fail() -> None:
        with store.writer("results/j/x", "x") as writer:
            writer.write(b"a" * (2 * PART_BYTES + 1))
            raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError, match="the producer failed"):
        produce_then_fail()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
