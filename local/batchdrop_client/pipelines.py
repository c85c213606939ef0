"""Records mode's pipelines on this machine, before anything reaches a bucket: a pipeline file
read and validated by the layer's own parser (the one the submit function uses), its key in
the bucket, and a trial run over the first records of a sample file that renders them as the
function would and sends nothing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, cast

from batchdrop_client.errors import InputFileError, PipelineInvalid

if TYPE_CHECKING:
    from batchdrop.domain.pipelines import Pipeline, Syntax
    from batchdrop.domain.record_readers import ReadItem, Rejection

PIPELINES = "pipelines/"
INBOX = "inbox/"
# The keys the submit function reads a pipeline from: one per syntax, by the pipeline's name.
KEY_SUFFIX: dict[str, str] = {"json": ".json", "yaml": ".yaml"}
DEFAULT_SAMPLE_ROWS = 3
JSONL_FIELD_RECORDS = 100  # a JSONL sample's fields: those of its first records, up to this many
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class PipelineFile:
    """A pipeline file that the layer's parser accepts: its name, syntax, text and pipeline."""

    path: Path
    name: str
    syntax: Syntax
    text: bytes
    pipeline: Pipeline

    @property
    def key(self) -> str:
        """Where it goes in the bucket: pipelines/<name>.json or pipelines/<name>.yaml."""
        return pipeline_key(self.name, self.syntax)

    @property
    def other_key(self) -> str:
        """The key of the same name in the other syntax, which must not exist beside it."""
        return pipeline_key(self.name, "yaml" if self.syntax == "json" else "json")

    @property
    def inbox(self) -> str:
        return f"{INBOX}{self.name}/"


def pipeline_key(name: str, syntax: str) -> str:
    return f"{PIPELINES}{name}{KEY_SUFFIX[syntax]}"


def load_pipeline_file(path: str | Path, name: str | None = None) -> PipelineFile:
    """The pipeline in `path` (JSON or YAML by its suffix), named `name` or its file's stem;
    InputFileError for a file that cannot be read, PipelineInvalid naming the file and every
    problem otherwise."""
    from batchdrop.domain.pipelines import PipelineError, parse_pipeline, pipeline_name_problem, syntax_of

    path = Path(path)
    syntax = syntax_of(path.name)
    if syntax is None:
        raise InputFileError(f"{path}: a pipeline file is .json, .yaml or .yml")
    name = path.name[: path.name.rfind(".")] if name is None else name
    problem = pipeline_name_problem(name)
    if problem:
        raise PipelineInvalid(f"{path}: {problem} (--name NAME gives another)")
    if path.is_dir():
        raise InputFileError(f"{path} is a directory: give a pipeline file")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    try:
        pipeline = parse_pipeline(name, text, syntax=syntax, source=str(path))
    except PipelineError as exc:
        raise PipelineInvalid(str(exc)) from None
    return PipelineFile(path, name, syntax, text, pipeline)


# --- a trial over a sample ------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """A record of the sample: its line, and its request line or why it is rejected."""

    line: int
    request: bytes | Rejection


@dataclass(frozen=True)
class SampleCheck:
    """What a sample file says of a pipeline: the fields it has (a CSV's header; the fields of a
    JSONL's first records), those the pipeline needs and it lacks, and its first records rendered."""

    path: Path
    kind: Literal["csv", "jsonl"]
    fields: tuple[str, ...]
    missing: tuple[str, ...]
    trials: tuple[Trial, ...]


def check_sample(pipeline: Pipeline, path: str | Path, rows: int = DEFAULT_SAMPLE_ROWS) -> SampleCheck:
    """Render the first `rows` records of a local .csv, .jsonl, .csv.gz or .jsonl.gz file through
    `pipeline`, as the submit function would, without sending anything."""
    from batchdrop.domain.record_readers import RecordFileError

    path = Path(path)
    kind = _sample_kind(path)
    if path.is_dir():
        raise InputFileError(f"{path} is a directory: give a sample file")
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC  # gzip is known by its first bytes, whatever the name
            raw.seek(0)
            body = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw
            if kind == "csv":
                return _check_csv(pipeline, path, body, rows)
            return _check_jsonl(pipeline, path, body, rows)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except RecordFileError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputFileError(f"{path}: not a readable gzip file ({exc or 'truncated'})") from None


def _sample_kind(path: Path) -> Literal["csv", "jsonl"]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".jsonl"):
        return "jsonl"
    raise InputFileError(f"{path}: a sample is a .csv, .jsonl, .csv.gz or .jsonl.gz file")


def _check_csv(pipeline: Pipeline, path: Path, body: BinaryIO, rows: int) -> SampleCheck:
    from batchdrop.domain.record_readers import read_csv

    records = read_csv(body)
    fields = tuple(name for name in records.header if name)
    missing = tuple(pipeline.check_fields(fields))
    trials = () if missing else tuple(_render(pipeline, iter(records), rows))
    return SampleCheck(path, "csv", fields, missing, trials)


def _check_jsonl(pipeline: Pipeline, path: Path, body: BinaryIO, rows: int) -> SampleCheck:
    from batchdrop.domain.record_readers import Rejection, read_jsonl

    items = []
    for item in read_jsonl(body):
        items.append(item)
        if len(items) >= max(rows, JSONL_FIELD_RECORDS):
            break
    fields = tuple(dict.fromkeys(name for _, record in items if not isinstance(record, Rejection) for name in record))
    missing = tuple(pipeline.check_fields(fields))
    return SampleCheck(path, "jsonl", fields, missing, tuple(_render(pipeline, iter(items), rows)))


def _render(pipeline: Pipeline, items: Iterator[ReadItem], rows: int) -> Iterator[Trial]:
    """The first `rows` records rendered; a record's position among the file's records (those
    rejected as they were read included) is its row number."""
    for position, (line, record) in enumerate(items, start=1):
        if position > rows:
            return
        if isinstance(record, dict):
            yield Trial(line, pipeline.render(record, position))
        else:
            yield Trial(line, record)


def pretty_request(line: bytes) -> str:
    """A rendered request line as indented JSON, for people."""
    return json.dumps(json.loads(line), indent=2, ensure_ascii=False)
