"""Where moto answers differently from S3 on a call batchdrop relies on, the S3 behaviour,
added to the moto this process runs (server or in-process mock) by `apply()`:

- CopyObject with `If-None-Match: *`: S3 refuses with 412 when the destination key holds an
  object (the split copies shards server-side, if absent, as it writes them); moto 5.2
  ignores the header and overwrites.
- ListObjectVersions with `encoding-type=url` (botocore asks for it on every listing): S3
  URL-encodes the keys, prefixes and markers in its answer, so any key can be listed; moto 5.2
  ignores the parameter, and a key with a character XML cannot carry (U+0001) makes it answer
  500 to every listing that would show the key.
- CompleteMultipartUpload, ranged GetObject and UploadPartCopy in bounded memory, as S3 is:
  moto joins an upload's parts in memory several times over, and reads a whole object to
  answer for a range of it (below).
- Writes with `If-None-Match: *` (PutObject, CopyObject, CompleteMultipartUpload) at once:
  S3 lets exactly one of them write; moto checks for the object, then writes, so two
  concurrent writers could both pass the check and leave two versions. They are made one
  at a time here (a process-wide lock around each such write).
- A request body given as a bytearray (the object writer's upload parts): botocore sends it
  as it sends bytes; moto's in-process mock hands it to werkzeug, which takes only bytes or
  a file, and fails. The server is reached over HTTP and never sees the difference.
- DynamoDB requests one at a time: DynamoDB applies a conditional write to an item
  atomically, so of two checkers moving the same shard only one can; moto reads the item,
  checks the condition and then writes, with nothing between two requests on two threads,
  so both could pass the check. Each request is handled under a process-wide lock here."""

from __future__ import annotations

import tempfile
from hashlib import md5
from typing import Any

_APPLIED = "_batchdrop_fidelity"


def apply() -> None:
    """Idempotent: the second call changes nothing."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.copy_object, _APPLIED, False):
        return
    _copy_only_if_absent(S3Response)
    _encode_listed_versions(S3Response)
    _stream_completed_parts()
    _read_ranges_in_place(S3Response)
    _take_bytearray_bodies()
    _dynamodb_requests_one_at_a_time()
    _conditional_writes_one_at_a_time(S3Response)


def _conditional_writes_one_at_a_time(response_class: Any) -> None:
    import threading

    lock = threading.Lock()
    for name in ("_key_response_put", "_key_response_post"):
        original = getattr(response_class, name)

        def handle(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if self.headers.get("If-None-Match") != "*":
                return _original(self, *args, **kwargs)
            with lock:
                return _original(self, *args, **kwargs)

        setattr(response_class, name, handle)


def _dynamodb_requests_one_at_a_time() -> None:
    import threading

    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def _take_bytearray_bodies() -> None:
    from moto.core.request import Request

    original = Request.from_primitives.__func__  # type: ignore[attr-defined]

    def from_primitives(cls: Any, method: str, url: str, headers: Any, body: Any = None) -> Any:
        return original(cls, method, url, headers, bytes(body) if isinstance(body, bytearray) else body)

    Request.from_primitives = classmethod(from_primitives)  # type: ignore[method-assign, assignment]


def _copy_only_if_absent(response_class: Any) -> None:
    from moto.s3.exceptions import PreconditionFailed

    original = response_class.copy_object

    def copy_object(self: Any) -> Any:
        absent_only = self.headers.get("If-None-Match") == "*"
        if absent_only and self.backend.get_object(self.bucket_name, self.parse_key_name()) is not None:
            raise PreconditionFailed("If-None-Match")
        return original(self)

    setattr(copy_object, _APPLIED, True)
    response_class.copy_object = copy_object


# What S3 URL-encodes in a ListObjectVersions answer when asked to, and botocore decodes.
_ENCODED_FIELDS = ("Prefix", "Delimiter", "KeyMarker", "NextKeyMarker")
_ENCODED_LISTS = (("Versions", "Key"), ("DeleteMarkers", "Key"), ("CommonPrefixes", "Prefix"))


def _encode_listed_versions(response_class: Any) -> None:
    original = response_class.list_object_versions

    def list_object_versions(self: Any) -> Any:
        if self.querystring.get("encoding-type", [None])[0] != "url":
            return original(self)
        serialize = self.serialized

        def serialized(action_result: Any) -> Any:
            _url_encode(action_result.result)
            return serialize(action_result)

        self.serialized = serialized  # this response object only: it serves one request
        return original(self)

    response_class.list_object_versions = list_object_versions


def _url_encode(result: dict[str, Any]) -> None:
    from urllib.parse import quote

    for name in _ENCODED_FIELDS:
        if result.get(name):
            result[name] = quote(result[name])
    for list_name, field in _ENCODED_LISTS:
        for entry in result.get(list_name) or ():
            entry[field] = quote(entry[field])
    result["EncodingType"] = "url"


# --- a multipart upload's completion, in bounded memory --------------------------------
#
# moto 5.2 completes a multipart upload by joining every part into one bytearray, copying it
# to bytes, joining it a third time for the object's checksum, and writing the result into
# the new object's buffer through an in-memory file that is copied again when it rolls over
# to disk: about five times the object's size in memory at once (a 1 GB upload took the
# local stack to 4.7 GB). The parts are already on disk (moto keeps values over 5 MB in
# temporary files), so here the new object's temporary file is filled from them a chunk at a
# time, and the checksums are computed as the chunks go by.

_CHUNK_BYTES = 16 * 1024 * 1024


class _Parts:
    """A completed upload's parts, in order, standing in for the joined bytes until the new
    object's value setter streams them into its own buffer. It takes the parts' buffers
    over: moto disposes of the upload (and would close them) before it stores the object."""

    def __init__(self, parts: list[Any]) -> None:
        self.size = sum(int(part.contentsize) for part in parts)
        self.buffers = []
        for part in parts:
            with part.lock:
                self.buffers.append(part._value_buffer)
                part._value_buffer = tempfile.SpooledTemporaryFile(part._max_buffer_size)  # noqa: SIM115 - the part's

    def __len__(self) -> int:
        return self.size

    def chunks(self) -> Any:
        for buffer in self.buffers:
            with buffer:
                buffer.seek(0)
                while chunk := buffer.read(_CHUNK_BYTES):
                    yield chunk


def _chunks_of(key: Any) -> Any:
    """The object's bytes, a chunk at a time, the object's lock held for each read only: a
    whole object streamed to a slow reader must not keep a copy of a range of it waiting."""
    position = 0
    while True:
        with key.lock:
            key._value_buffer.seek(position)
            chunk = key._value_buffer.read(_CHUNK_BYTES)
        if not chunk:
            return
        position += len(chunk)
        yield chunk


def _stream_completed_parts() -> None:
    from moto.s3.models import FakeKey, FakeMultipart

    original_complete = FakeMultipart.complete
    value_property = FakeKey.value

    def complete(self: Any, body: Any) -> Any:
        algorithm = self.metadata.get("x-amz-checksum-algorithm")
        checksum_type = self.metadata.get("x-amz-checksum-type")
        checked = _checked_parts(self, body)
        # With no algorithm asked for, moto computes a default checksum that nothing ever shows
        # (it keeps only an asked-for algorithm's): skipped, it saves a pass over the object.
        checksum = _checksum(checked, algorithm, checksum_type) if algorithm else None
        if checksum is _NOT_STREAMABLE:
            return original_complete(self, iter([(n, part.etag) for n, part in checked]))
        digest = md5(usedforsecurity=False)
        for _number, part in checked:
            digest.update(bytes.fromhex(part.etag.replace('"', "")))
        return _Parts([part for _n, part in checked]), f"{digest.hexdigest()}-{len(checked)}", checksum

    def set_value(self: Any, new_value: Any) -> None:
        if not isinstance(new_value, _Parts) and len(new_value) <= self._max_buffer_size:
            value_property.fset(self, new_value)
            return
        self._value_buffer.seek(0)
        self._value_buffer.truncate()
        self._value_buffer.rollover()  # straight to disk: no in-memory copy to roll over from
        chunks = new_value.chunks() if isinstance(new_value, _Parts) else (new_value,)
        size = 0
        for chunk in chunks:
            self._value_buffer.write(chunk)
            size += len(chunk)
        self.contentsize = size

    FakeMultipart.complete = complete
    FakeKey.value = value_property.setter(set_value)


def _checked_parts(multipart: Any, body: Any) -> list[tuple[int, Any]]:
    """The parts the completion names, checked as S3 checks them: each uploaded with that
    ETag, every part but the last at least the minimum size, at least one part."""
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import S3_UPLOAD_PART_MIN_SIZE

    checked: list[tuple[int, Any]] = []
    for number, etag in body:
        part = multipart.parts.get(number)
        if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
            raise InvalidPart()
        if checked and checked[-1][1].contentsize < S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        checked.append((number, part))
    if not checked:
        raise MalformedXML
    return checked


_NOT_STREAMABLE = object()


def _checksum(checked: list[tuple[int, Any]], algorithm: str | None, checksum_type: str | None) -> Any:
    """(type, value, parts) of the object's checksum as moto computes it, a part at a time;
    _NOT_STREAMABLE for the one algorithm whose optional library has no running form here."""
    import base64

    from moto.s3.utils import compute_checksum

    algorithm = algorithm or "CRC64NVME"
    checksum_type = checksum_type or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
    if checksum_type == "COMPOSITE":
        joined = b"".join(
            compute_checksum(b"".join(_chunks_of(part)), algorithm, encode_base64=False) for _n, part in checked
        )
        return checksum_type, compute_checksum(joined, algorithm).decode(), len(checked)
    running = _running_checksum(algorithm)
    if running is None:
        return _NOT_STREAMABLE
    update, state = running
    for _number, part in checked:
        for chunk in _chunks_of(part):
            state = update(chunk, state)
    return checksum_type, base64.b64encode(state.digest() if hasattr(state, "digest") else state).decode(), 1


def _running_checksum(algorithm: str) -> Any:
    """(update, initial state) computing what moto's compute_checksum gives for `algorithm`
    over the whole object, chunk by chunk; the final state is the digest (bytes) or a hash
    object. None where moto uses a library without a running form (crc32c)."""
    import binascii
    import hashlib

    from moto.core.compat import HAS_CRT

    def crc32(chunk: bytes, state: bytes) -> bytes:
        return binascii.crc32(chunk, int.from_bytes(state, "big")).to_bytes(4, "big")

    def hashed(chunk: bytes, state: Any) -> Any:
        state.update(chunk)
        return state

    if algorithm == "CRC64NVME" and HAS_CRT:
        from awscrt import checksums

        def crc64(chunk: bytes, state: bytes) -> bytes:
            return checksums.crc64nvme(chunk, int.from_bytes(state, "big")).to_bytes(8, "big")

        return crc64, bytes(8)
    if algorithm == "CRC32C":
        try:
            import crc32c  # noqa: F401 - moto uses it when it is there
        except ImportError:
            return crc32, bytes(4)  # as moto does without it
        return None
    if algorithm in ("CRC32", "CRC64NVME"):  # moto's CRC64NVME is CRC32 without awscrt
        return crc32, bytes(4)
    if algorithm == "SHA1":
        return hashed, hashlib.sha1(usedforsecurity=False)
    return hashed, hashlib.sha256(usedforsecurity=False)


# --- ranges read from the stored object, not from a copy of all of it ------------------
#
# moto answers a ranged GetObject, and copies an UploadPartCopy's range, by reading the whole
# object into memory and slicing it: each 8 MB range of a 1 GB object cost 1 GB. Here both
# read only the range from the object's buffer, and the server streams a whole object's
# answer from it a chunk at a time.


class _Window:
    """A stored object's bytes as a ranged GET's answer sees them: a length, and slices read
    from the object's buffer on demand (whole, as an iterable of chunks, for an answer that
    ends up not ranged)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.contentsize)

    def __getitem__(self, window: slice) -> bytes:
        start, stop, _step = window.indices(len(self))
        return _read_range(self.key, start, stop)

    def __iter__(self) -> Any:
        return _chunks_of(self.key)


