"""Fixtures for tests that drive the Message Batches emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.server import Emulator
from batchdrop_local.emulator.settings import EmulatorSettings

pytest.register_assert_rewrite("tests.integration.emulator_support")

from tests.integration.emulator_support import HOLD_LATENCY, MakeClient, StartEmulator  # noqa: E402


@pytest.fixture
def start_emulator() -> Iterator[StartEmulator]:
    """Start an emulator on a free port: `start_emulator(latency=0.3, faults=...)` takes any
    `EmulatorSettings` field. Every emulator started stops when the test ends."""
    started: list[Emulator] = []

    def start(**settings: Any) -> Emulator:
        emulator = Emulator(EmulatorSettings(**({"port": 0, "latency": HOLD_LATENCY} | settings)))
        started.append(emulator.start())
        return emulator

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: StartEmulator) -> Emulator:
    return start_emulator()


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """An SDK client for an emulator: `make_client(emu, max_retries=1, timeout=0.2)`. Clients
    never retry unless asked, so a test sees exactly what the emulator answered."""
    clients: list[anthropic.Anthropic] = []

    def make(target: Emulator, **options: Any) -> anthropic.Anthropic:
        defaults = {"api_key": "test-key", "max_retries": 0}
        client = anthropic.Anthropic(base_url=target.url, **(defaults | options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: MakeClient, emulator: Emulator) -> anthropic.Anthropic:
    return make_client(emulator)


@pytest.fixture
def control(emulator: Emulator) -> EmulatorControl:
    return EmulatorControl(emulator.url, timeout=30)


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx2.Client]:
    """A raw HTTP client on `emulator`, for what the SDK cannot send or hides."""
    with httpx2.Client(base_url=emulator.url, timeout=30) as raw:
        yield raw
