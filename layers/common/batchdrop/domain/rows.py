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
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from batchdrop.domain import quick_json

OUTPUTS_CSV: Final = "outputs.csv"
OUTPUTS_JSONL: Final = "outputs.jsonl"


def rows_key(job_id: str, index: int) -> str:
    """Where the rows of shard `index` are kept: work/<job_id>/rows-00000.jsonl."""
    return f"work/{job_id}/rows-{index:05d}.jsonl"


def outputs_keys(job_id: str) -> dict[str, str]:
    """Where a records-mode job's outputs go, as the manifest names them under "outputs"."""
    return {"csv": f"results/{job_id}/{OUTPUTS_CSV}", "jsonl": f"results/{job_id}/{OUTPUTS_JSONL}"}


_NO_FIELDS: Final[Mapping[str, str]] = MappingProxyType({})


class RowRef(NamedTuple):
    """One record as the outputs need it: its place in the file, its id and its kept fields.
    `reason` is set for a rejected record (its id is None when it had none). (A named tuple:
    the outputs read one per record, and a tuple is made in a fraction of a dataclass's time.)"""

    row: int
    custom_id: str | None
    fields: Mapping[str, str] = _NO_FIELDS
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


# A rows file's line as row_line writes it begins with its row and the request's custom_id,
# which holds no escape (^[a-zA-Z0-9_-]{1,64}$): read from the line's first bytes.
_LEADING_ID: Final = re.compile(rb'\{"row":\d+,"id":"([a-zA-Z0-9_-]{1,64})"[,}]')


def row_id(line: bytes) -> str | None:
    """The custom_id of a rows file's line (its leading bytes, or the parsed line when they do
    not show it)."""
    found = _LEADING_ID.match(line)
    return found[1].decode() if found is not None else parse_row(line).custom_id


def parse_row(line: bytes) -> RowRef:
    """A line of a rows file, or of a records-mode rejected.jsonl, as a RowRef."""
    record = quick_json.parse(line, json.loads)
    if type(record) is not dict or type(record.get("row")) is not int:
        raise ValueError(f"not a row record: {line[:80]!r}")
    custom_id = record.get("id", record.get("custom_id"))
    fields = record.get("fields") or _NO_FIELDS
    if type(fields) is not dict and fields is not _NO_FIELDS:
        raise ValueError(f"a row's fields must be an object: {line[:80]!r}")
    for value in fields.values():
        if type(value) is not str:  # the intake writes text only
            fields = {str(k): str(v) for k, v in fields.items()}
            break
    return RowRef._make((record["row"], custom_id, fields, record.get("reason")))
