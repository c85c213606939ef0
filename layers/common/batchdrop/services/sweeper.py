"""The sweeper: S3 event notifications and Lambda's async queue can lose an event (rarely,
but neither promises delivery), so a schedule lists the object versions under inbox/ and
starts a job for each one that has none. Versions younger than `timings.sweep_min_age` are
left to their own event; versions older than `timings.sweep_window` are not looked at again
(they were swept long ago), which bounds each sweep's table reads. The same read gives the
jobs left RECEIVED, which the sweep then re-drives (services/redrive.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.records import SourceRef, is_folder_marker
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services.approval import expire_unapproved
from batchdrop.services.intake import INBOX_PREFIX, Intake
from batchdrop.services.redrive import Redriver, RedriveReport


@dataclass
class SweepReport:
    seen: int = 0  # versions under inbox/ inside the window
    started: list[str] = field(default_factory=list)  # jobs started for versions without one
    left: int = 0  # versions without a job left to the next sweep (time ran short)
    redrive: RedriveReport = field(default_factory=RedriveReport)  # jobs left RECEIVED
    expired: list[str] = field(default_factory=list)  # jobs over budget not approved in time, dropped


class Sweeper:
    def __init__(self, wired: Wiring, intake: Intake, seconds_left: Callable[[], float]) -> None:
        self._wired = wired
        self._intake = intake
        self._seconds_left = seconds_left

    def sweep(self) -> SweepReport:
        report = SweepReport()
        store, timings = self._wired.store, self._wired.timings
        now = self._wired.clock.now()
        newest = now - timedelta(seconds=timings.sweep_min_age)
        oldest = now - timedelta(seconds=timings.sweep_window)
        candidates: dict[str, tuple[SourceRef, int | None]] = {}
        for version in store.versions(INBOX_PREFIX):
            if not oldest <= version.last_modified <= newest or version.version_id in (None, "null"):
                continue
            if is_folder_marker(version.key, version.size):
                continue
            report.seen += 1
            job_id = job_id_for(store.bucket, version.key, version.version_id)
            candidates[job_id] = (SourceRef(store.bucket, version.key, version.version_id), version.size)
        known = self._wired.state.get_jobs(candidates)
        for job_id, (source, size) in candidates.items():
            if job_id in known:
                continue
            if self._seconds_left() < timings.sweep_safety:
                report.left += 1
                continue
            logger.warning("inbox object without a job (its event was lost): starting it", extra={"key": source.key})
            self._intake.submit(source, size)
            report.started.append(job_id)
        # After the lost ones: a re-drive that kills its process must not hold them back.
        stuck = {job_id: (job, candidates[job_id][1]) for job_id, job in known.items()}
        report.redrive = Redriver(self._wired, self._intake, self._seconds_left).redrive(stuck)
        report.expired = expire_unapproved(self._wired, list(known.values()))
        return report
