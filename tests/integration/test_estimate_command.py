"""`batchdrop estimate` against the emulator's count_tokens: a small native file and a records
file counted whole and exactly, a larger one sampled within its stated bound, a rate limit
ridden out by the SDK's retries, and counts that fail giving the stated approximation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchdrop.domain.prompt_shape import prompt_shape
from batchdrop_client.pipelines import load_pipeline_file
from batchdrop_local.cli import main
from batchdrop_local.emulator.faults import FaultSettings
from batchdrop_local.emulator.responder import prompt_tokens
from batchdrop_local.emulator.server import Emulator
from tests.integration.emulator_support import MakeClient, StartEmulator

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def run_estimate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, emulator: Emulator, *args: str
) -> dict[str, Any]:
    """The command's JSON, with the environment naming `emulator` as a loaded env file would."""
    monkeypatch.setenv("BATCHDROP_BUCKET", "unused-bucket")
    monkeypatch.setenv("BATCHDROP_TABLE", "unused-table")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.delenv("BATCHDROP_PRICES_JSON", raising=False)
    assert main(["estimate", *args, "--json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def native_params(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["params"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_a_small_native_file_is_counted_exactly(
    start_emulator: StartEmulator,
    make_client: MakeClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = start_emulator()
    client = make_client(emulator)
    path = SAMPLES / "reviews.jsonl"
    truth = sum(
        client.messages.count_tokens(model=p["model"], messages=p["messages"], system=p["system"]).input_tokens
        for p in native_params(path)
    )
    result = run_estimate(capsys, monkeypatch, emulator, str(path))
    assert result["requests"] == 12
    assert result["input_tokens"] == truth
    assert result["method"]["input"] == "counted"
    assert result["method"]["counted"] == 12


def test_a_records_file_is_rendered_through_its_pipeline_and_counted_exactly(
    start_emulator: StartEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = start_emulator()
    pipeline = load_pipeline_file(SAMPLES / "reviews.yaml").pipeline
    rendered = []
    import csv

    with (SAMPLES / "reviews.csv").open(encoding="utf-8", newline="") as rows:
        for position, record in enumerate(csv.DictReader(rows), start=1):
            line = pipeline.render(record, position)
            assert isinstance(line, bytes)
            rendered.append(json.loads(line)["params"])
    result = run_estimate(
        capsys, monkeypatch, emulator, str(SAMPLES / "reviews.csv"), "--pipeline-file", str(SAMPLES / "reviews.yaml")
    )
    assert result["requests"] == len(rendered) == 12
    assert result["input_tokens"] == sum(prompt_tokens(params) for params in rendered)
    assert result["method"]["input"] == "counted"


def test_a_larger_file_is_sampled_and_its_bound_covers_the_truth(
    start_emulator: StartEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given 400 requests of uneven length (a fixed pattern: the same file on every run)
    emulator = start_emulator()
    path = tmp_path / "many.jsonl"
    lines = []
    for index in range(400):
        words = " ".join(f"word{(index * 7 + k) % 13}" for k in range(5 + (index * 37) % 200))
        params = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": words}]}
        lines.append(json.dumps({"custom_id": f"req-{index:04d}", "params": params}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth = sum(prompt_tokens(json.loads(line)["params"]) for line in lines)
    # When estimated from a sample of 40
    result = run_estimate(capsys, monkeypatch, emulator, str(path), "--sample", "40", "--seed", "3")
    # Then the sample is stated and the truth lies within the stated bound
    method = result["method"]
    assert (method["input"], method["counted"], method["seed"]) == ("sampled", 40, 3)
    assert 0 < method["input_tokens_bound"] < truth / 5
    assert abs(result["input_tokens"] - truth) <= method["input_tokens_bound"]


def test_a_rate_limit_is_waited_out_by_the_sdks_retries(
    start_emulator: StartEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = FaultSettings.model_validate(
        {"http_errors": [{"endpoint": "count_tokens", "status": 429, "rate": 1.0, "times": 3}], "retry_after": 0.05}
    )
    emulator = start_emulator(faults=faults)
    result = run_estimate(capsys, monkeypatch, emulator, str(SAMPLES / "reviews.jsonl"))
    assert result["method"]["input"] == "counted"
    assert result["method"]["count_failures"] == 0


def test_when_every_count_fails_the_approximation_is_used_and_the_reason_given(
    start_emulator: StartEmulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = FaultSettings.model_validate({"http_errors": [{"endpoint": "count_tokens", "status": 400, "rate": 1.0}]})
    emulator = start_emulator(faults=faults)
    path = SAMPLES / "reviews.jsonl"
    result = run_estimate(capsys, monkeypatch, emulator, str(path))
    assert result["input_tokens"] == sum(prompt_shape(p).approx_tokens for p in native_params(path))
    assert result["method"]["input"] == "approximated"
    assert result["method"]["count_failures"] == 12
    assert result["method"]["fallback"].startswith("no count succeeded (BadRequestError")
