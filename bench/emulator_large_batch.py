"""The emulator at the API's limits: one 100,000-request, 256 MB create, then its results.

Runs `batchdrop emulator` as its own process and reads its peak RSS (VmHWM) after the
create, after the batch ends and after the results download; beside it, the peak of the
naive way (`json.load` of the same body) measured in the same run.

    .venv/bin/python -m bench.emulator_large_batch [--requests N] [--megabytes M]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.synth import write_requests

MB = 1024 * 1024


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, "no VmHWM in /proc status"
    return int(match[1]) / 1024


@contextmanager
def emulator_process(*flags: str) -> Iterator[tuple[str, int]]:
    """`batchdrop emulator` in a child process; yields its URL and pid."""
    command = [sys.executable, "-m", "batchdrop_local.cli", "emulator", "--port", "0", *flags]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"listening on (http://\S+)", line)
            if not match:
                raise RuntimeError(f"emulator did not start: {line!r}")
            yield match[1], process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def naive_peak_mb(body: Path) -> float:
    """Peak RSS of a fresh interpreter that parses the body whole, the usual way."""
    code = (
        "import json, resource, sys; json.load(open(sys.argv[1], 'rb'));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(body)], capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


def measure(body: Path) -> dict[str, float]:
    """Create one batch from `body` on a fresh emulator, end it, download its results."""
    figures: dict[str, float] = {"body_mb": body.stat().st_size / MB}
    with emulator_process("--latency", "3600") as (url, pid):
        figures["idle_mb"] = peak_rss_mb(pid)
        started = time.perf_counter()
        with body.open("rb") as stream:
            response = httpx2.post(
                f"{url}/v1/messages/batches",
                content=stream,
                headers={"x-api-key": "bench", "content-type": "application/json"},
                timeout=600,
            )
        response.raise_for_status()
        batch_id = json.loads(response.content)["id"]
        figures["create_s"] = time.perf_counter() - started
        figures["create_peak_mb"] = peak_rss_mb(pid)

        started = time.perf_counter()
        EmulatorControl(url, timeout=600).end([batch_id])
        figures["finalize_s"] = time.perf_counter() - started
        figures["finalize_peak_mb"] = peak_rss_mb(pid)

        started = time.perf_counter()
        figures["results_lines"] = count_results(url, batch_id)
        figures["results_s"] = time.perf_counter() - started
        figures["results_peak_mb"] = peak_rss_mb(pid)
    return figures


def count_results(url: str, batch_id: str) -> int:
    """The batch's results, streamed and counted line by line, each checked to be one result.
    Read raw: building the SDK's models for 100,000 results takes longer than serving them."""
    lines = 0
    with httpx2.stream(
        "GET", f"{url}/v1/messages/batches/{batch_id}/results", headers={"x-api-key": "bench"}, timeout=600
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            result = json.loads(line)
            if not isinstance(result, dict) or set(result) != {"custom_id", "result"}:
                raise RuntimeError(f"results of {batch_id}, line {lines + 1}: not a batch result: {line[:200]!r}")
            lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--megabytes", type=float, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "batch.json"
        write_requests(body, args.requests, int(args.megabytes * MB) - 1, shape="batch")
        figures = measure(body)
        naive = naive_peak_mb(body)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"batch: {args.requests:,} requests, {figures['body_mb']:.1f} MB body")
    print(f"{'stage':<24}{'seconds':>10}{'emulator peak RSS (MB)':>26}")
    print(f"{'idle':<24}{'':>10}{figures['idle_mb']:>26.0f}")
    for stage in ("create", "finalize", "results"):
        print(f"{stage:<24}{figures[stage + '_s']:>10.1f}{figures[stage + '_peak_mb']:>26.0f}")
    print(f"results lines: {figures['results_lines']:,}")
    print(f"baseline json.load of the same body: peak {naive:.0f} MB")
    print(f"ratio naive / emulator peak: {naive / figures['results_peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
