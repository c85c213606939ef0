"""A records-mode job finished by the real CheckerFunction handler against moto in server
mode: its outputs.csv and outputs.jsonl read back with the csv and json modules, row by row.

The records intake (which reads the pipeline, renders the records and writes the rows files)
is being built alongside; until it lands, the job's items and objects are set up here as it
writes them (tests/records_jobs.py, through the real adapters): the job item with its
pipeline version, its shards collected with their result parts (shuffled), the rows files
and errors/<job_id>/rejected.jsonl."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from batchdrop import wiring
from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.outputs import header
from batchdrop.domain.rows import outputs_keys
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.runner import load_handler
from batchdrop_local.stack import LocalStack
from tests.records_jobs import pipeline_document, seed_collected, seed_records_job, text_answer

pytestmark = pytest.mark.integration

PRODUCTS = ["kettle, blue", 'the "best" mug', "Grüße\nzweite Zeile", "=SUM(A1:A9)", "toaster\r\nCRLF", ""]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(latency=60) as running:
        yield running


@pytest.fixture
def lambda_env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.function_env("CheckerFunction").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


def answer(custom_id: str) -> Mapping[str, Any]:
    n = int(custom_id.rpartition("-")[2])
    if n % 10 == 3:
        return text_answer("Sure! Here is the JSON: {")
    if n % 10 == 7:
        error = {"type": "invalid_request_error", "message": "no"}
        return {"type": "errored", "error": {"type": "error", "error": error}}
    if n % 10 == 9:
        return {"type": "expired"}
    return text_answer(json.dumps({"sentiment": "positive", "confidence": n / 4, "reason": f"réason {n}\nok"}))


def expected_status(n: int) -> str:
    if n % 8 == 0:
        return "rejected"
    return {3: "invalid_output", 7: "errored", 9: "expired"}.get(n % 10, "succeeded")


@pytest.mark.usefixtures("lambda_env")
def test_the_checker_writes_one_row_per_record_in_input_order(stack: LocalStack) -> None:
    # Given a finished records job of 50 records in shards of 12, every 8th rejected, results shuffled
    wired = wiring.from_env()
    rows = [
        {"product": PRODUCTS[n % len(PRODUCTS)], **({} if n % 8 == 0 else {"review": f"review {n}"})}
        for n in range(1, 51)
    ]
    job = seed_records_job(wired, rows, document=pipeline_document(), per_shard=12, name="integration")
    seed_collected(wired, job, answer, random.Random(3).shuffle)

    # When the checker handler ticks, as Lambda calls it
    spec = stack.template.function("CheckerFunction")
    context = LocalLambdaContext(
        function_name=stack.function_name("CheckerFunction"),
        memory_limit_in_mb=spec.memory_mb,
        timeout_seconds=spec.timeout_seconds,
    )
    report = load_handler(spec)({"source": "test"}, context)

    # Then the job is finished and outputs.csv has one row per record, in order, every cell right
    assert job.job_id in report["finished_jobs"]
    s3 = stack.client("s3")
    keys = outputs_keys(job.job_id)
    raw = s3.get_object(Bucket=stack.bucket_name, Key=keys["csv"])["Body"].read()
    table = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert table[0] == header(job.pipeline)
    assert len(table) == 51
    for n, cells in enumerate(table[1:], start=1):
        line = dict(zip(table[0], cells, strict=True))
        assert line["id"] == f"row-{n:06d}"
        assert line["product"] == PRODUCTS[n % len(PRODUCTS)]
        assert line["status"] == expected_status(n), n
        if line["status"] == "succeeded":
            given = (line["sentiment"], line["confidence"], line["reason"])
            assert given == ("positive", json.dumps(n / 4), f"réason {n}\nok")
            assert (line["input_tokens"], line["output_tokens"], line["stop_reason"]) == ("40", "12", "end_turn")
            assert line["error"] == line["raw"] == ""
        elif line["status"] == "rejected":
            assert "review" in line["error"]
            assert line["input_tokens"] == ""
        elif line["status"] == "invalid_output":
            assert line["raw"] == "Sure! Here is the JSON: {"
            assert line["error"].startswith("the answer is not valid JSON")
        elif line["status"] == "errored":
            assert line["error"] == "invalid_request_error: no"
    # ...the JSONL holds the same rows, answer values as JSON
    jsonl = s3.get_object(Bucket=stack.bucket_name, Key=keys["jsonl"])["Body"].read().splitlines()
    assert [json.loads(line)["id"] for line in jsonl] == [cells[0] for cells in table[1:]]
    assert json.loads(jsonl[0])["confidence"] == 0.25
    # ...and the manifest names them, its counts agreeing with the rows
    manifest = json.loads(s3.get_object(Bucket=stack.bucket_name, Key=manifest_key(job.job_id))["Body"].read())
    assert manifest["outputs"] == keys
    assert len(manifest["results"]) == len(job.shards) == 4
    statuses = Counter(cells[table[0].index("status")] for cells in table[1:])
    counts = manifest["counts"]
    assert statuses["succeeded"] + statuses["invalid_output"] == counts["succeeded"]
    assert (statuses["errored"], statuses["expired"], statuses["rejected"]) == (
        counts["errored"],
        counts["expired"],
        counts["rejected"],
    )
    assert s3.head_object(Bucket=stack.bucket_name, Key=keys["csv"])["ContentType"].startswith("text/csv")
