"""The job view the client builds from the state table's records and the manifest: done counts
the collected outcomes and what the open batches have processed; the nearest expiry is the
open batches' earliest; `as_dict` keeps schema 1's keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from batchdrop.domain.records import JobRecord, ShardRecord, SourceRef
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop_client.views import job_view

pytestmark = pytest.mark.unit

JOB = JobRecord(
    "j" + "a" * 24, JobStatus.RUNNING, SourceRef("b", "inbox/x.jsonl", "v1"), "2026-12-06T18:00:00+00:00", 30
)


def shard(index: int, state: ShardState, **fields: object) -> ShardRecord:
    values: dict[str, object] = {"batch_id": f"msgbatch_{index}", **fields}
    return ShardRecord(JOB.job_id, index, state, f"work/{index}", 10, 10, 100, "d", 1, 1, 3, **values)  # type: ignore[arg-type]


def test_an_open_jobs_progress_adds_the_open_batches_processed_requests_to_the_collected_ones() -> None:
    shards = [
        shard(0, ShardState.COLLECTED, counts={"succeeded": 9, "errored": 1}),
        shard(
            1,
            ShardState.SUBMITTED,
            progress={"processing": 6, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0},
            expires_at="2026-12-07T18:05:00+00:00",
        ),
        shard(2, ShardState.SUBMITTED, progress={}, expires_at="2026-12-07T18:01:00+00:00"),
    ]

    view = job_view(JOB, shards, None, with_batches=True)
    progress = view.progress(elapsed=12.0)

    assert (view.done, view.in_flight, view.batches_open) == (10, 4, 2)
    assert (progress.done, progress.total, progress.batches_open) == (14, 30, 2)
    assert progress.expires_at == datetime(2026, 12, 7, 18, 1, tzinfo=UTC)
    as_dict = view.as_dict()
    assert as_dict["requests"] == {"total": 30, "done": 10, "rejected": 0}
    assert as_dict["progress"] == {"in_flight": 4, "batches_open": 2, "expires_at": "2026-12-07T18:01:00+00:00"}
    assert [b["progress"] for b in as_dict["batches"]] == [
        None,
        {"processing": 6, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0},
        None,  # open, but not yet seen by the checker
    ]


def test_a_finished_jobs_figures_come_from_its_manifest() -> None:
    manifest = {
        "counts": {"requests": 30, "rejected": 0, "succeeded": 28, "errored": 2, "canceled": 0, "expired": 0},
        "cost": {"batch_usd": "0.000100", "standard_usd": "0.000200"},
        "results": ["results/j/results-00000.jsonl"],
    }
    ended = replace(JOB, status=JobStatus.COMPLETED_WITH_ERRORS)

    view = job_view(ended, [], manifest)

    assert view.finished
    assert view.succeeded
    assert (view.done, view.in_flight, view.cost) == (30, 0, {"batch_usd": "0.000100", "standard_usd": "0.000200"})
    assert "batches" not in view.as_dict()
