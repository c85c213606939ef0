"""The checker's cost metrics: one JobCostUsd (the job's batch cost) and one
CostSavedByCachingUsd value per job it finishes, the manifest's own figures, flushed by the
handler as EMF in batchdrop's namespace; a job is counted by the call that closes it only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchdrop import wiring
from batchdrop.domain.jobs import manifest_key
from batchdrop.observability import CACHING_SAVED_METRIC, JOB_COST_METRIC, metrics
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.runner import load_handler
from batchdrop_local.stack import SamTemplate
from tests.unit.fakes import Fakes, request, succeeded

pytestmark = pytest.mark.unit

NAMESPACE = "batchdrop/test"


@pytest.fixture(autouse=True)
def no_metrics() -> Iterator[None]:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def cached(custom_id: str) -> dict[str, Any]:
    """A `succeeded` result that read 4,000 tokens from the cache and wrote 1,000 for an hour."""
    result = succeeded(custom_id, input_tokens=20, output_tokens=10)
    result["message"]["usage"].update(
        cache_read_input_tokens=4000,
        cache_creation_input_tokens=1000,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000},
    )
    return result


def ended_job(world: Fakes, name: str, ids: list[str], cached_ids: tuple[str, ...] = ()) -> str:
    """A job whose only batch has ended, the results of `cached_ids` using the cache; its id."""
    source = world.upload(f"inbox/{name}.jsonl", [request(cid) for cid in ids])
    job_id = Intake(world.wiring()).submit(source).job_id
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.batch_id is not None
    world.batches.end(shard.batch_id, {cid: cached(cid) for cid in cached_ids})
    return job_id


def run_checker(world: Fakes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Invoke CheckerFunction's handler as the template names it; what it returned and the EMF
    values of each metric it flushed."""
    monkeypatch.setattr(wiring, "from_env", world.wiring)
    monkeypatch.setattr(metrics, "namespace", NAMESPACE)
    root = Path(__file__).resolve().parents[2]
    handler = load_handler(SamTemplate.load(root / "template.yaml").function("CheckerFunction"), root)
    capsys.readouterr()
    report = handler({}, LocalLambdaContext(function_name="checker", timeout_seconds=900))
    values: dict[str, list[float]] = {}
    for line in capsys.readouterr().out.splitlines():
        if '"_aws"' not in line:
            continue
        emitted = json.loads(line)
        for directive in emitted["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            assert directive["Dimensions"] == [["service"]]
            for metric in directive["Metrics"]:
                value = emitted[metric["Name"]]
                values.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return {"report": report, "values": values}


def test_each_job_the_checker_finishes_emits_its_cost_and_what_caching_saved_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two jobs whose batches have ended, one of them with cached reads and writes
    world = Fakes()
    jobs = [ended_job(world, "cached", ["a", "b"], cached_ids=("a",)), ended_job(world, "plain", ["c"])]

    # When the checker runs
    run = run_checker(world, monkeypatch, capsys)

    # Then it finished both and emitted each one's manifest figures, once
    assert sorted(run["report"]["finished_jobs"]) == sorted(jobs)
    costs = [world.store.get_json(manifest_key(job_id))["cost"] for job_id in jobs]
    assert sorted(run["values"][JOB_COST_METRIC]) == sorted(float(cost["batch_usd"]) for cost in costs)
    assert sorted(run["values"][CACHING_SAVED_METRIC]) == sorted(float(cost["saved_by_caching_usd"]) for cost in costs)
    # By hand, at Haiku 4.5's prices per million ($1 input, $5 output, $2 1-hour writes, $0.10
    # reads; half at batch): the cached job's 30 input, 12 output, 1,000 written and 4,000 read
    # tokens cost $0.002490 standard, $0.001245 batch; as 5,030 plain input tokens and the
    # output, $0.002545 batch: caching saved $0.001300. The plain job's 10 input and 2 output
    # tokens cost $0.000010 batch, and caching saved nothing.
    assert [cost["batch_usd"] for cost in costs] == ["0.001245", "0.000010"]
    assert [cost["saved_by_caching_usd"] for cost in costs] == ["0.001300", "0.000000"]

    # And a later run, with nothing left to finish, emits no cost at all
    again = run_checker(world, monkeypatch, capsys)
    assert again["report"]["finished_jobs"] == []
    assert JOB_COST_METRIC not in again["values"]
    assert CACHING_SAVED_METRIC not in again["values"]


def test_a_job_another_checker_closed_first_is_not_counted_here(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an ended job that another invocation closes between this one's event and its close
    world = Fakes()
    job_id = ended_job(world, "raced", ["a"])
    monkeypatch.setattr(world.state, "finish_job", lambda *args, **kwargs: False)

    # When the checker collects it and tries to finish it
    report = Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then it announced the job but did not close it, and counted no cost
    assert [event["job_id"] for event in world.events.published] == [job_id]
    assert report.finished_jobs == []
    assert JOB_COST_METRIC not in metrics.metric_set
    assert CACHING_SAVED_METRIC not in metrics.metric_set


def test_caching_that_cost_more_is_emitted_as_a_negative_saving(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job whose one request wrote 1M tokens for an hour and read none: on Haiku 4.5 at
    # batch, $1 for the writes against $0.50 as plain input
    world = Fakes()
    source = world.upload("inbox/writes.jsonl", [request("a")])
    job_id = Intake(world.wiring()).submit(source).job_id
    result = succeeded("a", input_tokens=0, output_tokens=0)
    result["message"]["usage"].update(
        cache_creation_input_tokens=1_000_000,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1_000_000},
    )
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    world.batches.end(str(shard.batch_id), {"a": result})

    # When the checker collects and finishes it
    assert Checker(world.wiring(), seconds_left=lambda: 900.0).tick().finished_jobs == [job_id]

    # Then its cost is $1 and caching "saved" -$0.50
    assert metrics.metric_set[JOB_COST_METRIC]["Value"] == [1.0]
    assert metrics.metric_set[CACHING_SAVED_METRIC]["Value"] == [-0.5]
