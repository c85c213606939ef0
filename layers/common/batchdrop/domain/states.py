"""The job and shard state machines, written once: each state's allowed next states. The
state table's conditional writes are checked against these tables, and
docs/architecture.md draws them (`mermaid()` makes the diagrams; a test keeps them equal)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import cast


class JobStatus(StrEnum):
    RECEIVED = "RECEIVED"  # the object version has a job; its lines are being read
    # Its shards are recorded; its estimate is over a budget: nothing is sent until approved.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    SUBMITTING = "SUBMITTING"  # its shards are recorded; some have no batch yet
    RUNNING = "RUNNING"  # every shard has its batch, or its results
    COMPLETED = "COMPLETED"  # every request succeeded and no line was rejected
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"  # every request has its final outcome, not all succeeded
    FAILED = "FAILED"  # nothing to send: every line rejected, or an empty file
    CANCELED = "CANCELED"  # canceled on request: the results so far, the rest `canceled`


class ShardState(StrEnum):
    PENDING = "PENDING"  # its body is in work/; no create is under way
    SUBMITTING = "SUBMITTING"  # the intent is recorded: a create is being sent
    UNKNOWN = "UNKNOWN"  # the create may have made a batch: only listing the batches settles it
    SUBMITTED = "SUBMITTED"  # its batch is known and open
    COLLECTED = "COLLECTED"  # every request of the shard has its final outcome in results/
    CANCELING = "CANCELING"  # never sent, its job canceled: its `canceled` results are being written
    REFUSED = "REFUSED"  # the API refused its body for good: split in two, or its `errored` result written
    SPLIT = "SPLIT"  # its refused requests went on as two new shards (halves); it sends nothing more


_FINAL_JOB = frozenset({JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.CANCELED})

JOB_NEXT: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RECEIVED: frozenset({JobStatus.SUBMITTING, JobStatus.FAILED, JobStatus.AWAITING_APPROVAL}),
    # Approved, canceled or expired: SUBMITTING either way (a canceled job's unsent shards are
    # closed `canceled` by the checker, as any canceled job's).
    JobStatus.AWAITING_APPROVAL: frozenset({JobStatus.SUBMITTING}),
    # Straight to a final status too: a job whose shards were all closed unsent (canceled,
    # refused) never had every batch open at once.
    JobStatus.SUBMITTING: frozenset({JobStatus.RUNNING, JobStatus.FAILED, *_FINAL_JOB}),
    # Back to SUBMITTING when a shard is scheduled for another attempt.
    JobStatus.RUNNING: frozenset({JobStatus.SUBMITTING, *_FINAL_JOB}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.COMPLETED_WITH_ERRORS: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}

SHARD_NEXT: Mapping[ShardState, frozenset[ShardState]] = {
    ShardState.PENDING: frozenset({ShardState.SUBMITTING, ShardState.CANCELING}),
    ShardState.SUBMITTING: frozenset(
        {
            ShardState.SUBMITTED,  # the create answered with its batch (or listing found it)
            ShardState.UNKNOWN,  # the create got no answer, or a 5xx
            ShardState.PENDING,  # refused for now (429, 401...), or listing showed no batch was made
            ShardState.REFUSED,  # refused for good (400, 413, 422)
        }
    ),
    ShardState.UNKNOWN: frozenset({ShardState.SUBMITTED, ShardState.PENDING}),
    # PENDING again: some requests ended transiently and go out in the next attempt's batch.
    ShardState.SUBMITTED: frozenset({ShardState.COLLECTED, ShardState.PENDING}),
    ShardState.CANCELING: frozenset({ShardState.COLLECTED}),
    # SPLIT: a refused body of more than one request is halved into two new shards, so only
    # the requests the API refuses on their own end `errored`.
    ShardState.REFUSED: frozenset({ShardState.COLLECTED, ShardState.SPLIT}),
    ShardState.COLLECTED: frozenset(),
    ShardState.SPLIT: frozenset(),
}

# Jobs the pipeline still works on: they stay in the table's open index.
OPEN_JOB_STATUSES = frozenset(
    {JobStatus.RECEIVED, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING, JobStatus.RUNNING}
)
# Shards whose create may have made a batch the table does not know of yet.
UNSETTLED_SHARD_STATES = frozenset({ShardState.SUBMITTING, ShardState.UNKNOWN})
# Shards that have their batch, or need none any more.
SENT_SHARD_STATES = frozenset({ShardState.SUBMITTED, ShardState.COLLECTED, ShardState.SPLIT})
# Shards that need nothing more: a job whose shards are all in these is finished.
DONE_SHARD_STATES = frozenset({ShardState.COLLECTED, ShardState.SPLIT})


class TransitionError(ValueError):
    """A move the state machine does not have."""


def check_job_move(expected: JobStatus | Iterable[JobStatus], new: JobStatus) -> frozenset[JobStatus]:
    """The statuses a job may be in for a write that sets `new`; raises TransitionError when
    one of them may not move there. A job may also stay in its status (a shard scheduled for
    another attempt puts a SUBMITTING job's status to SUBMITTING again)."""
    return _check(JOB_NEXT, expected, new, may_stay=True)


def check_shard_move(expected: ShardState | Iterable[ShardState], new: ShardState) -> frozenset[ShardState]:
    """As check_job_move, for a shard; a shard never "moves" to the state it is in, so a
    writer holding a stale read can never rewrite a shard that has moved on (a COLLECTED
    shard's outcome, say)."""
    return _check(SHARD_NEXT, expected, new, may_stay=False)


def _check[S: StrEnum](
    table: Mapping[S, frozenset[S]], expected: S | Iterable[S], new: S, *, may_stay: bool
) -> frozenset[S]:
    # One state is told from an iterable of them by isinstance str, so a plain str stays one state;
    # mypy narrows `S | Iterable[S]` by str to plain str (a str is an Iterable too), hence the cast.
    states: frozenset[S] = frozenset((cast(S, expected),)) if isinstance(expected, str) else frozenset(expected)
    wrong = sorted(state for state in states if new not in table[state] and not (may_stay and state == new))
    if not states or wrong:
        raise TransitionError(f"no move from {wrong or 'nothing'} to {new}")
    return states


def mermaid() -> str:
    """Both state machines as Mermaid `stateDiagram-v2` blocks, in the tables' order."""
    blocks = []
    for start, table in ((JobStatus.RECEIVED, JOB_NEXT), (ShardState.PENDING, SHARD_NEXT)):
        lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {start}"]
        for state, nexts in table.items():
            lines.extend(f"    {state} --> {new}" for new in sorted(nexts))
            if not nexts:
                lines.append(f"    {state} --> [*]")
        lines.append("```")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
