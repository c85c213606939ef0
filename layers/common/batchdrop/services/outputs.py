"""A records-mode job's outputs, written when it finishes: results/<job_id>/outputs.csv and
outputs.jsonl, one row per input record, in input order, rejected records included.

The results of a shard come back in any order, across its batch's parts, its retries and the
halves of a refused body, so they are never held in memory. A row is made in two pieces: its
tail (status, answer, usage, error), which its result alone decides, made as the result is
read; and its head (id, kept fields), from its rows file in input order. For each shard the
split made, its rows file is read once for the custom_id of each row; its result parts are
then streamed once, each result made into its row's tail and put in a bucket under the
function's /tmp, a bucket per run of rows, sized so that each holds some _BUCKET_BYTES; then
the rows file is walked again, in order, each bucket's file read whole as its rows come (one
sequential read, no seek or page fault per row) and each record's head joined to its tail.
Memory is bounded by one shard's ids (at most 100,000), one bucket and the tails held before
they are written to their buckets; the disk by one shard's tails. Each file is unlinked as it
is made and closed once read, so nothing outlives the run, however it ends.

A tick that collects a records job's batches and then finishes the job makes the tails as the
results stream in from the API (CollectedResults), in the time the collection spends waiting
on the download, instead of reading the parts back from S3 afterwards.

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
from batchdrop.domain.output_lines import RowsEncoder, tail_cells
from batchdrop.domain.output_order import (
    OutputOrderError,
    count_problem,
    merged_by_row,
    shard_families,
)
from batchdrop.domain.outputs import STATUSES, RowMaker, csv_line
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
_BUCKET_BYTES = 2 * 1024 * 1024  # a shard's tail bytes per spill file, each read back whole
_MAX_BUCKETS = 256  # spill files per shard at most (a Lambda function may hold 1,024 open)
_PENDING_BYTES = 2 * 1024 * 1024  # tails held, all buckets, before they are written
_GUESSED_LINE_BYTES = 4096  # a result's bytes, for a part the listing does not size
_TAIL_PER_LINE = 1.6  # a row's tail (two files' cells) against its result line's bytes, about
# A tick makes the tails of at most this many shards as it collects them (each holds up to
# _MAX_BUCKETS files open), in at most this share of /tmp's free space (the rest is left to
# the outputs of shards it did not).
_COLLECTED_SHARDS = 2
_COLLECTED_SHARE = 0.4
_STATUS_CODES = {status: code for code, status in enumerate(STATUSES, start=1)}


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


Tail = tuple[str, bytes | memoryview, bytes | memoryview]  # a row's status, its tail's CSV and JSON cells


def _rows_per_bucket(rows: int, expected_bytes: float) -> int:
    """Rows per spill file so that each holds some _BUCKET_BYTES, in at most _MAX_BUCKETS files."""
    if rows == 0:
        return 1
    buckets = min(_MAX_BUCKETS, max(1, -(-int(expected_bytes) // _BUCKET_BYTES)))
    return -(-rows // buckets)


class _Spill:
    """The tails of one shard's rows in /tmp, in buckets by row: the shard's rows are cut into
    runs of `per` rows, and each run's tails go, in the order they come, to a file of their
    own (unlinked as it is made). Read back in row order, each bucket's file is read whole,
    once, and its tails put in their rows' places: sequential reads of a few MB, not a seek or
    a page fault per row."""

    def __init__(self, shard: int, ids: list[str], per: int, prefix: str) -> None:
        self.shard = shard
        self.size = 0  # bytes spilled
        self._prefix = prefix
        self._ids = ids
        self._place: dict[str, int] = {custom_id: place for place, custom_id in enumerate(ids)}
        self._per = max(1, per)
        buckets = -(-len(ids) // self._per)
        self._files: list[IO[bytes] | None] = [None] * buckets
        self._pending: list[list[bytes]] = [[] for _ in range(buckets)]
        self._places: list[array[int]] = [array("q") for _ in range(buckets)]  # rows, in the order spilled
        self._lengths: list[array[int]] = [array("q") for _ in range(buckets)]  # CSV then JSON bytes, per row
        self._held = 0  # bytes pending, all buckets
        self._status = bytearray(len(ids))  # each row's, 0 until its result comes
        self._strangers: list[str] = []  # ids the shard's rows do not have

    @property
    def held(self) -> int:
        """Bytes taken so far: spilled, and held to be."""
        return self.size + self._held

    def add(self, custom_id: str, status: str, csv_tail: bytes, jsonl_tail: bytes, where: str) -> None:
        """Spill the tail of the row `custom_id`; `where` (the result part) names a second one."""
        place = self._place.get(custom_id)
        if place is None:
            self._strangers.append(custom_id)
            return
        if self._status[place]:
            raise ResultsMismatchError(f"{where}: a second final result for {custom_id!r} (shard {self.shard})")
        self._status[place] = _STATUS_CODES[status]
        bucket = place // self._per
        pending = self._pending[bucket]
        pending.append(csv_tail)
        pending.append(jsonl_tail)
        self._places[bucket].append(place)
        lengths = self._lengths[bucket]
        lengths.append(len(csv_tail))
        lengths.append(len(jsonl_tail))
        self._held += len(csv_tail) + len(jsonl_tail)
        if self._held >= _PENDING_BYTES:
            self._write_pending()

    def ready(self) -> None:
        """Every result spilled: the tails still held are written; a result for an id the
        rows do not have is an error."""
        self._write_pending()
        self._place = {}  # nothing more comes
        if self._strangers:
            extra = sorted(self._strangers)[:3]
            raise ResultsMismatchError(
                f"shard {self.shard}: {len(self._strangers)} result(s) for ids its rows file lacks, e.g. {extra}"
            )

    def _write_pending(self) -> None:
        import tempfile  # only a records-mode job's finish needs it

        for bucket, tails in enumerate(self._pending):
            if not tails:
                continue
            file = self._files[bucket]
            if file is None:
                file = self._files[bucket] = tempfile.TemporaryFile(prefix=self._prefix, buffering=0)  # noqa: SIM115 - closed once read, or by close()
            data = b"".join(tails)
            self.size += len(data)
            tails.clear()
            file.write(data)
        self._held = 0

    def in_row_order(self) -> Iterator[tuple[str, Tail | None]]:
        """Each row's custom_id and tail, in row order (None for a row with no result); each
        bucket's file is closed, and so freed, once read. A tail's cells are views of their
        bucket's bytes, which they keep until they are written."""
        ids, status, names = self._ids, self._status, ("", *STATUSES)  # a spilled row's status is never 0
        for bucket, file in enumerate(self._files):
            base = bucket * self._per
            count = min(self._per, len(ids) - base)
            tails: list[Tail | None] = [None] * count
            if file is not None:
                file.seek(0)
                data = memoryview(file.read())
                file.close()
                self._files[bucket] = None
                start = 0
                lengths = iter(self._lengths[bucket])
                for place, csv_length, jsonl_length in zip(self._places[bucket], lengths, lengths, strict=True):
                    middle = start + csv_length
                    end = middle + jsonl_length
                    tails[place - base] = (names[status[place]], data[start:middle], data[middle:end])
                    start = end
                del data
            self._places[bucket] = self._lengths[bucket] = array("q")
            yield from zip(ids[base : base + count], tails, strict=True)

    def close(self) -> None:
        for file in self._files:
            if file is not None:
                file.close()
        self._files = [None] * len(self._files)


