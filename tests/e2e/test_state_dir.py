"""`batchdrop local up --state-dir DIR`: a job under way when the stack is stopped is carried
to its end after the stack is started again with the same directory, with no batch created
twice and each request once in the results; without --state-dir a start is empty.

The first test runs `batchdrop local up` in processes of its own and stops it with SIGINT, as
a user presses Ctrl-C; the user's commands run through `main` in the shell of a user who
loaded the env file. The others drive LocalStack and LocalRunner in this process, for what a
user cannot set from the command line (a shard size that splits a few hundred requests) or
cannot time (an upload whose event is lost at the stop)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from batchdrop.domain.timings import Timings
from batchdrop_local.cli import main
from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.pipeline_settings import pipeline_settings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from tests.e2e.support import (
    SUBMIT,
    assert_each_request_once,
    env_file_variables,
    finished,
    input_ids,
    read_manifest,
    upload_bytes,
)

pytestmark = pytest.mark.e2e

BATCHDROP = Path(sys.executable).with_name("batchdrop")  # the console script the venv installs
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
REQUESTS = 300
LATENCY = 4.0  # long enough to stop the stack while the batch runs, short enough for the test
FINAL = ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED")


# --------------------------------------------------------------------------- as a user types it


class LocalUp:
    """`batchdrop local up ARGS` in a process of its own, BATCHDROP_HOME in the test's tmp."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.env_file = tmp_path / f"{name}.env"
        self.log_file = tmp_path / f"{name}.log"
        command = [str(BATCHDROP), "local", "up", "--tick", "0.5", "--env-file", str(self.env_file), *args]
        environment = {**user_shell(), "BATCHDROP_HOME": str(tmp_path / "home")}
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=environment)
        deadline = time.monotonic() + 60
        while "# watching" not in self.log_file.read_text():
            assert self.process.poll() is None, f"batchdrop local up ended: {self.log_file.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "batchdrop local up did not start in 60 s"
            time.sleep(0.1)
        self._variables = self._read_variables()  # the file goes when the stack stops

    def ctrl_c(self) -> int:
        """SIGINT, as Ctrl-C sends it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"batchdrop local up did not stop in 60 s: {self.log()[-2000:]}") from None

    def variables(self) -> dict[str, str]:
        return dict(self._variables)

    def _read_variables(self) -> dict[str, str]:
        return env_file_variables(self.env_file)

    def log(self) -> str:
        return self.log_file.read_text()


def user_shell() -> dict[str, str]:
    """This process's environment less what tests/conftest.py sets for the handlers' imports
    (a user's shell has no POWERTOOLS_ variables) and what a test loaded from an env file."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POWERTOOLS_", "AWS_", "ANTHROPIC_", "BATCHDROP_", "LOG_LEVEL"))
    }


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[LocalUp]]:
    """The `local up` processes a test starts; any still running at its end are stopped."""
    processes: list[LocalUp] = []
    yield processes
    for up in processes:
        if up.process.poll() is None:
            up.ctrl_c()


def start(started: list[LocalUp], tmp_path: Path, name: str, *args: str) -> LocalUp:
    started.append(LocalUp(tmp_path, name, *args))
    return started[-1]


def batchdrop(
    up: LocalUp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, str, str]:
    """`batchdrop ARGV` typed in a shell that loaded `up`'s env file: exit code, out, err."""
    for name, value in up.variables().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def job_status(up: LocalUp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, job: str) -> str:
    code, out, err = batchdrop(up, capsys, monkeypatch, "status", job, "--json")
    assert code == 0, err
    return str(json.loads(out)["status"])


