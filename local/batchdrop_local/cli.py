"""The `batchdrop` command."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchdrop_local.commands import add_user_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchdrop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_emulator(commands)
    _add_local(commands)
    add_user_commands(commands)
    args = parser.parse_args(argv)
    return int(args.run(args, parser) or 0)


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
    faults = p.add_argument_group("faults (docs/local.md, Faults)")
    faults.add_argument("--fault", action="append", default=[], metavar="ENDPOINT:STATUS:RATE[:TIMES]")
    faults.add_argument("--stall", action="append", default=[], metavar="ENDPOINT:SECONDS:RATE[:TIMES]")
    faults.add_argument("--retry-after", type=float, default=1.0, metavar="SECONDS")
    faults.add_argument("--errored-rate", action="append", default=[], metavar="TYPE:RATE")
    faults.add_argument("--expired-rate", type=float, default=0.0, metavar="RATE")
    faults.add_argument("--queue-limit", type=int, metavar="N")
    faults.add_argument("--lose-create-response", metavar="RATE[:TIMES]")
    faults.add_argument("--drop-results", metavar="RATE[:TIMES]")
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
        stop.wait()
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
            "checker; write the client environment to --env-file and print it."
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
        "--env-file", type=Path, default=Path(".batchdrop/local.env"), metavar="FILE", help="where to write the env"
    )
    up.set_defaults(run=_run_local_up)


def _run_local_up(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import logging

    from batchdrop_local.runner import LocalRunner
    from batchdrop_local.stack import LocalStack, iter_env_lines

    if args.tick <= 0 or args.latency < 0 or args.sweep < 0:
        parser.error("--tick must be > 0, --latency and --sweep >= 0")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "found credentials in environment", per client
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack = LocalStack(
            moto_port=args.port_moto,
            emulator_port=args.port_emulator,
            latency=args.latency,
            responder=args.responder,
        ).start()
    except (ValueError, OSError) as exc:  # a bad template or responder, a port in use
        parser.error(str(exc))
    try:
        with LocalRunner(stack, tick_seconds=args.tick, sweep_seconds=args.sweep or None) as runner:
            env_file = stack.write_env_file(args.env_file)
            print(f"# batchdrop local stack: moto {stack.moto_url}, emulator {stack.emulator_url}")
            print(f"# written to {env_file}; load it with: set -a; . {env_file}; set +a")
            for line in iter_env_lines(stack.env):
                print(line)
            prefixes = " and ".join(f"s3://{stack.bucket_name}/{t.prefix}" for t in runner.triggers)
            sweeps = f"sweeper every {args.sweep:g} s" if args.sweep else "no sweeper"
            print(
                f"# watching {prefixes}; checker every {args.tick:g} s; {sweeps}; Ctrl-C to stop\n"
                f"# drop request files under inbox/ (`batchdrop submit FILE`); cancel with `batchdrop cancel JOB_ID`",
                flush=True,
            )
            stop.wait()
    finally:
        stack.stop()
    print("local stack stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