class _KeyReadInRanges:
    """A stored object whose `value` is a _Window instead of all its bytes."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._key, name)

    @property
    def value(self) -> _Window:
        return _Window(self._key)


def _served_over_http(request: Any) -> bool:
    """Whether a real HTTP server (moto's werkzeug server) serves this request; the in-process
    mock dresses its calls as werkzeug requests too, but no server software handles them."""
    return "werkzeug.socket" in getattr(request, "environ", {})


def _read_range(key: Any, start: int, stop: int) -> bytes:
    with key.lock:
        key._value_buffer.seek(start)
        return bytes(key._value_buffer.read(max(0, stop - start)))


def _read_ranges_in_place(response_class: Any) -> None:
    from moto.s3.models import S3Backend

    original_get_object = response_class.get_object

    def get_object(self: Any) -> Any:
        # A whole object is streamed only by the server (werkzeug takes an iterable body); the
        # in-process mock needs bytes, and there a range is still read in place.
        ranged = bool(self.headers.get("range"))
        if self._get_int_param("partNumber") or not (ranged or _served_over_http(self.request)):
            return original_get_object(self)
        get_key = self._get_key

        def get_key_read_in_ranges(*args: Any, **kwargs: Any) -> Any:
            key, not_modified = get_key(*args, **kwargs)
            return _KeyReadInRanges(key), not_modified

        self._get_key = get_key_read_in_ranges  # this response object only: it serves one request
        return original_get_object(self)

    def upload_part_copy(
        self: Any,
        dest_bucket_name: str,
        multipart_id: str,
        part_id: int,
        src_bucket_name: str,
        src_key_name: str,
        src_version_id: str | None,
        start_byte: int | None,
        end_byte: int | None,
    ) -> Any:
        multipart = self.get_bucket(dest_bucket_name).multiparts[multipart_id]
        source = self.get_object(src_bucket_name, src_key_name, version_id=src_version_id)
        if start_byte is None:
            return multipart.set_part(part_id, source.value)
        stop = min(int(end_byte if end_byte is not None else source.contentsize - 1) + 1, int(source.contentsize))
        return multipart.set_part(part_id, _read_range(source, start_byte, stop))

    response_class.get_object = get_object
    S3Backend.upload_part_copy = upload_part_copy