def test_a_job_running_at_ctrl_c_ends_after_local_up_with_the_same_state_dir(
    tmp_path: Path, started: list[LocalUp], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    source = tmp_path / "requests.jsonl"
    write_requests(source, REQUESTS)
    first = start(started, tmp_path, "first", "--state-dir", str(state), "--latency", str(LATENCY))

    # Given a job whose batch the emulator has created, not yet ended, when the user presses Ctrl-C
    code, out, err = batchdrop(first, capsys, monkeypatch, "submit", str(source))
    assert code == 0, err
    job = out.split("job ", 1)[1].split(":", 1)[0]
    emulator = EmulatorControl(first.variables()["ANTHROPIC_BASE_URL"])
    deadline = time.monotonic() + 20
    while emulator.counters()["batches"] < 1:
        assert time.monotonic() < deadline, "no batch created in 20 s"
        time.sleep(0.1)
    assert job_status(first, capsys, monkeypatch, job) == "RUNNING"
    assert first.ctrl_c() == 0
    assert f"local stack state saved to {state / 'moto.snapshot'}" in first.log()

    # When the user starts the stack again with the same --state-dir (on other ports)
    second = start(started, tmp_path, "second", "--state-dir", str(state), "--latency", str(LATENCY))
    assert second.variables()["AWS_ENDPOINT_URL"] != first.variables()["AWS_ENDPOINT_URL"]

    # Then the job goes on to its end, each request once in its results, its one batch created once
    deadline = time.monotonic() + 30
    while (status := job_status(second, capsys, monkeypatch, job)) not in FINAL:
        assert time.monotonic() < deadline, f"job {job} still {status} 30 s after the restart"
        time.sleep(0.3)
    assert status == "COMPLETED"
    code, out, err = batchdrop(second, capsys, monkeypatch, "results", job, "--out", str(tmp_path / "results"))
    assert (code, err) == (0, "")
    seen: Counter[str] = Counter()
    for part in (tmp_path / "results" / job).glob("results-*.jsonl"):
        seen.update(json.loads(line)["custom_id"] for line in part.read_text().splitlines())
    assert seen == Counter(input_ids(source.read_bytes()))
    counters = EmulatorControl(second.variables()["ANTHROPIC_BASE_URL"]).counters()
    assert (counters["batches"], counters["requests_received"], counters["duplicate_custom_ids"]) == (1, REQUESTS, 0)
    assert second.ctrl_c() == 0


def test_a_state_dir_serves_one_stack_at_a_time_and_a_start_without_it_is_empty(
    tmp_path: Path, started: list[LocalUp], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    first = start(started, tmp_path, "first", "--state-dir", str(state))
    code, _, err = batchdrop(first, capsys, monkeypatch, "submit", str(SAMPLE))
    assert code == 0, err
    # A second `local up` on the same directory while the first runs is refused in one line
    second = subprocess.run(
        [str(BATCHDROP), "local", "up", "--state-dir", str(state), "--env-file", str(tmp_path / "second.env")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**user_shell(), "BATCHDROP_HOME": str(tmp_path / "home")},
        check=False,
    )
    assert second.returncode == 2
    assert second.stderr.splitlines()[-1] == (
        f"batchdrop: error: --state-dir {state} is in use by another `batchdrop local up` "
        f"(pid {first.process.pid}); stop it first"
    )
    assert first.ctrl_c() == 0
    # A start without --state-dir has none of what the first one held
    third = start(started, tmp_path, "third")
    assert batchdrop(third, capsys, monkeypatch, "status") == (0, "no jobs yet\n", "")
    assert third.ctrl_c() == 0


# --------------------------------------------------------------------------- in this process


def test_a_job_of_three_shards_stopped_mid_way_sends_each_shard_once_after_the_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    source = tmp_path / "requests.jsonl"
    write_requests(source, REQUESTS)
    body = source.read_bytes()
    # Given a job of three shards, stopped once the first of its batches is created
    with LocalStack(state_dir=state, latency=LATENCY) as stack, pipeline_settings(stack, shard_max_requests=100):
        runner = LocalRunner(stack, tick_seconds=0.5, poll_seconds=0.1)
        job = upload_bytes(stack, "inbox/three-shards.jsonl", body)
        assert runner.drain(timeout=20, idle=lambda: stack.emulator_control().counters()["batches"] >= 1)
        assert not finished(stack, job)
    # When the stack starts again from the same directory
    with LocalStack(state_dir=state, latency=LATENCY) as stack, pipeline_settings(stack, shard_max_requests=100):
        assert stack.restored
        runner = LocalRunner(stack, tick_seconds=0.5, poll_seconds=0.1)
        # Then the job ends with each request once, and the provider saw each shard's batch once
        assert runner.drain(timeout=30, idle=lambda: finished(stack, job) and not stack.open_batch_count())
        assert_each_request_once(stack, read_manifest(stack, job), input_ids(body))
        counters = stack.emulator_control().counters()
        assert (counters["batches"], counters["requests_received"], counters["duplicate_custom_ids"]) == (3, 300, 0)


def test_an_upload_whose_event_was_lost_at_the_stop_is_started_by_the_sweeper_after_the_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    source = tmp_path / "requests.jsonl"
    write_requests(source, 20)
    body = source.read_bytes()
    # Given an upload whose event never reached the submit function before the stop
    with LocalStack(state_dir=state, latency=0.2) as stack:
        runner = LocalRunner(stack, lose_events=lambda _key, _version: True)
        job = upload_bytes(stack, "inbox/lost.jsonl", body)
        assert runner.deliver_pending() == 0
        assert [key for key, _version in runner.lost_events] == ["inbox/lost.jsonl"]
    # When the stack starts again: the upload is there, and the runner does not deliver it
    with (
        LocalStack(state_dir=state, latency=0.2) as stack,
        pipeline_settings(stack, timings=Timings(sweep_min_age=0.0)),
    ):
        runner = LocalRunner(stack, tick_seconds=0.5, poll_seconds=0.1)
        assert runner.deliver_pending() == 0
        assert not runner.invocations_of(SUBMIT)
        # Then the sweeper starts it, and it ends with each request once
        assert runner.sweep().result["started"] == [job]
        assert runner.drain(timeout=20, idle=lambda: finished(stack, job))
        assert_each_request_once(stack, read_manifest(stack, job), input_ids(body))
        assert stack.emulator_control().counters()["batches"] == 1
