"""What `batchdrop status JOB` shows of a finished job's cost: the batch and standard price and
what caching saved, from the manifest; `--json` keeps the same figures; a manifest written
before `saved_by_caching_usd` existed still shows the two figures it has."""

from __future__ import annotations

from typing import Any

import pytest

from batchdrop.domain.records import JobRecord, SourceRef
from batchdrop.domain.states import JobStatus
from batchdrop_client.views import job_view
from batchdrop_local.commands import format_cost

pytestmark = pytest.mark.unit

JOB = JobRecord(
    "j" + "b" * 24, JobStatus.COMPLETED, SourceRef("b", "inbox/x.jsonl", "v1"), "2026-12-06T18:00:00+00:00", 2
)
COUNTS = {"requests": 2, "rejected": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0}


def manifest(**cost: str) -> dict[str, Any]:
    return {"counts": COUNTS, "cost": {"saved_usd": "0.000100", "priced_as": {}, **cost}, "results": []}


def test_a_finished_jobs_view_carries_batch_standard_and_caching_figures_into_its_json() -> None:
    view = job_view(
        JOB,
        [],
        manifest(
            batch_usd="0.000100",
            standard_usd="0.000200",
            saved_vs_standard_usd="0.000100",
            saved_by_caching_usd="0.000450",
        ),
    )

    expected = {"batch_usd": "0.000100", "standard_usd": "0.000200", "saved_by_caching_usd": "0.000450"}
    assert view.cost == expected
    assert view.as_dict()["cost"] == expected


def test_an_older_manifest_gives_the_two_figures_it_has() -> None:
    view = job_view(JOB, [], manifest(batch_usd="0.000100", standard_usd="0.000200"))

    assert view.as_dict()["cost"] == {"batch_usd": "0.000100", "standard_usd": "0.000200"}
    assert format_cost(view.cost or {}) == "$0.000100 at the batch price ($0.000200 standard)"


@pytest.mark.parametrize(
    ("saved", "line"),
    [
        ("0.000450", "$0.000100 at the batch price ($0.000200 standard; caching saved $0.000450)"),
        ("0.000000", "$0.000100 at the batch price ($0.000200 standard; caching saved $0.000000)"),
        # Prefixes written and never read: caching cost more than it saved.
        ("-0.125000", "$0.000100 at the batch price ($0.000200 standard; caching cost $0.125000 more)"),
    ],
)
def test_the_cost_line_says_what_caching_saved_or_what_it_cost_more(saved: str, line: str) -> None:
    cost = {"batch_usd": "0.000100", "standard_usd": "0.000200", "saved_by_caching_usd": saved}
    assert format_cost(cost) == line


def test_the_cost_line_gives_the_estimate_made_before_sending() -> None:
    cost = {
        "batch_usd": "0.000100",
        "standard_usd": "0.000200",
        "saved_by_caching_usd": "0.000000",
        "estimated_usd": "0.000120",
        "estimated_max_usd": "0.000300",
    }
    assert format_cost(cost) == (
        "$0.000100 at the batch price ($0.000200 standard; caching saved $0.000000;"
        " estimated $0.000120, at most $0.000300)"
    )
