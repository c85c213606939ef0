"""A records-mode job's outputs, written when it finishes: results/<job_id>/outputs.csv and
outputs.jsonl, one row per input record, in input order, rejected records included.

The results of a shard come back in any order, across its batch's parts, its retries and the
halves of a refused body, so they are never held in memory: for each shard the split made,
its result parts are streamed once into a file under the function's /tmp, keeping only each
custom_id's place in it; then the shard's rows file is walked in order, each record's result
read back from that place, and its row written. The file is read through a memory map (a
slice costs no system call, where a read per row would wait on the upload threads for the
interpreter lock each time), unmapped and mapped again once the pages its slices touched
may reach _MAPPED_BYTES, so they leave the process's resident memory. Memory is bounded by one shard's ids
(at most 100,000) and that window, the disk by one shard's result bytes; the file is
unlinked as soon as it is opened, so nothing outlives the run, however it ends.

Both files are written only if absent, from inputs that never change once the job's shards
are done (the pipeline at its recorded version, the rows files, the result parts), so a
second run after a crash writes the same bytes, and the first complete copy stays."""

from __future__ import annotations

import errno
import mmap
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import IO, Any

from batchdrop.domain.jobs import rejected_key
from batchdrop.domain.output_lines import RowsEncoder
from batchdrop.domain.output_order import (
    OutputOrderError,
    count_problem,
    merged_by_row,
    result_id,
    shard_families,
)
from batchdrop.domain.outputs import RowMaker, csv_line
from batchdrop.domain.pipelines import Pipeline, PipelineError, parse_pipeline, syntax_of
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.records import JobRecord, PipelineRef, ShardRecord
from batchdrop.domain.rows import RowRef, outputs_keys, parse_row, rows_key
from batchdrop.errors import ResultsMismatchError
from batchdrop.observability import logger
from batchdrop.ports import READ_BYTES, ObjectStore, Wiring, Writer

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
JSONL_CONTENT_TYPE = "application/x-jsonl"
MAX_PIPELINE_BYTES = 1024 * 1024  # a pipeline is a prompt and a schema: far less than this
_FLUSH_CHARS = 2 * 1024 * 1024  # rows gathered (both files) before they go to the writers
_MAPPED_BYTES = 4 * 1024 * 1024  # pages one mapping of a spill file may touch before it is remade
_PAGE = mmap.PAGESIZE


def pipeline_at(store: ObjectStore, ref: PipelineRef) -> Pipeline:
    """The pipeline as it was at the version the job recorded (never the current object)."""
    name = ref.key.rpartition("/")[2].rpartition(".")[0] or ref.key
    size, body = store.open(ref.key, ref.version_id)
    try:
        if size > MAX_PIPELINE_BYTES:
            raise PipelineError(name, [f"(file): {ref.key} holds {size} bytes, more than {MAX_PIPELINE_BYTES}"])
        data = b"".join(body.iter_chunks(READ_BYTES))
    finally:
        body.close()
    return parse_pipeline(name, data, syntax=syntax_of(ref.key) or "json", source=ref.key)


class SpillSpaceError(OSError):
    """The function's /tmp cannot hold one shard's results: the message names the job, the
    shard and what to change."""


class _Spill:
    """One shard's final result lines in an unlinked file of /tmp, found by custom_id."""

    def __init__(self, file: IO[bytes], shard: int) -> None:
        self._file = file
        self.shard = shard
        self._places: dict[str, int] = {}  # custom_id: offset << 32 | length
        self.size = 0  # bytes written
        self._map: mmap.mmap | None = None
        self._touched = 0  # the most bytes of pages the current mapping's slices touched

    def add(self, line: bytes, key: str) -> None:
        line = line.rstrip(b"\r\n")
        if not line:
            return
        custom_id = result_id(line)
        if custom_id in self._places:
            raise ResultsMismatchError(f"{key}: a second final result for {custom_id!r} (shard {self.shard})")
        self._places[custom_id] = self.size << 32 | len(line)
        self._file.write(line)
        self.size += len(line)

    def ready(self) -> None:
        self._file.flush()

    def take(self, ref: RowRef) -> bytes:
        place = self._places.pop(ref.custom_id or "", None)
        if place is None:
            raise ResultsMismatchError(f"shard {self.shard}: no result for {ref.custom_id!r} (row {ref.row})")
        length, start = place & 0xFFFFFFFF, place >> 32
        if self._map is None or self._touched >= _MAPPED_BYTES:
            self.close()
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._touched += length + 2 * _PAGE  # a slice touches its pages, one more at each end at most
        return self._map[start : start + length]

    def close(self) -> None:
        """Unmap the file (its pages leave this process's resident memory)."""
        if self._map is not None:
            self._map.close()
            self._map = None
            self._touched = 0

    def check_all_taken(self) -> None:
        if self._places:
            extra = sorted(self._places)[:3]
            raise ResultsMismatchError(
                f"shard {self.shard}: {len(self._places)} result(s) for ids its rows file lacks, e.g. {extra}"
            )


