"""The safety net for a job left behind: every failure the intake knows ends its job FAILED
with its reason, but a submit function can also die without a word (out of memory, out of
time) on each of Lambda's tries of its event, and then nothing would ever drive the job again.

The sweeper hands this module the jobs of the inbox/ versions it lists. A job still RECEIVED
`timings.stuck_after` after it was created is run again through Intake.submit, the one entry
point for a version (idempotent: shards already written or recorded are kept, creates stay
under the create lease), at most once per `timings.redrive_every`. Each try is counted on the
job item before it runs, by a conditional write, so a try whose process dies still counts and
two sweeps never count one try twice. After REDRIVE_TRIES tries the job is failed with the
last error a try raised, if one did: manifest, errors/ entry and completion event.

A job SUBMITTING that long is the checker's to drive, unless a recording of its shards
(several transactions for over 99 shards) was cut short and none of its event's tries was
left to complete it: the checker does not mark such a job RUNNING, and it is re-driven here
alike, so that the intake records the shards left out. It is never failed: some of its
batches may be out; past REDRIVE_TRIES it is re-driven still, each time with an error logged.

A job RECEIVED with a split checkpoint (a file too large to split in one invocation:
services/segments.py) is not stuck but under way: its split goes on at the first sweep after
the checkpoint's lease (the deadline of the invocation that last ran or claimed a segment),
without waiting for stuck_after. Each segment is claimed like a try, counted and leased to
this invocation's deadline, so two sweeps never run one at once; a segment that saves a
checkpoint further on sets the count back to 0, so only segments that make no progress
count toward REDRIVE_TRIES."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from batchdrop.domain.records import JobRecord
from batchdrop.domain.states import JobStatus
from batchdrop.domain.timings import parse_stamp, stamp
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services.intake import Intake

# Re-drives a job left RECEIVED gets before it is failed.
REDRIVE_TRIES = 3
# The longest error kept on the job item, then in its reason.
ERROR_CHARS = 300
NO_ERROR = "no try raised an error (its function ran out of memory or time, or its process died)"


@dataclass
class RedriveReport:
    redriven: list[str] = field(default_factory=list)  # jobs run again through the intake
    continued: list[str] = field(default_factory=list)  # of those, splits gone on from their checkpoint
    failed: list[str] = field(default_factory=list)  # jobs failed once their tries ran out
    left: int = 0  # stuck jobs left to the next sweep (time ran short)


def stuck_reason(tries: int, error: str | None) -> str:
    return f"the file could not be read after {tries} tries: {error or NO_ERROR}"


def one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


class Redriver:
    def __init__(self, wired: Wiring, intake: Intake, seconds_left: Callable[[], float]) -> None:
        self._wired = wired
        self._intake = intake
        self._seconds_left = seconds_left

    def is_due(self, job: JobRecord) -> bool:
        """A job still RECEIVED or SUBMITTING, past its bound: stuck_after since it was
        created, then redrive_every since its last counted try."""
        if job.status not in (JobStatus.RECEIVED, JobStatus.SUBMITTING):
            return False
        timings = self._wired.timings
        if job.status is JobStatus.RECEIVED and job.checkpoint is not None:  # a split under way
            if job.split_lease is None:
                return True
            return self._wired.clock.now() >= parse_stamp(job.split_lease)
        since, bound = (
            (job.redriven_at, timings.redrive_every) if job.redriven_at else (job.created_at, timings.stuck_after)
        )
        return (self._wired.clock.now() - parse_stamp(since)).total_seconds() >= bound

    def redrive(self, jobs: Mapping[str, tuple[JobRecord, int | None]]) -> RedriveReport:
        """Each due job (with its version's size) run again, or failed once its tries ran out."""
        report = RedriveReport()
        for job_id, (job, size) in jobs.items():
            if not self.is_due(job) or not self._left_behind(job):
                continue
            if job.status is JobStatus.RECEIVED and job.redrives >= REDRIVE_TRIES:
                reason = stuck_reason(job.redrives, job.redrive_error)
                logger.error("StuckJob: failing a job its tries could not read", extra={"job_id": job_id})
                self._intake.give_up(job_id, job.source, reason)
                report.failed.append(job_id)
            elif self._seconds_left() < self._wired.timings.sweep_safety:
                report.left += 1
            elif self._wired.state.count_redrive(job_id, job.redrives, self._wired.stamp(), lease=self._lease(job)):
                self._run(job, size)
                report.redriven.append(job_id)
                if job.checkpoint is not None:
                    report.continued.append(job_id)
        return report

    def _lease(self, job: JobRecord) -> str | None:
        """For a split under way: this invocation's deadline, before which no other sweep
        runs a segment of it."""
        if job.status is not JobStatus.RECEIVED or job.checkpoint is None:
            return None
        return stamp(self._wired.clock.now() + timedelta(seconds=self._seconds_left()))

    def _left_behind(self, job: JobRecord) -> bool:
        """RECEIVED, or SUBMITTING with shards its recording left out (the checker drives the rest)."""
        if job.status is JobStatus.RECEIVED:
            return True
        missing = job.shard_count - len(self._wired.state.shards(job.job_id))
        if missing > 0 and job.redrives >= REDRIVE_TRIES:
            logger.error(
                "StuckJob: shards of a job are still unrecorded after its re-drives",
                extra={"job_id": job.job_id, "missing": missing, "tries": job.redrives},
            )
        return missing > 0

    def _run(self, job: JobRecord, size: int | None) -> None:
        extra = {"job_id": job.job_id, "key": job.source.key, "status": job.status, "try": job.redrives + 1}
        if job.checkpoint is not None:
            logger.info("SplitSegment: going on with a split from its checkpoint", extra=extra)
        else:
            logger.warning("StuckJob: re-driving a job left behind", extra=extra)
        try:
            self._intake.submit(job.source, size)
        except Exception as exc:  # kept as the job's reason; the next sweep tries again  # noqa: BLE001
            logger.exception("re-driving a stuck job failed", extra={"job_id": job.job_id})
            self._wired.state.note_redrive_error(job.job_id, one_line(exc))
