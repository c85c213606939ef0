"""`batchdrop submit`, `status`, `results` and `cancel` against the running local stack, as a
user types them after `batchdrop local up` and loading `.batchdrop/local.env`."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchdrop.adapters.state import StateTable
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import provider_queue_full, source_env_file

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
JOB_ID = re.compile(r"j[0-9a-f]{24}")  # as batchdrop.domain.jobs.job_id_for makes them

# This module's stack (tests/e2e/conftest.py), and its runner, left running in the background
# for the whole module as `batchdrop local up` runs it
STACK = {"latency": 0.5, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.5, "poll_seconds": 0.1}


@pytest.fixture(scope="module")
def stack_and_runner(stack: LocalStack) -> Iterator[tuple[LocalStack, LocalRunner]]:
    with LocalRunner(stack, **RUNNER) as runner:
        yield stack, runner


@pytest.fixture(scope="module")
def running(stack_and_runner: tuple[LocalStack, LocalRunner]) -> LocalStack:
    return stack_and_runner[0]


@pytest.fixture
def user_env(stack_and_runner: tuple[LocalStack, LocalRunner], tmp_path: Path) -> Iterator[LocalStack]:
    """The shell of a user who sourced .batchdrop/local.env. The runner's background
    invocations in this process run with their functions' own environments, so they neither
    see nor undo these variables."""
    running, _ = stack_and_runner
    env_file = tmp_path / "local.env"
    running.write_env_file(env_file)
    with pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
        yield running


def test_submit_wait_status_and_results_as_a_user(
    user_env: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a user submits the sample and waits for it
    assert main(["submit", str(SAMPLE), "--wait", "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    job_id = out.split("job ", 1)[1].split(":", 1)[0]
    assert "COMPLETED" in out

    # Then status lists the job with its source, requests done and cost
    assert main(["status"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(job_id))
    columns = row.split()  # job, created, age, status, requests done/total, cost, source
    assert columns[3:5] == ["COMPLETED", "12/12"]
    assert columns[5].startswith("$")
    assert row.endswith("inbox/reviews.jsonl")

    # And status --json of the job shows its batch, collected
    assert main(["status", job_id, "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["status"] == "COMPLETED"
    assert [b["state"] for b in detail["batches"]] == ["COLLECTED"]

    # And results downloads the manifest and the result part
    assert main(["results", job_id, "--out", str(tmp_path / "out")]) == 0
    files = {p.name for p in (tmp_path / "out" / job_id).iterdir()}
    assert files == {"manifest.json", "results-00000.jsonl"}
    lines = (tmp_path / "out" / job_id / "results-00000.jsonl").read_text().splitlines()
    assert len(lines) == 12


def test_results_of_an_unknown_job_name_it(user_env: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    # (A job that exists but has not ended: tests/e2e/test_cli_errors.py.)
    unknown = "j" + "d" * 24
    assert main(["results", unknown]) == 2
    assert f"no job {unknown}" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def batchdrop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """batchdrop's own directory for this test: a command that looks for the local stack's env
    file in its default place never reads the real one."""
    home = tmp_path / "batchdrop-home"
    monkeypatch.setenv("BATCHDROP_HOME", str(home))
    monkeypatch.delenv("BATCHDROP_ENV_FILE", raising=False)
    return home


@pytest.fixture
def shell_without_names() -> Iterator[None]:
    """A shell without BATCHDROP_BUCKET and BATCHDROP_TABLE, and no env file in the default
    place. The functions have them in their own environments: the background runner, left
    running, does not put them here."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("BATCHDROP_BUCKET", raising=False)
        env.delenv("BATCHDROP_TABLE", raising=False)
        yield


@pytest.mark.usefixtures("stack_and_runner", "shell_without_names")
def test_commands_without_names_explain_where_to_get_them(
    batchdrop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "batchdrop: error: no bucket or table: pass --stack NAME for a deployed stack, or start the local "
        f"stack with `batchdrop local up` (its env file, {batchdrop_home / 'local.env'}, is then found on its own)\n"
    )


