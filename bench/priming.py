"""What cache priming does to a batch's cache reads and writes, and to its cost: one records
job run twice on one local stack, without and then with the pipeline's `prime_cache`, the
emulator's cache emptied in between. The pipeline caches a long system prompt for an hour
(some 6,000 tokens by the emulator's count, over Haiku 4.5's minimum of 4,096), and the job
is RECORDS records (--quick: RECORDS_QUICK), one batch.

The emulator's latency is LATENCY seconds, so an hour-long entry lives that long: longer than
the run. Its batches are ended as soon as they are created (the control endpoint's `end`)
rather than waited for. Inside a batch, a request sees a prefix written after the batch was
created with the emulator's `--cache-visibility` (0.1 by default): that figure, not the real
service's, decides the unprimed job's hits, so the ratios are the emulator's model of a batch,
not a measurement of the service. Figures only: no goal is judged.

    .venv/bin/python -m bench --only priming [--quick]
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from bench.table import Figure

AREA = "priming"
RECORDS = 200
RECORDS_QUICK = 50
LATENCY = 30.0
MODEL = "claude-haiku-4-5"
RUBRIC = "Mark each essay for clarity, structure, evidence and style, and explain every mark you give. " * 260
SYSTEM = [{"type": "text", "text": RUBRIC, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
JOB_TIMEOUT = 300.0


def _pipeline(prime: bool) -> bytes:
    document = {
        "model": MODEL,
        "max_tokens": 20,
        "system": SYSTEM,
        "prompt": "Essay {{n}}: {{text}}",
        "prime_cache": prime,
    }
    return json.dumps(document).encode()


def _records(count: int) -> bytes:
    return b"n,text\n" + b"".join(f"{n},An essay on topic {n}.\n".encode() for n in range(1, count + 1))


def _run_job(stack: Any, runner: Any, folder: str, records: int, *, prime: bool) -> dict[str, Any]:
    """Put the pipeline, upload the records, end each batch once created; the job's manifest."""
    from batchdrop.domain.jobs import job_id_for

    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket_name, Key=f"pipelines/{folder}.json", Body=_pipeline(prime))
    key = f"inbox/{folder}/essays.csv"
    version = s3.put_object(Bucket=stack.bucket_name, Key=key, Body=_records(records))["VersionId"]
    job_id = job_id_for(stack.bucket_name, key, version)
    manifest_key = f"results/{job_id}/manifest.json"
    deadline = time.monotonic() + JOB_TIMEOUT
    while s3.list_objects_v2(Bucket=stack.bucket_name, Prefix=manifest_key).get("KeyCount", 0) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {folder} job did not finish within {JOB_TIMEOUT:.0f} s")
        runner.deliver_pending()
        if stack.open_batch_count():
            stack.emulator_control().end()
        runner.tick()
        time.sleep(0.2)
    manifest: dict[str, Any] = json.loads(s3.get_object(Bucket=stack.bucket_name, Key=manifest_key)["Body"].read())
    if manifest["counts"]["succeeded"] != records:
        raise RuntimeError(f"the {folder} job did not answer every record: {manifest['counts']}")
    return manifest


def measure(records: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifests of the job unprimed, then primed."""
    from batchdrop_local.runner import LocalRunner
    from batchdrop_local.stack import LocalStack
    from bench.checker import quiet_handlers

    with quiet_handlers(), LocalStack(latency=LATENCY) as stack:
        runner = LocalRunner(stack, poll_seconds=0.05, retry_delay_seconds=0.1)
        print(f"priming: a records job of {records:,} records, unprimed then primed…", flush=True)
        unprimed = _run_job(stack, runner, "unprimed", records, prime=False)
        stack.emulator_control().reset()  # the cache emptied: the primed job reads only its own priming
        primed = _run_job(stack, runner, "primed", records, prime=True)
    if "priming" not in primed or "error" in primed["priming"]:
        raise RuntimeError(f"the primed job was not primed: {primed.get('priming')}")
    return unprimed, primed


def figures(records: int, unprimed: dict[str, Any], primed: dict[str, Any]) -> list[Figure]:
    label = f"records job, {records:,} requests sharing a 1-hour cached system prompt ({MODEL})"
    before, after = unprimed["usage"]["total"], primed["usage"]["total"]
    cost_before, cost_after = Decimal(unprimed["cost"]["batch_usd"]), Decimal(primed["cost"]["batch_usd"])
    priming_cost = Decimal(primed["priming"]["cost_usd"])
    saved_before = Decimal(unprimed["cost"]["saved_by_caching_usd"])
    saved_after = Decimal(primed["cost"]["saved_by_caching_usd"])
    reads_before, reads_after = before["cache_read_input_tokens"], after["cache_read_input_tokens"]
    writes_before, writes_after = before["cache_creation_input_tokens"], after["cache_creation_input_tokens"]
    return [
        Figure(
            AREA,
            f"{label}: cache read tokens, primed",
            reads_after,
            "tokens",
            "unprimed",
            reads_before,
            reads_after / reads_before if reads_before else None,
        ),
        Figure(
            AREA,
            f"{label}: cache write tokens in the batch, primed",
            writes_after,
            "tokens",
            "unprimed",
            writes_before,
            writes_before / writes_after if writes_after else None,
        ),
        Figure(
            AREA,
            f"{label}: batch cost, primed",
            float(cost_after),
            "$",
            "unprimed",
            float(cost_before),
            float(cost_before / cost_after) if cost_after else None,
        ),
        Figure(
            AREA,
            f"{label}: batch cost plus the priming request's (${priming_cost}, standard price), primed",
            float(cost_after + priming_cost),
            "$",
            "unprimed",
            float(cost_before),
            float(cost_before / (cost_after + priming_cost)) if cost_after + priming_cost else None,
        ),
        Figure(
            AREA,
            f"{label}: saved by caching (the manifest's saved_by_caching_usd), primed",
            float(saved_after),
            "$",
            "unprimed",
            float(saved_before),
        ),
    ]


def run(quick: bool) -> list[Figure]:
    records = RECORDS_QUICK if quick else RECORDS
    unprimed, primed = measure(records)
    return figures(records, unprimed, primed)
