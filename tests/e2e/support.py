"""What the end-to-end tests share: uploading a file to the local stack, running the
pipeline until a job is finished, and reading back what it wrote. (The shared fixtures, the
stack, the runner and the real handlers, are in conftest.py.)"""

from __future__ import annotations

import contextlib
import json
import shlex
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anthropic.types.messages import MessageBatchIndividualResponse

from batchdrop.domain.jobs import job_id_for
from batchdrop.ports import Wiring
from batchdrop_local.pipeline_settings import variables
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import job_status
from batchdrop_local.soak import read_object as read
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests

# template.yaml's functions: the S3-triggered one and the scheduled checker
SUBMIT = "SubmitFunction"
CHECKER = "CheckerFunction"
MAX_ATTEMPTS = 3  # the template's default MaxAttempts


def env_file_variables(path: Path) -> dict[str, str]:
    """The variables a shell gets from `set -a; . FILE` of the local stack's env file."""
    variables = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name] = shlex.split(value)[0] if value else ""
    return variables


def source_env_file(env: Any, path: Path) -> None:
    """Set, through a MonkeyPatch `env`, what a user's shell that sourced the env file holds;
    the handlers' metrics lines stay off stdout."""
    for name, value in env_file_variables(path).items():
        env.setenv(name, value)
    env.setenv("POWERTOOLS_METRICS_DISABLED", "true")


@contextlib.contextmanager
def provider_queue_full(stack: LocalStack) -> Iterator[None]:
    """The provider's queue is full meanwhile: every create is refused, so a job stays open."""
    control = stack.emulator_control()
    control.set_faults({"queue_limit": 0})
    try:
        yield
    finally:
        control.set_faults({})


def requests_body(tmp_path: Path, count: int) -> bytes:
    """A file of `count` generated requests, as bytes (written at tmp_path/requests.jsonl)."""
    source = tmp_path / "requests.jsonl"
    write_requests(source, count)
    return source.read_bytes()


def upload(stack: LocalStack, tmp_path: Path, key: str, requests: int) -> str:
    """Put a file of `requests` generated requests at `key`; the job id it will have."""
    return upload_bytes(stack, key, requests_body(tmp_path, requests))


def put_version(stack: LocalStack, key: str, body: bytes) -> str:
    """Put `body` at `key`; the id of the version it made."""
    response = stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)
    return str(response["VersionId"])


def upload_bytes(stack: LocalStack, key: str, body: bytes) -> str:
    return job_id_for(stack.bucket_name, key, put_version(stack, key, body))


def shard_items(stack: LocalStack, job_id: str) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").query(
        TableName=stack.table_name,
        KeyConditionExpression="PK = :pk AND begins_with(SK, :shard)",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":shard": {"S": "SHARD#"}},
        ConsistentRead=True,
    )["Items"]
    return list(items)


def shard_states(stack: LocalStack, job_id: str) -> list[str]:
    return [item["state"]["S"] for item in shard_items(stack, job_id)]


def finished(stack: LocalStack, job_id: str) -> bool:
    keys = stack.client("s3").list_objects_v2(Bucket=stack.bucket_name, Prefix=f"results/{job_id}/manifest.json")
    return keys.get("KeyCount", 0) > 0 and job_status(stack, job_id) not in ("RECEIVED", "SUBMITTING", "RUNNING")


def run_to_the_end(stack: LocalStack, runner: LocalRunner, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Deliver events and tick until the job is finished and no batch is open; its manifest."""
    assert runner.drain(timeout=timeout, idle=lambda: finished(stack, job_id) and not stack.open_batch_count())
    return read_manifest(stack, job_id)


def read_manifest(stack: LocalStack, job_id: str) -> dict[str, Any]:
    return dict(json.loads(read(stack, f"results/{job_id}/manifest.json")))


def result_ids(stack: LocalStack, manifest: dict[str, Any]) -> Counter[str]:
    """How many times each custom_id is in the result parts the manifest names (each line
    parsed as the API's result type)."""
    ids: Counter[str] = Counter()
    for key in manifest["results"]:
        for line in read(stack, key).splitlines():
            ids[MessageBatchIndividualResponse.model_validate_json(line).custom_id] += 1
    return ids


def result_lines(stack: LocalStack, manifest: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every result line of a job, by custom_id: (the part it is in, the parsed line)."""
    lines: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key in manifest["results"]:
        for line in read(stack, key).splitlines():
            record = json.loads(line)
            lines.setdefault(record["custom_id"], []).append((key, record))
    return lines


def input_ids(body: bytes) -> list[str]:
    return [json.loads(line)["custom_id"] for line in body.splitlines() if line.strip()]


def assert_each_request_once(stack: LocalStack, manifest: dict[str, Any], ids: list[str]) -> Counter[str]:
    """Every input request has exactly one outcome in results/, and the manifest's counts
    are the outcomes found there; the outcomes by type."""
    lines = result_lines(stack, manifest)
    assert sorted(lines) == sorted(ids)
    assert {len(found) for found in lines.values()} == {1}
    outcomes = Counter(found[0][1]["result"]["type"] for found in lines.values())
    for outcome in ("succeeded", "errored", "canceled", "expired"):
        assert manifest["counts"][outcome] == outcomes[outcome], outcome
    return outcomes


def open_uploads(stack: LocalStack, prefix: str = "") -> list[str]:
    """Multipart uploads left open under a prefix."""
    answer = stack.client("s3").list_multipart_uploads(Bucket=stack.bucket_name, Prefix=prefix)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def with_settings(stack: LocalStack, monkeypatch: Any, **settings: Any) -> None:
    """The stack's functions run with these settings (Timings, shard size: see
    batchdrop_local.pipeline_settings) for the rest of the test."""
    for name, value in variables(**settings).items():
        monkeypatch.setitem(stack.function_variables, name, value)


def wired(stack: LocalStack, **settings: Any) -> Wiring:
    """The services' wiring bound to the local stack (`settings`: Wiring's other fields),
    for tests that run the services directly rather than through the runner: to have two
    invocations meet at a point the test chooses (a barrier, a counted create), or to run two
    checkers at once, which the runner never does (the checker's reserved concurrency is 1).
    The runner's own submit and checker invocations may overlap as well."""
    import boto3

    from batchdrop.adapters.batches import BatchesApi
    from batchdrop.adapters.events import EventPublisher
    from batchdrop.adapters.objects import ObjectStore
    from batchdrop.adapters.state import StateTable

    resource = boto3.resource(
        "dynamodb",
        endpoint_url=stack.moto_url,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return Wiring(
        ObjectStore(stack.bucket_name, client=stack.client("s3")),
        StateTable(stack.table_name, resource=resource),
        BatchesApi(lambda: stack.api_key, base_url=stack.emulator_url),
        EventPublisher(stack.event_bus_name, client=stack.client("events")),
        **settings,
    )
