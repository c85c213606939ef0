"""One request the API refuses never fails its neighbours (services/bisect.py), on the local
stack: the emulator's `poison` fault refuses, with 400, any create holding a request whose
params carry the marker, as the API refuses a body holding a value it cannot read. The
refused shard is halved until only that request is left; every other request runs once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import (
    assert_each_request_once,
    input_ids,
    requests_body,
    result_lines,
    run_to_the_end,
    shard_items,
    upload_bytes,
)

pytestmark = pytest.mark.e2e

STACK = {"latency": 0.1}
RUNNER = {"tick_seconds": 0.3, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True

MARKER = "POISON-d41d8cd9"


def test_one_poisoned_request_of_forty_is_the_only_one_errored(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a file of 40 requests, the 23rd carrying a value the API refuses the create for
    lines = requests_body(tmp_path, 40).splitlines()
    poisoned = json.loads(lines[22])
    poisoned["params"]["metadata"] = {"user_id": MARKER}
    lines[22] = json.dumps(poisoned).encode()
    body = b"\n".join(lines) + b"\n"
    control = stack.emulator_control()
    control.set_faults({"poison": MARKER})

    # When it is uploaded and the pipeline runs to the end
    job_id = upload_bytes(stack, "inbox/poison/requests.jsonl", body)
    manifest = run_to_the_end(stack, runner, job_id)

    # Then 39 requests succeeded and the poisoned one is errored with its own refusal, each
    # custom_id once in results/, and the manifest says so
    ids = input_ids(body)
    assert assert_each_request_once(stack, manifest, ids) == {"succeeded": 39, "errored": 1}
    [(_, bad)] = result_lines(stack, manifest)[poisoned["custom_id"]]
    error = bad["result"]["error"]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("batchdrop: the batch was refused: 400: params: integer overflow")
    assert manifest["status"] == "COMPLETED_WITH_ERRORS"
    counts = manifest["counts"]
    assert (counts["requests"], counts["succeeded"], counts["errored"]) == (40, 39, 1)

    # And no request went out in two batches. Halved 40 → 20 → 10 → 5 → 3 → 1: each refused
    # body (40, the second 20, 10, 5 and 3, then the single request) is one refused create;
    # each good half (20, 10, 5, 2, 2) one batch
    counters = control.counters()
    assert control.custom_ids(minimum=2) == {}
    assert counters["creates_accepted"] == 5 == manifest["attempts"]["batches_created"]
    assert counters["creates_rejected"] == 6
    states = sorted(item["state"]["S"] for item in shard_items(stack, job_id))
    assert states == ["COLLECTED"] * 6 + ["SPLIT"] * 5
