"""The progress line `submit --wait` and `status --watch` show (batchdrop_client.progress): the
terminal form with its bar and elapsed time, the plain form printed on each change, unknown
totals, no open batch, and the durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchdrop_client.progress import bar, format_duration, progress_line
from batchdrop_client.views import Progress

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 18, 0, 0, tzinfo=UTC)


def running(done: int, total: int | None, *, open_batches: int = 1, expires_in: timedelta | None = None) -> Progress:
    expires = None if expires_in is None else NOW + expires_in
    return Progress("RUNNING", done, total, open_batches, expires, elapsed=67.4)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45.9, "45s"),
        (60, "1m 00s"),
        (185, "3m 05s"),
        (3600, "1h 00m"),
        (23 * 3600 + 59 * 60 + 59, "23h 59m"),
        (2 * 86400 + 4 * 3600 + 5, "2d 04h"),
        (-3, "0s"),
    ],
)
def test_durations_are_their_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_terminal_line_has_a_bar_the_share_the_elapsed_time_the_batches_and_the_nearest_expiry() -> None:
    progress = running(6, 12, expires_in=timedelta(hours=23, minutes=59, seconds=30))

    assert progress_line(progress, NOW, tty=True) == (
        "RUNNING  [############............]  6/12   50%  1m 07s  1 batch open  expires in 23h 59m"
    )


def test_the_plain_line_has_no_bar_and_no_elapsed_time_so_it_changes_only_when_the_job_moves() -> None:
    progress = running(9, 12, open_batches=2, expires_in=timedelta(minutes=5))
    later = Progress(**{**progress.__dict__, "elapsed": 300.0})

    line = progress_line(progress, NOW, tty=False)

    assert line == "RUNNING: 9/12 requests done (75%), 2 batches open, expires 2026-12-06T18:05:00Z"
    assert progress_line(later, NOW, tty=False) == line
    assert progress_line(later, NOW + timedelta(seconds=61), tty=False) == line  # no countdown


def test_an_unknown_total_shows_a_question_mark_and_an_empty_bar() -> None:
    waiting = Progress("WAITING", 0, None, 0, None, elapsed=2.0)

    assert progress_line(waiting, NOW, tty=False) == "WAITING: 0/? requests done (--%), no batch open"
    assert progress_line(waiting, NOW, tty=True) == (
        "WAITING  [........................]  0/?   --%  2s  no batch open"
    )


def test_no_open_batch_has_no_expiry() -> None:
    submitting = Progress("SUBMITTING", 0, 12, 0, None, elapsed=1.0)

    assert progress_line(submitting, NOW, tty=False) == "SUBMITTING: 0/12 requests done (0%), no batch open"


def test_a_batch_past_its_expiry_says_by_how_much_on_a_terminal() -> None:
    late = running(3, 12, expires_in=timedelta(minutes=-2))

    assert progress_line(late, NOW, tty=True).endswith("1 batch open  past its expiry by 2m 00s")
    assert progress_line(late, NOW, tty=False) == (
        "RUNNING: 3/12 requests done (25%), 1 batch open, expires 2026-12-06T17:58:00Z"
    )


@pytest.mark.parametrize(
    ("done", "total", "drawn"),
    [(0, 12, "." * 24), (12, 12, "#" * 24), (1, 3, "#" * 8 + "." * 16), (0, 0, "#" * 24), (15, 12, "#" * 24)],
)
def test_the_bar_fills_with_the_share_done(done: int, total: int, drawn: str) -> None:
    assert bar(running(done, total)) == f"[{drawn}]"
