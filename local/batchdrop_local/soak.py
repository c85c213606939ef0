"""The soak: many jobs through the local stack while the emulator injects every kind of
fault it has (5xx and 429 on its endpoints, lost create responses, cut result streams, a
small processing queue, errored and expired requests), then an audit of what the pipeline
left behind: every request accounted for exactly once, and nothing submitted twice.

`python -m batchdrop_local.soak --jobs 40 --requests 500 --shard-requests 200 --seed 7` (`make
soak`) prints the figures and exits non-zero when an invariant fails; `run_soak()` returns them.

"Nothing submitted twice" (docs/guarantees.md): a request that errored
transiently or expired is legitimately sent again, once per attempt, so for every custom_id
the emulator's count of times it was sent must equal the attempt its final result came from
(the `-aN` suffix of its results part), and every batch the emulator accepted must be one a
manifest names (a batch no manifest names is a duplicate).

The pipeline's clocks are minutes (a 300 s create timeout, a 120 s grace before an unknown
create is sent again, leases of timeout + 60 s); the soak runs them 150 times faster, all in
the same ratios, as the end-to-end tests do (`compressed_time`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchdrop.domain.jobs import manifest_key, report_key
from batchdrop.domain.timings import Timings
from batchdrop_local.pipeline_settings import pipeline_settings
from batchdrop_local.synth import request

# How a job with at least one valid request ends (FAILED is for files with none).
DONE_STATUSES = frozenset({"COMPLETED", "COMPLETED_WITH_ERRORS", "CANCELED"})
MAX_ATTEMPTS = 3  # template.yaml's MaxAttempts default
# Production seconds → soak seconds.
TIME_SCALE = 150.0
COMPRESSED_TIMINGS = Timings().compressed(TIME_SCALE)
_PART = re.compile(r"/results-(\d{5})(?:-a(\d+))?\.jsonl$")


# ---------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Upload:
    """One object version dropped into inbox/: the job it becomes and its requests' ids."""

    key: str
    version_id: str
    job_id: str
    custom_ids: tuple[str, ...]


