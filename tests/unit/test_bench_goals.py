"""What `make bench` judges (bench/goals.py and the rows bench/submit.py and bench/results.py
build from it), the exit status it derives, and `python -m bench --quick`, which judges
nothing and leaves bench/latest.md alone. No benchmark runs here: figures are given."""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import goals
from bench.results import throughput_figure
from bench.submit import time_figures
from bench.table import Figure, markdown

pytestmark = pytest.mark.unit

LABEL = "100,000 requests, 268 MB"


def _seconds(ours: float, minimal: float = 2.0, parse_floor: float = 1.5, naive: float = 9.0) -> dict[str, float]:
    return {"ours": ours, "minimal": minimal, "naive": naive, "s3-floor": 5.0, "parse-floor": parse_floor}


def _judged(figures: list[Figure]) -> dict[str, bool | None]:
    return {figure.baseline: figure.met for figure in figures if figure.goal}


# ---------------------------------------------------------------- the goals, from given figures


@pytest.mark.parametrize(
    ("ours", "minimal", "met"),
    [(2.0, 2.0, True), (3.0, 2.0, True), (3.01, 2.0, False), (4.81, 2.42, False), (1.0, 2.0, True)],
)
def test_submit_is_judged_at_most_one_and_a_half_times_minimal(ours: float, minimal: float, met: bool) -> None:
    assert goals.submit_beside_minimal(ours, minimal).met is met


@pytest.mark.parametrize(
    ("ours", "parse_floor", "met"),
    [(3.0, 1.5, True), (2.0, 1.5, True), (3.01, 1.5, False), (4.81, 1.76, False)],
)
def test_submit_is_judged_at_most_twice_the_parse_floor(ours: float, parse_floor: float, met: bool) -> None:
    assert goals.submit_beside_parse_floor(ours, parse_floor).met is met


@pytest.mark.parametrize(
    ("ours", "copy", "met"),
    [(5.0, 10.0, True), (45.0, 45.0, True), (4.99, 10.0, False), (16.57, 45.82, False)],
)
def test_results_are_judged_at_least_half_a_plain_copy(ours: float, copy: float, met: bool) -> None:
    assert goals.results_beside_copy(ours, copy).met is met


def test_the_submit_rows_judge_minimal_and_the_parse_floor_and_not_naive() -> None:
    # Ours 2.9 s: within 1.5x minimal (3.0) and 2x the parse floor (3.0), and far from 4x faster than naive.
    rows = time_figures(LABEL, _seconds(2.9, minimal=2.0, parse_floor=1.5, naive=9.0))
    assert _judged(rows) == {
        "minimal stream-and-post": True,
        "parse floor (object read, each line json.loads)": True,
    }
    assert goals.exit_status(rows) == 0
    assert not any("4x" in figure.goal for figure in rows)
    naive = [figure for figure in rows if figure.baseline == "naive list + batches.create"]
    assert len(naive) == 2  # ours beside naive, and the parse floor beside naive: shown, not judged
    assert all(figure.met is None and not figure.goal for figure in naive)
    assert sorted(figure.ratio for figure in naive) == pytest.approx([9.0 / 2.9, 9.0 / 1.5])


def test_the_submit_rows_miss_each_goal_on_its_own() -> None:
    slow_beside_minimal = time_figures(LABEL, _seconds(3.1, minimal=2.0, parse_floor=1.6))
    assert _judged(slow_beside_minimal) == {
        "minimal stream-and-post": False,
        "parse floor (object read, each line json.loads)": True,
    }
    slow_beside_floor = time_figures(LABEL, _seconds(3.1, minimal=2.1, parse_floor=1.5))
    assert _judged(slow_beside_floor) == {
        "minimal stream-and-post": True,
        "parse floor (object read, each line json.loads)": False,
    }
    assert goals.exit_status(slow_beside_minimal) == goals.exit_status(slow_beside_floor) == 1


def test_the_results_row_judges_throughput_beside_the_copy() -> None:
    assert throughput_figure("100,000 results, 130 MB", 23.0, 45.0).met is True
    assert throughput_figure("100,000 results, 130 MB", 16.57, 45.82).met is False
    assert "**NO**" in markdown([throughput_figure("x", 16.57, 45.82)])


