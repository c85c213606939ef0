"""A job's progress as text: the live line `batchdrop submit --wait` and `status --watch`
redraw on a terminal, the plain line they print on each change otherwise, and the durations
both use. Pure functions of a Progress value and the time."""

from __future__ import annotations

from datetime import UTC, datetime

from batchdrop_client.views import Progress

BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `23h 59m`, `2d 04h`: the two largest units, rounded down."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _expiry(progress: Progress, now: datetime) -> str | None:
    if progress.expires_at is None:
        return None
    left = (progress.expires_at - now).total_seconds()
    return f"expires in {format_duration(left)}" if left > 0 else f"past its expiry by {format_duration(-left)}"


def _expiry_stamp(progress: Progress) -> str | None:
    """The nearest expiry as a moment (UTC, to the second): a log line stays the same until
    the job moves, where a countdown would change every time it is printed."""
    if progress.expires_at is None:
        return None
    return f"expires {progress.expires_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _batches(count: int) -> str:
    return "no batch open" if count == 0 else f"{count} batch{'' if count == 1 else 'es'} open"


def _done(progress: Progress) -> tuple[str, str]:
    """`done/total` and the percentage (`?` and `--%` while the total is not known)."""
    if progress.total is None:
        return f"{progress.done}/?", "--%"
    share = 1.0 if progress.total == 0 else min(1.0, progress.done / progress.total)
    return f"{progress.done}/{progress.total}", f"{int(share * 100)}%"


def bar(progress: Progress, width: int = BAR_WIDTH) -> str:
    """`[#########...............]`: the share of requests done (all dots while unknown)."""
    if progress.total is None:
        filled = 0
    else:
        filled = width if progress.total == 0 else int(width * min(1.0, progress.done / progress.total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(progress: Progress, now: datetime, *, tty: bool) -> str:
    """The line to show. On a terminal (`tty`), with a bar and the time elapsed, redrawn in
    place: `RUNNING  [############............]  6/12  50%  0m 07s  1 batch open  expires in 23h 59m`.
    Otherwise a plain line without the elapsed time and with the expiry as a moment, so that
    it changes only when the job moves:
    `RUNNING: 6/12 requests done (50%), 1 batch open, expires 2026-12-07T09:30:00Z`."""
    done, percent = _done(progress)
    if tty:
        expiry = _expiry(progress, now)
        parts = [progress.status, bar(progress), done, f"{percent:>4}", format_duration(progress.elapsed)]
        parts.append(_batches(progress.batches_open))
        if expiry:
            parts.append(expiry)
        return "  ".join(parts)
    line = f"{progress.status}: {done} requests done ({percent}), {_batches(progress.batches_open)}"
    stamp = _expiry_stamp(progress)
    return f"{line}, {stamp}" if stamp else line
