"""The user's commands: `batchdrop submit`, `status`, `results` and `cancel`, against the local
stack or a deployed one. Names come from the environment (`.batchdrop/local.env` sets them for
the local stack) or from a deployed stack's Outputs with `--stack NAME`.

batchdrop's own modules (and through them boto3 and Powertools) are imported inside the
commands, so that `batchdrop emulator` and `--help` start without them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchdrop.adapters.state import StateTable
    from batchdrop.domain.records import JobRecord, ShardRecord

FINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED"}


def add_user_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", metavar="NAME", help="a deployed stack: read its names from its Outputs")
    common.add_argument("--bucket", help="the bucket (default: $BATCHDROP_BUCKET or the stack's BucketName)")
    common.add_argument("--table", help="the table (default: $BATCHDROP_TABLE or the stack's TableName)")

    submit = commands.add_parser("submit", parents=[common], help="upload a request file into inbox/")
    submit.add_argument("file", type=Path, help="a .jsonl (or .jsonl.gz) file of Batches API requests")
    submit.add_argument("--key", help="the key under the bucket (default: inbox/<file name>)")
    submit.add_argument("--wait", action="store_true", help="wait until the job ends and print its summary")
    submit.add_argument("--timeout", type=float, default=3600, metavar="SECONDS", help="how long --wait waits")
    submit.set_defaults(run=_submit)

    status = commands.add_parser("status", parents=[common], help="jobs and their progress")
    status.add_argument("job_id", nargs="?", help="one job, with its batches")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)

    results = commands.add_parser("results", parents=[common], help="download a job's results and manifest")
    results.add_argument("job_id")
    results.add_argument("--out", type=Path, default=Path("results"), metavar="DIR", help="where to (./results)")
    results.set_defaults(run=_results)

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a job: it ends CANCELED with the results collected so far",
        description=(
            "Put an empty object at cancel/JOB_ID in the bucket: batchdrop cancels the job's open "
            "batches, and the job ends CANCELED with the results collected so far."
        ),
    )
    cancel.add_argument("job_id", help="the job, as `batchdrop submit` and `batchdrop status` print it")
    cancel.set_defaults(run=_cancel)


# --- names --------------------------------------------------------------------------


def _names(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, str]:
    bucket = args.bucket or os.environ.get("BATCHDROP_BUCKET")
    table = args.table or os.environ.get("BATCHDROP_TABLE")
    if args.stack:
        import boto3

        stacks = boto3.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        bucket = args.bucket or outputs.get("BucketName")
        table = args.table or outputs.get("TableName")
    if not bucket or not table:
        parser.error(
            "no bucket or table: pass --stack NAME for a deployed stack, or load the local stack's names "
            "with `set -a; . .batchdrop/local.env; set +a` (written by `batchdrop local up`)"
        )
    return str(bucket), str(table)


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


# --- submit -------------------------------------------------------------------------


def _submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable
    from batchdrop.domain.jobs import job_id_for

    bucket, table = _names(args, parser)
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    key = args.key or f"inbox/{args.file.name}"
    if not key.startswith("inbox/"):
        parser.error(f"--key {key!r}: only keys under inbox/ start a job")
    with args.file.open("rb") as body:
        version_id = _s3().put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    job_id = job_id_for(bucket, key, version_id)
    print(f"uploaded s3://{bucket}/{key} (version {version_id})")
    print(f"job {job_id}: follow it with `batchdrop status {job_id}`")
    if not args.wait:
        return 0
    job = _wait(StateTable(table), job_id, args.timeout)
    _print_job(job)
    return 0 if job and job.status in ("COMPLETED", "COMPLETED_WITH_ERRORS") else 1


def _wait(state: StateTable, job_id: str, timeout: float) -> JobRecord | None:
    deadline = time.monotonic() + timeout
    live = sys.stdout.isatty()
    last = None
    while time.monotonic() < deadline:
        job, shards = state.job_and_shards(job_id)
        status = job.status if job else "WAITING FOR THE UPLOAD EVENT"
        if job and status in FINAL:
            if live:
                print()
            return job
        line = f"  {status}: {sum(s.state == 'COLLECTED' for s in shards)}/{len(shards)} batches collected"
        if live:
            print(f"\r{line}", end="", flush=True)
        elif line != last:
            print(line, flush=True)
        last = line
        time.sleep(1)
    print(f"\ngave up waiting after {timeout:.0f} s", file=sys.stderr)
    return None


# --- status -------------------------------------------------------------------------


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable

    _, table = _names(args, parser)
    state = StateTable(table)
    if args.job_id:
        job, shards = state.job_and_shards(args.job_id)
        if job is None:
            print(f"no job {args.job_id}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({"job": _public(job), "batches": [_public(s) for s in shards]}, indent=2, default=str))
        else:
            _print_job(job)
            for shard in shards:
                print(
                    f"  shard {shard.index:>3}  {shard.state:<10} {shard.batch_id or '-':<36} "
                    f"{shard.requests:>7} requests  {_counts_text(shard.counts)}"
                )
        return 0
    jobs = state.list_jobs()
    if args.json:
        print(json.dumps([_public(job) for job in jobs], indent=2, default=str))
        return 0
    print(f"{'job':<26} {'status':<22} {'requests':>8} {'rejected':>8}  source")
    for job in jobs:
        print(f"{job.job_id:<26} {job.status:<22} {job.requested:>8} {job.rejected:>8}  {job.source.key}")
    return 0


def _public(record: JobRecord | ShardRecord) -> dict[str, Any]:
    """A record as JSON: its fields that are set, a job's source flattened beside them."""
    fields = dataclasses.asdict(record)
    fields.update(fields.pop("source", {}))
    return {name: value for name, value in fields.items() if value is not None}


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


