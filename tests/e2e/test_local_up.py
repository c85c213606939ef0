"""`batchdrop local up` as a user runs it, in a process of its own: one line per event on
standard output, JSON logs only with --verbose, the env file in its one place (refused while
a stack runs, replaced when stale, removed on a clean stop), and `--anthropic-api` with an
emulator standing in for Anthropic's API, whose key never shows. Every test sets
BATCHDROP_HOME to a directory of its own: the real home is never touched."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from batchdrop_local import envfile
from batchdrop_local.cli import main
from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.server import Emulator
from batchdrop_local.emulator.settings import EmulatorSettings

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
BATCHDROP = Path(sys.executable).with_name("batchdrop")  # the console script the venv installs
FAST = ["--latency", "0.3", "--tick", "0.3", "--sweep", "0"]
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")
PROGRESS = re.compile(r"shard \d+: batch \S+ \d+/\d+ done")  # told while a batch is open, if the checker notes it
REAL_KEY = "sk-ant-test-" + "k3y" * 8  # what the stand-in for Anthropic's API accepts, and nothing else


class LocalUp:
    """One `batchdrop local up` process, its output in files under `directory`."""

    def __init__(self, directory: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.home = directory / "home"
        self.out, self.err = directory / "up.out", directory / "up.err"
        self.environ = {**os.environ, envfile.HOME_VARIABLE: str(self.home), **(env or {})}
        self.command = [str(BATCHDROP), "local", "up", *FAST, *flags]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalUp:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=err, env=self.environ)
        self.wait_for("# watching", timeout=60)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def wait_for(self, text: str, timeout: float = 25) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while text not in self.stdout():
            assert self.process.poll() is None, f"local up ended:\n{self.stdout()}\n{self.err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.stdout()}"
            time.sleep(0.1)

    def submit(self, path: Path) -> str:
        """`batchdrop submit FILE` in a shell that loaded the env file; the job id."""
        variables = envfile.read(envfile.default_path({envfile.HOME_VARIABLE: str(self.home)}))
        done = subprocess.run(
            [str(BATCHDROP), "submit", str(path)],
            env={**self.environ, **variables},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        match = re.search(r"^job (j[0-9a-f]{24}): follow it", done.stdout, re.MULTILINE)
        assert match, done.stdout
        return match.group(1)

    def narration(self) -> list[str]:
        """The narrated lines, their time stamps and progress lines taken off."""
        lines = [line for line in self.stdout().splitlines() if STAMP.match(line)]
        return [STAMP.sub("", line) for line in lines if not PROGRESS.search(line)]


def request_file(directory: Path, good: int, bad_line: bool) -> Path:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:good]
    path = directory / f"requests-{good}.jsonl"
    path.write_text("\n".join([*lines, *(["this is not JSON"] if bad_line else [])]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def quiet_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
    """`batchdrop local up` without --verbose, for the whole module."""
    with LocalUp(tmp_path_factory.mktemp("quiet")) as up:
        yield up


def test_one_line_per_event_in_order_and_no_json(quiet_up: LocalUp, tmp_path: Path) -> None:
    # Given a provider whose every request errors transiently, so each one is retried
    variables = envfile.read(envfile.default_path({envfile.HOME_VARIABLE: str(quiet_up.home)}))
    control = EmulatorControl(variables["ANTHROPIC_BASE_URL"])
    control.set_faults({"errored": {"api_error": 1.0}})
    try:
        # When a file of two requests and a line that is not JSON is submitted
        source = request_file(tmp_path, good=2, bad_line=True)
        job = quiet_up.submit(source)
        quiet_up.wait_for(f"job {job} COMPLETED_WITH_ERRORS")
    finally:
        control.set_faults({})

    # Then local up told each step once, in order
    told = [line for line in quiet_up.narration() if job in line]
    batches = [m.group(1) for line in told if (m := re.search(r"batch (\S+) created", line))]
    assert len(batches) == 3, told
    version = re.search(r"\(version (\S+)\)", told[0])
    assert version, told
    retried = f"job {job} shard 0: 2 requests retried, attempt {{}} of 3: batch {{}} ended with 2 errored"
    assert told[0] == f"inbox/{source.name} (version {version.group(1)}) → job {job}"
    assert told[1] == f"job {job}: 2 requests in 1 shard, 1 line rejected"
    assert told[2] == f"job {job} shard 0: batch {batches[0]} created (2 requests)"
    assert told[3] == retried.format(2, batches[0])
    assert told[4] == f"job {job} shard 0: batch {batches[1]} created (2 requests, attempt 2)"
    assert told[5] == retried.format(3, batches[1])
    assert told[6] == f"job {job} shard 0: batch {batches[2]} created (2 requests, attempt 3)"
    assert told[7] == f"job {job} shard 0: results written (2 errored); job 2/2 requests done"
    assert re.fullmatch(
        rf"job {job} COMPLETED_WITH_ERRORS: 2 requests, 2 errored, 1 rejected; cost \$[0-9.]+ "
        rf"\(results/{job}/manifest.json\)",
        told[8],
    ), told[8]
    assert len(told) == 9, told
    # And no JSON log or metrics line reached the terminal
    assert not [line for line in quiet_up.stdout().splitlines() if line.startswith("{")]
    assert "{" not in quiet_up.err.read_text(encoding="utf-8")


def test_a_second_stack_is_refused_while_one_runs(
    quiet_up: LocalUp, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the env file of the running stack in its one place
    monkeypatch.setenv(envfile.HOME_VARIABLE, str(quiet_up.home))
    path = envfile.default_path()
    written = envfile.read(path)

    # When local up starts again
    code = main(["local", "up", *FAST])

    # Then it refuses in one line, naming the running stack and its env file
    assert code == 2
    assert capsys.readouterr().err == (
        f"batchdrop: a local stack is already running (pid {written[envfile.PID_VARIABLE]}, started "
        f"{written[envfile.STARTED_VARIABLE]}), its env file {path}; stop it or pass --env-file\n"
    )


def test_verbose_shows_json_logs_replaces_a_stale_env_file_and_removes_its_own(tmp_path: Path) -> None:
    # Given an env file left by a stack that has stopped
    home, dead = tmp_path / "home", _dead_pid()
    stale = envfile.write(envfile.default_path({"BATCHDROP_HOME": str(home)}), {}, pid=dead, started_at="t0")
    up = LocalUp(tmp_path, "--verbose")

    # When local up --verbose starts there, and a job runs
    with up:
        job = up.submit(request_file(tmp_path, good=1, bad_line=False))
        up.wait_for(f"job {job} COMPLETED:")
        env_file_while_running = envfile.read(stale)
    code = up.stop()

    # Then it said it replaced the stale file, narrated the job once, and printed the
    # handlers' JSON logs and metrics and the HTTP access log as well
    out = up.stdout()
    assert out.splitlines()[0] == (
        f"# replacing a stale env file: {stale} is stale: the local stack that wrote it (pid {dead}, started t0) "
        "has stopped"
    )
    assert len([line for line in up.narration() if line.endswith(f"→ job {job}")]) == 1
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {log.get("service") for log in logs if "level" in log} >= {"submit", "checker"}
    assert any("_aws" in log for log in logs), "no metrics line"
    assert re.search(r'"(GET|POST|PUT) /', up.err.read_text(encoding="utf-8")), "no access log line"
    # And on a clean stop its env file is gone
    assert code == 0
    assert env_file_while_running[envfile.PID_VARIABLE] == str(up.process.pid if up.process else None)
    assert not stale.exists()


@pytest.fixture
def stand_in() -> Iterator[Emulator]:
    """An emulator standing in for Anthropic's API: it accepts REAL_KEY only."""
    settings = EmulatorSettings(host="127.0.0.1", port=0, latency=0.3, api_key=REAL_KEY)
    with Emulator(settings) as emulator:
        yield emulator


