"""Records mode's intake: which pipeline, if any, an upload is read through (pinned to the
version read when its job is made), and the split of a records file into shards.

The mode of an upload (domain/record_files.py): native mode's request lines, records read
through one version of `pipelines/<name>.json`, or a file refused as a whole before any
spend (a CSV with no pipeline, a pipeline that is not valid, both a .json and a .yaml). The
pipeline object is read by one GET, which names the version it returned: that version is
recorded with the job, and an invocation that resumes the job reads that version again,
never the current one.

The split streams: each record is read, rendered through the pipeline and checked by native
mode's line check (ids the API refuses, duplicates, sizes; check_rendered gives its verdicts
without parsing the renderer's JSON again), then cut into shards as native lines are.
Beside each shard goes its rows file (domain/rows.py: each request's record number, id and
kept fields, in the shard's order); a record rejected for any reason goes to
errors/<job_id>/rejected.jsonl with its line, record number and kept fields, or, with
`on_bad_record: fail`, fails the whole file before anything is sent."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final, NamedTuple

from batchdrop.domain.estimate import Estimator
from batchdrop.domain.jobs import id_hash, rejected_key
from batchdrop.domain.lines import OverlongLine, SourceLines
from batchdrop.domain.pipelines import Pipeline, PipelineError, json_string_body, parse_pipeline
from batchdrop.domain.prices import price_table
from batchdrop.domain.record_files import INBOX, PIPELINE_SUFFIXES, RecordFile, RecordFormat, record_file
from batchdrop.domain.record_readers import (
    MAX_LINE_BYTES as MAX_RECORD_LINE_BYTES,
)
from batchdrop.domain.record_readers import (
    ReadItem,
    RecordFileError,
    Rejection,
    read_csv_lines,
    read_jsonl,
)
from batchdrop.domain.records import PipelineRef, ShardPlan, SourceRef
from batchdrop.domain.requests import RejectedLine, ValidLine, check_rendered
from batchdrop.domain.rows import RowRef, rejected_row_record, row_line, rows_key
from batchdrop.domain.shards import assign_shards, shard_key
from batchdrop.ports import ObjectStore, SmallObject, Wiring, Writer
from batchdrop.services.split import ShardOut, Split

# A pipeline is a prompt and a schema, not data: a larger object is refused unread.
MAX_PIPELINE_BYTES: Final = 1024 * 1024
# How each form of pipeline is parsed, by the suffix of its key (pipelines/<name>.json or .yaml).
PIPELINE_PARSERS: dict[str, Callable[[str, bytes], Pipeline]] = {
    ".json": parse_pipeline,
    ".yaml": partial(parse_pipeline, syntax="yaml"),
}
_JSONL: Final = "application/x-ndjson"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_BOM_INSIDE: Final = "a byte order mark (BOM) begins this line: one may begin only the file's first line"


class FileRefusedError(ValueError):
    """The file fails as a whole before anything is sent; the message is the reason."""


# --- the mode of an upload -----------------------------------------------------------------


@dataclass(frozen=True)
class NativeMode:
    """Request lines, as before records mode. `hint`, for a file in a folder with no pipeline,
    is added to the reason the job gives when every line is rejected."""

    hint: str | None = None
    pipeline_ref: None = None


@dataclass(frozen=True)
class RecordsMode:
    pipeline: Pipeline
    pipeline_ref: PipelineRef
    format: RecordFormat
    hint: None = None


@dataclass(frozen=True)
class RefusedMode:
    """A file that fails before any spend, with its reason (and the pipeline version read, if one was)."""

    reason: str
    pipeline_ref: PipelineRef | None = None
    hint: None = None


UploadMode = NativeMode | RecordsMode | RefusedMode


def choose_mode(store: ObjectStore, key: str) -> UploadMode:
    """The mode of a new upload at `key`, from the pipeline objects as they are now."""
    found = record_file(key)
    if found is None:
        return NativeMode()
    pipelines = [(where, read) for where in found.pipeline_keys if (read := _read(store, where)) is not None]
    if not pipelines:
        return _without_pipeline(key, found)
    if len(pipelines) > 1:
        named = " and ".join(where for where, _ in pipelines)
        return RefusedMode(f"{key}: the folder's pipeline is ambiguous: both {named} exist; keep only one")
    [(where, read)] = pipelines
    return _parsed(key, found, where, read)


def pinned_mode(store: ObjectStore, key: str, mode: UploadMode, pinned: PipelineRef | None) -> UploadMode:
    """The mode of a job made earlier, whose pipeline version (None: none) was recorded when
    it was made: `mode` when it read that same version, else what that version gives."""
    if mode.pipeline_ref == pinned:
        return mode
    found = record_file(key)
    if found is None:
        return NativeMode()
    if pinned is None:  # the pipeline appeared after the job was made: it is not this job's
        return _without_pipeline(key, found)
    read = _read(store, pinned.key, pinned.version_id)
    if read is None:
        reason = f"{key}: the pipeline version recorded with the job ({pinned.key} version {pinned.version_id}) is gone"
        return RefusedMode(reason, pinned)
    return _parsed(key, found, pinned.key, read)


def _read(store: ObjectStore, key: str, version_id: str | None = None) -> SmallObject | None:
    return store.read_small(key, version_id, max_bytes=MAX_PIPELINE_BYTES)


def _without_pipeline(key: str, found: RecordFile) -> UploadMode:
    looked = " or ".join(found.pipeline_keys)
    if found.needs_pipeline:
        reason = f"{key}: a CSV is read only through its folder's pipeline, and there is no {looked}"
        return RefusedMode(reason)
    hint = f"{INBOX}{found.folder}/ has no pipeline (no {looked}), so the file was read as request lines"
    return NativeMode(hint)


def _parsed(key: str, found: RecordFile, where: str, read: SmallObject) -> UploadMode:
    ref = PipelineRef(where, read.version_id)
    parser = next(PIPELINE_PARSERS[suffix] for suffix in PIPELINE_SUFFIXES if where.endswith(suffix))
    if read.data is None:
        return RefusedMode(f"{key}: {where} is {read.size} bytes, over the {MAX_PIPELINE_BYTES} a pipeline may be", ref)
    try:
        pipeline = parser(where, read.data)
    except PipelineError as exc:
        return RefusedMode(f"{key}: {exc}", ref)
    return RecordsMode(pipeline, ref, found.format)


# --- reading and rendering -------------------------------------------------------------------


def read_records(lines: SourceLines, kind: RecordFormat, pipeline: Pipeline) -> Iterator[ReadItem]:
    """The records of an object's lines (gzip already inflated by SourceLines), each with the
    line it starts on. RecordFileError for the file as a whole; FileRefusedError for a CSV
    whose header lacks a field the pipeline names."""
    if kind == "jsonl":
        return _jsonl_records(lines)
    records = read_csv_lines(_csv_lines(lines))
    problems = header_problems(pipeline, records.header)
    if problems:
        columns = ", ".join(json.dumps(name, ensure_ascii=False) for name in records.header)
        raise FileRefusedError(
            f"the pipeline {pipeline.name} names fields the CSV header does not have: {'; '.join(problems)}"
            f" (the header: {columns})"
        )
    return iter(records)


def header_problems(pipeline: Pipeline, header: Iterable[str]) -> list[str]:
    """Each field the pipeline needs that `header` lacks, as "field: reason"."""
    missing = pipeline.check_fields(header)
    roles = (
        ("prompt", pipeline.placeholders()),
        ("id_field", (pipeline.id_field,) if pipeline.id_field else ()),
        ("keep_fields", pipeline.keep_fields),
    )
    return [
        f"{role}: {json.dumps(name, ensure_ascii=False)} is not a column of the header"
        for role, names in roles
        for name in names
        if name in missing
    ]


def _csv_lines(lines: SourceLines) -> Iterator[bytes]:
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, OverlongLine):  # not held by the reader: the file cannot be read on
            raise RecordFileError(f"line {number}: longer than {MAX_RECORD_LINE_BYTES} bytes")
        yield raw


def _jsonl_records(lines: SourceLines) -> Iterator[ReadItem]:
    """Each line read as read_jsonl reads a file's lines, numbered here: the lines come split
    already, and one too long to hold comes as OverlongLine."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, OverlongLine):
            yield number, Rejection(f"the line is longer than {MAX_RECORD_LINE_BYTES} bytes")
        elif number > 1 and raw.startswith(_UTF8_BOM):  # read_jsonl drops a BOM from its first line only
            yield number, Rejection(_BOM_INSIDE)
        else:
            for _, item in read_jsonl(raw):
                yield number, item


