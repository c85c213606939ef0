"""The fixtures the end-to-end modules share: one local stack per module, a runner per test,
the real handlers. What differs between modules is set at the top of each module:

    STACK = {"latency": 0.3}  # LocalStack's keyword arguments, for `stack`
    RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}  # LocalRunner's, for `runner`
    FRESH_EMULATOR = True  # for `runner`: see below

A module that uses a fixture must set what it reads: no default stands in for a setting a
reader of the module would not see. The stack stays one per module (it is heavy, and the
modules' settings differ); a module that builds its runners itself (with handlers that crash,
or running in the background) passes them its RUNNER too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batchdrop.adapters.events import EventPublisher
from batchdrop.domain.job_events import ENDED, JobEvent
from batchdrop_local.runner import LocalRunner, load_handler
from batchdrop_local.stack import LocalStack
from tests.e2e.support import CHECKER, SUBMIT


def _module_setting(request: pytest.FixtureRequest, name: str) -> Any:
    """The module's own `name`, which it must set to use the fixture asking for it."""
    if not hasattr(request.module, name):
        pytest.fail(f"{request.module.__name__} sets no {name}, which tests/e2e/conftest.py reads", pytrace=False)
    return getattr(request.module, name)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """The module's local stack: `LocalStack(**STACK)`, started once for the module."""
    with LocalStack(**_module_setting(request, "STACK")) as running:
        yield running


@pytest.fixture
def runner(request: pytest.FixtureRequest, stack: LocalStack) -> Iterator[LocalRunner]:
    """A new `LocalRunner(stack, **RUNNER)` for each test, driven by the test. With
    FRESH_EMULATOR the emulator is reset first (no batches, counters and custom_ids from zero,
    no faults) and any faults the test set are lifted after it; without, the emulator goes on
    from where the module's earlier tests left it."""
    fresh = _module_setting(request, "FRESH_EMULATOR")
    settings = _module_setting(request, "RUNNER")
    if fresh:
        stack.emulator_control().reset(faults=True)
    yield LocalRunner(stack, **settings)
    if fresh:
        stack.emulator_control().set_faults({})


@pytest.fixture(scope="module")
def handlers(stack: LocalStack) -> dict[str, Any]:
    """The real handlers, imported once as Lambda would on a cold start."""
    functions = stack.template.functions()
    return {name: load_handler(functions[name], stack.template_root) for name in (SUBMIT, CHECKER)}


@pytest.fixture
def events_published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The detail of each job-ended event the stack's functions publish (Completed, Failed,
    Canceled), in order, as they reach the bus."""
    published: list[dict[str, Any]] = []
    original = EventPublisher.publish

    def counting(publisher: EventPublisher, event: JobEvent) -> None:
        original(publisher, event)
        if event.detail_type in ENDED:
            published.append(dict(event.detail))

    monkeypatch.setattr(EventPublisher, "publish", counting)
    return published
