"""The `batchdrop` command's errors and exit codes, as a user meets them: one line on standard
error (never a traceback unless --debug), and the exit code scripts rely on (0 success, 1 the job
ended FAILED or CANCELED, 2 usage or input error, 3 the target could not be reached, 4 gave up
waiting, 130 Ctrl-C). Most commands run in this process through `main`, in the shell of a user
who loaded the local stack's env file; the closed pipe, Ctrl-C and an unreadable file run the
installed `batchdrop` in a process of its own, as a terminal would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest

from batchdrop_local import envfile
from batchdrop_local.cli import main
from batchdrop_local.emulator.control import EmulatorControl
from tests.e2e.support import env_file_variables

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
BATCHDROP = Path(sys.executable).with_name("batchdrop")  # the console script the venv installs
UNKNOWN_JOB = "j" + "0" * 24
UPLOADED = re.compile(r"uploaded s3://(?P<bucket>[^/]+)/(?P<key>\S+) \(version (?P<version>[^)]+)\)")
JOB_LINE = re.compile(r"^job (?P<job_id>j[0-9a-f]{24}): follow it", re.MULTILINE)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def local_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`batchdrop local up` in a process of its own, as a user starts it, so that nothing but the
    command under test writes to this process's output. Yields the env file it wrote."""
    directory = tmp_path_factory.mktemp("local-up")
    # The env file goes to its one place, $BATCHDROP_HOME/local.env: here, never the real home.
    env_file, log_file = directory / "local.env", directory / "local-up.log"
    command = [str(BATCHDROP), "local", "up", "--latency", "0.5", "--tick", "0.5", "--sweep", "0"]
    environ = {**os.environ, "BATCHDROP_HOME": str(directory)}
    with (
        log_file.open("w") as log,
        subprocess.Popen(command, stdout=log, stderr=log, env=environ) as up,
    ):
        try:
            deadline = time.monotonic() + 120
            while "# watching" not in log_file.read_text():
                assert up.poll() is None, f"batchdrop local up ended: {log_file.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "batchdrop local up did not start in 120 s"
                time.sleep(0.1)
            yield env_file
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.kill()


@pytest.fixture
def user_env(local_up: Path) -> Iterator[dict[str, str]]:
    """The shell of a user who loaded the env file `batchdrop local up` wrote. Each command a
    user types is a new process: boto3's default session (and the credentials it caches) is
    made afresh for each test."""
    variables = env_file_variables(local_up)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        patch.setattr(boto3, "DEFAULT_SESSION", None)
        yield variables


@pytest.fixture(autouse=True)
def batchdrop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """batchdrop's own directory for this test (and the commands it runs as processes): the
    real one is never read."""
    home = tmp_path / "batchdrop-home"
    monkeypatch.setenv("BATCHDROP_HOME", str(home))
    return home


