"""Where moto answers differently from S3 on a call batchdrop relies on, the S3 behaviour,
added to the moto this process runs (server or in-process mock) by `apply()`.

- CopyObject with `If-None-Match: *`: S3 refuses with 412 when the destination key holds an
  object (the split copies shards server-side, if absent, as it writes them); moto 5.2
  ignores the header and overwrites.
- ListObjectVersions with `encoding-type=url` (botocore asks for it on every listing): S3
  URL-encodes the keys, prefixes and markers in its answer, so any key can be listed; moto 5.2
  ignores the parameter, and a key with a character XML cannot carry (U+0001) makes it answer
  500 to every listing that would show the key."""

from __future__ import annotations

from typing import Any

_APPLIED = "_batchdrop_fidelity"


def apply() -> None:
    """Idempotent: the second call changes nothing."""
    from moto.s3.responses import S3Response

    if getattr(S3Response.copy_object, _APPLIED, False):
        return
    _copy_only_if_absent(S3Response)
    _encode_listed_versions(S3Response)


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
