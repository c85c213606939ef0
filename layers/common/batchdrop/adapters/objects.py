"""S3 objects as streams: input lines read from one object version, and writes that go
out as multipart uploads in fixed-size parts, so memory never grows with the data."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PART_BYTES = 8 * 1024 * 1024  # S3's minimum is 5 MiB; 8 MiB parts reach 78 GiB within 10,000 parts
READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str | None
    last_modified: datetime


class _RawStream(io.RawIOBase):
    """botocore's StreamingBody as a raw stream, so io.BufferedReader can split its lines."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class ObjectStore:
    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def lines(self, key: str, version_id: str | None = None) -> Iterator[bytes]:
        """The lines of one object version (the current one without `version_id`), split on
        `\\n` only; `.gz` objects are unzipped."""
        extra = {"VersionId": version_id} if version_id else {}
        body = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        stream: io.BufferedIOBase = io.BufferedReader(_RawStream(body), READ_BYTES)
        if key.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
        with stream:
            yield from stream

    def open(self, key: str) -> tuple[int, Any]:
        """The size of an object and its open body (read it with `iter_chunks`; close it)."""
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        return int(response["ContentLength"]), response["Body"]

    def put_json(self, key: str, document: Any, *, if_absent: bool = False) -> bool:
        """Write a JSON document; with `if_absent`, only if the key holds no object yet (S3's
        conditional write): False when one was there first, and it stays."""
        body = json.dumps(document, indent=2, ensure_ascii=False).encode()
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition)
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def get_json(self, key: str) -> Any:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every object version under a prefix (delete markers left out), page by page."""
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for version in page.get("Versions", []):
                yield ObjectVersion(version["Key"], version.get("VersionId"), version["LastModified"])

    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> MultipartWriter:
        return MultipartWriter(self.client, self.bucket, key, content_type, if_absent=if_absent)


def _precondition_failed(exc: Exception) -> bool:
    """S3's answer to a conditional write that lost: 412 PreconditionFailed. (A 409
    ConditionalRequestConflict means another write to the key is still in progress and may
    yet fail: it is an error, and the next run tries again.)"""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "412")


class MultipartWriter:
    """Writes one object in PART_BYTES parts; a small object is one plain PUT. Aborts the
    upload on any error (a bucket lifecycle rule sweeps up after a killed Lambda).

    With `if_absent`, the object is only written if the key holds none yet (If-None-Match):
    when another writer got there first, its object stays and `created` is False. Used for
    outputs whose content is determined by their inputs, so the first complete copy wins."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str, *, if_absent: bool = False) -> None:
        self._client = client
        self._bucket = bucket
        self.key = key
        self._content_type = content_type
        self._condition = {"IfNoneMatch": "*"} if if_absent else {}
        self.created = False
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= PART_BYTES:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            if self._condition:
                self._abort_unfinished()
            created = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self.key, ContentType=self._content_type
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        part = self._client.upload_part(
            Bucket=self._bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})
        self._buffer.clear()

    def close(self) -> bool:
        """Complete the object; False when a conditional write found one there already."""
        try:
            if self._upload_id is None:
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=self.key,
                    Body=bytes(self._buffer),
                    ContentType=self._content_type,
                    **self._condition,
                )
            else:
                if self._buffer:
                    self._flush_part()
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    **self._condition,
                )
        except Exception as exc:
            if not (self._condition and _precondition_failed(exc)):
                raise
            self.abort()
            return False
        self.created = True
        return True

    def _abort_unfinished(self) -> None:
        """A resumable output (written if absent) may have an upload a killed run left open:
        abort it, so no incomplete upload outlives the run that takes over."""
        answer = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=self.key)
        for upload in answer.get("Uploads", []):
            if upload["Key"] == self.key:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self.key, UploadId=upload["UploadId"])

    def abort(self) -> None:
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self.key, UploadId=self._upload_id)
            self._upload_id = None

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
