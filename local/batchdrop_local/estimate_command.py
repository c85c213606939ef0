"""`batchdrop estimate FILE`: what a file would cost, before it is sent (docs/cost.md).

Input tokens are counted with `count_tokens` where the other commands find their API: the
local stack's emulator (ANTHROPIC_BASE_URL and its key, from the environment or the env
file), or with --anthropic-api Anthropic's API and your key (counting is free, but has a rate
limit of its own). Without either, or with --offline, the estimate uses the local
approximation and says so. The file is read here, never uploaded."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchdrop_client.errors import PipelineInvalid

EXIT_OK = 0


def add_estimate(commands: Any, common: argparse.ArgumentParser) -> None:
    from batchdrop.domain.estimate import DEFAULT_SAMPLE_SIZE, DEFAULT_SEED

    estimate = commands.add_parser(
        "estimate",
        parents=[common],
        help="what a file would cost, before sending it",
        description=(
            "Estimate the tokens and cost of a native .jsonl[.gz] file, or of a records .csv/.jsonl[.gz] file "
            "rendered through a pipeline (--pipeline NAME from the bucket, or --pipeline-file PATH): input tokens "
            "counted with count_tokens (all requests of a small file, a seeded sample of a large one), output "
            "tokens expected and at most, and the cost at the standard price, the batch price, with caching, and "
            "at most. Nothing is uploaded or sent to a batch. docs/cost.md."
        ),
    )
    estimate.add_argument("file", type=Path, help="a .jsonl[.gz] of requests, or with a pipeline a .csv/.jsonl[.gz]")
    which = estimate.add_mutually_exclusive_group()
    which.add_argument("--pipeline", metavar="NAME", help="records mode: the pipeline pipelines/NAME in the bucket")
    which.add_argument("--pipeline-file", type=Path, metavar="PATH", help="records mode: a local pipeline file")
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON (docs/cost.md)")
    estimate.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        metavar="N",
        help=f"requests counted at most ({DEFAULT_SAMPLE_SIZE})",
    )
    estimate.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"the sample's seed ({DEFAULT_SEED})")
    estimate.add_argument("--offline", action="store_true", help="count nothing: the local approximation only")
    estimate.add_argument(
        "--prime-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="price the job as primed: its cached prefix written once before the batch (default: the pipeline's)",
    )
    real = estimate.add_argument_group("Anthropic's API (count_tokens is free, rate-limited)")
    real.add_argument("--anthropic-api", action="store_true", help="count with Anthropic's API, not the emulator")
    real.add_argument("--api-key-file", type=Path, metavar="FILE", help="the key's file (default $ANTHROPIC_API_KEY)")
    real.add_argument("--anthropic-base-url", metavar="URL", help="the API's URL (default the SDK's; for tests)")
    estimate.set_defaults(run=_estimate)


def _estimate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from batchdrop.domain.estimate import Estimator
    from batchdrop.domain.prices import price_table
    from batchdrop_client.estimate import estimate_file, summary_lines

    if args.sample < 2:
        parser.error("--sample must be at least 2")
    if not args.anthropic_api and (args.api_key_file or args.anthropic_base_url):
        parser.error("--api-key-file and --anthropic-base-url go with --anthropic-api")
    pipeline = _pipeline(args, parser)
    estimator = Estimator(
        sample_size=args.sample, seed=args.seed, prices=price_table(os.environ.get("BATCHDROP_PRICES_JSON"))
    )
    counter, close, reason = _counter(args)
    try:
        primed = args.prime_cache if args.prime_cache is not None else bool(pipeline and pipeline.prime_cache)
        found = estimate_file(
            args.file, counter=counter, no_counter_reason=reason, pipeline=pipeline, estimator=estimator, primed=primed
        )
    finally:
        close()
    lines = [json.dumps(found.estimate, indent=2)] if args.json else summary_lines(found)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return EXIT_OK


def _pipeline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    from batchdrop_client.pipelines import load_pipeline_file

    if args.pipeline_file is not None:
        return load_pipeline_file(args.pipeline_file).pipeline
    if args.pipeline is None:
        return None
    from batchdrop.domain.pipelines import PipelineError, parse_pipeline, pipeline_name_problem, syntax_of
    from batchdrop_local.commands import _client

    problem = pipeline_name_problem(args.pipeline)
    if problem:
        raise PipelineInvalid(problem)
    client = _client(args, parser)
    key, text = client.pipeline_text(args.pipeline)[0]
    try:
        return parse_pipeline(args.pipeline, text, syntax=syntax_of(key) or "json", source=key)
    except PipelineError as exc:
        raise PipelineInvalid(str(exc)) from None


def _counter(args: argparse.Namespace) -> tuple[Any, Callable[[], None], str | None]:
    """The count_tokens function to use, what closes it, and why there is none when so."""
    from batchdrop_client import environment
    from batchdrop_client.estimate import sdk_counter

    if args.offline:
        return None, _nothing, "--offline: nothing was counted"
    if args.anthropic_api:
        from batchdrop_local import local_up

        counter, close = sdk_counter(api_key=local_up.api_key(args.api_key_file), base_url=args.anthropic_base_url)
        return counter, close, None
    env = environment.resolve().env
    url, key = env.get("ANTHROPIC_BASE_URL"), env.get("ANTHROPIC_API_KEY")
    if not url or not key:
        return (
            None,
            _nothing,
            ("no API to count with: start the local stack (`batchdrop local up`) or pass --anthropic-api"),
        )
    counter, close = sdk_counter(api_key=key, base_url=url)
    return counter, close, None


def _nothing() -> None:
    return None
