"""The `batchdrop` command."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from batchdrop_client import BatchdropError
from batchdrop_local.commands import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_user_commands,
)

EXIT_BUG = 70  # an error batchdrop did not expect (sysexits' EX_SOFTWARE)

EPILOG = """exit codes:
  0    success; submit --wait, status --watch: the job ended COMPLETED or COMPLETED_WITH_ERRORS
  1    submit --wait, status --watch: the job ended FAILED or CANCELED
  2    usage or input error: a bad flag or argument, a file that cannot be read, an unknown job id
  3    the target could not be reached: the local stack not running, an unknown --stack,
       no AWS credentials, a missing bucket or table, no answer in time
  4    submit --wait, status --watch: gave up waiting after --timeout (the job goes on)
  5    submit --wait, status --watch: the job waits for approval, over a budget (approve or cancel it)
  70   an unexpected error, a bug in batchdrop (--debug shows its traceback)
  130  stopped by Ctrl-C (a job already submitted goes on)

Errors are one line on standard error; --debug shows the traceback instead, with the same exit code.
docs/local.md is the manual."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="batchdrop", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="on an error, show its traceback instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulator(commands)
    _add_local(commands)
    add_user_commands(commands)
    args = parser.parse_args(argv)
    # SystemExit (argparse's usage errors, --help, --version) is not caught: it exits as argparse meant.
    try:
        code = int(args.run(args, parser) or 0)
        sys.stdout.flush()  # so that a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # The reader went away (`batchdrop status | head -1`): nothing left to say to it.
        _stdout_to_devnull()
        _tell(None, debug=args.debug)
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one place errors become a line and a code
        message, code = _explain(exc, args)
        _tell(message, debug=args.debug)
        return code
    return code


