"""Records mode's outputs at size: one tick of the real CheckerFunction finishing a records
job of 10,000 and of 100,000 records (4 shards, each one's results shuffled, answers of about
1 KB: some 14 and 140 MB of result parts) into outputs.csv and outputs.jsonl, beside a plain
copy of the same result parts from S3 to S3 measured in the same run, and the floor any way of
writing two outputs from parsed results pays (each line parsed and written twice, nothing
ordered or checked), shown beside, not judged. Each runs in a fresh interpreter
(bench.outputs_child), so its peak RSS is its own. Judged: peak RSS under 256 MB,
flat between the two sizes, and ours' time at most 2x the copy's. --quick: 1,000 then 5,000.

Disk: the local stack's bucket holds the parts, both outputs and the copy (some 500 MB at
100,000 records) until the stack stops, which deletes it all; the checker's spill file in /tmp
holds one shard's results at a time and is unlinked as it is opened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from batchdrop_local.stack import LocalStack
from bench import procs
from bench.table import Figure

PEAK_GOAL_MB = 256
FLAT_WITHIN = 0.20
TIMES_COPY = 2.0  # ours' time at most this many times a plain copy's


def _finish(stack: LocalStack, records: int) -> dict[str, Any]:
    env = stack.function_env("CheckerFunction")
    seeded = procs.run_child("bench.outputs_child", "seed", str(records), env=env)
    ours = procs.run_child("bench.outputs_child", "ours", env=env)
    if ours["finished"] != 1:
        raise RuntimeError(f"the tick did not finish the job: {ours}")
    copy = procs.run_child("bench.outputs_child", "copy", seeded["job_id"], env=env)
    floor = procs.run_child("bench.outputs_child", "floor", seeded["job_id"], env=env)
    s3 = stack.client("s3")
    outputs = s3.head_object(Bucket=stack.bucket_name, Key=f"results/{seeded['job_id']}/outputs.csv")
    rows = sum(chunk.count(b"\n") for chunk in _chunks(stack, f"results/{seeded['job_id']}/outputs.jsonl"))
    if rows != records:
        raise RuntimeError(f"outputs.jsonl holds {rows} rows for {records} records")
    return {
        "seconds": ours["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "bytes": copy["bytes"],
        "csv_bytes": outputs["ContentLength"],
        "copy_seconds": copy["seconds"],
        "copy_peak_rss_mb": copy["peak_rss_mb"],
        "floor_seconds": floor["seconds"],
    }


def _chunks(stack: LocalStack, key: str) -> Iterator[bytes]:
    body = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=key)["Body"]
    try:
        yield from body.iter_chunks(procs.MB)
    finally:
        body.close()


def run(quick: bool) -> list[Figure]:
    small, large = (1_000, 5_000) if quick else (10_000, 100_000)
    with LocalStack(latency=3600) as stack:
        print(f"outputs: finishing records jobs of {small:,} then {large:,} records…", flush=True)
        few = _finish(stack, small)
        many = _finish(stack, large)
    label = f"{large:,} records, {many['bytes'] / 1e6:.0f} MB of results"
    growth = many["peak_rss_mb"] / few["peak_rss_mb"] - 1
    within = many["seconds"] / many["copy_seconds"]
    return [
        Figure(
            "outputs",
            f"records job to outputs.csv/.jsonl, {label}: peak RSS",
            many["peak_rss_mb"],
            "MB",
            "plain copy",
            many["copy_peak_rss_mb"],
            many["copy_peak_rss_mb"] / many["peak_rss_mb"],
            f"< {PEAK_GOAL_MB} MB",
            many["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
        Figure(
            "outputs",
            f"peak RSS, {large:,} vs {small:,} records",
            many["peak_rss_mb"],
            "MB",
            f"ours on {small:,}",
            few["peak_rss_mb"],
            few["peak_rss_mb"] / many["peak_rss_mb"],
            f"flat: within {FLAT_WITHIN:.0%}",
            abs(growth) <= FLAT_WITHIN,
        ),
        Figure(
            "outputs",
            f"records job to outputs, {label}: time",
            many["seconds"],
            "s",
            "plain copy of the parts",
            many["copy_seconds"],
            many["copy_seconds"] / many["seconds"],
            f"ours <= {TIMES_COPY:g}x the copy's time (ratio >= {1 / TIMES_COPY:.2f}x)",
            within <= TIMES_COPY,
        ),
        Figure(
            "outputs",
            f"the least any path to two output files pays, {label}: the parts read, each line parsed"
            " (jiter, as ours), written as they are to two objects; no order, no row, no check",
            many["floor_seconds"],
            "s",
            "plain copy of the parts",
            many["copy_seconds"],
            many["copy_seconds"] / many["floor_seconds"],
        ),
        Figure(
            "outputs",
            f"records job to outputs, {label}: time, beside that floor",
            many["seconds"],
            "s",
            "the floor above",
            many["floor_seconds"],
            many["floor_seconds"] / many["seconds"],
        ),
    ]