class _Row(NamedTuple):  # a tuple: one is made per record
    row: int  # the record's 1-based number
    line: int  # the line it starts on
    fields: Mapping[str, str]  # its values of the pipeline's keep_fields


class _Rendered:
    """The records rendered as request lines, for native mode's line check, numbered as the
    file's lines: a line that is not the start of a rendered record passes as a blank one,
    which the check skips, so what it reports names the record's own line. A record that
    cannot be rendered goes to `rejected`. `current` is the record of the last line given."""

    def __init__(self, pipeline: Pipeline, items: Iterator[ReadItem], rejected: Callable[[RowRef, int], None]) -> None:
        self._pipeline = pipeline
        self._items = items
        self._rejected = rejected
        self.current = _Row(0, 0, {})

    def __iter__(self) -> Iterator[bytes]:
        keep = self._pipeline.keep_fields
        next_line = 1
        for row, (line, item) in enumerate(self._items, start=1):
            while next_line < line:
                yield b""
                next_line += 1
            fields = {} if isinstance(item, Rejection) else {name: item[name] for name in keep if name in item}
            rendered = item if isinstance(item, Rejection) else self._pipeline.render(item, row)
            if isinstance(rendered, Rejection):
                custom_id = rendered.custom_id if rendered.custom_id is not None else self._row_id(row)
                self._rejected(RowRef(row, custom_id, fields, rendered.reason), line)
                continue
            self.current = _Row(row, line, fields)
            next_line = line + 1
            yield rendered

    def _row_id(self, row: int) -> str | None:
        """The id a record has whatever its fields: its row's, when ids are not a field's."""
        ident = self._pipeline.custom_id({}, row)
        return ident if isinstance(ident, str) and self._pipeline.id_field is None else None


