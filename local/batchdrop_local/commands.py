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
import json
import os
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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

    status = commands.add_parser(
        "status",
        parents=[common],
        help="jobs and their progress",
        description=(
            "Without a job id, list the jobs newest first (the newest 20 unless --limit says otherwise); "
            "with one, show the job and its batches. --json prints the documented schema (docs/local.md)."
        ),
    )
    status.add_argument("job_id", nargs="?", help="one job, with its batches")
    status.add_argument("--json", action="store_true", help=f"print JSON (schema {STATUS_SCHEMA})")
    status.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"list at most N jobs ({DEFAULT_LIMIT}; 0: all)",
    )
    status.add_argument(
        "--status",
        dest="statuses",
        action="append",
        metavar="STATUS",
        help="only jobs in this status (repeatable, or comma-separated)",
    )
    status.add_argument("--key", dest="key_prefix", metavar="PREFIX", help="only jobs whose source key starts so")
    status.add_argument(
        "--since", metavar="DURATION|ISO", help="only jobs created since then: 30m, 2h, 3d, 1w, or an ISO date or time"
    )
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

    statuses = _statuses(args.statuses, parser)
    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError as exc:
            parser.error(f"--since {args.since!r}: {exc}")
    bucket, table = _names(args, parser)
    state = StateTable(table)
    if args.job_id:
        job, shards = state.job_and_shards(args.job_id)
        if job is None:
            raise JobNotFound(args.job_id, table)
        if args.json:
            view = job_view(job, shards, _manifest(bucket, job))
            view["batches"] = [_batch_view(shard) for shard in shards]
            print(json.dumps(view, indent=2))
        else:
            _print_job(job)
            for shard in shards:
                print(
                    f"  shard {shard.index:>3}  {shard.state:<10} {shard.batch_id or '-':<36} "
                    f"{shard.requests:>7} requests  {_counts_text(shard.counts)}"
                )
        return EXIT_OK

    every_job = state.list_jobs()
    jobs = [
        job
        for job in every_job
        if (statuses is None or job.status in statuses)
        and (args.key_prefix is None or job.source.key.startswith(args.key_prefix))
        and (since is None or _parse_time(job.created_at) >= since)
    ]
    shown = jobs if args.limit == 0 else jobs[: args.limit]
    more = len(jobs) - len(shown)
    # Only the jobs shown are read further: a manifest for a finished one, the shards of an open one.
    views = [_job_view_read(state, bucket, job) for job in shown]
    more_line = f"{more} more {'job' if more == 1 else 'jobs'} (add `--limit 0` to list them all)" if more else None
    if args.json:
        print(json.dumps(views, indent=2))
        if more_line:  # stdout stays one JSON document
            print(f"batchdrop: {more_line}", file=sys.stderr)
        return EXIT_OK
    if not views:
        print("no jobs match these filters" if every_job else "no jobs yet")
        return EXIT_OK
    now = datetime.now(UTC)
    print(f"{'job':<25}  {'created':<20} {'age':>4}  {'status':<21} {'requests':>13} {'cost':>11}  source")
    for view in views:
        created = view["timings"]["created_at"]
        requests = view["requests"]
        done = f"{requests['done']}/{'?' if requests['total'] is None else requests['total']}"
        cost = "-" if view["cost"] is None else f"${view['cost']['batch_usd']}"
        print(
            f"{view['job_id']:<25}  {_created_text(created):<20} {format_age(now - _parse_time(created)):>4}  "
            f"{view['status']:<21} {done:>13} {cost:>11}  {view['source']['key']}"
        )
    if more_line:
        print(more_line)
    return EXIT_OK


STATUS_SCHEMA = 1
DEFAULT_LIMIT = 20
OUTCOME_NAMES = ("succeeded", "errored", "canceled", "expired")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more, or 0 for all")
    return limit


def _statuses(values: list[str] | None, parser: argparse.ArgumentParser) -> set[str] | None:
    from batchdrop.domain.states import JobStatus

    if not values:
        return None
    known = [status.value for status in JobStatus]
    wanted = {part.strip().upper() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        parser.error(f"--status {', '.join(unknown) or repr(','.join(values))}: a status is one of {', '.join(known)}")
    return wanted


def parse_since(text: str, now: datetime) -> datetime:
    """The moment `--since` names: a duration back from `now` (`90s`, `30m`, `2h`, `3d`, `1w`) or
    an ISO date or time (UTC unless it carries an offset). ValueError on anything else."""
    text = text.strip()
    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS and number.isdigit():
        return now - timedelta(seconds=int(number) * _UNITS[unit])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "give a duration (30m, 2h, 3d, 1w) or an ISO date or time (2026-12-01, 2026-12-01T09:30Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_age(age: timedelta) -> str:
    """How long ago, in its largest whole unit: `42s`, `3m`, `2h`, `5d` (a clock a little ahead
    of the table's gives `0s`, not a negative age)."""
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_time(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _created_text(stamp: str) -> str:
    return _parse_time(stamp).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_view_read(state: StateTable, bucket: str, job: JobRecord) -> dict[str, Any]:
    """A listed job's view: a finished job's counts and cost come from its manifest, an open
    job's counts so far from its shards (read only for the jobs shown)."""
    manifest = _manifest(bucket, job)
    shards = state.job_and_shards(job.job_id)[1] if manifest is None else []
    return job_view(job, shards, manifest)


def _manifest(bucket: str, job: JobRecord) -> dict[str, Any] | None:
    """A finished job's manifest; None for an open job (and for a finished one whose manifest is
    missing: its counts then come from the shards, and its cost is unknown)."""
    if job.status not in FINAL or not job.manifest_key:
        return None
    s3 = _s3()
    try:
        return dict(json.loads(s3.get_object(Bucket=bucket, Key=job.manifest_key)["Body"].read()))
    except s3.exceptions.NoSuchKey:
        return None


def job_view(job: JobRecord, shards: list[ShardRecord], manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """One job in `status --json`'s schema (docs/local.md): the same keys whether the job is open
    or finished, null where a value is not known yet."""
    if manifest is not None:
        counts = {name: int(manifest["counts"].get(name, 0)) for name in OUTCOME_NAMES}
        result_keys = list(manifest.get("results") or [])
        cost = {"batch_usd": manifest["cost"]["batch_usd"], "standard_usd": manifest["cost"]["standard_usd"]}
    else:
        counts = {name: sum(int(shard.counts.get(name, 0)) for shard in shards) for name in OUTCOME_NAMES}
        result_keys = [key for shard in shards for key in shard.result_keys]
        cost = None
    read = job.status != "RECEIVED"  # until its lines are read, a job's totals are not known
    return {
        "schema": STATUS_SCHEMA,
        "job_id": job.job_id,
        "status": str(job.status),
        "source": job.source.as_dict(),
        "requests": {
            "total": job.requested if read else None,
            "done": sum(counts.values()),
            "rejected": job.rejected if read else None,
        },
        "counts": counts,
        "timings": {"created_at": job.created_at, "completed_at": job.completed_at},
        "reason": job.reason,
        "manifest_key": job.manifest_key,
        "result_keys": result_keys,
        "cost": cost,
    }


def _batch_view(shard: ShardRecord) -> dict[str, Any]:
    return {
        "shard": shard.index,
        "state": str(shard.state),
        "batch_id": shard.batch_id,
        "attempt": shard.attempt,
        "requests": shard.requests,
        "counts": {name: int(shard.counts.get(name, 0)) for name in OUTCOME_NAMES},
    }


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
