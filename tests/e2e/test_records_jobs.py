"""Records-mode jobs from the drop to outputs.csv on the local stack, as a user sees them: a
pipeline under pipelines/, a file of records dropped into inbox/<name>/, the real handlers,
and the emulator's built-in responder answering each request with JSON drawn from its schema
(spoilt, transiently failed or expired as the test's faults say). Each record has exactly one
row, in input order, whatever the shards, retries and rejections; a file that must fail
fails before anything is sent."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from typing import Any

import pytest

from batchdrop.domain.jobs import rejected_key
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import (
    assert_each_request_once,
    read,
    run_to_the_end,
    upload_bytes,
    with_settings,
)
from tests.records_jobs import SENTIMENT

pytestmark = pytest.mark.e2e

# This module's stack and runner (tests/e2e/conftest.py): batches end as soon as they are
# made; each test starts from a fresh emulator and sets its own faults
STACK = {"latency": 0.0, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.2, "poll_seconds": 0.05, "retry_delay_seconds": 0.05}
FRESH_EMULATOR = True

PIPELINE = {
    "model": "claude-haiku-4-5",
    "max_tokens": 300,
    "prompt": "Review of {{product}}:\n{{review}}",
    "id_field": "review_id",
    "output": {"schema": SENTIMENT},
    "keep_fields": ["product"],
}
USAGE = ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
STATUSES = {"succeeded", "invalid_output", "errored", "expired", "canceled", "rejected"}


def put_pipeline(stack: LocalStack, name: str, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=f"pipelines/{name}.json", Body=body)


def outputs(stack: LocalStack, manifest: dict[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """outputs.csv as the csv module reads it: its header and its rows, in the file's order."""
    text = read(stack, manifest["outputs"]["csv"]).decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]


def creates(stack: LocalStack) -> int:
    return int(stack.emulator_control().counters()["creates_accepted"])


def reviews_csv(count: int) -> tuple[bytes, list[tuple[str, str, str | None]]]:
    """A CSV of `count` records as a spreadsheet exports it (CRLF, quoted commas and quotes),
    with a few bad ones; and each record in order: (its id, its product, the start of the reason
    it is rejected for, or None when it is sent)."""
    lines = ["review_id,product,review"]
    expected: list[tuple[str, str, str | None]] = []
    for n in range(1, count + 1):
        rid, product, review = f"r{n:04d}", f"mug, size {n % 4}", f'Holds "{n}" cups, fine.'
        reason = None
        if n == 9:  # one field short: rejected with its line, and no field of it is trusted
            lines.append(f'{rid},"{product}"')
            expected.append(("", "", "too few fields"))
            continue
        if n == 20:  # an id the API would refuse: its row has no id, and keeps its fields
            rid, reason = "bad id", "is not a usable id"
        if n == 31:  # the id of record 30 again: rejected, naming the first one's line
            rid, reason = "r0030", 'custom_id: "r0030" is already used on line 31'
        lines.append(f'{rid},"{product}","{review.replace(chr(34), chr(34) * 2)}"')
        expected.append(("" if n == 20 else rid, product, reason))
    return ("\r\n".join(lines) + "\r\n").encode(), expected


