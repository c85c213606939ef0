"""The emulator's wire vocabulary: ids in the real API's shapes, timestamps, error envelopes."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# Every pair of base-58 digits (low digit first) for 0 <= n < 58 * 58: two digits a division.
_PAIRS = [_BASE58[n % 58] + _BASE58[n // 58] for n in range(58 * 58)]


def _base58(data: bytes, length: int) -> str:
    """The `length` lowest base-58 digits of `data` read as a number, lowest first."""
    number = int.from_bytes(data, "big") % 58**length
    chars = []
    for _ in range(length // 2):
        number, pair = divmod(number, 58 * 58)
        chars.append(_PAIRS[pair])
    if length % 2:
        chars.append(_BASE58[number])
    return "".join(chars)


def new_batch_id() -> str:
    """`msgbatch_01` + 22 base58 characters, like `msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d`."""
    return "msgbatch_01" + _base58(secrets.token_bytes(24), 22)


def new_request_id() -> str:
    return "req_011C" + _base58(secrets.token_bytes(24), 20)


def derived_id(prefix: str, *parts: object) -> str:
    """A stable id (`msg_01…`, `toolu_01…`) derived from its inputs, for deterministic results."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return prefix + "01" + _base58(digest, 22)


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error_body(error_type: str, message: str, request_id: str | None) -> bytes:
    envelope = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
    return json.dumps(envelope).encode()


# One encoder for every call: `json.dumps` with options builds a new one each time.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact(obj: object) -> bytes:
    return _COMPACT.encode(obj).encode()
