"""The local stack's own footprint beside the file it handles: what `batchdrop local up` holds
in memory, on disk and in open files while one large clean file goes through, and whether it
stays flat once the job is done.

A child process (`python -m bench.stack child …`, so the RSS is the stack's own) runs a
LocalStack and a LocalRunner with its background threads, on `batchdrop local up`'s defaults
(emulator latency 2 s, checker every 2 s, inbox/ sweeper every 60 s). It writes one clean file
of valid requests (1.07 GB, 400,000 requests; --quick: 54 MB, 20,000) to a temporary file,
uploads it into inbox/ (multipart, as a large upload is) and deletes the temporary file, waits
for the job to be submitted, ends its batches (the emulator's control API) and waits for the
checker to collect them, then keeps the stack up, idle, for IDLE_SECONDS (65 s: one sweep of
the file still in inbox/ falls inside; --quick: 5 s).

A sampler thread reads, every 0.25 s while the file goes through and every second while
idle: the bytes held in deleted-but-open files (moto keeps every object over 5 MB in an
unlinked temporary file; the handlers spool to them too), the bytes the bucket holds (every
object version), and the open descriptors. Rows:

- peak RSS (VmHWM of the child), beside the file's size; judged against bench.goals' bound:
  the file's size plus 512 MB (the stack never holds the file in memory at once);
- peak disk held beyond what S3 itself stores (the most, over the samples, of deleted-file
  bytes minus the bucket's bytes at that moment), beside the file's size; judged against
  bench.goals' working set: the file (a multipart upload's parts, held until the upload
  completes) plus 256 MB (one shard's create body, spooled);
- disk held while idle: the most held over the idle period beside what was held right after
  the job; judged flat (growth under a few MB);
- open files when the runner started and at the end of the idle period (shown, not judged:
  HTTP connections opened during the job stay in their pools).

It is there because the local stack once grew by gigabytes a minute with one large file left
in inbox/ (each poll copied the object into another temporary file): it must stay flat."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import goals, procs
from bench.table import Figure

MB = procs.MB
# `batchdrop local up`'s defaults (local/batchdrop_local/cli.py).
LATENCY_SECONDS = 2.0
TICK_SECONDS = 2.0
SWEEP_SECONDS = 60.0
IDLE_SECONDS = 65.0  # longer than one sweep interval: the file left in inbox/ is swept while idle
QUICK_IDLE_SECONDS = 5.0
FINISHED = ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED")


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the runner started
    phase: str  # "job" or "idle"
    deleted_bytes: int  # held in deleted-but-open files
    stored_bytes: int  # every object version in the bucket
    open_files: int
    rss_mb: float = 0.0  # VmRSS then: when the peak came (the peak itself is VmHWM)

    @property
    def beyond_stored(self) -> int:
        return self.deleted_bytes - self.stored_bytes


def footprint() -> tuple[int, int]:
    """(open descriptors, bytes of the deleted files they hold) of this process."""
    open_files = deleted_bytes = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            size = os.fstat(int(name)).st_size
        except OSError:  # closed since the listing (the listing's own descriptor, among others)
            continue
        open_files += 1
        if target.endswith(" (deleted)"):
            deleted_bytes += size
    return open_files, deleted_bytes


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stored_bytes(stack: Any) -> int:
    pages = stack.client("s3").get_paginator("list_object_versions").paginate(Bucket=stack.bucket_name)
    return sum(int(version["Size"]) for page in pages for version in page.get("Versions", []))


class Sampler:
    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.samples: list[Sample] = []
        self.phase = "job"
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-stack-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def take(self) -> Sample:
        stored = stored_bytes(self.stack)
        open_files, deleted = footprint()
        sample = Sample(time.monotonic() - self._started, self.phase, deleted, stored, open_files, rss_mb())
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(0.25 if self.phase == "job" else 1.0):
            self.take()


def _wait(condition: Any, timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            print(f"stack: {what} not reached in {timeout:.0f} s", file=sys.stderr, flush=True)
            return False
        time.sleep(0.5)
    return True


def child(requests: int, size: int, idle_seconds: float, job_timeout: float) -> dict[str, Any]:
    """Everything the section measures, in this (child) process."""
    from batchdrop.domain.jobs import job_id_for, manifest_key
    from batchdrop_local.runner import LocalRunner
    from batchdrop_local.soak import job_status
    from batchdrop_local.stack import LocalStack
    from batchdrop_local.synth import write_requests

    with tempfile.TemporaryDirectory() as tmp, LocalStack(latency=LATENCY_SECONDS) as stack:
        runner = LocalRunner(stack, tick_seconds=TICK_SECONDS, sweep_seconds=SWEEP_SECONDS).start()
        sampler = Sampler(stack)
        try:
            at_start = sampler.take()
            sampler.start()
            source = Path(tmp) / "requests.jsonl"
            file_bytes = write_requests(source, requests, size)
            key = "inbox/bench-stack/large.jsonl"
            s3 = stack.client("s3")
            s3.upload_file(str(source), stack.bucket_name, key)
            source.unlink()
            uploaded = sampler.take()
            version = s3.head_object(Bucket=stack.bucket_name, Key=key)["VersionId"]
            job_id = job_id_for(stack.bucket_name, key, version)
            started = time.monotonic()
            submitted = _wait(
                lambda: job_status(stack, job_id) not in (None, "RECEIVED", "SUBMITTING"), job_timeout, "submitted"
            )
            submit_seconds = time.monotonic() - started
            at_submitted = sampler.take()
            stack.emulator_control().end()

            def finished() -> bool:
                from botocore.exceptions import ClientError

                try:
                    s3.head_object(Bucket=stack.bucket_name, Key=manifest_key(job_id))
                except ClientError:
                    stack.emulator_control().end()  # any batch created since
                    return False
                return job_status(stack, job_id) in FINISHED

            done = submitted and _wait(finished, job_timeout, "finished")
            job_seconds = time.monotonic() - started
            sampler.phase = "idle"
            after_job = sampler.take()
            time.sleep(idle_seconds)
            sampler.stop()
            at_end = sampler.take()
            status = job_status(stack, job_id)
        finally:
            sampler.stop()
            runner.stop()
    return {
        "file_bytes": file_bytes,
        "requests": requests,
        "status": status,
        "submitted": submitted,
        "finished": done,
        "submit_seconds": submit_seconds,
        "job_seconds": job_seconds,
        "idle_seconds": idle_seconds,
        "at_start": asdict(at_start),
        "uploaded": asdict(uploaded),
        "at_submitted": asdict(at_submitted),
        "after_job": asdict(after_job),
        "at_end": asdict(at_end),
        "samples": [asdict(sample) for sample in sampler.samples],
        "failures": len(runner.failures),
    }


def figures(found: dict[str, Any]) -> list[Figure]:
    """The section's rows from the child's report (pure: the unit tests give it figures)."""
    file_bytes = int(found["file_bytes"])
    file_mb = file_bytes / MB
    label = f"{found['requests']:,} requests, {file_bytes / 1e9:.2f} GB in inbox/"
    samples = [Sample(**sample) for sample in found["samples"]]
    job = [sample for sample in samples if sample.phase == "job"] or samples
    idle = [sample for sample in samples if sample.phase == "idle"]
    after_job, at_end, at_start = (Sample(**found[name]) for name in ("after_job", "at_end", "at_start"))
    peak = max(job + idle, key=lambda sample: sample.beyond_stored)
    most_idle = max((sample.deleted_bytes for sample in idle), default=after_job.deleted_bytes)
    growth = most_idle - after_job.deleted_bytes
    disk_goal = goals.stack_disk_beside_bucket(peak.beyond_stored, file_bytes)
    flat_goal = goals.stack_flat_while_idle(growth)
    state = "job finished" if found["finished"] else f"job {found['status']} (not finished in time)"
    rss = found["peak_rss_mb"]
    most_rss = max(samples, key=lambda sample: sample.rss_mb)
    memory_goal = goals.stack_memory_beside_file(rss, file_mb)
    marks = {name: found[name]["seconds"] for name in ("uploaded", "at_submitted") if name in found}
    when = ", ".join(f"{name.removeprefix('at_')} at {seconds:.0f} s" for name, seconds in marks.items())
    return [
        Figure(
            "stack",
            f"local stack + runner up, {label}, {state}: peak RSS (most sampled: {most_rss.rss_mb:,.0f} MB "
            f"at {most_rss.seconds:.0f} s; {when or 'no marks'})",
            rss,
            "MB",
            "the file's size",
            file_mb,
            file_mb / rss,
            memory_goal.text,
            memory_goal.met,
        ),
        Figure(
            "stack",
            f"{label}: peak disk held beyond the bucket's bytes (deleted-but-open files minus every object "
            f"version; {peak.deleted_bytes / MB:,.0f} MB held, {peak.stored_bytes / MB:,.0f} MB stored then)",
            peak.beyond_stored / MB,
            "MB",
            "the file's size",
            file_mb,
            file_mb / peak.beyond_stored * MB if peak.beyond_stored > 0 else None,
            disk_goal.text,
            disk_goal.met,
        ),
        Figure(
            "stack",
            f"{label}: most disk held over {found['idle_seconds']:g} s idle (growth {growth / MB:+.2f} MB; "
            f"{at_end.stored_bytes / MB:,.0f} MB stored)",
            most_idle / MB,
            "MB",
            "held right after the job",
            after_job.deleted_bytes / MB,
            goal=flat_goal.text,
            met=flat_goal.met,
        ),
        Figure(
            "stack",
            f"{label}: open files at the end of the idle period",
            at_end.open_files,
            "files",
            "when the runner started",
            at_start.open_files,
        ),
    ]


def run(quick: bool) -> list[Figure]:
    requests, size = (20_000, 53_500_000) if quick else (400_000, 1_070_000_000)
    idle = QUICK_IDLE_SECONDS if quick else IDLE_SECONDS
    timeout = 300 if quick else 1200
    print(f"stack: {requests:,} requests, {size / 1e6:,.0f} MB through the local stack, then {idle:g} s idle…")
    found = procs.run_child(
        "bench.stack", "child", str(requests), str(size), str(idle), str(timeout), timeout=timeout * 2 + 600
    )
    if found["failures"] or not found["submitted"]:
        raise RuntimeError(f"the job did not go through: {found['status']}, {found['failures']} failed invocations")
    return figures(found)


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stack")
    parser.add_argument("mode", choices=["child"])
    parser.add_argument("requests", type=int)
    parser.add_argument("size", type=int)
    parser.add_argument("idle", type=float)
    parser.add_argument("timeout", type=float)
    args = parser.parse_args()
    found = child(args.requests, args.size, args.idle, args.timeout)
    procs.report(found)


if __name__ == "__main__":
    _main()
