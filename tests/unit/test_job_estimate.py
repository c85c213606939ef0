"""Every job's cost estimate, made by the submit function before any create
(services/job_estimate.py): kept at work/<job_id>/estimate.json, counted with count_tokens,
falling back when counting fails, kept once across re-runs, set beside the actual cost in
the manifest, and the output a pipeline's jobs used expected of its next job."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from batchdrop.domain.estimate import Estimator
from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop.domain.pipelines import pipeline_from
from batchdrop.domain.records import SourceRef
from batchdrop.domain.states import JobStatus
from batchdrop.services.intake import Intake
from batchdrop.services.job_estimate import beside_actual, estimate_key, history_key
from batchdrop.services.tick import Checker
from tests.records_jobs import pipeline_document
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def drop(world: Fakes, key: str, body: bytes) -> SourceRef:
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))
    Intake(world.wiring()).submit(source)
    return source


def job_of(source: SourceRef) -> str:
    return job_id_for(source.bucket, source.key, source.version_id)


def lines(*ids: str) -> bytes:
    return b"".join(request(custom_id) + b"\n" for custom_id in ids)


def test_a_job_is_estimated_before_its_first_create_with_every_request_counted(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the API's creates watched for the estimate being there already
    seen_at_create: list[bool] = []
    create = world.batches.create

    def watched(*args: Any, **kwargs: Any) -> dict[str, Any]:
        seen_at_create.append(any(key.endswith("/estimate.json") for key in world.store.keys("work/")))
        return create(*args, **kwargs)

    monkeypatch.setattr(world.batches, "create", watched)

    # When a file of three requests is dropped
    source = drop(world, "inbox/three.jsonl", lines("a", "b", "c"))

    # Then its estimate was kept before the create, every request counted by count_tokens
    assert seen_at_create == [True]
    estimate = world.store.get_json(estimate_key(job_of(source)))
    assert estimate["job_id"] == job_of(source)
    assert estimate["source_key"] == "inbox/three.jsonl"
    assert estimate["requests"] == 3
    assert estimate["method"]["input"] == "counted"
    assert len(world.batches.counted) == 3
    counted = sum(world.batches.count_tokens(body) for body in world.batches.counted[:3])
    assert estimate["input_tokens"] == counted
    # ...the countable fields only: max_tokens is not one
    assert all("max_tokens" not in body and "model" in body for body in world.batches.counted)
    assert estimate["output_tokens_max"] == 3 * json.loads(request("a"))["params"]["max_tokens"]
    costs = {name: Decimal(value) for name, value in estimate["cost_usd"].items()}
    assert costs["batch"] * 2 == costs["standard"]
    assert costs["batch"] <= costs["batch_max"]


def test_a_count_that_fails_never_holds_the_job_the_estimate_says_why(world: Fakes) -> None:
    # Given count_tokens failing every time
    world.batches.count_error = RuntimeError("rate limited for good")

    # When a file is dropped
    source = drop(world, "inbox/two.jsonl", lines("a", "b"))

    # Then its batch went out, and the estimate is the approximation, saying why
    assert world.state.get_job(job_of(source)).status is JobStatus.RUNNING  # type: ignore[union-attr]
    estimate = world.store.get_json(estimate_key(job_of(source)))
    assert estimate["method"]["input"] == "approximated"
    assert "rate limited for good" in estimate["method"]["fallback"]
    assert estimate["input_tokens"] > 0


def test_an_estimate_that_cannot_be_made_at_all_leaves_the_job_to_go_on(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an estimator that breaks (a bug, say)
    def broken(self: Estimator, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Estimator, "result", broken)

    # When a file is dropped, then its batch goes out without an estimate
    source = drop(world, "inbox/two.jsonl", lines("a", "b"))
    assert world.batches.creates == 1
    assert not world.store.exists(estimate_key(job_of(source)))


def test_a_rerun_keeps_the_first_estimate(world: Fakes) -> None:
    # Given a job estimated, whose run died before its shards were recorded (the estimate kept)
    source = SourceRef(world.store.bucket, "inbox/r.jsonl", world.store.put("inbox/r.jsonl", lines("a", "b")))
    job_id = job_of(source)
    world.store.put_json(estimate_key(job_id), {"job_id": job_id, "kept": "first"})

    # When the job is taken in again, then the estimate is the first one, and the job goes on
    Intake(world.wiring()).submit(source)
    assert world.store.get_json(estimate_key(job_id)) == {"job_id": job_id, "kept": "first"}
    assert world.batches.creates == 1


def test_the_manifest_sets_the_estimate_beside_the_actual_cost(world: Fakes) -> None:
    # Given a job estimated and submitted, whose batch ended
    source = drop(world, "inbox/m.jsonl", lines("a", "b"))
    (batch_id,) = world.batches.batches
    world.batches.end(batch_id)

    # When the checker finishes it
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then the manifest holds the estimate, the actual batch cost and the error between them
    manifest = world.store.get_json(manifest_key(job_of(source)))
    estimate = world.store.get_json(estimate_key(job_of(source)))
    beside = manifest["estimate"]
    assert beside["key"] == estimate_key(job_of(source))
    assert beside["cost_usd"] == estimate["cost_usd"]
    assert beside["actual_batch_usd"] == manifest["cost"]["batch_usd"]
    expected = Decimal(estimate["cost_usd"]["batch_cached_expected"])
    actual = Decimal(manifest["cost"]["batch_usd"])
    assert beside["error"] == pytest.approx(float(actual / expected - 1), abs=1e-4)
    assert beside["within_max"] is (actual <= Decimal(estimate["cost_usd"]["batch_max"]))


def test_beside_actual_by_hand() -> None:
    estimate = {
        "job_id": "j1",
        "cost_usd": {"batch_cached_expected": "0.200000", "batch_max": "0.500000"},
        "method": {"input": "sampled", "output_expected": "0.5 x max_tokens (default share)"},
    }
    beside = beside_actual(estimate, "0.23")
    assert beside["error"] == pytest.approx(0.15)
    assert beside["within_max"] is True
    assert beside["input"] == "sampled"
    assert beside_actual(estimate, "0.6")["within_max"] is False
    nothing = {**estimate, "cost_usd": {"batch_cached_expected": "0", "batch_max": "0"}}
    assert beside_actual(nothing, "0")["error"] is None


def test_a_pipelines_next_job_expects_the_output_its_last_job_used(world: Fakes) -> None:
    # Given a pipeline, and a first records job of it finished
    world.store.put("pipelines/reviews.json", json.dumps(pipeline_document()).encode())
    rows = b"product,review\nlamp,bright\nkettle,slow\n"
    first = drop(world, "inbox/reviews/one.csv", rows)
    first_estimate = world.store.get_json(estimate_key(job_of(first)))
    assert first_estimate["method"]["output_expected"].endswith("(default share)")
    for batch_id in list(world.batches.batches):
        world.batches.end(batch_id)
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    manifest = world.store.get_json(manifest_key(job_of(first)))
    used = manifest["usage"]["total"]["output_tokens"]

    # Then the pipeline's history holds what that job used for what it allowed
    history = world.store.get_json("history/pipelines/reviews.json")
    allowed = first_estimate["output_tokens_max"]
    assert history == {"job_id": job_of(first), "output_tokens": used, "max_tokens": allowed}

    # When a second file of the pipeline comes, then its expected output is that share of its max_tokens
    second = drop(world, "inbox/reviews/two.csv", rows)
    estimate = world.store.get_json(estimate_key(job_of(second)))
    assert "earlier jobs" in estimate["method"]["output_expected"]
    share = Decimal(used) / Decimal(first_estimate["output_tokens_max"])
    expected = (share * estimate["output_tokens_max"]).to_integral_value(ROUND_HALF_UP)
    assert estimate["output_tokens_expected"] == int(expected)


def test_history_key_is_named_by_the_pipeline() -> None:
    from batchdrop.domain.records import PipelineRef

    assert history_key(PipelineRef("pipelines/nightly.yaml", "v1")) == "history/pipelines/nightly.json"


def test_a_records_job_whose_pipeline_caches_its_prompt_is_estimated_as_its_requests_dropped_as_lines(
    world: Fakes,
) -> None:
    # Given a pipeline caching a long system prompt, and a file of its records
    system = [{"type": "text", "text": "rubric " * 3000, "cache_control": {"type": "ephemeral"}}]
    document = pipeline_document(system=system, id_field="id")
    world.store.put("pipelines/cached.json", json.dumps(document).encode())
    rows = b"id,product,review\n" + b"".join(b"r%d,lamp,bright %d\n" % (n, n) for n in range(12))

    # When it is dropped, and its rendered requests are dropped as a native file
    records = drop(world, "inbox/cached/reviews.csv", rows)
    rendered = b"".join(
        pipeline_from("cached", document).render({"id": f"r{n}", "product": "lamp", "review": f"bright {n}"}, n + 1)
        + b"\n"
        for n in range(12)
    )
    native = drop(world, "inbox/rendered.jsonl", rendered)

    # Then both estimates price the cache alike: written once, read by the other requests
    by_records = world.store.get_json(estimate_key(job_of(records)))
    by_lines = world.store.get_json(estimate_key(job_of(native)))
    assert by_records["cost_usd"] == by_lines["cost_usd"]
    assert by_records["input_tokens"] == by_lines["input_tokens"]
    assert Decimal(by_records["cost_usd"]["batch_cached_expected"]) < Decimal(by_records["cost_usd"]["batch"])
