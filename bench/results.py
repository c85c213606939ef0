"""Results at the API's limits: one tick of the real CheckerFunction collecting an ended
batch of 10,000 and of 100,000 results (about 1.1 KB each: 11 and 110 MB) into S3, beside a
plain copy of the same bytes from the emulator to S3 measured in the same run. Each runs in
a fresh interpreter (bench.results_child), so its peak RSS is its own. The throughput is
judged against the copy's (bench.goals: at least half of it). --quick: 500 then 5,000."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from bench import goals, procs
from bench.submit import job_of, shard_items, submit_child, upload
from bench.table import Figure

MB = procs.MB
PEAK_GOAL_MB = 256
FLAT_WITHIN = 0.20


def _collect(stack: LocalStack, requests: int, workdir: Path) -> dict[str, Any]:
    source = workdir / f"results-{requests}.jsonl"
    write_requests(source, requests)
    event = upload(stack, source, f"inbox/bench-results-{requests}.jsonl")
    submitted = submit_child("ours", event, stack.function_env("SubmitFunction"), workdir)
    if submitted["status"] != "RUNNING":
        raise RuntimeError(f"the job did not start: {submitted}")
    job_id = job_of(event)
    batch_ids = [item["batch_id"]["S"] for item in shard_items(stack, job_id)]
    EmulatorControl(stack.emulator_url, timeout=900).end(batch_ids)
    copy_env = {**stack.function_env("CheckerFunction"), "BENCH_API_KEY": stack.api_key}
    copies = [procs.run_child("bench.results_child", "copy", batch_id, env=copy_env) for batch_id in batch_ids]
    ours = procs.run_child("bench.results_child", "ours", env=stack.function_env("CheckerFunction"))
    if ours["collected"] != len(batch_ids) or ours["finished"] != 1:
        raise RuntimeError(f"the tick did not collect the job: {ours}")
    manifest = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=f"results/{job_id}/manifest.json")
    if b'"succeeded": %d' % requests not in manifest["Body"].read():
        raise RuntimeError("the manifest does not count every result")
    return {
        "seconds": ours["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "bytes": sum(copy["bytes"] for copy in copies),
        "copy_seconds": sum(copy["seconds"] for copy in copies),
        "copy_peak_rss_mb": max(copy["peak_rss_mb"] for copy in copies),
    }


def run(quick: bool) -> list[Figure]:
    small, large = (500, 5_000) if quick else (10_000, 100_000)
    with tempfile.TemporaryDirectory() as tmp, LocalStack(latency=3600, responder="bench.responders:padded") as stack:
        print(f"results: collecting {small:,} then {large:,} results…", flush=True)
        few = _collect(stack, small, Path(tmp))
        many = _collect(stack, large, Path(tmp))
    label = f"{large:,} results, {many['bytes'] / 1e6:.0f} MB"
    rate = many["bytes"] / MB / many["seconds"]
    copy_rate = many["bytes"] / MB / many["copy_seconds"]
    growth = many["peak_rss_mb"] / few["peak_rss_mb"] - 1
    return [
        Figure(
            "results",
            f"ended batch to S3, {label}: peak RSS",
            many["peak_rss_mb"],
            "MB",
            "plain copy",
            many["copy_peak_rss_mb"],
            many["copy_peak_rss_mb"] / many["peak_rss_mb"],
            f"< {PEAK_GOAL_MB} MB",
            many["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
        Figure(
            "results",
            f"peak RSS, {large:,} vs {small:,} results",
            many["peak_rss_mb"],
            "MB",
            f"ours on {small:,}",
            few["peak_rss_mb"],
            few["peak_rss_mb"] / many["peak_rss_mb"],
            f"flat: within {FLAT_WITHIN:.0%}",
            abs(growth) <= FLAT_WITHIN,
        ),
        throughput_figure(label, rate, copy_rate),
    ]


def throughput_figure(label: str, rate: float, copy_rate: float) -> Figure:
    """Ours in MB/s beside a plain copy of the same bytes, judged by bench.goals."""
    beside_copy = goals.results_beside_copy(rate, copy_rate)
    return Figure(
        "results",
        f"ended batch to S3, {label}: throughput",
        rate,
        "MB/s",
        "plain copy",
        copy_rate,
        rate / copy_rate,
        beside_copy.text,
        beside_copy.met,
    )
