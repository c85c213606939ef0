"""The sweeper: S3 event notifications and Lambda's async queue can lose an event (rarely,
but neither promises delivery), so a schedule lists the object versions under inbox/ and
starts a job for each one that has none. Versions younger than MIN_AGE_SECONDS are left to
their own event; versions older than WINDOW_DAYS are not looked at again (they were swept
long ago), which bounds each sweep's table reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.domain.jobs import job_id_for
from batchdrop.observability import logger
from batchdrop.submit import SourceObject, Submitter

INBOX_PREFIX = "inbox/"
MIN_AGE_SECONDS = 600.0
WINDOW_DAYS = 7.0
# A sweep stops starting jobs when less than this is left of its invocation.
SAFETY_SECONDS = 300.0


@dataclass
class SweepReport:
    seen: int = 0  # versions under inbox/ inside the window
    started: list[str] = field(default_factory=list)  # jobs started for versions without one
    left: int = 0  # versions without a job left to the next sweep (time ran short)


class Sweeper:
    def __init__(
        self,
        store: ObjectStore,
        state: StateTable,
        submitter: Submitter,
        now: Callable[[], datetime],
        seconds_left: Callable[[], float],
    ) -> None:
        self._store = store
        self._state = state
        self._submitter = submitter
        self._now = now
        self._seconds_left = seconds_left

    def sweep(self) -> SweepReport:
        report = SweepReport()
        now = self._now()
        newest = now - timedelta(seconds=MIN_AGE_SECONDS)
        oldest = now - timedelta(days=WINDOW_DAYS)
        candidates: dict[str, SourceObject] = {}
        for version in self._store.versions(INBOX_PREFIX):
            if not oldest <= version.last_modified <= newest or version.version_id in (None, "null"):
                continue
            report.seen += 1
            job_id = job_id_for(self._store.bucket, version.key, version.version_id)
            candidates[job_id] = SourceObject(self._store.bucket, version.key, version.version_id, version.size)
        known = self._state.existing_jobs(candidates)
        for job_id, source in candidates.items():
            if job_id in known:
                continue
            if self._seconds_left() < SAFETY_SECONDS:
                report.left += 1
                continue
            logger.warning("inbox object without a job (its event was lost): starting it", extra={"key": source.key})
            self._submitter.submit(source)
            report.started.append(job_id)
        return report
