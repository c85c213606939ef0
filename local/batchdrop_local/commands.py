"""The user's commands: `batchdrop submit`, `status`, `results`, `report`, `cancel` and `approve`, against the local
stack or a deployed one, and `batchdrop job-id`. They are argument parsing, printing and exit
codes around the batchdrop_client library, which does the work: it finds the bucket and table
(flags, `--stack NAME`'s Outputs, the environment, or the local stack's env file on its own).

A command that cannot go on raises a BatchdropError (the library's, or a CommandError here),
whose text is the one line the user sees and whose exit_code is what the shell gets;
`batchdrop_local.cli.main` prints it. Errors from boto3 (an endpoint nothing listens on, no
credentials, a missing bucket or table) are left to propagate: main explains those in the same
one place. boto3 and batchdrop's layer are imported only once a command runs, so that
`batchdrop emulator` and `--help` start without them."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from batchdrop_client import Batchdrop, BatchdropError, InvalidJobId, JobView, NotConfigured, Progress
from batchdrop_client.client import DEFAULT_LIMIT, INBOX, job_id_of
from batchdrop_client.environment import env_file_path
from batchdrop_client.progress import progress_line
from batchdrop_client.views import STATUS_SCHEMA, parse_since, parse_time

__all__ = ["STATUS_SCHEMA", "add_user_commands", "format_age", "parse_since"]

# Exit codes (docs/local.md and `batchdrop --help` list them; scripts rely on them).
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # submit --wait, status --watch: the job ended FAILED or CANCELED
EXIT_USAGE = 2  # usage or input error (argparse's own errors are 2 as well)
EXIT_UNREACHABLE = 3  # the stack, its bucket or its table could not be reached
EXIT_TIMEOUT = 4  # submit --wait, status --watch: gave up waiting after --timeout
EXIT_AWAITING_APPROVAL = 5  # submit --wait, status --watch: the job waits for approval (AwaitingApproval)
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports a process SIGINT ended (128 + 2)
_LIST_ONLY = ("--limit", "--status", "--key", "--since")
SHOW_ROWS = 10  # results --show, without --rows


class CommandError(BatchdropError):
    """What the user is told, in one line, and the exit code."""

    exit_code = EXIT_USAGE


class UsageError(CommandError):
    exit_code = EXIT_USAGE


class StoppedWaiting(CommandError):
    exit_code = EXIT_INTERRUPTED

    def __init__(self, job_id: str) -> None:
        super().__init__(f"stopped waiting; job {job_id} goes on; follow it with `batchdrop status {job_id}`")


def add_user_commands(commands: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", metavar="NAME", help="a deployed stack: read its names from its Outputs")
    common.add_argument("--bucket", help="the bucket (default: $BATCHDROP_BUCKET, the env file's or the stack's)")
    common.add_argument("--table", help="the table (default: $BATCHDROP_TABLE, the env file's or the stack's)")
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, show its traceback"
    )

    submit = commands.add_parser("submit", parents=[common], help="upload a request file into inbox/")
    submit.add_argument("file", type=Path, help="a .jsonl (or .jsonl.gz) file of Batches API requests")
    submit.add_argument("--key", help="the key under the bucket (default: inbox/<file name>)")
    submit.add_argument(
        "--pipeline",
        metavar="NAME",
        help="records mode: a .csv or .jsonl of records, to inbox/NAME/<file name> (docs/records.md)",
    )
    submit.add_argument(
        "--prime-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="warm the prompt cache before the job's first batch, or not (--no-prime-cache), whatever the "
        "stack or the pipeline says: the upload's x-amz-meta-prime-cache (docs/cost.md)",
    )
    submit.add_argument("--wait", action="store_true", help="show the job's progress until it ends, then its summary")
    submit.add_argument("--timeout", type=float, default=3600, metavar="SECONDS", help="how long --wait waits")
    submit.set_defaults(run=_submit)
    _add_status(commands, common)

    _add_results(commands, common)
    _add_report(commands, common)

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

    approve = commands.add_parser(
        "approve",
        parents=[common],
        help="send a job that waits over its budget (AWAITING_APPROVAL)",
        description=(
            "Put an empty object at approve/JOB_ID in the bucket: a job whose estimate is over the "
            "job budget (JobBudgetUsd) and waits as AWAITING_APPROVAL is sent. `batchdrop cancel` drops "
            "it instead; not approved in time, it is dropped (ApprovalHours)."
        ),
    )
    approve.add_argument("job_id", help="the job, as `batchdrop status` prints it")
    approve.set_defaults(run=_approve)

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
    _add_pipeline(commands, common)
    # `batchdrop estimate` (docs/cost.md), in a module of its own.
    from batchdrop_local.estimate_command import add_estimate

    add_estimate(commands, common)


def _add_results(commands: Any, common: argparse.ArgumentParser) -> None:
    results = commands.add_parser(
        "results",
        parents=[common],
        help="download a job's results and manifest, or a records-mode job's outputs",
        description=(
            "Without a flag, download the job's manifest, result parts and rejected lines into DIR/JOB_ID/. "
            "A records-mode job (docs/records.md) also has one row per record: --csv or --jsonl downloads "
            "outputs.csv or outputs.jsonl (to results/JOB_ID/, or --out FILE, DIR or - for standard output), "
            "--show prints its first rows as a table."
        ),
    )
    results.add_argument("job_id")
    results.add_argument(
        "--out", metavar="DIR|FILE", help="where to: a directory (default ./results), or with --csv/--jsonl a file or -"
    )
    which = results.add_mutually_exclusive_group()
    which.add_argument("--csv", dest="outputs", action="store_const", const="csv", help="download outputs.csv")
    which.add_argument("--jsonl", dest="outputs", action="store_const", const="jsonl", help="download outputs.jsonl")
    which.add_argument("--show", action="store_true", help="print the first rows of outputs.csv as a table")
    results.add_argument("--rows", type=_limit, metavar="N", help=f"how many rows --show prints ({SHOW_ROWS})")
    results.set_defaults(run=_results)


def _add_report(commands: Any, common: argparse.ArgumentParser) -> None:
    report = commands.add_parser(
        "report",
        parents=[common],
        help="download a finished job's report: one HTML page of its outcomes, tokens, cost and timeline",
        description=(
            "Download results/JOB_ID/report.html, the page the checker writes when the job ends "
            "(docs/report.md), and print where it went. It needs no network to open."
        ),
    )
    report.add_argument("job_id")
    report.add_argument("--out", metavar="PATH", help="the file, or a directory (default ./JOB_ID-report.html)")
    report.add_argument("--open", action="store_true", help="open it in the default browser")
    report.set_defaults(run=_report)


def _add_pipeline(commands: Any, common: argparse.ArgumentParser) -> None:
    pipeline = commands.add_parser(
        "pipeline",
        help="records mode's pipelines: check one, put it in the bucket, list or show them",
        description=(
            "A pipeline (docs/records.md) turns each record of a .csv or .jsonl dropped into inbox/NAME/ into "
            "one request; it lives at pipelines/NAME.json or pipelines/NAME.yaml in the bucket."
        ),
    )
    verbs = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    put = verbs.add_parser(
        "put",
        parents=[common],
        help="validate a pipeline file and put it in the bucket",
        description=(
            "Validate FILE (JSON or YAML, by its suffix) as the submit function will, then put it at "
            "pipelines/NAME.json or .yaml (a .yml file goes to .yaml). Nothing is put if it is not valid, "
            "or if NAME already has a pipeline in the other syntax."
        ),
    )
    put.add_argument("file", type=Path, help="a .json, .yaml or .yml pipeline")
    put.add_argument("--name", help="the pipeline's name, the inbox/ folder it renders (default: the file's stem)")
    put.set_defaults(run=_pipeline_put)
    check = verbs.add_parser(
        "check",
        help="validate a pipeline file, and try it on a sample; needs no stack",
        description=(
            "Validate FILE as the submit function will. With --sample, also compare the fields the pipeline "
            "needs with the sample's (a CSV's header, a JSONL's first records) and print the requests its "
            "first records render to, and each rejected record with its line and reason. Nothing is sent."
        ),
    )
    check.add_argument("file", type=Path, help="a .json, .yaml or .yml pipeline")
    check.add_argument("--name", help="the pipeline's name (default: the file's stem)")
    check.add_argument("--sample", type=Path, metavar="DATA", help="a local .csv, .jsonl, .csv.gz or .jsonl.gz file")
    check.add_argument("--rows", type=_limit, default=3, metavar="N", help="how many records to render (3)")
    check.set_defaults(run=_pipeline_check)
    listing = verbs.add_parser("list", parents=[common], help="the pipelines in the bucket")
    listing.set_defaults(run=_pipeline_list)
    show = verbs.add_parser("show", parents=[common], help="print a pipeline as stored in the bucket")
    show.add_argument("name")
    show.set_defaults(run=_pipeline_show)


def _add_status(commands: Any, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser(
        "status",
        parents=[common],
        help="jobs and their progress",
        description=(
            "Without a job id, list the jobs newest first (the newest 20 unless --limit says otherwise); "
            "with one, show the job and its batches, or --watch its progress until it ends. "
            "--json prints the documented schema (docs/local.md)."
        ),
    )
    status.add_argument("job_id", nargs="?", help="one job, with its batches")
    status.add_argument("--json", action="store_true", help=f"print JSON (schema {STATUS_SCHEMA})")
    status.add_argument("--watch", action="store_true", help="show the job's progress until it ends (exit as --wait)")
    status.add_argument("--timeout", type=float, metavar="SECONDS", help="how long --watch waits (default: no limit)")
    status.add_argument("--limit", type=_limit, metavar="N", help=f"list at most N jobs ({DEFAULT_LIMIT}; 0: all)")
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


# --- the client ---------------------------------------------------------------------


def _client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Batchdrop:
    """The library's client for the flags, a deployed stack or the environment (or the local
    stack's env file, found on its own)."""
    try:
        if args.stack:
            client = Batchdrop.from_stack(args.stack, bucket=args.bucket, table=args.table)
        else:
            client = Batchdrop.from_env(bucket=args.bucket, table=args.table)
    except NotConfigured:
        if args.stack:
            raise
        parser.error(
            "no bucket or table: pass --stack NAME for a deployed stack, or start the local stack with "
            f"`batchdrop local up` (its env file, {env_file_path(os.environ)}, is then found on its own)"
        )
    # Kept on args: when AWS answers that one of them does not exist, main names it and where.
    args.bucket, args.table, args.endpoint_url = client.bucket, client.table, client.endpoint_url
    return client


