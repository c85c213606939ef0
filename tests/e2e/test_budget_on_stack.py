"""The job budget on the local stack, through the `batchdrop` command as a user runs it: a
stack whose JobBudgetUsd is below what any job costs holds each job as AWAITING_APPROVAL with
nothing sent; `batchdrop status` says why; `batchdrop approve` sends it (an object at
approve/<job_id>, whose S3 event the submit function takes) and it completes; `batchdrop
cancel` drops another, which ends CANCELED with no batch ever created; the sweep drops one
whose approval expired; `submit --wait` stops at a held job and says why. With the job budget
lifted, the daily budget holds the job that would take the day's spend past it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from batchdrop.domain.budget import budget_key, spend_day
from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.timings import Timings, stamp
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import source_env_file, wired, with_settings

pytestmark = pytest.mark.e2e

STACK = {"latency": 0.3, "parameters": {"LogLevel": "WARNING", "JobBudgetUsd": "0.000001", "ApprovalHours": "1"}}
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"


@pytest.fixture
def shell(stack: LocalStack, tmp_path: Path) -> Iterator[LocalRunner]:
    """A user's shell that sourced the stack's env file, with the stack's functions running."""
    env_file = stack.write_env_file(tmp_path / "local.env")
    with pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
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


def _read_json(stack: LocalStack, key: str) -> dict[str, object]:
    return dict(json.loads(stack.client("s3").get_object(Bucket=stack.bucket_name, Key=key)["Body"].read()))


def test_submit_wait_stops_at_a_held_job_and_says_why(
    stack: LocalStack, shell: LocalRunner, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(["submit", str(SAMPLE), "--key", "inbox/budget/waited.jsonl", "--wait", "--timeout", "60"])
    err = capsys.readouterr().err
    assert code == 5
    assert "waits for approval: its estimate is at most $" in err
    assert "over the job budget of $0.000001; `batchdrop approve j" in err


def test_a_held_job_whose_approval_expired_is_dropped_by_the_sweep(
    stack: LocalStack, shell: LocalRunner, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a held job, and a sweep that looks at uploads of any age
    with_settings(stack, monkeypatch, timings=Timings(sweep_min_age=0.0))
    created = stack.emulator_control().counters()["creates_accepted"]
    job_id = _submit(capsys, "inbox/budget/expired.jsonl")
    _wait_for(lambda: _status(capsys, job_id) == "AWAITING_APPROVAL")

    # When a sweep runs before its expiry, then it waits on
    assert shell.sweep().error is None
    assert _status(capsys, job_id) == "AWAITING_APPROVAL"

    # When its expiry has passed (ApprovalHours is 1: the hour is moved back, not waited for)
    held = _read_json(stack, budget_key(job_id))
    held["expires_at"] = stamp(datetime.now(UTC) - timedelta(seconds=1))
    stack.client("s3").put_object(Bucket=stack.bucket_name, Key=budget_key(job_id), Body=json.dumps(held).encode())
    assert shell.sweep().error is None

    # Then it is dropped: it ends CANCELED, and no batch was ever created
    _wait_for(lambda: _status(capsys, job_id) == "CANCELED")
    assert stack.emulator_control().counters()["creates_accepted"] == created
    counts = _read_json(stack, manifest_key(job_id))["counts"]
    assert counts["canceled"] == counts["requests"] == 12  # type: ignore[index]


def test_the_daily_budget_holds_the_job_that_would_take_the_day_past_it(
    stack: LocalStack, shell: LocalRunner, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no job budget, and a daily budget far above anything: a job runs to the end
    monkeypatch.setitem(stack.function_variables, "BATCHDROP_JOB_BUDGET_USD", "0")
    monkeypatch.setitem(stack.function_variables, "BATCHDROP_DAILY_BUDGET_USD", "1000")
    first = _submit(capsys, "inbox/daily/first.jsonl")
    _wait_for(lambda: _status(capsys, first) == "COMPLETED")
    bound = Decimal(str(_read_json(stack, f"work/{first}/estimate.json")["cost_usd"]["batch_max"]))  # type: ignore[index]
    state = wired(stack).state
    spent = state.spent_on(spend_day(datetime.now(UTC)))  # the first at its actual cost, and earlier tests'

    # When the daily budget leaves room for one more such job, not two, and two are submitted
    monkeypatch.setitem(stack.function_variables, "BATCHDROP_DAILY_BUDGET_USD", str(spent + bound * 3 / 2))
    second = _submit(capsys, "inbox/daily/second.jsonl")
    _wait_for(lambda: _status(capsys, second) in ("RUNNING", "COMPLETED"))
    third = _submit(capsys, "inbox/daily/third.jsonl")

    # Then the second goes and the third waits, saying the day would be over its budget
    _wait_for(lambda: _status(capsys, third) == "AWAITING_APPROVAL")
    capsys.readouterr()
    assert main(["status", third]) == 0
    assert "spend (UTC) from $" in (out := capsys.readouterr().out)
    assert "over the daily budget of $" in out
    assert _read_json(stack, budget_key(third))["held_by"] == "daily_budget"

    # When it is approved, it goes, over the day's budget: someone chose to pay it
    assert main(["approve", third]) == 0
    _wait_for(lambda: _status(capsys, third) == "COMPLETED")
    _wait_for(lambda: _status(capsys, second) == "COMPLETED")
    actual = sum(
        Decimal(str(_read_json(stack, manifest_key(job))["cost"]["batch_usd"]))  # type: ignore[index]
        for job in (second, third)
    )
    assert state.spent_on(spend_day(datetime.now(UTC))) == spent + actual
