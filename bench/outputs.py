"""Records mode's outputs at size, two ways.

The whole results path of a records job: a CSV of 100,000 reviews dropped at inbox/reviews/
(bench.records' pipeline: an output schema, kept fields, an id_field), submitted by the real
SubmitFunction to the emulator, whose answers are structured ones of about 1 KB
(bench.responders.sentiment), its batches ended; then one tick of the real CheckerFunction
collects every result into S3, making each into its row's tail as it comes, and writes
outputs.csv and outputs.jsonl. Judged beside a plain copy of the same results from the
emulator to S3 (bench.results_child copy, the results section's baseline), run just before
and just after ours and taken as the mean of the two: ours at most 2x its time, peak RSS
under 256 MB.

The outputs step alone: one tick finishing a records job of 10,000 and of 100,000 records
whose shards are already collected (4 shards, each one's results shuffled, answers of about
1 KB: some 14 and 140 MB of result parts), beside an S3-to-S3 copy of its parts and the floor
any way of writing two outputs from parsed results pays (each line parsed and written twice,
nothing ordered or checked). Judged: peak RSS under 256 MB and flat between the two sizes;
the times are shown, not judged (docs/performance.md says why). Each step runs in a fresh
interpreter (bench.outputs_child, bench.results_child), so its peak RSS is its own.
--quick: 1,000 then 5,000 records, and 5,000 for the whole path.

Disk: the local stack's bucket holds the CSV, the parts, both outputs and the copies (some
1 GB at 100,000 records) until the stack stops, which deletes it all; the checker's spill
files in /tmp hold one shard's results at a time and are unlinked as they are made."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.stack import LocalStack
from bench import procs
from bench.records import NAME, PIPELINE, write_reviews
from bench.submit import job_of, shard_items, submit_child, upload
from bench.table import Figure

PEAK_GOAL_MB = 256
FLAT_WITHIN = 0.20
TIMES_COPY = 2.0  # the whole results path's time at most this many times a plain copy's
REVIEW_BYTES = 300  # a review's size in the whole path's CSV: the requests' size is not measured


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
    _check_rows(stack, seeded["job_id"], records)
    return {
        "seconds": ours["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "bytes": copy["bytes"],
        "csv_bytes": outputs["ContentLength"],
        "copy_seconds": copy["seconds"],
        "copy_peak_rss_mb": copy["peak_rss_mb"],
        "floor_seconds": floor["seconds"],
    }


def _whole_path(stack: LocalStack, records: int, workdir: Path) -> dict[str, Any]:
    """A records job submitted to the emulator and its batches ended; then one checker tick
    collecting and finishing it (ours) and a plain copy of each batch's results."""
    stack.client("s3").put_object(
        Bucket=stack.bucket_name, Key=f"pipelines/{NAME}.json", Body=json.dumps(PIPELINE).encode()
    )
    source = workdir / "reviews.csv"
    write_reviews(source, records, records * REVIEW_BYTES)
    event = upload(stack, source, f"inbox/{NAME}/bench-path-{records}.csv")
    source.unlink()
    submitted = submit_child("ours", event, stack.function_env("SubmitFunction"), workdir)
    if submitted["status"] != "RUNNING":
        raise RuntimeError(f"the records job did not start: {submitted}")
    job_id = job_of(event)
    batch_ids = [item["batch_id"]["S"] for item in shard_items(stack, job_id)]
    EmulatorControl(stack.emulator_url, timeout=900).end(batch_ids)
    checker_env = stack.function_env("CheckerFunction")
    copy_env = {**checker_env, "BENCH_API_KEY": stack.api_key}
    # The copy runs just before and just after ours, and its time is the mean of the two: a
    # machine whose speed drifts (a shared one does) moves both sides of the ratio alike.
    before = [procs.run_child("bench.results_child", "copy", batch_id, env=copy_env) for batch_id in batch_ids]
    ours = procs.run_child("bench.results_child", "ours", env=checker_env)
    after = [procs.run_child("bench.results_child", "copy", batch_id, env=copy_env) for batch_id in batch_ids]
    if ours["collected"] != len(batch_ids) or ours["finished"] != 1:
        raise RuntimeError(f"the tick did not collect and finish the records job: {ours}")
    _check_rows(stack, job_id, records)
    return {
        "seconds": ours["seconds"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "bytes": sum(copy["bytes"] for copy in before),
        "copy_seconds": (sum(copy["seconds"] for copy in before) + sum(copy["seconds"] for copy in after)) / 2,
        "copies_seconds": (sum(copy["seconds"] for copy in before), sum(copy["seconds"] for copy in after)),
        "batches": len(batch_ids),
    }


def _check_rows(stack: LocalStack, job_id: str, records: int) -> None:
    """Each record has its row in outputs.jsonl, and every row is a succeeded answer."""
    statuses: Counter[str] = Counter()
    for row in _lines(stack, f"results/{job_id}/outputs.jsonl"):
        statuses[json.loads(row)["status"]] += 1
    if statuses.total() != records or statuses["succeeded"] != records:
        raise RuntimeError(f"outputs.jsonl holds {dict(statuses)} for {records} records")


def _lines(stack: LocalStack, key: str) -> Iterator[bytes]:
    body = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=key)["Body"]
    try:
        yield from body.iter_lines()
    finally:
        body.close()