class CollectedResults:
    """The tails of the rows of the shards a tick collects, made as their results stream in
    from the API, for the records jobs the same tick then finishes: their outputs then read
    no part back from S3 and parse no result again. Only a job whose every batch was sent
    (RUNNING) may finish in the tick; only a shard collected whole in its first attempt (one
    part, its rows file its own) is made so; at most _COLLECTED_SHARDS shards, in at most
    _COLLECTED_SHARE of /tmp's free space. Anything else, and any surprise while making the
    tails (a result the outputs would refuse, a full /tmp), drops the shard's tails: its
    outputs read its parts from S3 as for a job finished in a later tick, which says what is
    wrong. Making them never changes what a collection records. close() frees what is left."""

    def __init__(self, wired: Wiring, jobs: list[JobRecord]) -> None:
        """`jobs`: the records jobs the tick may finish (services/tick.Collected chooses them)."""
        import shutil
        import tempfile

        self._store = wired.store
        self._jobs = {job.job_id: job for job in jobs}
        self._makers: dict[str, RowMaker | None] = {}
        self._kept: dict[tuple[str, int], tuple[str, _Spill]] = {}  # (job, shard) -> (its part, its tails)
        self._making = 0  # shards whose tails are being made, or kept
        try:
            self._room = int(shutil.disk_usage(tempfile.gettempdir()).free * _COLLECTED_SHARE)
        except OSError:  # no /tmp to speak of: nothing is made while collecting
            self._room = 0

    def sink(self, shard: ShardRecord, part_key: str) -> CollectedShard | None:
        """Where the collection of `shard` into `part_key` puts its final results (None: the
        shard's tails are not made as it is collected). Never raises: a collection never
        fails for want of them."""
        try:
            return self._sink(shard, part_key)
        except Exception:  # noqa: BLE001 - the outputs read the shard from S3 instead
            logger.exception("records outputs: tails not made while collecting", extra={"shard": shard.index})
            return None

    def _sink(self, shard: ShardRecord, part_key: str) -> CollectedShard | None:
        job = self._jobs.get(shard.job_id)
        if job is None or shard.attempt != 1 or shard.result_keys or self._making >= _COLLECTED_SHARDS:
            return None
        maker = self._maker(job)
        if maker is None:
            return None
        try:
            ids = [custom_id or "" for custom_id in _read_rows(self._store, rows_key(job.job_id, shard.index), row_id)]
        except Exception:  # noqa: BLE001 - a half of a refused body has no rows file of its own
            return None
        if len(ids) != shard.attempt_requests:
            return None
        expected = len(ids) * _TAIL_PER_LINE * _line_bytes_at_most(maker)
        spill = _Spill(shard.index, ids, _rows_per_bucket(len(ids), expected), f"batchdrop-{job.job_id}-{shard.index}-")
        self._making += 1
        return CollectedShard(self, (job.job_id, shard.index), part_key, maker, spill)

    def _maker(self, job: JobRecord) -> RowMaker | None:
        if job.job_id not in self._makers:
            assert job.pipeline is not None
            try:
                self._makers[job.job_id] = RowMaker(pipeline_at(self._store, job.pipeline))
            except Exception:  # the outputs will say what is wrong with it  # noqa: BLE001
                logger.info("records outputs: pipeline not read while collecting", extra={"job_id": job.job_id})
                self._makers[job.job_id] = None
        return self._makers[job.job_id]

    def room(self) -> int:
        """Bytes of /tmp a shard's tails may still take."""
        return self._room - sum(spill.size for _part, spill in self._kept.values())

    def keep(self, shard: tuple[str, int], part_key: str, spill: _Spill) -> None:
        self._kept[shard] = (part_key, spill)

    def release(self) -> None:
        self._making -= 1

    def take(self, job_id: str, index: int, keys: tuple[str, ...]) -> _Spill | None:
        """The tails of shard `index` if made while it was collected and its results are
        exactly that part (`keys`, the parts of its family); else None, and any made freed."""
        kept = self._kept.pop((job_id, index), None)
        if kept is None:
            return None
        self._making -= 1  # the caller closes it
        part_key, spill = kept
        if keys == (part_key,):
            return spill
        spill.close()
        return None

    def close(self) -> None:
        for _part, spill in self._kept.values():
            spill.close()
        self._making -= len(self._kept)
        self._kept.clear()


