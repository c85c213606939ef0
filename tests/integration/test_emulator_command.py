"""The `batchdrop emulator` command as a user runs it: a process that prints where it listens,
serves batches, takes its faults from flags, refuses bad flags and stops on SIGTERM."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx2
import pytest

from batchdrop_local.cli import main
from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.faults import FaultSettings
from tests.integration.emulator_support import requests_for, wait_until_ended

BATCHDROP = Path(sys.executable).with_name("batchdrop")
REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"emulator listening on (http://127\.0\.0\.1:(\d+))\n")
# The tests' responder module must be importable by the emulator process, as a user's would be.
ENV = os.environ | {"PYTHONPATH": str(REPO)}


@dataclass
class Running:
    process: subprocess.Popen[str]
    url: str


RunEmulator = Callable[..., Running]


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"the emulator printed nothing in {timeout} s")
    return process.stdout.readline()


@pytest.fixture
def run_emulator() -> Iterator[RunEmulator]:
    """Start `batchdrop emulator --port 0 FLAGS...` and wait for its listening line; every
    process started is stopped and reaped when the test ends."""
    processes: list[subprocess.Popen[str]] = []

    def run(*flags: str) -> Running:
        process = subprocess.Popen(
            [str(BATCHDROP), "emulator", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        processes.append(process)
        line = _first_line(process, timeout=30)
        match = LISTENING.fullmatch(line)
        assert match, f"unexpected first line {line!r}"
        return Running(process, match[1])

    yield run
    for process in processes:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def sdk() -> Iterator[Callable[[str], anthropic.Anthropic]]:
    clients: list[anthropic.Anthropic] = []

    def make(url: str) -> anthropic.Anthropic:
        clients.append(anthropic.Anthropic(base_url=url, api_key="test-key", max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_the_command_serves_a_batch_from_create_to_results(
    run_emulator: RunEmulator, sdk: Callable[[str], anthropic.Anthropic]
) -> None:
    # Given the emulator started as a user would, with a short latency and their own responder
    running = run_emulator("--latency", "0.2", "--responder", "tests.integration.emulator_responders:echo")
    client = sdk(running.url)

    # When a batch is created and polled until it ends
    batch = client.messages.batches.create(requests=requests_for(3))
    ended = wait_until_ended(client, batch.id)

    # Then every request came back answered by that responder
    assert ended.request_counts.succeeded == 3
    texts = {row.custom_id: row.result.message.content[0].text for row in client.messages.batches.results(batch.id)}
    assert texts == {f"req-{i:04d}": f"echo req-{i:04d} from claude-haiku-4-5" for i in range(3)}


def test_a_fault_flag_is_applied(run_emulator: RunEmulator, sdk: Callable[[str], anthropic.Anthropic]) -> None:
    # Given the emulator started with a 529 on the first create
    client = sdk(run_emulator("--fault", "create:529:1:1").url)

    # When two batches are created
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.batches.create(requests=requests_for(1))
    second = client.messages.batches.create(requests=requests_for(1))

    # Then the first met the 529 and the second went through
    assert caught.value.status_code == 529
    assert second.processing_status == "in_progress"


def test_every_fault_flag_becomes_the_fault_settings(run_emulator: RunEmulator) -> None:
    # Given the emulator started with every fault flag
    running = run_emulator(
        *("--fault", "create:429:0.5:3", "--fault", "*:500:0.1"),
        *("--stall", "results:2.5:0.2:1", "--retry-after", "4"),
        *("--errored-rate", "api_error:0.1", "--errored-rate", "overloaded_error:0.05"),
        *("--expired-rate", "0.02", "--queue-limit", "1000"),
        *("--lose-create-response", "0.3:1", "--drop-results", "0.25"),
    )

    # When its fault settings are read through the control endpoint
    faults = EmulatorControl(running.url).faults()

    # Then they are exactly what the flags said
    assert (
        faults
        == FaultSettings.model_validate(
            {
                "http_errors": [
                    {"endpoint": "create", "status": 429, "rate": 0.5, "times": 3},
                    {"endpoint": "*", "status": 500, "rate": 0.1},
                ],
                "stalls": [{"endpoint": "results", "seconds": 2.5, "rate": 0.2, "times": 1}],
                "retry_after": 4,
                "errored": {"api_error": 0.1, "overloaded_error": 0.05},
                "expired": 0.02,
                "queue_limit": 1000,
                "lose_create_response": {"rate": 0.3, "times": 1},
                "drop_results": {"rate": 0.25},
            }
        ).model_dump()
    )


def test_a_bad_flag_exits_the_process_with_code_2_and_a_message_not_a_traceback() -> None:
    # When the emulator process is started with a malformed fault flag
    finished = subprocess.run(
        [str(BATCHDROP), "emulator", "--port", "0", "--fault", "create:abc:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )

    # Then it exits with the usage error code, naming the problem, and never listened
    assert finished.returncode == 2
    assert "--fault: STATUS must be a number" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert finished.stdout == ""


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--fault", "upload:500:1"], "--fault: unknown endpoint 'upload'", id="fault-endpoint"),
        pytest.param(["--fault", "create:500"], "--fault: expected ENDPOINT:STATUS:RATE[:TIMES]", id="fault-shape"),
        pytest.param(["--stall", "create:5"], "--stall: expected ENDPOINT:SECONDS:RATE[:TIMES]", id="stall-shape"),
        pytest.param(
            ["--errored-rate", "timeout_error:0.1"],
            "--errored-rate: TYPE must be api_error or overloaded_error",
            id="errored-type",
        ),
        pytest.param(["--drop-results", "often"], "--drop-results: expected RATE[:TIMES]", id="drop-results-rate"),
        pytest.param(["--expired-rate", "2"], "less than or equal to 1", id="rate-above-1"),
        pytest.param(["--latency", "-1"], "--latency must be >= 0", id="negative-latency"),
        pytest.param(["--latency", "soon"], "invalid float value: 'soon'", id="latency-not-a-number"),
        pytest.param(["--results-url", "elsewhere"], "invalid choice: 'elsewhere'", id="results-url"),
        pytest.param(
            ["--responder", "no_such_module_anywhere:answer"], "cannot import 'no_such_module_anywhere'", id="responder"
        ),
        pytest.param(["--responder", "answer"], "must look like 'package.module:callable'", id="responder-shape"),
    ],
)
def test_a_bad_flag_exits_with_code_2_and_says_what_is_wrong(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    # When the command is run with a bad flag
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--port", "0", *flags])

    # Then it exits with the usage error code, naming the problem
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_exits_with_code_2_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # When the emulator is started on it
        with pytest.raises(SystemExit) as exited:
            main(["emulator", "--port", str(port)])

    # Then it exits with code 2 and says why, rather than a traceback
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot start the emulator on 127.0.0.1:{port}" in err
    assert "in use" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_emulator_cleanly(run_emulator: RunEmulator, sig: signal.Signals) -> None:
    # Given a running emulator
    running = run_emulator("--latency", "0.2")

    # When it receives the signal
    running.process.send_signal(sig)
    _, stderr = running.process.communicate(timeout=30)

    # Then it stops with code 0, says so, and no longer listens
    assert running.process.returncode == 0
    assert "emulator stopped" in stderr
    assert "Traceback" not in stderr
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{running.url}/_emulator/health")
