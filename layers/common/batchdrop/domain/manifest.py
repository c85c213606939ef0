"""The job's manifest (results/<job_id>/manifest.json): what was asked, what came back, what it
cost, where it is. Built only if its counts add up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from batchdrop.domain.prices import PriceTable
from batchdrop.domain.states import JobStatus
from batchdrop.domain.usage import Usage, cost_usd, price_family, uncached_cost_usd

OUTCOMES = ("succeeded", "errored", "canceled", "expired")
_USD_PLACES = Decimal("0.000001")
# The part of the manifest's cost the completion event carries (and `batchdrop status` shows).
COST_SUMMARY = ("batch_usd", "standard_usd", "saved_by_caching_usd")


def build_manifest(
    *,
    job_id: str,
    source: Mapping[str, str],
    status: str,
    requested: int,
    rejected: int,
    counts: Mapping[str, int],
    batches: Sequence[Mapping[str, Any]],
    usage_by_model: Mapping[str, Usage],
    result_keys: Sequence[str],
    rejected_key: str | None,
    created_at: str,
    completed_at: str,
    reason: str | None = None,
    outputs: Mapping[str, str] | None = None,
    prices: PriceTable | None = None,
    report_key: str | None = None,
) -> dict[str, Any]:
    """A JSON-ready manifest. Raises ValueError when the outcomes do not add up to the requests
    submitted (a manifest that doesn't add up must never be written), on an unknown status or
    outcome, or on a negative count. Counts may arrive as Decimal (DynamoDB): they leave as ints.
    `outputs`: a records-mode job's outputs files by format (csv, jsonl), named under "outputs".
    `prices`: the price table (the shipped one by default). `report_key`: where the job's report
    (domain/report.py) goes, named under "report"; the checker's jobs have one, a failed one none."""
    JobStatus(status)  # raises ValueError on a status the system does not have
    outcome_counts = _outcome_counts(counts, "counts")
    requests = _count(requested, "requested")
    total = sum(outcome_counts.values())
    if total != requests:
        raise ValueError(f"outcomes add up to {total} ({outcome_counts}), not to the {requests} requests submitted")

    shards = [_batch(batch) for batch in batches]
    total_usage = Usage()
    for usage in usage_by_model.values():
        total_usage.merge(usage)
    batch_usd = _usd(cost_usd(usage_by_model, batch=True, prices=prices))
    standard_usd = _usd(cost_usd(usage_by_model, batch=False, prices=prices))
    uncached_batch_usd = _usd(uncached_cost_usd(usage_by_model, batch=True, prices=prices))

    manifest: dict[str, Any] = {
        "job_id": job_id,
        "source": {name: source[name] for name in ("bucket", "key", "version_id")},
        "status": str(status),
        "counts": {"requests": requests, "rejected": _count(rejected, "rejected"), **outcome_counts},
        "batches": shards,
        "attempts": _attempt_summary(shards),
        "usage": {
            "total": total_usage.as_dict(),
            "by_model": {model: usage.as_dict() for model, usage in sorted(usage_by_model.items())},
        },
        "cost": {
            "batch_usd": str(batch_usd),
            "standard_usd": str(standard_usd),
            # From the rounded figures, so the printed numbers agree with each other.
            "saved_usd": str(standard_usd - batch_usd),
            "saved_vs_standard_usd": str(standard_usd - batch_usd),
            "saved_by_caching_usd": str(uncached_batch_usd - batch_usd),
            "priced_as": {model: price_family(model, prices) for model in sorted(usage_by_model)},
        },
        "timings": {"created_at": created_at, "completed_at": completed_at},
        "results": list(result_keys),
        "errors": rejected_key,
    }
    if reason is not None:
        manifest["reason"] = reason
    if outputs is not None:
        manifest["outputs"] = dict(outputs)
    if report_key is not None:
        manifest["report"] = report_key
    return manifest


def cost_summary(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The manifest's batch and standard cost and what caching saved, as decimal strings, and
    what the job was estimated to cost before it was sent (expected and at most) when the
    manifest has its estimate; a manifest written before a figure existed gives those it has."""
    cost = manifest.get("cost") or {}
    summary = {name: str(cost[name]) for name in COST_SUMMARY if name in cost}
    estimated = (manifest.get("estimate") or {}).get("cost_usd") or {}
    for name, figure in (("estimated_usd", "batch_cached_expected"), ("estimated_max_usd", "batch_max")):
        if figure in estimated:
            summary[name] = str(estimated[figure])
    return summary


def _batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """One shard: its requests, their final outcomes, and each attempt's batch (the first
    sends every request; each retry sends again those whose outcome was transient)."""
    attempts = [_attempt(attempt) for attempt in batch.get("attempts") or []]
    shard: dict[str, Any] = {
        "shard": _count(batch["shard"], "batches[].shard"),
        "requests": _count(batch["requests"], "batches[].requests"),
        "counts": _outcome_counts(batch.get("counts") or {}, "batches[].counts"),
        "attempts": attempts,
    }
    final = sum(shard["counts"].values())
    if final != shard["requests"]:
        raise ValueError(f"shard {shard['shard']}: final outcomes add up to {final}, not to {shard['requests']}")
    return shard


def _attempt(attempt: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": _count(attempt["attempt"], "attempts[].attempt"),
        "batch_id": attempt.get("batch_id"),  # None: never sent (canceled before, or refused)
        "requests": _count(attempt["requests"], "attempts[].requests"),
        "counts": _outcome_counts(attempt.get("counts") or {}, "attempts[].counts"),
        "retried": _count(attempt.get("retried", 0), "attempts[].retried"),
    }
    if "creates" in attempt:
        entry["creates"] = _count(attempt["creates"], "attempts[].creates")
    if attempt.get("refused"):
        entry["refused"] = str(attempt["refused"])
    if attempt.get("ended_at"):  # when its batch ended (the report's timeline); none for an unsent one
        entry["ended_at"] = str(attempt["ended_at"])
    return entry


def _attempt_summary(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How many requests got their final outcome at each attempt, and how many were retried."""
    final_at: dict[str, int] = {}
    retried = 0
    sent = 0
    for shard in batches:
        for attempt in shard["attempts"]:
            number = str(attempt["attempt"])
            final_at[number] = final_at.get(number, 0) + attempt["requests"] - attempt["retried"]
            retried += attempt["retried"]
            sent += attempt["batch_id"] is not None
    return {"final_at_attempt": final_at, "requests_retried": retried, "batches_created": sent}


def _outcome_counts(counts: Mapping[str, Any], name: str) -> dict[str, int]:
    unknown = sorted(set(counts) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"{name}: unknown result type(s) {unknown}; expected {list(OUTCOMES)}")
    return {outcome: _count(counts.get(outcome, 0), f"{name}.{outcome}") for outcome in OUTCOMES}


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or value != int(value) or value < 0:
        raise ValueError(f"{name}: must be a whole number >= 0, got {value!r}")
    return int(value)


def _usd(amount: Decimal) -> Decimal:
    return amount.quantize(_USD_PLACES, rounding=ROUND_HALF_UP)