def by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell whose variables were set by hand rather than from an env file: nothing names the
    local stack's process, so a client cannot tell it stale before calling the endpoint."""
    for name in ("BATCHDROP_LOCAL_PID", "BATCHDROP_LOCAL_STARTED_AT", "BATCHDROP_ENV_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def full_queue(user_env: dict[str, str]) -> Iterator[None]:
    """The provider's queue is full: every create is refused, so a job stays open."""
    control = EmulatorControl(user_env["ANTHROPIC_BASE_URL"])
    control.set_faults({"queue_limit": 0})
    yield
    control.set_faults({})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`batchdrop ARGV` as typed: its exit code, standard output and standard error."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    """Standard error, which must be exactly one line and no traceback."""
    assert "Traceback" not in err
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def job_of(out: str) -> str:
    found = JOB_LINE.search(out)
    assert found, out
    return found["job_id"]


def stack_not_running(port: int) -> str:
    return (
        f"batchdrop: nothing listens at http://127.0.0.1:{port} (AWS_ENDPOINT_URL): the local stack is not "
        "running, or the env file is from an earlier run; start it with `batchdrop local up` and load the env "
        "file it writes"
    )


# --------------------------------------------------------------------------- 3: the target cannot be reached


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", UNKNOWN_JOB], ["submit", str(SAMPLE)], ["results", UNKNOWN_JOB], ["cancel", UNKNOWN_JOB]],
    ids=lambda argv: " ".join(argv[:1]) + (" JOB" if UNKNOWN_JOB in argv else ""),
)
def test_a_stack_that_is_not_running_is_one_line_and_exit_3(
    user_env: dict[str, str],
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    by_hand(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")

    code, out, err = run(capsys, *argv)

    assert (code, out) == (3, "")
    assert one_line(err) == stack_not_running(closed_port)


def test_a_stale_env_file_naming_a_stopped_stack_is_exit_3(
    local_up: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the env file of an earlier `batchdrop local up`, whose moto has gone away
    variables = env_file_variables(local_up)
    variables["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port}"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    # When the user asks for the jobs, then the line says the file is stale, before any AWS call
    code, _, err = run(capsys, "status")
    assert code == 3
    assert one_line(err) == (
        f"batchdrop: {local_up} is stale: nothing listens at http://127.0.0.1:{closed_port}, the local stack it "
        f"names (started {variables['BATCHDROP_LOCAL_STARTED_AT']}); start it again with `batchdrop local up`"
    )


def test_an_env_file_found_on_its_own_whose_stack_has_stopped_is_exit_3(
    local_up: Path, batchdrop_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a shell that loaded nothing, and in the default place an env file whose writer has ended
    for name in env_file_variables(local_up):
        monkeypatch.delenv(name, raising=False)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = ended.stdout.strip()
    stale = batchdrop_home / "local.env"
    stale.parent.mkdir(parents=True)
    lines = local_up.read_text().splitlines()
    stale.write_text(
        "".join(
            f"BATCHDROP_LOCAL_PID={pid}\n" if line.startswith("BATCHDROP_LOCAL_PID=") else f"{line}\n"
            for line in lines
            if not line.startswith("BATCHDROP_ENV_FILE=")
        )
        + f"BATCHDROP_ENV_FILE={stale}\n"
    )
    started = env_file_variables(stale)["BATCHDROP_LOCAL_STARTED_AT"]

    # When the user types any command, Then one line says so and how to go on
    for argv in (["status"], ["results", UNKNOWN_JOB], ["cancel", UNKNOWN_JOB], ["submit", str(SAMPLE)]):
        code, out, err = run(capsys, *argv)
        assert (argv, code, out) == (argv, 3, "")
        assert one_line(err) == (
            f"batchdrop: {stale} is stale: the local stack that wrote it (pid {pid}, started {started}) has "
            "stopped; start it again with `batchdrop local up`"
        )


def test_a_read_timeout_is_one_line_and_exit_3(
    user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an endpoint that takes connections and never answers, and one try of half a second
    import botocore.config

    by_hand(monkeypatch)
    monkeypatch.setitem(botocore.config.Config.OPTION_DEFAULTS, "read_timeout", 0.5)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")

        code, out, err = run(capsys, "status")

    assert (code, out) == (3, "")
    assert one_line(err) == (
        f"batchdrop: no answer from http://127.0.0.1:{port} in time (read timeout): the local stack is busy or "
        "stuck; try again, or restart it with `batchdrop local up`"
    )


def test_env_names_of_a_stack_that_no_longer_exists_are_exit_3(
    user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given names from an earlier local stack, while another one runs at the same endpoint
    monkeypatch.setenv("BATCHDROP_BUCKET", "batchdrop-gone-bucket")
    monkeypatch.setenv("BATCHDROP_TABLE", "batchdrop-gone-table")
    endpoint = user_env["AWS_ENDPOINT_URL"]
    earlier = "; is the env file from an earlier `batchdrop local up`? load the one the running stack wrote"

    # Then status names the table and submit the bucket that do not exist
    code, _, err = run(capsys, "status")
    assert code == 3
    assert one_line(err) == f"batchdrop: table batchdrop-gone-table does not exist at {endpoint}{earlier}"

    code, _, err = run(capsys, "submit", str(SAMPLE))
    assert code == 3
    assert one_line(err) == f"batchdrop: bucket batchdrop-gone-bucket does not exist at {endpoint}{earlier}"


def test_a_missing_bucket_or_table_alone_is_exit_3(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = user_env["AWS_ENDPOINT_URL"]
    earlier = "; is the env file from an earlier `batchdrop local up`? load the one the running stack wrote"

    code, _, err = run(capsys, "submit", str(SAMPLE), "--bucket", "no-such-bucket")
    assert code == 3
    assert one_line(err) == f"batchdrop: bucket no-such-bucket does not exist at {endpoint}{earlier}"

    code, _, err = run(capsys, "status", "--table", "no-such-table")
    assert code == 3
    assert one_line(err) == f"batchdrop: table no-such-table does not exist at {endpoint}{earlier}"


def test_an_unknown_stack_is_exit_3(user_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--stack", "no-such-stack")

    assert (code, out) == (3, "")
    assert one_line(err) == (
        f"batchdrop: no stack no-such-stack in region {user_env['AWS_DEFAULT_REGION']} at "
        f"{user_env['AWS_ENDPOINT_URL']}: check the name and AWS_DEFAULT_REGION"
    )


def test_no_credentials_is_exit_3(
    user_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a shell with no AWS credentials anywhere
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    code, out, err = run(capsys, "status")

    assert (code, out) == (3, "")
    assert one_line(err) == (
        "batchdrop: no AWS credentials: for the local stack, load its env file "
        f"(`set -a; . {envfile.default_path()}; set +a`); for AWS, configure them (`aws configure`, AWS_PROFILE)"
    )


# --------------------------------------------------------------------------- 2: usage and input errors


def test_an_unknown_job_id_gets_the_same_answer_from_status_results_and_cancel(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    answers = {command: run(capsys, command, UNKNOWN_JOB) for command in ("status", "results", "cancel")}

    expected = (
        f"batchdrop: no job {UNKNOWN_JOB} in table {user_env['BATCHDROP_TABLE']} (`batchdrop status` lists the jobs)"
    )
    for command, (code, out, err) in answers.items():
        assert (command, code, out) == (command, 2, "")
        assert one_line(err) == expected
    listing = boto3.client("s3").list_objects_v2(Bucket=user_env["BATCHDROP_BUCKET"], Prefix="cancel/")
    assert listing["KeyCount"] == 0


def test_a_directory_given_as_the_file_is_exit_2(user_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    directory = SAMPLE.parent

    code, out, err = run(capsys, "submit", str(directory))

    assert (code, out) == (2, "")
    assert one_line(err) == f"batchdrop: {directory} is a directory: give a .jsonl or .jsonl.gz file of requests"


def test_a_missing_file_is_exit_2(user_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"

    code, _, err = run(capsys, "submit", str(missing))

    assert code == 2
    assert one_line(err) == f"batchdrop: {missing}: no such file"


def test_an_unreadable_file_is_exit_2_and_uploads_nothing(user_env: dict[str, str], tmp_path: Path) -> None:
    # Given a file the user may not read (root reads any file: then batchdrop runs without the
    # capabilities that let it, as any other user would)
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(SAMPLE.read_bytes())
    secret.chmod(0)
    as_a_user: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file, and setpriv (util-linux) is not here to drop that power")
        as_a_user = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]

    finished = subprocess.run(
        [*as_a_user, str(BATCHDROP), "submit", str(secret), "--key", "inbox/unreadable/secret.jsonl"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
        check=False,
    )

    assert (finished.returncode, finished.stdout) == (2, "")
    assert one_line(finished.stderr) == f"batchdrop: {secret}: Permission denied"
    listing = boto3.client("s3").list_objects_v2(Bucket=user_env["BATCHDROP_BUCKET"], Prefix="inbox/unreadable/")
    assert listing["KeyCount"] == 0


@pytest.mark.parametrize("command", ["status", "results", "cancel"])
@pytest.mark.parametrize("bad_id", ["not-a-job", "j123", "J" + "a" * 24, "../j" + "a" * 24])
def test_what_is_not_a_job_id_is_refused_alike_by_status_results_and_cancel(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str], command: str, bad_id: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, bad_id])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"batchdrop: error: {bad_id!r} is not a job id: a job id is 'j' and 24 lowercase hex characters"
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--limit", "3"], "--limit is"), (["--status", "running"], "--status is"),
     (["--key", "inbox/", "--since", "2h"], "--key, --since are")],
)  # fmt: skip
def test_status_of_one_job_refuses_the_lists_filters(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", UNKNOWN_JOB, *flags])

    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"batchdrop: error: {named} for the list of jobs, not one job: drop {'them' if ', ' in named else 'it'} "
        "or the job id"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--watch"], "--watch follows one job: give its id (`batchdrop status JOB_ID --watch`)"),
        (
            ["status", UNKNOWN_JOB, "--watch", "--json"],
            "--watch shows progress as it goes; --json prints one job once: use one of them",
        ),
        (["status", UNKNOWN_JOB, "--timeout", "5"], "--timeout is how long --watch waits: add --watch"),
    ],
    ids=["watch-without-job", "watch-and-json", "timeout-without-watch"],
)
def test_status_watch_is_refused_where_it_cannot_apply(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"batchdrop: error: {message}"


def test_argparse_errors_stay_exit_2(user_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", "--no-such-flag"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# --------------------------------------------------------------------------- submit --wait: 0, 1, 4, Ctrl-C


def test_submit_wait_for_a_completed_job_is_exit_0(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "submit", str(SAMPLE), "--key", "inbox/exit-0/reviews.jsonl", "--wait", "--timeout", "60"
    )

    assert code == 0, err
    assert f"job {job_of(out)}  COMPLETED  source inbox/exit-0/reviews.jsonl" in out
    assert err == ""


def test_submit_wait_for_a_failed_job_is_exit_1(
    user_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file with no request in it: the job fails at intake
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")

    code, out, err = run(capsys, "submit", str(blank), "--key", "inbox/exit-1/blank.jsonl", "--wait", "--timeout", "60")

    assert code == 1, err
    assert f"job {job_of(out)}  FAILED  source inbox/exit-1/blank.jsonl" in out
    assert "reason: the file holds no request" in out
    assert err == ""


@pytest.mark.usefixtures("full_queue")
def test_submit_wait_that_times_out_is_exit_4_and_says_the_job_goes_on(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "submit", str(SAMPLE), "--key", "inbox/exit-4/reviews.jsonl", "--wait", "--timeout", "0.5"
    )

    job_id = job_of(out)
    assert code == 4
    assert one_line(err) == (
        f"batchdrop: gave up waiting after 0.5 s; job {job_id} goes on; follow it with `batchdrop status {job_id}`"
    )


@pytest.mark.usefixtures("full_queue")
def test_ctrl_c_while_waiting_stops_waiting_not_the_job(user_env: dict[str, str]) -> None:
    # Given `batchdrop submit --wait` following a job that cannot finish yet
    with subprocess.Popen(
        [str(BATCHDROP), "submit", str(SAMPLE), "--key", "inbox/ctrl-c/reviews.jsonl", "--wait", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    ) as waiting:
        assert waiting.stdout is not None
        printed = ""
        while " requests done " not in printed:  # the first progress line: it is waiting
            line = waiting.stdout.readline()
            assert line, f"batchdrop ended before waiting: {printed}"
            printed += line

        # When the user presses Ctrl-C
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)

    # Then it stops waiting with one line that says how to follow the job, which goes on
    job_id = job_of(printed)
    assert waiting.returncode == 130
    assert one_line(err) == (
        f"batchdrop: stopped waiting; job {job_id} goes on; follow it with `batchdrop status {job_id}`"
    )


@pytest.mark.usefixtures("full_queue")
def test_results_of_a_job_that_has_not_ended_is_exit_2(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "submit", str(SAMPLE), "--key", "inbox/not-ended/reviews.jsonl")
    assert code == 0
    job_id = job_of(out)
    deadline = time.monotonic() + 30
    while run(capsys, "status", job_id)[0] != 0:  # until the submit function has recorded the job
        assert time.monotonic() < deadline, "the job was not recorded in 30 s"
        time.sleep(0.1)

    code, out, err = run(capsys, "results", job_id)

    assert (code, out) == (2, "")
    ended = re.fullmatch(
        rf"batchdrop: job {job_id} is (?P<status>[A-Z_]+): it has no results until it ends; "
        rf"follow it with `batchdrop status {job_id}`",
        one_line(err),
    )
    assert ended, err
    assert ended["status"] not in ("COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELED")


# --------------------------------------------------------------------------- a closed pipe


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
def test_a_closed_pipe_ends_quietly_with_exit_0(user_env: dict[str, str], unbuffered: str) -> None:
    # Given a reader that has gone away, as `head -1` has once it has its line; Python buffers
    # output to a pipe (the error then comes at the end) unless PYTHONUNBUFFERED is set (then at once)
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    try:
        finished = subprocess.run(
            [str(BATCHDROP), "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)

    # Then batchdrop neither complains nor fails
    assert (finished.returncode, finished.stderr) == (0, "")


# --------------------------------------------------------------------------- --debug, --version, --help


@pytest.mark.parametrize("argv", [["--debug", "status"], ["status", "--debug"]], ids=["before", "after"])
def test_debug_shows_the_traceback_with_the_same_exit_code(
    user_env: dict[str, str],
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    by_hand(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")

    code, _, err = run(capsys, *argv)

    assert code == 3
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().splitlines()[-1].startswith("botocore.exceptions.EndpointConnectionError:")
    assert "batchdrop: nothing listens" not in err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"batchdrop {version('batchdrop')}\n"


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    codes = re.findall(r"^  (\d+) ", capsys.readouterr().out.split("exit codes:", 1)[1], re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4", "5", "70", "130"]


# --------------------------------------------------------------------------- job-id


def test_job_id_prints_the_id_the_upload_became(user_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # Given an upload and the job id submit printed for it
    code, out, _ = run(capsys, "submit", str(SAMPLE), "--key", "inbox/job-id/reviews.jsonl")
    assert code == 0
    uploaded = UPLOADED.search(out)
    assert uploaded, out

    # When the user asks for the job id of that object version
    code, printed, err = run(
        capsys, "job-id", f"s3://{uploaded['bucket']}/{uploaded['key']}", "--version-id", uploaded["version"]
    )

    # Then it is the job's id, alone on its line
    assert (code, err) == (0, "")
    assert printed == f"{job_of(out)}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["bucket/inbox/a.jsonl", "--version-id", "v1"],
            "'bucket/inbox/a.jsonl' is not an object's URI: write it s3://BUCKET/KEY",
        ),
        (["s3://bucket", "--version-id", "v1"], "'s3://bucket' is not an object's URI: write it s3://BUCKET/KEY"),
        (["s3://bucket/", "--version-id", "v1"], "'s3://bucket/' is not an object's URI: write it s3://BUCKET/KEY"),
        (
            ["s3://bucket/results/a.jsonl", "--version-id", "v1"],
            "'s3://bucket/results/a.jsonl': only keys under inbox/ start a job",
        ),
        (
            ["s3://bucket/inbox/a.jsonl"],
            "--version-id V is needed: a job is one version of an object "
            "(`batchdrop submit` prints it, as does S3's answer to the upload)",
        ),
        (
            ["s3://bucket/inbox/a.jsonl", "--version-id", "null"],
            "version id 'null' is an upload to a bucket without versioning: it never becomes a job "
            "(batchdrop's bucket is versioned)",
        ),
    ],
    ids=["no-scheme", "no-key", "empty-key", "outside-inbox", "no-version", "null-version"],
)
def test_job_id_refuses_what_cannot_be_a_job_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "job-id", *argv)

    assert (code, out) == (2, "")
    assert one_line(err) == f"batchdrop: {message}"
