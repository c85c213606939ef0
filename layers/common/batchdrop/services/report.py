"""The job's report (results/<job_id>/report.html), written when the job finishes: its
manifest and the first of its rejected lines, rendered by domain/report.py. The rejected file
may be as large as the upload; only its first lines are read, and never more than
MAX_REJECTED_BYTES of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchdrop.domain.jobs import report_key
from batchdrop.domain.report import REJECTED_SHOWN, RejectedSample, rejected_entries, render_report
from batchdrop.ports import ObjectStore

REPORT_CONTENT_TYPE = "text/html; charset=utf-8"
MAX_REJECTED_BYTES = 256 * 1024
_CHUNK_BYTES = 64 * 1024


def write_report(store: ObjectStore, manifest: Mapping[str, Any]) -> str:
    """Render the job's report from its manifest and write it, if it is not there yet (a
    checker that stopped after writing it wrote the same figures); its key."""
    rejected = read_rejected(store, manifest["errors"]) if manifest.get("errors") else None
    key = report_key(str(manifest["job_id"]))
    with store.writer(key, REPORT_CONTENT_TYPE, if_absent=True) as report:
        report.write(render_report(manifest, rejected).encode("utf-8"))
    return key


def read_rejected(store: ObjectStore, key: str, *, max_bytes: int = MAX_REJECTED_BYTES) -> RejectedSample:
    """The first REJECTED_SHOWN lines of the rejected file at `key`, read as a stream that
    stops once they are in or after `max_bytes`; a line cut by that bound is left out (and
    `more` says the file goes on)."""
    size, body = store.open(key)
    read = bytearray()
    try:
        for chunk in body.iter_chunks(_CHUNK_BYTES):
            read += chunk
            if read.count(b"\n") >= REJECTED_SHOWN or len(read) >= max_bytes:
                break
    finally:
        body.close()
    lines = bytes(read[:max_bytes]).split(b"\n")
    whole = lines if len(read) >= size and len(read) <= max_bytes else lines[:-1]  # the last may be cut
    entries = rejected_entries(whole[:REJECTED_SHOWN])
    more = len(entries) < sum(1 for line in lines if line.strip()) or len(read) < size
    return RejectedSample(tuple(entries), more)
