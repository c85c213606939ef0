"""One checker tick: follow every open batch; when one has ended, stream its results into
S3 and record its counts and usage; when every batch of a job is in, write the job's
manifest, close it and announce it. A tick's work grows with open jobs and batches,
never with requests, and it stops early to leave the rest to the next tick."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchdrop.adapters.batches import BatchesApi
from batchdrop.adapters.events import EventPublisher
from batchdrop.adapters.objects import ObjectStore
from batchdrop.adapters.state import StateTable
from batchdrop.domain.jobs import final_status, manifest_key, rejected_key, results_part_key
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.usage import Usage
from batchdrop.errors import ProviderUnavailableError
from batchdrop.observability import logger

# Stop starting new work when less than this is left of the invocation.
SAFETY_SECONDS = 60.0


@dataclass
class TickReport:
    open_batches: int = 0
    collected: list[str] = field(default_factory=list)
    finished_jobs: list[str] = field(default_factory=list)
    deferred: int = 0  # items left to the next tick (time ran short, or the provider was unavailable)


class Checker:
    def __init__(
        self,
        store: ObjectStore,
        state: StateTable,
        api: BatchesApi,
        events: EventPublisher,
        clock: Callable[[], str],
        seconds_left: Callable[[], float],
    ) -> None:
        self._store = store
        self._state = state
        self._api = api
        self._events = events
        self._now = clock
        self._seconds_left = seconds_left

    def tick(self) -> TickReport:
        report = TickReport()
        items = list(self._state.open_items())
        shards = [item for item in items if item["SK"].startswith("SHARD#")]
        jobs = [item for item in items if item["SK"] == "JOB"]
        report.open_batches = len(shards)
        touched: set[str] = set()
        for shard in shards:
            if self._seconds_left() < SAFETY_SECONDS:
                report.deferred += 1
                continue
            try:
                if self._collect_if_ended(shard):
                    report.collected.append(shard["batch_id"])
                    touched.add(shard["job_id"])
            except ProviderUnavailableError as exc:
                logger.warning("batch left to the next tick", extra={"batch_id": shard["batch_id"], "error": str(exc)})
                report.deferred += 1
        still_open = {shard["job_id"] for shard in shards} - touched
        for job in jobs:
            if job["job_id"] not in still_open and self._finish_if_done(job["job_id"]):
                report.finished_jobs.append(job["job_id"])
        return report

    def _collect_if_ended(self, shard: dict[str, Any]) -> bool:
        batch = self._api.retrieve(shard["batch_id"])
        if batch["processing_status"] != "ended":
            return False
        job_id, index = shard["job_id"], int(shard["index"])
        logger.append_keys(job_id=job_id, batch_id=batch["id"])
        part_key = results_part_key(job_id, index)
        counts: Counter[str] = Counter()
        usage: dict[str, Usage] = {}
        with self._store.writer(part_key, "application/x-jsonl") as part:
            for line in self._api.result_lines(batch):
                part.write(line + b"\n")
                result = json.loads(line)["result"]
                counts[result["type"]] += 1
                if result["type"] == "succeeded":
                    message = result["message"]
                    usage.setdefault(message["model"], Usage()).add_message_usage(message.get("usage") or {})
        if sum(counts.values()) != shard["requests"]:
            logger.error(
                "results do not match the batch's requests",
                extra={"results": sum(counts.values()), "requests": shard["requests"]},
            )
        self._state.mark_collected(
            job_id,
            index,
            counts=dict(counts),
            usage={model: u.as_dict() for model, u in usage.items()},
            result_key=part_key,
            ended_at=str(batch.get("ended_at") or self._now()),
        )
        logger.info("batch results collected", extra={"counts": dict(counts), "part": part_key})
        return True

    def _finish_if_done(self, job_id: str) -> bool:
        job, shards = self._state.job_items(job_id)
        if job is None or job["status"] not in ("SUBMITTING", "RUNNING") or not shards:
            return False
        if any(shard["state"] != "COLLECTED" for shard in shards):
            return False
        counts: Counter[str] = Counter()
        usage: dict[str, Usage] = {}
        for shard in shards:
            counts.update(shard.get("counts") or {})
            for model, figures in (shard.get("usage") or {}).items():
                usage.setdefault(model, Usage()).merge(Usage(**figures))
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
                    "batch_id": shard["batch_id"],
                    "requests": shard["requests"],
                    "attempts": shard["attempt"],
                    "counts": shard.get("counts") or {},
                }
                for shard in shards
            ],
            usage_by_model=usage,
            result_keys=[shard["result_key"] for shard in shards],
            rejected_key=rejected_key(job_id) if job.get("rejected") else None,
            created_at=job["created_at"],
            completed_at=completed_at,
        )
        self._store.put_json(manifest_key(job_id), manifest)
        if not self._state.finish_job(job_id, status, manifest_key(job_id), completed_at):
            return False  # another checker finished it first
        self._events.job_completed(
            {
                "job_id": job_id,
                "status": status,
                "source_key": job["key"],
                "counts": manifest["counts"],
                "manifest_key": manifest_key(job_id),
            }
        )
        logger.info("job finished", extra={"job_id": job_id, "status": status})
        return True