def run(quick: bool) -> list[Figure]:
    small, large = (1_000, 5_000) if quick else (10_000, 100_000)
    path_records = 5_000 if quick else 100_000
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(latency=3600, responder="bench.responders:sentiment") as stack,
    ):
        print(f"outputs: a records job of {path_records:,} records from ended batches to outputs…", flush=True)
        whole = _whole_path(stack, path_records, Path(tmp))
        print(f"outputs: finishing collected records jobs of {small:,} then {large:,} records…", flush=True)
        few = _finish(stack, small)
        many = _finish(stack, large)
    return whole_path_figures(path_records, whole) + step_figures(small, large, few, many)


def whole_path_figures(records: int, whole: dict[str, Any]) -> list[Figure]:
    label = f"{records:,} records, {whole['bytes'] / 1e6:.0f} MB of results in {whole['batches']} batch(es)"
    return [
        Figure(
            "outputs",
            f"records job, ended batches to outputs.csv/.jsonl (results collected into S3 and made into rows as"
            f" they come, then the outputs written), {label}: time",
            whole["seconds"],
            "s",
            f"plain copy of the same results, emulator to S3 (the mean of one just before ours,"
            f" {whole['copies_seconds'][0]:.2f} s, and one just after, {whole['copies_seconds'][1]:.2f} s)",
            whole["copy_seconds"],
            whole["copy_seconds"] / whole["seconds"],
            f"ours <= {TIMES_COPY:g}x the copy's time (ratio >= {1 / TIMES_COPY:.2f}x)",
            whole["seconds"] <= TIMES_COPY * whole["copy_seconds"],
        ),
        Figure(
            "outputs",
            f"records job, ended batches to outputs, {label}: peak RSS",
            whole["peak_rss_mb"],
            "MB",
            "",
            None,
            None,
            f"< {PEAK_GOAL_MB} MB",
            whole["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
    ]


def step_figures(small: int, large: int, few: dict[str, Any], many: dict[str, Any]) -> list[Figure]:
    label = f"{large:,} records, {many['bytes'] / 1e6:.0f} MB of results"
    growth = many["peak_rss_mb"] / few["peak_rss_mb"] - 1
    return [
        Figure(
            "outputs",
            f"the outputs step alone, collected records job to outputs.csv/.jsonl, {label}: peak RSS",
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
            f"the outputs step alone: peak RSS, {large:,} vs {small:,} records",
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
            f"the outputs step alone, {label}: time (shown, not judged: two outputs written from the bytes"
            " the copy moves once)",
            many["seconds"],
            "s",
            "S3-to-S3 copy of the parts",
            many["copy_seconds"],
            many["copy_seconds"] / many["seconds"],
        ),
        Figure(
            "outputs",
            f"the least any path to two output files pays, {label}: the parts read, each line parsed"
            " (jiter, as ours), written as they are to two objects; no order, no row, no check",
            many["floor_seconds"],
            "s",
            "S3-to-S3 copy of the parts",
            many["copy_seconds"],
            many["copy_seconds"] / many["floor_seconds"],
        ),
        Figure(
            "outputs",
            f"the outputs step alone, {label}: time, beside that floor",
            many["seconds"],
            "s",
            "the floor above",
            many["floor_seconds"],
            many["floor_seconds"] / many["seconds"],
        ),
    ]
