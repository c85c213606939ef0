"""Where moto answers differently from S3 on a call batchdrop relies on, the S3 behaviour,
added to the moto this process runs (server or in-process mock) by `apply()`.

- CopyObject with `If-None-Match: *`: S3 refuses with 412 when the destination key holds an
  object (the split copies shards server-side, if absent, as it writes them); moto 5.2
  ignores the header and overwrites."""

from __future__ import annotations

from typing import Any

_APPLIED = "_batchdrop_fidelity"


def apply() -> None:
    """Idempotent: the second call changes nothing."""
    from moto.s3.exceptions import PreconditionFailed
    from moto.s3.responses import S3Response

    original = S3Response.copy_object
    if getattr(original, _APPLIED, False):
        return

    def copy_object(self: Any) -> Any:
        absent_only = self.headers.get("If-None-Match") == "*"
        if absent_only and self.backend.get_object(self.bucket_name, self.parse_key_name()) is not None:
            raise PreconditionFailed("If-None-Match")
        return original(self)

    setattr(copy_object, _APPLIED, True)
    S3Response.copy_object = copy_object  # type: ignore[method-assign]
