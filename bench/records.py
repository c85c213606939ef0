"""Records mode's intake at size: one CSV of 100,000 reviews in 100 MB dropped at
inbox/reviews/ (a pipeline with a system prompt, an output schema, an id_field and kept
fields), taken by the real SubmitFunction handler from the object to a recorded batch, beside
native mode submitting the same requests: the CSV's records rendered here, before the clock,
and written as a .jsonl directly under inbox/, taken by the same handler (the submit bench's
path). Both run in a fresh interpreter each (bench.submit_child), against the same moto
server, each batch sent to bench.sink (which reads the create body and answers), so the times
are the function's own work and the peak RSS each one's own.

Judged: records mode's time at most 1.5x native mode's on the same requests, and its peak
RSS under 256 MB. --quick: 5,000 records in 5 MB.

The CSV is written as people export one: a header, CRLF, quoted fields holding commas, quotes
and line breaks, non-ASCII text and empty fields. Disk: the CSV and the .jsonl (some 100 and
160 MB) are written to a temporary directory and deleted once uploaded; the bucket holds them,
the shards and rows until the stack stops, which deletes it all."""

from __future__ import annotations

import csv
import json
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchdrop.domain.pipelines import Pipeline, pipeline_from
from batchdrop.domain.record_readers import Rejection, read_csv
from batchdrop_local.stack import LocalStack
from bench import procs
from bench.submit import job_of, shard_items, submit_child, upload
from bench.table import Figure

PEAK_GOAL_MB = 256
TIMES_NATIVE = 1.5  # records mode's time at most this many times native mode's on the same requests
NAME = "reviews"
SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "confidence": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "confidence", "reason"],
    "additionalProperties": False,
}
PIPELINE: Mapping[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 200,
    "system": "You read product reviews and say how the customer feels, with a one-line reason.",
    "prompt": "Product: {{product}}\nTitle: {{title}}\nStars: {{stars}}\n\n{{review}}",
    "id_field": "review_id",
    "output": {"schema": SENTIMENT},
    "keep_fields": ["product", "stars"],
}
HEADER = ("review_id", "product", "title", "stars", "review", "reviewer")
_TEXT = (
    'the battery lasts, as promised; the "quick start" guide doesn\'t. Café-grade coffee, naïve setup'
    " — 5 stars? no: 3. It works well enough but the strap broke after a week and support never answered"
)
_WORDS = _TEXT.split(" ")


def _review(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word.encode()) + 1
    text = " ".join(words)
    if rng.random() < 0.1:  # some reviews hold a line break, as a pasted paragraph does
        middle = len(text) // 2
        text = text[:middle] + "\r\n" + text[middle:]
    return text


def write_reviews(path: Path, records: int, size: int, seed: int = 16) -> int:
    """A CSV of `records` reviews in about `size` bytes; returns the size written."""
    rng = random.Random(seed)
    row_bytes = size // records
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HEADER)
        for number in range(1, records + 1):
            title = "" if number % 50 == 0 else f"Review {number}, in short"
            reviewer = "" if number % 7 == 0 else f"customer {rng.randrange(10_000)}"
            review = _review(rng, max(10, row_bytes - 80))
            writer.writerow(
                [f"rev-{number:07d}", f"product {number % 97}", title, str(number % 5 + 1), review, reviewer]
            )
    return path.stat().st_size


def pipeline() -> Pipeline:
    return pipeline_from(NAME, PIPELINE)


def write_rendered(csv_path: Path, out: Path) -> int:
    """The CSV's records rendered through the pipeline, as the request lines native mode takes;
    returns how many (every record renders: the CSV has no bad one)."""
    rendered = pipeline()
    count = 0
    with csv_path.open("rb") as source, out.open("wb") as sink:
        for row, (line, record) in enumerate(read_csv(source), start=1):
            request = record if isinstance(record, Rejection) else rendered.render(record, row)
            if isinstance(request, Rejection):
                raise RuntimeError(f"{csv_path}: line {line}: the bench's record is rejected: {request.reason}")
            sink.write(request + b"\n")
            count += 1
    return count


def _submitted(stack: LocalStack, event: dict[str, Any], answer: Mapping[str, Any], records: int) -> None:
    items = shard_items(stack, job_of(event))
    if answer["status"] != "RUNNING" or not items or any("batch_id" not in item for item in items):
        raise RuntimeError(f"the job did not record its batches: {answer}, {len(items)} shards")
    requests = sum(int(item["requests"]["N"]) for item in items)
    if requests != records:
        raise RuntimeError(f"the job's shards hold {requests} requests for {records} records")


def run(quick: bool) -> list[Figure]:
    records, size = (5_000, 5_000_000) if quick else (100_000, 100_000_000)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(latency=3600) as stack,
        procs.sink() as sink_url,
    ):
        workdir = Path(tmp)
        env = {**stack.function_env("SubmitFunction"), "ANTHROPIC_BASE_URL": sink_url}
        stack.client("s3").put_object(
            Bucket=stack.bucket_name, Key=f"pipelines/{NAME}.json", Body=json.dumps(PIPELINE).encode()
        )
        source, requests = workdir / "reviews.csv", workdir / "requests.jsonl"
        csv_bytes = write_reviews(source, records, size)
        if write_rendered(source, requests) != records:
            raise RuntimeError("the rendered requests are not one per record")
        jsonl_bytes = requests.stat().st_size
        records_event = upload(stack, source, f"inbox/{NAME}/bench-{records}.csv")
        native_event = upload(stack, requests, f"inbox/bench-rendered-{records}.jsonl")
        source.unlink()
        requests.unlink()
        label = f"{records:,} records, {csv_bytes / 1e6:.0f} MB CSV ({jsonl_bytes / 1e6:.0f} MB of requests)"
        print(f"records: {label} uploaded; native, then records mode…", flush=True)
        native = submit_child("ours", native_event, env, workdir)
        _submitted(stack, native_event, native, records)
        ours = submit_child("ours", records_event, env, workdir)
        _submitted(stack, records_event, ours, records)
    return figures(label, ours, native)


def figures(label: str, ours: Mapping[str, Any], native: Mapping[str, Any]) -> list[Figure]:
    return [
        Figure(
            "records",
            f"records intake, object to recorded batch, {label}: time",
            ours["seconds"],
            "s",
            "native mode on the same requests (.jsonl)",
            native["seconds"],
            native["seconds"] / ours["seconds"],
            f"ours <= {TIMES_NATIVE:g}x native's time (ratio >= {1 / TIMES_NATIVE:.2f}x)",
            ours["seconds"] <= TIMES_NATIVE * native["seconds"],
        ),
        Figure(
            "records",
            f"records intake, object to recorded batch, {label}: peak RSS",
            ours["peak_rss_mb"],
            "MB",
            "native mode on the same requests (.jsonl)",
            native["peak_rss_mb"],
            native["peak_rss_mb"] / ours["peak_rss_mb"],
            f"< {PEAK_GOAL_MB} MB",
            ours["peak_rss_mb"] < PEAK_GOAL_MB,
        ),
    ]
