"""The S3 behaviours the local stack adds to moto (batchdrop_local.moto_fidelity), checked
against moto's in-process mock: a multipart upload completes in bounded memory with the same
bytes, ETag and checksums moto itself computes, and version listings are URL-encoded."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.unit.moto_s3 import versioned_bucket

pytestmark = pytest.mark.unit

BUCKET = "fidelity-bucket"
MB = 1024 * 1024


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with versioned_bucket(monkeypatch, BUCKET) as client:
        yield client


def upload(s3: Any, key: str, parts: list[bytes], algorithm: str | None = None) -> dict[str, Any]:
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key, **extra)["UploadId"]
    done = []
    for number, body in enumerate(parts, start=1):
        part_extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body, **part_extra)[
            "ETag"
        ]
        done.append({"PartNumber": number, "ETag": etag})
    return dict(
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done})
    )


def stored_key(key: str) -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(BUCKET, key)


def moto_reference_checksum(parts: list[bytes], algorithm: str | None) -> tuple[str, str, int] | None:
    """What moto's own (unpatched) builder gives for these parts."""
    from moto.s3.models import MultipartChecksumBuilder

    builder = MultipartChecksumBuilder(algorithm, None)
    for part in parts:
        builder.addPart(part)
    return builder.build()


@pytest.mark.parametrize("algorithm", [None, "CRC32", "SHA1", "SHA256"])  # CRC32C: botocore needs awscrt
def test_a_completed_upload_has_the_joined_bytes_etag_and_moto_s_own_checksum(s3: Any, algorithm: str | None) -> None:
    parts = [os.urandom(5 * MB + 7), os.urandom(5 * MB), b"the last part may be small"]

    upload(s3, "k", parts, algorithm)

    got = s3.get_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)
    md5s = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in parts)
    assert got["ETag"] == f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-3"'
    checksum_type, value, count = moto_reference_checksum(parts, algorithm) or ("", "", 0)
    stored = stored_key("k")
    if algorithm is None:  # none asked for: moto shows none, so none is computed
        assert stored.checksum_algorithm is None
        return
    assert (stored.checksum_type, stored.checksum_value, stored.checksum_parts) == (checksum_type, value, count)
    if algorithm:  # asked for: S3 returns it
        head = s3.head_object(Bucket=BUCKET, Key="k", ChecksumMode="ENABLED")
        assert head[f"Checksum{algorithm}"] in (value, f"{value}-{count}")
    assert base64.b64decode(value)  # a real digest, not an empty one


def test_a_large_upload_completes_without_joining_its_parts_in_memory(s3: Any) -> None:
    part = os.urandom(8 * MB)
    parts = [part] * 8  # 64 MB
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="big")["UploadId"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=BUCKET, Key="big", UploadId=upload_id, PartNumber=n, Body=p)["ETag"],
        }
        for n, p in enumerate(parts, start=1)
    ]
    tracemalloc.start()
    try:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="big", UploadId=upload_id, MultipartUpload={"Parts": done})
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # moto's own completion held the object about three times over (192 MB here); the patched
    # one holds a chunk or two at a time.
    assert peak < 40 * MB, f"{peak / MB:.0f} MB at peak"
    body = s3.get_object(Bucket=BUCKET, Key="big")["Body"].read()
    assert len(body) == 64 * MB
    assert body[8 * MB - 5 : 8 * MB + 5] == part[-5:] + part[:5]


def test_a_completion_naming_a_wrong_etag_is_refused_and_keeps_the_parts(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x" * 10)["ETag"]

    with pytest.raises(s3.exceptions.ClientError, match="InvalidPart"):
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]}
        )
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"x" * 10


def test_a_small_part_before_the_last_is_refused(s3: Any) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=n, Body=b)["ETag"],
        }
        for n, b in ((1, b"small"), (2, b"last"))
    ]
    with pytest.raises(s3.exceptions.ClientError, match="EntityTooSmall"):
        s3.complete_multipart_upload(Bucket=BUCKET, Key="k", UploadId=upload_id, MultipartUpload={"Parts": done})


def test_version_listings_are_url_encoded_when_asked_and_decoded_by_botocore(s3: Any) -> None:
    keys = ["inbox/a\x01b.jsonl", "inbox/c d+e%f.jsonl", "inbox/plain.jsonl"]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    pages = s3.get_paginator("list_object_versions").paginate(
        Bucket=BUCKET, Prefix="inbox/", PaginationConfig={"PageSize": 1}
    )
    listed = [version["Key"] for page in pages for version in page.get("Versions", [])]

    assert sorted(listed) == sorted(keys)


@pytest.fixture
def stored(s3: Any) -> bytes:
    body = os.urandom(6 * MB + 3)
    s3.put_object(Bucket=BUCKET, Key="stored", Body=body)
    return body


@pytest.mark.parametrize(
    ("header", "window"),
    [
        ("bytes=0-9", slice(0, 10)),
        ("bytes=5242880-", slice(5 * MB, None)),
        ("bytes=-7", slice(-7, None)),
        ("bytes=100-99999999999", slice(100, None)),
    ],
)
def test_a_ranged_get_answers_the_range(s3: Any, stored: bytes, header: str, window: slice) -> None:
    got = s3.get_object(Bucket=BUCKET, Key="stored", Range=header)
    assert got["Body"].read() == stored[window]
    assert got["ContentRange"].endswith(f"/{len(stored)}")