def _print_job(job: JobRecord | None) -> None:
    if job is None:
        return
    print(f"job {job.job_id}  {job.status}  source {job.source.key}")
    print(f"  {job.requested} requests, {job.rejected} rejected")
    if job.reason:
        print(f"  reason: {job.reason}")
    if job.manifest_key:
        print(f"  manifest: {job.manifest_key}  (`batchdrop results {job.job_id}` downloads it all)")


# --- results ------------------------------------------------------------------------


def _results(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.domain.jobs import manifest_key

    bucket, _ = _names(args, parser)
    s3 = _s3()
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key(args.job_id))["Body"].read())
    except s3.exceptions.NoSuchKey:
        print(f"job {args.job_id} has no manifest yet: it is not finished (see `batchdrop status`)", file=sys.stderr)
        return 1
    out = args.out / args.job_id
    out.mkdir(parents=True, exist_ok=True)
    keys = [*manifest.get("results", []), manifest_key(args.job_id)]
    if manifest.get("errors"):
        keys.append(manifest["errors"])
    for key in keys:
        s3.download_file(bucket, key, str(out / Path(key).name))
    counts = manifest["counts"]
    print(f"job {args.job_id}: {manifest['status']}")
    print("  " + ", ".join(f"{counts[k]} {k}" for k in counts))
    if "cost" in manifest:
        cost = manifest["cost"]
        print(f"  cost ${cost['batch_usd']} at the batch price (${cost['standard_usd']} standard)")
    print(f"  {len(keys)} files in {out}/")
    return 0


# --- cancel -------------------------------------------------------------------------


def _cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable
    from batchdrop.services.cancel import CANCEL_PREFIX, job_id_of

    # The submit function's own reading of a cancel/ key: what it would refuse is refused here.
    if job_id_of(f"{CANCEL_PREFIX}{args.job_id}") != args.job_id:
        parser.error(f"{args.job_id!r} is not a job id: a job id is 'j' and 24 lowercase hex characters")
    bucket, table = _names(args, parser)
    job = StateTable(table).get_job(args.job_id)
    if job is None:
        print(f"no job {args.job_id} in table {table}: nothing to cancel (see `batchdrop status`)", file=sys.stderr)
        return 1
    if job.status in FINAL:
        print(f"job {args.job_id} already ended {job.status}: nothing to cancel", file=sys.stderr)
        return 1
    key = f"{CANCEL_PREFIX}{args.job_id}"
    version_id = _s3().put_object(Bucket=bucket, Key=key, Body=b"").get("VersionId")
    written = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    print(f"cancel requested for job {args.job_id} ({job.status}, source {job.source.key}): wrote {written}")
    print(f"the job will end CANCELED with its results so far; follow it with `batchdrop status {args.job_id}`")
    return 0