def request_file(prefix: str, count: int) -> tuple[bytes, list[str]]:
    """`count` valid requests whose custom_ids start with `prefix` (unique per file, so the
    emulator's per-custom_id counts are per request)."""
    lines = []
    ids = []
    for index in range(count):
        line = request(index, f"{prefix} request {index}: say something short")
        line["custom_id"] = f"{prefix}-{index:06d}"
        ids.append(line["custom_id"])
        lines.append(json.dumps(line, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n", ids


def put_requests(stack: Any, key: str, prefix: str, count: int) -> Upload:
    """Drop a file of `count` requests at `key`: the upload it is."""
    from batchdrop.domain.jobs import job_id_for

    body, ids = request_file(prefix, count)
    version = str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    return Upload(key, version, job_id_for(stack.bucket_name, key, version), tuple(ids))


# ---------------------------------------------------------------- time


def compressed_time(stack: Any) -> contextlib.AbstractContextManager[None]:
    """The stack's functions run on the pipeline's clocks divided by TIME_SCALE, in the same
    ratios as in production (`Timings.compressed`), until the block ends."""
    return pipeline_settings(stack, timings=COMPRESSED_TIMINGS)


# ---------------------------------------------------------------- the audit


@dataclass
class Audit:
    """What the pipeline left behind, against what was uploaded. `problems` is empty when
    every invariant holds."""

    jobs: int = 0
    finished: int = 0
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    final_at_attempt: Counter[str] = field(default_factory=Counter)
    requests_retried: int = 0
    requests_sent: int = 0  # request submissions the emulator received (every attempt)
    batches_created: int = 0  # batches the manifests name
    creates_accepted: int = 0  # batches the emulator accepted
    duplicate_batches: list[str] = field(default_factory=list)  # accepted, named by no manifest
    duplicate_submissions: int = 0  # custom_ids sent more often than their final attempt
    problems: list[str] = field(default_factory=list)


def read_object(stack: Any, key: str) -> bytes:
    return bytes(stack.client("s3").get_object(Bucket=stack.bucket_name, Key=key)["Body"].read())


def job_status(stack: Any, job_id: str) -> str | None:
    item = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.table_name, Key={"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "JOB"}}, ConsistentRead=True
        )
        .get("Item")
    )
    return item["status"]["S"] if item else None


def manifest_keys(stack: Any) -> set[str]:
    listing = stack.client("s3").get_paginator("list_objects_v2")
    keys = (
        item["Key"]
        for page in listing.paginate(Bucket=stack.bucket_name, Prefix="results/")
        for item in page.get("Contents", [])
    )
    return {key for key in keys if key.endswith("/manifest.json")}


def all_finished(stack: Any, uploads: Sequence[Upload]) -> bool:
    """Every upload's job has its manifest, and nothing is open in the table (no job still
    under way, no batch still to collect)."""
    if stack.open_batch_count():
        return False
    return {f"results/{u.job_id}/manifest.json" for u in uploads} <= manifest_keys(stack)


def provider_batches(stack: Any) -> list[dict[str, Any]]:
    """Every batch the emulator holds, through its public API."""
    import anthropic

    client = anthropic.Anthropic(api_key=stack.api_key, base_url=stack.emulator_url, max_retries=5)
    try:
        return [batch.model_dump(mode="json") for batch in client.messages.batches.list(limit=100)]
    finally:
        client.close()


def audit(stack: Any, uploads: Sequence[Upload], *, max_attempts: int = MAX_ATTEMPTS) -> Audit:
    """Check the whole invariant for `uploads`, which must be every upload since the
    emulator was last reset (its counters then count these jobs' batches and nothing else)."""
    control = stack.emulator_control()
    sent = control.custom_ids(minimum=1)
    counters = control.counters()
    report = Audit(creates_accepted=int(counters["creates_accepted"]))
    jobs: dict[str, Upload] = {}
    for upload in uploads:
        jobs.setdefault(upload.job_id, upload)
    report.jobs = len(jobs)
    named: list[str] = []
    for job_id, upload in jobs.items():
        report.requests += len(upload.custom_ids)
        named.extend(_audit_job(stack, job_id, upload, sent, report, max_attempts))
    ours = {custom_id for upload in jobs.values() for custom_id in upload.custom_ids}
    strays = sorted(set(sent) - ours)
    if strays:
        report.problems.append(f"the emulator received {len(strays)} custom_id(s) no upload holds: {strays[:5]}")
    report.requests_sent = sum(sent.values())
    report.batches_created = len(named)
    twice = sorted(batch_id for batch_id, times in Counter(named).items() if times > 1)
    if twice:
        report.problems.append(f"batches named by more than one shard attempt: {twice}")
    listed = {batch["id"]: batch for batch in provider_batches(stack)}
    report.duplicate_batches = sorted(set(listed) - set(named))
    if report.duplicate_batches:
        shown = {b: listed[b]["processing_status"] for b in report.duplicate_batches[:5]}
        report.problems.append(f"{len(report.duplicate_batches)} accepted batch(es) no manifest names: {shown}")
    if set(named) - set(listed):
        report.problems.append(f"manifests name batches the emulator never made: {sorted(set(named) - set(listed))}")
    if report.creates_accepted != len(named):
        report.problems.append(
            f"the emulator accepted {report.creates_accepted} batches; the manifests name {len(named)}"
        )
    uploads_left = stack.client("s3").list_multipart_uploads(Bucket=stack.bucket_name).get("Uploads", [])
    left = sorted(u["Key"] for u in uploads_left if any(job_id in u["Key"] for job_id in jobs))
    if left:
        report.problems.append(f"multipart uploads left open: {left}")
    return report


def _audit_job(
    stack: Any, job_id: str, upload: Upload, sent: Mapping[str, int], report: Audit, max_attempts: int
) -> list[str]:
    """One job's invariants, into `report`; the batch ids its manifest names."""
    problems = report.problems
    where = f"job {job_id} ({upload.key})"
    try:
        manifest = json.loads(read_object(stack, f"results/{job_id}/manifest.json"))
    except stack.client("s3").exceptions.NoSuchKey:
        problems.append(f"{where}: no manifest (job status {job_status(stack, job_id)})")
        return []
    status = job_status(stack, job_id)
    if status != manifest["status"] or status not in DONE_STATUSES:
        problems.append(f"{where}: job status {status}, manifest status {manifest['status']}")
    else:
        report.finished += 1
    ids = upload.custom_ids
    counts = manifest["counts"]
    if counts["requests"] != len(ids) or counts["rejected"] != 0:
        problems.append(f"{where}: manifest counts {counts} for {len(ids)} valid requests")

    # Results: the parts the manifest names and no others, every request exactly once.
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket=stack.bucket_name, Prefix=f"results/{job_id}/").get("Contents", [])
    named = {manifest_key(job_id), report_key(job_id)}  # the job's own files beside its parts
    parts = sorted(item["Key"] for item in listed if item["Key"] not in named)
    if parts != sorted(manifest["results"]):
        problems.append(f"{where}: parts in S3 {parts}, manifest names {manifest['results']}")
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key in manifest["results"]:
        for line in read_object(stack, key).splitlines():
            record = json.loads(line)
            found.setdefault(record["custom_id"], []).append((key, record["result"]))
    missing = set(ids) - set(found)
    extra = set(found) - set(ids)
    twice = sorted(custom_id for custom_id, lines in found.items() if len(lines) > 1)
    if missing or extra or twice:
        problems.append(
            f"{where}: {len(missing)} request(s) without a result {sorted(missing)[:3]}, "
            f"{len(extra)} result(s) of another file {sorted(extra)[:3]}, {len(twice)} more than once {twice[:3]}"
        )
    outcomes = Counter(lines[0][1]["type"] for lines in found.values())
    report.outcomes.update(outcomes)
    for outcome in ("succeeded", "errored", "canceled", "expired"):
        if counts[outcome] != outcomes[outcome]:
            problems.append(f"{where}: manifest counts {counts[outcome]} {outcome}, results hold {outcomes[outcome]}")

    # Attempts: each sent request went out once per attempt, up to the one its result is from.
    sent_attempts = {
        (int(shard["shard"]), int(attempt["attempt"])): attempt["batch_id"] is not None
        for shard in manifest["batches"]
        for attempt in shard["attempts"]
    }
    named = [a["batch_id"] for shard in manifest["batches"] for a in shard["attempts"] if a["batch_id"]]
    summary = manifest["attempts"]
    if summary["batches_created"] != len(named):
        problems.append(f"{where}: attempts.batches_created {summary['batches_created']}, batches named {named}")
    if sum(summary["final_at_attempt"].values()) != len(ids):
        problems.append(f"{where}: attempts.final_at_attempt {summary['final_at_attempt']} for {len(ids)} requests")
    report.final_at_attempt.update({k: int(v) for k, v in summary["final_at_attempt"].items()})
    report.requests_retried += int(summary["requests_retried"])
    wrong: list[str] = []
    for custom_id, lines in found.items():
        part, result = lines[0]
        match = _PART.search(part)
        if match is None:
            problems.append(f"{where}: a results part named {part}")
            continue
        shard, attempt = int(match.group(1)), int(match.group(2) or 1)
        expected = attempt if sent_attempts.get((shard, attempt), True) else attempt - 1
        times = sent.get(custom_id, 0)
        if times != expected:
            wrong.append(f"{custom_id} sent {times}x, final at attempt {attempt}")
            report.duplicate_submissions += times > expected
        transient = result["type"] == "expired" or (
            result["type"] == "errored" and result["error"]["error"]["type"] in ("api_error", "overloaded_error")
        )
        if transient and attempt < max_attempts:
            problems.append(f"{where}: {custom_id} ended {result['type']} at attempt {attempt} of {max_attempts}")
    if wrong:
        problems.append(f"{where}: {len(wrong)} request(s) not sent once per attempt: {wrong[:3]}")
    job_sent = sum(sent.get(custom_id, 0) for custom_id in ids)
    in_batches = sum(
        int(a["requests"]) for shard in manifest["batches"] for a in shard["attempts"] if a["batch_id"] is not None
    )
    if job_sent != in_batches:
        problems.append(f"{where}: the emulator received {job_sent} of its requests, its batches hold {in_batches}")
    return named


