"""`make bench`: every benchmark of batchdrop against the local stack, with the baselines
measured in the same run, printed as one table (and written to bench/latest.md, which
docs/performance.md links). Each goal is judged yes/NO, and the run exits 1 when one was missed, else 0. What
is judged against a baseline of the same run (bench.goals):

- submit: ours' time at most 1.5x the minimal stream-and-post path's, and at most 2x the
  parse floor's (the object read, each line json.loads, nothing else; measured in every run).
  Naive and the parse floor beside naive are shown, ratios and all, but judge nothing: the
  parse floor alone takes most of a quarter of naive's time;
- results: ours' throughput at least 0.5x a plain copy's;
- stack: the local stack's peak disk beyond the bytes its bucket holds at most 2x the file
  + 256 MB, and flat (under 4 MB of growth) while it stays up idle after a 1 GB file;
- outputs: a records job's outputs.csv and outputs.jsonl built with peak RSS under 256 MB,
  flat from 10,000 to 100,000 records, in at most 2x the time of a plain copy of its result
  parts (bench.outputs);
- and, as set in each section, the memory peaks, the checker's ticks and calls, the cold
  start and the cost. The priming section (bench.priming) prints figures only: a records job's
  cache reads, writes and cost without and with cache priming.

    .venv/bin/python -m bench [--only submit --only results …] [--out FILE]
    .venv/bin/python -m bench --quick [--only …] [--out FILE]

--quick is a smoke run of a minute or two: each benchmark on a small input (a few thousand
requests; the cold-start section only when an x86_64 build is already there, as it builds
nothing), printed as the same table. It judges no goal (the met column says "not judged
(--quick)"), exits 0 unless a benchmark crashed, and never writes bench/latest.md: it writes
a table only when given --out, and to any file but that one."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import goals
from bench.procs import ROOT
from bench.table import Figure, machine, markdown

LATEST = ROOT / "bench" / "latest.md"

# Each module has run(quick: bool) -> list[Figure], and starts what it needs itself.
SECTIONS = {
    "submit": "bench.submit",
    "results": "bench.results",
    "checker": "bench.checker",
    "cold-start": "bench.cold_start",
    "cost": "bench.cost",
    "stack": "bench.stack",
    "outputs": "bench.outputs",
    "records": "bench.records",
    "priming": "bench.priming",
}


def run_section(name: str, quick: bool) -> list[Figure]:
    # What Lambda's environment gives the handlers' module-level Powertools objects, set before
    # any section imports batchdrop (they read it once, at import, whichever section is first).
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "batchdrop")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "batchdrop/bench")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    return importlib.import_module(SECTIONS[name]).run(quick=quick)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run this section (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small inputs, no goal judged, bench/latest.md untouched")
    parser.add_argument("--out", type=Path, help="the table as Markdown (default: bench/latest.md; --quick: none)")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    measure: Callable[[str, bool], list[Figure]] = run_section,
    latest: Path = LATEST,
) -> int:
    """`measure` and `latest` are the sections' runner and the file a full run writes by default."""
    parser = _parser()
    args = parser.parse_args(argv)
    out: Path | None = args.out if args.out is not None or args.quick else latest
    if args.quick and out is not None and out.resolve() == latest.resolve():
        parser.error(f"--quick never writes {latest.name}: give --out another file")
    figures: list[Figure] = []
    started = time.monotonic()
    for name in args.only or list(SECTIONS):
        print(f"== {name}", flush=True)
        section_started = time.monotonic()
        found = measure(name, args.quick)
        if args.quick:
            found = goals.unjudged(found)
        print(markdown(found), flush=True)
        print(f"({name}: {time.monotonic() - section_started:.0f} s)\n", flush=True)
        figures.extend(found)
    table = markdown(figures)
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}"
        f"{' (--quick: small inputs, no goal judged, not figures to quote)' if args.quick else ''}; "
        f"the whole run took {time.monotonic() - started:.0f} s."
    )
    print(header)
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    if args.quick:
        return 0
    for figure in goals.missed(figures):
        print(f"goal missed: {figure.area}: {figure.what} ({figure.goal})", file=sys.stderr)
    return goals.exit_status(figures)


if __name__ == "__main__":
    sys.exit(main())
