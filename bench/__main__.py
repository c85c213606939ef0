"""`make bench`: every benchmark of batchdrop against the local stack, with the baselines
measured in the same run, printed as one table (and written to bench/latest.md for the
README). Exits 1 when a goal was missed.

    .venv/bin/python -m bench [--only submit --only results …] [--quick] [--out FILE]

--quick runs each benchmark on a tenth of its input: a smoke run, not figures to quote."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.table import Figure, machine, markdown

# What Lambda's environment gives the handlers' module-level Powertools objects, set before
# any section imports batchdrop (they read it once, at import, whichever section is first).
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "batchdrop")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "batchdrop/bench")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Each module has run(quick: bool) -> list[Figure], and starts what it needs itself.
SECTIONS = {
    "submit": "bench.submit",
    "results": "bench.results",
    "checker": "bench.checker",
    "cold-start": "bench.cold_start",
    "cost": "bench.cost",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run this section (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a tenth of each input: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("bench/latest.md"), help="the table as Markdown")
    args = parser.parse_args()
    figures: list[Figure] = []
    started = time.monotonic()
    for name in args.only or list(SECTIONS):
        print(f"== {name}", flush=True)
        section_started = time.monotonic()
        found = importlib.import_module(SECTIONS[name]).run(quick=args.quick)
        print(markdown(found), flush=True)
        print(f"({name}: {time.monotonic() - section_started:.0f} s)\n", flush=True)
        figures.extend(found)
    table = markdown(figures)
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}"
        f"{' (--quick: smoke run, not figures to quote)' if args.quick else ''}; "
        f"the whole run took {time.monotonic() - started:.0f} s."
    )
    print(header)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    missed = [figure for figure in figures if figure.met is False]
    for figure in missed:
        print(f"goal missed: {figure.area}: {figure.what} ({figure.goal})", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
