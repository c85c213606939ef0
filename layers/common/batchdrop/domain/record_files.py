"""Which uploads are records mode's: a file in a folder of inbox/ whose name ends in .csv,
.jsonl, .csv.gz or .jsonl.gz, read through the folder's pipeline when it has one.

`inbox/<name>/<rest>`: <name>, the first folder under inbox/, names the pipeline,
`pipelines/<name>.json` (or `.yaml`), whatever <rest> holds (sub-folders included). The
suffix is matched whatever its case (`REVIEWS.CSV` is a CSV: spreadsheet tools on Windows
write such names); the folder's name is matched exactly, as S3 keys are. A file directly
under inbox/, or with any other suffix, is native mode's and no pipeline is looked for.

A CSV is only ever read through a pipeline: one in a folder without a pipeline fails before
any spend. A JSONL file in such a folder is native mode's request lines, as before records
mode existed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

INBOX: Final = "inbox/"
PIPELINES: Final = "pipelines/"
# The forms a pipeline is written in, in the order they are named in messages.
PIPELINE_SUFFIXES: Final = (".json", ".yaml")
RecordFormat = Literal["csv", "jsonl"]
_SUFFIXES: Final[tuple[tuple[str, RecordFormat], ...]] = (
    (".csv", "csv"),
    (".csv.gz", "csv"),
    (".jsonl", "jsonl"),
    (".jsonl.gz", "jsonl"),
)


@dataclass(frozen=True, slots=True)
class RecordFile:
    """An upload that records mode reads when its folder has a pipeline."""

    folder: str  # <name> in inbox/<name>/...
    format: RecordFormat

    @property
    def pipeline_keys(self) -> tuple[str, ...]:
        """Where its pipeline may be: pipelines/<name>.json, pipelines/<name>.yaml."""
        return tuple(f"{PIPELINES}{self.folder}{suffix}" for suffix in PIPELINE_SUFFIXES)

    @property
    def needs_pipeline(self) -> bool:
        """A CSV is never request lines: without a pipeline it cannot be read at all."""
        return self.format == "csv"


def record_file(key: str) -> RecordFile | None:
    """The records-mode reading of an upload's key, None for a key only native mode reads."""
    if not key.startswith(INBOX):
        return None
    folder, slash, rest = key[len(INBOX) :].partition("/")
    if not slash or not folder or not rest or rest.endswith("/"):
        return None
    lowered = rest.lower()
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix):
            return RecordFile(folder, kind)
    return None
