"""Every duration the pipeline waits, bounds or tolerates, in one value passed to the
services (production: the defaults; the local stack's soak and tests compress them), and
the one text format of a moment the state table stores."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

# The fields `compressed` divides: the clocks a create, its lease and its settling run on.
# The tick's own budget and margins stay: they are about the function's time, not the API's.
_COMPRESSIBLE = ("create_timeout", "lease_margin", "stale_pending_lease", "grace", "lease_wait")


@dataclass(frozen=True, slots=True)
class Timings:
    """Durations in seconds. `create_window` (derived) is the longest a create can be in flight."""

    # The SDK's timeout on a create. It bounds each phase (connect, each write, the read), not
    # the whole call, so a 256 MB upload can outlast it: see create_window.
    create_timeout: float = 300.0
    # Beyond create_window: a SUBMITTING shard whose intent is older than create_window plus
    # this was left behind by a crash; the lease records the same bound (informative).
    lease_margin: float = 60.0
    # A lease whose shard is still PENDING this long after it was taken lost its holder
    # between taking the lease and recording the intent.
    stale_pending_lease: float = 60.0
    # How long the submit function waits for another create to release the lease before it
    # leaves the shard to the checker.
    lease_wait: float = 30.0
    lease_poll: float = 0.5
    # How long after its intent a shard with no matching batch is taken as never created.
    grace: float = 120.0
    # Clock difference tolerated between ours and the provider's.
    skew: float = 60.0
    # A tick starts no new work this long after it began (ticks come every minute to a
    # function of reserved concurrency 1: a tick still running when the next is due would
    # throttle it into the failure queue), nor with less than `tick_safety` left.
    tick_budget: float = 45.0
    tick_safety: float = 60.0
    # A batch still open this long after its expires_at is flagged and canceled, so it ends.
    expiry_margin: float = 3600.0
    # The sweeper leaves versions younger than this to their own event, looks no further
    # back than sweep_window, and starts no job with less than sweep_safety left.
    sweep_min_age: float = 600.0
    sweep_window: float = 7 * 86_400.0
    sweep_safety: float = 300.0
    # A job still RECEIVED this long after it was created was left behind: its function
    # died (out of memory, out of time) on every try, or failed in a way no reason was kept
    # for. The sweeper re-drives it through the intake, at most once per `redrive_every`, and
    # fails it with its reason after a fixed number of tries (services/sweeper.py). Both
    # bounds outlast any invocation that could still be running on the job: stuck_after the
    # submit function's S3 events (kept up to 6 h, then up to 15 min of run: template.yaml's
    # MaximumEventAgeInSeconds and Timeout), redrive_every a sweep's own event (kept up to
    # 15 min, then up to 15 min of run). A test holds them to the template.
    stuck_after: float = 6.5 * 3600
    redrive_every: float = 32 * 60.0
    # A split stops at the next shard boundary once its invocation has less than this left:
    # enough to fill and close one more shard, record the shards, write the custom_ids seen
    # and the checkpoint (services/segments.py). The next sweep after the invocation's
    # deadline goes on from there. The tests raise it to split a small file in segments.
    split_reserve: float = 120.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"timings.{field.name}: a number of seconds, got {value!r}")

    @property
    def create_window(self) -> float:
        """The longest a create can be in flight: the function's own limit ends it (900 s,
        Lambda's maximum), which is 3 times the create timeout."""
        return 3 * self.create_timeout

    @property
    def stale_intent(self) -> float:
        """How old a SUBMITTING intent is when its create can no longer be in flight."""
        return self.create_window + self.lease_margin

    def compressed(self, scale: float) -> Timings:
        """The create's, lease's and settling's clocks divided by `scale`, in the same
        ratios (the soak and the end-to-end tests run minutes as seconds)."""
        return replace(self, **{name: getattr(self, name) / scale for name in _COMPRESSIBLE})

    def as_dict(self) -> dict[str, float]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Timings:
        """Timings with the named fields changed; an unknown name raises ValueError."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown timings {unknown}; known: {sorted(known)}")
        return cls(**values)


def stamp(moment: datetime) -> str:
    """A moment as the state table stores it (UTC, milliseconds, Z): stamps compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
