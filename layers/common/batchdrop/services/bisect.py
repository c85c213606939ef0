"""Finding the requests a refused create body holds, by halving it: a body the API refused
for good (400, 413, 422) and that carries more than one request goes on as two new shards,
each with half of its requests; a half refused again is halved again, down to single
requests. A refused create makes no batch and costs nothing, so only the requests the API
refuses on their own end `errored`, and the others run.

Each half is a shard like any other: its body is written to work/ first (only if absent, so
a second run finds the same bytes), then one transaction records both halves and marks the
refused shard SPLIT; their creates then go through the create lease and intent protocol.
A crash before the transaction leaves the shard REFUSED and the next tick writes (finds)
the same bodies and records them; after it, the halves are PENDING shards."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from batchdrop.domain.jobs import IdsDigest
from batchdrop.domain.records import ShardPlan, ShardRecord
from batchdrop.domain.shards import SHARD_CONTENT_TYPE, create_body_bytes, request_lines
from batchdrop.errors import ResultsMismatchError
from batchdrop.observability import logger
from batchdrop.ports import Wiring, Writer

# A refusal's message may quote the body it refused; what is kept of it is bounded.
MAX_REASON_CHARS = 300
# The most refused shards of one job that are halved. One bad request in a full shard of
# 100,000 is found in 17 halvings, a few bad ones in a few times that; a refusal that has
# nothing to do with any one request (every line names a model that does not exist, say)
# would otherwise take 2n - 1 refused creates for n requests, each counted against the
# API's request rate. Past this many, a refused shard ends as it did before halving: each
# of its requests errored with the refusal's reason.
MAX_SPLITS_PER_JOB = 64
_OWN_LOCATION = re.compile(r"\brequests\.0\.")


def half_key(job_id: str, index: int, attempt: int, half: int) -> str:
    """Where half `half` (0 or 1) of shard `index`'s refused attempt is written: named after
    the refused shard, so every run that splits it writes (or finds) the same bytes."""
    return f"work/{job_id}/shard-{index:05d}-a{attempt}-half{half}.jsonl"


def refusal_reason(reason: str, *, single: bool) -> str:
    """A refusal's reason as a request's errored line or the manifest shows it: for a body of
    one request, the API's location of that request (`requests.0.`) is dropped, since the
    line is that request's own; any reason is cut to MAX_REASON_CHARS, so a message quoting
    a body never carries more than a bounded piece of it."""
    if single:
        reason = _OWN_LOCATION.sub("", reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return reason


@dataclass
class _Half:
    index: int
    key: str
    wanted: int
    requests: int = 0
    line_bytes: int = 0
    digest: IdsDigest = field(default_factory=IdsDigest)

    def add(self, body: Writer, request: bytes) -> None:
        body.write(request)
        body.write(b"\n")
        self.requests += 1
        self.line_bytes += len(request)
        self.digest.add(str(json.loads(request)["custom_id"]))


class ShardBisector:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired

    def split(self, shard: ShardRecord) -> bool:
        """Record `shard`'s refused attempt as two new shards of half its requests each, the
        first half getting the first requests; True if this call recorded them. The halves
        take the next two indexes of the job as it is read now."""
        job = self._wired.state.get_job(shard.job_id)
        if job is None:
            return False
        first = shard.attempt_requests - shard.attempt_requests // 2
        halves = [
            _Half(job.shard_count, half_key(shard.job_id, shard.index, shard.attempt, 0), first),
            _Half(
                job.shard_count + 1,
                half_key(shard.job_id, shard.index, shard.attempt, 1),
                shard.attempt_requests - first,
            ),
        ]
        plans = self._write(shard, halves)
        entry: dict[str, Any] = {
            "attempt": shard.attempt,
            "batch_id": None,
            "requests": shard.attempt_requests,
            "counts": {},
            "retried": shard.attempt_requests,  # every request goes on, in one of the halves
            "refused": refusal_reason(shard.reason or "", single=False),
            "split_into": [plan.index for plan in plans],
        }
        if not self._wired.state.split_refused(shard, job.shard_count, plans, entry):
            return False
        logger.warning(
            "a refused shard was split in two to find the requests the API refuses",
            extra={"job_id": shard.job_id, "shard": shard.index, "halves": entry["split_into"]},
        )
        return True

    def _write(self, shard: ShardRecord, halves: list[_Half]) -> list[ShardPlan]:
        """Both halves' bodies, streamed from the refused attempt's body (the version recorded)."""
        store = self._wired.store
        with (
            store.writer(halves[0].key, SHARD_CONTENT_TYPE, if_absent=True) as first,
            store.writer(halves[1].key, SHARD_CONTENT_TYPE, if_absent=True) as second,
        ):
            for request in request_lines(store.lines(shard.key, shard.version_id)):
                if halves[0].requests < halves[0].wanted:
                    halves[0].add(first, request)
                else:
                    halves[1].add(second, request)
            if halves[1].requests != halves[1].wanted:
                raise ResultsMismatchError(
                    f"{shard.key}: {halves[0].requests + halves[1].requests} requests, not {shard.attempt_requests}"
                )
        versions = (
            first.version_id or store.version_of(halves[0].key),
            second.version_id or store.version_of(halves[1].key),
        )
        return [
            ShardPlan(
                index=half.index,
                key=half.key,
                requests=half.requests,
                size=create_body_bytes(half.requests, half.line_bytes),
                ids_digest=half.digest.hex,
                version_id=version,
            )
            for half, version in zip(halves, versions, strict=True)
        ]
