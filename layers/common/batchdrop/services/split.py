"""The streaming split of one uploaded object version: every line read once; rejected lines
to errors/<job_id>/rejected.jsonl, valid ones into shards in work/<job_id>/, each within
the API's limits. A shard whose lines are the file's own bytes, one after another, is
copied by S3 from the file rather than uploaded; a file that may be one clean shard is
copied whole while it is read."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchdrop.domain.estimate import Estimator
from batchdrop.domain.jobs import IdsDigest, id_hash, rejected_key, rejected_record
from batchdrop.domain.lines import line_size
from batchdrop.domain.prices import price_table
from batchdrop.domain.records import ShardPlan, SourceRef
from batchdrop.domain.requests import RejectedLine, ValidLine, check_lines
from batchdrop.domain.shards import (
    SHARD_CONTENT_TYPE,
    assign_shards,
    create_body_bytes,
    shard_key,
    whole_copy_key,
)
from batchdrop.observability import logger
from batchdrop.ports import ObjectStore, SourceRange, Wiring, Writer
from batchdrop.services.segments import Resume, Stop

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

_NEWLINE = ord("\n")


@dataclass
class Split:
    shards: list[ShardPlan] = field(default_factory=list)  # this segment's (all of them, in one go)
    requested: int = 0  # valid lines (of the whole file so far, when resumed)
    rejected: int = 0  # lines written to errors/ (likewise)
    # Where a split that ran short of time stopped (services/segments.py), and what the
    # next segment needs from this one: the custom_ids seen so far with their first line,
    # whether the source is gzip, and the version of rejected.jsonl that holds its lines.
    stopped: Stop | None = None
    compressed: bool = False
    seen: dict[str, int] = field(default_factory=dict)
    rejected_version: str | None = None
    rejected_bytes: int = 0
    # The cost estimate of every request in the shards so far (None: the job goes without).
    estimator: Estimator | None = None


def _never() -> bool:
    return False


def split_object(
    wired: Wiring,
    job_id: str,
    source: SourceRef,
    size: int | None = None,
    *,
    resume: Resume | None = None,
    stop_now: Callable[[], bool] = _never,
    while_closing: Callable[[Split], object] | None = None,
) -> Split:
    """Stream the object once: rejected lines to errors/, valid ones into shards. A shard
    that ends before the object does is finished in the background (S3 copying a range, or
    the last parts going up) while the next one fills; all are done before this returns.
    `size`, the object's size when known, lets a file that may be one clean shard be copied
    whole by S3 meanwhile (_EarlyCopy). From `resume` on, when given; at the first shard
    boundary where `stop_now()` holds, the split stops there (`Split.stopped`).

    `while_closing(split)`, when given, runs once every line is read and some are valid, on
    a thread of its own while the last shard closes (mostly waiting on S3 to finish a copy):
    the submit function counts its estimate there. Its counts (requested, rejected, the
    estimator's) are final then; its shards are not yet."""
    from concurrent.futures import ThreadPoolExecutor  # not at import: a cold start does not need it

    start = resume or Resume(estimator=Estimator(prices=wired.prices or price_table()))
    split = Split(requested=start.requested, rejected=start.rejected, seen=start.seen, estimator=start.estimator)
    estimator = split.estimator
    rejects = _RejectSink(wired.store, rejected_key(job_id), source.key, start.rejected_range(source.bucket, job_id))
    lines, raw_lines = start.open(wired.store, source)
    reader = _LineReader(raw_lines, start.offset)
    may_copy_early = not start.offset and wired.early_copy_bytes <= (size or 0) <= wired.limits.max_bytes
    shard: ShardOut | None = None
    closing: list[Future[ShardPlan]] = []
    early: _EarlyCopy | None = None
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-close") as closer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="early-copy") as copier,
    ):
        try:
            checked = check_lines(reader, first_seen=split.seen, first_line=start.line + 1)
            for index, line in _numbered(assign_shards(_valid(checked, split, rejects), wired.limits), start):
                # A gzip object's line offsets are not its bytes: its shards are always written.
                copyable = lines.compressed is False
                if shard is None or index != shard.index:
                    if shard is not None:
                        closing.append(closer.submit(shard.close, whole=False))
                        if stop_now():  # at a shard boundary: this line begins the next segment
                            split.stopped, shard = _stopped_before(line, reader, split), None
                            break
                    # If absent: a duplicate invocation splitting at the same time (or a
                    # resumed one) writes the same bytes; the first complete copy stays.
                    shard = ShardOut(wired.store, source, index, shard_key(job_id, index), copyable=copyable)
                hashed = id_hash(line.custom_id)  # once, for the shard's ids digest and the sample
                shard.add(line, reader.start, reader.last, hashed)
                if estimator is not None:
                    model = line.model or ""
                    estimator.add_line(line.custom_id, line.body, model, line.max_tokens, hashed, line.cache_marked)
                if may_copy_early:  # the first valid line only
                    may_copy_early = False
                    if copyable and shard.spans(0, reader.end):
                        early = _EarlyCopy(wired.store, source, whole_copy_key(job_id), copier)
            if shard is None:
                last = None
            elif while_closing is None:
                last = _close_last(shard, reader, early)
            else:
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="while-closing") as aside:
                    # In this invocation's context (contextvars), as its logging reads it.
                    beside = aside.submit(contextvars.copy_context().run, while_closing, split)
                    last = _close_last(shard, reader, early)
                    shard = None  # closed: a failure of while_closing must not abort it
                    beside.result()
            shard = None
            split.shards = [done.result() for done in closing] + ([last] if last else [])
            split.rejected_version, split.rejected_bytes = rejects.close()
            split.compressed = bool(lines.compressed)
        except BaseException:
            if shard is not None:
                shard.abort()
            rejects.abort()
            raise
    return split


