"""Submit at the API's limits: one object of 100,000 requests in 268 MB (one full shard)
from S3 to a recorded batch, by the real SubmitFunction handler, beside paths measured in
the same run on the same object and the same server:

- naive: parse every line into a list and call `messages.batches.create(requests=list)`,
  the pattern most guides show;
- minimal: check each line is a request, spool the create body to local disk and post it
  streamed (the least a correct submit can do, with no state and no S3 copy);
- parse floor: the object read and each line parsed, nothing else: what any path that
  checks its input pays at least, which bounds how much faster than naive any can be;
- a copy uploaded by the function (the body written to work/ and read back), which ours
  does not pay for a clean file.

Ours is judged against minimal and the parse floor (bench.goals: at most 1.5x minimal's
time, at most 2x the parse floor's). Naive is shown beside, not judged against: the parse
floor alone takes most of a quarter of naive's time, before any create is sent.

Then a 1 GB object of several shards, ours alone (no single create can take it). Each path
runs in a fresh interpreter (bench.submit_child) so its peak RSS is its own, against
bench.sink, which reads the body and answers: the times are the client's work, not a
server's parsing. S3 and DynamoDB are the local stack's moto server. --quick: 5,000
requests in 13 MB, then 20,000 in 54 MB (one shard)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchdrop.domain.jobs import job_id_for
from batchdrop_local.runner import ObjectVersion, build_s3_event
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from bench import goals, procs
from bench.table import Figure

MB = procs.MB
PEAK_GOAL_MB = 256


def upload(stack: LocalStack, path: Path, key: str) -> dict[str, Any]:
    """Put `path` at `key` (multipart, as a large upload would be); the S3 event for it."""
    s3 = stack.client("s3")
    s3.upload_file(str(path), stack.bucket_name, key)
    head = s3.head_object(Bucket=stack.bucket_name, Key=key)
    version = ObjectVersion(
        bucket=stack.bucket_name,
        key=key,
        version_id=head["VersionId"],
        size=head["ContentLength"],
        etag=head["ETag"].strip('"'),
        last_modified=head["LastModified"],
    )
    return build_s3_event(version, region=stack.region, sequencer="0", configuration_id="bench")


def submit_child(path: str, event: dict[str, Any], env: dict[str, str], workdir: Path) -> dict[str, Any]:
    event_file = workdir / f"event-{path}.json"
    event_file.write_text(json.dumps(event))
    return procs.run_child("bench.submit_child", path, str(event_file), env=env)


def job_of(event: dict[str, Any]) -> str:
    record = event["Records"][0]["s3"]
    return job_id_for(record["bucket"]["name"], record["object"]["key"], record["object"]["versionId"])


def shard_items(stack: LocalStack, job_id: str) -> list[dict[str, Any]]:
    return stack.client("dynamodb").query(
        TableName=stack.table_name,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :shard)",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":shard": {"S": "SHARD#"}},
        ConsistentRead=True,
    )["Items"]


def _recorded(stack: LocalStack, event: dict[str, Any]) -> tuple[int, int]:
    """(shards, shards with a batch) of the job the event made."""
    items = shard_items(stack, job_of(event))
    return len(items), sum(1 for item in items if "batch_id" in item)


def run(quick: bool) -> list[Figure]:
    requests, size = (5_000, 13_400_000) if quick else (100_000, 268_000_000)
    big_requests, big_size = (20_000, 53_500_000) if quick else (400_000, 1_070_000_000)
    label = f"{requests:,} requests, {size / 1e6:.0f} MB"
    big_label = f"{big_requests:,} requests, {big_size / 1e9:.2f} GB"
    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(latency=3600) as stack,
        procs.sink() as sink_url,
    ):
        workdir = Path(tmp)
        env = {**stack.function_env("SubmitFunction"), "ANTHROPIC_BASE_URL": sink_url}
        source = workdir / "requests.jsonl"
        write_requests(source, requests, size)
        event = upload(stack, source, "inbox/bench-limit.jsonl")
        source.unlink()
        print(f"submit: {label} uploaded; naive, minimal, ours…", flush=True)
        naive = submit_child("naive", event, env, workdir)
        minimal = submit_child("minimal", event, env, workdir)
        ours = submit_child("ours", event, env, workdir)
        floor = submit_child("s3-floor", event, env, workdir)
        parse_floor = submit_child("parse-floor", event, env, workdir)
        shards, sent = _recorded(stack, event)
        if (shards, sent) != (1, 1) or ours["status"] != "RUNNING":
            raise RuntimeError(f"ours did not record one batch: {shards} shards, {sent} sent, {ours}")

        write_requests(source, big_requests, big_size)
        big_event = upload(stack, source, "inbox/bench-large.jsonl")
        source.unlink()
        print(f"submit: {big_label} uploaded; ours…", flush=True)
        big = submit_child("ours", big_event, env, workdir)
        big_shards, big_sent = _recorded(stack, big_event)
        if big_shards < (1 if quick else 2) or big_sent != big_shards:
            raise RuntimeError(f"ours did not create every shard's batch: {big_sent} of {big_shards}")

    seconds = {
        "ours": ours["seconds"],
        "minimal": minimal["seconds"],
        "naive": naive["seconds"],
        "s3-floor": floor["seconds"],
        "parse-floor": parse_floor["seconds"],
    }
    figures += time_figures(label, seconds)
    figures += [
        Figure(
            "submit",
            f"object to recorded batch, {label}: peak RSS",
            ours["peak_rss_mb"],
            "MB",
            "naive list + batches.create",
            naive["peak_rss_mb"],
            naive["peak_rss_mb"] / ours["peak_rss_mb"],
            f">= 8x leaner than naive, < {PEAK_GOAL_MB} MB",
            naive["peak_rss_mb"] >= 8 * ours["peak_rss_mb"] and ours["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
        Figure(
            "submit",
            f"object to recorded batch, {label}: peak RSS",
            ours["peak_rss_mb"],
            "MB",
            "minimal stream-and-post",
            minimal["peak_rss_mb"],
            minimal["peak_rss_mb"] / ours["peak_rss_mb"],
        ),
        Figure(
            "submit",
            f"object to {big_shards} recorded batches, {big_label}: peak RSS",
            big["peak_rss_mb"],
            "MB",
            f"ours on {size / 1e6:.0f} MB",
            ours["peak_rss_mb"],
            ours["peak_rss_mb"] / big["peak_rss_mb"],
            f"< {PEAK_GOAL_MB} MB, flat with size",
            big["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
        Figure(
            "submit",
            f"object to {big_shards} recorded batches, {big_label}: throughput",
            big_size / MB / big["seconds"],
            "MB/s",
            f"ours on {size / 1e6:.0f} MB",
            size / MB / ours["seconds"],
            (big_size / big["seconds"]) / (size / ours["seconds"]),
        ),
    ]
    return figures


def time_figures(label: str, seconds: Mapping[str, float]) -> list[Figure]:
    """The time rows of the object of one full shard: ours judged against minimal and the
    parse floor (bench.goals), naive and the uploaded copy shown beside, not judged against."""
    ours, minimal, naive = seconds["ours"], seconds["minimal"], seconds["naive"]
    floor, parse_floor = seconds["s3-floor"], seconds["parse-floor"]
    beside_minimal = goals.submit_beside_minimal(ours, minimal)
    beside_parse_floor = goals.submit_beside_parse_floor(ours, parse_floor)
    return [
        Figure(
            "submit",
            f"object to recorded batch, {label}: time",
            ours,
            "s",
            "minimal stream-and-post",
            minimal,
            minimal / ours,
            beside_minimal.text,
            beside_minimal.met,
        ),
        Figure(
            "submit",
            f"object to recorded batch, {label}: time",
            ours,
            "s",
            "parse floor (object read, each line json.loads)",
            parse_floor,
            parse_floor / ours,
            beside_parse_floor.text,
            beside_parse_floor.met,
        ),
        Figure(
            "submit",
            f"object to recorded batch, {label}: time, beside minimal plus a durable copy uploaded by the "
            f"function (the body written to work/ and read back, nothing parsed: {floor:.2f} s here; "
            "ours has S3 copy a clean file instead)",
            ours,
            "s",
            "minimal + uploaded copy",
            minimal + floor,
            (minimal + floor) / ours,
        ),
        Figure(
            "submit",
            f"object to recorded batch, {label}: time (no goal beside naive: see the parse floor)",
            ours,
            "s",
            "naive list + batches.create",
            naive,
            naive / ours,
        ),
        Figure(
            "submit",
            f"the least any path that checks each line pays here, {label}: the object read from S3 and "
            "each line parsed with json.loads, nothing checked, written or sent (a path that checks the "
            "whole file before it sends pays this, then its create)",
            parse_floor,
            "s",
            "naive list + batches.create",
            naive,
            naive / parse_floor,
        ),
    ]
