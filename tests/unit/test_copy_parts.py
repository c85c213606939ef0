"""A range copied into a multipart upload (MultipartWriter.copy_from) longer than S3's
largest part goes as several parts of equal size: the rejected lines a split in segments
carries from one segment's rejected.jsonl to the next may run past 5 GiB. Against moto's
in-process S3, with the largest part shrunk to 6 MiB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

import batchdrop.adapters.objects
from batchdrop.adapters.objects import MultipartWriter
from batchdrop.ports import SourceRange

pytestmark = pytest.mark.unit

BUCKET = "copy-parts"
MB = 1024 * 1024


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def test_a_range_longer_than_the_largest_part_is_copied_as_parts_of_equal_size(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a version of 16 MiB and more, and parts of at most 6 MiB
    monkeypatch.setattr(batchdrop.adapters.objects, "MAX_COPY_PART", 6 * MB)
    data = os.urandom(16 * MB + 3)
    version = s3.put_object(Bucket=BUCKET, Key="errors/j/rejected.jsonl", Body=data)["VersionId"]
    copied: list[tuple[int, int]] = []
    copy_part = MultipartWriter._copy_part

    def counting(writer: MultipartWriter, upload_id: str, number: int, source: SourceRange) -> dict[str, Any]:
        copied.append((source.start, source.end))
        return copy_part(writer, upload_id, number, source)

    monkeypatch.setattr(MultipartWriter, "_copy_part", counting)

    # When a new version begins with all but its first byte, then a line of its own
    writer = MultipartWriter(s3, BUCKET, "errors/j/rejected.jsonl", "application/x-jsonl")
    writer.copy_from(SourceRange(BUCKET, "errors/j/rejected.jsonl", version, 1, len(data)))
    writer.write(b'{"line": 9}\n')
    assert writer.close()

    # Then three parts of equal size were copied, none over the largest, and the bytes are all there
    assert [end - start for start, end in copied] == [(len(data) - 1) // 3] * 3
    assert copied[0][0] == 1
    assert copied[-1][1] == len(data)
    stored = s3.get_object(Bucket=BUCKET, Key="errors/j/rejected.jsonl", VersionId=writer.version_id)["Body"].read()
    assert stored == data[1:] + b'{"line": 9}\n'
    assert writer.size == len(stored)