# --- the split ---------------------------------------------------------------------------------


def split_records(wired: Wiring, job_id: str, source: SourceRef, mode: RecordsMode) -> Split:
    """Stream the records once: rejected ones to errors/ (or, with on_bad_record: fail, the
    first one fails the file), the rendered requests into shards as native lines go, each
    shard with its rows file. A shard is never a range of the source (rendered lines are new
    bytes): each is written, if absent, and finished in the background while the next one
    fills; all are done before this returns."""
    from concurrent.futures import Future, ThreadPoolExecutor  # not at import: a cold start does not need it

    estimator = Estimator(prices=wired.prices or price_table())
    split = Split(estimator=estimator)
    model, max_tokens, marks_cache = mode.pipeline.model, mode.pipeline.max_tokens, mode.pipeline.marks_cache
    rejects = _RejectedRows(wired.store, rejected_key(job_id), source.key, fail=mode.pipeline.on_bad_record == "fail")
    shard: _ShardWithRows | None = None
    closing: list[Future[ShardPlan]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-close") as closer:
        try:
            items = read_records(wired.store.lines(source.key, source.version_id), mode.format, mode.pipeline)
            rendered = _Rendered(mode.pipeline, items, rejects.write)
            for index, line in assign_shards(_valid(rendered, rejects), wired.limits):
                if shard is None or index != shard.index:
                    if shard is not None:
                        closing.append(closer.submit(shard.close))
                    shard = _ShardWithRows(wired.store, source, job_id, index)
                hashed = id_hash(line.custom_id)  # once, for the shard's ids digest and the sample
                shard.add(line, rendered.current, hashed)
                estimator.add_line(line.custom_id, line.body, model, max_tokens, hashed, marks_cache)
            last = shard.close() if shard is not None else None
            shard = None
            split.shards = [done.result() for done in closing] + ([last] if last else [])
            rejects.close()
        except RecordFileError as exc:
            _abort(shard, rejects)
            raise FileRefusedError(f"the file cannot be read as records: {exc}") from exc
        except BaseException:
            _abort(shard, rejects)
            raise
    split.requested = sum(plan.requests for plan in split.shards)
    split.rejected = rejects.count
    return split


def _abort(shard: _ShardWithRows | None, rejects: _RejectedRows) -> None:
    if shard is not None:
        shard.abort()
    rejects.abort()


def _valid(rendered: _Rendered, rejects: _RejectedRows) -> Iterator[ValidLine]:
    """The rendered lines native mode's check accepts (check_rendered: check_lines' verdicts,
    without parsing again what the renderer wrote); the others to `rejects`, with their
    record. The check gives one answer per line as it reads it, so `rendered.current` is the
    record of the line just answered."""
    for checked in check_rendered(rendered):
        row = rendered.current
        if checked.line != row.line:  # cannot happen while the check reads one line per answer
            raise RuntimeError(f"line {checked.line}: the check answered for a line other than {row.line}")
        if isinstance(checked, RejectedLine):
            rejects.write(RowRef(row.row, checked.custom_id, row.fields, checked.reason), checked.line)
        else:
            yield checked


class _RejectedRows:
    """errors/<job_id>/rejected.jsonl, opened only when a first record is rejected; with
    `fail` (on_bad_record: fail) the first rejected record fails the file instead."""

    def __init__(self, store: ObjectStore, key: str, source_key: str, *, fail: bool) -> None:
        self._store = store
        self._key = key
        self._source_key = source_key
        self._fail = fail
        self._writer: Writer | None = None
        self.count = 0

    def write(self, ref: RowRef, line: int) -> None:
        if self._fail:
            raise FileRefusedError(
                f"line {line} (record {ref.row}) is rejected: {ref.reason}; the pipeline's on_bad_record is fail,"
                " so the file fails and nothing is sent"
            )
        if self._writer is None:
            self._writer = self._store.writer(self._key, "application/x-jsonl")
        self._writer.write(rejected_row_record(ref, line, self._source_key))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


class _ShardWithRows:
    """One shard, written as split.py writes a shard that is not a range of its source, and
    its rows file beside it (written if absent too: a re-run writes the same bytes), closed
    with it."""

    def __init__(self, store: ObjectStore, source: SourceRef, job_id: str, index: int) -> None:
        self.index = index
        self._shard = ShardOut(store, source, index, shard_key(job_id, index), copyable=False)
        self._rows = store.writer(rows_key(job_id, index), _JSONL, if_absent=True)

    def add(self, line: ValidLine, row: _Row, hashed: bytes | None = None) -> None:
        self._shard.add(line, 0, line.body, hashed)
        self._rows.write(_row_line(row.row, line.custom_id, row.fields))

    def close(self) -> ShardPlan:
        self._rows.close()
        return self._shard.close(whole=False)

    def abort(self) -> None:
        self._shard.abort()
        self._rows.abort()


@functools.lru_cache(maxsize=256)
def _field_name(name: str) -> bytes:
    """A kept field's name as _row_line writes it: the same few names on every row."""
    return json_string_body(name)


def _row_line(row: int, custom_id: str, fields: Mapping[str, str]) -> bytes:
    """rows.row_line's bytes for a record whose request was written, without json.dumps (a
    third of its time): its custom_id passed the line check, so holds nothing to escape; a
    field holding an unpaired surrogate is left to row_line, which escapes it."""
    try:
        kept = b",".join([b'"%s":"%s"' % (_field_name(key), json_string_body(value)) for key, value in fields.items()])
    except UnicodeEncodeError:
        return row_line(RowRef(row, custom_id, fields))
    return b'{"row":%d,"id":"%s","fields":{%s}}\n' % (row, custom_id.encode(), kept)
