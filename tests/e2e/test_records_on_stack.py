"""Records mode's intake on the local stack, as a user sees it: put a pipeline under
pipelines/, drop a CSV into inbox/<name>/, and the batches carry each record rendered
through the pipeline (the emulator's responder here answers each request with its prompt),
each shard has its rows file, bad records are in errors/ with their line and record number,
and native files beside it are read as they always were."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchdrop.domain.records import PipelineRef
from batchdrop.domain.rows import RowRef, parse_row, rows_key
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import (
    assert_each_request_once,
    read,
    read_manifest,
    result_lines,
    run_to_the_end,
    upload_bytes,
    wired,
    with_settings,
)

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.1, "responder": "tests.e2e.test_records_on_stack:echo_prompt"}
RUNNER = {"tick_seconds": 0.3, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = False

MODEL = "claude-haiku-4-5"
PIPELINE = {
    "model": MODEL,
    "max_tokens": 50,
    "system": "You read product reviews.",
    "prompt": "Review of {{product}}:\n{{review}}",
    "keep_fields": ["product"],
}


def echo_prompt(params: dict[str, Any], custom_id: str) -> str:
    """The emulator's answer to a request: its user message, as sent."""
    return str(params["messages"][0]["content"])


def request_line(custom_id: str) -> bytes:
    params = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": f"native {custom_id}"}]}
    return json.dumps({"custom_id": custom_id, "params": params}).encode()


def answers(stack: LocalStack, manifest: dict[str, Any]) -> dict[str, str]:
    """Each custom_id's answer text, from the job's result parts."""
    found = result_lines(stack, manifest)
    return {cid: lines[0][1]["result"]["message"]["content"][0]["text"] for cid, lines in found.items()}


def test_a_csv_in_a_folder_with_a_pipeline_is_sent_rendered_and_native_files_beside_it_are_not(
    stack: LocalStack, runner: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pipeline for inbox/reviews/, shards of at most 2 requests, and a spreadsheet's
    # CSV (BOM, CRLF, a quoted field holding a line break) with one record short of a field
    with_settings(stack, monkeypatch, shard_max_requests=2)
    s3 = stack.client("s3")
    version = s3.put_object(Bucket=stack.bucket_name, Key="pipelines/reviews.json", Body=json.dumps(PIPELINE))
    pipeline = PipelineRef("pipelines/reviews.json", version["VersionId"])
    body = b"\xef\xbb\xbfproduct,review\r\n" + (
        b'kettle,"Boils fast.\r\nLoud, though."\r\nmixer\r\ntoaster,{{product}} is fine\r\nlamp,Bright\r\n'
    )
    records_job = upload_bytes(stack, "inbox/reviews/export.csv", body)
    # ...and native request files beside it: one directly under inbox/, one in a folder with no pipeline
    native = {
        "inbox/reviews.jsonl": request_line("n-1") + b"\n",
        "inbox/nightly/requests.jsonl": request_line("n-2") + b"\n" + request_line("n-3") + b"\n",
    }
    native_jobs = {key: upload_bytes(stack, key, data) for key, data in native.items()}

    # When the pipeline runs until they are finished
    manifest = run_to_the_end(stack, runner, records_job)
    for job_id in native_jobs.values():
        run_to_the_end(stack, runner, job_id)

    # Then the records job pinned the pipeline's version, and each good record was sent rendered
    job = wired(stack).state.get_job(records_job)
    assert job is not None
    assert job.pipeline == pipeline
    assert manifest["status"] == "COMPLETED_WITH_ERRORS"
    assert (manifest["counts"]["requests"], manifest["counts"]["rejected"]) == (3, 1)
    assert_each_request_once(stack, manifest, ["row-000001", "row-000003", "row-000004"])
    assert answers(stack, manifest) == {
        "row-000001": "Review of kettle:\nBoils fast.\r\nLoud, though.",
        "row-000003": "Review of toaster:\n{{product}} is fine",
        "row-000004": "Review of lamp:\nBright",
    }
    # ...in two shards, each with its rows file in the shard's order
    assert [batch["requests"] for batch in manifest["batches"]] == [2, 1]
    rows = [[parse_row(line) for line in read(stack, rows_key(records_job, i)).splitlines()] for i in (0, 1)]
    assert rows == [
        [RowRef(1, "row-000001", {"product": "kettle"}), RowRef(3, "row-000003", {"product": "toaster"})],
        [RowRef(4, "row-000004", {"product": "lamp"})],
    ]
    # ...and the short record in errors/ with its line, record number and reason
    [rejected] = [json.loads(line) for line in read(stack, manifest["errors"]).splitlines()]
    assert (rejected["line"], rejected["row"], rejected["custom_id"]) == (4, 2, "row-000002")
    assert rejected["reason"] == "too few fields: 1, the header has 2"

    # The native files were read as request lines, each line sent as written
    for key, job_id in native_jobs.items():
        native_manifest = read_manifest(stack, job_id)
        assert native_manifest["status"] == "COMPLETED"
        ids = [json.loads(line)["custom_id"] for line in native[key].splitlines()]
        assert_each_request_once(stack, native_manifest, ids)
        assert answers(stack, native_manifest) == {cid: f"native {cid}" for cid in ids}
        assert s3.list_objects_v2(Bucket=stack.bucket_name, Prefix=f"work/{job_id}/rows-")["KeyCount"] == 0


def test_a_csv_in_a_folder_without_pipeline_fails_before_any_spend(stack: LocalStack, runner: LocalRunner) -> None:
    creates = stack.emulator_control().counters()["creates_accepted"]
    job_id = upload_bytes(stack, "inbox/tickets/open.csv", b"id,text\n1,printer on fire\n")

    manifest = run_to_the_end(stack, runner, job_id)

    assert manifest["status"] == "FAILED"
    assert "pipelines/tickets.json" in manifest["reason"]
    assert json.loads(read(stack, f"errors/{job_id}/failure.json"))["reason"] == manifest["reason"]
    assert stack.emulator_control().counters()["creates_accepted"] == creates
