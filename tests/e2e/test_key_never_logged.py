"""The API key is written nowhere, even at DEBUG: a whole job runs on the local stack with the
root logger, the functions' Logger (POWERTOOLS_LOG_LEVEL) and every library logger asked for
DEBUG, and the key the stack's secret holds appears in no log record, stdout or stderr. At
DEBUG botocore logs each response body, GetSecretValue's with the key in it: the libraries'
loggers are held at WARNING (batchdrop.observability.quiet_libraries)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchdrop.observability import LIBRARY_LOGGERS, logger
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import run_to_the_end, upload

# A key no other output would hold by chance; the emulator accepts only this one.
API_KEY = "sk-ant-api03-keyNeverLogged-7Q2v9XwZ4mL8pR1sT6uY3bN5cD0fG-AA"

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"api_key": API_KEY, "latency": 0.05}
RUNNER = {"tick_seconds": 0.2, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True


class Everything(logging.Handler):
    """Keeps every record it is handed, formatted with its arguments and any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{self.format(record)} {record.__dict__}")


@pytest.fixture
def all_at_debug(monkeypatch: pytest.MonkeyPatch) -> Iterator[Everything]:
    """Root and function loggers at DEBUG, libraries asked for DEBUG too (as a debugging
    operator might), and a handler on the root and on every logger that does not pass its
    records to the root (the functions' Logger does not)."""
    # Powertools reads POWERTOOLS_LOG_LEVEL when the Logger is made (at import): set both.
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    capture = Everything()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", logger.name, *LIBRARY_LOGGERS)}
    root.setLevel(logging.DEBUG)
    logger.setLevel(logging.DEBUG)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    isolated = [
        item
        for item in logging.root.manager.loggerDict.values()
        if isinstance(item, logging.Logger) and not item.propagate
    ]
    for target in (root, *isolated):
        target.addHandler(capture)
    try:
        yield capture
    finally:
        for target in (root, *isolated):
            target.removeHandler(capture)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_a_job_at_debug_writes_the_key_nowhere(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, all_at_debug: Everything, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a file dropped into inbox/, with every logger at DEBUG
    job_id = upload(stack, tmp_path, "inbox/debug.jsonl", requests=3)

    # When the job runs to its end
    manifest = run_to_the_end(stack, runner, job_id)

    # Then it completed (so the functions read the key and used it), a lot was logged, and
    # the key is in none of it
    assert manifest["status"] == "COMPLETED"
    assert stack.emulator_control().counters()["creates_accepted"] == 1
    records = "\n".join(all_at_debug.lines)
    assert f"'job_id': '{job_id}'" in records  # the functions' own records were captured
    assert any(" DEBUG " in line for line in all_at_debug.lines)
    out, err = capfd.readouterr()
    for name, text in (("log records", records), ("stdout", out), ("stderr", err)):
        assert API_KEY not in text, f"the API key is in the {name}"