def test_a_range_past_the_end_is_refused(s3: Any, stored: bytes) -> None:
    with pytest.raises(s3.exceptions.ClientError, match="InvalidRange"):
        s3.get_object(Bucket=BUCKET, Key="stored", Range=f"bytes={len(stored)}-")


def test_a_ranged_get_of_a_large_object_reads_only_the_range(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="big", Body=b"x" * (64 * MB))
    tracemalloc.start()
    try:
        body = s3.get_object(Bucket=BUCKET, Key="big", Range="bytes=1000-1999")["Body"].read()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body == b"x" * 1000
    assert peak < 8 * MB, f"{peak / MB:.0f} MB at peak"  # moto's own read all 64 MB


def test_upload_part_copy_copies_the_range_or_the_whole_object(s3: Any, stored: bytes) -> None:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="copy")["UploadId"]
    ranges = [(1, f"bytes=0-{5 * MB - 1}"), (2, None)]
    parts = []
    for number, window in ranges:
        extra = {"CopySourceRange": window} if window else {}
        answer = s3.upload_part_copy(
            Bucket=BUCKET,
            Key="copy",
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": BUCKET, "Key": "stored"},
            **extra,
        )
        parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(Bucket=BUCKET, Key="copy", UploadId=upload_id, MultipartUpload={"Parts": parts})

    assert s3.get_object(Bucket=BUCKET, Key="copy")["Body"].read() == stored[: 5 * MB] + stored


@pytest.mark.parametrize("write", ["put", "copy"])
def test_concurrent_writes_if_absent_leave_one_version(s3: Any, monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    from moto.s3.models import S3Backend

    # Given a lookup that takes a while, as a busy server's does: every writer's check for an
    # existing object falls inside another writer's check-then-write
    looked_up = S3Backend.get_object

    def slow_lookup(self: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
        found = looked_up(self, bucket_name, key_name, *args, **kwargs)
        if key_name == "work/j/shard-00000.jsonl":
            time.sleep(0.05)
        return found

    monkeypatch.setattr(S3Backend, "get_object", slow_lookup)
    s3.put_object(Bucket=BUCKET, Key="inbox/f.jsonl", Body=b'{"custom_id": "a"}\n')
    start = threading.Barrier(6)
    written: list[str] = []

    def writer() -> None:
        start.wait()
        try:
            if write == "put":
                s3.put_object(Bucket=BUCKET, Key="work/j/shard-00000.jsonl", Body=b"x\n", IfNoneMatch="*")
            else:
                source = {"Bucket": BUCKET, "Key": "inbox/f.jsonl"}
                s3.copy_object(Bucket=BUCKET, Key="work/j/shard-00000.jsonl", CopySource=source, IfNoneMatch="*")
            written.append("written")
        except ClientError as exc:
            written.append(exc.response["Error"]["Code"])

    # When six writers write the key if absent, at once
    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one wrote it, the five others were refused, and the key has one version
    assert sorted(written) == ["PreconditionFailed"] * 5 + ["written"]
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix="work/j/")["Versions"]
    assert len(listed) == 1


def test_concurrent_conditional_updates_of_one_item_let_one_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import moto.dynamodb.models as dynamodb_models
    from moto import mock_aws

    from batchdrop_local import moto_fidelity

    # Given writers that take a while between checking the condition and writing, as a busy
    # server's do: every writer's check falls inside another writer's check-then-write
    credentials = {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    moto_fidelity.apply()
    parser_of = dynamodb_models.create_condition_expression_parser

    class SlowCheck:
        def __init__(self, condition: Any) -> None:
            self._condition = condition

        def expr(self, item: Any) -> Any:
            holds = self._condition.expr(item)
            time.sleep(0.05)
            return holds

    class SlowParser:
        def __init__(self, *args: Any) -> None:
            self._parser = parser_of(*args)

        def parse(self) -> SlowCheck:
            return SlowCheck(self._parser.parse())

    monkeypatch.setattr(dynamodb_models, "create_condition_expression_parser", SlowParser)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName="t", Item={"PK": {"S": "shard"}, "state": {"S": "SUBMITTED"}})
        start = threading.Barrier(6)
        moved: list[str] = []

        def mover(name: str) -> None:
            start.wait()
            try:
                dynamodb.update_item(
                    TableName="t",
                    Key={"PK": {"S": "shard"}},
                    UpdateExpression="SET #s = :to, moved_by = :by",
                    ConditionExpression="#s = :from",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={
                        ":from": {"S": "SUBMITTED"},
                        ":to": {"S": "COLLECTED"},
                        ":by": {"S": name},
                    },
                )
                moved.append(name)
            except ClientError as exc:
                moved.append(exc.response["Error"]["Code"])

        # When six writers move it from SUBMITTED to COLLECTED at once
        threads = [threading.Thread(target=mover, args=(f"w{n}",)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # Then one moved it, and the five others found it moved
        winners = [name for name in moved if name.startswith("w")]
        assert len(winners) == 1
        assert sorted(moved) == ["ConditionalCheckFailedException"] * 5 + winners
        item = dynamodb.get_item(TableName="t", Key={"PK": {"S": "shard"}}, ConsistentRead=True)["Item"]
        assert item["moved_by"] == {"S": winners[0]}
