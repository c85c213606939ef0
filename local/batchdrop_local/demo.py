"""`make demo`: records mode, the whole pipeline on this machine. The local stack (moto for
AWS, the emulator for Anthropic, both on 127.0.0.1) runs the real handlers; a pipeline is put
under pipelines/, a CSV of product reviews dropped into inbox/reviews/ comes back as
results/<job_id>/outputs.csv, one row per review in the file's order, with its manifest.

It exits 0 only when the job COMPLETED and outputs.csv has exactly one row per review, in
the CSV's order."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from batchdrop.domain.jobs import manifest_key
from batchdrop_client import Batchdrop
from batchdrop_client.table import format_table
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE = SAMPLES / "reviews.csv"
PIPELINE = SAMPLES / "reviews.yaml"
PIPELINE_NAME = "reviews"
ID_FIELD = "review_id"
RESPONDER = "batchdrop_local.demo_responder:classify_review"
# What the table shows of outputs.csv; the file has every column (docs/records.md#the-outputs).
SHOWN = ("id", "product", "status", "sentiment", "confidence", "reason")
TIMEOUT_SECONDS = 120


def main() -> int:
    ids = sample_ids()
    print("Starting the local stack: moto (AWS) and the Message Batches emulator (Anthropic) on 127.0.0.1.")
    print("Answers come from the emulator's keyword responder, not from Claude.\n")
    # The handlers' JSON logs and metrics are for CloudWatch; keep the demo's screen readable.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    quiet = {"LogLevel": "WARNING"}
    with LocalStack(latency=3.0, responder=RESPONDER, parameters=quiet) as stack, LocalRunner(stack, tick_seconds=1.0):
        client = local_client(stack)
        put = client.put_pipeline(PIPELINE)
        print(f"put {PIPELINE.name} at s3://{stack.bucket_name}/{put.key}: files dropped into {put.inbox} use it")
        job = client.submit(SAMPLE, pipeline=PIPELINE_NAME)
        print(f"dropped {SAMPLE.name} ({len(ids)} reviews) at s3://{stack.bucket_name}/{job.key}")
        print(f"job {job.job_id}")
        manifest = wait_for_manifest(stack, job.job_id, timeout=TIMEOUT_SECONDS)
        header, rows = client.output_rows(job.job_id, len(ids) + 1) if manifest.get("outputs") else ([], [])
    _print_outputs(header, rows, manifest)
    _print_manifest(manifest)
    print("\nNative mode (request lines in, result lines out) is in README.md; records mode in docs/records.md.")
    print("Against Claude itself: `batchdrop local up --anthropic-api` runs this stack with your ANTHROPIC_API_KEY")
    print("(it spends money: every request is billed at the batch price); `make deploy` puts the same")
    print("template and handlers in your AWS account (docs/deploy.md).")
    return _verdict(manifest, header, rows, ids)


def sample_ids() -> list[str]:
    """The sample's review ids, in the file's order: the ids outputs.csv must give, in order."""
    with SAMPLE.open(newline="", encoding="utf-8-sig") as source:
        return [record[ID_FIELD] for record in csv.DictReader(source)]


def local_client(stack: LocalStack) -> Batchdrop:
    """The client the `batchdrop` command uses, on the running local stack's bucket and table."""
    import boto3

    env = stack.env
    session = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )
    return Batchdrop(stack.bucket_name, stack.table_name, session, stack.moto_url)


def _verdict(manifest: dict[str, Any], header: list[str], rows: list[list[str]], ids: list[str]) -> int:
    """0 when the job COMPLETED with one row per review in the CSV's order; else 1, saying why."""
    if manifest["status"] != "COMPLETED":
        print(f"\ndemo failed: job {manifest['job_id']} ended {manifest['status']}: {manifest.get('reason', '')}")
        return 1
    got = [row[header.index("id")] for row in rows] if "id" in header else []
    if got != ids:
        print(f"\ndemo failed: outputs.csv of job {manifest['job_id']} has ids {got}, expected {ids} (one per review)")
        return 1
    return 0


def wait_for_manifest(stack: LocalStack, job_id: str, timeout: float) -> dict[str, Any]:
    """The job's manifest once the job has ended, its progress printed meanwhile."""
    table = stack.client("dynamodb")
    started = time.monotonic()
    live = sys.stdout.isatty()  # redraw one line on a terminal; in a log, print each change once
    last = ""
    while time.monotonic() - started < timeout:
        items = table.query(
            TableName=stack.table_name,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}},
            ConsistentRead=True,
        )["Items"]
        status = next((i["status"]["S"] for i in items if i["SK"]["S"] == "JOB"), "WAITING FOR THE S3 EVENT")
        shards = [i["state"]["S"] for i in items if i["SK"]["S"] != "JOB"]
        line = f"  {status}: batches {', '.join(shards) or '-'}"
        if live:
            print(f"\r{line:<70} {time.monotonic() - started:5.1f} s", end="", flush=True)
        elif line != last:
            print(line, flush=True)
        last = line
        if status in ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"):
            if live:
                print()
            body = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=manifest_key(job_id))["Body"]
            return dict(json.loads(body.read()))
        time.sleep(0.3)
    raise SystemExit(f"demo: job {job_id} did not finish within {timeout:.0f} s")


def _print_outputs(header: list[str], rows: list[list[str]], manifest: dict[str, Any]) -> None:
    if not header:
        print(f"\njob {manifest['job_id']} wrote no outputs.csv")
        return
    columns = [header.index(name) for name in SHOWN if name in header]
    hidden = [name for name in header if name not in SHOWN]
    width = shutil.get_terminal_size((120, 24)).columns
    print(f"\n{manifest['outputs']['csv']}: {len(rows)} rows (not shown here: {', '.join(hidden)})")
    for line in format_table([header[i] for i in columns], [[row[i] for i in columns] for row in rows], width):
        print(line)


def _print_manifest(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    cost = manifest["cost"]
    print(f"\nmanifest results/{manifest['job_id']}/manifest.json: {manifest['status']}")
    print("  " + ", ".join(f"{counts[k]} {k}" for k in ("requests", "succeeded", "errored", "expired", "rejected")))
    batch_ids = [attempt["batch_id"] for shard in manifest["batches"] for attempt in shard["attempts"]]
    print(f"  {len(batch_ids)} batch(es): " + ", ".join(str(batch_id) for batch_id in batch_ids))
    print(f"  cost ${cost['batch_usd']} at the batch price; ${cost['standard_usd']} at the standard price")
    estimate = manifest.get("estimate")
    if estimate:
        error = "" if estimate["error"] is None else f" (the actual {estimate['error']:+.1%} off it)"
        print(
            f"  estimated before sending: ${estimate['cost_usd']['batch_cached_expected']} expected{error},"
            f" ${estimate['cost_usd']['batch_max']} at most"
        )
    outputs = manifest.get("outputs") or {}
    if outputs:
        print(f"  outputs: {outputs['csv']}, {outputs['jsonl']}")
    if manifest.get("report"):
        print(f"  report: {manifest['report']} (one HTML page: `batchdrop report {manifest['job_id']} --open`)")


if __name__ == "__main__":
    sys.exit(main())
