"""One way of moving an ended batch's results into S3, in a fresh interpreter; prints its
time, the bytes moved and its peak RSS.

    python -m bench.results_child ours            # one tick of the real CheckerFunction handler
    python -m bench.results_child copy BATCH_ID   # the bytes as they come, emulator to S3

The environment is the checker function's (bench.results sets it)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.procs import ROOT, report


def ours() -> dict[str, Any]:
    import app  # type: ignore[import-not-found]  # main() put functions/checker on the path

    from batchdrop_local.lambda_context import LocalLambdaContext

    context = LocalLambdaContext(function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"], timeout_seconds=900)
    answer = app.lambda_handler({"source": "bench"}, context)
    return {"collected": len(answer["collected"]), "finished": len(answer["finished_jobs"])}


def copy(batch_id: str) -> dict[str, Any]:
    """A plain copy: stream the results URL's bytes into a multipart upload, parsing nothing."""
    import anthropic
    import boto3
    import httpx2
    from boto3.s3.transfer import TransferConfig

    client = anthropic.Anthropic(api_key=os.environ["BENCH_API_KEY"], max_retries=0, timeout=900)
    url = client.messages.batches.retrieve(batch_id).results_url
    assert url, f"batch {batch_id} has no results yet"
    response = client.get(url, cast_to=httpx2.Response, stream=True)

    class _Stream:
        def __init__(self) -> None:
            self._chunks = response.iter_bytes(1024 * 1024)
            self._left = b""
            self.size = 0

        def read(self, size: int = -1) -> bytes:
            while size < 0 or len(self._left) < size:
                chunk = next(self._chunks, b"")
                if not chunk:
                    break
                self._left += chunk
            data, self._left = (self._left, b"") if size < 0 else (self._left[:size], self._left[size:])
            self.size += len(data)
            return data

    stream = _Stream()
    config = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=2)
    boto3.client("s3").upload_fileobj(stream, os.environ["BATCHDROP_BUCKET"], f"bench/copy-{batch_id}", Config=config)
    response.close()
    return {"bytes": stream.size}


def main() -> None:
    import anthropic  # noqa: F401 - libraries load before the clock, as in bench.submit_child
    import boto3  # noqa: F401

    if sys.argv[1] == "ours":
        sys.path.insert(0, str(ROOT / "functions" / "checker"))
        import app  # type: ignore[import-not-found]  # noqa: F401
    started = time.perf_counter()
    figures = ours() if sys.argv[1] == "ours" else copy(sys.argv[2])
    report({**figures, "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    main()
