"""The cost estimate every job gets before any of it is sent: work/<job_id>/estimate.json.

The split feeds each request it puts in a shard to an Estimator (domain/estimate.py); once
the whole file is split, and before the shards are recorded (so before any create), its
sample is counted with the API's count_tokens, a few at a time, with the SDK's retries, for
at most ESTIMATE_SECONDS, and the estimate is written if absent: a run after a crash counts
again, and the first one stays. It is kept under work/ (the job's working files), not
results/, which holds what the job gave; the manifest copies it when the job ends.

Counting never holds a job up: a count that fails is left out of the sample, and when none
succeeds the estimate is the local approximation and says why. Nothing here fails the job
either: an estimate that cannot be made is logged and the job goes on.

The expected output comes from the pipeline's earlier jobs when it has any (the output
tokens its last finished job used for the max_tokens it allowed, kept at
history/pipelines/<name>.json by the checker as the job finishes), else from the default
share of max_tokens. The manifest sets the estimate beside the actual cost when the job ends
(`beside_actual`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from batchdrop.domain.estimate import Estimator, OutputHistory, counted_estimate
from batchdrop.domain.records import PipelineRef, SourceRef
from batchdrop.observability import logger
from batchdrop.ports import ObjectStore, Wiring

ESTIMATE_SECONDS = 60.0  # the most counting may take of an invocation
COUNT_WORKERS = 8  # counts are round trips: the time they take is the API's latency, not work
# Counting stops once the input's 95% bound is within this share of it (domain/estimate.py):
# each count is a round trip and count_tokens has a rate limit of its own.
COUNT_PRECISION = 0.005
MAX_ESTIMATE_BYTES = 1024 * 1024
MAX_HISTORY_BYTES = 64 * 1024


def estimate_key(job_id: str) -> str:
    return f"work/{job_id}/estimate.json"


def history_key(pipeline: PipelineRef) -> str:
    """Where a pipeline's output history is kept: history/pipelines/<name>.json."""
    name = pipeline.key.rpartition("/")[2].rpartition(".")[0] or pipeline.key
    return f"history/pipelines/{name}.json"


def keep_estimate(
    wired: Wiring,
    job_id: str,
    source: SourceRef,
    estimator: Estimator,
    *,
    pipeline: PipelineRef | None = None,
    seconds: float = ESTIMATE_SECONDS,
    primed: bool = False,
) -> dict[str, Any] | None:
    """The job's estimate, made now (its sample counted for at most `seconds`) and kept if
    absent: the one kept first when another run got there first. None, logged, when it
    cannot be made. `primed`: the job primes its cache before its batch (services/priming.py)."""
    key = estimate_key(job_id)
    try:
        history = _history(wired.store, pipeline) if pipeline is not None else None
        estimate, note = counted_estimate(
            estimator,
            wired.batches.count_tokens,
            workers=COUNT_WORKERS,
            seconds=max(0.0, seconds),
            history=history,
            primed=primed,
            precision=COUNT_PRECISION,
        )
        document = {"job_id": job_id, "source_key": source.key, "estimated_at": wired.stamp(), **estimate}
        if note is not None:
            document["note"] = note
        if not wired.store.put_json(key, document, if_absent=True):
            return read_json(wired.store, key, MAX_ESTIMATE_BYTES)
        logger.info("job estimated", extra={"cost_usd": estimate["cost_usd"], "input": estimate["method"]["input"]})
        return document
    except Exception:  # noqa: BLE001 - an estimate is worth a log line, never the job
        logger.warning("the job's estimate could not be made: it goes on without one", exc_info=True)
        return None


def note_history(store: ObjectStore, pipeline: PipelineRef, estimate: Mapping[str, Any], output_tokens: int) -> None:
    """Keep what a finished job of `pipeline` used: its output tokens for the max_tokens its
    requests allowed (from its estimate), for the next job's expected output."""
    allowed = estimate.get("output_tokens_max")
    if not isinstance(allowed, int) or allowed <= 0:
        return
    store.put_json(
        history_key(pipeline),
        {"job_id": estimate.get("job_id"), "output_tokens": output_tokens, "max_tokens": allowed},
    )


def beside_actual(estimate: Mapping[str, Any], actual_batch_usd: str, priming_usd: str | None = None) -> dict[str, Any]:
    """The manifest's `estimate`: what was estimated before sending, the actual cost (the
    batches', and the priming request's when the job primed its cache, as the estimate counts
    it), and the error of the expected figure (actual / expected - 1; None when nothing was
    expected)."""
    costs = estimate.get("cost_usd") or {}
    method = estimate.get("method") or {}
    expected, most, actual = (
        _decimal(costs.get("batch_cached_expected")),
        _decimal(costs.get("batch_max")),
        _decimal(actual_batch_usd),
    )
    if actual is not None and priming_usd is not None and (primed := _decimal(priming_usd)) is not None:
        actual += primed
    error = None
    if expected is not None and actual is not None and expected > 0:
        error = float(((actual / expected) - 1).quantize(Decimal("0.0001")))
    return {
        "key": estimate_key(str(estimate.get("job_id"))),
        "cost_usd": dict(costs),
        "input": method.get("input"),
        "output_expected": method.get("output_expected"),
        "actual_batch_usd": actual_batch_usd,
        **({"actual_usd": str(actual)} if priming_usd is not None and actual is not None else {}),
        "error": error,
        "within_max": None if most is None or actual is None else actual <= most,
    }


def read_json(store: ObjectStore, key: str, max_bytes: int) -> dict[str, Any] | None:
    """A small JSON object, or None when the key holds none."""
    found = store.read_small(key, max_bytes=max_bytes)
    if found is None or found.data is None:
        return None
    document = json.loads(found.data)
    return document if isinstance(document, dict) else None


def _history(store: ObjectStore, pipeline: PipelineRef) -> OutputHistory | None:
    kept = read_json(store, history_key(pipeline), MAX_HISTORY_BYTES)
    if kept is None:
        return None
    output, allowed = kept.get("output_tokens"), kept.get("max_tokens")
    if not isinstance(output, int) or not isinstance(allowed, int) or allowed <= 0:
        return None
    return OutputHistory(output_tokens=output, max_tokens=allowed)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None