class CollectedShard:
    """The tails of one shard's rows, made as a collection streams its final results."""

    def __init__(
        self, owner: CollectedResults, shard: tuple[str, int], part_key: str, maker: RowMaker, spill: _Spill
    ) -> None:
        self._owner = owner
        self._shard = shard
        self._part_key = part_key
        self._maker = maker
        self._spill: _Spill | None = spill
        self._room = owner.room()

    def add(self, result: Mapping[str, Any]) -> None:
        """One final result, parsed (never raises: a surprise drops the shard's tails)."""
        spill = self._spill
        if spill is None:
            return
        try:
            custom_id, tail = self._maker.tail(result)
            csv_tail, jsonl_tail = tail_cells(tail)
            spill.add(custom_id, tail["status"], csv_tail, jsonl_tail, self._part_key)
            if spill.held > self._room:
                raise SpillSpaceError(f"more than the {self._room:,} bytes of /tmp this tick's tails may take")
        except Exception as exc:  # noqa: BLE001 - the outputs redo it from S3 and say what is wrong
            self.drop(f"{type(exc).__name__}: {exc}")

    def keep(self) -> None:
        """The shard is collected: its tails wait for the job's outputs."""
        spill = self._spill
        if spill is None:
            return
        try:
            spill.ready()
        except Exception as exc:  # noqa: BLE001 - likewise
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        self._owner.keep(self._shard, self._part_key, spill)
        self._spill = None

    def drop(self, why: str | None = None) -> None:
        """Free the tails made (a collection that failed, or did not record its outcome)."""
        spill = self._spill
        if spill is None:
            return
        spill.close()
        self._spill = None
        self._owner.release()
        if why is not None:
            logger.info("records outputs: tails not kept while collecting", extra={"shard": self._shard[1], "why": why})


