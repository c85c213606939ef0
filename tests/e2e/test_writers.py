"""On the local stack: what a writer other than our functions puts in the bucket is never
sent. A shard body replaced in work/ after the split wrote it leaves the batch as the
split made it: the create reads the version recorded with the shard."""

from __future__ import annotations

import pytest

from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import request_lines
from tests.e2e.support import (
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