def _job_id_arg(job_id: str, parser: argparse.ArgumentParser) -> str:
    try:
        return job_id_of(job_id)
    except InvalidJobId as exc:
        parser.error(str(exc))


# --- submit and following a job -----------------------------------------------------


def _submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.key is not None and not args.key.startswith(INBOX):
        parser.error(f"--key {args.key!r}: only keys under inbox/ start a job")
    if args.key is not None and args.pipeline is not None:
        parser.error("--key or --pipeline, not both: a pipeline's files go to inbox/NAME/")
    client = _client(args, parser)
    job = client.submit(args.file, key=args.key, pipeline=args.pipeline, prime_cache=args.prime_cache)
    print(f"uploaded s3://{job.bucket}/{job.key} (version {job.version_id})")
    print(f"job {job.job_id}: follow it with `batchdrop status {job.job_id}`", flush=True)
    if not args.wait:
        return EXIT_OK
    return _follow(client, job.job_id, args.timeout)


class ProgressPrinter:
    """Shows each Progress: on a terminal one line redrawn in place, otherwise one plain line
    each time it changes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last: str | None = None

    def __call__(self, progress: Progress) -> None:
        line = progress_line(progress, datetime.now(UTC), tty=self._tty)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
        elif line != self._last:
            self._stream.write(f"{line}\n")
        self._stream.flush()
        self._last = line

    def close(self) -> None:
        """End a redrawn line before whatever comes next."""
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()


def _follow(client: Batchdrop, job_id: str, timeout: float | None) -> int:
    """Show the job's progress until it ends, then its summary; its exit code (WaitTimeout
    after `timeout` seconds, StoppedWaiting on Ctrl-C)."""
    printer = ProgressPrinter(sys.stdout)
    try:
        view = client.wait(job_id, timeout=float("inf") if timeout is None else timeout, on_progress=printer)
    except KeyboardInterrupt:
        raise StoppedWaiting(job_id) from None
    finally:
        printer.close()
    _print_job(view)
    return EXIT_OK if view.succeeded else EXIT_JOB_FAILED


def _print_job(view: JobView) -> None:
    """A job's summary: status, requests, outcomes, cost, reason and where its manifest is."""
    total = "?" if view.total is None else view.total
    print(f"job {view.job_id}  {view.status}  source {view.source['key']}")
    print(f"  {total} requests, {'?' if view.rejected is None else view.rejected} rejected")
    if view.finished and view.total:
        print("  " + ", ".join(f"{n} {outcome}" for outcome, n in view.counts.items()))
    if view.cost is not None:
        print(f"  cost {format_cost(view.cost)}")
    if view.reason:
        print(f"  reason: {view.reason}")
    if view.manifest_key:
        print(f"  manifest: {view.manifest_key}  (`batchdrop results {view.job_id}` downloads it all)")


