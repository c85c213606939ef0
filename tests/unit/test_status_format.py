"""`batchdrop status`'s pure helpers: the age column and the `--since` filter's reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from batchdrop_local.commands import format_age, parse_since

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 18, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(minutes=3, seconds=59), "3m"),
        (timedelta(minutes=59, seconds=59), "59m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=23, minutes=59), "23h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=5, hours=23), "5d"),
        (timedelta(days=400), "400d"),
        (timedelta(seconds=-5), "0s"),  # the table's clock a little ahead of this one
    ],
)
def test_age_is_its_largest_whole_unit(age: timedelta, text: str) -> None:
    assert format_age(age) == text


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("2H", NOW - timedelta(hours=2)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(weeks=1)),
        ("0m", NOW),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-12-01T09:30Z", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-11-23T10:34:52.150Z", datetime(2026, 11, 23, 10, 34, 52, 150000, tzinfo=UTC)),
        ("2026-12-01T09:30+02:00", datetime(2026, 12, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))),
    ],
)
def test_since_reads_a_duration_back_from_now_or_an_iso_time(text: str, moment: datetime) -> None:
    assert parse_since(text, NOW) == moment


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "h", "-2h", "1.5h", "2026-13-01", "12/01/2026"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="give a duration"):
        parse_since(text, NOW)
