"""Closing shards whose requests will never be sent, so each still gets one result line:
`canceled` for a canceled job's shards that had no batch, `errored` for a request the API
refused for good on its own. The shard is claimed first (CANCELING, REFUSED), so no create
can take it while its lines are written. A refused body of more than one request is not
closed but halved (services/bisect.py), so only the requests refused on their own end
`errored`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from batchdrop.domain.jobs import canceled_result_line, refused_result_line, results_part_key
from batchdrop.domain.records import JobRecord, Outcome, ShardRecord
from batchdrop.domain.shards import request_lines
from batchdrop.domain.states import ShardState
from batchdrop.errors import ResultsMismatchError
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services import bisect
from batchdrop.services.bisect import ShardBisector, refusal_reason

_CANCELED_REASON = "the job was canceled before this shard was sent"


class UnsentCloser:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._bisector = ShardBisector(wired)

    def close_unsent(self, job: JobRecord, shards: list[ShardRecord]) -> bool:
        """Close what is unsent among the job's `shards`; True if any moved."""
        moved = False
        splits = sum(shard.state is ShardState.SPLIT for shard in shards)
        for shard in shards:
            claimed = shard
            if shard.state is ShardState.PENDING and job.cancel_requested:
                if not self._wired.state.cancel_unsent(shard, _CANCELED_REASON):
                    continue
                claimed = replace(shard, state=ShardState.CANCELING)
            if claimed.state is ShardState.CANCELING:
                self._write(claimed, "canceled", lambda custom_id, _reason: canceled_result_line(custom_id))
                moved = True
            elif claimed.state is ShardState.REFUSED and claimed.attempt_requests > 1 and self._may_split(job, splits):
                split = self._bisector.split(claimed)
                splits += split
                moved = split or moved
            elif claimed.state is ShardState.REFUSED:
                self._write(claimed, "errored", refused_result_line)
                moved = True
        return moved

    @staticmethod
    def _may_split(job: JobRecord, splits: int) -> bool:
        """Whether another refused shard of `job` may be halved (bisect.MAX_SPLITS_PER_JOB)."""
        if splits < bisect.MAX_SPLITS_PER_JOB:
            return True
        logger.warning(
            "a refused shard is not halved: the job has been split as often as allowed",
            extra={"job_id": job.job_id, "splits": splits},
        )
        return False

    def _write(self, shard: ShardRecord, outcome: str, line_for: Callable[[str, str], bytes]) -> None:
        part_key = results_part_key(shard.job_id, shard.index, shard.attempt)
        reason = shard.reason or ""
        if shard.state is ShardState.REFUSED:
            reason = refusal_reason(reason, single=True)
        store = self._wired.store
        with store.writer(part_key, "application/x-jsonl", if_absent=True) as part:
            requests = 0
            for request in request_lines(store.lines(shard.key, shard.version_id)):
                part.write(line_for(str(json.loads(request)["custom_id"]), reason) + b"\n")
                requests += 1
            if requests != shard.attempt_requests:
                raise ResultsMismatchError(
                    f"shard {shard.index} of {shard.job_id}: {requests} requests, not {shard.attempt_requests}"
                )
        counts = Counter(shard.counts)
        counts[outcome] += requests
        entry: dict[str, Any] = {
            "attempt": shard.attempt,
            "batch_id": None,
            "requests": requests,
            "counts": {outcome: requests},
        }
        if shard.state is ShardState.REFUSED:
            entry["refused"] = reason
        done = Outcome(
            counts=dict(counts),
            result_keys=(*shard.result_keys, part_key),
            attempts_log=(*shard.attempts_log, entry),
        )
        if self._wired.state.mark_collected(shard, done):
            logger.info(
                "requests closed unsent", extra={"job_id": shard.job_id, "shard": shard.index, "outcome": outcome}
            )