def _line_bytes_at_most(maker: RowMaker) -> int:
    """About the most bytes a result line of the pipeline holds: its answer at most
    max_tokens tokens of some 6 bytes each, and the line's own keys and usage."""
    return 600 + 6 * maker.pipeline.max_tokens


def _read_rows[T](store: ObjectStore, key: str, read: Callable[[bytes], T]) -> Iterator[T]:
    """`read(line)` of each line of a rows file (parse_row: its RowRef)."""
    try:
        found = store.lines(key)
    except Exception as exc:  # the store's own error (NoSuchKey...) does not name the key
        raise OutputOrderError(f"{key}: cannot be read ({type(exc).__name__}: {exc})") from exc
    for number, line in enumerate(found, start=1):
        if line.strip():
            try:
                yield read(line)
            except ValueError as exc:
                raise OutputOrderError(f"{key} line {number}: {exc}") from exc


class OutputsWriter:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._store = wired.store

    def write(
        self,
        job: JobRecord,
        shards: list[ShardRecord],
        counts: Mapping[str, int],
        collected: CollectedResults | None = None,
    ) -> dict[str, str]:
        """Write the job's outputs (if absent); their keys, as the manifest names them.
        Raises, writing nothing, when the rows do not agree with `counts` and job.rejected.
        `collected`: the tails this tick made of the shards it collected."""
        assert job.pipeline is not None  # only a records-mode job has outputs
        maker = RowMaker(pipeline_at(self._store, job.pipeline))
        keys = outputs_keys(job.job_id)
        statuses: Counter[str] = Counter()
        keep = maker.pipeline.keep_fields
        pipeline = maker.pipeline
        with (
            self._store.writer(keys["csv"], CSV_CONTENT_TYPE, if_absent=True) as table,
            self._store.writer(keys["jsonl"], JSONL_CONTENT_TYPE, if_absent=True) as lines,
        ):
            table.write(csv_line(list(maker.columns)))
            encoded = RowsEncoder()
            sent = self._sent(job, shards, maker, collected)
            for ref, tail in merged_by_row(sent, self._rejected(job)):
                if tail is None:
                    shown = pipeline.custom_id({}, ref.row) if pipeline.id_field is None else None
                    rejection = Rejection(ref.reason or "rejected", ref.custom_id)
                    values = maker.row(ref.fields, rejection, record_id=shown if isinstance(shown, str) else None)
                    statuses[values["status"]] += 1
                    encoded.add(values)
                else:
                    status, csv_tail, jsonl_tail = tail
                    statuses[status] += 1
                    head = {"id": ref.custom_id}
                    for name in keep:
                        head[name] = ref.fields.get(name)
                    encoded.add_joined(head, csv_tail, jsonl_tail)
                if encoded.chars >= _FLUSH_CHARS:
                    _flush(encoded, table, lines)
            _flush(encoded, table, lines)
            problem = count_problem(statuses, counts, job.rejected)
            if problem is not None:
                raise ResultsMismatchError(f"job {job.job_id}: the outputs' rows disagree with its counts: {problem}")
        logger.info("records outputs written", extra={"job_id": job.job_id, "rows": dict(statuses)})
        return keys

    def _sent(
        self, job: JobRecord, shards: list[ShardRecord], maker: RowMaker, collected: CollectedResults | None
    ) -> Iterator[tuple[RowRef, Tail]]:
        """The rows of the requests sent, shard by shard, each with its tail."""
        sizes: dict[str, int] | None = None
        for index, keys in shard_families(shards):
            key = rows_key(job.job_id, index)
            spill = collected.take(job.job_id, index, keys) if collected is not None else None
            if spill is None:
                if sizes is None:
                    sizes = self._part_sizes(job.job_id)
                ids = [custom_id or "" for custom_id in _read_rows(self._store, key, row_id)]
                spilled = sum(sizes.get(part, _GUESSED_LINE_BYTES * len(ids)) for part in keys) * _TAIL_PER_LINE
                spill = _Spill(index, ids, _rows_per_bucket(len(ids), spilled), f"batchdrop-{job.job_id}-{index}-")
                try:
                    self._load(job, spill, keys, maker)
                except BaseException:
                    spill.close()
                    raise
            try:
                tails = spill.in_row_order()
                for ref in _read_rows(self._store, key, parse_row):
                    custom_id, tail = next(tails, (ref.custom_id, None))
                    if custom_id != ref.custom_id:  # the rows file read twice disagrees
                        raise ResultsMismatchError(f"row {ref.row}: placed for {custom_id!r}, not {ref.custom_id!r}")
                    if tail is None:
                        raise ResultsMismatchError(f"shard {index}: no result for {ref.custom_id!r} (row {ref.row})")
                    yield ref, tail
            finally:
                spill.close()

    def _part_sizes(self, job_id: str) -> dict[str, int]:
        """The size of each of the job's result parts, in bytes (one listing)."""
        sizes: dict[str, int] = {}
        for version in self._store.versions(f"results/{job_id}/results-"):
            if version.size is not None:
                sizes[version.key] = max(sizes.get(version.key, 0), version.size)
        return sizes

    def _load(self, job: JobRecord, spill: _Spill, keys: tuple[str, ...], maker: RowMaker) -> None:
        """Stream the shard's result parts, each result made into its row's tail, into its
        spill files; a full /tmp is said as such."""
        try:
            for key in keys:
                for line in self._store.lines(key):
                    if len(line) <= 2 and not line.strip():
                        continue
                    custom_id, tail = maker.tail(line)
                    csv_tail, jsonl_tail = tail_cells(tail)
                    spill.add(custom_id, tail["status"], csv_tail, jsonl_tail, key)
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
            yield from _read_rows(self._store, rejected_key(job.job_id), parse_row)


def _flush(encoded: RowsEncoder, table: Writer, lines: Writer) -> None:
    csv_bytes, jsonl_bytes = encoded.take()
    table.write(csv_bytes)
    lines.write(jsonl_bytes)
