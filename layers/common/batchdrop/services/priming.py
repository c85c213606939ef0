"""Priming: one synchronous request before a job's first batch, so that its batches read the
prompt cache instead of writing it over and over.

A batch's requests run in parallel, so those that share a cached prefix mostly miss each
other's writes: without a warm-up most of them write the prefix (1.25x the input price for
5 minutes, 2x for an hour) instead of reading it (0.1x). One request holding the prefix, sent
through the Messages API and answered before the first create, writes it once; every request
of a batch created while it lives reads it (docs/cost.md, "Cache hits in batches").

The request primed is the first line of the job's first shard that holds a `cache_control`
(among its first PRIME_SCAN_LINES), sent as it is but for `max_tokens: 1` (and without
`thinking`, which needs more room than that): the cache key is the prefix, so nothing before
a breakpoint changes. It is billed at the standard price, not the batch one.

What was done is kept at work/<job_id>/priming.json, written if absent: a run that finds it
primes nothing, so a job is primed once, however often its submit runs. A priming call that
fails is logged and kept there with its error, and the job goes on unprimed: priming never
holds a job up or fails it, and a re-run does not try again (the batch would be as costly as
it is without priming, no more)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from batchdrop.domain.records import JobRecord, PipelineRef, ShardRecord, SourceRef
from batchdrop.domain.shards import request_lines
from batchdrop.domain.states import ShardState
from batchdrop.domain.usage import Usage, cost_usd
from batchdrop.observability import logger
from batchdrop.ports import ObjectStore, Wiring

# The user metadata of an upload that turns priming on or off for its job
# (x-amz-meta-prime-cache: true; boto3's Metadata={"prime-cache": "true"}).
PRIME_CACHE_METADATA: Final = "prime-cache"
PRIME_SCAN_LINES: Final = 1000  # lines of the first shard looked at for a cached prefix
PRIME_MAX_TOKENS: Final = 1
MAX_PRIMING_BYTES: Final = 64 * 1024
_MARK: Final = b'"cache_control"'
_USD_PLACES: Final = Decimal("0.000001")


def priming_key(job_id: str) -> str:
    return f"work/{job_id}/priming.json"


def prime_before_first_create(wired: Wiring, job: JobRecord, shards: Sequence[ShardRecord]) -> dict[str, Any] | None:
    """Prime the job's cache if priming is on for it and none of its shards was sent yet;
    what priming.json holds once it did (None: nothing primed). Never raises: priming is
    worth a log line, never the job."""
    if job.cancel_requested or not shards or not all(_never_sent(shard) for shard in shards):
        return None
    try:
        wanted, said_by = priming_wanted(wired, job.source, job.pipeline)
        if not wanted:
            return None
        if wired.store.read_small(priming_key(job.job_id), max_bytes=MAX_PRIMING_BYTES) is not None:
            logger.info("the job's cache was primed by an earlier run: not again")
            return None
        return _prime(wired, job, min(shards, key=lambda shard: shard.index), said_by)
    except Exception:  # noqa: BLE001 - see the docstring
        logger.warning("priming failed: the job goes on unprimed", exc_info=True)
        return None


def priming_wanted(wired: Wiring, source: SourceRef, pipeline_ref: PipelineRef | None) -> tuple[bool, str]:
    """Whether the job of `source` (records mode: of that pipeline) is primed, and what said
    so: its upload's metadata first, then its pipeline's `prime_cache`, then the stack's
    default. The estimate asks before the job is recorded; the first create asks again."""
    value = wired.store.metadata(source.key, source.version_id).get(PRIME_CACHE_METADATA)
    if value is not None:
        flag = value.strip().lower()
        if flag in ("true", "false"):
            return flag == "true", f"the upload's x-amz-meta-{PRIME_CACHE_METADATA}"
        logger.warning(
            "the upload's prime-cache metadata is neither true nor false: ignored",
            extra={"key": source.key, "value": value[:40]},
        )
    if pipeline_ref is not None:
        # Here, not at the top: the checker imports this module (the manifest) and needs no pipeline parser.
        from batchdrop.services.records_intake import MAX_PIPELINE_BYTES, PIPELINE_PARSERS

        key = pipeline_ref.key
        read = wired.store.read_small(key, pipeline_ref.version_id, max_bytes=MAX_PIPELINE_BYTES)
        if read is not None and read.data is not None:
            parse = next(parse for suffix, parse in PIPELINE_PARSERS.items() if key.endswith(suffix))
            pipeline = parse(key, read.data)
            if pipeline.prime_cache is not None:
                return pipeline.prime_cache, f"the pipeline's prime_cache ({key})"
    return wired.prime_cache, "the stack's PrimeCache"


def first_cached_request(wired: Wiring, shard: ShardRecord) -> tuple[str, dict[str, Any]] | None:
    """The custom_id and params of the shard's first request holding a `cache_control`, read
    from the version of its body recorded (its first PRIME_SCAN_LINES lines at most)."""
    lines = iter(wired.store.lines(shard.key, shard.version_id))
    try:
        for line in itertools.islice(request_lines(lines), PRIME_SCAN_LINES):
            if _MARK not in line:
                continue
            request = json.loads(line)
            params = request.get("params")
            if isinstance(params, dict) and _holds_cache_control(params):
                return str(request["custom_id"]), params
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()  # the body's stream, left part-read
    return None


def priming_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The request as primed: the same, but for `max_tokens: 1` and no `thinking` (which needs
    a budget below max_tokens). Neither is part of a cached prefix."""
    primed = {name: value for name, value in params.items() if name != "thinking"}
    primed["max_tokens"] = PRIME_MAX_TOKENS
    return primed