@pytest.mark.usefixtures("shell_without_names")
def test_commands_find_the_local_stacks_env_file_on_their_own(
    stack_and_runner: tuple[LocalStack, LocalRunner], batchdrop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given `batchdrop local up` wrote its env file in the default place, and this shell loaded nothing
    running, _ = stack_and_runner
    running.write_env_file(batchdrop_home / "local.env")
    before = dict(os.environ)

    # When the user types a command, Then it talks to that stack, without changing the environment
    assert main(["submit", str(SAMPLE), "--key", "inbox/found/reviews.jsonl", "--wait", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert f"uploaded s3://{running.bucket_name}/inbox/found/reviews.jsonl" in out
    assert "  COMPLETED  source inbox/found/reviews.jsonl" in out
    assert dict(os.environ) == before


def test_submit_refuses_a_key_outside_inbox(user_env: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", str(SAMPLE), "--key", "results/sneaky.jsonl"])
    assert "only keys under inbox/" in capsys.readouterr().err


# ---------------------------------------------------------------- cancel


def _wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


@pytest.fixture
def full_queue(running: LocalStack) -> Iterator[None]:
    """The provider's queue is full: every create is refused, so a job stays open."""
    with provider_queue_full(running):
        yield


@pytest.mark.usefixtures("full_queue")
def test_cancel_writes_the_cancel_request_for_an_open_job(
    user_env: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job that cannot finish (its batch waits for room in the provider's queue)
    assert main(["submit", str(SAMPLE), "--key", "inbox/cancel-me/reviews.jsonl"]) == 0
    job_id = capsys.readouterr().out.split("job ", 1)[1].split(":", 1)[0]
    assert JOB_ID.fullmatch(job_id)
    state = StateTable(user_env.table_name)
    _wait_for(lambda: getattr(state.get_job(job_id), "status", None) not in (None, "RECEIVED"))

    # When the user cancels it
    assert main(["cancel", job_id]) == 0

    # Then an empty object at cancel/<job_id> asks for the cancel, and the user is told what comes next
    out = capsys.readouterr().out
    request = user_env.client("s3").get_object(Bucket=user_env.bucket_name, Key=f"cancel/{job_id}")
    assert request["Body"].read() == b""
    assert f"s3://{user_env.bucket_name}/cancel/{job_id}" in out
    assert "will end CANCELED with its results so far" in out
    assert f"batchdrop status {job_id}" in out


@pytest.mark.parametrize(
    "bad_id", ["not-a-job", "j123", "J" + "a" * 24, "j" + "A" * 24, "j" + "a" * 25, "../j" + "a" * 24]
)
def test_cancel_refuses_what_is_not_a_job_id(
    user_env: LocalStack, capsys: pytest.CaptureFixture[str], bad_id: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cancel", bad_id])

    assert exited.value.code == 2
    assert f"{bad_id!r} is not a job id" in capsys.readouterr().err
    listing = user_env.client("s3").list_objects_v2(Bucket=user_env.bucket_name, Prefix="cancel/")
    assert all(bad_id not in item["Key"] for item in listing.get("Contents", []))


def test_cancel_of_an_unknown_job_names_it_and_writes_nothing(
    user_env: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = "j" + "0" * 24

    assert main(["cancel", unknown]) == 2

    assert f"no job {unknown}" in capsys.readouterr().err
    listing = user_env.client("s3").list_objects_v2(Bucket=user_env.bucket_name, Prefix=f"cancel/{unknown}")
    assert listing["KeyCount"] == 0


def test_cancel_of_a_finished_job_says_so_and_writes_nothing(
    user_env: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", str(SAMPLE), "--key", "inbox/finished/reviews.jsonl", "--wait", "--timeout", "120"]) == 0
    job_id = capsys.readouterr().out.split("job ", 1)[1].split(":", 1)[0]

    assert main(["cancel", job_id]) == 2

    assert f"job {job_id} already ended COMPLETED" in capsys.readouterr().err
    listing = user_env.client("s3").list_objects_v2(Bucket=user_env.bucket_name, Prefix=f"cancel/{job_id}")
    assert listing["KeyCount"] == 0


@pytest.mark.usefixtures("stack_and_runner", "shell_without_names")
def test_cancel_without_names_explains_where_to_get_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cancel", "j" + "0" * 24])
    assert exited.value.code == 2
    assert "--stack NAME" in capsys.readouterr().err