def format_cost(cost: Mapping[str, str]) -> str:
    """`$0.000103 at the batch price ($0.000206 standard; caching saved $0.000040; estimated
    $0.000120, at most $0.000300)`: what caching saved and the estimate only when the manifest
    has them; a negative saving says what caching cost more."""
    line = f"${cost['batch_usd']} at the batch price (${cost['standard_usd']} standard"
    saved = cost.get("saved_by_caching_usd")
    if saved is not None:
        line += f"; caching cost ${saved[1:]} more" if saved.startswith("-") else f"; caching saved ${saved}"
    if "estimated_usd" in cost:
        line += f"; estimated ${cost['estimated_usd']}, at most ${cost['estimated_max_usd']}"
    return line + ")"


# --- status -------------------------------------------------------------------------


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.job_id is not None:
        return _status_of_one(args, parser)
    if args.watch:
        parser.error("--watch follows one job: give its id (`batchdrop status JOB_ID --watch`)")
    statuses = _statuses(args.statuses, parser)
    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError as exc:
            parser.error(f"--since {args.since!r}: {exc}")
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    client = _client(args, parser)
    listed = client.jobs(status=statuses, key_prefix=args.key_prefix, since=since, limit=limit)
    more = listed.more
    more_line = f"{more} more {'job' if more == 1 else 'jobs'} (add `--limit 0` to list them all)" if more else None
    if args.json:
        print(json.dumps([view.as_dict() for view in listed], indent=2))
        if more_line:  # stdout stays one JSON document
            print(f"batchdrop: {more_line}", file=sys.stderr)
        return EXIT_OK
    if not listed:
        print("no jobs match these filters" if listed.seen else "no jobs yet")
        return EXIT_OK
    now = datetime.now(UTC)
    print(f"{'job':<25}  {'created':<20} {'age':>4}  {'status':<21} {'requests':>13} {'cost':>11}  source")
    for view in listed:
        done = f"{view.done}/{'?' if view.total is None else view.total}"
        cost = "-" if view.cost is None else f"${view.cost['batch_usd']}"
        created = parse_time(view.created_at)
        print(
            f"{view.job_id:<25}  {created.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ'):<20} "
            f"{format_age(now - created):>4}  {view.status:<21} {done:>13} {cost:>11}  {view.source['key']}"
        )
    if more_line:
        print(more_line)
    today = now.strftime("%Y-%m-%d")
    spent = client.day_spend(today).quantize(Decimal("0.000001"))
    print(f"spend of {today} (UTC): ${spent} (open jobs at their estimate's most, ended ones at their cost)")
    return EXIT_OK