def _numbered(shards: Iterator[tuple[int, ValidLine]], start: Resume) -> Iterator[tuple[int, ValidLine]]:
    """The shards a resumed split makes, numbered on from the shards made before it."""
    first = start.next_shard
    if not first:  # a split from the start: the shards as they are, no layer more per line
        return shards
    return ((first + index, line) for index, line in shards)


def _stopped_before(line: ValidLine, reader: _LineReader, split: Split) -> Stop:
    """Where the next segment starts: at `line`, the first of a shard not begun. It was
    counted and its custom_id noted as it was read: both are the next segment's."""
    split.requested -= 1
    del split.seen[line.custom_id]
    return Stop(offset=reader.start, line=line.line - 1)


def _valid(lines: Iterator[ValidLine | RejectedLine], split: Split, rejects: _RejectSink) -> Iterator[ValidLine]:
    for line in lines:
        if isinstance(line, RejectedLine):
            split.rejected += 1
            rejects.write(line)
        else:
            split.requested += 1
            yield line


def _close_last(shard: ShardOut, reader: _LineReader, early: _EarlyCopy | None) -> ShardPlan:
    """The last shard: the early copy, when the file is this one clean shard and S3 made it."""
    whole = shard.spans(0, reader.end)
    if early is not None and whole:
        copied = early.version()
        if copied is not None:
            return shard.plan(early.key, copied)
    # An early copy not used is left to expire with work/ (no function deletes an object).
    return shard.close(whole=whole)


class _RejectSink:
    """errors/<job_id>/rejected.jsonl, opened only when a first line is rejected. A resumed
    split writes a new version that begins with the bytes of the version its checkpoint
    names (`before`), so a segment run again after a crash writes no line twice."""

    def __init__(self, store: ObjectStore, key: str, source_key: str, before: SourceRange | None = None) -> None:
        self._store = store
        self._key = key
        self._source_key = source_key
        self._before = before
        self._writer: Writer | None = None

    def write(self, rejected: RejectedLine) -> None:
        if self._writer is None:
            self._writer = self._store.writer(self._key, "application/x-jsonl")
            if self._before is not None and self._before.size:
                self._writer.copy_from(self._before)
        self._writer.write(rejected_record(rejected, self._source_key))

    def close(self) -> tuple[str | None, int]:
        """The version that holds every rejected line so far, and its size."""
        if self._writer is not None:
            self._writer.close()
            return self._writer.version_id, self._writer.size
        if self._before is not None:
            return self._before.version_id, self._before.size
        return None, 0

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


class _LineReader:
    """The source's lines, passed through, with where the last one read lies in the object
    (`offset`: where the first of them begins)."""

    def __init__(self, lines: Iterable[bytes], offset: int = 0) -> None:
        self._lines = lines
        self.start = offset  # offset of the last line read
        self.end = offset  # offset after it: the bytes read so far
        self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._lines:
            self.start = self.end
            self.end += line_size(raw)
            self.last = raw
            yield raw


