"""Finishing a job once every shard is collected: its manifest, its report, its completion
event, and its final status, in that order, so a crash between any two steps is finished by
the next tick with the same figures. A records-mode job's outputs (services/outputs.py) are
written before its manifest, which names them. The report (services/report.py) is for people:
a failure to write it is logged and never holds the job open."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from batchdrop.domain import job_events
from batchdrop.domain.budget import DaySpend
from batchdrop.domain.jobs import final_status, manifest_key, rejected_key, report_key
from batchdrop.domain.manifest import build_manifest, cost_summary
from batchdrop.domain.records import JobRecord, ShardRecord
from batchdrop.domain.states import DONE_SHARD_STATES, SENT_SHARD_STATES, JobStatus
from batchdrop.domain.usage import Usage
from batchdrop.observability import logger, record_job_cost
from batchdrop.ports import Wiring
from batchdrop.services.job_estimate import MAX_ESTIMATE_BYTES, beside_actual, estimate_key, note_history, read_json
from batchdrop.services.priming import priming_summary
from batchdrop.services.report import write_report

if TYPE_CHECKING:
    from batchdrop.services.outputs import CollectedResults


class Finisher:
    def __init__(self, wired: Wiring) -> None:
        self._wired = wired

    def finish_if_done(self, job_id: str, collected: CollectedResults | None = None) -> bool:
        """Finish the job if all of it is in; True if this call finished it. `collected`: the
        rows this tick made of the results it collected (services/outputs.py)."""
        state = self._wired.state
        job, shards = state.job_and_shards(job_id)
        if job is None or job.status not in (JobStatus.SUBMITTING, JobStatus.RUNNING) or not shards:
            return False
        if job.status is JobStatus.RUNNING and any(s.state not in SENT_SHARD_STATES for s in shards):
            # A retry was scheduled while another invocation marked the job running.
            state.reopen_job(job_id)
            return False
        if any(shard.state not in DONE_SHARD_STATES for shard in shards):
            return False
        if len(shards) != job.shard_count:
            # Fewer shard items than the job recorded (an interrupted recording): never close
            # a job on part of its requests.
            logger.error("job has fewer shards than recorded", extra={"job_id": job_id, "found": len(shards)})
            return False
        status, completed_at, manifest = self._manifest(job, shards, collected)
        self._report(manifest)
        # The event goes out before the job leaves the open index, so a failed publish is
        # retried on the next tick: at least once (consumers dedupe on job_id and detail-type).
        self._wired.events.publish(job_events.ended(manifest))
        if not state.finish_job(job_id, status, manifest_key(job_id), completed_at, settle=_settlement(job, manifest)):
            return False  # another checker finished it first
        # Counted by the call that closed the job only, so a job is never counted twice.
        record_job_cost(cost_summary(manifest))
        logger.info("job finished", extra={"job_id": job_id, "status": status})
        return True

    def _report(self, manifest: dict[str, Any]) -> None:
        """Write the job's report; an error is logged, and the job finishes without it."""
        try:
            write_report(self._wired.store, manifest)
        except Exception:  # noqa: BLE001 - a report is never worth a job left open
            logger.exception("the job's report was not written", extra={"job_id": manifest.get("job_id")})

    def _outputs(
        self, job: JobRecord, shards: list[ShardRecord], counts: Counter[str], collected: CollectedResults | None
    ) -> dict[str, str]:
        """A records-mode job's outputs (services/outputs.py, imported here: it brings the
        pipeline parser, the schema compiler and the JSON libraries, which a checker that
        finishes no records job never needs at its cold start)."""
        from batchdrop.services.outputs import OutputsWriter

        return OutputsWriter(self._wired).write(job, shards, counts, collected)

    def _manifest(
        self, job: JobRecord, shards: list[ShardRecord], collected: CollectedResults | None = None
    ) -> tuple[JobStatus, str, dict[str, Any]]:
        """The job's manifest, written if absent: its status, completion time and content as
        they stand in results/ (a checker that stopped after writing it fixed them)."""
        counts: Counter[str] = Counter()
        usage: dict[str, Usage] = {}
        for shard in shards:
            counts.update(shard.counts)
            for model, figures in shard.usage.items():
                usage.setdefault(model, Usage()).merge(Usage(**figures))
        status = JobStatus.CANCELED if job.cancel_requested else final_status(counts, job.rejected)
        completed_at = self._wired.stamp()
        outputs = self._outputs(job, shards, counts, collected) if job.pipeline is not None else None
        manifest = build_manifest(
            job_id=job.job_id,
            source=job.source.as_dict(),
            status=status,
            requested=job.requested,
            rejected=job.rejected,
            counts=counts,
            batches=[
                {
                    "shard": shard.index,
                    "requests": shard.requests,
                    "counts": dict(shard.counts),
                    "attempts": list(shard.attempts_log),
                }
                for shard in shards
            ],
            usage_by_model=usage,
            result_keys=[key for shard in shards for key in shard.result_keys],
            rejected_key=rejected_key(job.job_id) if job.rejected else None,
            created_at=job.created_at,
            completed_at=completed_at,
            outputs=outputs,
            prices=self._wired.prices,
            report_key=report_key(job.job_id),
        )
        store = self._wired.store
        priming = priming_summary(store, job.job_id)
        if priming is not None:  # beside the cost: not part of it
            manifest["priming"] = priming
        estimate = read_json(store, estimate_key(job.job_id), MAX_ESTIMATE_BYTES)
        if estimate is not None:  # against the whole spend: the batches' and the priming request's
            primed_usd = None if priming is None or priming.get("cost_usd") is None else str(priming["cost_usd"])
            manifest["estimate"] = beside_actual(estimate, manifest["cost"]["batch_usd"], primed_usd)
            if job.pipeline is not None:  # the pipeline's next job expects this job's output share
                note_history(store, job.pipeline, estimate, manifest["usage"]["total"]["output_tokens"])
        if not store.put_json(manifest_key(job.job_id), manifest, if_absent=True):
            manifest = store.get_json(manifest_key(job.job_id))
            status, completed_at = JobStatus(manifest["status"]), manifest["timings"]["completed_at"]
        return status, completed_at, manifest


def _settlement(job: JobRecord, manifest: dict[str, Any]) -> DaySpend | None:
    """What closing the job changes in its day's spend: its actual cost (the batches' and its
    priming request's) in place of the upper bound it added as it was sent. None for a job
    that added nothing: one sent before days were counted, or one canceled while it waited."""
    if job.spend_day is None or job.spend_usd is None:
        return None
    actual = Decimal(manifest["cost"]["batch_usd"])
    priming = manifest.get("priming") or {}
    if priming.get("cost_usd") is not None:
        actual += Decimal(str(priming["cost_usd"]))
    return DaySpend(job.spend_day, actual - job.spend_usd)
