"""The job budget on the local stack, through the `batchdrop` command as a user runs it: a
stack whose JobBudgetUsd is below what any job costs holds each job as AWAITING_APPROVAL with
nothing sent; `batchdrop status` says why; `batchdrop approve` sends it (an object at
approve/<job_id>, whose S3 event the submit function takes) and it completes; `batchdrop
cancel` drops another, which ends CANCELED with no batch ever created."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchdrop.domain.budget import budget_key
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack

pytestmark = pytest.mark.e2e

STACK = {"latency": 0.3, "parameters": {"LogLevel": "WARNING", "JobBudgetUsd": "0.000001", "ApprovalHours": "1"}}
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"


@pytest.fixture
def shell(stack: LocalStack, tmp_path: Path) -> Iterator[LocalRunner]:
    """A user's shell that sourced the stack's env file, with the stack's functions running."""
    env_file = stack.write_env_file(tmp_path / "local.env")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # the handlers' metrics lines off stdout
        for line in env_file.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                env.setenv(name, shlex.split(value)[0] if value else "")
        with LocalRunner(stack, tick_seconds=0.3, poll_seconds=0.1) as runner:
            yield runner


def _wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


def _status(capsys: pytest.CaptureFixture[str], job_id: str) -> str | None:
    """The job's status, None while its S3 event has not made it yet."""
    capsys.readouterr()
    code = main(["status", job_id, "--json"])
    out = capsys.readouterr().out
    # The in-process handlers' log lines (one JSON object a line) may come first.
    return str(json.loads(out[out.index("{\n") :])["status"]) if code == 0 else None


def _submit(capsys: pytest.CaptureFixture[str], key: str) -> str:
    capsys.readouterr()
    assert main(["submit", str(SAMPLE), "--key", key]) == 0
    return capsys.readouterr().out.split("job ", 1)[1].split(":", 1)[0]


def test_a_job_over_the_budget_waits_then_goes_when_approved(
    stack: LocalStack, shell: LocalRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose job budget is below any job's cost, when a file is submitted
    job_id = _submit(capsys, "inbox/budget/approved.jsonl")

    # Then the job waits, nothing sent, and its status says why and what to do
    _wait_for(lambda: _status(capsys, job_id) == "AWAITING_APPROVAL")
    assert stack.emulator_control().counters()["creates_accepted"] == 0
    capsys.readouterr()
    assert main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert "over the job budget of $0.000001" in out
    assert f"`batchdrop approve {job_id}` sends it, `batchdrop cancel {job_id}` drops it" in out
    held = json.loads(stack.client("s3").get_object(Bucket=stack.bucket_name, Key=budget_key(job_id))["Body"].read())
    assert held["job_budget_usd"] == "0.000001"

    # When it is approved, then its batch goes out and it completes
    assert main(["approve", job_id]) == 0
    assert f"approved job {job_id}" in capsys.readouterr().out
    _wait_for(lambda: _status(capsys, job_id) == "COMPLETED")
    assert stack.emulator_control().counters()["creates_accepted"] == 1
    # ...and approving it again is refused with the reason, exit 2 or more
    assert main(["approve", job_id]) != 0


def test_a_job_over_the_budget_canceled_ends_canceled_with_nothing_sent(
    stack: LocalStack, shell: LocalRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    created = stack.emulator_control().counters()["creates_accepted"]
    job_id = _submit(capsys, "inbox/budget/canceled.jsonl")
    _wait_for(lambda: _status(capsys, job_id) == "AWAITING_APPROVAL")

    assert main(["cancel", job_id]) == 0

    _wait_for(lambda: _status(capsys, job_id) == "CANCELED")
    assert stack.emulator_control().counters()["creates_accepted"] == created
