"""On the local stack: what a writer other than our functions puts in the bucket is never
sent. A shard body replaced in work/ after the split wrote it leaves the batch as the
split made it: the create reads the version recorded with the shard. And an event that
is not S3 telling of an upload to our inbox/ or cancel/ runs no job."""

from __future__ import annotations

from typing import Any

import pytest

from batchdrop import config
from batchdrop.domain.jobs import job_id_for
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import request_lines
from tests.e2e.support import (
    SUBMIT,
    assert_each_request_once,
    input_ids,
    put_version,
    run_to_the_end,
    shard_items,
    shard_states,
    upload_bytes,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.1}
RUNNER = {"tick_seconds": 0.2, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True  # each test's runner starts on a reset emulator; faults are lifted after it


@pytest.mark.parametrize(
    "newline",
    [b"\n", b"\r\n"],
    ids=["copied-by-s3", "written-by-the-function"],  # exact lines are copied; \r\n ones rewritten
)
def test_a_shard_replaced_in_work_before_its_create_is_sent_as_the_split_wrote_it(
    stack: LocalStack, runner: LocalRunner, newline: bytes
) -> None:
    # Given a file split into its shard, recorded, but not sent yet (the provider's queue is full)
    control = stack.emulator_control()
    control.set_faults({"queue_limit": 0})
    body = b"".join(line + newline for line in request_lines(20, 200))
    job_id = upload_bytes(stack, f"inbox/writers/swap-{len(newline)}.jsonl", body)
    runner.deliver_pending()
    [item] = shard_items(stack, job_id)
    assert shard_states(stack, job_id) == ["PENDING"]
    shard_key = item["key"]["S"]

    # When another writer replaces the shard's body with other requests of the same size
    written = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=shard_key)["Body"].read()
    forgery = written.replace(b'"req-', b'"bad-')
    assert forgery != written
    assert len(forgery) == len(written)
    put_version(stack, shard_key, forgery)
    control.set_faults({})
    manifest = run_to_the_end(stack, runner, job_id)

    # Then the batch carried the file's requests, each with its one result, and no forged one
    assert manifest["status"] == "COMPLETED"
    assert_each_request_once(stack, manifest, input_ids(body))
    assert not [custom_id for custom_id in control.custom_ids() if custom_id.startswith("bad-")]


def _record(bucket: str, key: str, version_id: str, source: str = "aws:s3") -> dict[str, Any]:
    """One record of an S3 event (keys here need no URL encoding)."""
    obj = {"key": key, "size": 1, "versionId": version_id}
    return {"eventSource": source, "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": obj}}


def _job_ids(stack: LocalStack) -> set[str]:
    items = stack.client("dynamodb").scan(TableName=stack.table_name)["Items"]
    return {item["job_id"]["S"] for item in items if item["SK"]["S"] == "JOB"}


def test_forged_s3_records_run_no_job_and_leave_the_real_upload_to_run(
    stack: LocalStack, runner: LocalRunner, handlers: dict[str, Any]
) -> None:
    # Given a real upload to inbox/, a file another bucket holds and an object put in work/
    s3 = stack.client("s3")
    lines = b"".join(line + b"\n" for line in request_lines(3, 100))
    real = put_version(stack, "inbox/writers/real.jsonl", lines)
    s3.create_bucket(Bucket="another-bucket")
    s3.put_bucket_versioning(Bucket="another-bucket", VersioningConfiguration={"Status": "Enabled"})
    other = str(s3.put_object(Bucket="another-bucket", Key="inbox/theirs.jsonl", Body=lines)["VersionId"])
    planted = put_version(stack, "work/writers/planted.jsonl", lines)
    jobs_before = _job_ids(stack)
    creates_before = stack.emulator_control().counters()["creates_accepted"]

    # When SubmitFunction is invoked with records naming them, and one not from S3 at all
    event = {
        "Records": [
            _record("another-bucket", "inbox/theirs.jsonl", other),
            _record(stack.bucket_name, "work/writers/planted.jsonl", planted),
            _record(stack.bucket_name, "inbox/writers/real.jsonl", real, source="aws:sqs"),
            _record(stack.bucket_name, "inbox/writers/real.jsonl", real),
        ]
    }
    with config.invocation_environment(runner.function_environment(SUBMIT)):
        answer = handlers[SUBMIT](event, LocalLambdaContext(stack.function_name(SUBMIT)))

    # Then each forged record is refused with its reason, and only the real upload is a job
    assert [outcome.get("refused") for outcome in answer["jobs"]] == [
        f"bucket 'another-bucket' is not this stack's {stack.bucket_name!r}",
        "the key is under none of inbox/, cancel/, approve/",
        "eventSource is 'aws:sqs', not 'aws:s3'",
        None,
    ]
    real_job = job_id_for(stack.bucket_name, "inbox/writers/real.jsonl", real)
    assert _job_ids(stack) - jobs_before == {real_job}
    assert stack.emulator_control().counters()["creates_accepted"] == creates_before + 1
    manifest = run_to_the_end(stack, runner, real_job)
    assert_each_request_once(stack, manifest, input_ids(lines))
