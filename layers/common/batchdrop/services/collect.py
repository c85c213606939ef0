"""Collecting one ended batch: its results streamed into results/, each request's outcome
judged final or worth another attempt, and the shard moved on (COLLECTED, or PENDING for
its next attempt with a body of the requests to send again). Decided by the attempt alone,
so a second run over the same results (after a crash, or by a second checker) writes the
same part and the same retry body."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchdrop.domain.jobs import IdsDigest, is_retryable, results_part_key
from batchdrop.domain.records import NextAttempt, Outcome, ShardRecord
from batchdrop.domain.shards import SHARD_CONTENT_TYPE, create_body_bytes, request_lines, shard_key
from batchdrop.domain.states import ShardState
from batchdrop.domain.usage import Usage
from batchdrop.errors import ResultsMismatchError
from batchdrop.observability import logger
from batchdrop.ports import Wiring, Writer

if TYPE_CHECKING:  # records mode's outputs: imported by a tick that has a records job to finish
    from batchdrop.services.outputs import CollectedResults, CollectedShard

RESULTS_CONTENT_TYPE = "application/x-jsonl"


@dataclass
class _Tally:
    """What one batch's results held."""

    raw: Counter[str] = field(default_factory=Counter)  # every result, by type
    finals: Counter[str] = field(default_factory=Counter)  # results kept as final, by type
    usage: dict[str, Usage] = field(default_factory=dict)  # the shard's, these results added
    retry_ids: set[str] = field(default_factory=set)
    digest: IdsDigest = field(default_factory=IdsDigest)

    @property
    def results(self) -> int:
        return sum(self.raw.values())


