"""A finished job's report (results/<job_id>/report.html) on the local stack, fetched with
`batchdrop report` and rendered by headless Chromium (/usr/bin/chromium; `make browser`
installs it): the page shows the job's figures, is a real picture, loads nothing, and a
custom_id that is a script stays text."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchdrop.domain.jobs import rejected_key, report_key
from batchdrop_local.cli import main
from batchdrop_local.pipeline_settings import pipeline_settings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import (
    job_status,
    provider_queue_full,
    read,
    requests_body,
    run_to_the_end,
    source_env_file,
    upload_bytes,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack and runner (tests/e2e/conftest.py); the module runs its own runner.
STACK = {"latency": 0.3, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.3, "retry_delay_seconds": 0.1}

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_SECONDS = 90
WIDTH, HEIGHT = 1200, 2000
HOSTILE_ID = "<script>document.title='owned'</script>"
SUCCEEDED_GREEN = bytes.fromhex("2e7d32")  # domain/report.py's colour for succeeded requests


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def user_env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The shell of a user who sourced the local stack's env file."""
    env_file = tmp_path_factory.mktemp("env") / "local.env"
    stack.write_env_file(env_file)
    with pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
        yield stack


@pytest.fixture(scope="module")
def finished(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A job of 60 requests in 4 shards and 2 rejected lines (one custom_id a script), on a
    provider where most requests error or expire on each attempt (3 attempts: some do so for good), run to its end;
    its manifest."""
    control = stack.emulator_control()
    control.reset(faults=True)
    control.set_faults({"errored": {"api_error": 0.35}, "expired": 0.35})
    hostile = json.dumps({"custom_id": HOSTILE_ID, "params": {"model": "claude-haiku-4-5"}}).encode()
    body = requests_body(tmp_path_factory.mktemp("job"), 60)
    lines = body.splitlines()
    body = b"\n".join([*lines[:10], hostile, *lines[10:40], b"{not json", *lines[40:]]) + b"\n"
    try:
        with pipeline_settings(stack, shard_max_requests=15):
            runner = LocalRunner(stack, **RUNNER)  # before the upload: it hears of uploads from then on
            job_id = upload_bytes(stack, "inbox/report/requests.jsonl", body)
            manifest = run_to_the_end(stack, runner, job_id, timeout=120)
    finally:
        control.set_faults({})
    return manifest


@pytest.fixture(scope="module")
def report_file(user_env: LocalStack, finished: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report as `batchdrop report JOB --out DIR` fetches it."""
    out = tmp_path_factory.mktemp("report")
    assert main(["report", finished["job_id"], "--out", str(out)]) == 0
    return out / f"{finished['job_id']}-report.html"


def run_chromium(chromium: Path, profile: Path, *args: str) -> bytes:
    """Chromium headless, with nothing of its own reaching the network; its standard output.
    Killed (its whole process group) if it has not ended in time."""
    command = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=CHROMIUM_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not end within {CHROMIUM_SECONDS} s: killed")
    assert process.returncode == 0, f"chromium exited {process.returncode}"
    return out


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """A PNG's width, height and the colours of every 7th pixel of each row, decoded with
    zlib (8-bit RGB or RGBA, not interlaced: what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            compressed.append(chunk)
        position += 12 + length
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert (depth, interlace) == (8, 0)
    assert colour_type in (2, 6)
    size = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(compressed))
    stride = width * size
    assert len(raw) == height * (stride + 1)
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, row, previous, size)
        colours.update(bytes(row[x : x + size][:3]) for x in range(0, stride, size * 7))
        previous = row
    return width, height, colours


def _unfilter(kind: int, row: bytearray, above: bytearray, size: int) -> None:
    """Undo one row's PNG filter in place (None, Sub, Up, Average, Paeth)."""
    for i in range(len(row) if kind else 0):
        left = row[i - size] if i >= size else 0
        up_left = above[i - size] if i >= size else 0
        if kind == 1:
            row[i] = (row[i] + left) & 255
        elif kind == 2:
            row[i] = (row[i] + above[i]) & 255
        elif kind == 3:
            row[i] = (row[i] + (left + above[i]) // 2) & 255
        else:
            guess = left + above[i] - up_left
            near = min(
                (abs(guess - left), 0, left), (abs(guess - above[i]), 1, above[i]), (abs(guess - up_left), 2, up_left)
            )
            row[i] = (row[i] + near[2]) & 255


def test_the_job_ended_with_every_kind_of_line(finished: dict[str, Any], stack: LocalStack) -> None:
    # The job the other tests render: rejected lines, and requests that errored and expired for good
    counts = finished["counts"]
    assert counts["rejected"] == 2
    assert counts["requests"] == 60
    assert counts["errored"] > 0
    assert counts["expired"] > 0
    assert counts["succeeded"] > 0
    assert len(finished["batches"]) == 4
    assert finished["attempts"]["requests_retried"] > 0
    assert finished["report"] == report_key(finished["job_id"])
    assert HOSTILE_ID.encode() in read(stack, rejected_key(finished["job_id"]))


def test_the_report_command_fetches_the_page_the_checker_wrote(
    user_env: LocalStack, finished: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the user fetches the report to a file of their choosing
    path = tmp_path / "reports" / "mine.html"
    assert main(["report", finished["job_id"], "--out", str(path)]) == 0
    # Then the file is the report in the bucket, and its path is printed
    assert path.read_bytes() == read(user_env, report_key(finished["job_id"]))
    assert path.read_bytes().startswith(b"<!DOCTYPE html>")
    assert capsys.readouterr().out == f"{path}\n"
    # And a path ending in / is a directory, made if need be, that gets the job's file name
    assert main(["report", finished["job_id"], "--out", f"{tmp_path / 'new'}/"]) == 0
    made = tmp_path / "new" / f"{finished['job_id']}-report.html"
    assert made.read_bytes() == path.read_bytes()
    assert capsys.readouterr().out == f"{made}\n"


def test_the_rendered_page_shows_the_jobs_figures(
    chromium: Path, finished: dict[str, Any], report_file: Path, tmp_path: Path
) -> None:
    # When Chromium renders the report
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", report_file.resolve().as_uri()).decode()
    text = " ".join(re.sub(r"<[^>]+>", " ", dom.split("<body", 1)[1]).split())
    # Then its text holds the job, its counts, its cost and a rejected line's reason
    assert finished["job_id"] in text
    assert finished["status"] in text
    counts = finished["counts"]
    for name in ("succeeded", "errored", "expired", "canceled", "rejected"):
        assert re.search(rf"\b{name} {counts[name]}\b", text), name
    cost = finished["cost"]
    for name in ("batch_usd", "standard_usd", "saved_vs_standard_usd"):
        assert f"${cost[name]}" in text, name
    assert "params.messages: missing" in text
    assert "not valid JSON" in text
    # And the script stays text: the title is the page's own, and no script element was made
    assert "<title>batchdrop report: job " + finished["job_id"] + "</title>" in dom
    assert "&lt;script&gt;document.title='owned'&lt;/script&gt;" in dom
    assert not re.search(r"<script\b", dom)
    # And it is self-contained: nothing names anything to load
    assert not re.search(r"<script[^>]+src|<link\b|url\(\s*['\"]?https?:|<img\b", dom)


def test_the_screenshot_is_the_page_drawn(chromium: Path, report_file: Path, tmp_path: Path) -> None:
    # When Chromium takes a screenshot of the report, of the size asked
    picture = tmp_path / "report.png"
    run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={picture}",
        f"--window-size={WIDTH},{HEIGHT}",
        report_file.resolve().as_uri(),
    )
    # Then it is a PNG of that size, with the page's many colours (a blank page has one or two)
    width, height, colours = png_pixels(picture.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(colours) > 50
    # And the outcome chart's bars are drawn in their colour
    assert SUCCEEDED_GREEN in colours


def test_a_job_still_running_has_no_report_yet(
    user_env: LocalStack, finished: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job that cannot end (its batch waits for room in the provider's queue)
    runner = LocalRunner(user_env, **RUNNER)
    with provider_queue_full(user_env):
        job_id = upload_bytes(user_env, "inbox/report/open.jsonl", requests_body(tmp_path, 3))
        assert runner.drain(timeout=30, idle=lambda: job_status(user_env, job_id) not in (None, "RECEIVED"))
        status = job_status(user_env, job_id)
        # When the user asks for its report
        code = main(["report", job_id, "--out", str(tmp_path)])
    # Then they are told the job and its status, and no file is made
    assert code == 2
    assert f"job {job_id} is {status}: its report is written when it ends" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.html"))


def test_open_hands_the_file_to_the_browser(
    user_env: LocalStack,
    finished: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a browser that records what it is asked to open
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    monkeypatch.chdir(tmp_path)
    # When the user asks for the report with --open and no --out
    assert main(["report", finished["job_id"], "--open"]) == 0
    # Then it is saved in the current directory under the job's name, printed, and opened
    path = tmp_path / f"{finished['job_id']}-report.html"
    assert capsys.readouterr().out.strip() == f"{finished['job_id']}-report.html"
    assert opened == [path.resolve().as_uri()]


def test_a_job_that_failed_at_intake_has_no_report(
    user_env: LocalStack, finished: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a job whose every line was rejected: it FAILED at intake and sent nothing
    runner = LocalRunner(user_env, **RUNNER)
    job_id = upload_bytes(user_env, "inbox/report/all-bad.jsonl", b"{not json\n")
    assert runner.drain(timeout=30, idle=lambda: job_status(user_env, job_id) == "FAILED")
    # When the user asks for its report
    code = main(["report", job_id, "--out", str(tmp_path)])
    # Then they are told it has none, and why, and no file is made
    assert code == 2
    err = capsys.readouterr().err
    assert f"job {job_id} ended FAILED without a report" in err
    assert "failed at intake sent nothing" in err
    assert not list(tmp_path.glob("*.html"))
