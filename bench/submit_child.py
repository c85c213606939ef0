"""One submit path over one S3 object, in a fresh interpreter; prints its time and peak RSS.

    python -m bench.submit_child ours EVENT.json      # the real SubmitFunction handler
    python -m bench.submit_child minimal EVENT.json   # validate line by line, stream the body
    python -m bench.submit_child naive EVENT.json     # the pattern most guides show
    python -m bench.submit_child s3-floor EVENT.json  # upload a copy to work/, read it back
    python -m bench.submit_child parse-floor EVENT.json  # read the object, json.loads each line

The environment is the function's (bench.submit sets it); ANTHROPIC_BASE_URL is the sink.
Each path reads the same object version and sends the same requests to the same server."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import ROOT, report

ENVELOPE_OPEN, SEPARATOR, ENVELOPE_CLOSE = b'{"requests":[\n', b",\n", b"\n]}"


def _source(event: dict[str, Any]) -> tuple[str, str, str]:
    record = event["Records"][0]["s3"]
    return record["bucket"]["name"], record["object"]["key"], record["object"]["versionId"]


def ours(event: dict[str, Any]) -> dict[str, Any]:
    """What Lambda runs: the handler from functions/submit, the layer's code, the function's env."""
    import app  # type: ignore[import-not-found]  # main() put functions/submit on the path

    from batchdrop_local.lambda_context import LocalLambdaContext

    context = LocalLambdaContext(function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"], timeout_seconds=900)
    answer = app.lambda_handler(event, context)
    job = answer["jobs"][0]
    return {"status": job["status"]}


def _client() -> Any:
    import anthropic

    return anthropic.Anthropic(api_key="bench", max_retries=0, timeout=900)


def minimal(event: dict[str, Any]) -> dict[str, Any]:
    """The least a correct submit can do: read the object line by line, check each line is a
    request, write the create body to local disk, and post it streamed with its length."""
    import boto3
    from anthropic.types.messages import MessageBatch

    bucket, key, version = _source(event)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key, VersionId=version)["Body"]
    requests = 0
    with tempfile.TemporaryFile() as spool:
        spool.write(ENVELOPE_OPEN)
        for raw in body.iter_lines(chunk_size=1024 * 1024):
            line = raw.strip()
            if not line:
                continue
            request = json.loads(line)
            if not isinstance(request, dict) or "custom_id" not in request or "params" not in request:
                raise ValueError(f"line {requests + 1} is not a request")
            spool.write(SEPARATOR + line if requests else line)
            requests += 1
        spool.write(ENVELOPE_CLOSE)
        size = spool.tell()
        spool.seek(0)
        batch = _client().post(
            "/v1/messages/batches",
            cast_to=MessageBatch,
            content=iter(lambda: spool.read(1024 * 1024), b""),
            options={"headers": {"Content-Length": str(size), "Content-Type": "application/json"}},
        )
    return {"requests": requests, "batch_id": batch.id}


def s3_floor(event: dict[str, Any]) -> dict[str, Any]:
    """What a path that uploads its own copy of the body to S3 pays on this S3, parsing
    nothing: the object's lines written to work/ through our multipart writer, then read back
    whole. (Ours has S3 copy a clean file's shards instead, uploading none of it.)"""
    from batchdrop.adapters.objects import ObjectStore
    from batchdrop.ports import READ_BYTES

    bucket, key, version = _source(event)
    store = ObjectStore(bucket)
    copy_key = f"work/bench-floor/{version}.json"
    with store.writer(copy_key, "application/json") as copy:
        for line in store.lines(key, version):
            copy.write(line)
    size, body = store.open(copy_key)
    read = sum(len(chunk) for chunk in body.iter_chunks(READ_BYTES))
    body.close()
    return {"bytes": size, "read": read}


def parse_floor(event: dict[str, Any]) -> dict[str, Any]:
    """The least any path that checks its input pays on this stack: the object read from S3
    and each line parsed with the standard library's json, nothing checked, written or sent."""
    import boto3

    bucket, key, version = _source(event)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key, VersionId=version)["Body"]
    requests = 0
    for raw in body.iter_lines(chunk_size=1024 * 1024):
        if raw.strip():
            json.loads(raw)
            requests += 1
    return {"requests": requests}


def naive(event: dict[str, Any]) -> dict[str, Any]:
    """The pattern most guides show: parse every line into a list, hand the list to the SDK."""
    import boto3

    bucket, key, version = _source(event)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key, VersionId=version)["Body"]
    requests = [json.loads(line) for line in body.read().splitlines() if line.strip()]
    batch = _client().messages.batches.create(requests=requests)
    return {"requests": len(requests), "batch_id": batch.id}


def main() -> None:
    path, event_file = sys.argv[1], Path(sys.argv[2])
    event = json.loads(event_file.read_text())
    # Imports are a cold start's cost (bench.cold_start), paid once per container: every
    # path loads its libraries before the clock starts, and the handler module too.
    import anthropic  # noqa: F401
    import boto3  # noqa: F401

    if path == "ours":
        sys.path.insert(0, str(ROOT / "functions" / "submit"))
        import app  # type: ignore[import-not-found]  # noqa: F401
    started = time.perf_counter()
    paths = {"ours": ours, "minimal": minimal, "naive": naive, "s3-floor": s3_floor, "parse-floor": parse_floor}
    figures = paths[path](event)
    report({**figures, "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main()
