"""A records-mode job of 120,000 records on the local stack, from the drop to outputs.csv:
more records than one batch holds (100,000), so two batches, and each record exactly one row,
in input order. What costs is kept small (one short field a record, a one-word answer, no
batch latency), so the time left is batchdrop's own: render, shard, create, collect, and the
outputs built in the checker. The time is printed beside the test's result."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from typing import Any

import pytest

from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import read, run_to_the_end, upload_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# This module's stack and runner (tests/e2e/conftest.py): batches end as soon as they are made,
# each answered in one word
STACK = {"latency": 0.0, "responder": "tests.e2e.test_records_large:one_word", "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.2, "poll_seconds": 0.05, "retry_delay_seconds": 0.05}
FRESH_EMULATOR = True

RECORDS = 120_000
PIPELINE = {"model": "claude-haiku-4-5", "max_tokens": 5, "prompt": "Is {{n}} even?", "keep_fields": ["n"]}


def one_word(params: dict[str, Any], custom_id: str) -> str:
    """The emulator's answer: the parity of the number the prompt asks about."""
    return "yes" if int(params["messages"][0]["content"].split()[1]) % 2 == 0 else "no"


def test_a_120000_record_job_has_exactly_one_row_per_record_in_input_order(
    stack: LocalStack, runner: LocalRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pipeline without id_field (ids are row numbers) and a CSV of 120,000 records
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket_name, Key="pipelines/large.json", Body=json.dumps(PIPELINE).encode())
    body = b"n\n" + "".join(f"{n}\n" for n in range(1, RECORDS + 1)).encode()
    started = time.monotonic()
    job_id = upload_bytes(stack, "inbox/large/records.csv", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id, timeout=280)
    elapsed = time.monotonic() - started

    # Then the job took two batches, and outputs.csv has one row per record, in input order,
    # each with its own record's answer
    assert manifest["status"] == "COMPLETED"
    assert [batch["requests"] for batch in manifest["batches"]] == [100_000, 20_000]
    text = read(stack, manifest["outputs"]["csv"]).decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    assert header[:4] == ["id", "n", "status", "text"]
    count = 0
    statuses: Counter[str] = Counter()
    for number, row in enumerate(reader, start=1):
        assert row[:2] == [f"row-{number:06d}", str(number)]
        assert row[3] == ("yes" if number % 2 == 0 else "no")
        statuses[row[2]] += 1
        count = number
    assert count == RECORDS
    assert statuses == {"succeeded": RECORDS}
    with capsys.disabled():
        print(f"\n{RECORDS:,}-record records job, drop to outputs.csv: {elapsed:.1f} s")