def _prime(wired: Wiring, job: JobRecord, first: ShardRecord, said_by: str) -> dict[str, Any] | None:
    found = first_cached_request(wired, first)
    if found is None:
        logger.info(
            "priming is on but no request holds a cache_control: nothing to prime",
            extra={"shard": first.index, "lines_looked_at": PRIME_SCAN_LINES, "priming_said_by": said_by},
        )
        return None
    custom_id, params = found
    document: dict[str, Any] = {"job_id": job.job_id, "custom_id": custom_id, "model": params.get("model")}
    try:
        usage = wired.batches.prime(priming_params(params))
    except Exception as exc:  # noqa: BLE001 - a failed priming leaves the job as it would be without
        logger.warning("the priming request failed: the job goes on unprimed", exc_info=True)
        document["error"] = f"{type(exc).__name__}: {exc}"[:500]
    else:
        document["usage"] = usage
        document["cost_usd"] = str(standard_cost(str(params.get("model")), usage, wired))
    document["primed_at"] = wired.stamp()
    document["said_by"] = said_by
    if not wired.store.put_json(priming_key(job.job_id), document, if_absent=True):
        logger.info("another run kept its priming first")
    else:
        logger.info("job's cache primed", extra={"custom_id": custom_id, "error": document.get("error")})
    return document


def priming_summary(store: ObjectStore, job_id: str) -> dict[str, Any] | None:
    """What the manifest says of the job's priming: the request primed, its usage and its cost
    at the standard price (or why it failed); None when the job was not primed."""
    found = store.read_small(priming_key(job_id), max_bytes=MAX_PRIMING_BYTES)
    if found is None or found.data is None:
        return None
    kept = json.loads(found.data)
    summary = {"key": priming_key(job_id), "custom_id": kept.get("custom_id")}
    for name in ("usage", "cost_usd", "error"):
        if name in kept:
            summary[name] = kept[name]
    return summary


def standard_cost(model: str, usage: Mapping[str, Any], wired: Wiring) -> Decimal:
    """What a synchronous request's usage costs: the standard price (no batch discount)."""
    figures = Usage()
    figures.add_message_usage(usage)
    return cost_usd({model: figures}, batch=False, prices=wired.prices).quantize(_USD_PLACES, rounding=ROUND_HALF_UP)


def _never_sent(shard: ShardRecord) -> bool:
    return shard.state is ShardState.PENDING and shard.attempt == 1 and shard.creates_sent == 0


def _holds_cache_control(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_holds_cache_control(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_cache_control(item) for item in value)
    return False
