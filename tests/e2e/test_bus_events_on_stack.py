"""The job events on the local stack's bus, as a consumer sees them: a rule on the bus copies
batchdrop's events into an SQS queue, jobs run through the real handlers, and the queue gets
each state change of each job (received, submitted, awaiting approval, completed, failed,
canceled) with the fields docs/events.md lists, about the right job. The bus promises no
order, so the tests look for each event by its detail-type."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from batchdrop.domain.jobs import manifest_key
from batchdrop_local.runner import LocalRunner
from batchdrop_local.soak import job_status
from batchdrop_local.stack import LocalStack
from tests.e2e.support import read_manifest, run_to_the_end, upload_bytes
from tests.records_jobs import SENTIMENT

pytestmark = pytest.mark.e2e

# This module's stack and runner (tests/e2e/conftest.py): batches end as soon as they are made
STACK = {"latency": 0.0, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.2, "poll_seconds": 0.05, "retry_delay_seconds": 0.05}
FRESH_EMULATOR = True

PIPELINE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 300,
    "prompt": "Review of {{product}}:\n{{review}}",
    "id_field": "review_id",
    "output": {"schema": SENTIMENT},
}
REVIEWS = b"review_id,product,review\r\nr1,kettle,Boils fast.\r\nr2,lamp,Bright.\r\n"
FIELDS = {
    "schema_version",
    "job_id",
    "bucket",
    "source_key",
    "status",
    "counts",
    "cost",
    "manifest_key",
    "outputs",
    "report_key",
}
BUDGET_FIELDS = {"held_by", "reason", "job_budget_usd", "budget_from", "estimate_max_usd", "estimate_expected_usd"}
BUDGET_FIELDS |= {"over_by_usd", "expires_at", "approve", "cancel"}


class Consumer:
    """An SQS queue behind a rule on the stack's bus that matches every batchdrop event: what a
    consumer would receive, by job id, in the order received."""

    def __init__(self, stack: LocalStack) -> None:
        self._sqs, events = stack.client("sqs"), stack.client("events")
        self._url = self._sqs.create_queue(QueueName="bus-events")["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus, pattern = stack.event_bus_name, json.dumps({"source": ["batchdrop"]})
        events.put_rule(Name="bus-events", EventBusName=bus, EventPattern=pattern)
        events.put_targets(Rule="bus-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        self._seen: dict[str, list[dict[str, Any]]] = {}

    def of(self, job_id: str, count: int, wait: float = 10) -> dict[str, dict[str, Any]]:
        """The job's events by detail-type, once `count` have arrived (or `wait` seconds passed)."""
        deadline = time.monotonic() + wait
        while len(self._seen.get(job_id, [])) < count and time.monotonic() < deadline:
            self._receive()
        found = self._seen.get(job_id, [])
        assert all(event["source"] == "batchdrop" for event in found)
        return {event["detail-type"]: event["detail"] for event in found}

    def _receive(self) -> None:
        answer = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            event = json.loads(message["Body"])
            self._seen.setdefault(event["detail"]["job_id"], []).append(event)
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def consumer(stack: LocalStack) -> Consumer:
    return Consumer(stack)


def put_pipeline(stack: LocalStack, name: str, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"pipelines/{name}.json", Body=body)


