"""A job's budget: whether a job may be sent as its estimate stands, or waits for approval.

A job whose upper-bound estimate (`cost_usd.batch_max`: every max_tokens used, the input at
the top of its interval, every cached prefix written) is over the job budget is not sent: it
waits as AWAITING_APPROVAL until `approve/<job_id>` (or `batchdrop approve`) sends it,
`cancel/<job_id>` drops it, or it expires. All of a job's shards are held or none is: the
verdict is made once, before any is recorded. Without a budget every job is sent; with one, a
job whose estimate could not be made waits too, since nothing bounds what it may cost.

A budget across jobs (the stack's DailyBudgetUsd) bounds a UTC day's spend: the sum, over the
jobs sent that day, of each open job's upper-bound estimate and each finished job's actual cost.
A job whose upper bound would take the day past it waits as one over its own budget does. The
day's spend is one counter in the state table: a job adds its upper bound as it is sent, in the
same transaction as its move to SUBMITTING (on the condition that the day still has room, so two
jobs sent at once cannot both take the last of it), and swaps it for its actual cost as it
finishes, in the transaction that closes it. Each is counted once, on the day it was sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_USD = Decimal("0.000001")
APPROVE_PREFIX = "approve/"


@dataclass(frozen=True)
class DaySpend:
    """What a job adds to a UTC day's spend: its upper-bound estimate as it is sent, the
    difference from its actual cost as it finishes. With `cap`, the addition is made only if
    the day's spend stays within it (DailyBudgetTaken otherwise)."""

    day: str  # YYYY-MM-DD, UTC
    usd: Decimal
    cap: Decimal | None = None


class DailyBudgetTaken(Exception):
    """The day's spend has no room left for a job any more: another job sent meanwhile took it."""


def spend_day(now: datetime) -> str:
    """The UTC day a job sent at `now` counts against."""
    return now.astimezone(UTC).date().isoformat()


def estimate_max(estimate: Mapping[str, Any] | None) -> Decimal:
    """A job's upper-bound estimate in USD (0 without one: its actual cost is counted as it ends)."""
    if estimate is None:
        return Decimal(0)
    return Decimal(str((estimate.get("cost_usd") or {}).get("batch_max", 0)))


def budget_key(job_id: str) -> str:
    """Where a held job says why: errors/<job_id>/budget.json."""
    return f"errors/{job_id}/budget.json"


def approve_key(job_id: str) -> str:
    return f"{APPROVE_PREFIX}{job_id}"


def parse_budget(name: str, text: str | None) -> Decimal | None:
    """A budget in US dollars from its setting: None for none (empty or 0); ValueError, naming
    the setting, for anything but a positive amount."""
    if text is None or not text.strip():
        return None
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount in US dollars, such as 25 or 2.50; got {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be 0 (no budget) or a positive amount in US dollars; got {text!r}")
    return amount if amount > 0 else None


def held_for_budget(
    job_id: str,
    estimate: Mapping[str, Any] | None,
    job_budget: Decimal | None,
    *,
    expires_at: str,
    daily_budget: Decimal | None = None,
    spent: Decimal = Decimal(0),
    day: str = "",
) -> dict[str, Any] | None:
    """What errors/<job_id>/budget.json says of a job held for approval (None: it may go):
    over `job_budget`, or over `daily_budget` with `spent` on `day` already."""
    if job_budget is None and daily_budget is None:
        return None
    daily = None if daily_budget is None else _daily(daily_budget, spent, day)
    budget = None if job_budget is None else job_budget.quantize(_USD)
    if estimate is None:
        budgets = [f"the job budget is ${budget}"] if budget is not None else []
        if daily is not None:
            budgets.append(f"the daily budget is ${daily['daily_budget_usd']}")
        named = " and ".join(budgets)
        reason = f"no estimate of its cost could be made, and {named}"
        return _held(job_id, "no_estimate", reason, budget, None, None, expires_at, daily)
    costs = estimate.get("cost_usd") or {}
    most = Decimal(str(costs["batch_max"]))
    if budget is not None and most > budget:
        over = (most - budget).quantize(_USD)
        reason = f"its estimate is at most ${most}, ${over} over the job budget of ${budget}"
        return _held(job_id, "job_budget", reason, budget, costs, over, expires_at, daily)
    if daily_budget is not None and spent + most > daily_budget:
        total = (spent + most).quantize(_USD)
        over = (total - daily_budget).quantize(_USD)
        reason = (
            f"its estimate of at most ${most} would take {day}'s spend (UTC) from ${spent.quantize(_USD)} to "
            f"${total}, ${over} over the daily budget of ${daily_budget.quantize(_USD)}"
        )
        return _held(job_id, "daily_budget", reason, budget, costs, over, expires_at, daily)
    return None


def _daily(daily_budget: Decimal, spent: Decimal, day: str) -> dict[str, str]:
    return {"day": day, "daily_budget_usd": str(daily_budget.quantize(_USD)), "spent_usd": str(spent.quantize(_USD))}


def _held(
    job_id: str,
    held_by: str,
    reason: str,
    budget: Decimal | None,
    costs: Mapping[str, Any] | None,
    over: Decimal | None,
    expires_at: str,
    daily: Mapping[str, str] | None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "held_by": held_by,  # job_budget, daily_budget, or no_estimate
        "reason": reason,
        "job_budget_usd": None if budget is None else str(budget),
        **({} if daily is None else {"daily": dict(daily)}),
        "estimate_max_usd": None if costs is None else str(costs["batch_max"]),
        "estimate_expected_usd": None if costs is None else str(costs.get("batch_cached_expected")),
        "over_by_usd": None if over is None else str(over),
        "expires_at": expires_at,
        "approve": f"batchdrop approve {job_id}, or put an object at {approve_key(job_id)}",
        "cancel": f"batchdrop cancel {job_id}, or put an object at cancel/{job_id}",
    }
