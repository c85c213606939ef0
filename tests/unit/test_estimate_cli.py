"""`batchdrop estimate` without an API: the human summary, the stated fallback, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from batchdrop_local.cli import main

pytestmark = pytest.mark.unit

STACK_VARIABLES = (
    "BATCHDROP_BUCKET",
    "BATCHDROP_TABLE",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "BATCHDROP_ENV_FILE",
)
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(autouse=True)
def no_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No local stack, no API in the environment."""
    for name in (*STACK_VARIABLES, "BATCHDROP_PRICES_JSON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHDROP_HOME", str(tmp_path / "home"))


def test_the_summary_names_requests_tokens_costs_and_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(SAMPLES / "reviews.jsonl"), "--offline"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{SAMPLES / 'reviews.jsonl'}: 12 requests"
    assert out[1].startswith("  input tokens   ")
    assert "expected (0.5 x max_tokens (default share)), at most 60" in out[2]
    assert out[3].startswith("  cost (USD)     standard $")
    assert "batch with caching $" in out[3]
    assert "batch at most $" in out[3]
    assert out[4].endswith("--offline: nothing was counted")
    assert "claude-haiku-4-5 as haiku-4.5" in out[5]


def test_prime_cache_prices_the_prefix_as_the_priming_request_writes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given requests sharing a long cached system prompt
    system = [{"type": "text", "text": "rubric " * 4000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    path = tmp_path / "cached.jsonl"
    lines = [
        {
            "custom_id": f"r{n}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 8,
                "system": system,
                "messages": [{"role": "user", "content": f"essay {n}"}],
            },
        }
        for n in range(20)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    # When estimated primed and not
    assert main(["estimate", str(path), "--offline", "--json", "--prime-cache"]) == 0
    primed = json.loads(capsys.readouterr().out)
    assert main(["estimate", str(path), "--offline", "--json", "--no-prime-cache"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["estimate", str(path), "--offline", "--prime-cache"]) == 0
    summary = capsys.readouterr().out

    # Then primed, the priming request is priced apart and counted in the expected figure
    assert "priming" not in plain["cost_usd"]
    priming = float(primed["cost_usd"]["priming"])
    assert priming > 0
    assert primed["method"]["cache"].startswith("primed:")
    assert float(primed["cost_usd"]["batch_max"]) == pytest.approx(float(plain["cost_usd"]["batch_max"]) + priming)
    assert f"priming        ${primed['cost_usd']['priming']} at the standard price" in summary


def test_without_a_stack_or_api_the_estimate_says_it_approximated(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a gzipped native file with one bad line
    path = tmp_path / "x.jsonl.gz"
    params = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    good = {"custom_id": "a", "params": params}
    path.write_bytes(gzip.compress((json.dumps(good) + "\n{not json\n").encode()))
    assert main(["estimate", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["requests"] == 1
    assert result["method"]["input"] == "approximated"
    assert result["method"]["fallback"].startswith("no API to count with")
    assert result["method"]["prices"]["priced_as"] == {"m": "fallback-highest-list-price"}


def test_the_price_override_applies_to_the_estimate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["estimate", str(SAMPLES / "reviews.jsonl"), "--offline", "--json"]
    assert main(args) == 0
    shipped = json.loads(capsys.readouterr().out)["cost_usd"]["standard"]
    monkeypatch.setenv("BATCHDROP_PRICES_JSON", '{"families": {"haiku-4.5": {"input": 100, "output": 500}}}')
    assert main(args) == 0
    overridden = json.loads(capsys.readouterr().out)["cost_usd"]["standard"]
    assert float(overridden) == pytest.approx(float(shipped) * 100, rel=1e-3)


def test_a_missing_file_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["estimate", str(tmp_path / "none.jsonl"), "--offline"]) == 2
    assert capsys.readouterr().err.strip() == f"batchdrop: {tmp_path / 'none.jsonl'}: no such file"


def test_a_file_without_a_valid_request_is_estimated_at_nothing_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json\n")
    assert main(["estimate", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 0 requests (1 rejected, not counted)" in out
    assert "standard $0.000000" in out
    assert out.splitlines()[4].endswith(": the file holds no valid request")
