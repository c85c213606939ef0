"""`make demo`: the whole pipeline on this machine. The local stack (moto for AWS, the
emulator for Anthropic, both on 127.0.0.1) runs the real handlers; a file of product
reviews dropped into inbox/ comes back classified in results/, with its manifest."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
RESPONDER = "batchdrop_local.demo_responder:classify_review"
SOURCE_KEY = "inbox/reviews.jsonl"


def main() -> int:
    reviews = {}
    for line in SAMPLE.read_text().splitlines():
        if line.strip():
            request = json.loads(line)
            reviews[request["custom_id"]] = request["params"]["messages"][0]["content"].removeprefix("Review: ")
    print("Starting the local stack: moto (AWS) and the Message Batches emulator (Anthropic) on 127.0.0.1.")
    print("Answers come from the emulator's keyword responder, not from Claude.\n")
    # The handlers' JSON logs and metrics are for CloudWatch; keep the demo's screen readable.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    quiet = {"LogLevel": "WARNING"}
    with LocalStack(latency=3.0, responder=RESPONDER, parameters=quiet) as stack, LocalRunner(stack, tick_seconds=1.0):
        s3 = stack.client("s3")
        version = s3.put_object(Bucket=stack.bucket_name, Key=SOURCE_KEY, Body=SAMPLE.read_bytes())["VersionId"]
        job_id = job_id_for(stack.bucket_name, SOURCE_KEY, version)
        print(f"dropped {SAMPLE.name} ({len(reviews)} requests) at s3://{stack.bucket_name}/{SOURCE_KEY}")
        print(f"job {job_id}")
        manifest = _wait_for_manifest(stack, job_id, timeout=120)
        rows = [json.loads(line) for key in manifest["results"] for line in _read(stack, key).splitlines()]
    _print_results(rows, reviews)
    _print_manifest(manifest)
    print("\nAgainst Claude itself: `batchdrop local up --anthropic-api` runs this stack with your ANTHROPIC_API_KEY")
    print("(it spends money: every request is billed at the batch price); `sam deploy --guided` puts the same")
    print("template and handlers in your AWS account (docs/deploy.md).")
    return 0 if manifest["status"] == "COMPLETED" else 1


def _read(stack: LocalStack, key: str) -> bytes:
    return stack.client("s3").get_object(Bucket=stack.bucket_name, Key=key)["Body"].read()


def _wait_for_manifest(stack: LocalStack, job_id: str, timeout: float) -> dict[str, Any]:
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
        if status in ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"):
            if live:
                print()
            return json.loads(_read(stack, manifest_key(job_id)))
        time.sleep(0.3)
    raise SystemExit(f"the job did not finish within {timeout:.0f} s")


def _print_results(rows: list[dict[str, Any]], reviews: dict[str, str]) -> None:
    print(f"\n{'custom_id':<12} {'answer':<9} {'in':>4} {'out':>4}  review")
    for row in sorted(rows, key=lambda r: r["custom_id"]):
        result = row["result"]
        if result["type"] != "succeeded":
            print(f"{row['custom_id']:<12} {result['type']}")
            continue
        message = result["message"]
        answer = "".join(block.get("text", "") for block in message["content"])
        review = reviews.get(row["custom_id"], "")
        review = review if len(review) <= 58 else review[:57] + "..."
        usage = message["usage"]
        print(f"{row['custom_id']:<12} {answer:<9} {usage['input_tokens']:>4} {usage['output_tokens']:>4}  {review}")


def _print_manifest(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    cost = manifest["cost"]
    print(f"\nmanifest results/{manifest['job_id']}/manifest.json: {manifest['status']}")
    print("  " + ", ".join(f"{counts[k]} {k}" for k in ("requests", "succeeded", "errored", "expired", "rejected")))
    batch_ids = [attempt["batch_id"] for shard in manifest["batches"] for attempt in shard["attempts"]]
    print(f"  {len(batch_ids)} batch(es): " + ", ".join(str(batch_id) for batch_id in batch_ids))
    print(f"  cost ${cost['batch_usd']} at the batch price; ${cost['standard_usd']} at the standard price")


if __name__ == "__main__":
    sys.exit(main())
