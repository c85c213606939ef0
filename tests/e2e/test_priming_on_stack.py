"""Cache priming on the local stack, whose emulator models a batch's requests missing each
other's cache writes: a records job whose pipeline caches a long system prompt for an hour,
run without and then with `prime_cache`, a native file sent with `batchdrop submit
--prime-cache`, and a stack deployed with PrimeCache=true. Primed, every request of the batch
reads the prefix the priming wrote; not, most of them write it again."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchdrop.domain.jobs import job_id_for
from batchdrop.services.priming import priming_key
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import read, run_to_the_end, upload_bytes

pytestmark = pytest.mark.e2e

# This module's stack and runner (tests/e2e/conftest.py). The emulator starts afresh for each
# test, its cache empty: a job never reads what an earlier test wrote. The emulator's "1h"
# cache entry lives `latency` seconds: 2 s outlasts the step from priming to the batch's
# create even on a loaded machine (at 0.5 s, a create 0.6 s later found the entry gone).
STACK = {"latency": 2.0, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.3, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True

MODEL = "claude-haiku-4-5"
RECORDS = 20
# Some 6,000 tokens by the emulator's count (4 characters a token): over Haiku 4.5's 4,096.
RUBRIC = "Mark each essay for clarity, structure, evidence and style; explain every mark. " * 300
SYSTEM = [{"type": "text", "text": RUBRIC, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]


def pipeline(**fields: Any) -> bytes:
    document = {"model": MODEL, "max_tokens": 20, "system": SYSTEM, "prompt": "Essay {{n}}: {{text}}", **fields}
    return json.dumps(document).encode()


def records() -> bytes:
    return b"n,text\n" + b"".join(f"{n},An essay on topic {n}.\n".encode() for n in range(1, RECORDS + 1))


def native_requests(count: int) -> bytes:
    lines = [
        {
            "custom_id": f"essay-{n}",
            "params": {
                "model": MODEL,
                "max_tokens": 20,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": f"Essay {n}."}],
            },
        }
        for n in range(1, count + 1)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def run_records_job(stack: LocalStack, runner: LocalRunner, folder: str, **fields: Any) -> dict[str, Any]:
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"pipelines/{folder}.json", Body=pipeline(**fields))
    return run_to_the_end(stack, runner, upload_bytes(stack, f"inbox/{folder}/essays.csv", records()))


def test_a_primed_records_job_reads_the_cache_in_every_request_and_saves_more(
    stack: LocalStack, runner: LocalRunner
) -> None:
    # Given the same records through a pipeline without prime_cache, and (the emulator's cache
    # emptied in between) through one with it
    plain = run_records_job(stack, runner, "plain")
    stack.emulator_control().reset()
    primed = run_records_job(stack, runner, "primed", prime_cache=True)

    # Then the primed job's priming wrote the prefix once, for an hour, with one output token
    assert plain["counts"]["succeeded"] == primed["counts"]["succeeded"] == RECORDS
    priming = primed["priming"]
    assert priming["custom_id"] == "row-000001"
    prefix = priming["usage"]["cache_creation"]["ephemeral_1h_input_tokens"]
    assert prefix == priming["usage"]["cache_creation_input_tokens"] > 4096
    assert priming["usage"]["output_tokens"] == 1
    # ...while the plain job's batch wrote it in most of its requests and read it in few
    assert "priming" not in plain
    plain_usage = plain["usage"]["total"]
    assert plain_usage["cache_creation_1h"] % prefix == 0
    assert plain_usage["cache_creation_1h"] >= RECORDS // 2 * prefix
    assert plain_usage["cache_read_input_tokens"] + plain_usage["cache_creation_1h"] == RECORDS * prefix
    # ...and every request of the primed job's batch read it
    primed_usage = primed["usage"]["total"]
    assert primed_usage["cache_read_input_tokens"] == RECORDS * prefix
    assert primed_usage["cache_creation_input_tokens"] == 0
    # ...so caching saved more in it, and the priming's cost, at the standard price, is apart from the batch's
    assert Decimal(primed["cost"]["saved_by_caching_usd"]) > Decimal(plain["cost"]["saved_by_caching_usd"])
    assert Decimal(primed["cost"]["batch_usd"]) < Decimal(plain["cost"]["batch_usd"])
    assert Decimal(priming["cost_usd"]) > 0
    kept = json.loads(read(stack, priming_key(primed["job_id"])))
    assert (kept["custom_id"], kept["cost_usd"]) == (priming["custom_id"], priming["cost_usd"])


def test_a_cached_prefix_jobs_estimate_is_within_15_percent_once_its_pipeline_has_a_finished_job(
    stack: LocalStack, runner: LocalRunner
) -> None:
    """The estimate expects a cached prefix written once and read by every other request, what
    a primed batch does: the second job of a primed pipeline with a long cached system prompt
    (its output share known from the first) costs what it expected, within 15 %."""
    first = run_records_job(stack, runner, "estimated", prime_cache=True)
    stack.emulator_control().reset()  # the cache expired before the next run: its priming writes again
    second = run_to_the_end(stack, runner, upload_bytes(stack, "inbox/estimated/again.csv", records()))

    for manifest in (first, second):
        estimate = manifest["estimate"]
        assert estimate["input"] == "counted"
        assert estimate["within_max"] is True
        # The cached prefix is most of the input: the estimate priced it as read, not as plain input
        costs = estimate["cost_usd"]
        assert Decimal(costs["batch_cached_expected"]) < Decimal(costs["batch"]) / 2
        # ...and as written once by the priming request, at the standard price, which it then cost
        primed = Decimal(estimate["actual_usd"]) - Decimal(estimate["actual_batch_usd"])
        assert primed == Decimal(manifest["priming"]["cost_usd"])
        assert abs(Decimal(costs["priming"]) / primed - 1) < Decimal("0.01")
    assert "earlier jobs" in second["estimate"]["output_expected"]
    assert abs(second["estimate"]["error"]) <= 0.15


def test_batchdrop_submit_prime_cache_primes_a_native_file(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a user's shell that knows the stack by its env file, and a native file of cached requests
    for name in ("BATCHDROP_BUCKET", "BATCHDROP_TABLE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHDROP_ENV_FILE", str(stack.write_env_file(tmp_path / "local.env")))
    source = tmp_path / "essays.jsonl"
    source.write_bytes(native_requests(10))

    # When it is submitted with --prime-cache
    assert main(["submit", str(source), "--prime-cache"]) == 0
    head = stack.client("s3").head_object(Bucket=stack.bucket_name, Key="inbox/essays.jsonl")
    assert head["Metadata"] == {"prime-cache": "true"}
    versions = stack.client("s3").list_object_versions(Bucket=stack.bucket_name, Prefix="inbox/essays.jsonl")
    job_id = job_id_for(stack.bucket_name, "inbox/essays.jsonl", versions["Versions"][0]["VersionId"])
    manifest = run_to_the_end(stack, runner, job_id)

    # Then its first request was primed, and every request of the batch read the prefix
    assert manifest["priming"]["custom_id"] == "essay-1"
    prefix = manifest["priming"]["usage"]["cache_creation_input_tokens"]
    assert prefix > 4096
    assert manifest["usage"]["total"]["cache_read_input_tokens"] == 10 * prefix
    assert manifest["usage"]["total"]["cache_creation_input_tokens"] == 0


def test_a_stack_deployed_with_prime_cache_primes_every_job_but_one_whose_upload_says_false() -> None:
    # Given a stack of its own, deployed with PrimeCache=true (named apart: moto's state is the
    # process's, so a second stack of the module's name would find its secret taken)
    parameters = {**STACK["parameters"], "PrimeCache": "true"}
    with LocalStack(latency=STACK["latency"], parameters=parameters, stack_name="batchdrop-primed") as primed_stack:
        runner = LocalRunner(primed_stack, **RUNNER)
        s3 = primed_stack.client("s3")
        # When a file is uploaded with no metadata, and the same file with prime-cache false
        plain = upload_bytes(primed_stack, "inbox/default.jsonl", native_requests(5))
        version = s3.put_object(
            Bucket=primed_stack.bucket_name,
            Key="inbox/off.jsonl",
            Body=native_requests(5),
            Metadata={"prime-cache": "false"},
        )["VersionId"]
        off = job_id_for(primed_stack.bucket_name, "inbox/off.jsonl", version)
        by_default = run_to_the_end(primed_stack, runner, plain)
        turned_off = run_to_the_end(primed_stack, runner, off)

    # Then the first was primed by the stack's default, and the second not
    assert by_default["priming"]["custom_id"] == "essay-1"
    assert "priming" not in turned_off