def _status_of_one(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    given = [flag for flag, value in zip(_LIST_ONLY, _list_values(args), strict=True) if value is not None]
    if given:
        one = len(given) == 1
        parser.error(
            f"{', '.join(given)} {'is' if one else 'are'} for the list of jobs, not one job: "
            f"drop {'it' if one else 'them'} or the job id"
        )
    if args.watch and args.json:
        parser.error("--watch shows progress as it goes; --json prints one job once: use one of them")
    if args.timeout is not None and not args.watch:
        parser.error("--timeout is how long --watch waits: add --watch")
    job_id = _job_id_arg(args.job_id, parser)
    client = _client(args, parser)
    view = client.status(job_id)
    if args.watch:
        return _follow(client, job_id, args.timeout)
    if args.json:
        print(json.dumps(view.as_dict(), indent=2))
        return EXIT_OK
    _print_job(view)
    if view.status == "AWAITING_APPROVAL":
        budget = client.budget(job_id) or {}
        print(f"  waiting for approval: {budget.get('reason', 'over its budget')}")
        print(
            f"  `batchdrop approve {job_id}` sends it, `batchdrop cancel {job_id}` drops it;"
            f" unapproved, it is dropped at {budget.get('expires_at', 'its expiry')}"
        )
    for batch in view.batches or []:
        line = (
            f"  shard {batch.shard:>3}  {batch.state:<10} {batch.batch_id or '-':<36} "
            f"{batch.requests:>7} requests  {_counts_text(batch.counts)}"
        )
        if batch.progress is not None:
            line += f"  ({batch.progress['processing']} processing)"
        print(line.rstrip())
    return EXIT_OK


def _list_values(args: argparse.Namespace) -> tuple[Any, ...]:
    return (args.limit, args.statuses, args.key_prefix, args.since)


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


def format_age(age: timedelta) -> str:
    """How long ago, in its largest whole unit: `42s`, `3m`, `2h`, `5d` (a clock a little ahead
    of the table's gives `0s`, not a negative age)."""
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


# --- results and cancel -------------------------------------------------------------


def _results(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    job_id = _job_id_arg(args.job_id, parser)
    if args.rows is not None and not args.show:
        parser.error("--rows is how many rows --show prints: add --show")
    if args.show and args.out is not None:
        parser.error("--show prints to the terminal; --out goes with --csv, --jsonl or no flag")
    if args.show:
        return _show_outputs(_client(args, parser), job_id, SHOW_ROWS if args.rows is None else args.rows)
    if args.outputs:
        return _download_outputs(_client(args, parser), job_id, args.outputs, args.out)
    if args.out == "-":
        parser.error("--out - (standard output) goes with --csv or --jsonl")
    out = Path(args.out or "results")
    client = _client(args, parser)
    manifest = client.manifest(job_id)
    paths = client.download(job_id, out)
    counts = manifest["counts"]
    print(f"job {job_id}: {manifest['status']}")
    print("  " + ", ".join(f"{counts[k]} {k}" for k in counts))
    if "cost" in manifest:
        cost = manifest["cost"]
        print(f"  cost ${cost['batch_usd']} at the batch price (${cost['standard_usd']} standard)")
    print(f"  {len(paths)} files in {out / job_id}/")
    return EXIT_OK


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    job_id = _job_id_arg(args.job_id, parser)
    path = _client(args, parser).report(job_id, args.out)
    print(path)
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"batchdrop: no browser could be started; open {path} yourself", file=sys.stderr)
    return EXIT_OK


def _cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    job_id = _job_id_arg(args.job_id, parser)
    client = _client(args, parser)
    request = client.cancel(job_id)
    written = f"s3://{client.bucket}/{request.key}" + (f" (version {request.version_id})" if request.version_id else "")
    job = request.job
    print(f"cancel requested for job {job_id} ({job.status}, source {job.source['key']}): wrote {written}")
    print(f"the job will end CANCELED with its results so far; follow it with `batchdrop status {job_id}`")
    return EXIT_OK


def _approve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    job_id = _job_id_arg(args.job_id, parser)
    client = _client(args, parser)
    budget = client.budget(job_id) or {}
    request = client.approve(job_id)
    written = f"s3://{client.bucket}/{request.key}" + (f" (version {request.version_id})" if request.version_id else "")
    print(f"approved job {job_id} (source {request.job.source['key']}): wrote {written}")
    if budget.get("reason"):
        print(f"it waited because {budget['reason']}")
    print(f"its batches go out now; follow it with `batchdrop status {job_id}`")
    return EXIT_OK


# --- records mode: outputs and pipelines ---------------------------------------------


def _download_outputs(client: Batchdrop, job_id: str, kind: str, out: str | None) -> int:
    """results --csv/--jsonl: the file to results/JOB_ID/, to --out (a file, or a directory that
    gets JOB_ID/outputs.csv as plain `results` lays it out), or to standard output (--out -)."""
    name = f"outputs.{kind}"
    if out == "-":
        client.copy_outputs(job_id, sys.stdout.buffer, kind)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = Path(out) if out else Path("results") / job_id / name
    if target.is_dir():
        target = target / job_id / name
    outputs = client.outputs(job_id)
    client.download_outputs(job_id, target, kind)
    print(f"job {job_id}: {outputs.status}; wrote {target} (s3://{client.bucket}/{outputs.key(kind)})")
    return EXIT_OK


def _show_outputs(client: Batchdrop, job_id: str, rows: int) -> int:
    """results --show: the first rows of outputs.csv, aligned to the terminal's width."""
    from batchdrop_client.table import format_table

    outputs = client.outputs(job_id)
    header, shown = client.output_rows(job_id, rows)
    width = shutil.get_terminal_size((120, 24)).columns
    for line in format_table(header, shown, width):
        print(line)
    what = "no rows" if not shown else f"the first {len(shown)} {'row' if len(shown) == 1 else 'rows'}"
    print(
        f"({what} of s3://{client.bucket}/{outputs.csv}, job {job_id} {outputs.status}; "
        f"`batchdrop results {job_id} --csv` downloads it all)"
    )
    return EXIT_OK


def _pipeline_put(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop_client.pipelines import load_pipeline_file

    load_pipeline_file(args.file, args.name)  # an invalid file is refused before the stack is looked for
    client = _client(args, parser)
    put = client.put_pipeline(args.file, args.name)
    version = f" (version {put.version_id})" if put.version_id else ""
    print(f"put pipeline {put.name} at s3://{client.bucket}/{put.key}{version}")
    print(f"drop .csv or .jsonl files (or their .gz) into s3://{client.bucket}/{put.inbox} to run it")
    return EXIT_OK


def _pipeline_check(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from batchdrop_client.pipelines import check_sample, load_pipeline_file

    loaded = load_pipeline_file(args.file, args.name)
    pipeline = loaded.pipeline
    columns = ", ".join(pipeline.answer_columns())
    answer = "text" if pipeline.answer_schema is None else f"by {pipeline.output} (columns {columns})"
    needs = ", ".join(pipeline.needed_fields()) or "no field"
    print(f"{loaded.path}: pipeline {loaded.name} is valid: model {pipeline.model}, answer {answer}, reads {needs}")
    if args.sample is None:
        return EXIT_OK
    sample = check_sample(pipeline, args.sample, args.rows)
    source = "header" if sample.kind == "csv" else "first records"
    print(f"{sample.path}: fields ({source}): {', '.join(sample.fields) or 'none'}")
    if sample.missing and sample.kind == "csv":
        raise CommandError(
            f"{sample.path}: its header lacks {', '.join(sample.missing)}, which pipeline {loaded.name} needs: "
            "the file would fail before anything is sent"
        )
    if sample.missing:
        print(f"warning: no record read has {', '.join(sample.missing)}; records without them are rejected")
    return _print_trials(sample.trials, pipeline.on_bad_record, sample.path)


def _print_trials(trials: Any, on_bad_record: str, path: Path) -> int:
    from batchdrop_client.pipelines import pretty_request

    first_rejected = None
    for trial in trials:
        if isinstance(trial.request, bytes):
            print(f"line {trial.line}: request")
            print(pretty_request(trial.request))
        else:
            first_rejected = first_rejected or trial.line
            print(f"line {trial.line}: rejected: {trial.request.reason}")
    print(f"({len(trials)} {'record' if len(trials) == 1 else 'records'} rendered; nothing sent)")
    if first_rejected is not None and on_bad_record == "fail":
        raise CommandError(f"{path}: line {first_rejected} is rejected, and on_bad_record is fail: the file would fail")
    return EXIT_OK


def _pipeline_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    client = _client(args, parser)
    found = client.pipelines()
    if not found:
        print(f"no pipelines in s3://{client.bucket}/pipelines/ (`batchdrop pipeline put FILE` adds one)")
        return EXIT_OK
    names = [item.name for item in found]
    print(f"{'name':<30} {'size':>8}  {'modified':<20}  key")
    for item in found:
        modified = item.last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        note = "  (two pipelines for one name: remove one)" if names.count(item.name) > 1 else ""
        print(f"{item.name:<30} {item.size:>8}  {modified:<20}  {item.key}{note}")
    return EXIT_OK


def _pipeline_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.domain.pipelines import pipeline_name_problem

    problem = pipeline_name_problem(args.name)
    if problem:
        raise UsageError(problem)
    client = _client(args, parser)
    for key, text in client.pipeline_text(args.name):
        print(f"# s3://{client.bucket}/{key}", file=sys.stderr, flush=True)
        sys.stdout.write(text.decode("utf-8", "replace"))
        if not text.endswith(b"\n"):
            sys.stdout.write("\n")
    return EXIT_OK


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
