"""Records mode's bookkeeping between the intake and the outputs: which record each request
came from, so that the outputs can be written one row per record, in input order.

For each shard it writes, the intake keeps a rows file beside it in work/: one line per
request of the shard, in the shard's order, `{"row": N, "id": custom_id, "fields": {...}}`,
where N is the record's 1-based number in the file (the header of a CSV is not a record) and
`fields` holds the record's values of the pipeline's keep_fields. A rejected record has no
request: it goes to errors/<job_id>/rejected.jsonl as in native mode, with its row number and
kept fields added, so the outputs give it its row too.

Row numbers grow through the file, and shards are cut in the file's order, so the rows files
read in shard order, merged with the rejected records by row number, give every record once,
in input order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

OUTPUTS_CSV: Final = "outputs.csv"
OUTPUTS_JSONL: Final = "outputs.jsonl"


def rows_key(job_id: str, index: int) -> str:
    """Where the rows of shard `index` are kept: work/<job_id>/rows-00000.jsonl."""
    return f"work/{job_id}/rows-{index:05d}.jsonl"


def outputs_keys(job_id: str) -> dict[str, str]:
    """Where a records-mode job's outputs go, as the manifest names them under "outputs"."""
    return {"csv": f"results/{job_id}/{OUTPUTS_CSV}", "jsonl": f"results/{job_id}/{OUTPUTS_JSONL}"}


@dataclass(frozen=True, slots=True)
class RowRef:
    """One record as the outputs need it: its place in the file, its id and its kept fields.
    `reason` is set for a rejected record (its id is None when it had none)."""

    row: int
    custom_id: str | None
    fields: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None


def _encoded(record: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    except UnicodeEncodeError:  # text holding an unpaired surrogate: escaped instead
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def row_line(ref: RowRef) -> bytes:
    """One line of a rows file (newline included), for a record whose request was written."""
    return _encoded({"row": ref.row, "id": ref.custom_id, "fields": dict(ref.fields)})


def rejected_row_record(ref: RowRef, line: int, source_key: str) -> bytes:
    """One line of errors/<job_id>/rejected.jsonl for a rejected record: native mode's
    fields (the line it starts on, its custom_id, the reason, the source) and its row."""
    record = {
        "line": line,
        "row": ref.row,
        "custom_id": ref.custom_id,
        "reason": ref.reason,
        "source": source_key,
        "fields": dict(ref.fields),
    }
    return _encoded(record)


def parse_row(line: bytes) -> RowRef:
    """A line of a rows file, or of a records-mode rejected.jsonl, as a RowRef."""
    record = json.loads(line.decode())  # text: json.loads would first guess the bytes' encoding
    if not isinstance(record, dict) or not isinstance(record.get("row"), int):
        raise ValueError(f"not a row record: {line[:80]!r}")
    custom_id = record.get("id", record.get("custom_id"))
    fields = record.get("fields") or {}
    if not isinstance(fields, dict):
        raise ValueError(f"a row's fields must be an object: {line[:80]!r}")
    if not all(type(value) is str for value in fields.values()):  # the intake writes text only
        fields = {str(k): str(v) for k, v in fields.items()}
    return RowRef(record["row"], custom_id, fields, record.get("reason"))
