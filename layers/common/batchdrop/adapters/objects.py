"""S3 objects as streams: input lines read from one object version, and writes that go
out as multipart uploads in fixed-size parts, so memory never grows with the data."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from batchdrop.domain.lines import SourceLines
from batchdrop.ports import READ_BYTES, ObjectVersion, SmallObject, SourceRange

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

PART_BYTES = 8 * 1024 * 1024  # S3's minimum is 5 MiB; 8 MiB parts reach 78 GiB within 10,000 parts
# S3's largest part, uploaded or copied: a longer range is copied as several parts.
MAX_COPY_PART = 5 * 1024**3
# Parts sent at once, by as many threads, while the next one fills: uploads overlap the
# parsing that produces them, and memory stays bounded (the part filling plus these).
PARTS_IN_FLIGHT = 2


def _copy_source(source: SourceRange) -> dict[str, str]:
    return {"Bucket": source.bucket, "Key": source.key, "VersionId": source.version_id}


def _read_range(client: Any, source: SourceRange) -> Iterator[bytes]:
    if not source.size:
        return
    body = client.get_object(
        Bucket=source.bucket,
        Key=source.key,
        VersionId=source.version_id,
        Range=f"bytes={source.start}-{source.end - 1}",
    )["Body"]
    try:
        yield from body.iter_chunks(READ_BYTES)
    finally:
        body.close()


class ObjectStore:
    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Bodies are not SHA-256 signed: over HTTPS S3 takes UNSIGNED-PAYLOAD (as botocore
            # does by itself for uploads with a checksum), and hashing 256 MB shards costs CPU
            # a Lambda should spend on the requests themselves.
            self._client = boto3.client("s3", config=Config(s3={"payload_signing_enabled": False}))
        return self._client

    def lines(self, key: str, version_id: str | None = None, *, start: int = 0) -> SourceLines:
        """The lines of one object version (the current one without `version_id`), split on
        `\\n` only, with bounded memory; gzip is unzipped (batchdrop.domain.lines). From
        byte `start` on when it is not 0: a ranged GET, whose bytes are read as plain text."""
        extra: dict[str, str] = {"VersionId": version_id} if version_id else {}
        if start:
            extra["Range"] = f"bytes={start}-"
        body = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        return SourceLines(body, key, plain=start > 0)

    def open(self, key: str, version_id: str | None = None) -> tuple[int, Any]:
        """The size of an object version (the current one without `version_id`) and its open
        body (read it with `iter_chunks`; close it)."""
        extra = {"VersionId": version_id} if version_id else {}
        response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        return int(response["ContentLength"]), response["Body"]

    def version_of(self, key: str) -> str:
        """The id of the object's current version."""
        return _version_id(self.client.head_object(Bucket=self.bucket, Key=key))

    def read_small(self, key: str, version_id: str | None = None, *, max_bytes: int) -> SmallObject | None:
        """An object version read whole by one GET, with the version id that GET names (so
        what is read and what is recorded are the same version); its bytes are left unread
        when it is over `max_bytes`. None when S3 has no such key or version."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise
        body = response["Body"]
        try:
            size = int(response["ContentLength"])
            data = body.read() if size <= max_bytes else None
        finally:
            body.close()
        return SmallObject(_version_id(response), size, data)

    def metadata(self, key: str, version_id: str | None = None) -> dict[str, str]:
        """An object version's user metadata, as S3 gives it (names lower-cased, no x-amz-meta-)."""
        extra = {"VersionId": version_id} if version_id else {}
        return dict(self.client.head_object(Bucket=self.bucket, Key=key, **extra).get("Metadata") or {})

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

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every object version under a prefix (delete markers left out), page by page."""
        pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for version in page.get("Versions", []):
                key, version_id, size = version["Key"], version.get("VersionId"), version.get("Size")
                yield ObjectVersion(key, version_id, version["LastModified"], size)

    def copy(
        self, source: SourceRange, key: str, content_type: str, *, whole: bool, if_absent: bool = False
    ) -> str | None:
        """Write `key` as a copy of the range, made by S3 itself: the `whole` object version
        is one CopyObject, a part of one a multipart upload of that range; the version
        written. With `if_absent`, None when the key held an object already (it stays)."""
        writer = self.writer(key, content_type, if_absent=if_absent)
        if not whole:
            with writer:  # aborted if the range cannot be copied
                writer.copy_from(source)
            return writer.version_id
        if if_absent:
            writer.abort_unfinished()
        try:
            copied = self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource=_copy_source(source),
                ContentType=content_type,
                MetadataDirective="REPLACE",
                **({"IfNoneMatch": "*"} if if_absent else {}),
            )
        except Exception as exc:
            if if_absent and _precondition_failed(exc):
                return None
            raise
        return _version_id(copied)

    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> MultipartWriter:
        return MultipartWriter(self.client, self.bucket, key, content_type, if_absent=if_absent)


def _version_id(response: Any) -> str:
    """The version a write or HEAD names: S3 leaves VersionId out where versioning is off,
    and calls that one version "null"."""
    return str(response.get("VersionId") or "null")


def _not_found(exc: Exception) -> bool:
    """S3's answer to a GET of a key or version it does not hold (a key whose current
    version is a delete marker included)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("NoSuchKey", "NoSuchVersion", "404")