class OutputsWriter:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._store = wired.store

    def write(self, job: JobRecord, shards: list[ShardRecord], counts: Mapping[str, int]) -> dict[str, str]:
        """Write the job's outputs (if absent); their keys, as the manifest names them.
        Raises, writing nothing, when the rows do not agree with `counts` and job.rejected."""
        assert job.pipeline is not None  # only a records-mode job has outputs
        maker = RowMaker(pipeline_at(self._store, job.pipeline))
        keys = outputs_keys(job.job_id)
        statuses: Counter[str] = Counter()
        with (
            self._store.writer(keys["csv"], CSV_CONTENT_TYPE, if_absent=True) as table,
            self._store.writer(keys["jsonl"], JSONL_CONTENT_TYPE, if_absent=True) as lines,
        ):
            table.write(csv_line(list(maker.columns)))
            encoded = RowsEncoder()
            for values in self._rows(job, shards, maker):
                statuses[values["status"]] += 1
                encoded.add(values)
                if encoded.chars >= _FLUSH_CHARS:
                    _flush(encoded, table, lines)
            _flush(encoded, table, lines)
            problem = count_problem(statuses, counts, job.rejected)
            if problem is not None:
                raise ResultsMismatchError(f"job {job.job_id}: the outputs' rows disagree with its counts: {problem}")
        logger.info("records outputs written", extra={"job_id": job.job_id, "rows": dict(statuses)})
        return keys

    def _rows(self, job: JobRecord, shards: list[ShardRecord], maker: RowMaker) -> Iterator[dict[str, Any]]:
        """Each record's output row, in input order."""
        pipeline = maker.pipeline
        for ref, result in merged_by_row(self._sent(job, shards), self._rejected(job)):
            if result is None:
                shown = pipeline.custom_id({}, ref.row) if pipeline.id_field is None else None
                rejection = Rejection(ref.reason or "rejected", ref.custom_id)
                yield maker.row(ref.fields, rejection, record_id=shown if isinstance(shown, str) else None)
                continue
            values = maker.row(ref.fields, result)
            if values["id"] != ref.custom_id:
                raise ResultsMismatchError(f"row {ref.row}: its result is {values['id']!r}'s, not {ref.custom_id!r}'s")
            yield values

    def _sent(self, job: JobRecord, shards: list[ShardRecord]) -> Iterator[tuple[RowRef, bytes]]:
        """The rows of the requests sent, shard by shard, each with its result line."""
        import tempfile  # only a records-mode job's finish needs it

        for index, keys in shard_families(shards):
            with tempfile.TemporaryFile(prefix=f"batchdrop-{job.job_id}-") as file:
                spill = _Spill(file, index)
                try:
                    self._load(job, spill, keys)
                    for ref in self._read_rows(rows_key(job.job_id, index)):
                        yield ref, spill.take(ref)
                    spill.check_all_taken()
                finally:
                    spill.close()

    def _load(self, job: JobRecord, spill: _Spill, keys: tuple[str, ...]) -> None:
        """Stream the shard's result parts into its spill file; a full /tmp is said as such."""
        try:
            for key in keys:
                for line in self._store.lines(key):
                    spill.add(line, key)
            spill.ready()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise SpillSpaceError(
                f"job {job.job_id}, shard {spill.shard}: /tmp filled up after {spill.size:,} bytes of its results;"
                " give CheckerFunction more EphemeralStorage (docs/records.md#size)"
            ) from exc

    def _rejected(self, job: JobRecord) -> Iterator[RowRef]:
        if job.rejected:
            yield from self._read_rows(rejected_key(job.job_id))

    def _read_rows(self, key: str) -> Iterator[RowRef]:
        try:
            found = self._store.lines(key)
        except Exception as exc:  # the store's own error (NoSuchKey...) does not name the key
            raise OutputOrderError(f"{key}: cannot be read ({type(exc).__name__}: {exc})") from exc
        for number, line in enumerate(found, start=1):
            if line.strip():
                try:
                    yield parse_row(line)
                except ValueError as exc:
                    raise OutputOrderError(f"{key} line {number}: {exc}") from exc


def _flush(encoded: RowsEncoder, table: Writer, lines: Writer) -> None:
    csv_bytes, jsonl_bytes = encoded.take()
    table.write(csv_bytes)
    lines.write(jsonl_bytes)
