"""One step of the outputs bench, in a fresh interpreter; prints its figures as JSON.

    python -m bench.outputs_child seed RECORDS   # a finished records job: its shards collected
    python -m bench.outputs_child ours           # one tick of the real CheckerFunction handler
    python -m bench.outputs_child copy JOB_ID    # the job's result parts copied as they are
    python -m bench.outputs_child floor JOB_ID   # the parts read, each line parsed, written twice

The environment is the checker function's (bench.outputs sets it). The job is set up as the
records intake writes it (tests/records_jobs.py: the pipeline version recorded with the job,
rows files, result parts), each shard's results shuffled as the API returns them, each answer
a structured one of about 1 KB."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Mapping
from typing import Any

from bench.procs import ROOT, report

SHARDS = 4  # the records are cut into this many shards
ANSWER_BYTES = 1000


def seed(records: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from batchdrop import wiring
    from tests.records_jobs import pipeline_document, seed_collected, seed_records_job, text_answer

    wired = wiring.from_env()
    rows = [{"product": f"product {n % 97}", "review": f"review {n}"} for n in range(1, records + 1)]
    per_shard = -(-records // SHARDS)
    job = seed_records_job(
        wired, rows, document=pipeline_document(), per_shard=per_shard, source_key=f"inbox/reviews/bench-{records}.csv"
    )
    padding = "x" * (ANSWER_BYTES - 60)

    def answer(custom_id: str) -> Mapping[str, Any]:
        reason = f"{custom_id}: {padding}"
        return text_answer(json.dumps({"sentiment": "mixed", "confidence": 0.5, "reason": reason}))

    seed_collected(wired, job, answer, random.Random(records).shuffle)
    return {"job_id": job.job_id}


def ours() -> dict[str, Any]:
    import app  # type: ignore[import-not-found]  # main() put functions/checker on the path

    from batchdrop_local.lambda_context import LocalLambdaContext

    context = LocalLambdaContext(function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"], timeout_seconds=900)
    answer = app.lambda_handler({"source": "bench"}, context)
    return {"finished": len(answer["finished_jobs"])}


def copy(job_id: str) -> dict[str, Any]:
    """A plain copy: each result part streamed from S3 into a new object, parsing nothing."""
    import boto3
    from boto3.s3.transfer import TransferConfig

    s3 = boto3.client("s3")
    bucket = os.environ["BATCHDROP_BUCKET"]
    config = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=2)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"results/{job_id}/results-")["Contents"]
    copied = 0
    for item in listed:
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"]
        s3.upload_fileobj(body, bucket, f"bench/copy-{item['Key']}", Config=config)
        copied += item["Size"]
    return {"bytes": copied}


def floor(job_id: str) -> dict[str, Any]:
    """The least any path from parsed results to two output files pays: each result part read
    (unordered), each line parsed with the function's own parser (jiter, json as referee), and
    the lines written as they are to two objects through the function's own writer. No order,
    no row, no check."""
    sys.path.insert(0, str(ROOT / "layers" / "common"))
    from batchdrop import wiring
    from batchdrop.domain import quick_json

    store = wiring.from_env().store
    keys = sorted({version.key for version in store.versions(f"results/{job_id}/results-")})
    with (
        store.writer(f"bench/floor-{job_id}.csv", "text/csv") as first,
        store.writer(f"bench/floor-{job_id}.jsonl", "application/x-jsonl") as second,
    ):
        for key in keys:
            for line in store.lines(key):
                quick_json.parse(line, json.loads)
                first.write(line)
                second.write(line)
    return {"parts": len(keys)}


def main() -> None:
    import boto3  # noqa: F401 - libraries load before the clock, as in bench.results_child

    if sys.argv[1] == "ours":
        sys.path.insert(0, str(ROOT / "functions" / "checker"))
        import app  # type: ignore[import-not-found]  # noqa: F401
    started = time.perf_counter()
    if sys.argv[1] == "seed":
        figures = seed(int(sys.argv[2]))
    elif sys.argv[1] == "ours":
        figures = ours()
    elif sys.argv[1] == "floor":
        figures = floor(sys.argv[2])
    else:
        figures = copy(sys.argv[2])
    report({**figures, "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main()
