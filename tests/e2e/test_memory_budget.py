"""Memory that grows with the data is a gross regression whatever the machine's speed: the
real handlers run in fresh interpreters (as in bench/) on a small and a five times larger
input, and their peak RSS (VmHWM) must stay put. No timing is asserted.

Both sizes are past one 8 MiB part, so both use the same multipart writer and buffers:
what is left to grow is whatever holds the data itself (a list of lines, a whole body)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from bench import procs
from bench.submit import job_of, shard_items, submit_child, upload

# Five times the input may add no more than this to a peak: the part buffers and the SDK's
# are already at their largest on the small input; a copy of the data would add 100 MB.
GROWTH_LIMIT_MB = 40

# This module's stack (tests/e2e/conftest.py): batches end only when a test ends them, with
# long answers
STACK = {"latency": 3600, "responder": "bench.responders:padded_long"}


def _submit(stack: LocalStack, tmp_path: Path, name: str, requests: int, size: int) -> tuple[str, dict[str, Any]]:
    source = tmp_path / f"{name}.jsonl"
    write_requests(source, requests, size)
    event = upload(stack, source, f"inbox/memory/{name}.jsonl")
    source.unlink()
    submitted = submit_child("ours", event, stack.function_env("SubmitFunction"), tmp_path)
    assert submitted["status"] == "RUNNING"
    return job_of(event), submitted


def test_submit_peak_memory_does_not_grow_with_the_file(stack: LocalStack, tmp_path: Path) -> None:
    # Given a 20 MB and a 100 MB file of the same 4,000 requests (larger ones in the second)
    # When the real submit handler takes each from S3 to a recorded batch
    _, small = _submit(stack, tmp_path, "submit-small", 4_000, 20_000_000)
    _, large = _submit(stack, tmp_path, "submit-large", 4_000, 100_000_000)
    # Then 80 MB more input adds (almost) nothing to its peak
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    print(f"submit peaks {small['peak_rss_mb']} {large['peak_rss_mb']} {small['seconds']} {large['seconds']}")
    assert growth < GROWTH_LIMIT_MB, (
        f"submit peak grew {growth:.0f} MB: {small['peak_rss_mb']:.0f} → {large['peak_rss_mb']:.0f}"
    )


def test_collecting_peak_memory_does_not_grow_with_the_results(stack: LocalStack, tmp_path: Path) -> None:
    peaks = []
    for name, requests in (("results-small", 3_000), ("results-large", 15_000)):
        # Given an ended batch of 3,000 results of 4 KB (13 MB), then one of 15,000 (64 MB)
        job_id, _ = _submit(stack, tmp_path, name, requests, 0)
        batch_ids = [item["batch_id"]["S"] for item in shard_items(stack, job_id)]
        EmulatorControl(stack.emulator_url, timeout=300).end(batch_ids)
        # When one tick of the real checker handler collects it into S3
        tick = procs.run_child("bench.results_child", "ours", env=stack.function_env("CheckerFunction"))
        assert (tick["collected"], tick["finished"]) == (1, 1)
        peaks.append(tick["peak_rss_mb"])
    # Then five times the results add (almost) nothing to its peak
    growth = peaks[1] - peaks[0]
    print(f"checker peaks {peaks}")
    assert growth < GROWTH_LIMIT_MB, f"checker peak grew {growth:.0f} MB: {peaks[0]:.0f} → {peaks[1]:.0f}"