def _tell(message: str | None, *, debug: bool) -> None:
    """The error's one line on standard error, or with --debug its traceback instead (the exit
    code is the same either way)."""
    with contextlib.suppress(OSError):  # standard error closed as well: the exit code still tells
        if debug:
            traceback.print_exc()
        elif message:
            print(f"batchdrop: {message}", file=sys.stderr, flush=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchdrop")
    except PackageNotFoundError:
        return "(not installed)"


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null, so the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (a test's capture): nothing is flushed to a pipe
        pass


# --- errors: one line and an exit code ---------------------------------------------------

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
}
_ACCESS_CODES = {"AccessDenied", "AccessDeniedException"}


def _explain(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """The one line a person reads for `exc`, and the exit code."""
    if isinstance(exc, BatchdropError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    from botocore import exceptions as aws

    if isinstance(exc, aws.EndpointConnectionError | aws.ConnectTimeoutError):
        return _no_endpoint(str(exc.kwargs.get("endpoint_url", "")), args), EXIT_UNREACHABLE
    if isinstance(exc, aws.ReadTimeoutError):
        return _no_answer(str(exc.kwargs.get("endpoint_url", "")), args), EXIT_UNREACHABLE
    if isinstance(exc, aws.NoCredentialsError | aws.PartialCredentialsError):
        from batchdrop_local import envfile

        return (
            f"no AWS credentials: for the local stack, load its env file (`set -a; . {envfile.default_path()}; "
            "set +a`); for AWS, configure them (`aws configure`, AWS_PROFILE)",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, aws.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (the local stack's env file sets it)", EXIT_UNREACHABLE
    if isinstance(exc, aws.ClientError):
        return _refused(exc, args), EXIT_UNREACHABLE
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}", EXIT_USAGE
    return (
        f"unexpected error: {type(exc).__name__}: {exc} (a bug in batchdrop; --debug shows the traceback)",
        EXIT_BUG,
    )


def _local_endpoint(args: argparse.Namespace | None = None) -> str | None:
    """The endpoint the command used (or AWS_ENDPOINT_URL) when it names this machine: the
    local stack's moto."""
    endpoint = getattr(args, "endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL", "")
    return endpoint if urlsplit(endpoint).hostname in ("127.0.0.1", "localhost", "::1") else None


def _origin(url: str) -> str:
    return "{0.scheme}://{0.netloc}".format(urlsplit(url)) if url else "the AWS endpoint"


def _no_answer(url: str, args: argparse.Namespace) -> str:
    """A read timeout: something listens, but did not answer in time."""
    where = _origin(url)
    if _local_endpoint(args):
        return (
            f"no answer from {where} in time (read timeout): the local stack is busy or stuck; "
            "try again, or restart it with `batchdrop local up`"
        )
    return f"no answer from {where} in time (read timeout): try again, or check the network and AWS's status"


def _no_endpoint(url: str, args: argparse.Namespace | None = None) -> str:
    origin = _origin(url)
    if _local_endpoint(args):
        return (
            f"nothing listens at {origin} (AWS_ENDPOINT_URL): the local stack is not running, or the env file "
            "is from an earlier run; start it with `batchdrop local up` and load the env file it writes"
        )
    return f"cannot connect to {origin}: check the network and the region (AWS_DEFAULT_REGION)"


def _refused(exc: Any, args: argparse.Namespace) -> str:
    """A ClientError: AWS (or moto) answered, and said no."""
    error = exc.response.get("Error", {})
    code, text = error.get("Code", ""), error.get("Message", "")
    local = _local_endpoint(args)
    where = f" at {local}" if local else ""
    gone = (
        "; is the env file from an earlier `batchdrop local up`? load the one the running stack wrote"
        if local
        else "; was the stack deleted?"
    )
    if code == "NoSuchBucket":
        return f"bucket {error.get('BucketName') or getattr(args, 'bucket', None)} does not exist{where}{gone}"
    if code == "ResourceNotFoundException":
        return f"table {getattr(args, 'table', None)} does not exist{where}{gone}"
    if code == "ValidationError" and exc.operation_name == "DescribeStacks":
        import boto3

        region = boto3.session.Session().region_name
        return f"no stack {args.stack} in region {region}{where}: check the name and AWS_DEFAULT_REGION"
    if code in _CREDENTIAL_CODES:
        return f"AWS refused the credentials{where} ({code}): {text}"
    if code in _ACCESS_CODES:
        return f"access denied{where} ({exc.operation_name}): {text}"
    return f"{exc.operation_name} failed{where}: {code}: {text}"


# --- batchdrop emulator -----------------------------------------------------------------


def _add_emulator(commands: Any) -> None:
    p = commands.add_parser(
        "emulator",
        help="run the local Message Batches API emulator",
        description="A local, stateful emulator of Anthropic's Message Batches API (docs/local.md).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    p.add_argument("--latency", type=float, default=2.0, metavar="SECONDS", help="time until a batch ends")
    p.add_argument("--expiry", type=float, metavar="SECONDS", help="time until a batch expires (24 x latency)")
    p.add_argument("--retention", type=float, metavar="SECONDS", help="time until results are archived")
    p.add_argument("--cancel-latency", type=float, metavar="SECONDS", help="time a batch stays canceling")
    p.add_argument("--db", type=Path, metavar="FILE", help="SQLite file that keeps state across restarts")
    p.add_argument("--api-key", metavar="KEY", help="accept only this key (default: any non-empty key)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--max-requests", type=int, default=100_000, metavar="N")
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024 * 1024, metavar="N")
    p.add_argument("--allow-duplicate-custom-ids", action="store_true")
    p.add_argument("--results-url", choices=("absolute", "relative"), default="absolute")
    p.add_argument("--max-output-tokens", type=int, default=64_000, metavar="N")
    p.add_argument("--responder", metavar="MODULE:CALLABLE", help="your own responder")
    p.add_argument(
        "--cache-visibility",
        type=float,
        default=0.1,
        metavar="P",
        help="chance a batch request sees a prompt cache entry written after its batch was created (0.1)",
    )
    faults = p.add_argument_group("faults (docs/local.md, Faults)")
    faults.add_argument("--fault", action="append", default=[], metavar="ENDPOINT:STATUS:RATE[:TIMES]")
    faults.add_argument("--stall", action="append", default=[], metavar="ENDPOINT:SECONDS:RATE[:TIMES]")
    faults.add_argument("--retry-after", type=float, default=1.0, metavar="SECONDS")
    faults.add_argument("--errored-rate", action="append", default=[], metavar="TYPE:RATE")
    faults.add_argument("--expired-rate", type=float, default=0.0, metavar="RATE")
    faults.add_argument("--queue-limit", type=int, metavar="N")
    faults.add_argument("--lose-create-response", metavar="RATE[:TIMES]")
    faults.add_argument("--drop-results", metavar="RATE[:TIMES]")
    faults.add_argument("--poison", metavar="TEXT")
    faults.add_argument("--invalid-output-rate", type=float, default=0.0, metavar="RATE")
    p.set_defaults(run=_run_emulator)


def _emulator_settings(args: argparse.Namespace) -> Any:
    from batchdrop_local.emulator.faults import (
        FaultSettings,
        parse_errored_flag,
        parse_fault_flag,
        parse_rate_flag,
        parse_stall_flag,
    )
    from batchdrop_local.emulator.settings import EmulatorSettings

    faults = FaultSettings.model_validate(
        {
            "http_errors": [parse_fault_flag(f) for f in args.fault],
            "stalls": [parse_stall_flag(s) for s in args.stall],
            "retry_after": args.retry_after,
            "errored": dict(parse_errored_flag(e) for e in args.errored_rate),
            "expired": args.expired_rate,
            "queue_limit": args.queue_limit,
            "lose_create_response": args.lose_create_response
            and parse_rate_flag(args.lose_create_response, "--lose-create-response"),
            "drop_results": args.drop_results and parse_rate_flag(args.drop_results, "--drop-results"),
            "poison": args.poison,
            "invalid_output": args.invalid_output_rate,
        }
    )
    return EmulatorSettings(
        host=args.host,
        port=args.port,
        latency=args.latency,
        expiry=args.expiry,
        retention=args.retention,
        cancel_latency=args.cancel_latency,
        db=args.db,
        api_key=args.api_key,
        seed=args.seed,
        max_requests=args.max_requests,
        max_body_bytes=args.max_body_bytes,
        allow_duplicate_custom_ids=args.allow_duplicate_custom_ids,
        results_url=args.results_url,
        max_output_tokens=args.max_output_tokens,
        responder=args.responder,
        cache_visibility=args.cache_visibility,
        faults=faults,
    )


def _run_emulator(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop_local.emulator.server import Emulator

    try:
        settings = _emulator_settings(args)
        emulator = Emulator(settings)
    except (ValueError, ValidationError) as exc:
        parser.error(str(exc))
    except OSError as exc:  # the port is taken, the address is not ours, the db is unwritable
        parser.error(f"cannot start the emulator on {args.host}:{args.port}: {exc}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with emulator:
        print(f"emulator listening on {emulator.url}", flush=True)
        while not stop.wait(0.5):  # a wait with no timeout misses a signal handed to another thread
            pass
    print("emulator stopped", file=sys.stderr)
    return 0


# --- batchdrop local up -----------------------------------------------------------------


def _add_local(commands: Any) -> None:
    local = commands.add_parser(
        "local",
        help="run batchdrop locally: moto, the emulator and both handlers",
        description="The local stack (docs/local.md): no AWS account, no Anthropic key.",
    )
    local_commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    up = local_commands.add_parser(
        "up",
        help="start the local stack and serve until Ctrl-C",
        description=(
            "Start moto and the Message Batches emulator on 127.0.0.1, create template.yaml's resources, "
            "deliver inbox/ uploads and cancel/ requests to the submit handler, sweep inbox/ and tick the "
            "checker; write the client environment to the env file and print one line per event."
        ),
    )
    up.add_argument("--latency", type=float, default=2.0, metavar="SECONDS", help="emulator: time until a batch ends")
    up.add_argument("--tick", type=float, default=2.0, metavar="SECONDS", help="checker schedule (default 2)")
    up.add_argument(
        "--sweep", type=float, default=60.0, metavar="SECONDS", help="inbox/ sweeper schedule (default 60; 0: off)"
    )
    up.add_argument("--port-moto", type=int, default=0, metavar="N", help="moto's port; 0 picks a free one")
    up.add_argument("--port-emulator", type=int, default=0, metavar="N", help="the emulator's port; 0 picks one")
    up.add_argument("--responder", metavar="MODULE:CALLABLE", help="the emulator's responder (docs/local.md)")
    up.add_argument(
        "--env-file", type=Path, metavar="FILE", help="where to write the env (default $BATCHDROP_HOME/local.env)"
    )
    up.add_argument("--verbose", action="store_true", help="also the handlers' JSON logs, metrics and access logs")
    up.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO", help="functions' and stack's"
    )
    real = up.add_argument_group("the real API (spends money)")
    real.add_argument("--anthropic-api", action="store_true", help="no emulator: call Anthropic's API")
    real.add_argument("--api-key-file", type=Path, metavar="FILE", help="the key's file (default $ANTHROPIC_API_KEY)")
    real.add_argument("--anthropic-base-url", metavar="URL", help="the API's URL (default the SDK's; for tests)")
    up.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep moto's and the emulator's state in DIR across a stop and a start (docs/local.md)",
    )
    up.set_defaults(run=_run_local_up)


def _run_local_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop_local import local_up

    if args.tick <= 0 or args.latency < 0 or args.sweep < 0:
        parser.error("--tick must be > 0, --latency and --sweep >= 0")
    if not args.anthropic_api and (args.api_key_file or args.anthropic_base_url):
        parser.error("--api-key-file and --anthropic-base-url go with --anthropic-api")
    env_path = local_up.env_file_path(args.env_file)
    note = local_up.check_previous(env_path)
    args.key = local_up.api_key(args.api_key_file) if args.anthropic_api else None
    if args.anthropic_api and not args.anthropic_base_url:
        os.environ.pop("ANTHROPIC_BASE_URL", None)  # the SDK would read it: the real API has none
    local_up.configure_logging(verbose=args.verbose, level=args.log_level)
    stop = local_up.wait_for_signal()
    try:
        stack = local_up.build_stack(args).start()
    except (ValueError, OSError) as exc:  # a bad template or responder, a port in use
        parser.error(str(exc))
    local_up.show_access_logs(args.verbose)
    if note:
        print(note, flush=True)
    try:
        _serve(args, stack, env_path, stop)
    finally:
        stack.stop()
        local_up.remove_env_file(env_path)
    print("local stack stopped", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace, stack: Any, env_path: Path, stop: threading.Event) -> None:
    """Run the runner and the narrator until `stop` is set; the env file is written once all runs."""
    from batchdrop_local import local_up
    from batchdrop_local.narrator import Narrator
    from batchdrop_local.runner import LocalRunner

    narrator = Narrator.for_stack(stack, write=lambda line: print(line, flush=True))
    with (
        local_up.function_logs(narrator, verbose=args.verbose),
        LocalRunner(stack, tick_seconds=args.tick, sweep_seconds=args.sweep or None, observer=narrator) as runner,
    ):
        env_file = stack.write_env_file(env_path)
        watching = " and ".join(f"s3://{stack.bucket_name}/{t.prefix}" for t in runner.triggers)
        print(local_up.banner(args, stack, env_file, watching), flush=True)
        narrator.start()
        try:
            # a wait with no timeout never wakes for a signal the kernel hands to another thread
            while not stop.wait(0.5):
                pass
        finally:
            runner.stop()
            narrator.stop()


# Commands that run servers until stopped: they import moto, the emulator and both handlers,
# and tearing all that down at interpreter exit takes seconds after the stack has stopped.
LONG_RUNNING = ("local", "emulator")


def entry() -> None:
    """The `batchdrop` console script: main(), then, for a command that ran servers, an exit
    without the interpreter's teardown once everything it wrote is flushed (its stack is
    stopped and its env file removed by then)."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in LONG_RUNNING:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
