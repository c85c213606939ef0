"""A split that continues across invocations, so a file of any size S3 holds is split, however
long that takes: at the speed a split runs (some 36 MB/s), one invocation's 15 minutes read
some 30 GB.

A split running short of time (its invocation has less than `timings.split_reserve` left)
stops at the next shard boundary. What it finished stays as it is from then on: its shards,
recorded as PENDING items of the job (still RECEIVED: no batch is sent before the whole file
is split), the custom_ids it saw first with their line (one object per segment,
work/<job_id>/ids-<start>-<end>.txt), and its rejected lines, in a version of
errors/<job_id>/rejected.jsonl. Then a checkpoint on the job item names all of it: the byte
offset where the next shard starts, the lines read, the counts so far, the next shard's
index, and the deadline of the invocation (its lease). The checkpoint is written only if
the one the segment started from is still there, so it only moves forward: a segment run
twice, at once or after a crash, records nothing twice, and each of its outputs is the same
bytes whichever run wrote it (shards and ids objects are written only if absent; a rejected
version always begins with the checkpointed version's bytes).

The sweep goes on with the next segment once the lease has passed (services/redrive.py),
through Intake.submit: a plain file is read from the offset with a ranged GET; a gzip cannot
be entered part-way, so it is inflated from the start and the bytes before the offset are
skipped unchecked (inflating runs several times faster than the check)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

from batchdrop.domain.estimate import Estimator
from batchdrop.domain.jobs import rejected_key
from batchdrop.domain.lines import SourceLines, UnreadableFileError, line_size
from batchdrop.domain.prices import PriceTable, price_table
from batchdrop.domain.records import SourceRef, SplitCheckpoint
from batchdrop.observability import logger
from batchdrop.ports import ObjectStore, SourceRange, Wiring

if TYPE_CHECKING:
    from batchdrop.services.split import Split

IDS_CONTENT_TYPE = "text/plain"
# An estimate's state is its tallies, its distinct cached prefixes (at most 200,000 of 64
# characters) and its sample (at most 200 lines of 256 KiB): far less than this.
MAX_ESTIMATE_STATE_BYTES = 128 * 1024 * 1024
# The largest file of records taken: records mode renders a file in one invocation (it is
# not split in segments), and at the split's measured rate a larger one could not be.
RECORDS_MAX_BYTES = 25_000_000_000


@dataclass(frozen=True)
class Stop:
    """Where a split stopped: the next segment's first shard begins at byte `offset`,
    after `line` lines."""

    offset: int
    line: int


@dataclass
class Resume:
    """Where a segment starts: the checkpoint it goes on from (none: the file's start), with
    the custom_ids the segments before it saw first (`seen`, in the order they were seen)."""

    checkpoint: SplitCheckpoint | None = None
    seen: dict[str, int] = field(default_factory=dict)  # filled further by the segment itself
    seeded: int = 0  # how many of `seen` the segments before it saw
    # The cost estimate of the lines before it (a fresh one at the file's start; None when a
    # checkpoint has none: the job then goes without an estimate rather than with half of one).
    estimator: Estimator | None = field(default_factory=Estimator)

    @property
    def offset(self) -> int:
        return self.checkpoint.offset if self.checkpoint else 0

    @property
    def line(self) -> int:
        return self.checkpoint.line if self.checkpoint else 0

    @property
    def requested(self) -> int:
        return self.checkpoint.requested if self.checkpoint else 0

    @property
    def rejected(self) -> int:
        return self.checkpoint.rejected if self.checkpoint else 0

    @property
    def next_shard(self) -> int:
        return self.checkpoint.next_shard if self.checkpoint else 0

    def rejected_range(self, bucket: str, job_id: str) -> SourceRange | None:
        """The rejected lines so far: the version of rejected.jsonl the checkpoint names."""
        checkpoint = self.checkpoint
        if checkpoint is None or checkpoint.rejected_version is None:
            return None
        return SourceRange(bucket, rejected_key(job_id), checkpoint.rejected_version, 0, checkpoint.rejected_bytes)

    def open(self, store: ObjectStore, source: SourceRef) -> tuple[SourceLines, Iterator[bytes]]:
        """The source's lines from the offset on: read from there (a ranged GET), or, for a
        gzip, inflated from the start with the lines before the offset skipped."""
        if self.checkpoint is None:
            lines = store.lines(source.key, source.version_id)
            return lines, iter(lines)
        if not self.checkpoint.compressed:
            lines = store.lines(source.key, source.version_id, start=self.offset)
            return lines, iter(lines)
        lines = store.lines(source.key, source.version_id)
        return lines, _skipped(lines, self.offset, source.key)


def _skipped(lines: Iterable[bytes], offset: int, key: str) -> Iterator[bytes]:
    """`lines` less those in their first `offset` bytes, which must end at a line's end."""
    read = 0
    iterator = iter(lines)
    while read < offset:
        line = next(iterator, None)
        if line is None:
            break
        read += line_size(line)
    if read != offset:
        raise UnreadableFileError(f"{key}: the split's checkpoint at byte {offset} is not a line's start in the file")
    return iterator


def resume_from(store: ObjectStore, checkpoint: SplitCheckpoint | None, prices: PriceTable | None = None) -> Resume:
    """The segment that goes on from `checkpoint`, with the custom_ids every segment before
    it saw first, read back from their objects in order, and the estimate of their lines."""
    seen: dict[str, int] = {}
    for key in checkpoint.ids_keys if checkpoint else ():
        for raw in store.lines(key):
            custom_id, _, line = raw.rstrip(b"\n").decode().partition(" ")
            seen[custom_id] = int(line)
    if checkpoint is None or not checkpoint.ids_keys:
        return Resume(checkpoint, seen, len(seen), Estimator(prices=prices or price_table()))
    return Resume(checkpoint, seen, len(seen), _estimator_at(store, checkpoint.ids_keys[-1], prices))


def _estimator_at(store: ObjectStore, ids: str, prices: PriceTable | None) -> Estimator | None:
    """The estimate as the segment that wrote `ids` left it (None when it left none)."""
    key = estimate_state_key(ids)
    found = store.read_small(key, max_bytes=MAX_ESTIMATE_STATE_BYTES)
    if found is None or found.data is None:
        logger.warning("no estimate state beside the checkpoint: the job goes without an estimate", extra={"key": key})
        return None
    try:
        return Estimator.restored(json.loads(found.data), prices or price_table())
    except ValueError:  # kept by another version of batchdrop (a deploy between two segments)
        logger.warning("an estimate state of another version: the job goes without an estimate", extra={"key": key})
        return None


def estimate_state_key(ids: str) -> str:
    """Where the estimate of the lines up to a segment's end is kept: beside its ids object,
    work/<job_id>/estimate-<start>-<end>.json."""
    folder, _, name = ids.rpartition("/")
    return f"{folder}/estimate-{name.removeprefix('ids-').removesuffix('.txt')}.json"


def ids_key(job_id: str, start: int, end: int) -> str:
    """The custom_ids first seen in the source's bytes [start, end): the same bytes whichever
    run of that segment writes them."""
    return f"work/{job_id}/ids-{start:015d}-{end:015d}.txt"


def _write_ids(store: ObjectStore, key: str, seen: Iterable[tuple[str, int]]) -> None:
    """One `custom_id line` pair a line (a custom_id holds no space), written only if absent."""
    with store.writer(key, IDS_CONTENT_TYPE, if_absent=True) as writer:
        for custom_id, line in seen:
            writer.write(f"{custom_id} {line}\n".encode())


def record_stop(wired: Wiring, job_id: str, split: Split, resume: Resume, lease: str) -> bool:
    """Keep what a segment that stopped finished, then its checkpoint: the ids it saw first,
    its shards (as PENDING items, each only if absent), then the checkpoint, only if the
    one it started from is still there. False when another run moved it first."""
    stop = split.stopped
    if stop is None:
        raise ValueError(f"job {job_id}: the split did not stop, there is no checkpoint to record")
    key = ids_key(job_id, resume.offset, stop.offset)
    _write_ids(wired.store, key, islice(split.seen.items(), resume.seeded, None))
    if split.estimator is not None:  # the same lines give the same state, whichever run writes it
        wired.store.put_json(estimate_state_key(key), split.estimator.snapshot(), if_absent=True)
    for plan in split.shards:
        wired.state.add_missing_shard(job_id, plan, wired.max_attempts)
    checkpoint = SplitCheckpoint(
        offset=stop.offset,
        line=stop.line,
        requested=split.requested,
        rejected=split.rejected,
        next_shard=resume.next_shard + len(split.shards),
        compressed=split.compressed,
        ids_keys=(*(resume.checkpoint.ids_keys if resume.checkpoint else ()), key),
        rejected_version=split.rejected_version,
        rejected_bytes=split.rejected_bytes,
    )
    previous = resume.offset if resume.checkpoint else None
    saved = wired.state.save_checkpoint(job_id, checkpoint, previous=previous, lease=lease)
    extra = {"offset": stop.offset, "line": stop.line, "shards": checkpoint.next_shard, "lease": lease}
    if saved:
        logger.warning("SplitSegment: the split ran short of time and stopped; the sweep goes on", extra=extra)
    else:
        logger.info("another run of this segment moved the checkpoint first", extra=extra)
    return saved


def records_too_large(size: int | None) -> str | None:
    """Why a file of records of `size` bytes (by its event) is refused unread, if it is."""
    if size is None or size <= RECORDS_MAX_BYTES:
        return None
    limit = RECORDS_MAX_BYTES
    return f"the file is {size} bytes, over the {limit} bytes a file of records may have (it is read in one go)"


def running_short(seconds_left: Callable[[], float] | None, reserve: float) -> Callable[[], bool]:
    """Whether a split should stop at the next shard boundary: less than `reserve` left."""
    if seconds_left is None:
        return lambda: False
    return lambda: seconds_left() < reserve