class ShardOut:
    """One shard as the split makes it, in JSON Lines. While its lines are the source's own
    bytes, one after another, it is only a range of the source, which S3 copies when the shard
    ends: the Lambda never uploads it. The first line that is not (a rejected or blank line
    before it, `\\r\\n`, a BOM, a gzip source) turns it into a written object that begins with
    the range so far (copied by S3 too when it is a part's size or more)."""

    def __init__(self, store: ObjectStore, source: SourceRef, index: int, key: str, *, copyable: bool) -> None:
        self._store = store
        self._source = source
        self.index = index
        self.key = key
        self._copyable = copyable
        # [_first, _end) of the source, while the shard is a range of it (_first None: empty).
        self._first: int | None = None
        self._end = 0
        self._writer: Writer | None = None
        self._requests = 0
        self._line_bytes = 0
        self._digest = IdsDigest()

    def add(self, line: ValidLine, start: int, raw: bytes, hashed: bytes | None = None) -> None:
        """Add a valid line, read from the source's bytes [start, start + len(raw)); `hashed`:
        its custom_id's id_hash, when the caller has it."""
        body = line.body
        size = len(body)
        self._requests += 1
        self._line_bytes += size
        self._digest.add_hash(id_hash(line.custom_id) if hashed is None else hashed)
        if self._writer is None:
            # The line as the source holds it: its body and one \n, or no \n at the end of the file.
            taken = len(raw)
            exact = taken == size or (taken == size + 1 and raw[-1] == _NEWLINE)
            if exact and self._copyable and (self._first is None or self._end == start):
                if self._first is None:
                    self._first = start
                self._end = start + taken
                return
            self._writer = self._store.writer(self.key, SHARD_CONTENT_TYPE, if_absent=True)
            if self._first is not None:
                self._writer.copy_from(self._source_range(self._first, self._end))
                self._first = None
        self._writer.write(body)
        self._writer.write(b"\n")

    def spans(self, start: int, end: int) -> bool:
        """Whether the shard is still exactly the source's bytes [start, end)."""
        return self._writer is None and self._first == start and self._end == end

    def close(self, *, whole: bool) -> ShardPlan:
        """Finish the object (`whole`: the shard is the whole source object); its plan, with
        the version written. When an earlier or concurrent run of the job wrote it first
        (the same bytes: the write is if-absent), that run's version is the one recorded."""
        version: str | None = None
        if self._writer is not None:
            self._writer.close()
            version = self._writer.version_id
        elif self._first is not None:
            version = self._store.copy(
                self._source_range(self._first, self._end), self.key, SHARD_CONTENT_TYPE, whole=whole, if_absent=True
            )
        return self.plan(self.key, version or self._store.version_of(self.key))

    def plan(self, key: str, version_id: str) -> ShardPlan:
        """The shard as recorded, kept at `key` (its own, or a copy of the same bytes) in
        the version `version_id`: the one every create of it reads."""
        size = create_body_bytes(self._requests, self._line_bytes)
        return ShardPlan(self.index, key, self._requests, size, self._digest.hex, version_id)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()

    def _source_range(self, start: int, end: int) -> SourceRange:
        return SourceRange(self._source.bucket, self._source.key, self._source.version_id, start, end)


class _EarlyCopy:
    """S3 copying the whole source version to work/ while the function reads and checks it.
    A file that is one clean shard (the common large upload) is then ready as its shard when
    the check ends, instead of being copied after it: the copy overlaps the reading.

    Begun only once the first line is exact, for a file that may be one shard. Whatever the
    check finds, the copy is the version's own bytes, so a copy an earlier or concurrent run
    of the job made (the write is if-absent) is as good as this one's. A copy that is not
    used (the file was not one clean shard) is left to expire with work/: no function may
    delete an object."""

    def __init__(self, store: ObjectStore, source: SourceRef, key: str, pool: Executor) -> None:
        self.key = key
        self._store = store
        whole = SourceRange(source.bucket, source.key, source.version_id, 0, 0)
        self._copying = pool.submit(store.copy, whole, key, SHARD_CONTENT_TYPE, whole=True, if_absent=True)

    def version(self) -> str | None:
        """Wait for the copy: the version of the key that holds the whole source version
        (this copy's, or an earlier run's that got there first), None if it failed."""
        try:
            return self._copying.result() or self._store.version_of(self.key)
        except Exception:  # the shard is then copied at the end, as without an early copy  # noqa: BLE001
            logger.warning("the early copy of the file failed: its shard is copied now", exc_info=True)
            return None
