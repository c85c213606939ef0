"""The object store adapter names the version each write made, as S3 answers it: a plain
PUT, a multipart upload, a whole-object copy and a ranged copy (bytes read, or copied by S3
part by part). A write that lost its if-absent condition names none; an object is read in
the version asked for. Checked against moto's in-process S3 with versioning on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batchdrop.adapters.objects import PART_BYTES, ObjectStore
from batchdrop.ports import SourceRange
from tests.unit.moto_s3 import versioned_bucket

pytestmark = pytest.mark.unit

BUCKET = "versions-bucket"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with versioned_bucket(monkeypatch, BUCKET) as client:
        yield client


def _versions(client: Any, key: str) -> list[str]:
    """The key's version ids, newest first, as S3 lists them."""
    listed = client.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
    return [version["VersionId"] for version in listed if version["Key"] == key]


def _read(store: ObjectStore, key: str, version_id: str) -> bytes:
    size, body = store.open(key, version_id)
    try:
        data = b"".join(body.iter_chunks(1024 * 1024))
    finally:
        body.close()
    assert len(data) == size
    return data


@pytest.mark.parametrize("size", [100, PART_BYTES + 1], ids=["put", "multipart"])
def test_a_writer_names_the_version_it_wrote_and_that_version_reads_back(s3: Any, size: int) -> None:
    store = ObjectStore(BUCKET, client=s3)
    data = (b"x" * 99 + b"\n") * (size // 100) + b"y" * (size % 100)
    with store.writer("work/j/shard.jsonl", "application/x-jsonl", if_absent=True) as writer:
        writer.write(data)
    assert writer.version_id is not None
    assert _versions(s3, "work/j/shard.jsonl") == [writer.version_id]

    # A later version at the key does not change what the recorded version reads
    s3.put_object(Bucket=BUCKET, Key="work/j/shard.jsonl", Body=b"replaced\n")
    assert store.version_of("work/j/shard.jsonl") != writer.version_id
    assert _read(store, "work/j/shard.jsonl", writer.version_id) == data
    assert b"".join(store.lines("work/j/shard.jsonl", writer.version_id)) == data


@pytest.mark.parametrize(
    ("start", "end", "whole"),
    [(0, 0, True), (10, 200, False), (0, PART_BYTES + 5, False)],
    ids=["whole-copy", "short-range-read", "long-range-copied-by-s3"],
)
def test_a_copy_names_the_version_it_wrote(s3: Any, start: int, end: int, whole: bool) -> None:
    store = ObjectStore(BUCKET, client=s3)
    source = bytes(range(256)) * ((PART_BYTES + 5) // 256 + 1)
    version = s3.put_object(Bucket=BUCKET, Key="inbox/f.jsonl", Body=source)["VersionId"]

    copied = store.copy(SourceRange(BUCKET, "inbox/f.jsonl", version, start, end), "work/j/c", "x", whole=whole)

    assert copied is not None
    assert _versions(s3, "work/j/c") == [copied]
    assert _read(store, "work/j/c", copied) == (source if whole else source[start:end])


def test_a_write_that_lost_its_if_absent_condition_names_no_version(s3: Any) -> None:
    store = ObjectStore(BUCKET, client=s3)
    first = s3.put_object(Bucket=BUCKET, Key="work/j/taken", Body=b"first\n")["VersionId"]
    source = s3.put_object(Bucket=BUCKET, Key="inbox/g.jsonl", Body=b"other\n")["VersionId"]

    writer = store.writer("work/j/taken", "x", if_absent=True)
    writer.write(b"second\n")
    assert writer.close() is False
    assert writer.version_id is None
    assert (
        store.copy(SourceRange(BUCKET, "inbox/g.jsonl", source, 0, 0), "work/j/taken", "x", whole=True, if_absent=True)
        is None
    )

    # The version that stays is the one an earlier writer made, and the store says which
    assert store.version_of("work/j/taken") == first
    assert _versions(s3, "work/j/taken") == [first]