@pytest.mark.parametrize("key_from", ["environment", "file"])
def test_anthropic_api_carries_a_job_with_the_key_never_shown(
    stand_in: Emulator, tmp_path: Path, key_from: str
) -> None:
    # Given the key in ANTHROPIC_API_KEY, or in a file (and then not in the environment)
    # (with every log shown: at DEBUG, and at WARNING, which leaves out INFO; the functions
    # log nothing at DEBUG)
    environ = {"ANTHROPIC_API_KEY": REAL_KEY}
    flags = ["--anthropic-api", "--anthropic-base-url", stand_in.url, "--verbose", "--log-level", "DEBUG"]
    if key_from == "file":
        (tmp_path / "key").write_text(REAL_KEY + "\n")
        environ = {"ANTHROPIC_API_KEY": ""}
        flags[-1] = "WARNING"
        flags += ["--api-key-file", str(tmp_path / "key")]
    up = LocalUp(tmp_path, *flags, env=environ)

    # When local up --anthropic-api runs a job
    with up:
        env_file = envfile.read(envfile.default_path({"BATCHDROP_HOME": str(up.home)}))
        job = up.submit(request_file(tmp_path, good=2, bad_line=False))
        up.wait_for(f"job {job} COMPLETED:")
    assert up.stop() == 0

    # Then the stand-in made the batch, the start-up text warned of the cost, and the key
    # shows in neither output nor the env file
    out, err = up.stdout(), up.err.read_text(encoding="utf-8")
    with anthropic.Anthropic(api_key=REAL_KEY, base_url=stand_in.url) as sdk:  # closed: no socket left for the GC
        made = sdk.messages.batches.list().data
    assert [batch.request_counts.succeeded for batch in made] == [2]
    assert f"{batch_line(made[0].id)}" in out
    assert f"Anthropic's API at {stand_in.url}" in out
    assert "# WARNING: --anthropic-api: every request goes to Anthropic's API and is billed at the batch price;" in out
    assert REAL_KEY not in out + err
    levels = {json.loads(line).get("level") for line in out.splitlines() if line.startswith("{")}
    assert ("INFO" in levels) == (key_from == "environment"), levels
    assert REAL_KEY not in json.dumps(env_file)
    assert "ANTHROPIC_API_KEY" not in env_file
    assert env_file["ANTHROPIC_BASE_URL"] == stand_in.url


