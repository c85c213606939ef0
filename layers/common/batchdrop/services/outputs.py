"""A records-mode job's outputs, written when it finishes: results/<job_id>/outputs.csv and
outputs.jsonl, one row per input record, in input order, rejected records included.

The results of a shard come back in any order, across its batch's parts, its retries and the
halves of a refused body, so they are never held in memory. For each shard the split made,
its rows file is read once for the custom_id of each row; its result parts are then streamed
once into buckets under the function's /tmp, a bucket per run of rows, sized from the parts'
bytes so that each holds some _BUCKET_BYTES; then the rows file is walked again, in order,
each bucket's file read whole as its rows come (one sequential read, no seek or page fault
per row) and each record's row written. Memory is bounded by one shard's ids (at most
100,000), one bucket and the lines held before they are written to their buckets; the disk
by one shard's result bytes. Each file is unlinked as it is made and closed once read, so
nothing outlives the run, however it ends.

Both files are written only if absent, from inputs that never change once the job's shards
are done (the pipeline at its recorded version, the rows files, the result parts), so a
second run after a crash writes the same bytes, and the first complete copy stays."""

from __future__ import annotations

import errno
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
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
from batchdrop.domain.rows import RowRef, outputs_keys, parse_row, row_id, rows_key
from batchdrop.errors import ResultsMismatchError
from batchdrop.observability import logger
from batchdrop.ports import READ_BYTES, ObjectStore, Wiring, Writer

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
JSONL_CONTENT_TYPE = "application/x-jsonl"
MAX_PIPELINE_BYTES = 1024 * 1024  # a pipeline is a prompt and a schema: far less than this
_FLUSH_CHARS = 2 * 1024 * 1024  # rows gathered (both files) before they go to the writers
_BUCKET_BYTES = 2 * 1024 * 1024  # a shard's result bytes per spill file, each read back whole
_MAX_BUCKETS = 256  # spill files per shard at most (a Lambda function may hold 1,024 open)
_PENDING_BYTES = 2 * 1024 * 1024  # result lines held, all buckets, before they are written
_GUESSED_LINE_BYTES = 4096  # a result's bytes, for a part the listing does not size


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
    """One shard's final result lines in /tmp, in buckets by their row: the shard's rows are
    cut into runs of `per` rows, and each run's results go, in the order they come, to a file
    of their own (unlinked as it is made). Read back in row order, each bucket's file is read
    whole, once, and its lines put in their rows' places: sequential reads of a few MB, not a
    seek or a page fault per row."""

    def __init__(self, shard: int, ids: list[str], per: int, prefix: str) -> None:
        self.shard = shard
        self.size = 0  # bytes spilled
        self._prefix = prefix
        self._rows = len(ids)
        self._place = {custom_id: place for place, custom_id in enumerate(ids)}
        self._per = max(1, per)
        buckets = -(-len(ids) // self._per)
        self._files: list[IO[bytes] | None] = [None] * buckets
        self._pending: list[list[bytes]] = [[] for _ in range(buckets)]
        self._places: list[array[int]] = [array("q") for _ in range(buckets)]  # rows, in the order spilled
        self._lengths: list[array[int]] = [array("q") for _ in range(buckets)]
        self._held = 0  # bytes pending, all buckets
        self._seen = bytearray(len(ids))
        self._strangers: list[str] = []  # ids the shard's rows do not have

    def add(self, line: bytes, key: str) -> None:
        """Spill one line of a result part, its line end kept (JSON reads it as whitespace)."""
        if len(line) <= 2 and not line.strip():
            return
        custom_id = result_id(line)
        place = self._place.get(custom_id)
        if place is None:
            self._strangers.append(custom_id)
            return
        if self._seen[place]:
            raise ResultsMismatchError(f"{key}: a second final result for {custom_id!r} (shard {self.shard})")
        self._seen[place] = 1
        bucket = place // self._per
        self._pending[bucket].append(line)
        self._places[bucket].append(place)
        self._lengths[bucket].append(len(line))
        self._held += len(line)
        if self._held >= _PENDING_BYTES:
            self._write_pending()

    def ready(self) -> None:
        """Every result spilled: the lines still held are written; a result for an id the
        rows do not have is an error."""
        self._write_pending()
        if self._strangers:
            extra = sorted(self._strangers)[:3]
            raise ResultsMismatchError(
                f"shard {self.shard}: {len(self._strangers)} result(s) for ids its rows file lacks, e.g. {extra}"
            )

    def _write_pending(self) -> None:
        import tempfile  # only a records-mode job's finish needs it

        for bucket, lines in enumerate(self._pending):
            if not lines:
                continue
            file = self._files[bucket]
            if file is None:
                file = self._files[bucket] = tempfile.TemporaryFile(prefix=self._prefix, buffering=0)  # noqa: SIM115 - closed once read, or by close()
            data = b"".join(lines)
            self.size += len(data)
            lines.clear()
            file.write(data)
        self._held = 0

    def in_row_order(self) -> Iterator[bytes | None]:
        """Each row's result line, in row order (None for a row with none); each bucket's file
        is closed, and so freed, once read."""
        for bucket, file in enumerate(self._files):
            base = bucket * self._per
            slots: list[bytes | None] = [None] * min(self._per, self._rows - base)
            if file is not None:
                file.seek(0)
                data = file.read()
                file.close()
                self._files[bucket] = None
                start = 0
                for place, length in zip(self._places[bucket], self._lengths[bucket], strict=True):
                    slots[place - base] = data[start : start + length]
                    start += length
                del data
            yield from slots
            self._places[bucket] = self._lengths[bucket] = array("q")

    def close(self) -> None:
        for file in self._files:
            if file is not None:
                file.close()
        self._files = [None] * len(self._files)


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
        sizes = self._part_sizes(job.job_id)
        for index, keys in shard_families(shards):
            key = rows_key(job.job_id, index)
            ids = [custom_id or "" for custom_id in self._read_rows(key, row_id)]
            spilled = sum(sizes.get(part, _GUESSED_LINE_BYTES * len(ids)) for part in keys)
            per = -(-len(ids) // min(_MAX_BUCKETS, max(1, -(-spilled // _BUCKET_BYTES)))) if ids else 1
            spill = _Spill(index, ids, per, f"batchdrop-{job.job_id}-{index}-")
            try:
                self._load(job, spill, keys)
                results = spill.in_row_order()
                for ref in self._read_rows(key, parse_row):
                    result = next(results, None)
                    if result is None:
                        raise ResultsMismatchError(f"shard {index}: no result for {ref.custom_id!r} (row {ref.row})")
                    yield ref, result
            finally:
                spill.close()

    def _part_sizes(self, job_id: str) -> dict[str, int]:
        """The size of each of the job's result parts, in bytes (one listing)."""
        sizes: dict[str, int] = {}
        for version in self._store.versions(f"results/{job_id}/results-"):
            if version.size is not None:
                sizes[version.key] = max(sizes.get(version.key, 0), version.size)
        return sizes

    def _load(self, job: JobRecord, spill: _Spill, keys: tuple[str, ...]) -> None:
        """Stream the shard's result parts into its spill files; a full /tmp is said as such."""
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
            yield from self._read_rows(rejected_key(job.job_id), parse_row)

    def _read_rows[T](self, key: str, read: Callable[[bytes], T]) -> Iterator[T]:
        """`read(line)` of each line of a rows file (parse_row: its RowRef)."""
        try:
            found = self._store.lines(key)
        except Exception as exc:  # the store's own error (NoSuchKey...) does not name the key
            raise OutputOrderError(f"{key}: cannot be read ({type(exc).__name__}: {exc})") from exc
        for number, line in enumerate(found, start=1):
            if line.strip():
                try:
                    yield read(line)
                except ValueError as exc:
                    raise OutputOrderError(f"{key} line {number}: {exc}") from exc


def _flush(encoded: RowsEncoder, table: Writer, lines: Writer) -> None:
    csv_bytes, jsonl_bytes = encoded.take()
    table.write(csv_bytes)
    lines.write(jsonl_bytes)
