"""batchdrop_client against the running local stack, as a Python user drives it, and the
progress lines `batchdrop submit --wait` and `batchdrop status --watch` show while a job runs.
Batches take a few seconds here, and the emulator's counts advance over that time, so the
progress the checker notes on each shard is seen to rise before the job ends."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic.types.messages import MessageBatchIndividualResponse

from batchdrop_client import (
    AlreadyEnded,
    Batchdrop,
    JobNotFound,
    NotFinished,
    Progress,
    StackNotRunning,
    WaitTimeout,
)
from batchdrop_local import envfile
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from batchdrop_local.synth import write_requests
from tests.e2e.support import provider_queue_full

pytestmark = pytest.mark.e2e

# This module's stack (tests/e2e/conftest.py): batches take 4 s, so progress shows (the command polls
# every second); its runner is left running in the background for the whole module as
# `batchdrop local up` runs it
STACK = {"latency": 4.0, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.3, "poll_seconds": 0.1}
REQUESTS = 40
BATCHDROP = Path(sys.executable).with_name("batchdrop")
UNKNOWN_JOB = "j" + "0" * 24
PLAIN_LINE = re.compile(
    r"(?P<status>[A-Z_]+): (?P<done>\d+)/(?P<total>\d+|\?) requests done \((?P<percent>\d+%|--%)\), "
    r"(?P<batches>no batch open|1 batch open)(?P<expiry>, expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)?"
)
NAMES = ("BATCHDROP_BUCKET", "BATCHDROP_TABLE", "BATCHDROP_ENV_FILE", "BATCHDROP_LOCAL_PID", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="module")
def running(stack: LocalStack) -> Iterator[LocalStack]:
    with LocalRunner(stack, **RUNNER):
        yield stack


@pytest.fixture
def home(running: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shell that loaded nothing, and the running stack's env file in batchdrop's default place
    (a directory of this test's: the real one is never read)."""
    home = tmp_path / "batchdrop-home"
    running.write_env_file(home / "local.env")
    monkeypatch.setenv("BATCHDROP_HOME", str(home))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def client(home: Path) -> Batchdrop:
    client = Batchdrop.from_env()
    client.poll_seconds = 0.2
    return client


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    write_requests(path, REQUESTS)
    return path


@pytest.fixture
def full_queue(running: LocalStack) -> Iterator[None]:
    """The provider's queue is full: every create is refused, so a job stays open."""
    with provider_queue_full(running):
        yield


# ---------------------------------------------------------------- the library