def test_anthropic_api_without_a_key_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(envfile.HOME_VARIABLE, str(tmp_path))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["local", "up", "--anthropic-api"]) == 2
    assert capsys.readouterr().err == (
        "batchdrop: --anthropic-api needs an API key: set ANTHROPIC_API_KEY or pass --api-key-file FILE\n"
    )
    assert not envfile.default_path().exists()


def batch_line(batch_id: str) -> str:
    return f"shard 0: batch {batch_id} created (2 requests)"


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_errors_are_one_line_each(quiet_up: LocalUp, tmp_path: Path) -> None:
    # Given a provider that refuses the next results download once
    variables = envfile.read(envfile.default_path({envfile.HOME_VARIABLE: str(quiet_up.home)}))
    control = EmulatorControl(variables["ANTHROPIC_BASE_URL"])
    control.set_faults({"http_errors": [{"endpoint": "results", "status": 400, "rate": 1.0, "times": 1}]})
    try:
        # When a job's batch ends
        job = quiet_up.submit(request_file(tmp_path, good=1, bad_line=False))
        quiet_up.wait_for(f"job {job} COMPLETED:")
    finally:
        control.set_faults({})

    # Then the checker's ERROR record, its failed invocation and the event sent to its failure
    # queue are one line each, and the next tick still finished the job
    errors = [line for line in quiet_up.narration() if line.startswith("ERROR")]
    assert len(errors) == 3, errors
    logged = re.fullmatch(
        r"ERROR checker: collecting a batch failed \(batch (\S+)\): BadRequestError: Error code: 400 - .+", errors[0]
    )
    assert logged, errors[0]
    failed = f"batchdrop.errors.CheckerItemsFailedError: 1 item(s) failed this tick: batch {logged.group(1)}"
    assert errors[1] == f"ERROR CheckerFunction invocation 1 failed: {failed}"
    assert (
        errors[2]
        == f"ERROR CheckerFunction event failed all 1 attempts, sent to batchdrop-local-CheckerFailureQueue: {failed}"
    )


def test_anthropic_api_with_an_unreadable_key_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(envfile.HOME_VARIABLE, str(tmp_path))
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.write_text("\n")
    assert main(["local", "up", "--anthropic-api", "--api-key-file", str(missing)]) == 2
    assert capsys.readouterr().err == f"batchdrop: --api-key-file {missing}: No such file or directory\n"
    assert main(["local", "up", "--anthropic-api", "--api-key-file", str(empty)]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: --api-key-file {empty}: the first line is empty, expected an Anthropic API key\n"
    )
