"""`batchdrop submit`, `status` and `results` against the running local stack, as a user
types them after `batchdrop local up` and loading `.batchdrop/local.env`."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"


@pytest.fixture(scope="module")
def running() -> Iterator[LocalStack]:
    with (
        LocalStack(latency=0.5, parameters={"LogLevel": "WARNING"}) as stack,
        LocalRunner(stack, tick_seconds=0.5, poll_seconds=0.1),
    ):
        yield stack


@pytest.fixture
def user_env(running: LocalStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LocalStack:
    """The shell of a user who sourced .batchdrop/local.env."""
    env_file = tmp_path / "local.env"
    running.write_env_file(env_file)
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, shlex.split(value)[0] if value else "")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    return running


def test_submit_wait_status_and_results_as_a_user(
    user_env: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a user submits the sample and waits for it
    assert main(["submit", str(SAMPLE), "--wait", "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    job_id = out.split("job ", 1)[1].split(":", 1)[0]
    assert "COMPLETED" in out

    # Then status lists the job with its source and counts
    assert main(["status"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(job_id))
    assert row.split()[1:4] == ["COMPLETED", "12", "0"]
    assert row.endswith("inbox/reviews.jsonl")

    # And status --json of the job shows its batch, collected
    assert main(["status", job_id, "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["job"]["status"] == "COMPLETED"
    assert [b["state"] for b in detail["batches"]] == ["COLLECTED"]

    # And results downloads the manifest and the result part
    assert main(["results", job_id, "--out", str(tmp_path / "out")]) == 0
    files = {p.name for p in (tmp_path / "out" / job_id).iterdir()}
    assert files == {"manifest.json", "results-00000.jsonl"}
    lines = (tmp_path / "out" / job_id / "results-00000.jsonl").read_text().splitlines()
    assert len(lines) == 12


def test_results_of_an_unfinished_job_says_so(user_env: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "jdoesnotexist000000000000"]) == 1
    assert "not finished" in capsys.readouterr().err


def test_commands_without_names_explain_where_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BATCHDROP_BUCKET", raising=False)
    monkeypatch.delenv("BATCHDROP_TABLE", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    assert exited.value.code == 2
    assert ".batchdrop/local.env" in capsys.readouterr().err


def test_submit_refuses_a_key_outside_inbox(user_env: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", str(SAMPLE), "--key", "results/sneaky.jsonl"])
    assert "only keys under inbox/" in capsys.readouterr().err
