"""Taking in one uploaded object version: its job, its split into shards, their recording,
and a batch for each, recording the intent before each create.

The job id derives from the object version, so a duplicate event finds its job and does
nothing; a job interrupted part-way resumes where it stopped, and a shard whose create may
have gone through (UNKNOWN) is never sent again from here."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

from batchdrop.domain import job_events
from batchdrop.domain.budget import (
    APPROVE_PREFIX,
    DailyBudgetTaken,
    DaySpend,
    budget_key,
    estimate_max,
    held_for_budget,
    spend_day,
)
from batchdrop.domain.estimate import Estimator
from batchdrop.domain.jobs import IdsDigest, job_id_for, manifest_key, rejected_key
from batchdrop.domain.lines import UnreadableFileError
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.records import ShardPlan, SourceRef, SplitCheckpoint, is_folder_marker
from batchdrop.domain.shards import create_body_bytes, request_lines, shard_key
from batchdrop.domain.states import SENT_SHARD_STATES, JobStatus, ShardState
from batchdrop.domain.timings import stamp
from batchdrop.observability import logger
from batchdrop.ports import Wiring
from batchdrop.services.cancel import CANCEL_PREFIX
from batchdrop.services.create import CreateResult, ShardCreator, mark_running
from batchdrop.services.job_estimate import ESTIMATE_SECONDS, keep_estimate
from batchdrop.services.priming import prime_before_first_create, priming_wanted
from batchdrop.services.records_intake import (
    FileRefusedError,
    RecordsMode,
    RefusedMode,
    UploadMode,
    choose_mode,
    pinned_mode,
    split_records,
)
from batchdrop.services.segments import record_stop, records_too_large, resume_from, running_short
from batchdrop.services.split import Split, split_object

# Where uploads become jobs; with cancel/, the prefixes template.yaml's S3 events notify.
INBOX_PREFIX = "inbox/"
S3_EVENT_SOURCE = "aws:s3"
# How often a job is weighed again against the daily budget when other jobs sent at the same
# moment keep taking the day's room first, before the invocation fails (and is retried).
_SPEND_RACES = 3
# A file this large takes the split long enough to make the API client behind it (_warm_api).
WARM_API_BYTES = 8 * 1024 * 1024
WARM_API_JOIN_SECONDS = 5.0  # how long a split that ended waits for that client at most


@dataclass(frozen=True)
class SubmitOutcome:
    job_id: str
    status: JobStatus | None  # the job's status after this invocation (None: no job, a folder marker)
    duplicate: bool = False
    submitted: int = 0  # shards created by this invocation


@dataclass(frozen=True)
class S3Upload:
    """An S3 event record that names an object of ours the submit function takes."""

    key: str  # decoded
    version_id: str | None
    size: int | None

    @property
    def is_cancel(self) -> bool:
        return self.key.startswith(CANCEL_PREFIX)

    @property
    def is_approval(self) -> bool:
        return self.key.startswith(APPROVE_PREFIX)


@dataclass(frozen=True)
class RefusedRecord:
    """An event record that is not an upload to our inbox/ or cancel/: never run as a job."""

    key: str | None  # decoded, when the record names one
    reason: str


def check_record(record: Any, bucket: str) -> S3Upload | RefusedRecord:
    """Read one record of an S3 event: an upload of ours only if S3 sent it (eventSource
    aws:s3) about our `bucket` and a key under inbox/ or cancel/. An event made up by
    anyone who can invoke the function, or a notification from another bucket, is refused
    with its reason. Keys arrive URL-encoded ("a b+c" as "a+b%2Bc")."""
    s3 = record.get("s3") if isinstance(record, Mapping) else None
    obj = (s3.get("get_object") or s3.get("object")) if isinstance(s3, Mapping) else None
    if not isinstance(s3, Mapping) or not isinstance(obj, Mapping) or not isinstance(obj.get("key"), str):
        return RefusedRecord(None, "the record names no S3 object")
    key = unquote_plus(obj["key"])
    source = record.get("eventSource")
    named = s3.get("bucket")
    named_bucket = named.get("name") if isinstance(named, Mapping) else None
    if source != S3_EVENT_SOURCE:
        return RefusedRecord(key, f"eventSource is {source!r}, not {S3_EVENT_SOURCE!r}")
    if named_bucket != bucket:
        return RefusedRecord(key, f"bucket {named_bucket!r} is not this stack's {bucket!r}")
    if not key.startswith((INBOX_PREFIX, CANCEL_PREFIX, APPROVE_PREFIX)):
        return RefusedRecord(key, f"the key is under none of {INBOX_PREFIX}, {CANCEL_PREFIX}, {APPROVE_PREFIX}")
    size = obj.get("size")
    return S3Upload(key, obj.get("versionId"), size if isinstance(size, int) else None)


class Intake:
    def __init__(self, wired: Wiring, seconds_left: Callable[[], float] | None = None) -> None:
        """`seconds_left`: the invocation's remaining time (None: no limit). A split that
        runs short of it stops at a shard boundary, to go on in a later invocation."""
        self._wired = wired
        self._state = wired.state
        self._creator = ShardCreator(wired)
        self._seconds_left = seconds_left

    def submit(self, source: SourceRef, size: int | None = None) -> SubmitOutcome:
        """Take in one object version (`size`: as its event reports it, if known)."""
        job_id = job_id_for(source.bucket, source.key, source.version_id)
        logger.append_keys(job_id=job_id, source_key=source.key)
        if is_folder_marker(source.key, size):
            logger.info("a folder marker starts no job")
            return SubmitOutcome(job_id, None)
        status, job = JobStatus.RECEIVED, None
        mode = choose_mode(self._wired.store, source.key)  # records mode: the pipeline version it pins
        if self._state.create_job(job_id, source, self._wired.stamp(), pipeline=mode.pipeline_ref):
            self._wired.events.publish(job_events.received(job_id, source))  # by the one call that created it
        else:
            job = self._state.get_job(job_id)
            status = job.status if job else JobStatus.RECEIVED
            if status not in (JobStatus.RECEIVED, JobStatus.SUBMITTING):
                logger.info("duplicate event for a job already under way", extra={"status": status})
                return SubmitOutcome(job_id, status, duplicate=True)
            logger.info("resuming an interrupted job", extra={"status": status})
            mode = pinned_mode(self._wired.store, source.key, mode, job.pipeline if job else None)
        if status is JobStatus.RECEIVED:
            if size is not None and size > self._wired.max_file_bytes:
                limit = self._wired.max_file_bytes
                return self._fail(job_id, source, Split(), f"the file is {size} bytes, over the {limit} bytes taken")
            if isinstance(mode, RefusedMode):  # records mode's pipeline refuses the file as a whole
                return self._fail(job_id, source, Split(), mode.reason)
            stopped = self._split(job_id, source, size, mode, job.checkpoint if job else None)
            if stopped is not None:
                return stopped
        else:
            self._complete_recording(job_id)
            # A run that died holding the create lease would stall every create until it ran out.
            self._creator.free_stale_lease()
        return self.send_pending(job_id)

    def _split(
        self, job_id: str, source: SourceRef, size: int | None, mode: UploadMode, checkpoint: SplitCheckpoint | None
    ) -> SubmitOutcome | None:
        """Split the file (from its `checkpoint` on, if an earlier invocation stopped part-way)
        and record its shards; an outcome when the job does not go on to its creates here:
        it failed, or the split stopped short of time (services/segments.py). A file of
        records is rendered in one go: only request lines are split in segments."""
        resume = resume_from(self._wired.store, checkpoint, self._wired.prices)
        if isinstance(mode, RecordsMode) and (too_large := records_too_large(size)):
            return self._fail(job_id, source, Split(), too_large)
        estimated: list[dict[str, Any] | None] = []  # the estimate, when the split made it

        def estimate_while_closing(read: Split) -> None:
            if read.estimator is not None:
                estimated.append(self._estimate(job_id, source, read.estimator, mode))

        warming = self._warm_api(size)
        try:
            if isinstance(mode, RecordsMode):
                split = split_records(self._wired, job_id, source, mode)
            else:
                stop_now = running_short(self._seconds_left, self._wired.timings.split_reserve)
                split = split_object(
                    self._wired,
                    job_id,
                    source,
                    size,
                    resume=resume,
                    stop_now=stop_now,
                    while_closing=estimate_while_closing,
                )
        except UnreadableFileError as exc:  # the file as a whole: no retry would read it
            return self._fail(job_id, source, Split(rejected=resume.rejected), f"the file cannot be read: {exc}")
        except FileRefusedError as exc:  # records refused as a whole (a bad header, on_bad_record: fail)
            return self._fail(job_id, source, Split(), str(exc))
        finally:
            if warming is not None:
                # Done long since, as a rule. A key read that hangs is not waited for: the
                # thread is a daemon, and the first call makes the client if it has not.
                warming.join(timeout=WARM_API_JOIN_SECONDS)
        if split.stopped is not None:
            record_stop(self._wired, job_id, split, resume, self._deadline())
            return SubmitOutcome(job_id, JobStatus.RECEIVED)
        if not split.shards and not resume.next_shard:
            return self._fail(job_id, source, split, hint=mode.hint)
        estimate = None
        if estimated:  # counted while the last shard closed
            [estimate] = estimated
        elif split.estimator is not None:  # before the shards are recorded: before any create
            estimate = self._estimate(job_id, source, split.estimator, mode)
        for _ in range(_SPEND_RACES):
            held, spend = self._hold(job_id, estimate, mode)
            try:
                recorded = self._state.record_shards(
                    job_id,
                    split.shards,
                    requested=split.requested,
                    rejected=split.rejected,
                    max_attempts=self._wired.max_attempts,
                    shard_count=resume.next_shard + len(split.shards),
                    resumed_from=checkpoint.offset if checkpoint else None,
                    hold=held is not None,
                    spend=None if held is not None else spend,
                )
                break
            except DailyBudgetTaken:  # another job took the day's room first: weigh this one again
                logger.info("the day's spend moved as the job was recorded: its budget is weighed again")
        else:
            raise RuntimeError(f"the day's spend kept moving while job {job_id} was recorded; the retry goes on")
        if not recorded:
            logger.info("another invocation recorded this job's shards, or moved its checkpoint, first")
        elif held is not None:
            event = job_events.awaiting_approval(job_id, source, split.requested, split.rejected, estimate, held)
            self._wired.events.publish(event)
            logger.warning("JobAwaitingApproval: over its budget, the job waits", extra={"reason": held["reason"]})
        return None

    def _warm_api(self, size: int | None) -> threading.Thread | None:
        """A thread making the API client while a file of WARM_API_BYTES or more is split, so
        that the estimate's first count finds it made: on a cold start the SDK's import (about
        a second of CPU, taken while the split waits on S3) and the key read from Secrets
        Manager. None for a smaller file, whose split would not hide it."""
        if size is None or size < WARM_API_BYTES:
            return None
        thread = threading.Thread(target=self._wired.batches.warm, name="warm-api", daemon=True)
        thread.start()
        return thread

    def _hold(
        self, job_id: str, estimate: Mapping[str, Any] | None, mode: UploadMode
    ) -> tuple[dict[str, Any] | None, DaySpend]:
        """Why the job waits for approval, kept at errors/<job_id>/budget.json before its
        shards are recorded (None: it goes), and what it adds to today's spend if it goes. A
        records-mode job's pipeline may set its own budget (budget_usd), which stands in for
        the stack's JobBudgetUsd; the stack's DailyBudgetUsd bounds the day across jobs."""
        wired = self._wired
        now = wired.clock.now()
        expires_at = stamp(now + timedelta(hours=wired.approval_hours))
        budget, budget_from = wired.job_budget_usd, "the stack's JobBudgetUsd"
        if isinstance(mode, RecordsMode) and mode.pipeline.budget_usd is not None:
            budget, budget_from = mode.pipeline.budget_usd, f"budget_usd of {mode.pipeline_ref.key}"
        day, daily = spend_day(now), wired.daily_budget_usd
        spent = wired.state.spent_on(day) if daily is not None else Decimal(0)
        spend = DaySpend(day, estimate_max(estimate), cap=daily)
        held = held_for_budget(
            job_id, estimate, budget, expires_at=expires_at, daily_budget=daily, spent=spent, day=day
        )
        if held is None:
            return None, spend
        held["budget_from"] = "the stack's DailyBudgetUsd" if held["held_by"] == "daily_budget" else budget_from
        if not wired.store.put_json(budget_key(job_id), held, if_absent=True):
            held = dict(wired.store.get_json(budget_key(job_id)))  # an earlier run's, with its expiry
        return held, spend

    def _estimate(
        self, job_id: str, source: SourceRef, estimator: Estimator, mode: UploadMode
    ) -> dict[str, Any] | None:
        """The job's estimate, counted and kept (None when it could not be made)."""
        return keep_estimate(
            self._wired,
            job_id,
            source,
            estimator,
            pipeline=mode.pipeline_ref,
            seconds=self._count_seconds(),
            primed=self._primed(source, mode),
        )

    def _primed(self, source: SourceRef, mode: UploadMode) -> bool:
        """Whether the job will prime its cache, as its first create will decide it: its
        estimate prices the prefix as the priming request writes it. A failure to tell is
        logged, and the job is estimated unprimed."""
        try:
            return priming_wanted(self._wired, source, mode.pipeline_ref)[0]
        except Exception:  # noqa: BLE001 - the estimate is worth a log line, never the job
            logger.warning("whether the job primes its cache could not be told", exc_info=True)
            return False

    def _count_seconds(self) -> float:
        """How long the estimate's counts may take: ESTIMATE_SECONDS at most, and a quarter
        of this invocation's time left at most (the rest is the recording's and the creates')."""
        if self._seconds_left is None:
            return ESTIMATE_SECONDS
        return min(ESTIMATE_SECONDS, self._seconds_left() / 4)

    def _deadline(self) -> str:
        """When this invocation ends at the latest: the lease of a checkpoint it writes."""
        left = self._seconds_left() if self._seconds_left is not None else 0.0
        return stamp(self._wired.clock.now() + timedelta(seconds=left))

    def give_up(self, job_id: str, source: SourceRef, reason: str) -> SubmitOutcome:
        """End a job that never got past RECEIVED as FAILED with `reason`: its manifest, its
        errors/ entry and its completion event, as a file refused at intake (the sweeper,
        once a job's re-drives have run out). A job that moved on meanwhile is left as is."""
        logger.append_keys(job_id=job_id, source_key=source.key)
        job = self._state.get_job(job_id)
        if job is None or job.status is not JobStatus.RECEIVED:
            return SubmitOutcome(job_id, job.status if job else None, duplicate=True)
        # A split stopped part-way has rejected lines in errors/ already: the manifest names them.
        return self._fail(job_id, source, Split(rejected=job.checkpoint.rejected if job.checkpoint else 0), reason)

    def _complete_recording(self, job_id: str) -> None:
        """A recording of more than 99 shards spans several transactions: a crash between
        them leaves shards unrecorded. Their bodies are in work/ already; record them."""
        job, shards = self._state.job_and_shards(job_id)
        have = {shard.index for shard in shards}
        for index in sorted(set(range(job.shard_count if job else 0)) - have):
            key = shard_key(job_id, index)
            version = self._wired.store.version_of(key)  # the version counted is the one recorded
            digest, requests, line_bytes = IdsDigest(), 0, 0
            for request in request_lines(self._wired.store.lines(key, version)):
                digest.add(str(json.loads(request)["custom_id"]))
                requests += 1
                line_bytes += len(request)
            size = create_body_bytes(requests, line_bytes)
            plan = ShardPlan(index, key, requests, size, digest.hex, version)
            if self._state.add_missing_shard(job_id, plan, self._wired.max_attempts):
                logger.warning("recorded a shard an interrupted recording left out", extra={"shard": index})

    def _fail(
        self, job_id: str, source: SourceRef, split: Split, refused: str | None = None, hint: str | None = None
    ) -> SubmitOutcome:
        if refused is not None:  # the file as a whole
            reason = refused
        elif split.rejected:
            reason = f"no valid request: all {split.rejected} lines were rejected (see {rejected_key(job_id)})"
        else:
            reason = "the file holds no request (it is empty or blank)"
        if hint is not None and refused is None:
            reason = f"{reason}; {hint}"
        now = self._wired.stamp()
        manifest = build_manifest(
            job_id=job_id,
            source=source.as_dict(),
            status=JobStatus.FAILED,
            requested=0,
            rejected=split.rejected,
            counts={},
            batches=[],
            usage_by_model={},
            result_keys=[],
            rejected_key=rejected_key(job_id) if split.rejected else None,
            created_at=now,
            completed_at=now,
            reason=reason,
        )
        job = self._state.get_job(job_id)
        if job is not None and job.pipeline is not None:  # records mode: the pipeline version the job read
            manifest["pipeline"] = job.pipeline.as_dict()
        store = self._wired.store
        if not split.rejected:
            store.put_json(f"errors/{job_id}/failure.json", {"job_id": job_id, "reason": reason})
        store.put_json(manifest_key(job_id), manifest)
        # Announced before the job is closed, as a finished job is: a failed publish fails
        # the invocation, and Lambda's retry finds the job still RECEIVED and fails it again.
        self._wired.events.publish(job_events.ended(manifest, with_report=False))
        self._state.fail_job(job_id, reason, requested=0, rejected=split.rejected, manifest_key=manifest_key(job_id))
        logger.warning("job failed", extra={"reason": reason})
        return SubmitOutcome(job_id, JobStatus.FAILED)

    def send_pending(self, job_id: str) -> SubmitOutcome:
        """Create a batch for each PENDING shard of a job that may send them (not one awaiting
        approval, nor one whose split is still under way); the job's status after."""
        job, shards = self._state.job_and_shards(job_id)
        if job is None or job.status is JobStatus.RECEIVED:
            # Its split is still under way in segments (a run of an earlier segment lost the
            # recording): no shard is sent before every one is recorded.
            return SubmitOutcome(job_id, JobStatus.RECEIVED)
        if job.status is JobStatus.AWAITING_APPROVAL:  # over its budget: nothing goes before approval
            return SubmitOutcome(job_id, JobStatus.AWAITING_APPROVAL)
        prime_before_first_create(self._wired, job, shards)  # does nothing once a shard was sent
        submitted = 0
        for shard in shards:
            if shard.state is not ShardState.PENDING:
                continue
            job = self._state.get_job(job_id)
            if job is not None and job.cancel_requested:
                logger.info("job canceled: its unsent shards are left to the checker")
                break
            created = self._creator.create(shard, lease_wait=self._wired.timings.lease_wait)
            submitted += created is CreateResult.CREATED
        job, shards = self._state.job_and_shards(job_id)
        # Every shard recorded (none left out: _complete_recording) and each with its batch.
        if job is not None and len(shards) >= job.shard_count and all(s.state in SENT_SHARD_STATES for s in shards):
            mark_running(self._wired, job)
            job = self._state.get_job(job_id)
        return SubmitOutcome(job_id, job.status if job else JobStatus.RECEIVED, submitted=submitted)
