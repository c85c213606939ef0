"""The local stack's env file: one place, read back as written, and a stale one told apart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from batchdrop_local import envfile

pytestmark = pytest.mark.unit


def test_the_default_place_follows_batchdrop_home_then_xdg_then_home(tmp_path):
    assert envfile.default_path({"BATCHDROP_HOME": str(tmp_path / "b")}) == tmp_path / "b" / "local.env"
    assert envfile.default_path({"XDG_STATE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "batchdrop" / "local.env"
    home = envfile.default_path({})
    assert home.parts[-4:] == (".local", "state", "batchdrop", "local.env")


def test_a_written_file_reads_back_and_sources_in_a_shell(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "ODD": "a b 'c' $d"}
    path = envfile.write(tmp_path / "deep" / "local.env", env, pid=123, started_at="2026-12-06T19:00:00+00:00")
    read = envfile.read(path)
    assert read["ODD"] == "a b 'c' $d"
    assert read[envfile.PID_VARIABLE] == "123"
    assert read[envfile.FILE_VARIABLE] == str(path)
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . "{path}"; set +a; printf %s "$ODD"'], capture_output=True, text=True, check=True
    )
    assert shell.stdout == "a b 'c' $d"
    assert not list(path.parent.glob(".*.tmp"))


def test_a_line_that_is_not_name_value_is_named(tmp_path):
    path = tmp_path / "local.env"
    path.write_text("# comment\n\nA=1\nnot a line\n")
    with pytest.raises(ValueError, match=r"line 4: not NAME=value"):
        envfile.read(path)


def test_a_file_whose_writer_has_ended_is_stale():
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = ended.stdout.strip()
    env = {envfile.PID_VARIABLE: pid, envfile.FILE_VARIABLE: "/x/local.env", envfile.STARTED_VARIABLE: "t"}
    assert envfile.stale_reason(env) == (
        f"/x/local.env is stale: the local stack that wrote it (pid {pid}, started t) has stopped"
    )


def test_a_live_writer_with_nothing_listening_is_stale_and_a_listening_one_is_not(monkeypatch):
    env = {envfile.PID_VARIABLE: str(os.getpid()), "AWS_ENDPOINT_URL": "http://127.0.0.1:5"}
    monkeypatch.setattr(envfile, "_listening", lambda url: url != "http://127.0.0.1:5")
    assert envfile.stale_reason(env) == (
        "the env file is stale: nothing listens at http://127.0.0.1:5, "
        "the local stack it names (started an earlier run)"
    )
    assert envfile.stale_reason({**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:6"}) is None
