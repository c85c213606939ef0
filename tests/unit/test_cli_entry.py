"""The `batchdrop` console script: a command that ran servers leaves without the
interpreter's teardown, once what it wrote is flushed; any other exits as usual."""

from __future__ import annotations

import sys

import pytest

from batchdrop_local import cli

pytestmark = pytest.mark.unit


class _Exited(Exception):
    def __init__(self, how: str, code: int) -> None:
        super().__init__(how, code)
        self.how = how
        self.code = code


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> None:
    def fast(code: int) -> None:
        raise _Exited("os._exit", code)

    monkeypatch.setattr(cli.os, "_exit", fast)


@pytest.mark.parametrize(("argv", "how"), [(["local", "up"], "os._exit"), (["status"], "sys.exit")])
def test_only_server_commands_skip_the_teardown(
    exits: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], how: str
) -> None:
    def ran() -> int:
        print("what the command printed", end="")
        return 3

    monkeypatch.setattr(cli, "main", ran)
    monkeypatch.setattr(sys, "argv", ["batchdrop", *argv])
    with pytest.raises((_Exited, SystemExit)) as ended:
        cli.entry()
    if how == "os._exit":
        assert isinstance(ended.value, _Exited)
        assert ended.value.code == 3
    else:
        assert isinstance(ended.value, SystemExit)
        assert ended.value.code == 3
    assert capsys.readouterr().out == "what the command printed"