class Collector:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired

    def collect(
        self, shard: ShardRecord, batch: Mapping[str, Any], collected: CollectedResults | None = None
    ) -> int | None:
        """Collect the ended `batch` of `shard` (as read just now). None when it was not
        this shard's batch to collect any more; else the requests scheduled for another
        attempt (0: the shard is COLLECTED). `collected`: where a records job's rows are made
        from the final results as they stream in, for a job this tick may finish."""
        if shard.state is not ShardState.SUBMITTED or shard.batch_id != batch["id"]:
            return None
        part_key = results_part_key(shard.job_id, shard.index, shard.attempt)
        sink = collected.sink(shard, part_key) if collected is not None else None
        try:
            moved = self._collect(shard, batch, part_key, sink)
            if moved == 0 and sink is not None:
                sink.keep()
            return moved
        finally:
            if sink is not None:
                sink.drop()  # unless kept: a retry scheduled, or the outcome not recorded

    def _collect(
        self, shard: ShardRecord, batch: Mapping[str, Any], part_key: str, sink: CollectedShard | None
    ) -> int | None:
        tally = self._stream(shard, batch, part_key, sink)
        entry = {
            "attempt": shard.attempt,
            "batch_id": batch["id"],
            "creates": shard.creates_sent,  # creates sent before one was known to exist
            "requests": shard.attempt_requests,
            "counts": dict(tally.raw),
            "retried": len(tally.retry_ids),
            "ended_at": str(batch.get("ended_at") or self._wired.stamp()),
        }
        counts = Counter(shard.counts)
        counts.update(tally.finals)
        outcome = Outcome(
            counts=dict(counts),
            usage={model: usage.as_dict() for model, usage in tally.usage.items()},
            result_keys=(*shard.result_keys, *([part_key] if tally.finals else [])),
            attempts_log=(*shard.attempts_log, entry),
            ended_at=entry["ended_at"],
        )
        if tally.retry_ids:
            return len(tally.retry_ids) if self._schedule_retry(shard, outcome, tally) else None
        if not self._wired.state.mark_collected(shard, outcome):
            return None
        logger.info("batch results collected", extra={"counts": dict(tally.raw), "part": part_key})
        return 0

    def _stream(
        self, shard: ShardRecord, batch: Mapping[str, Any], part_key: str, sink: CollectedShard | None
    ) -> _Tally:
        """The batch's results, final ones written to `part_key` (if absent: a run before this
        one wrote the same outcomes) and handed to `sink`, counted and checked against the shard."""
        from batchdrop.domain import quick_json  # jiter: an idle tick never loads it

        may_retry = shard.attempt < shard.max_attempts
        tally = _Tally(usage={model: Usage(**figures) for model, figures in shard.usage.items()})
        part: Writer | None = None  # opened on the first final outcome
        try:
            for line in self._wired.batches.result_lines(batch):
                record = quick_json.parse(line, json.loads)
                result = record["result"]
                tally.raw[result["type"]] += 1
                tally.digest.add(str(record["custom_id"]))
                if may_retry and (is_retryable(result) or (result["type"] == "canceled" and shard.overdue_at)):
                    tally.retry_ids.add(str(record["custom_id"]))
                    continue
                if part is None:
                    part = self._wired.store.writer(part_key, RESULTS_CONTENT_TYPE, if_absent=True)
                part.write(line + b"\n")
                if sink is not None:
                    sink.add(record)
                tally.finals[result["type"]] += 1
                if result["type"] == "succeeded":
                    message = result["message"]
                    usage = tally.usage.get(message["model"])
                    if usage is None:
                        usage = tally.usage[message["model"]] = Usage()
                    usage.add_message_usage(message.get("usage") or {})
            _check(shard, batch["id"], tally)
        except BaseException:
            if part is not None:
                part.abort()
            raise
        if part is not None and not part.close() and sink is not None:
            # A run before this one wrote the part: the same outcomes, kept; the outputs read them.
            sink.drop()
        return tally

    def _schedule_retry(self, shard: ShardRecord, outcome: Outcome, tally: _Tally) -> bool:
        attempt = shard.attempt + 1
        retry_key = shard_key(shard.job_id, shard.index, attempt)
        size, version = self._write_retry_body(shard, retry_key, tally.retry_ids)
        digest = IdsDigest()
        for custom_id in tally.retry_ids:
            digest.add(custom_id)
        next_attempt = NextAttempt(attempt, retry_key, len(tally.retry_ids), size, digest.hex, version)
        if not self._wired.state.schedule_retry(shard, outcome, next_attempt):
            return False
        logger.warning(
            "transient failures: requests scheduled for another attempt",
            extra={"attempt": attempt, "requests": len(tally.retry_ids), "counts": dict(tally.raw)},
        )
        return True

    def _write_retry_body(self, shard: ShardRecord, retry_key: str, wanted: set[str]) -> tuple[int, str]:
        """The requests of the shard's body (the version recorded) whose custom_id is in
        `wanted`, in their order, one per line at `retry_key`, streamed; the size of their
        create body and the version written (a run before this one's, if it wrote it first).
        Every wanted request must be found."""
        found = line_bytes = 0
        store = self._wired.store
        source_key = shard.key
        with store.writer(retry_key, SHARD_CONTENT_TYPE, if_absent=True) as body:
            for request in request_lines(store.lines(source_key, shard.version_id)):
                if json.loads(request)["custom_id"] in wanted:
                    body.write(request)
                    body.write(b"\n")
                    found += 1
                    line_bytes += len(request)
            if found != len(wanted):
                raise ResultsMismatchError(f"{source_key} holds {found} of the {len(wanted)} requests to retry")
        return create_body_bytes(found, line_bytes), body.version_id or store.version_of(retry_key)


def _check(shard: ShardRecord, batch_id: str, tally: _Tally) -> None:
    """Results that do not add up are never recorded: a job must never close on them."""
    if tally.results != shard.attempt_requests or len(tally.retry_ids) != tally.results - sum(tally.finals.values()):
        raise ResultsMismatchError(
            f"batch {batch_id} returned {tally.results} results for {shard.attempt_requests} requests"
        )
    if shard.ids_digest and tally.digest.hex != shard.ids_digest:
        # The right count, the wrong requests: a batch that is not this shard's.
        raise ResultsMismatchError(f"batch {batch_id} returned results for other requests than shard {shard.index}")