def test_exit_status_is_one_when_any_goal_is_missed() -> None:
    shown = Figure("cost", "a figure with no goal", 1.0, "$")
    held = Figure("checker", "a goal held", 1.0, "s", goal="< 2 s", met=True)
    missed = Figure("results", "a goal missed", 1.0, "MB/s", goal=">= 0.5x", met=False)
    assert goals.exit_status([shown, held]) == 0
    assert goals.exit_status([shown, held, missed]) == 1
    assert goals.exit_status([]) == 0


# ---------------------------------------------------------------- python -m bench, sections faked


def _fake_sections(calls: list[tuple[str, bool]]):
    def measure(name: str, quick: bool) -> list[Figure]:
        calls.append((name, quick))
        return [
            *time_figures(LABEL, _seconds(4.81, minimal=2.42, parse_floor=1.76, naive=9.54)),  # both goals missed
            throughput_figure("100,000 results, 130 MB", 30.0, 45.0),  # held
            Figure(name, "no goal", 1.0, "s"),
        ]

    return measure


def test_a_full_run_judges_writes_latest_and_exits_one_on_a_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latest = tmp_path / "latest.md"
    calls: list[tuple[str, bool]] = []
    assert bench_main.main(["--only", "submit"], measure=_fake_sections(calls), latest=latest) == 1
    assert calls == [("submit", False)]
    written = latest.read_text()
    assert written.count("**NO**") == 2
    assert "| yes |" in written
    assert "not judged (--quick)" not in written
    assert "goal missed: submit" in capsys.readouterr().err


def test_a_full_run_with_every_goal_held_exits_zero(tmp_path: Path) -> None:
    def measure(name: str, quick: bool) -> list[Figure]:
        return [*time_figures(LABEL, _seconds(2.5)), throughput_figure("r", 30.0, 45.0)]

    latest = tmp_path / "latest.md"
    assert bench_main.main([], measure=measure, latest=latest) == 0
    assert "**NO**" not in latest.read_text()


def test_quick_judges_nothing_exits_zero_and_leaves_latest_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latest = tmp_path / "latest.md"
    latest.write_text("the last full run\n")
    calls: list[tuple[str, bool]] = []
    assert bench_main.main(["--quick"], measure=_fake_sections(calls), latest=latest) == 0
    assert calls == [(name, True) for name in bench_main.SECTIONS]
    assert latest.read_text() == "the last full run\n"
    assert list(tmp_path.iterdir()) == [latest]
    printed = capsys.readouterr()
    assert "**NO**" not in printed.out
    assert "| yes |" not in printed.out
    # Every row with a goal says it was not judged: 3 per section (two submit goals, one results goal),
    # printed in the section's table and in the whole run's.
    assert printed.out.count("| not judged (--quick) |") == 2 * 3 * len(bench_main.SECTIONS)  # section, whole
    assert "goal missed" not in printed.err


def test_quick_writes_only_to_another_file_it_is_given(tmp_path: Path) -> None:
    latest = tmp_path / "latest.md"
    other = tmp_path / "quick.md"
    assert (
        bench_main.main(
            ["--quick", "--only", "results", "--out", str(other)], measure=_fake_sections([]), latest=latest
        )
        == 0
    )
    assert not latest.exists()
    assert "not judged (--quick)" in other.read_text()
    assert "**NO**" not in other.read_text()
    with pytest.raises(SystemExit) as refused:
        bench_main.main(["--quick", "--out", str(latest)], measure=_fake_sections([]), latest=latest)
    assert refused.value.code == 2
    assert not latest.exists()


def test_unjudged_keeps_the_goal_text_and_drops_the_verdict() -> None:
    figures = goals.unjudged(
        [Figure("a", "missed", 1.0, "s", goal="< 1 s", met=False), Figure("a", "no goal", 1.0, "s")]
    )
    assert [(figure.goal, figure.met, figure.row()[-1]) for figure in figures] == [
        ("< 1 s", None, "not judged (--quick)"),
        ("", None, ""),
    ]
    assert goals.exit_status(figures) == 0
