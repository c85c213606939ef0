"""`batchdrop estimate --pipeline NAME` against the local stack, found by its env file: the
pipeline is read from the bucket, the records rendered through it, and the input counted by
the stack's emulator, exactly as with the same pipeline given as a local file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchdrop_local.cli import main
from batchdrop_local.stack import LocalStack

pytestmark = pytest.mark.e2e

STACK = {"latency": 0.2, "parameters": {"LogLevel": "WARNING"}}

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def estimate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["estimate", *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_a_pipeline_from_the_bucket_estimates_as_the_same_local_file(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the user's shell knows the stack only by its env file, and the pipeline is put
    for name in ("BATCHDROP_BUCKET", "BATCHDROP_TABLE", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BATCHDROP_PRICES_JSON", raising=False)
    monkeypatch.setenv("BATCHDROP_ENV_FILE", str(stack.write_env_file(tmp_path / "local.env")))
    assert main(["pipeline", "put", str(SAMPLES / "reviews.yaml"), "--name", "estimated"]) == 0
    capsys.readouterr()
    # When the records file is estimated with the bucket's pipeline, then with the local file
    from_bucket = estimate(capsys, str(SAMPLES / "reviews.csv"), "--pipeline", "estimated")
    from_file = estimate(capsys, str(SAMPLES / "reviews.csv"), "--pipeline-file", str(SAMPLES / "reviews.yaml"))
    # Then both are counted by the emulator, whole, and agree
    assert from_bucket["method"]["input"] == "counted"
    assert from_bucket["requests"] == 12
    assert from_bucket == from_file
