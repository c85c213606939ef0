"""The user's commands: `batchdrop submit`, `status`, `results` and `cancel`, against the local
stack or a deployed one, and `batchdrop job-id`. Names come from the environment
(`.batchdrop/local.env` sets them for the local stack) or from a deployed stack's Outputs with
`--stack NAME`.

A command that cannot go on raises a CommandError, whose text is the one line the user sees and
whose exit_code is what the shell gets; `batchdrop_local.cli.main` prints it. Errors from boto3
(an endpoint nothing listens on, no credentials, a missing bucket or table) are left to
propagate: main explains those in the same one place.

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
SUCCEEDED = {"COMPLETED", "COMPLETED_WITH_ERRORS"}
INBOX = "inbox/"

# Exit codes (docs/local.md and `batchdrop --help` list them; scripts rely on them).
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # submit --wait: the job ended FAILED or CANCELED
EXIT_USAGE = 2  # usage or input error (argparse's own errors are 2 as well)
EXIT_UNREACHABLE = 3  # the stack, its bucket or its table could not be reached
EXIT_TIMEOUT = 4  # submit --wait: gave up waiting after --timeout
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports a process SIGINT ended (128 + 2)


class CommandError(Exception):
    """What the user is told, in one line, and the exit code."""

    exit_code = EXIT_USAGE


class UsageError(CommandError):
    exit_code = EXIT_USAGE


class JobNotFound(UsageError):
    def __init__(self, job_id: str, table: str) -> None:
        super().__init__(f"no job {job_id} in table {table} (`batchdrop status` lists the jobs)")


class GaveUpWaiting(CommandError):
    exit_code = EXIT_TIMEOUT

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(
            f"gave up waiting after {timeout:g} s; job {job_id} goes on; follow it with `batchdrop status {job_id}`"
        )


class StoppedWaiting(CommandError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, job_id: str) -> None:
        super().__init__(f"stopped waiting; job {job_id} goes on; follow it with `batchdrop status {job_id}`")


def add_user_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", metavar="NAME", help="a deployed stack: read its names from its Outputs")
    common.add_argument("--bucket", help="the bucket (default: $BATCHDROP_BUCKET or the stack's BucketName)")
    common.add_argument("--table", help="the table (default: $BATCHDROP_TABLE or the stack's TableName)")
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, show its traceback"
    )

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

    job_id = commands.add_parser(
        "job-id",
        help="print the job id an upload becomes",
        description=(
            "Print the id of the job an object version under inbox/ becomes, without reaching AWS: "
            "the same id the submit function gives it."
        ),
    )
    job_id.add_argument("uri", metavar="s3://BUCKET/KEY", help="the uploaded object; KEY starts with inbox/")
    job_id.add_argument("--version-id", metavar="V", help="the object's version id, as S3 answered the upload")
    job_id.set_defaults(run=_job_id)


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
    # Kept on args: when AWS answers that one of them does not exist, main names it.
    args.bucket, args.table = str(bucket), str(table)
    return args.bucket, args.table


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


# --- submit -------------------------------------------------------------------------


def _submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable
    from batchdrop.domain.jobs import job_id_for

    key = args.key or f"{INBOX}{args.file.name}"
    if not key.startswith(INBOX):
        parser.error(f"--key {key!r}: only keys under inbox/ start a job")
    if args.file.is_dir():
        raise UsageError(f"{args.file} is a directory: give a .jsonl or .jsonl.gz file of requests")
    if not args.file.exists():
        raise UsageError(f"{args.file}: no such file")
    bucket, table = _names(args, parser)
    with args.file.open("rb") as body:  # an unreadable file fails here, before any upload
        version_id = _s3().put_object(Bucket=bucket, Key=key, Body=body)["VersionId"]
    job_id = job_id_for(bucket, key, version_id)
    print(f"uploaded s3://{bucket}/{key} (version {version_id})")
    print(f"job {job_id}: follow it with `batchdrop status {job_id}`", flush=True)
    if not args.wait:
        return EXIT_OK
    job = _wait(StateTable(table), job_id, args.timeout)
    _print_job(job)
    return EXIT_OK if job.status in SUCCEEDED else EXIT_JOB_FAILED


def _wait(state: StateTable, job_id: str, timeout: float) -> JobRecord:
    """The job once it has ended; GaveUpWaiting after `timeout` seconds, StoppedWaiting on Ctrl-C."""
    deadline = time.monotonic() + timeout
    live = sys.stdout.isatty()
    last = None
    try:
        while time.monotonic() < deadline:
            job, shards = state.job_and_shards(job_id)
            status = job.status if job else "WAITING FOR THE UPLOAD EVENT"
            if job and status in FINAL:
                return job
            line = f"  {status}: {sum(s.state == 'COLLECTED' for s in shards)}/{len(shards)} batches collected"
            if live:
                print(f"\r{line}", end="", flush=True)
            elif line != last:
                print(line, flush=True)
            last = line
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        raise StoppedWaiting(job_id) from None
    finally:
        if live and last is not None:
            print(flush=True)  # end the progress line before whatever comes next
    raise GaveUpWaiting(job_id, timeout)


# --- status -------------------------------------------------------------------------


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable

    _, table = _names(args, parser)
    state = StateTable(table)
    if args.job_id:
        job, shards = state.job_and_shards(args.job_id)
        if job is None:
            raise JobNotFound(args.job_id, table)
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


def _print_job(job: JobRecord) -> None:
    print(f"job {job.job_id}  {job.status}  source {job.source.key}")
    print(f"  {job.requested} requests, {job.rejected} rejected")
    if job.reason:
        print(f"  reason: {job.reason}")
    if job.manifest_key:
        print(f"  manifest: {job.manifest_key}  (`batchdrop results {job.job_id}` downloads it all)")


# --- results ------------------------------------------------------------------------


def _results(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.adapters.state import StateTable
    from batchdrop.domain.jobs import manifest_key

    bucket, table = _names(args, parser)
    job = StateTable(table).get_job(args.job_id)
    if job is None:
        raise JobNotFound(args.job_id, table)
    if job.status not in FINAL:
        raise UsageError(
            f"job {args.job_id} is {job.status}: it has no results until it ends; "
            f"follow it with `batchdrop status {args.job_id}`"
        )
    s3 = _s3()
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key(args.job_id))["Body"].read())
    except s3.exceptions.NoSuchKey:
        raise UsageError(
            f"job {args.job_id} ended {job.status} but s3://{bucket}/{manifest_key(args.job_id)} is missing"
        ) from None
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
        raise JobNotFound(args.job_id, table)
    if job.status in FINAL:
        raise UsageError(f"job {args.job_id} already ended {job.status}: nothing to cancel")
    key = f"{CANCEL_PREFIX}{args.job_id}"
    version_id = _s3().put_object(Bucket=bucket, Key=key, Body=b"").get("VersionId")
    written = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    print(f"cancel requested for job {args.job_id} ({job.status}, source {job.source.key}): wrote {written}")
    print(f"the job will end CANCELED with its results so far; follow it with `batchdrop status {args.job_id}`")
    return 0


# --- job-id -------------------------------------------------------------------------


def _job_id(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from batchdrop.domain.jobs import job_id_for

    bucket, slash, key = args.uri.removeprefix("s3://").partition("/")
    if not args.uri.startswith("s3://") or not bucket or not slash or not key:
        raise UsageError(f"{args.uri!r} is not an object's URI: write it s3://BUCKET/KEY")
    if not key.startswith(INBOX):
        raise UsageError(f"{args.uri!r}: only keys under inbox/ start a job")
    if not args.version_id:
        raise UsageError(
            "--version-id V is needed: a job is one version of an object "
            "(`batchdrop submit` prints it, as does S3's answer to the upload)"
        )
    if args.version_id == "null":
        raise UsageError(
            "version id 'null' is an upload to a bucket without versioning: it never becomes a job "
            "(batchdrop's bucket is versioned)"
        )
    try:
        print(job_id_for(bucket, key, args.version_id))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK
