"""The job and shard state machines, walked: every state is reachable from the first one,
every state can still end, the final ones go nowhere, and moves outside the tables are refused."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from batchdrop.domain.states import (
    JOB_NEXT,
    OPEN_JOB_STATUSES,
    SHARD_NEXT,
    JobStatus,
    ShardState,
    TransitionError,
    check_job_move,
    check_shard_move,
    mermaid,
)

pytestmark = pytest.mark.unit


def _reachable[S](table: Mapping[S, frozenset[S]], start: S) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for new in table[todo.pop()]:
            if new not in seen:
                seen.add(new)
                todo.append(new)
    return seen


def test_the_tables_name_every_state_once() -> None:
    assert set(JOB_NEXT) == set(JobStatus)
    assert set(SHARD_NEXT) == set(ShardState)


def test_every_job_status_is_reachable_from_received_and_can_end() -> None:
    assert _reachable(JOB_NEXT, JobStatus.RECEIVED) == set(JobStatus)
    final = {status for status, nexts in JOB_NEXT.items() if not nexts}
    assert final == set(JobStatus) - OPEN_JOB_STATUSES
    for status in JobStatus:
        assert _reachable(JOB_NEXT, status) & final, status


def test_every_shard_state_is_reachable_from_pending_and_ends_collected_or_split() -> None:
    assert _reachable(SHARD_NEXT, ShardState.PENDING) == set(ShardState)
    ends = {ShardState.COLLECTED, ShardState.SPLIT}
    assert {state for state, nexts in SHARD_NEXT.items() if not nexts} == ends
    for state in ShardState:
        assert ends & (_reachable(SHARD_NEXT, state) | {state}), state
    # Only a refused body is split: its requests go on in two new shards
    assert [state for state, nexts in SHARD_NEXT.items() if ShardState.SPLIT in nexts] == [ShardState.REFUSED]


def test_a_collected_shard_and_a_finished_job_never_move() -> None:
    with pytest.raises(TransitionError):
        check_shard_move(ShardState.COLLECTED, ShardState.PENDING)
    for status in set(JobStatus) - OPEN_JOB_STATUSES:
        with pytest.raises(TransitionError):
            check_job_move(status, JobStatus.SUBMITTING)


@pytest.mark.parametrize("state", list(ShardState))
def test_each_shard_move_is_allowed_exactly_when_the_table_has_it(state: ShardState) -> None:
    for new in ShardState:
        if new in SHARD_NEXT[state]:
            assert check_shard_move(state, new) == {state}
        else:
            with pytest.raises(TransitionError, match=f"to {new}"):
                check_shard_move(state, new)


def test_a_job_may_stay_in_its_status_but_a_shard_never_stays_in_its_state() -> None:
    assert check_job_move({JobStatus.SUBMITTING, JobStatus.RUNNING}, JobStatus.SUBMITTING) == {
        JobStatus.SUBMITTING,
        JobStatus.RUNNING,
    }
    for state in ShardState:
        with pytest.raises(TransitionError):
            check_shard_move(state, state)


def test_a_move_from_several_states_needs_each_of_them_allowed() -> None:
    both = {ShardState.UNKNOWN, ShardState.SUBMITTING}
    assert check_shard_move(both, ShardState.SUBMITTED) == both
    with pytest.raises(TransitionError, match="PENDING"):
        check_shard_move({ShardState.PENDING, ShardState.SUBMITTING}, ShardState.SUBMITTED)
    with pytest.raises(TransitionError):
        check_job_move(set(), JobStatus.RUNNING)


def test_the_diagram_draws_every_move_of_both_tables() -> None:
    drawn = mermaid()
    for table in (JOB_NEXT, SHARD_NEXT):
        for state, nexts in table.items():
            for new in nexts:
                assert f"    {state} --> {new}\n" in drawn
    moves = sum(len(nexts) for nexts in (*JOB_NEXT.values(), *SHARD_NEXT.values()))
    finals = sum(not nexts for nexts in (*JOB_NEXT.values(), *SHARD_NEXT.values()))
    assert drawn.count(" --> ") == moves + finals + 2  # and one start arrow per machine
