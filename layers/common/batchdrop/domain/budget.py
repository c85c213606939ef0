"""A job's budget: whether a job may be sent as its estimate stands, or waits for approval.

A job whose upper-bound estimate (`cost_usd.batch_max`: every max_tokens used, the input at
the top of its interval, every cached prefix written) is over the job budget is not sent: it
waits as AWAITING_APPROVAL until `approve/<job_id>` (or `batchdrop approve`) sends it,
`cancel/<job_id>` drops it, or it expires. All of a job's shards are held or none is: the
verdict is made once, before any is recorded. Without a budget every job is sent; with one, a
job whose estimate could not be made waits too, since nothing bounds what it may cost."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_USD = Decimal("0.000001")
APPROVE_PREFIX = "approve/"


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
    job_id: str, estimate: Mapping[str, Any] | None, job_budget: Decimal | None, *, expires_at: str
) -> dict[str, Any] | None:
    """What errors/<job_id>/budget.json says of a job held for approval (None: it may go)."""
    if job_budget is None:
        return None
    budget = job_budget.quantize(_USD)
    if estimate is None:
        reason = f"no estimate of its cost could be made, and the job budget is ${budget}"
        return _held(job_id, reason, budget, None, None, expires_at)
    costs = estimate.get("cost_usd") or {}
    most = Decimal(str(costs["batch_max"]))
    if most <= budget:
        return None
    over = (most - budget).quantize(_USD)
    reason = f"its estimate is at most ${most}, ${over} over the job budget of ${budget}"
    return _held(job_id, reason, budget, costs, over, expires_at)


def _held(
    job_id: str,
    reason: str,
    budget: Decimal,
    costs: Mapping[str, Any] | None,
    over: Decimal | None,
    expires_at: str,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "reason": reason,
        "job_budget_usd": str(budget),
        "estimate_max_usd": None if costs is None else str(costs["batch_max"]),
        "estimate_expected_usd": None if costs is None else str(costs.get("batch_cached_expected")),
        "over_by_usd": None if over is None else str(over),
        "expires_at": expires_at,
        "approve": f"batchdrop approve {job_id}, or put an object at {approve_key(job_id)}",
        "cancel": f"batchdrop cancel {job_id}, or put an object at cancel/{job_id}",
    }