def _precondition_failed(exc: Exception) -> bool:
    """S3's answer to a conditional write that lost: 412 PreconditionFailed. (A 409
    ConditionalRequestConflict means another write to the key is still in progress and may
    yet fail: it is an error, and the next run tries again.)"""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "412")


class MultipartWriter:
    """Writes one object in PART_BYTES parts; a small object is one plain PUT. Parts go out
    from a background thread, at most PARTS_IN_FLIGHT at a time, so writing overlaps the
    work that produces the data. Aborts the upload on any error (a bucket lifecycle rule
    sweeps up after a killed Lambda).

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
        self.version_id: str | None = None
        self._buffer = bytearray()  # the bytes not sent yet, until a first part is sent
        self._part: bytearray | None = None  # then: the part filling, PART_BYTES long, and
        self._filled = 0  # how much of it is filled
        self._spares: list[bytearray] = []  # parts sent, whose buffers are free again
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._sending: deque[tuple[Future[dict[str, Any]], Any]] = deque()  # each with what it sends
        self._sender: ThreadPoolExecutor | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        """Add `data` to the object. The first PART_BYTES gather in a buffer that grows (a
        small object stays small); after the first part, parts are filled in buffers of
        exactly PART_BYTES, reused once sent, so a large object allocates no new memory per
        part (a fresh 8 MiB costs 2,048 page faults: more than copying its bytes)."""
        self.size += len(data)
        if self._part is None:
            self._buffer += data
            if len(self._buffer) >= PART_BYTES:
                first, self._buffer = self._buffer, bytearray()
                self._send_part(self._upload_part, first)
                self._part = self._spares.pop() if self._spares else bytearray(PART_BYTES)
            return
        end = self._filled + len(data)
        if end < PART_BYTES:
            self._part[self._filled : end] = data
            self._filled = end
            return
        view = memoryview(data)
        while view:
            taken = min(PART_BYTES - self._filled, len(view))
            self._part[self._filled : self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == PART_BYTES:
                self._send_part(self._upload_part, self._part)
                self._part = self._spares.pop() if self._spares else bytearray(PART_BYTES)
                self._filled = 0

    def _flush_part(self) -> None:
        """Send what is not sent yet as a part (the last one)."""
        if self._part is None:
            data, self._buffer = self._buffer, bytearray()
            self._send_part(self._upload_part, data)
        else:
            self._send_part(self._upload_part, self._part[: self._filled])  # a copy: the buffer keeps its size
            self._part, self._filled = None, 0

    def _unsent(self) -> int:
        return len(self._buffer) if self._part is None else self._filled

    def _send_part(self, send: Callable[[str, int, Any], dict[str, Any]], data: Any) -> None:
        """Start `send(upload_id, part_number, data)` in the background, once fewer than
        PARTS_IN_FLIGHT parts are on their way; the upload begins with the first part. `data`
        is not touched again until its part is sent."""
        if self._upload_id is None:
            if self._condition:
                self.abort_unfinished()
            created = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self.key, ContentType=self._content_type
            )
            self._upload_id = created["UploadId"]
        while len(self._sending) >= PARTS_IN_FLIGHT:
            self._take_sent()
        if self._sender is None:
            from concurrent.futures import ThreadPoolExecutor  # only objects of several parts need it

            self._sender = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="part-upload")
        number = len(self._parts) + len(self._sending) + 1
        self._sending.append((self._sender.submit(send, self._upload_id, number, data), data))

    def _take_sent(self) -> None:
        """Wait for the oldest part on its way; a full part's buffer is free again."""
        sending, data = self._sending.popleft()
        self._parts.append(sending.result())
        if isinstance(data, bytearray) and len(data) == PART_BYTES:
            self._spares.append(data)

    def _upload_part(self, upload_id: str, number: int, data: bytearray) -> dict[str, Any]:
        # A bytearray goes out in one send; a file would be read 16 KiB at a time, each read
        # taking the GIL from the thread that fills the next part.
        part = self._client.upload_part(
            Bucket=self._bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": part["ETag"]}

    def copy_from(self, source: SourceRange) -> None:
        """Begin the object with a range of another object version's bytes. S3 copies a range
        of a part's size or more itself (UploadPartCopy), so its bytes never pass through
        here; a shorter one is read and written."""
        if self.size:
            raise ValueError(f"{self.key}: a copied range must come first")
        if source.size < PART_BYTES:
            for chunk in _read_range(self._client, source):
                self.write(chunk)
            return
        # Parts of equal size, none over S3's largest (a long rejected.jsonl carried over
        # from one segment of a split to the next): each is at least half of it.
        step = -(-source.size // -(-source.size // MAX_COPY_PART))
        for start in range(source.start, source.end, step):
            self._send_part(self._copy_part, replace(source, start=start, end=min(start + step, source.end)))
        self.size = source.size

    def _copy_part(self, upload_id: str, number: int, source: SourceRange) -> dict[str, Any]:
        part = self._client.upload_part_copy(
            Bucket=self._bucket,
            Key=self.key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource=_copy_source(source),
            CopySourceRange=f"bytes={source.start}-{source.end - 1}",
        )
        return {"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]}

    def _sent(self) -> None:
        """Wait for every part on its way; the first failure is raised."""
        try:
            while self._sending:
                self._take_sent()
        finally:
            self._stop_sender()

    def _stop_sender(self) -> None:
        for pending, _data in self._sending:
            pending.cancel()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        self._sending.clear()

    def close(self) -> bool:
        """Complete the object; False when a conditional write found one there already."""
        try:
            if self._upload_id is None:
                written = self._client.put_object(
                    Bucket=self._bucket,
                    Key=self.key,
                    Body=self._buffer,
                    ContentType=self._content_type,
                    **self._condition,
                )
            else:
                if self._unsent():
                    self._flush_part()
                self._sent()
                written = self._client.complete_multipart_upload(
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
        self.version_id = _version_id(written)
        return True

    def abort_unfinished(self) -> None:
        """A resumable output (written if absent) may have an upload a killed run left open:
        abort it, so no incomplete upload outlives the run that takes over."""
        answer = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=self.key)
        for upload in answer.get("Uploads", []):
            if upload["Key"] == self.key:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self.key, UploadId=upload["UploadId"])

    def abort(self) -> None:
        self._stop_sender()  # a part still on its way would fail against the aborted upload
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
