"""Each handler, called as Lambda calls it, with the events in events/ (the same files
`sam local invoke -e` takes), against moto in server mode and the emulator."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from anthropic import Anthropic

from batchdrop.domain.job_events import ENDED
from batchdrop.domain.jobs import job_id_for
from batchdrop.errors import BadEventError
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.runner import load_event, load_handler
from batchdrop_local.stack import LocalStack

SAMPLE = [{"custom_id": f"h-{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [
    {"role": "user", "content": f"question {i}"}]}} for i in range(6)]  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(latency=60) as running:  # batches end when a test says so (control end)
        yield running


@pytest.fixture
def lambda_env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**stack.function_env("SubmitFunction"), **stack.function_env("CheckerFunction")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


def _invoke(stack: LocalStack, function: str, event: dict[str, Any]) -> Any:
    spec = stack.template.function(function)
    context = LocalLambdaContext(
        function_name=stack.function_name(function),
        memory_limit_in_mb=spec.memory_mb,
        timeout_seconds=spec.timeout_seconds,
    )
    return load_handler(spec)(event, context)


def _s3_event(stack: LocalStack, key: str, version_id: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("s3-put-inbox"))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = stack.bucket_name
    record["object"]["key"] = key.replace(" ", "+")
    record["object"]["versionId"] = version_id
    return event


def _upload(stack: LocalStack, key: str, lines: list[dict[str, Any]]) -> str:
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])


@pytest.mark.usefixtures("lambda_env")
def test_submit_event_creates_one_batch_and_records_it(stack: LocalStack) -> None:
    # Given an uploaded file and the S3 event for its version (key URL-encoded, as S3 sends it)
    version = _upload(stack, "inbox/with space.jsonl", SAMPLE)
    before = stack.emulator_control().counters()["creates_accepted"]

    # When the submit handler gets the event, twice
    first = _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/with space.jsonl", version))
    second = _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/with space.jsonl", version))

    # Then one batch was created and the job is running; the second event changed nothing
    job_id = job_id_for(stack.bucket_name, "inbox/with space.jsonl", version)
    assert first["jobs"] == [{"job_id": job_id, "status": "RUNNING", "duplicate": False}]
    assert second["jobs"][0]["duplicate"] is True
    assert stack.emulator_control().counters()["creates_accepted"] - before == 1
    shard = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=f"work/{job_id}/shard-00000.jsonl")
    assert [json.loads(line)["custom_id"] for line in shard["Body"].read().splitlines()] == [
        r["custom_id"] for r in SAMPLE
    ]


@pytest.mark.usefixtures("lambda_env")
def test_checker_tick_collects_ended_batches_and_finishes_the_job(stack: LocalStack) -> None:
    # Given a submitted job whose batch has ended at the provider
    version = _upload(stack, "inbox/tick.jsonl", SAMPLE)
    _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/tick.jsonl", version))
    stack.emulator_control().end()
    completions = _completion_queue(stack)

    # When the checker runs with the scheduled event
    report = _invoke(stack, "CheckerFunction", load_event("scheduled-tick"))

    # Then the job's results and manifest are in S3, and the completion event is on the bus
    job_id = job_id_for(stack.bucket_name, "inbox/tick.jsonl", version)
    assert job_id in report["finished_jobs"]
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket_name, Key=f"results/{job_id}/manifest.json")["Body"].read())
    assert manifest["status"] == "COMPLETED"
    assert manifest["counts"]["succeeded"] == len(SAMPLE)
    lines = s3.get_object(Bucket=stack.bucket_name, Key=manifest["results"][0])["Body"].read().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(r["custom_id"] for r in SAMPLE)
    messages = stack.client("sqs").receive_message(QueueUrl=completions, WaitTimeSeconds=1, MaxNumberOfMessages=10)
    details = [json.loads(m["Body"])["detail"] for m in messages["Messages"]]  # other tests' jobs may end too
    detail = next(d for d in details if d["job_id"] == job_id)
    assert detail == {
        "schema_version": 1,
        "job_id": job_id,
        "status": "COMPLETED",
        "source_key": "inbox/tick.jsonl",
        "counts": manifest["counts"],
        "manifest_key": f"results/{job_id}/manifest.json",
        "outputs": None,
        "report_key": f"results/{job_id}/report.html",
        "bucket": stack.bucket_name,
        # the manifest's figures, as strings, and the estimate made before sending
        "cost": {
            **{name: manifest["cost"][name] for name in ("batch_usd", "standard_usd", "saved_by_caching_usd")},
            "estimated_usd": manifest["estimate"]["cost_usd"]["batch_cached_expected"],
            "estimated_max_usd": manifest["estimate"]["cost_usd"]["batch_max"],
        },
    }
    assert Decimal(detail["cost"]["batch_usd"]) > 0

    # And an idle tick afterwards finds nothing to do
    assert _invoke(stack, "CheckerFunction", load_event("scheduled-tick"))["open_batches"] == 0


@pytest.mark.usefixtures("lambda_env")
def test_a_job_whose_requests_share_a_cached_prompt_says_what_caching_saved(stack: LocalStack) -> None:
    # Given a job of four requests behind one long system prompt marked for caching (1 hour),
    # written to the cache before the batch by one synchronous request: all four read it (the
    # emulator caches as the API does: above Haiku 4.5's 4,096-token minimum, per API key, and
    # a batch reads what was there when it was created)
    rules = "Rules of the review desk. " * 1000
    system = [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    provider = Anthropic(api_key=stack.api_key, base_url=stack.emulator_url)
    warm = provider.messages.create(
        model="claude-haiku-4-5", max_tokens=1, system=system, messages=[{"role": "user", "content": "warm"}]
    )
    assert warm.usage.cache_creation_input_tokens
    requests = [
        {
            "custom_id": f"c-{i}",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "system": system, "messages": [
                {"role": "user", "content": f"review {i}"}]},
        }
        for i in range(4)
    ]  # fmt: skip
    completions = _completion_queue(stack)
    version = _upload(stack, "inbox/cached.jsonl", requests)
    _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/cached.jsonl", version))
    stack.emulator_control().end()

    # When the checker finishes it
    job_id = job_id_for(stack.bucket_name, "inbox/cached.jsonl", version)
    assert job_id in _invoke(stack, "CheckerFunction", load_event("scheduled-tick"))["finished_jobs"]

    # Then its manifest says the reads saved more than the write cost, and its event says the same
    s3 = stack.client("s3")
    manifest = json.loads(s3.get_object(Bucket=stack.bucket_name, Key=f"results/{job_id}/manifest.json")["Body"].read())
    usage = manifest["usage"]["total"]
    assert usage["cache_read_input_tokens"] == 4 * warm.usage.cache_creation_input_tokens
    assert usage["cache_creation_input_tokens"] == 0
    cost = manifest["cost"]
    assert Decimal(cost["saved_by_caching_usd"]) > 0
    assert Decimal(cost["saved_vs_standard_usd"]) == Decimal(cost["standard_usd"]) - Decimal(cost["batch_usd"])
    messages = stack.client("sqs").receive_message(QueueUrl=completions, WaitTimeSeconds=1, MaxNumberOfMessages=10)
    detail = next(d for d in (json.loads(m["Body"])["detail"] for m in messages["Messages"]) if d["job_id"] == job_id)
    assert detail["bucket"] == stack.bucket_name
    assert detail["cost"] == {
        "batch_usd": cost["batch_usd"],
        "standard_usd": cost["standard_usd"],
        "saved_by_caching_usd": cost["saved_by_caching_usd"],
        "estimated_usd": manifest["estimate"]["cost_usd"]["batch_cached_expected"],
        "estimated_max_usd": manifest["estimate"]["cost_usd"]["batch_max"],
    }


@pytest.mark.usefixtures("lambda_env")
def test_a_job_that_fails_at_intake_is_announced_like_any_other(stack: LocalStack) -> None:
    # Given a file whose every line is rejected
    completions = _completion_queue(stack)
    version = _upload(stack, "inbox/all-bad.jsonl", [{"custom_id": "no params"}, {"params": {}}])

    # When the submit function handles its event
    _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/all-bad.jsonl", version))

    # Then the job failed, and its completion event is on the bus with its counts and manifest
    job_id = job_id_for(stack.bucket_name, "inbox/all-bad.jsonl", version)
    messages = stack.client("sqs").receive_message(QueueUrl=completions, WaitTimeSeconds=1, MaxNumberOfMessages=10)
    details = [json.loads(m["Body"])["detail"] for m in messages.get("Messages", [])]
    detail = next(d for d in details if d["job_id"] == job_id)
    assert detail["status"] == "FAILED"
    assert detail["counts"]["rejected"] == 2
    assert detail["manifest_key"] == f"results/{job_id}/manifest.json"
    assert detail["source_key"] == "inbox/all-bad.jsonl"
    assert detail["bucket"] == stack.bucket_name
    # Nothing was sent, so nothing was spent
    assert detail["cost"] == {"batch_usd": "0.000000", "standard_usd": "0.000000", "saved_by_caching_usd": "0.000000"}


@pytest.mark.usefixtures("lambda_env")
def test_an_event_without_a_version_id_fails_closed(stack: LocalStack) -> None:
    event = _s3_event(stack, "inbox/unversioned.jsonl", "")
    del event["Records"][0]["s3"]["object"]["versionId"]
    with pytest.raises(BadEventError, match="no versionId"):
        _invoke(stack, "SubmitFunction", event)


def _completion_queue(stack: LocalStack) -> str:
    """A rule on the bus that copies batchdrop's job-ended events into a queue the test can read."""
    sqs, events = stack.client("sqs"), stack.client("events")
    url = sqs.create_queue(QueueName="completions")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = stack.env["BATCHDROP_EVENT_BUS"]
    pattern = json.dumps({"source": ["batchdrop"], "detail-type": list(ENDED)})
    events.put_rule(Name="completions", EventBusName=bus, EventPattern=pattern)
    events.put_targets(Rule="completions", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    return str(url)


@pytest.mark.usefixtures("lambda_env")
def test_a_gzipped_file_with_crlf_line_ends_is_read_line_by_line(stack: LocalStack) -> None:
    # Given a .jsonl.gz upload whose lines end in \r\n, with a BOM on the first
    body = "\r\n".join(json.dumps(line) for line in SAMPLE[:3]).encode()
    version = str(
        stack.client("s3").put_object(
            Bucket=stack.bucket_name, Key="inbox/packed.jsonl.gz", Body=gzip.compress(b"\xef\xbb\xbf" + body + b"\r\n")
        )["VersionId"]
    )

    # When the submit handler gets its event
    result = _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/packed.jsonl.gz", version))

    # Then all three requests went into the batch, none rejected
    job_id = result["jobs"][0]["job_id"]
    job = stack.client("dynamodb").get_item(
        TableName=stack.table_name, Key={"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "JOB"}}
    )["Item"]
    assert (job["requested"]["N"], job["rejected"]["N"]) == ("3", "0")


@pytest.mark.usefixtures("lambda_env")
def test_submit_handler_cancels_the_job_named_by_the_cancel_event(stack: LocalStack) -> None:
    # Given a job whose batch is open, and the cancel event file naming it
    version = _upload(stack, "inbox/to-cancel.jsonl", SAMPLE)
    job_id = _invoke(stack, "SubmitFunction", _s3_event(stack, "inbox/to-cancel.jsonl", version))["jobs"][0]["job_id"]
    event = copy.deepcopy(load_event("s3-put-cancel"))
    event["Records"][0]["s3"]["bucket"]["name"] = stack.bucket_name
    event["Records"][0]["s3"]["object"]["key"] = f"cancel/{job_id}"

    # When the submit function gets it
    outcome = _invoke(stack, "SubmitFunction", event)["jobs"][0]

    # Then the job is marked and its open batch asked to stop
    assert outcome == {"job_id": job_id, "status": "CANCELING", "cancel": True}
    job = stack.client("dynamodb").get_item(
        TableName=stack.table_name, Key={"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "JOB"}}, ConsistentRead=True
    )["Item"]
    assert "cancel_requested_at" in job
    shard = stack.client("dynamodb").get_item(
        TableName=stack.table_name, Key={"PK": {"S": f"JOB#{job_id}"}, "SK": {"S": "SHARD#00000"}}, ConsistentRead=True
    )["Item"]
    provider = Anthropic(api_key=stack.api_key, base_url=stack.emulator_url)
    assert provider.messages.batches.retrieve(shard["batch_id"]["S"]).cancel_initiated_at is not None


@pytest.mark.usefixtures("lambda_env")
def test_submit_handler_sweeps_with_the_sweep_event(stack: LocalStack) -> None:
    # Given the sweep event file (every object here has its job already, or is too young)
    # When the submit function gets it / Then it reports what it looked at and starts nothing
    report = _invoke(stack, "SubmitFunction", load_event("scheduled-sweep"))
    assert set(report) == {"seen", "started", "left", "redriven", "continued", "stuck_failed", "approval_expired"}
    assert (report["started"], report["redriven"], report["continued"], report["stuck_failed"]) == ([], [], [], [])


@pytest.mark.usefixtures("lambda_env")
def test_submit_handler_refuses_an_event_it_does_not_know(stack: LocalStack) -> None:
    with pytest.raises(BadEventError, match="not an S3 event nor a sweep"):
        _invoke(stack, "SubmitFunction", {"source": "someone.else"})