def test_a_job_that_runs_is_received_submitted_and_completed_with_its_keys(
    stack: LocalStack, runner: LocalRunner, consumer: Consumer
) -> None:
    # Given a records-mode pipeline, when a CSV of two reviews runs through the stack
    put_pipeline(stack, "events-reviews", PIPELINE)
    job_id = upload_bytes(stack, "inbox/events-reviews/export.csv", REVIEWS)
    manifest = run_to_the_end(stack, runner, job_id)

    # Then the consumer got its three events, each with the same fields, about this job
    events = consumer.of(job_id, count=4, wait=1)  # all were put before the job was closed
    assert set(events) == {"Batchdrop Job Received", "Batchdrop Job Submitted", "Batchdrop Job Completed"}
    for detail in events.values():
        assert set(detail) == FIELDS
        assert (detail["job_id"], detail["bucket"]) == (job_id, stack.bucket_name)
        assert (detail["source_key"], detail["schema_version"]) == ("inbox/events-reviews/export.csv", 1)
    received, submitted, completed = (
        events[f"Batchdrop Job {name}"] for name in ("Received", "Submitted", "Completed")
    )
    assert (received["status"], received["counts"], received["cost"], received["manifest_key"]) == (
        "RECEIVED",
        None,
        None,
        None,
    )
    # ...the submitted one with what the split found and what the estimate said
    assert (submitted["status"], submitted["counts"]) == ("RUNNING", {"requests": 2, "rejected": 0})
    assert submitted["cost"]["estimated_max_usd"] == manifest["estimate"]["cost_usd"]["batch_max"]
    # ...and the completed one with the manifest's figures and where the job's files are
    assert (completed["status"], completed["counts"]) == (manifest["status"], manifest["counts"])
    assert completed["cost"]["batch_usd"] == manifest["cost"]["batch_usd"]
    assert completed["manifest_key"] == manifest_key(job_id)
    assert completed["outputs"] == manifest["outputs"]
    assert set(completed["outputs"]) >= {"csv"}
    assert completed["report_key"] == f"results/{job_id}/report.html"


def test_a_file_of_bad_lines_only_is_received_and_failed_with_its_reason(
    stack: LocalStack, runner: LocalRunner, consumer: Consumer
) -> None:
    job_id = upload_bytes(stack, "inbox/events-bad.jsonl", b"not json\n{}\n")
    manifest = run_to_the_end(stack, runner, job_id)
    assert manifest["status"] == "FAILED"

    events = consumer.of(job_id, count=3, wait=1)
    assert set(events) == {"Batchdrop Job Received", "Batchdrop Job Failed"}
    failed = events["Batchdrop Job Failed"]
    assert set(failed) == FIELDS | {"reason"}
    assert (failed["job_id"], failed["status"], failed["reason"]) == (job_id, "FAILED", manifest["reason"])
    assert failed["counts"] == manifest["counts"]
    assert (failed["manifest_key"], failed["report_key"]) == (manifest_key(job_id), None)


def test_a_job_over_its_budget_awaits_approval_and_then_is_canceled(
    stack: LocalStack, runner: LocalRunner, consumer: Consumer
) -> None:
    # Given a pipeline whose budget is below what any job costs, when a file is dropped for it
    put_pipeline(stack, "events-held", {**PIPELINE, "budget_usd": 0.000001})
    job_id = upload_bytes(stack, "inbox/events-held/export.csv", REVIEWS)
    assert runner.drain(timeout=60, idle=lambda: job_status(stack, job_id) == "AWAITING_APPROVAL")

    # Then the consumer is told it waits, and why
    events = consumer.of(job_id, count=2)
    assert set(events) == {"Batchdrop Job Received", "Batchdrop Job Awaiting Approval"}
    awaiting = events["Batchdrop Job Awaiting Approval"]
    assert set(awaiting) == FIELDS | BUDGET_FIELDS
    assert (awaiting["job_id"], awaiting["status"]) == (job_id, "AWAITING_APPROVAL")
    assert awaiting["budget_from"] == "budget_usd of pipelines/events-held.json"
    assert awaiting["cost"]["estimated_max_usd"] == awaiting["estimate_max_usd"]

    # When it is canceled (an object at cancel/<job_id>), then it ends CANCELED, and is said to
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"cancel/{job_id}", Body=b"")
    manifest = run_to_the_end(stack, runner, job_id)
    assert manifest["status"] == "CANCELED"
    events = consumer.of(job_id, count=4, wait=1)  # all were put before the job was closed
    assert set(events) == {"Batchdrop Job Received", "Batchdrop Job Awaiting Approval", "Batchdrop Job Canceled"}
    canceled = events["Batchdrop Job Canceled"]
    assert set(canceled) == FIELDS
    assert (canceled["job_id"], canceled["status"], canceled["counts"]) == (job_id, "CANCELED", manifest["counts"])
    assert canceled["report_key"] == f"results/{job_id}/report.html"
    assert read_manifest(stack, job_id)["counts"]["canceled"] == 2