def test_a_records_job_under_faults_has_one_row_per_record_in_input_order(
    stack: LocalStack, runner: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given shards of at most 8 requests, a provider that spoils a fifth of the structured
    # answers, errors or expires some requests on each attempt (so they are sent again), and a
    # CSV of 60 reviews of which 3 are bad (a short row, an id the API refuses, a repeated id)
    with_settings(stack, monkeypatch, shard_max_requests=8)
    stack.emulator_control().set_faults({"invalid_output": 0.2, "errored": {"api_error": 0.15}, "expired": 0.1})
    put_pipeline(stack, "reviews", PIPELINE)
    body, expected = reviews_csv(60)
    job_id = upload_bytes(stack, "inbox/reviews/export.csv", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id, timeout=120)

    # Then every sent record had one outcome, after retries, over several shards
    sent = [rid for rid, _, reason in expected if reason is None]
    assert_each_request_once(stack, manifest, sent)
    assert len(manifest["batches"]) == 8
    assert manifest["attempts"]["requests_retried"] > 0
    assert manifest["counts"]["rejected"] == 3
    # ...and outputs.csv has one row per record, rejected ones in their place, in input order
    header, rows = outputs(stack, manifest)
    assert header == [
        "id",
        "product",
        "status",
        "sentiment",
        "confidence",
        "reason",
        "raw",
        "stop_reason",
        *USAGE,
        "error",
    ]
    assert [(row["id"], row["product"]) for row in rows] == [(rid, product) for rid, product, _ in expected]
    for row, (_, _, reason) in zip(rows, expected, strict=True):
        if reason is not None:
            assert row["status"] == "rejected"
            assert reason in row["error"], row
            assert row["input_tokens"] == row["sentiment"] == ""
    # ...whose statuses agree with the manifest's counts
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= STATUSES
    counts = manifest["counts"]
    assert statuses["succeeded"] + statuses["invalid_output"] == counts["succeeded"]
    assert (statuses["errored"], statuses["expired"], statuses["canceled"], statuses["rejected"]) == (
        counts["errored"],
        counts["expired"],
        counts["canceled"],
        counts["rejected"],
    )
    # ...an answer that conforms fills the columns; a spoilt one keeps its raw text and says why
    assert statuses["invalid_output"] >= 3
    for row in rows:
        if row["status"] == "succeeded":
            assert row["sentiment"] in ("positive", "negative", "mixed")
            float(row["confidence"])
            assert (row["raw"], row["error"]) == ("", "")
            assert int(row["output_tokens"]) > 0
        if row["status"] == "invalid_output":
            assert row["raw"], row
            assert row["error"], row
            assert int(row["output_tokens"]) > 0
        if row["status"] in ("errored", "expired"):
            assert row["input_tokens"] == ""
    # ...and outputs.jsonl holds the same rows as JSON (nothing as null)
    jsonl = [json.loads(line) for line in read(stack, manifest["outputs"]["jsonl"]).splitlines()]
    assert [(r["id"] or "", r["status"]) for r in jsonl] == [(r["id"], r["status"]) for r in rows]
    assert list(jsonl[0]) == header


def test_on_bad_record_fail_fails_the_file_before_anything_is_sent(stack: LocalStack, runner: LocalRunner) -> None:
    # Given a pipeline that fails a file for one bad record, and a CSV whose third record is short
    put_pipeline(stack, "strict", PIPELINE | {"on_bad_record": "fail"})
    body = b'review_id,product,review\r\nr1,kettle,"Boils, fast"\r\nr2,lamp,Bright\r\nr3,fan\r\nr4,mug,Fine\r\n'
    before = creates(stack)
    job_id = upload_bytes(stack, "inbox/strict/export.csv", body)

    # When the pipeline runs to the end
    manifest = run_to_the_end(stack, runner, job_id)

    # Then the job FAILED, naming the record's line and reason, with no batch and no outputs
    assert manifest["status"] == "FAILED"
    assert "line 4" in manifest["reason"]
    assert "too few fields" in manifest["reason"]
    assert json.loads(read(stack, f"errors/{job_id}/failure.json"))["reason"] == manifest["reason"]
    assert creates(stack) == before
    assert "outputs" not in manifest
    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket_name, Prefix=f"work/{job_id}/")
    assert listed["KeyCount"] == 0


def test_records_in_a_folder_without_a_pipeline_fail_naming_the_pipeline_looked_for(
    stack: LocalStack, runner: LocalRunner
) -> None:
    # Given no pipeline for inbox/tickets/, a gzipped CSV and a JSONL of records dropped there
    before = creates(stack)
    csv_job = upload_bytes(stack, "inbox/tickets/open.csv.gz", gzip.compress(b"id,text\n1,printer on fire\n"))
    jsonl_job = upload_bytes(stack, "inbox/tickets/open.jsonl", b'{"id": "1", "text": "printer on fire"}\n')

    # When the pipeline runs to the end
    csv_manifest = run_to_the_end(stack, runner, csv_job)
    jsonl_manifest = run_to_the_end(stack, runner, jsonl_job)

    # Then both FAILED before any spend, each reason naming pipelines/tickets.json
    assert csv_manifest["status"] == jsonl_manifest["status"] == "FAILED"
    assert "pipelines/tickets.json" in csv_manifest["reason"]
    # ...the JSONL was read as request lines (a folder without pipeline keeps native mode), and
    # its every line rejected, so its reason says the folder has no pipeline
    assert "pipelines/tickets.json" in jsonl_manifest["reason"]
    assert "request lines" in jsonl_manifest["reason"]
    [rejected] = [json.loads(line) for line in read(stack, rejected_key(jsonl_job)).splitlines()]
    assert rejected["line"] == 1
    assert creates(stack) == before
