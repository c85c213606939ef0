"""A job's identity (derived from the object version it was made from), its statuses, and
where its outputs live in the bucket."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from batchdrop.domain.requests import RejectedLine
from batchdrop.domain.states import JobStatus

_JOB_ID_PREFIX = "j"
_JOB_ID_HEX_CHARS = 24  # 96 bits: collisions are out of reach for any realistic number of uploads
# S3 reports this version id for objects written while versioning was off or suspended: every
# such upload of a key shares it, so it cannot tell two uploads apart.
_UNVERSIONED = "null"
_FAILED_OUTCOMES = ("errored", "canceled", "expired")


def job_id_for(bucket: str, key: str, version_id: str | None) -> str:
    """Deterministic id of one object version: "j" + the first 24 hex chars of sha256 over the
    length-prefixed bucket, key and version id (so no split of one string into parts collides with
    another). Fails closed without a real version id: an unversioned upload cannot be told apart
    from the next upload of the same key, and would be mistaken for a duplicate."""
    if not bucket or not key:
        raise ValueError("a job needs the object's bucket and key")
    if not version_id or version_id == _UNVERSIONED:
        raise ValueError(f"object {key!r} has no version id ({version_id!r}): the bucket must have versioning enabled")
    digest = hashlib.sha256()
    for part in (bucket, key, version_id):
        encoded = part.encode()
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return _JOB_ID_PREFIX + digest.hexdigest()[:_JOB_ID_HEX_CHARS]


def final_status(counts: Mapping[str, int], rejected: int) -> JobStatus:
    """COMPLETED when every request succeeded and no line was rejected, else COMPLETED_WITH_ERRORS."""
    failed = sum(counts.get(outcome, 0) for outcome in _FAILED_OUTCOMES)
    if rejected == 0 and failed == 0 and counts.get("succeeded", 0) > 0:
        return JobStatus.COMPLETED
    return JobStatus.COMPLETED_WITH_ERRORS


def results_part_key(job_id: str, index: int, attempt: int = 1) -> str:
    """Where the final outcomes a shard's batch gave at `attempt` go: results-00000.jsonl for
    the first attempt, results-00000-a2.jsonl for the outcomes of its first retry, and so on."""
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"results/{job_id}/results-{index:05d}{suffix}.jsonl"


# Errors the provider itself had while serving a request; anything else (invalid_request_error
# above all) is the request's own fault and final.
RETRYABLE_ERRORS = frozenset({"api_error", "overloaded_error"})


def error_type(result: Mapping[str, Any]) -> str | None:
    """The type of an `errored` result's error: the API nests it as {"type": "error", "error":
    {"type": ..., "message": ...}}; a flat {"type": ..., "message": ...} is read too."""
    error = result.get("error")
    if not isinstance(error, Mapping):
        return None
    inner = error.get("error")
    found = inner.get("type") if isinstance(inner, Mapping) else error.get("type")
    return str(found) if found is not None else None


def is_retryable(result: Mapping[str, Any]) -> bool:
    """Whether a request's outcome is worth another attempt: an expired request, or one that
    errored on the provider's side (api_error, overloaded_error). Succeeded, canceled and
    invalid requests are final."""
    if result.get("type") == "expired":
        return True
    return result.get("type") == "errored" and error_type(result) in RETRYABLE_ERRORS


def refused_result_line(custom_id: str, reason: str) -> bytes:
    """The result line batchdrop writes for a request the provider never took, because it
    refused the whole create body (400/413): errored, as invalid_request_error, so every
    request still has exactly one outcome in results/."""
    error = {"type": "invalid_request_error", "message": f"batchdrop: the batch was refused: {reason}"}
    record = {"custom_id": custom_id, "result": {"type": "errored", "error": {"type": "error", "error": error}}}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def id_hash(custom_id: str) -> bytes:
    """A custom_id's SHA-256: its first 16 bytes go into IdsDigest, the next 8 rank it for the
    estimate's sample (domain/estimate.py)."""
    return hashlib.sha256(custom_id.encode()).digest()


class IdsDigest:
    """An order-free fingerprint of a set of custom_ids: the XOR of each id's SHA-256 (first
    16 bytes). Recorded for every batch a shard sends and recomputed from the results, so
    results that belong to another batch are never recorded, even with the right count."""

    def __init__(self) -> None:
        self._value = 0

    def add(self, custom_id: str) -> None:
        self.add_hash(id_hash(custom_id))

    def add_hash(self, hashed: bytes) -> None:
        """Add the custom_id whose `id_hash` this is (the split hashes each id once, for this
        and for the estimate's sample)."""
        self._value ^= int.from_bytes(hashed[:16], "big")

    @property
    def hex(self) -> str:
        return f"{self._value:032x}"


def canceled_result_line(custom_id: str) -> bytes:
    """The result line for a request of a canceled job that was never sent: canceled, as
    the provider reports the requests a cancel stopped."""
    return json.dumps({"custom_id": custom_id, "result": {"type": "canceled"}}, separators=(",", ":")).encode()


def manifest_key(job_id: str) -> str:
    return f"results/{job_id}/manifest.json"


def report_key(job_id: str) -> str:
    """Where the checker writes a finished job's readable report (domain/report.py)."""
    return f"results/{job_id}/report.html"


def rejected_key(job_id: str) -> str:
    return f"errors/{job_id}/rejected.jsonl"


def rejected_record(rejected: RejectedLine, source_key: str) -> bytes:
    """One JSONL line for errors/<job_id>/rejected.jsonl, newline included."""
    record = {"line": rejected.line, "custom_id": rejected.custom_id, "reason": rejected.reason, "source": source_key}
    try:
        return json.dumps(record, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:
        # A custom_id read from a "\ud800"-style escape is not encodable as UTF-8: escape it instead.
        return json.dumps(record).encode() + b"\n"
