"""One checker tick: follow every open batch; when one has ended, stream its results into
S3 and record its counts and usage; when every batch of a job is in, write the job's
manifest, close it and announce it. For jobs still submitting, it settles creates whose
outcome is unknown by listing the provider's recent batches (docs/guarantees.md: adopt the
match, submit again once none can exist, cancel duplicates) and submits the shards a full
queue deferred, through the submit function's own create path. A tick's work grows with
open jobs and batches, never with requests, and it stops early to leave the rest to the
next tick."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from batchdrop.adapters import batches as batches_adapter
from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import MultipartWriter, ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.domain import reconcile
from batchdrop.domain.jobs import (
    IdsDigest,
    JobStatus,
    canceled_result_line,
    final_status,
    is_retryable,
    manifest_key,
    refused_result_line,
    rejected_key,
    results_part_key,
)
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.shards import body_requests, create_body_bytes, shard_key
from batchdrop.domain.usage import Usage
from batchdrop.errors import (
    CheckerItemsFailedError,
    ProviderOutcomeUnknownError,
    ProviderRejectedError,
    ProviderUnavailableError,
    ResultsMismatchError,
)
from batchdrop.observability import logger
from batchdrop.submit import SHARD_CONTENT_TYPE, CreateResult, ShardCreator

# Stop starting new work when less than this is left of the invocation.
SAFETY_SECONDS = 60.0
# Nor this long after the tick began: ticks come every minute to a function of reserved
# concurrency 1, and a tick still running when the next is due throttles it into the
# failure queue (and its alarm) for nothing. What is left waits for the next tick.
TICK_BUDGET_SECONDS = 45.0
# A SUBMITTING shard is taken as left behind by a crash once its intent is older than the
# create's timeout plus this margin.
LEASE_MARGIN_SECONDS = 60.0
# From this many open batches a tick reads them from the list endpoint (see Checker._listed),
# spending at most one list call per LIST_CALL_PER_BATCHES of them before retrieving the rest.
LIST_FROM_OPEN_BATCHES = 2
LIST_CALL_PER_BATCHES = 50
# A batch still open this long after its expires_at is flagged (metric BatchesPastExpiry) and
# canceled, so that it ends and its requests are collected (and retried as expired).
EXPIRY_MARGIN_SECONDS = 3600.0


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


class Checker:
    def __init__(
        self,
        store: ObjectStore,
        state: StateTable,
        api: BatchesApi,
        events: EventPublisher,
        clock: Callable[[], str],
        seconds_left: Callable[[], float],
        grace_seconds: float | None = None,
        max_attempts: int = 3,
        budget_seconds: float = TICK_BUDGET_SECONDS,
    ) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._events = events
        self._now = clock
        self._seconds_left = seconds_left
        self._grace = grace_seconds
        self._max_attempts = max_attempts
        self._budget = budget_seconds
        self._deadline = time.monotonic() + budget_seconds
        self._creator = ShardCreator(store, state, api, clock)

    def _out_of_time(self, needed: float = 0.0) -> bool:
        """True when work that may take `needed` seconds must wait for the next tick."""
        return self._seconds_left() < SAFETY_SECONDS + needed or time.monotonic() >= self._deadline

    def tick(self) -> TickReport:
        report = TickReport()
        self._deadline = time.monotonic() + self._budget
        items = list(self._state.open_items())
        shards = [item for item in items if item["SK"].startswith("SHARD#")]
        # A different order each tick: when time runs short, the batches left over are not
        # the same ones every time (ended batches behind many open ones would wait forever).
        random.shuffle(shards)
        jobs = [item for item in items if item["SK"] == "JOB"]
        report.open_batches = len(shards)
        canceling = {job["job_id"] for job in jobs if job.get("cancel_requested_at")}
        touched: set[str] = set()
        failed: list[str] = []
        self._advance_submitting(jobs, report, failed)
        listed = self._listed(shards)
        for shard in shards:
            if self._out_of_time():
                report.deferred += 1
                continue
            try:
                cancel = shard["job_id"] in canceling
                if self._collect_if_ended(shard, report, cancel=cancel, batch=listed.get(shard["batch_id"])):
                    report.collected.append(shard["batch_id"])
                    touched.add(shard["job_id"])
            except ProviderUnavailableError as exc:
                logger.warning("batch left to the next tick", extra={"batch_id": shard["batch_id"], "error": str(exc)})
                report.deferred += 1
            except Exception:  # one bad batch must not stop the others; re-raised below  # noqa: BLE001
                logger.exception("collecting a batch failed", extra={"batch_id": shard["batch_id"]})
                failed.append(f"batch {shard['batch_id']}")
            finally:
                logger.remove_keys(["job_id", "batch_id"])  # set per batch while collecting
        still_open = {shard["job_id"] for shard in shards} - touched
        for job in jobs:
            if job["job_id"] in still_open:
                continue
            if self._out_of_time():
                report.deferred += 1  # it stays in the open index: the next tick finishes it
                continue
            try:
                if self._finish_if_done(job["job_id"]):
                    report.finished_jobs.append(job["job_id"])
            except Exception:  # likewise for one job  # noqa: BLE001
                logger.exception("finishing a job failed", extra={"job_id": job["job_id"]})
                failed.append(f"job {job['job_id']}")
        if failed:
            raise CheckerItemsFailedError(f"{len(failed)} item(s) failed this tick: {', '.join(failed)}")
        return report

    # --- jobs still submitting -----------------------------------------------------------

    def _advance_submitting(self, jobs: list[dict[str, Any]], report: TickReport, failed: list[str]) -> None:
        """Settle unknown creates, submit pending shards (or close them unsent: a canceled
        job, a refused body), and mark a job RUNNING once every shard has its batch. Reads
        one query per submitting job; one job's failure is recorded and the others go on."""
        submitting = {job["job_id"]: job for job in jobs if job.get("status") == "SUBMITTING"}
        if not submitting:
            return
        try:
            self._creator.free_stale_lease(self._now())
            shards_of = {job_id: self._state.job_items(job_id)[1] for job_id in submitting}
            all_shards = [shard for shards in shards_of.values() for shard in shards]
            if self._settle_unknown(all_shards, report):
                shards_of = {job_id: self._state.job_items(job_id)[1] for job_id in submitting}
        except ProviderUnavailableError as exc:
            logger.warning("unknown creates left to the next tick", extra={"error": str(exc)})
            return
        for job_id, shards in shards_of.items():
            try:
                self._advance_job(submitting[job_id], shards, report)
            except Exception:  # one job must not stop the others; re-raised at the end  # noqa: BLE001
                logger.exception("advancing a submitting job failed", extra={"job_id": job_id})
                failed.append(f"job {job_id}")

    def _advance_job(self, job: dict[str, Any], shards: list[dict[str, Any]], report: TickReport) -> None:
        job_id = job["job_id"]
        moved = self._close_unsent(job, shards)
        if not job.get("cancel_requested_at"):
            moved = self._submit_pending(job_id, shards, report) or moved
        if moved:
            shards = self._state.job_items(job_id)[1]
        if shards and all(shard["state"] in ("SUBMITTED", "COLLECTED") for shard in shards):
            self._state.mark_job_running(job_id)
            logger.info("every shard of the job has its batch", extra={"job_id": job_id})

    def _submit_pending(self, job_id: str, shards: list[dict[str, Any]], report: TickReport) -> bool:
        """Create a batch for each PENDING shard (deferred by a full queue, or found never
        created), while time allows; True if any shard moved."""
        moved = False
        for shard in shards:
            if shard["state"] != "PENDING":
                continue
            if self._out_of_time(needed=batches_adapter.create_timeout()):
                report.deferred += 1
                continue
            try:
                result = self._creator.create(job_id, shard, lease_wait_seconds=0.0)
            except ProviderOutcomeUnknownError:
                moved = True  # UNKNOWN now: the next tick reconciles it
                continue
            except ProviderRejectedError as exc:
                logger.error("create refused: shard left pending", extra={"job_id": job_id, "error": str(exc)})
                report.deferred += 1
                continue
            except ProviderUnavailableError as exc:
                logger.warning("shard left to the next tick", extra={"job_id": job_id, "error": str(exc)})
                report.deferred += 1
                continue
            if result in (CreateResult.CREATED, CreateResult.REFUSED):
                report.submitted += result is CreateResult.CREATED
                moved = True
            elif result in (CreateResult.DEFERRED, CreateResult.BUSY):
                report.deferred += 1
        return moved

    def _close_unsent(self, job: dict[str, Any], shards: list[dict[str, Any]]) -> bool:
        """Shards whose requests will never be sent get one result line per request: for a
        canceled job, its PENDING shards are claimed (PENDING → CANCELING) and come back
        `canceled`; a body refused for good (REFUSED) comes back `errored`. The claim comes
        first, so no create can take the shard while its lines are written. True if any moved."""
        moved = False
        for shard in shards:
            if shard["state"] == "PENDING" and job.get("cancel_requested_at"):
                fence = {"round": int(shard.get("round", 1)), "key": shard["key"]}
                reason = "the job was canceled before this shard was sent"
                if not self._state.claim_unsent(
                    job["job_id"], int(shard["index"]), "PENDING", "CANCELING", fence, reason
                ):
                    continue
                shard = {**shard, "state": "CANCELING"}
            if shard["state"] == "CANCELING":
                self._write_unsent(
                    job["job_id"], shard, "canceled", lambda custom_id, _r: canceled_result_line(custom_id)
                )
                moved = True
            elif shard["state"] == "REFUSED":
                self._write_unsent(job["job_id"], shard, "errored", refused_result_line)
                moved = True
        return moved

    def _write_unsent(
        self, job_id: str, shard: dict[str, Any], outcome: str, line_for: Callable[[str, str], bytes]
    ) -> None:
        index, attempt = int(shard["index"]), int(shard.get("round", 1))
        reason = str(shard.get("reason", ""))
        part_key = results_part_key(job_id, index, attempt)
        with self._store.writer(part_key, "application/x-jsonl", if_absent=True) as part:
            requests = 0
            for body in body_requests(self._store.lines(str(shard["key"]))):
                part.write(line_for(str(json.loads(body)["custom_id"]), reason) + b"\n")
                requests += 1
            if requests != int(shard["requests"]):
                raise ResultsMismatchError(f"shard {index} of {job_id}: {requests} requests, not {shard['requests']}")
        counts = Counter(shard.get("counts") or {})
        counts[outcome] += requests
        entry: dict[str, Any] = {
            "attempt": attempt,
            "batch_id": None,
            "requests": requests,
            "counts": {outcome: requests},
        }
        if shard["state"] == "REFUSED":
            entry["refused"] = reason
        outcome_values = {
            "counts": dict(counts),
            "result_keys": [*shard.get("result_keys", []), part_key],
            "attempts_log": [*shard.get("attempts_log", []), entry],
        }
        fence = {"round": attempt, "key": shard["key"]}
        if self._state.mark_collected(job_id, index, expected=shard["state"], fence=fence, outcome=outcome_values):
            logger.info("requests closed unsent", extra={"job_id": job_id, "shard": index, "outcome": outcome})

    def _unsettled(self, shards: list[dict[str, Any]], now: datetime) -> tuple[list[reconcile.Unsettled], set[int]]:
        """Shards whose create may have made a batch, and the sizes of creates in flight."""
        lease = batches_adapter.create_window() + LEASE_MARGIN_SECONDS
        unsettled: list[reconcile.Unsettled] = []
        in_flight: set[int] = set()
        for shard in shards:
            if shard["state"] not in ("UNKNOWN", "SUBMITTING") or not shard.get("sent_at"):
                continue
            sent_at = reconcile.parse_time(shard["sent_at"])
            if shard["state"] == "SUBMITTING" and (now - sent_at).total_seconds() < lease:
                in_flight.add(int(shard["requests"]))
                continue
            unsettled.append(reconcile.Unsettled(shard["job_id"], int(shard["index"]), int(shard["requests"]), sent_at))
        return unsettled, in_flight

    def _settle_unknown(self, shards: list[dict[str, Any]], report: TickReport) -> bool:
        """Match unknown creates against the provider's recent
        batches; adopt, resubmit or wait, and cancel duplicates. True if any shard moved."""
        now = reconcile.parse_time(self._now())
        unsettled, in_flight = self._unsettled(shards, now)
        if not unsettled or self._out_of_time():
            return False
        by_key = {(shard["job_id"], int(shard["index"])): shard for shard in shards}
        oldest = min(shard.sent_at for shard in unsettled)
        try:
            recent = self._api.list_recent(oldest - timedelta(seconds=reconcile.SKEW_SECONDS))
        except ProviderUnavailableError as exc:
            logger.warning("unknown creates left to the next tick", extra={"error": str(exc)})
            return False
        # A batch already being canceled (a duplicate we canceled) is never adopted.
        listed = [reconcile.Listed.from_api(b) for b in recent.batches if not b.get("cancel_initiated_at")]
        owned = {shard["batch_id"] for shard in shards if shard.get("batch_id")}
        timeout = batches_adapter.create_window()
        maybe = {b.id for b in listed if any(reconcile.matches(s, b, timeout) for s in unsettled)} - owned
        owned |= self._state.owned_batches(sorted(maybe))
        grace = self._grace if self._grace is not None else reconcile.GRACE_SECONDS
        decision = reconcile.settle(
            unsettled,
            listed,
            owned=owned,
            covered=recent.complete,
            now=now,
            create_timeout=timeout,
            grace=grace,
            blocked_sizes=in_flight,
        )
        moved = False
        for (job_id, index), batch_id in decision.adopt.items():
            shard = by_key[(job_id, index)]
            if self._state.adopt_batch(job_id, index, batch_id, shard["sent_at"]):
                self._state.release_create_lease(str(shard.get("lease_owner", "")))
                logger.warning(
                    "unknown create settled: batch adopted",
                    extra={"job_id": job_id, "shard": index, "batch_id": batch_id},
                )
                report.adopted.append(batch_id)
                moved = True
        for job_id, index in decision.resubmit:
            shard = by_key[(job_id, index)]
            reason = f"no batch matched the create sent at {shard['sent_at']}: submitted again"
            if self._state.resubmit_unsettled(job_id, index, shard["state"], shard["sent_at"], reason):
                self._state.release_create_lease(str(shard.get("lease_owner", "")))
                logger.warning(
                    "unknown create settled: no batch, shard pending again", extra={"job_id": job_id, "shard": index}
                )
                report.resubmitted += 1
                moved = True
        for batch_id in decision.cancel:
            try:
                self._api.cancel(batch_id)
            except ProviderUnavailableError as exc:
                logger.warning("duplicate batch not canceled yet", extra={"batch_id": batch_id, "error": str(exc)})
                continue
            logger.warning("DuplicateBatch: a second batch for one shard was canceled", extra={"batch_id": batch_id})
            report.canceled.append(batch_id)
        report.deferred += len(decision.wait)
        return moved

    # --- open batches -----------------------------------------------------------------

    def _listed(self, shards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The open batches as the workspace's list shows them: one call for up to 1,000
        batches instead of a retrieve each (every call counts against the Batches API's
        requests-per-minute limit, creates included). Listing stops once it has cost one call
        per LIST_CALL_PER_BATCHES open batches, or has reached batches older than the oldest
        open one: a batch it did not show is retrieved on its own."""
        if len(shards) < LIST_FROM_OPEN_BATCHES:
            return {}
        sent = [reconcile.parse_time(str(shard["sent_at"])) for shard in shards if shard.get("sent_at")]
        skew = timedelta(seconds=reconcile.SKEW_SECONDS)
        not_before = min(sent) - skew if len(sent) == len(shards) else None
        max_calls = -(-len(shards) // LIST_CALL_PER_BATCHES)
        try:
            return self._api.find_recent([shard["batch_id"] for shard in shards], not_before, max_calls)
        except ProviderUnavailableError as exc:
            logger.warning("listing batches failed: each is retrieved on its own", extra={"error": str(exc)})
            return {}

    def _collect_if_ended(
        self, seen: dict[str, Any], report: TickReport, *, cancel: bool = False, batch: dict[str, Any] | None = None
    ) -> bool:
        """`batch`: the batch as listed this tick; retrieved when not given."""
        if batch is None:
            batch = self._api.retrieve(seen["batch_id"])
        if batch["processing_status"] != "ended":
            self._chase_open_batch(seen, batch, report, cancel=cancel)
            return False
        job_id, index = seen["job_id"], int(seen["index"])
        logger.append_keys(job_id=job_id, batch_id=batch["id"])
        # The index is eventually consistent: the shard itself says whether this batch is
        # still the one to collect.
        shard = self._state.get_shard(job_id, index)
        if shard is None or shard["state"] != "SUBMITTED" or shard.get("batch_id") != batch["id"]:
            return False
        attempt = int(shard.get("round", 1))
        # Decided by the attempt alone, so a second run over the same results (after a
        # crash, or a second checker) writes the same part and the same retry body.
        may_retry = attempt < int(shard.get("max_attempts", self._max_attempts))
        part_key = results_part_key(job_id, index, attempt)
        raw: Counter[str] = Counter()
        finals: Counter[str] = Counter()
        usage = {model: Usage(**figures) for model, figures in (shard.get("usage") or {}).items()}
        retry_ids: set[str] = set()
        digest = IdsDigest()
        part: MultipartWriter | None = None  # opened on the first final outcome
        try:
            for line in self._api.result_lines(batch):
                record = json.loads(line)
                result = record["result"]
                raw[result["type"]] += 1
                digest.add(str(record["custom_id"]))
                if may_retry and (is_retryable(result) or (result["type"] == "canceled" and shard.get("overdue_at"))):
                    retry_ids.add(str(record["custom_id"]))
                    continue
                if part is None:
                    part = self._store.writer(part_key, "application/x-jsonl", if_absent=True)
                part.write(line + b"\n")
                finals[result["type"]] += 1
                if result["type"] == "succeeded":
                    message = result["message"]
                    usage.setdefault(message["model"], Usage()).add_message_usage(message.get("usage") or {})
            if sum(raw.values()) != shard["requests"] or len(retry_ids) != sum(raw.values()) - sum(finals.values()):
                # Never recorded: the job must never close on results that do not add up.
                raise ResultsMismatchError(
                    f"batch {batch['id']} returned {sum(raw.values())} results for {shard['requests']} requests"
                )
            if shard.get("ids_digest") and digest.hex != shard["ids_digest"]:
                # The right count, the wrong requests: a batch that is not this shard's.
                raise ResultsMismatchError(
                    f"batch {batch['id']} returned results for other requests than shard {index}"
                )
        except BaseException:
            if part is not None:
                part.abort()
            raise
        if part is not None:
            part.close()  # False when a run before this one wrote it: the same outcomes, kept
        counts = Counter(shard.get("counts") or {})
        counts.update(finals)
        log_entry = {
            "attempt": attempt,
            "batch_id": batch["id"],
            "creates": int(shard.get("attempt", 1)),  # creates sent before one was known to exist
            "requests": int(shard["requests"]),
            "counts": dict(raw),
            "retried": len(retry_ids),
            "ended_at": str(batch.get("ended_at") or self._now()),
        }
        outcome = {
            "counts": dict(counts),
            "usage": {model: u.as_dict() for model, u in usage.items()},
            "result_keys": [*shard.get("result_keys", []), *([part_key] if finals else [])],
            "attempts_log": [*shard.get("attempts_log", []), log_entry],
            "ended_at": log_entry["ended_at"],
        }
        fence = {"batch_id": batch["id"], "round": attempt}
        if retry_ids:
            retry_key = shard_key(job_id, index, attempt + 1)
            size = self._write_retry_body(str(shard["key"]), retry_key, retry_ids)
            retry_digest = IdsDigest()
            for custom_id in retry_ids:
                retry_digest.add(custom_id)
            next_round = {
                "round": attempt + 1,
                "key": retry_key,
                "requests": len(retry_ids),
                "size": size,
                "ids_digest": retry_digest.hex,
            }
            if not self._state.schedule_retry(job_id, index, fence=fence, outcome=outcome, next_round=next_round):
                return False
            report.retried += len(retry_ids)
            logger.warning(
                "transient failures: requests scheduled for another attempt",
                extra={"attempt": attempt + 1, "requests": len(retry_ids), "counts": dict(raw)},
            )
            return True
        if not self._state.mark_collected(job_id, index, fence=fence, outcome=outcome):
            return False
        logger.info("batch results collected", extra={"counts": dict(raw), "part": part_key})
        return True

    def _chase_open_batch(
        self, seen: dict[str, Any], batch: dict[str, Any], report: TickReport, *, cancel: bool
    ) -> None:
        """An open batch of a canceled job is asked to stop (again, until the provider shows
        it); one open past its expiry plus a margin is flagged and canceled, so it ends."""
        overdue = False
        expires_at = batch.get("expires_at")
        if expires_at:
            late = (reconcile.parse_time(self._now()) - reconcile.parse_time(str(expires_at))).total_seconds()
            overdue = late > EXPIRY_MARGIN_SECONDS
        if overdue:
            report.past_expiry.append(batch["id"])
            logger.error("BatchPastExpiry: batch still open past its expiry", extra={"batch_id": batch["id"]})
            # Its canceled requests will count as expired: retried while attempts remain.
            self._state.flag_overdue(seen["job_id"], int(seen["index"]), batch["id"], self._now())
        if (cancel or overdue) and not batch.get("cancel_initiated_at"):
            try:
                self._api.cancel(batch["id"])
            except ProviderUnavailableError as exc:
                logger.warning("cancel not sent yet", extra={"batch_id": batch["id"], "error": str(exc)})
                return
            report.cancel_sent.append(batch["id"])

    def _write_retry_body(self, source_key: str, retry_key: str, wanted: set[str]) -> int:
        """The requests of `source_key` whose custom_id is in `wanted`, in their order, one
        per line at `retry_key`, streamed; the size of their create body. Every wanted
        request must be found."""
        found = line_bytes = 0
        with self._store.writer(retry_key, SHARD_CONTENT_TYPE, if_absent=True) as body:
            for request in body_requests(self._store.lines(source_key)):
                if json.loads(request)["custom_id"] in wanted:
                    body.write(request)
                    body.write(b"\n")
                    found += 1
                    line_bytes += len(request)
            if found != len(wanted):
                raise ResultsMismatchError(f"{source_key} holds {found} of the {len(wanted)} requests to retry")
        return create_body_bytes(found, line_bytes)

    def _finish_if_done(self, job_id: str) -> bool:
        job, shards = self._state.job_items(job_id)
        if job is None or job["status"] not in ("SUBMITTING", "RUNNING") or not shards:
            return False
        if job["status"] == "RUNNING" and any(s["state"] not in ("SUBMITTED", "COLLECTED") for s in shards):
            # A retry was scheduled while another invocation marked the job running.
            self._state.reopen_job(job_id)
            return False
        if any(shard["state"] != "COLLECTED" for shard in shards):
            return False
        if len(shards) != int(job.get("shards", len(shards))):
            # Fewer shard items than the job recorded (an interrupted recording): never close
            # a job on part of its requests.
            logger.error("job has fewer shards than recorded", extra={"job_id": job_id, "found": len(shards)})
            return False
        counts: Counter[str] = Counter()
        usage: dict[str, Usage] = {}
        for shard in shards:
            counts.update(shard.get("counts") or {})
            for model, figures in (shard.get("usage") or {}).items():
                usage.setdefault(model, Usage()).merge(Usage(**figures))
        if job.get("cancel_requested_at"):
            status = str(JobStatus.CANCELED)
        else:
            status = str(final_status(counts, int(job.get("rejected", 0))))
        completed_at = self._now()
        manifest = build_manifest(
            job_id=job_id,
            source={"bucket": job["bucket"], "key": job["key"], "version_id": job["version_id"]},
            status=status,
            requested=int(job["requested"]),
            rejected=int(job.get("rejected", 0)),
            counts=counts,
            batches=[
                {
                    "shard": shard["index"],
                    "requests": shard.get("shard_requests", shard["requests"]),
                    "counts": shard.get("counts") or {},
                    "attempts": shard.get("attempts_log") or [],
                }
                for shard in shards
            ],
            usage_by_model=usage,
            result_keys=[key for shard in shards for key in shard.get("result_keys", [])],
            rejected_key=rejected_key(job_id) if job.get("rejected") else None,
            created_at=job["created_at"],
            completed_at=completed_at,
        )
        if not self._store.put_json(manifest_key(job_id), manifest, if_absent=True):
            # A checker that stopped after writing it: its manifest stands (same figures).
            manifest = self._store.get_json(manifest_key(job_id))
            status, completed_at = manifest["status"], manifest["timings"]["completed_at"]
        # The event goes out before the job leaves the open index, so a failed publish is
        # retried on the next tick: at least once (consumers dedupe on job_id), never lost.
        self._events.job_completed(
            {
                "job_id": job_id,
                "status": status,
                "source_key": job["key"],
                "counts": manifest["counts"],
                "manifest_key": manifest_key(job_id),
            }
        )
        if not self._state.finish_job(job_id, status, manifest_key(job_id), completed_at):
            return False  # another checker finished it first
        logger.info("job finished", extra={"job_id": job_id, "status": status})
        return True
