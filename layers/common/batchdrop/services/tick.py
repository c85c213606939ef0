"""One checker tick: move the jobs still submitting on (settle unknown creates, close unsent
shards, create the batches a full queue deferred), follow every open batch and collect the
ended ones, and finish each job whose batches are all in. A tick's work grows with open
jobs and batches, never with requests, and it stops early to leave the rest to the next.

Once the API refuses the key (after the adapter fetched it anew and tried again), the tick
calls the API no more: what is left waits for the next tick, the rest (finishing jobs whose
results are in) goes on, and the tick then fails so the function's error alarm sees it."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from batchdrop.domain.records import JobRecord, ShardRecord
from batchdrop.domain.states import SENT_SHARD_STATES, JobStatus, ShardState
from batchdrop.domain.timings import parse_stamp
from batchdrop.errors import (
    ApiKeyRefusedError,
    CheckerItemsFailedError,
    ProviderOutcomeUnknownError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services.collect import Collector
from batchdrop.services.create import CreateResult, ShardCreator, mark_running
from batchdrop.services.finish import Finisher
from batchdrop.services.settle import Settler
from batchdrop.services.unsent import UnsentCloser

if TYPE_CHECKING:
    from batchdrop.services.outputs import CollectedResults

# From this many open batches a tick reads them from the list endpoint (see Checker._listed),
# spending at most one list call per LIST_CALL_PER_BATCHES of them before retrieving the rest.
LIST_FROM_OPEN_BATCHES = 2
LIST_CALL_PER_BATCHES = 50
# The Message Batches API's request_counts, as noted on an open batch's shard.
PROGRESS_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


@dataclass
class TickReport:
    open_batches: int = 0
    collected: list[str] = field(default_factory=list)
    finished_jobs: list[str] = field(default_factory=list)
    deferred: int = 0  # items left to the next tick (time ran short, or the provider was unavailable)
    submitted: int = 0  # shards this tick created a batch for
    adopted: list[str] = field(default_factory=list)  # batches found by reconciliation
    resubmitted: int = 0  # unknown creates shown to have made no batch, back to PENDING
    canceled: list[str] = field(default_factory=list)  # duplicate batches canceled
    retried: int = 0  # requests scheduled for another attempt
    past_expiry: list[str] = field(default_factory=list)  # batches open past expires_at + margin
    cancel_sent: list[str] = field(default_factory=list)  # batches of canceled jobs asked to stop
    failed: list[str] = field(default_factory=list)  # items whose step raised: re-raised at the end
    key_refused: str | None = None  # why the API refused the key: no more API calls this tick, raised at the end
    oldest_batch_age: float | None = None  # seconds since the oldest open batch was sent; None when none is open


class Checker:
    def __init__(self, wired: Wiring, seconds_left: Callable[[], float]) -> None:
        self._wired = wired
        self._timings = wired.timings
        self._seconds_left = seconds_left
        self._deadline = wired.clock.monotonic() + wired.timings.tick_budget
        self._creator = ShardCreator(wired)
        self._collector = Collector(wired)
        self._settler = Settler(wired)
        self._unsent = UnsentCloser(wired)
        self._finisher = Finisher(wired)

    def _out_of_time(self, needed: float = 0.0) -> bool:
        """True when work that may take `needed` seconds must wait for the next tick."""
        late = self._wired.clock.monotonic() >= self._deadline
        return late or self._seconds_left() < self._timings.tick_safety + needed

    def tick(self) -> TickReport:
        report = TickReport()
        self._deadline = self._wired.clock.monotonic() + self._timings.tick_budget
        work = self._wired.state.open_work()
        # A different order each tick: when time runs short, the batches left over are not
        # the same ones every time (ended batches behind many open ones would wait forever).
        batches = list(work.batches)
        random.shuffle(batches)
        report.open_batches = len(batches)
        report.oldest_batch_age = self._oldest_batch_age(batches)
        self._advance_submitting(work.jobs, report)
        collected = Collected(self._wired, work.jobs)
        try:
            touched = self._follow_batches(batches, work.jobs, report, collected)
            still_open = {shard.job_id for shard in batches} - touched
            for job in work.jobs:
                if job.job_id not in still_open:
                    self._finish(job.job_id, report, collected.results)
        finally:
            collected.close()
        if report.key_refused:
            failed = f"; {len(report.failed)} item(s) failed: {', '.join(report.failed)}" if report.failed else ""
            left = f"{report.deferred} item(s) left to the next tick"
            raise CheckerItemsFailedError(f"the API refused the key ({report.key_refused}); {left}{failed}")
        if report.failed:
            raise CheckerItemsFailedError(f"{len(report.failed)} item(s) failed this tick: {', '.join(report.failed)}")
        return report

    def _oldest_batch_age(self, batches: list[ShardRecord]) -> float | None:
        """How long ago the oldest open batch was sent: a batch expires 24 h after it was
        created, so this age against 24 h says how close the slowest one is to expiring."""
        sent = [parse_stamp(shard.sent_at) for shard in batches if shard.sent_at]
        return (self._wired.clock.now() - min(sent)).total_seconds() if sent else None

    # --- jobs still submitting -----------------------------------------------------------

    def _advance_submitting(self, jobs: list[JobRecord], report: TickReport) -> None:
        """Settle unknown creates, submit pending shards (or close them unsent: a canceled
        job, a refused body), and mark a job RUNNING once every shard has its batch. Reads
        one query per submitting job; one job's failure is recorded and the others go on."""
        submitting = {job.job_id: job for job in jobs if job.status is JobStatus.SUBMITTING}
        if not submitting:
            return
        self._creator.free_stale_lease()
        shards_of = {job_id: self._wired.state.shards(job_id) for job_id in submitting}
        if self._settle([shard for shards in shards_of.values() for shard in shards], report):
            shards_of = {job_id: self._wired.state.shards(job_id) for job_id in submitting}
        for job_id, shards in shards_of.items():
            try:
                self._advance_job(submitting[job_id], shards, report)
            except Exception:  # one job must not stop the others; re-raised at the end  # noqa: BLE001
                logger.exception("advancing a submitting job failed", extra={"job_id": job_id})
                report.failed.append(f"job {job_id}")

    def _settle(self, shards: list[ShardRecord], report: TickReport) -> bool:
        """Settle unknown creates while time allows; True if any shard moved."""
        if self._out_of_time():
            return False
        try:
            settled = self._settler.settle(shards)
        except ApiKeyRefusedError as exc:
            self._key_refused(exc, report)
            return False
        except ProviderUnavailableError as exc:
            logger.warning("unknown creates left to the next tick", extra={"error": str(exc)})
            return False
        report.adopted += settled.adopted
        report.resubmitted += settled.resubmitted
        report.canceled += settled.canceled
        report.deferred += settled.waiting
        return settled.moved

    def _advance_job(self, job: JobRecord, shards: list[ShardRecord], report: TickReport) -> None:
        moved = self._unsent.close_unsent(job, shards)
        if moved:  # a refused shard split: its halves are sent in this tick
            shards = self._wired.state.shards(job.job_id)
        if not job.cancel_requested:
            moved = self._submit_pending(shards, report) or moved
        if moved:
            shards = self._wired.state.shards(job.job_id)
        # A recording interrupted between its transactions left shards out: the job stays
        # SUBMITTING until a re-drive of the intake records them (services/redrive.py).
        recorded = len(shards) >= job.shard_count
        if shards and recorded and all(shard.state in SENT_SHARD_STATES for shard in shards):
            mark_running(self._wired, job)
            logger.info("every shard of the job has its batch", extra={"job_id": job.job_id})

    def _submit_pending(self, shards: list[ShardRecord], report: TickReport) -> bool:
        """Create a batch for each PENDING shard (deferred by a full queue, or found never
        created), while time allows; True if any shard moved."""
        moved = False
        for shard in shards:
            if shard.state is not ShardState.PENDING:
                continue
            if report.key_refused or self._out_of_time(needed=self._timings.create_timeout):
                report.deferred += 1
                continue
            try:
                result = self._creator.create(shard)
            except ProviderOutcomeUnknownError:
                moved = True  # UNKNOWN now: the next tick settles it
                continue
            except ApiKeyRefusedError as exc:  # no batch was made: the shard is PENDING
                self._key_refused(exc, report)
                continue
            except ProviderRejectedError as exc:
                logger.error("create refused: shard left pending", extra={"job_id": shard.job_id, "error": str(exc)})
                report.deferred += 1
                continue
            except ProviderUnavailableError as exc:
                logger.warning("shard left to the next tick", extra={"job_id": shard.job_id, "error": str(exc)})
                report.deferred += 1
                continue
            if result in (CreateResult.CREATED, CreateResult.REFUSED):
                report.submitted += result is CreateResult.CREATED
                moved = True
            elif result in (CreateResult.DEFERRED, CreateResult.BUSY):
                report.deferred += 1
        return moved

    # --- open batches -----------------------------------------------------------------

    def _follow_batches(
        self,
        batches: list[ShardRecord],
        jobs: list[JobRecord],
        report: TickReport,
        collected: Collected | None = None,
    ) -> set[str]:
        """Collect each ended batch, chase the open ones; the jobs a batch was collected for."""
        canceling = {job.job_id for job in jobs if job.cancel_requested}
        listed = {} if report.key_refused else self._listed(batches, report)
        touched: set[str] = set()
        for seen in batches:
            if report.key_refused or self._out_of_time():
                report.deferred += 1
                continue
            try:
                batch = listed.get(seen.batch_id or "") or self._wired.batches.retrieve(seen.batch_id or "")
                if batch["processing_status"] != "ended":
                    self._chase_open_batch(seen, batch, report, cancel=seen.job_id in canceling)
                elif self._collect(seen, batch, report, collected):
                    report.collected.append(batch["id"])
                    touched.add(seen.job_id)
            except ApiKeyRefusedError as exc:
                self._key_refused(exc, report)
            except ProviderUnavailableError as exc:
                logger.warning("batch left to the next tick", extra={"batch_id": seen.batch_id, "error": str(exc)})
                report.deferred += 1
            except Exception:  # one bad batch must not stop the others; re-raised at the end  # noqa: BLE001
                logger.exception("collecting a batch failed", extra={"batch_id": seen.batch_id})
                report.failed.append(f"batch {seen.batch_id}")
            finally:
                logger.remove_keys(["job_id", "batch_id"])  # set per batch while collecting
        return touched

    def _collect(
        self, seen: ShardRecord, batch: Mapping[str, Any], report: TickReport, collected: Collected | None
    ) -> bool:
        logger.append_keys(job_id=seen.job_id, batch_id=batch["id"])
        # The index is eventually consistent: the shard itself says whether this batch is
        # still the one to collect.
        shard = self._wired.state.get_shard(seen.job_id, seen.index)
        results = collected.for_job(seen.job_id) if collected is not None else None
        retried = self._collector.collect(shard, batch, results) if shard is not None else None
        if retried is None:
            return False
        report.retried += retried
        return True

    def _listed(self, batches: list[ShardRecord], report: TickReport) -> dict[str, dict[str, Any]]:
        """The open batches as the workspace's list shows them: one call for up to 1,000
        batches instead of a retrieve each (every call counts against the Batches API's
        requests-per-minute limit, creates included). Listing stops once it has cost one call
        per LIST_CALL_PER_BATCHES open batches, or has reached batches older than the oldest
        open one: a batch it did not show is retrieved on its own."""
        if len(batches) < LIST_FROM_OPEN_BATCHES:
            return {}
        sent = [parse_stamp(shard.sent_at) for shard in batches if shard.sent_at]
        skew = timedelta(seconds=self._timings.skew)
        not_before = min(sent) - skew if len(sent) == len(batches) else None
        max_calls = -(-len(batches) // LIST_CALL_PER_BATCHES)
        try:
            ids = [shard.batch_id for shard in batches if shard.batch_id]
            return self._wired.batches.find_recent(ids, not_before, max_calls)
        except ApiKeyRefusedError as exc:
            self._key_refused(exc, report)
            return {}
        except ProviderUnavailableError as exc:
            logger.warning("listing batches failed: each is retrieved on its own", extra={"error": str(exc)})
            return {}

    def _chase_open_batch(
        self, seen: ShardRecord, batch: Mapping[str, Any], report: TickReport, *, cancel: bool
    ) -> None:
        """An open batch of a canceled job is asked to stop (again, until the provider shows
        it); one open past its expiry plus a margin is flagged and canceled, so it ends. Its
        request counts and expiry are noted on the shard when they changed since last seen."""
        overdue = False
        expires_at = batch.get("expires_at")
        self._note_progress(seen, batch)
        now = self._wired.clock.now()
        if expires_at:
            overdue = (now - parse_stamp(str(expires_at))).total_seconds() > self._timings.expiry_margin
        if overdue:
            report.past_expiry.append(batch["id"])
            logger.error("BatchPastExpiry: batch still open past its expiry", extra={"batch_id": batch["id"]})
            # Its canceled requests will count as expired: retried while attempts remain.
            self._wired.state.flag_overdue(seen, self._wired.stamp())
        if (cancel or overdue) and not batch.get("cancel_initiated_at"):
            try:
                self._wired.batches.cancel(batch["id"])
            except ProviderUnavailableError as exc:
                logger.warning("cancel not sent yet", extra={"batch_id": batch["id"], "error": str(exc)})
                return
            report.cancel_sent.append(batch["id"])

    def _note_progress(self, seen: ShardRecord, batch: Mapping[str, Any]) -> None:
        """Write the batch's request counts and expiry on its shard for clients, only when they
        differ from what the shard holds: an idle tick writes nothing. A shard that moved on in
        the meantime is left as it is (the write's condition does not hold)."""
        raw = batch.get("request_counts") or {}
        counts = {name: int(raw.get(name, 0)) for name in PROGRESS_COUNTS}
        expires_at = batch.get("expires_at")
        expires = str(expires_at) if expires_at else None
        if counts == dict(seen.progress) and (expires is None or expires == seen.expires_at):
            return
        self._wired.state.note_progress(seen, counts, expires)

    def _key_refused(self, exc: ApiKeyRefusedError, report: TickReport) -> None:
        """The API refused the key: the tick makes no more API calls."""
        logger.error("the API refused the key: API calls left to the next tick", extra={"error": str(exc)})
        report.key_refused = str(exc)
        report.deferred += 1

    # --- finished jobs ------------------------------------------------------------------

    def _finish(self, job_id: str, report: TickReport, collected: CollectedResults | None = None) -> None:
        if self._out_of_time():
            report.deferred += 1  # it stays in the open index: the next tick finishes it
            return
        try:
            if self._finisher.finish_if_done(job_id, collected):
                report.finished_jobs.append(job_id)
        except Exception:  # likewise for one job  # noqa: BLE001
            logger.exception("finishing a job failed", extra={"job_id": job_id})
            report.failed.append(f"job {job_id}")


class Collected:
    """Where this tick makes the rows of a records job's results as it collects them
    (services/outputs.CollectedResults): made, and services/outputs.py imported, when the
    tick first collects a batch of a records job it may finish (one whose every batch was
    sent), so a tick that only follows batches loads none of it."""

    def __init__(self, wired: Wiring, jobs: list[JobRecord]) -> None:
        self._wired = wired
        self._finishing = [job for job in jobs if job.pipeline is not None and job.status is JobStatus.RUNNING]
        self.results: CollectedResults | None = None

    def for_job(self, job_id: str) -> CollectedResults | None:
        if all(job.job_id != job_id for job in self._finishing):
            return None
        if self.results is None:
            from batchdrop.services.outputs import CollectedResults

            self.results = CollectedResults(self._wired, self._finishing)
        return self.results

    def close(self) -> None:
        if self.results is not None:
            self.results.close()
