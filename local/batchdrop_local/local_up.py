"""`batchdrop local up`: start the local stack, narrate what it does, stop it on Ctrl-C.

cli.py parses the flags; this module does the rest: it refuses to start over a stack that
still runs (its env file names a live process), finds the API key for `--anthropic-api`,
quiets the handlers' JSON logs and metrics unless `--verbose`, starts the stack, the runner
and the narrator (batchdrop_local.narrator), prints how to use the stack, and on a clean stop
removes the env file it wrote, so that a client then says "not running"."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchdrop_local import envfile
from batchdrop_local.commands import EXIT_USAGE, CommandError
from batchdrop_local.stack import LOCAL_API_KEY, LocalStack

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Loggers whose every line is an HTTP request: shown with --verbose only.
ACCESS_LOGGERS = ("werkzeug", "httpx", "httpx2")
# Chatty at INFO and never about batchdrop: kept at WARNING even with --verbose.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "httpcore", "anthropic")


class AlreadyRunning(CommandError):
    exit_code = EXIT_USAGE


class MissingKey(CommandError):
    exit_code = EXIT_USAGE


def env_file_path(requested: Path | None) -> Path:
    """--env-file, or the one default place (batchdrop_local.envfile.default_path)."""
    return (requested or envfile.default_path()).expanduser().resolve()


def check_previous(path: Path) -> str | None:
    """Refuse (AlreadyRunning) when the env file at `path` names a stack that still runs; a
    note to print when it is stale and will be replaced; None when there is no file."""
    try:
        previous = envfile.read(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"# replacing {path}, which cannot be read ({exc})"
    reason = envfile.stale_reason(previous)
    if reason is not None:
        return f"# replacing a stale env file: {reason}"
    pid = previous.get(envfile.PID_VARIABLE, "?")
    started = previous.get(envfile.STARTED_VARIABLE, "at an unknown time")
    raise AlreadyRunning(
        f"a local stack is already running (pid {pid}, started {started}), its env file {path}; "
        "stop it or pass --env-file"
    )


def api_key(key_file: Path | None) -> str:
    """The key for --anthropic-api: the first line of --api-key-file, else ANTHROPIC_API_KEY."""
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise MissingKey(f"--api-key-file {key_file}: {exc.strerror or exc}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise MissingKey(f"--api-key-file {key_file}: the first line is empty, expected an Anthropic API key")
        return key
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        raise MissingKey("--anthropic-api needs an API key: set ANTHROPIC_API_KEY or pass --api-key-file FILE")
    if key == LOCAL_API_KEY:
        raise MissingKey(
            "ANTHROPIC_API_KEY holds the emulator's key (from a local env file): set your own key "
            "or pass --api-key-file FILE"
        )
    return key


def configure_logging(*, verbose: bool, level: str) -> None:
    """The functions' log level (LOG_LEVEL and POWERTOOLS_LOG_LEVEL, read once per process),
    the stack's own (on standard error), and without --verbose no metrics, no access logs."""
    os.environ["LOG_LEVEL"] = level
    os.environ["POWERTOOLS_LOG_LEVEL"] = level
    if not verbose:
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def show_access_logs(verbose: bool) -> None:
    """LocalStack quiets werkzeug when moto starts; --verbose brings its access log back."""
    for name in ACCESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


@contextlib.contextmanager
def function_logs(narrator: Any, *, verbose: bool) -> Iterator[None]:
    """While it runs: the functions' ERROR records narrated, and their JSON lines on standard
    output with --verbose only."""
    from batchdrop.observability import logger
    from batchdrop_local.narrator import ErrorLines

    errors = ErrorLines(narrator)
    json_handler = logger.registered_handler

    def mute(_record: logging.LogRecord) -> bool:
        return False

    logger.addHandler(errors)
    if not verbose:
        json_handler.addFilter(mute)
    try:
        yield
    finally:
        logging.getLogger(logger.name).removeHandler(errors)
        json_handler.removeFilter(mute)


def build_stack(args: argparse.Namespace) -> LocalStack:
    """The LocalStack the flags ask for (not started)."""
    options: dict[str, Any] = {}
    if args.anthropic_api:
        options = {"use_emulator": False, "anthropic_base_url": args.anthropic_base_url, "api_key": args.key}
    return LocalStack(
        moto_port=args.port_moto,
        emulator_port=args.port_emulator,
        latency=args.latency,
        responder=args.responder,
        parameters={"LogLevel": args.log_level},
        state_dir=args.state_dir,
        **options,
    )


def banner(args: argparse.Namespace, stack: LocalStack, env_file: Path, watching: str) -> str:
    """What the user reads once the stack is up: where it is and how to use it."""
    anthropic = (
        f"emulator {stack.emulator_url}"
        if stack.use_emulator
        else f"Anthropic's API at {stack.anthropic_base_url or 'the SDK default (https://api.anthropic.com)'}"
    )
    sweeps = f"sweeper every {args.sweep:g} s" if args.sweep else "no sweeper"
    lines = [
        f"# batchdrop local stack: moto {stack.moto_url}, {anthropic}",
        f"# env file: {env_file}",
        "# in another shell: `batchdrop submit FILE --wait` (it finds the env file itself);",
        f"#   other tools (aws cli, SDKs): set -a; . {env_file}; set +a",
        f"# watching {watching}; checker every {args.tick:g} s; {sweeps}; Ctrl-C to stop",
    ]
    if not stack.use_emulator:
        lines[1:1] = [
            "# WARNING: --anthropic-api: every request goes to Anthropic's API and is billed at the batch price;",
            "#   Ctrl-C stops the stack (batches already created run on; `batchdrop cancel JOB_ID` first)",
        ]
    return "\n".join(lines)


def remove_env_file(path: Path) -> None:
    """Remove the env file if this process wrote it (another stack may have replaced it)."""
    with contextlib.suppress(OSError, ValueError):
        if envfile.read(path).get(envfile.PID_VARIABLE) == str(os.getpid()):
            path.unlink()


def wait_for_signal() -> threading.Event:
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
