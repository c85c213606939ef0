"""A job's identity (derived from the object version it was made from), its statuses, and
where its outputs live in the bucket."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum

from batchdrop.domain.requests import RejectedLine

_JOB_ID_PREFIX = "j"
_JOB_ID_HEX_CHARS = 24  # 96 bits: collisions are out of reach for any realistic number of uploads
# S3 reports this version id for objects written while versioning was off or suspended: every
# such upload of a key shares it, so it cannot tell two uploads apart.
_UNVERSIONED = "null"
_FAILED_OUTCOMES = ("errored", "canceled", "expired")


class JobStatus(StrEnum):
    RECEIVED = "RECEIVED"
    SUBMITTING = "SUBMITTING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


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


def results_part_key(job_id: str, index: int) -> str:
    return f"results/{job_id}/results-{index:05d}.jsonl"


def manifest_key(job_id: str) -> str:
    return f"results/{job_id}/manifest.json"


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
