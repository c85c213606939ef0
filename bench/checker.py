"""The checker at 1,000 open batches: an idle tick, a tick over 1,000 batches in
progress (beside a bare loop of 1,000 SDK retrieves, measured in the same run), the tick
that collects 1,000 ended batches against the function's timeout, and a tick cut short
that leaves the rest to the next ones, with an audit of every request at the end.

The calls are counted, not guessed: `CallCounter` counts the AWS calls of the tick's own
clients (built after it starts) and the emulator counts the API requests per endpoint.

How the 1,000 batches are made. The first job (two batches) goes through the real
Submitter; the other jobs are recorded as the Submitter records them (its own split of the
file, the bodies in work/, each batch created through the layer's BatchesApi.create, the
job, shard and owner items written as it leaves them), with items built from the real
job's own items. The builder is checked against those real items first, so the copies
cannot drift from what the Submitter writes. Why not the Submitter for all: moto
deep-copies the whole table for every item of every TransactWriteItems
(moto/dynamodb/models/__init__.py, transact_write_items), so the Submitter's transactions
slow down as the table grows and 1,000 shards would take far longer than this benchmark's
five minutes; DynamoDB itself has no such cost. The checker's path measured here makes no transaction."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from batchdrop.adapters.state import OPEN, OPEN_INDEX, StateTable
from batchdrop.domain.jobs import IdsDigest, job_id_for
from batchdrop.domain.records import SourceRef, lease_owner
from batchdrop.domain.requests import ValidLine, check_lines
from batchdrop.domain.shards import (
    SHARD_CONTENT_TYPE,
    ShardLimits,
    assign_shards,
    create_body,
    create_body_bytes,
    shard_key,
)
from batchdrop.domain.timings import Timings, stamp
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker, TickReport
from batchdrop_local.calls import CallCounter, FreshAdapters, fresh_adapters
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.soak import Upload, audit, request_file
from batchdrop_local.stack import LocalStack
from bench.table import Figure

SAFETY_SECONDS = Timings().tick_safety
TICK_BUDGET_SECONDS = Timings().tick_budget

AREA = "checker"
CHECKER = "CheckerFunction"
REQUESTS_PER_BATCH = 2
REAL_SHARDS = 2  # shards per job sent by the real Submitter (the rest are recorded as it records them)
IDLE_TICKS = 20
# Assumed, not measured: the real API's time per call and AWS's per call from Lambda, for the
# estimate of a tick against the real services.
ASSUMED_API_SECONDS = 0.25
ASSUMED_AWS_SECONDS = 0.02


def _say(message: str, started: float) -> None:
    print(f"  checker: {message} ({time.monotonic() - started:.0f} s)", flush=True)


# ---------------------------------------------------------------- clients


# ---------------------------------------------------------------- the population


@dataclass
class Population:
    uploads: list[Upload] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)


class ItemBuilder:
    """A job's and a shard's items as the Submitter leaves them once every shard has its
    batch, built from a real job's items: every attribute is copied from the real item and
    the identity ones are set for the new job and shard. `check()` rebuilds the real job's
    own items and compares, so a change in what the Submitter writes fails here."""

    def __init__(self, state: StateTable, real: Upload) -> None:
        self.real = real
        self.real_job_id = real.job_id
        job, shards = _raw_items(state, real.job_id)
        assert job is not None, "the real job has no item"
        assert shards, "the real job has no shards"
        self.job_template, self.shard_templates = job, shards
        self.guard_templates = [self._guard_item(state, shard["batch_id"]) for shard in shards]

    @staticmethod
    def _guard_item(state: StateTable, batch_id: str) -> dict[str, Any]:
        item = state.table.get_item(Key={"PK": f"PBATCH#{batch_id}", "SK": "OWNER"}, ConsistentRead=True)["Item"]
        return {key: int(value) if key == "index" else value for key, value in item.items()}

    def job(self, upload: Upload, requests: int, shards: int, created_at: str) -> dict[str, Any]:
        return {
            **self.job_template,
            "PK": f"JOB#{upload.job_id}",
            "job_id": upload.job_id,
            "key": upload.key,
            "version_id": upload.version_id,
            "created_at": created_at,
            "requested": requests,
            "shard_count": shards,
            "GSI1SK": f"JOB#{upload.job_id}",
        }

    def shard(
        self, job_id: str, index: int, lines: list[ValidLine], size: int, batch_id: str, version_id: str
    ) -> dict[str, Any]:
        digest = IdsDigest()
        for line in lines:
            digest.add(line.custom_id)
        template = self.shard_templates[0]
        return {
            **template,
            "PK": f"JOB#{job_id}",
            "SK": f"SHARD#{index:05d}",
            "job_id": job_id,
            "index": index,
            "key": shard_key(job_id, index),
            "requests": len(lines),
            "attempt_requests": len(lines),
            "size": size,
            "ids_digest": digest.hex,
            "batch_id": batch_id,
            "version_id": version_id,  # of its body in work/: creates and retries read that one
            "lease_owner": lease_owner(job_id, index, uuid.uuid4().hex),
            "GSI1SK": f"SHARD#{job_id}#{index:05d}",
        }

    @staticmethod
    def guard(job_id: str, index: int, batch_id: str) -> dict[str, Any]:
        return {"PK": f"PBATCH#{batch_id}", "SK": "OWNER", "job_id": job_id, "index": index}

    def check(self, shard_lines: dict[int, list[ValidLine]]) -> None:
        """The builder applied to the real job gives the real items (but for the times and
        the lease owner's unique suffix, which differ from run to run)."""
        varying = {"sent_at", "lease_owner"}
        job = self.job(self.real, len(self.real.custom_ids), len(self.shard_templates), self.job_template["created_at"])
        assert job == self.job_template, f"seeded job items differ from the Submitter's: {job} {self.job_template}"
        for real, guard in zip(self.shard_templates, self.guard_templates, strict=True):
            index = int(real["index"])
            built = self.shard(
                self.real_job_id, index, shard_lines[index], int(real["size"]), real["batch_id"], real["version_id"]
            )
            differs = {k for k in built.keys() | real.keys() if built.get(k) != real.get(k)} - varying
            assert not differs, f"seeded shard items differ from the Submitter's in {sorted(differs)}"
            assert str(real["lease_owner"]).startswith(lease_owner(self.real_job_id, index, ""))
            assert self.guard(self.real_job_id, index, real["batch_id"]) == guard, (guard, "guard item differs")


def _raw_items(state: StateTable, job_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A job's items as the table holds them (numbers as ints), the job's and its shards'."""
    items = state.table.query(
        KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": f"JOB#{job_id}"}, ConsistentRead=True
    )["Items"]
    plain = [json.loads(json.dumps(item, default=int)) for item in items]
    job = next((item for item in plain if item["SK"] == "JOB"), None)
    return job, sorted((item for item in plain if item["SK"].startswith("SHARD#")), key=lambda item: item["SK"])


def _split(body: bytes, per_batch: int) -> dict[int, list[ValidLine]]:
    """The Submitter's own split of a file: validated lines, assigned to shards."""
    lines = (line for line in check_lines(body.splitlines(keepends=True)) if isinstance(line, ValidLine))
    shards: dict[int, list[ValidLine]] = {}
    for index, line in assign_shards(lines, ShardLimits(max_requests=per_batch)):
        shards.setdefault(index, []).append(line)
    return shards


def _upload(stack: LocalStack, key: str, prefix: str, requests: int) -> tuple[Upload, bytes]:
    body, ids = request_file(prefix, requests)
    version = str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])
    return Upload(key, version, job_id_for(stack.bucket_name, key, version), tuple(ids)), body


