"""Measuring in child processes: each path under test runs in a fresh interpreter, so its
peak RSS is its own (the local stack's servers live in the parent) and its imports count."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    """This process's peak resident set size so far: VmHWM, which starts afresh at exec
    (ru_maxrss does not: a child keeps the peak of the parent it was forked from)."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    if match is None:
        raise RuntimeError("no VmHWM in /proc/self/status: peak RSS is measured on Linux only")
    return int(match[1]) / 1024


def report(figures: Mapping[str, Any]) -> None:
    """A child's last line: its figures and its peak RSS, as JSON."""
    print(json.dumps({**figures, "peak_rss_mb": peak_rss_mb()}), flush=True)


def run_child(module: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run `python -m module args…` with `env` over this environment; its report()."""
    command = [sys.executable, "-m", module, *args]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        return dict(json.loads(last))
    except json.JSONDecodeError:
        raise RuntimeError(f"{' '.join(command[2:])} printed no report:\n{done.stdout[-2000:]}") from None


@contextmanager
def sink() -> Iterator[str]:
    """`bench.sink` in a process of its own; yields its URL."""
    command = [sys.executable, "-m", "bench.sink"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"listening on (http://\S+)", line)
            if not match:
                raise RuntimeError(f"the sink did not start: {line!r}")
            yield match[1]
        finally:
            process.terminate()
            process.wait(timeout=30)