def test_submit_wait_results_and_download(client: Batchdrop, requests_file: Path, tmp_path: Path) -> None:
    # Given a file of 40 requests, submitted
    job = client.submit(requests_file, key="inbox/client/requests.jsonl")
    assert (job.bucket, job.key) == (client.bucket, "inbox/client/requests.jsonl")

    # When the user waits for it, with a callback
    seen: list[Progress] = []
    final = client.wait(job, timeout=60, on_progress=seen.append)

    # Then the callback saw done rise, through values between none and all, to the total
    assert final.status == "COMPLETED"
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert seen[-1].done == seen[-1].total == REQUESTS
    assert any(0 < p.done < REQUESTS for p in seen), [p.done for p in seen]
    running = [p for p in seen if p.batches_open == 1]
    assert running
    assert any(p.expires_at is not None for p in running)  # once the checker has seen the batch
    assert final.cost is not None
    assert final.counts == {"succeeded": REQUESTS, "errored": 0, "canceled": 0, "expired": 0}

    # And the results come back as the SDK's type, every request once
    responses = list(client.results(job))
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in responses)
    assert sorted(r.custom_id for r in responses) == [f"req-{i:07d}" for i in range(REQUESTS)]
    assert {r.result.type for r in responses} == {"succeeded"}

    # And download writes the manifest and the result part
    paths = client.download(job, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["manifest.json", "results-00000.jsonl"]
    assert all(p.parent == tmp_path / "out" / job.job_id for p in paths)
    assert len((tmp_path / "out" / job.job_id / "results-00000.jsonl").read_text().splitlines()) == REQUESTS


def test_jobs_lists_newest_first_with_the_filters(client: Batchdrop, requests_file: Path) -> None:
    first = client.submit(requests_file, key="inbox/client-list/a.jsonl")
    second = client.submit(requests_file, key="inbox/client-list/b.jsonl")
    for job in (first, second):
        client.wait(job, timeout=60)

    listed = client.jobs(key_prefix="inbox/client-list/")
    assert [view.job_id for view in listed] == [second.job_id, first.job_id]
    assert listed.more == 0
    assert all(view.batches is None for view in listed)

    newest = client.jobs(key_prefix="inbox/client-list/", status="completed", since="1h", limit=1)
    assert [view.job_id for view in newest] == [second.job_id]
    assert newest.more == 1
    assert list(client.jobs(key_prefix="inbox/client-list/", status=["FAILED", "CANCELED"])) == []


def test_an_unknown_job_is_the_same_error_everywhere(client: Batchdrop) -> None:
    expected = f"no job {UNKNOWN_JOB} in table {client.table} (`batchdrop status` lists the jobs)"
    for call in (client.status, client.manifest, client.cancel, lambda job: list(client.results(job))):
        with pytest.raises(JobNotFound) as raised:
            call(UNKNOWN_JOB)
        assert str(raised.value) == expected


@pytest.mark.usefixtures("full_queue")
def test_cancel_ends_an_open_job_canceled(client: Batchdrop, requests_file: Path) -> None:
    # Given a job that cannot finish while the provider's queue is full
    job = client.submit(requests_file, key="inbox/client-cancel/requests.jsonl")
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait(job, timeout=1.5)
    assert str(timed_out.value) == (
        f"gave up waiting after 1.5 s; job {job.job_id} goes on; follow it with `batchdrop status {job.job_id}`"
    )
    with pytest.raises(NotFinished):
        client.manifest(job)

    # When the user cancels it, Then it ends CANCELED, every request canceled
    request = client.cancel(job)
    assert request.key == f"cancel/{job.job_id}"
    final = client.wait(job, timeout=30)
    assert final.status == "CANCELED"
    assert final.counts["canceled"] == REQUESTS

    # And a second cancel is refused
    with pytest.raises(AlreadyEnded, match=f"job {job.job_id} already ended CANCELED: nothing to cancel"):
        client.cancel(job)


@pytest.mark.usefixtures("full_queue")
def test_status_watch_of_a_job_that_ends_canceled_is_exit_1(
    home: Path, client: Batchdrop, requests_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.submit(requests_file, key="inbox/cli-watch-canceled/requests.jsonl")
    with pytest.raises(WaitTimeout):
        client.wait(job, timeout=1)  # recorded, and held open by the full queue
    client.cancel(job)

    code = main(["status", job.job_id, "--watch", "--timeout", "30"])
    out = capsys.readouterr().out

    assert code == 1
    assert f"job {job.job_id}  CANCELED  source inbox/cli-watch-canceled/requests.jsonl\n" in out
    assert f"  0 succeeded, 0 errored, {REQUESTS} canceled, 0 expired\n" in out


def test_an_env_file_left_by_a_stopped_stack_is_refused(running: LocalStack, home: Path) -> None:
    # Given the default env file, written by a process that has since ended
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    path = envfile.write(home / "local.env", running.env, pid=pid, started_at="2026-12-06T19:00:00+00:00")

    with pytest.raises(StackNotRunning) as raised:
        Batchdrop.from_env()

    assert str(raised.value) == (
        f"{path} is stale: the local stack that wrote it (pid {pid}, started 2026-12-06T19:00:00+00:00) has "
        "stopped; start it again with `batchdrop local up`"
    )


# ---------------------------------------------------------------- the command's progress


def _progress_lines(out: str) -> list[re.Match[str]]:
    lines = [line for line in out.splitlines() if " requests done " in line]
    matches = [PLAIN_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


def test_submit_wait_prints_a_plain_line_per_change_then_the_summary(
    home: Path, requests_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", str(requests_file), "--key", "inbox/cli-wait/requests.jsonl", "--wait", "--timeout", "60"])
    out = capsys.readouterr().out

    assert code == 0
    lines = _progress_lines(out)
    assert len({m.group(0) for m in lines}) == len(lines)  # one line per change
    done = [int(m["done"]) for m in lines]
    assert done == sorted(done)
    assert any(m["status"] == "RUNNING" and 0 < int(m["done"]) < REQUESTS and m["expiry"] for m in lines), out
    assert lines[-1].group(0) == f"COMPLETED: {REQUESTS}/{REQUESTS} requests done (100%), no batch open"
    job_id = out.split("job ", 1)[1].split(":", 1)[0]
    summary = out.split(lines[-1].group(0) + "\n", 1)[1].splitlines()
    assert summary[:3] == [
        f"job {job_id}  COMPLETED  source inbox/cli-wait/requests.jsonl",
        f"  {REQUESTS} requests, 0 rejected",
        f"  {REQUESTS} succeeded, 0 errored, 0 canceled, 0 expired",
    ]
    assert re.fullmatch(
        r"  cost \$\d+\.\d{6} at the batch price \(\$\d+\.\d{6} standard; caching saved \$\d+\.\d{6};"
        r" estimated \$\d+\.\d{6}, at most \$\d+\.\d{6}\)",
        summary[3],
    )
    assert summary[4] == f"  manifest: results/{job_id}/manifest.json  (`batchdrop results {job_id}` downloads it all)"


@pytest.mark.usefixtures("full_queue")
def test_status_watch_of_a_job_that_cannot_end_gives_up_after_its_timeout(
    home: Path, client: Batchdrop, requests_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.submit(requests_file, key="inbox/cli-watch-timeout/requests.jsonl")
    deadline = time.monotonic() + 30
    while not list(client.jobs(key_prefix="inbox/cli-watch-timeout/")):
        assert time.monotonic() < deadline, "the job was not recorded in 30 s"
        time.sleep(0.1)

    code = main(["status", job.job_id, "--watch", "--timeout", "1"])
    captured = capsys.readouterr()

    assert code == 4
    assert [m.group(0) for m in _progress_lines(captured.out)][-1].startswith("SUBMITTING: 0/40 requests done (0%)")
    assert captured.err == (
        f"batchdrop: gave up waiting after 1 s; job {job.job_id} goes on; follow it with "
        f"`batchdrop status {job.job_id}`\n"
    )
    client.cancel(job)  # leave no job open for the module's later tests


def test_status_watch_on_a_terminal_redraws_one_line(home: Path, client: Batchdrop, requests_file: Path) -> None:
    # Given a running job, and `batchdrop status JOB --watch` typed in a terminal (a pty)
    job = client.submit(requests_file, key="inbox/cli-watch-tty/requests.jsonl")
    deadline = time.monotonic() + 30
    while not list(client.jobs(key_prefix="inbox/cli-watch-tty/")):  # its S3 event made the job
        assert time.monotonic() < deadline, "the job was not recorded in 30 s"
        time.sleep(0.1)
    env = {**os.environ, "COLUMNS": "120"}
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen(
            [str(BATCHDROP), "status", job.job_id, "--watch"],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
        ) as watching:
            os.close(follower)
            follower = -1
            shown = _read_until_exit(leader, watching)
            _, err = watching.communicate(timeout=30)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)

    # Then one line was redrawn in place, with a bar, and the summary followed on a line of its own
    assert (watching.returncode, err) == (0, b"")
    text = shown.decode()
    redraws = [part.removesuffix("\x1b[K") for part in text.split("\r") if part.endswith("\x1b[K")]
    assert len(redraws) > 2
    # (While the file is still being read, before its shards are recorded, the total is not
    # known yet: "0/?  --%".)
    bar = re.compile(r"(?P<status>[A-Z_]+)  \[[#.]{24}\]  (?P<done>\d+)/(40|\?) +(\d+|--)%  \S+( \S+)?  .*")
    assert all(bar.fullmatch(line) for line in redraws), redraws
    assert any(0 < int(m["done"]) < REQUESTS for m in map(bar.fullmatch, redraws) if m), redraws
    assert re.search(rf"COMPLETED  \[#{{24}}\]  40/40  100%  .*\x1b\[K\r?\njob {job.job_id}  COMPLETED", text), text


def _read_until_exit(leader: int, process: subprocess.Popen[bytes]) -> bytes:
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command has exited
                break
            shown += chunk
        elif process.poll() is not None:
            break
    return shown