def populate(stack: LocalStack, jobs: int, batches: int, tag: str) -> Population:
    """`batches` open batches of `REQUESTS_PER_BATCH` requests in `jobs` jobs: the first job
    of `REAL_SHARDS` batches through the real Submitter, the others recorded as it records."""
    clients = fresh_adapters(stack, max_pool_connections=16)
    population = Population()
    real, body = _upload(stack, f"inbox/bench-checker/{tag}-000.jsonl", f"{tag}000", REAL_SHARDS * REQUESTS_PER_BATCH)
    intake = Intake(clients.wiring(limits=ShardLimits(max_requests=REQUESTS_PER_BATCH)))
    outcome = intake.submit(SourceRef(stack.bucket_name, real.key, real.version_id))
    assert (outcome.status, outcome.submitted) == ("RUNNING", REAL_SHARDS), outcome
    builder = ItemBuilder(clients.state, real)
    builder.check(_split(body, REQUESTS_PER_BATCH))
    population.uploads.append(real)
    population.batch_ids += [shard["batch_id"] for shard in builder.shard_templates]
    seeded = batches - REAL_SHARDS
    per_job = [seeded // (jobs - 1) + (1 if n < seeded % (jobs - 1) else 0) for n in range(jobs - 1)]
    with ThreadPoolExecutor(8) as pool:
        for number, shards in enumerate(per_job, start=1):
            key = f"inbox/bench-checker/{tag}-{number:03d}.jsonl"
            upload, body = _upload(stack, key, f"{tag}{number:03d}", shards * REQUESTS_PER_BATCH)
            split = _split(body, REQUESTS_PER_BATCH)
            assert sorted(split) == list(range(shards))
            created = list(pool.map(partial(_create, clients, upload.job_id, split), split))
            items = [
                builder.shard(upload.job_id, index, split[index], size, batch_id, version_id)
                for index, size, batch_id, version_id in created
            ]
            items += [builder.guard(upload.job_id, index, batch_id) for index, _, batch_id, _ in created]
            items.append(builder.job(upload, len(upload.custom_ids), shards, stamp(datetime.now(UTC))))
            with clients.state.table.batch_writer() as writer:
                for item in items:
                    writer.put_item(Item=item)
            population.uploads.append(upload)
            population.batch_ids += [batch_id for _, _, batch_id, _ in created]
    clients.close()
    return population


def _create(
    clients: FreshAdapters, job_id: str, split: dict[int, list[ValidLine]], index: int
) -> tuple[int, int, str, str]:
    """A shard written to work/ and its batch created, as the Submitter does; with the
    version id of the body written, which the shard's item records."""
    lines = split[index]
    shard = b"".join(line.body + b"\n" for line in lines)
    written = clients.store.client.put_object(
        Bucket=clients.store.bucket, Key=shard_key(job_id, index), Body=shard, ContentType=SHARD_CONTENT_TYPE
    )
    size = create_body_bytes(len(lines), sum(len(line.body) for line in lines))
    batch = clients.api.create(create_body([shard]), size, Timings().create_timeout)
    return index, size, str(batch["id"]), str(written["VersionId"])


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Tick:
    seconds: float
    aws: Counter[tuple[str, str]]
    api: dict[str, int]  # emulator requests by endpoint
    report: TickReport
    overran: bool  # past its Lambda timeout

    def of(self, service: str) -> Counter[str]:
        return Counter({op: n for (svc, op), n in self.aws.items() if svc == service})

    def total(self, service: str) -> int:
        return sum(self.of(service).values())


def measured_tick(stack: LocalStack, timeout_seconds: float, budget_seconds: float = TICK_BUDGET_SECONDS) -> Tick:
    """One tick as Lambda runs it (a context counting down from `timeout_seconds`, work
    started only within `budget_seconds`), on clients of its own; its time, its AWS and API
    calls and its report."""
    control = stack.emulator_control()
    before = Counter(control.counters()["http_requests"])
    with CallCounter() as calls:
        clients = fresh_adapters(stack, max_pool_connections=16)
        context = LocalLambdaContext(function_name=stack.function_name(CHECKER), timeout_seconds=timeout_seconds)
        checker = Checker(
            clients.wiring(timings=Timings(tick_budget=budget_seconds)),
            seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
        )
        started = time.perf_counter()
        try:
            report = checker.tick()
        finally:
            clients.close()
        seconds = time.perf_counter() - started
        overran = context.timed_out
    after = Counter(control.counters()["http_requests"])
    return Tick(seconds, Counter(calls.calls), dict(after - before), report, overran)


def bare_retrieves(stack: LocalStack, batch_ids: list[str]) -> float:
    """The baseline: the SDK's retrieve of each batch in a loop, nothing else."""
    import anthropic

    client = anthropic.Anthropic(api_key=stack.api_key, base_url=stack.emulator_url, max_retries=3)
    try:
        started = time.perf_counter()
        for batch_id in batch_ids:
            client.messages.batches.retrieve(batch_id)
        return time.perf_counter() - started
    finally:
        client.close()


def bare_query(stack: LocalStack) -> float:
    """The baseline of an idle tick: one Query of the open index, nothing else."""
    client = stack.client("dynamodb")
    started = time.perf_counter()
    client.query(
        TableName=stack.table_name,
        IndexName=OPEN_INDEX,
        KeyConditionExpression="GSI1PK = :open",
        ExpressionAttributeValues={":open": {"S": OPEN}},
    )
    return time.perf_counter() - started


def lost_and_duplicated(stack: LocalStack, uploads: list[Upload]) -> tuple[int, int]:
    """Requests of these uploads with no result line, and with more than one, across every
    results part of their jobs (listed in S3, not taken from the manifests)."""
    s3 = stack.client("s3")
    lost = duplicated = 0
    for upload in uploads:
        seen: Counter[str] = Counter()
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=stack.bucket_name, Prefix=f"results/{upload.job_id}/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                if item["Key"].endswith(".jsonl"):
                    body = s3.get_object(Bucket=stack.bucket_name, Key=item["Key"])["Body"].read()
                    seen.update(json.loads(line)["custom_id"] for line in body.splitlines() if line)
        lost += sum(1 for custom_id in upload.custom_ids if not seen[custom_id])
        duplicated += sum(1 for n in seen.values() if n > 1) + sum(1 for c in seen if c not in upload.custom_ids)
    return lost, duplicated


@contextmanager
def quiet_handlers() -> Iterator[None]:
    """The layer logs a line per batch collected: thousands here. Keep the screen for figures."""
    from batchdrop.observability import logger

    level = logger.log_level
    logger.setLevel("CRITICAL")
    try:
        yield
    finally:
        logger.setLevel(level)


def _ops(counter: Counter[str]) -> str:
    return ", ".join(f"{op} {n:,}" for op, n in sorted(counter.items())) or "none"


# ---------------------------------------------------------------- the run


def run(quick: bool) -> list[Figure]:
    batches, jobs = (100, 2) if quick else (1000, 10)
    started = time.monotonic()
    with quiet_handlers(), LocalStack(latency=3600) as stack:  # an hour: nothing ends unless ended
        timeout = float(stack.template.function(CHECKER).timeout_seconds)
        control = stack.emulator_control()

        # 1,000 batches in progress: a tick over them, and the bare SDK loop over the same batches.
        first = populate(stack, jobs, batches, "open")
        assert len(first.batch_ids) == batches
        assert stack.open_batch_count() == batches + jobs
        _say(f"{batches:,} batches open in {jobs} jobs", started)
        open_ticks = [measured_tick(stack, timeout) for _ in range(2)]
        bare = min(bare_retrieves(stack, first.batch_ids) for _ in range(2))
        bare_open_query = min(bare_query(stack) for _ in range(2))
        open_tick = min(open_ticks, key=lambda tick: tick.seconds)
        _say(f"ticks over open batches: {', '.join(f'{t.seconds:.1f} s' for t in open_ticks)}", started)

        # The same batches ended: the tick that collects them all and closes the jobs.
        control.end()
        # The tick's budget lifted to the whole timeout: can one tick take them all?
        collect = measured_tick(stack, timeout, budget_seconds=timeout)
        assert len(collect.report.collected) == batches, collect.report
        assert len(collect.report.finished_jobs) == jobs, collect.report
        assert stack.open_batch_count() == 0
        _say(f"collected {batches:,} ended batches in {collect.seconds:.1f} s", started)

        # Nothing open, the table full of closed jobs and batches: idle ticks.
        idle = [measured_tick(stack, timeout) for _ in range(IDLE_TICKS)]
        idle_bare = statistics.median(bare_query(stack) for _ in range(IDLE_TICKS))

        # A second population, ended, collected by ticks cut short: the rest left to the next.
        control.reset()  # the audit counts this population's batches and requests only
        second = populate(stack, jobs, batches, "cut")
        control.end()
        budget = max(1.0, round(collect.seconds / 3))
        cut: list[Tick] = []
        while stack.open_batch_count() and len(cut) < 30:
            cut.append(measured_tick(stack, SAFETY_SECONDS + budget))
        _say(f"{len(cut)} cut ticks: {', '.join(str(len(t.report.collected)) for t in cut)} collected", started)
        lost, duplicated = lost_and_duplicated(stack, second.uploads)
        checked = audit(stack, second.uploads)
        _say("audited", started)

    figures = [
        *_idle_figures(idle, idle_bare, batches, jobs),
        *_open_figures(open_tick, bare, bare_open_query, batches, timeout),
    ]
    figures += _collect_figures(collect, batches, jobs, timeout)
    figures += _cut_figures(cut, budget, batches, jobs, lost, duplicated, checked)
    return figures


def _idle_figures(idle: list[Tick], bare: float, batches: int, jobs: int) -> list[Figure]:
    one_query = all(t.aws == Counter({("dynamodb", "Query"): 1}) and not t.api for t in idle)
    seconds = statistics.median(t.seconds for t in idle)
    api_calls = max(sum(t.api.values()) for t in idle)
    where = f"nothing open; the table holds {jobs} closed jobs, {batches:,} collected batches"
    return [
        Figure(
            AREA,
            f"idle tick ({where}): AWS calls, the most of {len(idle)} ticks (API calls: {api_calls})",
            max(sum(t.aws.values()) for t in idle),
            "calls",
            goal="1 DynamoDB Query; no S3, no API call",
            met=one_query,
        ),
        Figure(
            AREA,
            f"idle tick: duration, median of {len(idle)}",
            seconds * 1000,
            "ms",
            baseline="one bare Query of the open index, median",
            baseline_value=bare * 1000,
            ratio=bare / seconds,
        ),
    ]


def _open_figures(tick: Tick, bare: float, query: float, batches: int, timeout: float) -> list[Figure]:
    limit = timeout - SAFETY_SECONDS
    least = query + bare
    return [
        Figure(
            AREA,
            f"tick over {batches:,} batches in progress: duration (best of 2)",
            tick.seconds,
            "s",
            goal=f"< {limit:.0f} s (the {timeout:.0f} s timeout less the checker's {SAFETY_SECONDS:.0f} s margin)",
            met=tick.seconds < limit and not tick.overran,
        ),
        Figure(
            AREA,
            f"tick over {batches:,} batches in progress: API calls ({_ops(Counter(tick.api))})",
            sum(tick.api.values()),
            "calls",
            goal=f"1 list call per 1,000 open batches ({-(-batches // 1000)}), no retrieve",
            met=tick.api == {"list": -(-batches // 1000)},
        ),
        Figure(
            AREA,
            f"tick over {batches:,} batches in progress: AWS calls (DynamoDB: {_ops(tick.of('dynamodb'))}; "
            f"S3: {tick.total('s3')})",
            sum(tick.aws.values()),
            "calls",
            goal="1 DynamoDB Query, none per batch or request",
            met=tick.aws == Counter({("dynamodb", "Query"): 1}),
        ),
        Figure(
            AREA,
            f"tick over {batches:,} batches in progress: time per batch",
            tick.seconds / batches * 1000,
            "ms",
            baseline=f"bare SDK retrieve loop over the same {batches:,} (best of 2)",
            baseline_value=bare / batches * 1000,
            ratio=bare / tick.seconds,
        ),
        Figure(
            AREA,
            f"tick over {batches:,} batches in progress: duration, beside the least any checker does "
            f"(of which the one Query of {tick.report.open_batches:,} open items, on moto: {query:.2f} s)",
            tick.seconds,
            "s",
            baseline="one bare Query of the open index + the bare retrieve loop",
            baseline_value=least,
            ratio=least / tick.seconds,
            goal="< 1.5x the least",
            met=tick.seconds < 1.5 * least,
        ),
    ]


def _collect_figures(tick: Tick, batches: int, jobs: int, timeout: float) -> list[Figure]:
    limit = timeout - SAFETY_SECONDS
    dynamodb = tick.of("dynamodb")
    # A job is closed in one transaction with its day's spend (domain/budget.py).
    expected_dynamodb = Counter(
        {"Query": 1 + jobs, "GetItem": batches, "UpdateItem": batches, "TransactWriteItems": jobs}
    )
    api_calls, aws_calls = sum(tick.api.values()), sum(tick.aws.values())
    estimate = api_calls * ASSUMED_API_SECONDS + aws_calls * ASSUMED_AWS_SECONDS
    what = f"tick that collects {batches:,} ended batches and closes {jobs} jobs (budget lifted to the timeout)"
    return [
        Figure(
            AREA,
            f"{what}: duration",
            tick.seconds,
            "s",
            goal=f"< {limit:.0f} s (the {timeout:.0f} s timeout less the checker's {SAFETY_SECONDS:.0f} s margin)",
            met=tick.seconds < limit and not tick.overran,
        ),
        Figure(
            AREA,
            f"{what}: API calls ({_ops(Counter(tick.api))})",
            api_calls,
            "calls",
            goal="1 results download per batch, 1 list call per 1,000",
            met=tick.api == {"list": -(-batches // 1000), "results": batches},
        ),
        Figure(
            AREA,
            f"{what}: DynamoDB calls ({_ops(dynamodb)})",
            tick.total("dynamodb"),
            "calls",
            goal=f"2 per batch + 2 per job + 1 = {sum(expected_dynamodb.values()):,}",
            met=dynamodb == expected_dynamodb,
        ),
        Figure(
            AREA,
            f"{what}: S3 and EventBridge calls (S3: {_ops(tick.of('s3'))}; events: {_ops(tick.of('events'))})",
            tick.total("s3") + tick.total("events"),
            "calls",
            goal=(
                "1 PUT per batch (parts under 8 MiB) + per job a manifest PUT, a report PUT, an event and 2 GETs"
                " (its estimate and its priming record, set in the manifest)"
            ),
            met=tick.of("s3") == Counter({"PutObject": batches + 2 * jobs, "GetObject": 2 * jobs})
            and tick.of("events") == Counter({"PutEvents": jobs}),
        ),
        Figure(
            AREA,
            f"{what}: ESTIMATE against the real services, from the calls counted, at an assumed "
            f"{ASSUMED_API_SECONDS} s per API call and {ASSUMED_AWS_SECONDS} s per AWS call (not measured)",
            estimate,
            "s",
            goal=f"< {limit:.0f} s, else the rest is left to the next tick (below)",
        ),
    ]


def _cut_figures(
    ticks: list[Tick], budget: float, batches: int, jobs: int, lost: int, duplicated: int, checked: Any
) -> list[Figure]:
    collected = [len(t.report.collected) for t in ticks]
    deferred = [t.report.deferred for t in ticks]
    finished = sum(len(t.report.finished_jobs) for t in ticks)
    timeout = SAFETY_SECONDS + budget
    per_tick = ", ".join(f"{c:,}/{d:,}" for c, d in zip(collected, deferred, strict=True))
    return [
        Figure(
            AREA,
            f"{batches:,} ended batches, ticks with a {timeout:.0f} s timeout (stop at {SAFETY_SECONDS:.0f} s left: "
            f"~{budget:.0f} s of work): ticks needed (collected/deferred per tick: {per_tick})",
            len(ticks),
            "ticks",
            goal="> 1 tick, the first defers some, none past its timeout, all collected",
            met=len(ticks) > 1 and deferred[0] > 0 and not any(t.overran for t in ticks) and sum(collected) == batches,
        ),
        Figure(
            AREA,
            f"after those ticks: requests without a result line or with more than one "
            f"({lost} lost, {duplicated} duplicated, of {checked.requests:,}; audit problems: {len(checked.problems)})",
            lost + duplicated,
            "requests",
            goal="0, and the audit finds nothing",
            met=lost == duplicated == 0 and not checked.problems,
        ),
        Figure(
            AREA,
            "after those ticks: jobs finished, manifest and status agreeing",
            checked.finished,
            "jobs",
            goal=f"all {jobs} (closed by {finished})",
            met=checked.finished == finished == jobs,
        ),
    ]
