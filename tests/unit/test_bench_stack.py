"""What the `stack` section of `make bench` judges (bench.goals and the rows bench/stack.py
builds from its child's report): the local stack's memory beside the file, its disk beside
the bytes its bucket holds, and flat while idle. No stack runs here: the child's figures are given."""

from __future__ import annotations

from typing import Any

import pytest

import bench.__main__ as bench_main
from bench import goals
from bench.stack import figures
from bench.table import Figure

pytestmark = pytest.mark.unit

MB = 1024 * 1024
GB_FILE = 1_070_000_000


def _sample(seconds: float, phase: str, deleted_mb: float, stored_mb: float, open_files: int = 20) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "phase": phase,
        "deleted_bytes": int(deleted_mb * MB),
        "stored_bytes": int(stored_mb * MB),
        "open_files": open_files,
    }


def _report(
    job: list[dict[str, Any]], idle: list[dict[str, Any]], *, file_bytes: int = GB_FILE, peak_rss_mb: float = 900.0
) -> dict[str, Any]:
    return {
        "file_bytes": file_bytes,
        "requests": 400_000,
        "status": "COMPLETED",
        "submitted": True,
        "finished": True,
        "idle_seconds": 65.0,
        "at_start": _sample(0, "job", 0, 0, open_files=13),
        "after_job": idle[0],
        "at_end": idle[-1] | {"open_files": 25},
        "samples": job + idle,
        "peak_rss_mb": peak_rss_mb,
        "failures": 0,
    }


def _judged(rows: list[Figure]) -> dict[str, bool | None]:
    return {row.goal: row.met for row in rows if row.goal}


# ---------------------------------------------------------------- the goals, from given figures


@pytest.mark.parametrize(
    ("beyond_mb", "file_mb", "met"),
    [(0, 1000, True), (1256, 1000, True), (1256.01, 1000, False), (300, 0, False), (256, 0, True)],
)
def test_the_stack_may_hold_the_file_and_256_mb_beyond_the_bucket(beyond_mb: float, file_mb: float, met: bool) -> None:
    assert goals.stack_disk_beside_bucket(beyond_mb * MB, file_mb * MB).met is met


@pytest.mark.parametrize(
    ("rss_mb", "file_mb", "met"), [(900, 1000, True), (1512, 1000, True), (1512.5, 1000, False), (4680, 1020, False)]
)
def test_the_stack_s_memory_may_be_the_file_and_512_mb(rss_mb: float, file_mb: float, met: bool) -> None:
    assert goals.stack_memory_beside_file(rss_mb, file_mb).met is met


@pytest.mark.parametrize(("growth_mb", "met"), [(-5, True), (0, True), (3.99, True), (4, False), (1024, False)])
def test_the_stack_is_flat_while_idle_when_it_grows_under_4_mb(growth_mb: float, met: bool) -> None:
    assert goals.stack_flat_while_idle(growth_mb * MB).met is met


# ---------------------------------------------------------------- the rows, from a given report


def test_a_stack_that_holds_the_bucket_and_a_bounded_working_set_and_stays_flat_meets_every_goal() -> None:
    # The upload's parts (1 GB beyond a bucket still empty), then the bucket's own bytes: the
    # file and its copies.
    job = [_sample(1, "job", 500, 0), _sample(2, "job", 1020, 0), _sample(30, "job", 3060, 3060)]
    idle = [_sample(31, "idle", 3060, 3060), _sample(40, "idle", 3061, 3060), _sample(95, "idle", 3060, 3060)]

    rows = figures(_report(job, idle))

    assert [row.met for row in rows if row.goal] == [True, True, True]
    memory, peak, flat = (row for row in rows if row.goal)
    assert (memory.value, memory.baseline_value) == (900.0, pytest.approx(GB_FILE / MB))
    assert peak.value == pytest.approx(1020)
    assert peak.baseline_value == pytest.approx(GB_FILE / MB)
    assert flat.value == pytest.approx(3061)
    assert flat.baseline_value == pytest.approx(3060)
    assert (rows[-1].value, rows[-1].baseline_value) == (25, 13)  # open files: shown, not judged


def test_a_stack_that_holds_the_file_in_memory_several_times_misses_the_memory_goal() -> None:
    job = [_sample(1, "job", 1020, 0), _sample(30, "job", 1020, 1020)]
    idle = [_sample(31, "idle", 1020, 1020), _sample(95, "idle", 1020, 1020)]

    judged = _judged(figures(_report(job, idle, peak_rss_mb=4680.0)))

    assert list(judged.values()) == [False, True, True]


def test_a_stack_that_grows_while_idle_misses_flat_even_when_its_peak_is_within_the_working_set() -> None:
    # A copy of a 100 MB part of the file in a new temporary file at every sweep.
    job = [_sample(1, "job", 1020, 1020)]
    idle = [_sample(31, "idle", 1020, 1020), _sample(61, "idle", 1120, 1020), _sample(91, "idle", 1220, 1020)]

    judged = _judged(figures(_report(job, idle)))

    assert judged == {
        goals.stack_memory_beside_file(0, GB_FILE / MB).text: True,
        goals.stack_disk_beside_bucket(0, GB_FILE).text: True,
        goals.stack_flat_while_idle(0).text: False,
    }


def test_a_stack_that_copies_the_file_beyond_the_working_set_misses_the_disk_goal() -> None:
    # Four unlinked copies of a 1 GB file beyond the bucket's own bytes, and flat after that.
    job = [_sample(1, "job", 1020 * 5, 1020)]
    idle = [_sample(31, "idle", 1020, 1020), _sample(95, "idle", 1020, 1020)]

    judged = _judged(figures(_report(job, idle)))

    assert list(judged.values()) == [True, False, True]


def test_the_stack_section_is_in_make_bench() -> None:
    assert bench_main.SECTIONS["stack"] == "bench.stack"
    assert "- stack:" in (bench_main.__doc__ or "")