# ---------------------------------------------------------------- the soak


def fault_profile(jobs: int, shard_requests: int) -> dict[str, Any]:
    """Every fault the emulator has, at small rates, with budgets that grow with the run
    (so a long soak meets more of them, and a short one meets each at least sometimes).
    Its stalled create outlasts the compressed create timeout the soak runs with."""
    some = max(2, jobs // 4)
    stall = 1.25 * COMPRESSED_TIMINGS.create_timeout
    return {
        "http_errors": [
            {"endpoint": "create", "status": 500, "rate": 0.15, "times": some},
            {"endpoint": "create", "status": 529, "rate": 0.1, "times": some},
            {"endpoint": "create", "status": 429, "rate": 0.15, "times": some},
            {"endpoint": "retrieve", "status": 500, "rate": 0.05, "times": 2 * some},
            {"endpoint": "retrieve", "status": 529, "rate": 0.05, "times": 2 * some},
            {"endpoint": "results", "status": 500, "rate": 0.1, "times": some},
            {"endpoint": "list", "status": 429, "rate": 0.2, "times": some},
        ],
        # A create answered only after the client gave up (its compressed timeout): a batch
        # the submit function never hears of.
        "stalls": [{"endpoint": "create", "seconds": stall, "rate": 0.05, "times": 1 + jobs // 20}],
        "retry_after": 0.2,
        "errored": {"api_error": 0.04, "overloaded_error": 0.03},
        "expired": 0.03,
        "queue_limit": 2 * shard_requests + shard_requests // 2,
        "lose_create_response": {"rate": 0.15, "times": some},
        "drop_results": {"rate": 0.1, "times": some},
    }


@dataclass
class SoakReport:
    jobs: int
    requests_per_job: int
    seed: int
    shard_requests: int
    wall_seconds: float = 0.0
    drained: bool = False
    audit: Audit = field(default_factory=Audit)
    faults_injected: dict[str, int] = field(default_factory=dict)
    duplicate_events: int = 0
    invocations: Counter[str] = field(default_factory=Counter)
    failed_invocations: Counter[str] = field(default_factory=Counter)
    failed_events: int = 0

    @property
    def duplicates(self) -> int:
        return len(self.audit.duplicate_batches) + self.audit.duplicate_submissions

    @property
    def problems(self) -> list[str]:
        problems = list(self.audit.problems)
        if not self.drained:
            problems.insert(0, "the pipeline did not finish every job before the timeout")
        return problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        a = self.audit
        outcomes = ", ".join(f"{a.outcomes[k]} {k}" for k in ("succeeded", "errored", "expired", "canceled"))
        faults = ", ".join(f"{n} {kind}" for kind, n in sorted(self.faults_injected.items())) or "none"
        attempts = ", ".join(f"{n} at {k}" for k, n in sorted(a.final_at_attempt.items()))
        rows = [
            ("jobs", f"{a.finished} finished of {self.jobs} ({self.requests_per_job} requests each, seed {self.seed})"),
            ("requests", f"{a.requests} ({outcomes})"),
            ("shards of at most", f"{self.shard_requests} requests"),
            ("faults injected", f"{sum(self.faults_injected.values())} ({faults})"),
            ("duplicate events", str(self.duplicate_events)),
            ("requests retried", f"{a.requests_retried} (final outcome {attempts})"),
            ("requests sent", str(a.requests_sent)),
            ("batches created", f"{a.batches_created} (emulator accepted {a.creates_accepted})"),
            (
                "duplicates",
                f"{self.duplicates} ({len(a.duplicate_batches)} batches, {a.duplicate_submissions} requests)",
            ),
            ("invocations", ", ".join(f"{n} {f}" for f, n in sorted(self.invocations.items()))),
            ("failed invocations", ", ".join(f"{n} {f}" for f, n in sorted(self.failed_invocations.items())) or "0"),
            ("failed events", str(self.failed_events)),
            ("wall time", f"{self.wall_seconds:.1f} s"),
            ("result", "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def run_soak(
    jobs: int,
    requests_per_job: int,
    seed: int,
    *,
    stack: Any = None,
    shard_requests: int | None = None,
    latency: float = 0.5,
    timeout: float = 900.0,
    faults: dict[str, Any] | None = None,
    wave: int = 4,
    progress: Callable[[str], None] | None = None,
) -> SoakReport:
    """Upload `jobs` files of `requests_per_job` requests in waves of `wave` (a checker tick
    between waves, and every third file's event delivered twice) with the emulator's faults
    on, drain until every job is finished or `timeout` passes, and audit the result.

    `stack`: a running LocalStack whose emulator may be reset (its batches and counters are
    forgotten; its own seed draws the faults); by default one is started, with an emulator
    of `latency` seconds per batch whose fault draws come from `seed`."""
    if stack is None:
        from batchdrop_local.emulator.settings import EmulatorSettings
        from batchdrop_local.stack import LOCAL_API_KEY, LocalStack

        settings = EmulatorSettings(port=0, latency=latency, seed=seed, api_key=LOCAL_API_KEY)
        with LocalStack(emulator_settings=settings) as started:
            return run_soak(
                jobs,
                requests_per_job,
                seed,
                stack=started,
                shard_requests=shard_requests,
                timeout=timeout,
                faults=faults,
                wave=wave,
                progress=progress,
            )
    from batchdrop_local.runner import LocalRunner

    say = progress or (lambda _message: None)
    per_shard = shard_requests or requests_per_job
    report = SoakReport(jobs, requests_per_job, seed, per_shard)
    control = stack.emulator_control()
    control.reset(faults=True)
    started = time.monotonic()
    with (
        compressed_time(stack),
        pipeline_settings(stack, shard_max_requests=shard_requests),
    ):
        runner = LocalRunner(stack, tick_seconds=0.5, poll_seconds=0.1, retry_delay_seconds=0.05)
        control.set_faults(faults if faults is not None else fault_profile(jobs, per_shard))
        run = uuid.uuid4().hex[:6]
        uploads: list[Upload] = []
        for number in range(jobs):
            prefix = f"s{seed}-{run}-{number:04d}"
            uploads.append(put_requests(stack, f"inbox/soak/{run}/{number:04d}.jsonl", prefix, requests_per_job))
            if number % 3 == 2:  # S3 delivers events at least once
                runner.deliver_pending()
                runner.redeliver(uploads[-3].key, uploads[-3].version_id)
                report.duplicate_events += 1
            if (number + 1) % wave == 0:
                runner.run_once()
                say(f"uploaded {number + 1}/{jobs} files, {time.monotonic() - started:.0f} s")
        left = max(1.0, timeout - (time.monotonic() - started))
        report.drained = runner.drain(timeout=left, idle=lambda: all_finished(stack, uploads))
        say(f"drained in {time.monotonic() - started:.0f} s" if report.drained else "timed out draining")
        report.faults_injected = dict(control.counters()["faults_injected"])
        control.set_faults({})
        report.audit = audit(stack, uploads)
    report.wall_seconds = time.monotonic() - started
    for invocation in runner.invocations:
        report.invocations[invocation.function_logical_id] += 1
        if invocation.error is not None:
            report.failed_invocations[invocation.function_logical_id] += 1
    report.failed_events = len(runner.failures)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchdrop_local.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="files to upload (default 10)")
    parser.add_argument("--requests", type=int, default=100, help="requests per file (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the emulator's fault draws (default 0)")
    parser.add_argument("--shard-requests", type=int, default=None, help="split files into shards of this many")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds a batch takes in the emulator")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.requests < 1:
        parser.error("--jobs and --requests must be at least 1")
    # The handlers' logs are CloudWatch's; under faults they are many. Keep the screen for the figures.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "batchdrop")
    os.environ["POWERTOOLS_LOG_LEVEL"] = "CRITICAL"
    warnings.filterwarnings("ignore", "No application metrics to publish")
    logging.getLogger("batchdrop_local").setLevel(logging.CRITICAL)

    def say(message: str) -> None:
        sys.stderr.write(f"soak: {message}\n")

    say(f"{args.jobs} files of {args.requests} requests, seed {args.seed}, faults on")
    report = run_soak(
        args.jobs,
        args.requests,
        args.seed,
        shard_requests=args.shard_requests,
        latency=args.latency,
        timeout=args.timeout,
        progress=say,
    )
    sys.stdout.write(report.table() + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
