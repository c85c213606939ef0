"""Approving a job that waits over its budget (`batchdrop approve JOB_ID`, or an object dropped
at `approve/<job_id>`): the job moves from AWAITING_APPROVAL to SUBMITTING and its shards go out
as any job's do. Dropping it is a cancel (services/cancel.py); the sweep drops one that waited
past its expiry (`expire_unapproved`). An approval that names no waiting job changes nothing and
says why: in the log and, for a dropped object, at errors/approve/<job_id>.json."""

from __future__ import annotations

import re
from dataclasses import dataclass

from batchdrop.domain.budget import APPROVE_PREFIX, DaySpend, budget_key, estimate_max, spend_day
from batchdrop.domain.records import JobRecord
from batchdrop.domain.states import JobStatus
from batchdrop.domain.timings import parse_stamp
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services.cancel import JOB_ID_PATTERN, Canceler
from batchdrop.services.intake import Intake
from batchdrop.services.job_estimate import MAX_ESTIMATE_BYTES, estimate_key, read_json

_JOB_ID = re.compile(JOB_ID_PATTERN)
MAX_BUDGET_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApprovalOutcome:
    job_id: str | None
    status: str  # SUBMITTING (approved, sent), or why not: NOT_AWAITING, UNKNOWN_JOB, BAD_KEY
    submitted: int = 0


class Approver:
    def __init__(self, wired: Wiring, intake: Intake) -> None:
        self._wired = wired
        self._intake = intake

    def approve_from_key(self, key: str) -> ApprovalOutcome:
        name = key.removeprefix(APPROVE_PREFIX)
        if not key.startswith(APPROVE_PREFIX) or not _JOB_ID.fullmatch(name):
            reason = f"{key!r} is not approve/<job_id> (a job id is j + 24 hex digits)"
            return self._refuse(key, None, "BAD_KEY", reason)
        return self.approve(name, key)

    def approve(self, job_id: str, key: str | None = None) -> ApprovalOutcome:
        job = self._wired.state.get_job(job_id)
        if job is None:
            return self._refuse(key, job_id, "UNKNOWN_JOB", f"no job {job_id} in this stack")
        if job.cancel_requested:
            return self._refuse(key, job_id, "NOT_AWAITING", f"job {job_id} was canceled (or its approval expired)")
        held = read_json(self._wired.store, budget_key(job_id), MAX_BUDGET_BYTES)
        if held is None:
            return self._refuse(
                key, job_id, "NOT_AWAITING", f"job {job_id} is {job.status}, not AWAITING_APPROVAL: it was never held"
            )
        if job.status is not JobStatus.AWAITING_APPROVAL and not self._released_by_approval(job):
            return self._refuse(key, job_id, "NOT_AWAITING", f"job {job_id} is {job.status}, not AWAITING_APPROVAL")
        estimate = read_json(self._wired.store, estimate_key(job_id), MAX_ESTIMATE_BYTES)
        spend = DaySpend(spend_day(self._wired.clock.now()), estimate_max(estimate))
        self._wired.state.release_job(job_id, spend)  # False when an earlier approval released it: go on alike
        logger.info("job approved: its batches go out", extra={"job_id": job_id})
        outcome = self._intake.send_pending(job_id)
        return ApprovalOutcome(job_id, str(outcome.status), outcome.submitted)

    @staticmethod
    def _released_by_approval(job: JobRecord) -> bool:
        """A job held, that an approval released already, whose creates a crash may have cut
        short: the same approval delivered again sends what is left (creates stay idempotent)."""
        return job.status is JobStatus.SUBMITTING and not job.cancel_requested

    def _refuse(self, key: str | None, job_id: str | None, status: str, reason: str) -> ApprovalOutcome:
        logger.warning("approval refused", extra={"key": key, "reason": reason})
        if key is not None and job_id is not None:
            self._wired.store.put_json(f"errors/approve/{job_id}.json", {"key": key, "reason": reason})
        return ApprovalOutcome(job_id, status)


def expire_unapproved(wired: Wiring, jobs: list[JobRecord]) -> list[str]:
    """Drop each job of `jobs` that waits for approval past the expiry its budget.json names
    (as a cancel: nothing of it was sent); the ids dropped."""
    now = wired.clock.now()
    expired: list[str] = []
    for job in jobs:
        if job.status is not JobStatus.AWAITING_APPROVAL:
            continue
        held = read_json(wired.store, budget_key(job.job_id), MAX_BUDGET_BYTES)
        if held is None:
            continue  # written before the job was held: a job held has one
        expires_at = held.get("expires_at")
        if not isinstance(expires_at, str) or parse_stamp(expires_at) > now:
            continue
        logger.warning("ApprovalExpired: a job over its budget was not approved in time", extra={"job_id": job.job_id})
        Canceler(wired).cancel(job.job_id)
        expired.append(job.job_id)
    return expired
