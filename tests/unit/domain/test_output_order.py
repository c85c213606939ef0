"""The pure decisions behind records mode's outputs order (domain/output_order.py)."""

from __future__ import annotations

from typing import Any

import pytest

from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.output_order import (
    OutputOrderError,
    count_problem,
    merged_by_row,
    shard_families,
)
from batchdrop.domain.records import ShardRecord
from batchdrop.domain.rows import RowRef, outputs_keys
from batchdrop.domain.states import ShardState

pytestmark = pytest.mark.unit


def shard(index: int, keys: tuple[str, ...] = (), split_into: tuple[int, ...] = ()) -> ShardRecord:
    log: tuple[dict[str, Any], ...] = ({"attempt": 1, "split_into": list(split_into)},) if split_into else ()
    state = ShardState.SPLIT if split_into else ShardState.COLLECTED
    return ShardRecord(
        "j1", index, state, f"work/j1/shard-{index:05d}.jsonl", 4, 4, 10, "", 1, 1, 3,
        result_keys=keys, attempts_log=log,
    )  # fmt: skip


def test_a_halved_shards_results_are_read_with_its_own_at_any_depth() -> None:
    # shard 1 was refused after its first attempt's results, and halved into 3 and 4; 4 into 5 and 6
    shards = [
        shard(0, ("r0", "r0-a2")),
        shard(1, ("r1",), split_into=(3, 4)),
        shard(2, ("r2",)),
        shard(3, ("r3",)),
        shard(4, (), split_into=(5, 6)),
        shard(5, ("r5",)),
        shard(6, ("r6", "r6-a2")),
    ]
    assert shard_families(list(reversed(shards))) == [
        (0, ("r0", "r0-a2")),
        (1, ("r1", "r3", "r5", "r6", "r6-a2")),
        (2, ("r2",)),
    ]


def test_a_half_with_no_shard_item_is_named() -> None:
    with pytest.raises(OutputOrderError, match="shard 1: a half made from it has no shard item"):
        shard_families([shard(0), shard(1, split_into=(2, 3)), shard(2)])


def test_rejected_records_fall_between_the_sent_ones_by_row() -> None:
    sent = [(RowRef(2, "row-2"), "b"), (RowRef(3, "row-3"), "c"), (RowRef(6, "row-6"), "f")]
    rejected = [RowRef(1, None, reason="x"), RowRef(4, "row-4", reason="y"), RowRef(5, None, reason="z"),
                RowRef(9, None, reason="w")]  # fmt: skip
    merged = list(merged_by_row(sent, rejected))
    assert [(ref.row, result) for ref, result in merged] == [
        (1, None), (2, "b"), (3, "c"), (4, None), (5, None), (6, "f"), (9, None)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("sent", "rejected", "where"),
    [
        ([(RowRef(2, "a"), 1), (RowRef(2, "b"), 2)], [], "the rows files: row 2 comes after row 2"),
        ([(RowRef(3, "a"), 1), (RowRef(2, "b"), 2)], [], "the rows files: row 2 comes after row 3"),
        ([(RowRef(1, "a"), 1)], [RowRef(5, None), RowRef(4, None)], r"errors/ \(rejected records\): row 4"),
        ([(RowRef(2, "a"), 1)], [RowRef(2, None)], r"errors/ \(rejected records\): row 2 comes after row 2"),
    ],
)
def test_rows_that_repeat_or_go_back_are_refused(
    sent: list[tuple[RowRef, int]], rejected: list[RowRef], where: str
) -> None:
    with pytest.raises(OutputOrderError, match=where):
        list(merged_by_row(sent, rejected))


def test_the_rows_statuses_must_match_the_counts() -> None:
    counts = {"succeeded": 5, "errored": 1, "canceled": 2}
    agreeing = {"succeeded": 3, "invalid_output": 2, "errored": 1, "canceled": 2, "rejected": 4}
    assert count_problem(agreeing, counts, rejected=4) is None
    assert count_problem({**agreeing, "invalid_output": 1}, counts, 4) == "succeeded: 4 rows for 5"
    assert count_problem({**agreeing, "expired": 1}, counts, 4) == "expired: 1 rows for 0"
    assert count_problem(agreeing, counts, rejected=5) == "rejected: 4 rows for 5"
    assert count_problem({**agreeing, "odd": 1}, counts, 4) == "odd: 1 rows, not a status"


def test_the_manifest_names_the_outputs_only_when_given() -> None:
    common: dict[str, Any] = {
        "job_id": "j1",
        "source": {"bucket": "b", "key": "inbox/r/a.csv", "version_id": "v"},
        "status": "COMPLETED",
        "requested": 1,
        "rejected": 0,
        "counts": {"succeeded": 1},
        "batches": [],
        "usage_by_model": {},
        "result_keys": ["results/j1/results-00000.jsonl"],
        "rejected_key": None,
        "created_at": "2026-12-06T00:00:00Z",
        "completed_at": "2026-12-06T00:01:00Z",
    }
    assert "outputs" not in build_manifest(**common)
    named = build_manifest(**common, outputs=outputs_keys("j1"))
    assert named["outputs"] == {"csv": "results/j1/outputs.csv", "jsonl": "results/j1/outputs.jsonl"}
    assert named["results"] == ["results/j1/results-00000.jsonl"]
