"""Canceling a job on request (`batchdrop cancel JOB_ID`, or an object dropped at
`cancel/<job_id>`): the job is marked, every open batch of it is asked to stop now, and
the checker does the rest on its ticks: it repeats the cancel until the provider shows it,
turns the shards that were never sent into `canceled` results, collects what the batches
did finish, and closes the job CANCELED with its results so far."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from batchdrop.domain.states import OPEN_JOB_STATUSES, JobStatus, ShardState
from batchdrop.errors import ProviderUnavailableError
from batchdrop.observability import logger
from batchdrop.ports import Wiring

CANCEL_PREFIX = "cancel/"
JOB_ID_PATTERN = r"j[0-9a-f]{24}"
_JOB_ID = re.compile(JOB_ID_PATTERN)
_ERRORS_PREFIX = "errors/cancel/"
MAX_KEY_BYTES = 1024  # S3's longest object key, in UTF-8 bytes


@dataclass(frozen=True)
class CancelOutcome:
    job_id: str | None
    status: str  # CANCELING, or why nothing was done: UNKNOWN_JOB, FINISHED, BAD_KEY
    batches_canceled: int = 0


def refusal_key(key: str) -> str:
    """Where the refusal of the cancel object `key` is written: errors/cancel/<its name>.json,
    or, when that would be longer than S3 allows (a name near the limit itself), under the
    SHA-256 of the key; the document inside names the key either way."""
    name = key.removeprefix(CANCEL_PREFIX).replace("/", "_") or "_"
    readable = f"{_ERRORS_PREFIX}{name}.json"
    if len(readable.encode()) <= MAX_KEY_BYTES:
        return readable
    return f"{_ERRORS_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}.json"


def job_id_of(key: str) -> str | None:
    """The job id named by a `cancel/<job_id>` key, or None when it names none."""
    name = key.removeprefix(CANCEL_PREFIX)
    return name if key.startswith(CANCEL_PREFIX) and _JOB_ID.fullmatch(name) else None


class Canceler:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired
        self._state = wired.state

    def cancel_from_key(self, key: str) -> CancelOutcome:
        job_id = job_id_of(key)
        if job_id is None:
            return self._refuse(key, None, "BAD_KEY", f"{key!r} is not cancel/<job_id> (a job id is j + 24 hex digits)")
        return self.cancel(job_id, key)

    def cancel(self, job_id: str, key: str | None = None) -> CancelOutcome:
        job = self._state.request_cancel(job_id, self._wired.stamp())
        if job is None:
            return self._refuse(key, job_id, "UNKNOWN_JOB", f"no job {job_id} in this stack")
        if job.status not in OPEN_JOB_STATUSES:
            logger.info("cancel of a job that has finished: nothing to do", extra={"job_id": job_id})
            return CancelOutcome(job_id, "FINISHED")
        if job.status is JobStatus.AWAITING_APPROVAL:
            # Its cancel recorded, it is released to SUBMITTING as a canceled job: the checker
            # closes its shards unsent, none of them is ever created.
            self._state.release_job(job_id)
            logger.info("job awaiting approval canceled: nothing was sent", extra={"job_id": job_id})
            return CancelOutcome(job_id, "CANCELING")
        canceled = 0
        for shard in self._state.shards(job_id):
            if shard.state is not ShardState.SUBMITTED or shard.batch_id is None:
                continue
            try:
                if self._wired.batches.cancel(shard.batch_id) is not None:
                    canceled += 1
            except ProviderUnavailableError as exc:  # the checker repeats it
                logger.warning("cancel left to the checker", extra={"batch_id": shard.batch_id, "error": str(exc)})
        logger.info("job cancel requested", extra={"job_id": job_id, "batches_canceled": canceled})
        return CancelOutcome(job_id, "CANCELING", canceled)

    def _refuse(self, key: str | None, job_id: str | None, status: str, reason: str) -> CancelOutcome:
        """A cancel that names no job of this stack: said in the log and, for a dropped
        object, beside it under errors/ so the upstream system can read why."""
        logger.error("cancel refused", extra={"key": key, "reason": reason})
        if key is not None:
            self._wired.store.put_json(refusal_key(key), {"key": key, "reason": reason})
        return CancelOutcome(job_id, status)
