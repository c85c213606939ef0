"""The checker's OldestOpenBatchAge metric: on each tick, how long ago the oldest open batch
was sent, in seconds, so that the dashboard can set it against the 24 hours after which the
provider expires a batch; no value at all when no batch is open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchdrop.observability import metrics
from batchdrop.services.intake import Intake
from tests.unit.fakes import Fakes, request
from tests.unit.test_job_cost_metrics import run_checker

pytestmark = pytest.mark.unit

METRIC = "OldestOpenBatchAge"


@pytest.fixture(autouse=True)
def no_metrics() -> Iterator[None]:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def test_the_age_is_the_oldest_open_batchs_and_none_is_emitted_without_open_batches(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no open batch, the checker emits no age
    world = Fakes()
    assert METRIC not in run_checker(world, monkeypatch, capsys)["values"]

    # Given a job sent 5 hours ago and another sent 2 hours ago, both still open
    Intake(world.wiring()).submit(world.upload("inbox/first.jsonl", [request("a")]))
    world.clock.advance(3 * 3600)
    Intake(world.wiring()).submit(world.upload("inbox/second.jsonl", [request("b")]))
    world.clock.advance(2 * 3600)

    # When the checker ticks
    run = run_checker(world, monkeypatch, capsys)

    # Then it reports two open batches, and the first one's age: 5 hours, in seconds
    assert run["report"]["open_batches"] == 2
    assert run["values"][METRIC] == [5 * 3600.0]
