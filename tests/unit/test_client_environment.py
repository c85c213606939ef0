"""Where `Batchdrop.from_env` finds its bucket, table and endpoint: the process environment when
it names a stack, else the local stack's env file ($BATCHDROP_ENV_FILE or its default place),
read without changing os.environ; a file whose stack has stopped is refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchdrop_client import Batchdrop, NotConfigured, StackNotRunning
from batchdrop_client.environment import resolve
from batchdrop_local import envfile

pytestmark = pytest.mark.unit

FILE_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:PORT",
    "AWS_DEFAULT_REGION": "eu-west-3",
    "AWS_REGION": "eu-west-3",
    "AWS_ACCESS_KEY_ID": "from-file",
    "AWS_SECRET_ACCESS_KEY": "file-secret",
    "BATCHDROP_BUCKET": "file-bucket",
    "BATCHDROP_TABLE": "file-table",
}


LISTENING = "http://127.0.0.1:4566"
GONE = "http://127.0.0.1:4567"


@pytest.fixture(autouse=True)
def endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which local endpoints answer, without a socket: LISTENING does, GONE does not."""
    monkeypatch.setattr(envfile, "_listening", lambda url: url != GONE)


@pytest.fixture
def listening() -> str:
    return LISTENING


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def write_env_file(path: Path, endpoint: str, pid: int | None = None) -> Path:
    env = {**FILE_ENV, "AWS_ENDPOINT_URL": endpoint}
    return envfile.write(path, env, pid=pid or os.getpid(), started_at="2026-12-06T19:00:00+00:00")


def test_the_process_environment_wins_when_it_names_a_bucket_and_table(home: Path, listening: str) -> None:
    write_env_file(home / "local.env", listening)
    environ = {"BATCHDROP_HOME": str(home), "BATCHDROP_BUCKET": "b", "BATCHDROP_TABLE": "t"}

    resolved = resolve(environ)

    assert (resolved.env_file, resolved.env["BATCHDROP_BUCKET"]) == (None, "b")


def test_the_default_env_file_is_read_when_the_environment_names_no_stack(
    home: Path, listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_env_file(home / "local.env", listening)
    for name in [*FILE_ENV, "BATCHDROP_ENV_FILE", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHDROP_HOME", str(home))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-1")  # the file's region wins over the shell's
    before = dict(os.environ)

    client = Batchdrop.from_env()

    assert (client.bucket, client.table, client.endpoint_url) == ("file-bucket", "file-table", listening)
    credentials = client._session.get_credentials()
    assert (credentials.access_key, client._session.region_name) == ("from-file", "eu-west-3")
    assert dict(os.environ) == before
    assert resolve({"BATCHDROP_HOME": str(home)}).env_file == path


def test_batchdrop_env_file_names_another_file(tmp_path: Path, home: Path, listening: str) -> None:
    other = write_env_file(tmp_path / "elsewhere.env", listening)

    resolved = resolve({"BATCHDROP_HOME": str(home), "BATCHDROP_ENV_FILE": str(other)})

    assert resolved.env_file == other


def test_nothing_naming_a_stack_says_where_the_env_file_would_be(home: Path) -> None:
    with pytest.raises(NotConfigured) as raised:
        Batchdrop.from_env({"BATCHDROP_HOME": str(home)})

    assert str(raised.value) == (
        "no bucket or table: set BATCHDROP_BUCKET and BATCHDROP_TABLE, name a deployed stack, or start the local "
        f"stack with `batchdrop local up` (its env file, {home / 'local.env'}, is then found)"
    )


def test_an_env_file_whose_writer_has_ended_is_refused_before_any_call(home: Path, listening: str) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    path = write_env_file(home / "local.env", listening, pid=pid)

    with pytest.raises(StackNotRunning) as raised:
        Batchdrop.from_env({"BATCHDROP_HOME": str(home)})

    assert str(raised.value) == (
        f"{path} is stale: the local stack that wrote it (pid {pid}, started 2026-12-06T19:00:00+00:00) has "
        "stopped; start it again with `batchdrop local up`"
    )


def test_a_loaded_env_file_whose_endpoint_is_gone_is_refused(home: Path) -> None:
    loaded = {**FILE_ENV, "AWS_ENDPOINT_URL": GONE, "BATCHDROP_LOCAL_PID": str(os.getpid())}

    with pytest.raises(StackNotRunning) as raised:
        Batchdrop.from_env({**loaded, "BATCHDROP_HOME": str(home)})

    assert str(raised.value) == (
        f"the env file is stale: nothing listens at {GONE}, the local stack it names (started an earlier run); "
        "start it again with `batchdrop local up`"
    )


def test_names_set_by_hand_are_not_probed(home: Path) -> None:
    # A deployed stack's names, or an endpoint set by hand (no env file's marks): nothing is probed
    environ = {"BATCHDROP_BUCKET": "b", "BATCHDROP_TABLE": "t", "BATCHDROP_HOME": str(home), "AWS_ENDPOINT_URL": GONE}

    client = Batchdrop.from_env(environ)

    assert (client.bucket, client.table, client.endpoint_url) == ("b", "t", GONE)
