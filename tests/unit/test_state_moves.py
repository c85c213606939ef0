"""The state table's conditional writes, move by move, against moto's in-process DynamoDB
(the table created as template.yaml declares it) and against the unit tests' FakeStateStore,
side by side: each write must succeed exactly when the item is in a state its move starts
from (and that move is in the state machine), and its fences hold; and the fake must answer
as the adapter does and leave the same item behind, so the two cannot drift apart."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from cfnlint.decode import decode_str
from moto import mock_aws

from batchdrop.adapters.state import StateTable
from batchdrop.domain.budget import DailyBudgetTaken, DaySpend
from batchdrop.domain.records import (
    JobRecord,
    NextAttempt,
    Outcome,
    PipelineRef,
    ShardPlan,
    ShardRecord,
    SourceRef,
    SplitCheckpoint,
)
from batchdrop.domain.states import JOB_NEXT, SHARD_NEXT, JobStatus, ShardState, TransitionError
from batchdrop.ports import StateStore
from tests.unit.fakes import FakeStateStore

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
SENT_AT = "2026-11-23T10:00:00.000Z"
OWNER = "lease-owner"
BATCH = "msgbatch_seen"
KEY = "work/j/shard-00000.jsonl"
OUTCOME = Outcome(
    counts={"succeeded": 2},
    result_keys=("results/j/results-00000.jsonl",),
    attempts_log=({"attempt": 1, "batch_id": BATCH, "requests": 2, "counts": {"succeeded": 2}},),
    usage={"claude-haiku-4-5": {"input_tokens": 20, "output_tokens": 4}},
    ended_at="2026-11-23T11:00:00.000Z",
)
RETRY = NextAttempt(attempt=2, key="work/j/shard-00000-a2.jsonl", requests=1, size=40, ids_digest="d2")
HALVES = (
    ShardPlan(index=1, key="work/j/shard-00000-a1-half0.jsonl", requests=1, size=40, ids_digest="h0", version_id="v0"),
    ShardPlan(index=2, key="work/j/shard-00000-a1-half1.jsonl", requests=1, size=40, ids_digest="h1", version_id="v1"),
)
SPLIT_ENTRY = {"attempt": 1, "batch_id": None, "requests": 2, "counts": {}, "retried": 2, "split_into": [1, 2]}


# --- the table, as template.yaml declares it --------------------------------------------


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """moto's in-process DynamoDB, one table for the module (each test uses its own job)."""
    decoded, errors = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    assert not errors, errors
    tables = [r for r in decoded["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert len(tables) == 1
    properties = json.loads(json.dumps(tables[0]["Properties"]))  # cfn-lint's nodes, as plain values
    with pytest.MonkeyPatch.context() as env:
        # moto's in-process mock answers AWS's own endpoints only: an endpoint another test set
        # in the environment (the local stack's) would send these calls to the network.
        for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
            env.delenv(name)
        with mock_aws():
            boto3.client("dynamodb", region_name=REGION).create_table(
                TableName="state",
                BillingMode=properties["BillingMode"],
                AttributeDefinitions=properties["AttributeDefinitions"],
                KeySchema=properties["KeySchema"],
                GlobalSecondaryIndexes=properties["GlobalSecondaryIndexes"],
            )
            yield boto3.resource("dynamodb", region_name=REGION)


@dataclass
class Both:
    """The adapter on moto and the fake, given the same items; `job_id` is this test's."""

    table: StateTable
    fake: FakeStateStore
    raw: Any  # the moto table, to put items in a given state
    job_id: str

    @property
    def stores(self) -> tuple[StateStore, StateStore]:
        return self.table, self.fake

    def same(self, write: Callable[[StateStore], Any]) -> Any:
        """Do `write` on both; its answer, once both gave it and hold the same items after it.
        (A write refused, or raising, must leave the fake as it was; DynamoDB sees to it for
        the adapter, so its items are read back only after a write that held.)"""
        before = self._fake_items()
        answers = [_answer(write, store) for store in self.stores]
        assert answers[0] == answers[1], f"adapter: {answers[0]!r}, fake: {answers[1]!r}"
        if answers[0] is False or isinstance(answers[0], tuple):
            assert self._fake_items() == before
        else:
            assert self.table.job_and_shards(self.job_id) == self.fake.job_and_shards(self.job_id)
            assert _in_index(self, self.table) == _in_index(self, self.fake)
        if isinstance(answers[0], tuple):
            raise answers[0][0](answers[0][1])
        return answers[0]

    def _fake_items(self) -> tuple[Any, ...]:
        fake = self.fake
        return (dict(fake.jobs), dict(fake.shard_items), set(fake.open_index), dict(fake.batch_owners), fake.lease)

    def given(
        self, status: JobStatus, state: ShardState | None = None, *, cancel: bool = False, **fields: Any
    ) -> ShardRecord | None:
        """Put the job's item in `status` and, with `state`, its shard 0's item in that state
        (in one write); the shard as a reader sees it. The shard holds every fence a move may
        check, whatever its state: an intent (SENT_AT, OWNER), a batch id, its attempt and key."""
        job = JobRecord(
            self.job_id,
            status,
            SourceRef("bucket", "inbox/x.jsonl", "v1"),
            "2026-11-23T09:00:00.000Z",
            requested=2,
            shard_count=1,
            cancel_requested_at=SENT_AT if cancel else None,
        )
        items: list[dict[str, Any]] = [
            {
                "PK": f"JOB#{self.job_id}",
                "SK": "JOB",
                "job_id": self.job_id,
                "status": str(status),
                **job.source.as_dict(),
                "created_at": job.created_at,
                "requested": job.requested,
                "rejected": 0,
                "shard_count": 1,
                **({"cancel_requested_at": SENT_AT} if cancel else {}),
            }
        ]
        self.fake.put_job(job)
        if status in (JobStatus.SUBMITTING, JobStatus.RUNNING):  # the jobs in the open index
            items[0].update(GSI1PK="OPEN", GSI1SK=f"JOB#{self.job_id}")
        shard = None
        if state is not None:
            values: dict[str, Any] = {
                "batch_id": BATCH,
                "sent_at": SENT_AT,
                "lease_owner": OWNER,
                "creates_sent": 1,
                "overdue_at": "2026-11-24T11:00:00.000Z",
                **fields,
            }
            shard = ShardRecord(
                job_id=self.job_id,
                index=0,
                state=state,
                key=KEY,
                requests=2,
                attempt_requests=2,
                size=80,
                ids_digest="d1",
                attempt=1,
                max_attempts=3,
                **values,
            )
            item = {"PK": f"JOB#{self.job_id}", "SK": "SHARD#00000", "job_id": self.job_id, "index": 0}
            item.update({name: getattr(shard, name) for name in _SHARD_SCALARS if getattr(shard, name) is not None})
            if state is ShardState.SUBMITTED:  # the shards in the open index
                item.update(GSI1PK="OPEN", GSI1SK=f"SHARD#{self.job_id}#00000")
            items.append(item)
            self.fake.put_shard(shard)
        with self.raw.batch_writer() as batch:
            for item in items:
                batch.put_item(Item=item)
        return shard

    def hold_lease(self, owner: str | None) -> None:
        for store in self.stores:
            lease = store.get_create_lease()
            if lease is not None:
                store.release_create_lease(lease.owner)
            if owner is not None:
                assert store.acquire_create_lease(owner, SENT_AT, SENT_AT)


_SHARD_SCALARS = (
    "state",
    "key",
    "requests",
    "attempt_requests",
    "size",
    "ids_digest",
    "attempt",
    "creates_sent",
    "max_attempts",
    "batch_id",
    "sent_at",
    "lease_owner",
    "overdue_at",
    "version_id",
)


def _answer(write: Callable[[StateStore], Any], store: StateStore) -> Any:
    """What `write` returned, or the error it raised as (its type, its message)."""
    try:
        return write(store)
    except ValueError as exc:  # TransitionError is one
        return (type(exc), str(exc))


def _in_index(both: Both, store: StateStore) -> set[str]:
    """The sort keys of the job's items in the open index."""
    if store is both.fake:
        return {
            "JOB" if index is None else f"SHARD#{index:05d}"
            for job, index in both.fake.open_index
            if job == both.job_id
        }
    items = both.raw.query(KeyConditionExpression=Key("PK").eq(f"JOB#{both.job_id}"), ConsistentRead=True)["Items"]
    return {item["SK"] for item in items if "GSI1PK" in item}


@pytest.fixture
def both(dynamodb: Any) -> Both:
    return Both(StateTable("state", dynamodb), FakeStateStore(), dynamodb.Table("state"), f"j{uuid.uuid4().hex[:24]}")


# --- shard moves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """A move method, as a caller that read the shard in `read_as` makes it."""

    name: str
    starts: frozenset[ShardState]  # the states the write moves the shard from
    to: ShardState
    read_as: ShardState
    write: Callable[[StateStore, ShardRecord], bool]

    def __str__(self) -> str:
        return f"{self.name}({self.read_as})"


def _new_batch(shard: ShardRecord) -> str:
    """A batch no shard owns yet."""
    return f"msgbatch_{shard.job_id}"


S = ShardState
MOVES = [
    Move("begin_submit", frozenset({S.PENDING}), S.SUBMITTING, S.PENDING,
         lambda st, sh: st.begin_submit(sh, "2026-11-23T10:05:00.000Z", OWNER)),
    Move("mark_submitted", frozenset({S.SUBMITTING}), S.SUBMITTED, S.SUBMITTING,
         lambda st, sh: st.mark_submitted(sh.job_id, sh.index, _new_batch(sh), SENT_AT)),
    Move("adopt_batch", frozenset({S.SUBMITTING, S.UNKNOWN}), S.SUBMITTED, S.UNKNOWN,
         lambda st, sh: st.adopt_batch(sh, _new_batch(sh))),
    Move("mark_unknown", frozenset({S.SUBMITTING}), S.UNKNOWN, S.SUBMITTING,
         lambda st, sh: st.mark_unknown(sh.job_id, sh.index, "500", SENT_AT)),
    Move("release_submit", frozenset({S.SUBMITTING}), S.PENDING, S.SUBMITTING,
         lambda st, sh: st.release_submit(sh.job_id, sh.index, "429", SENT_AT)),
    Move("refuse", frozenset({S.SUBMITTING}), S.REFUSED, S.SUBMITTING,
         lambda st, sh: st.refuse(sh.job_id, sh.index, "400", SENT_AT)),
    Move("resubmit_unsettled", frozenset({S.UNKNOWN}), S.PENDING, S.UNKNOWN,
         lambda st, sh: st.resubmit_unsettled(sh, "no batch")),
    Move("resubmit_unsettled", frozenset({S.SUBMITTING}), S.PENDING, S.SUBMITTING,
         lambda st, sh: st.resubmit_unsettled(sh, "no batch")),
    Move("cancel_unsent", frozenset({S.PENDING}), S.CANCELING, S.PENDING,
         lambda st, sh: st.cancel_unsent(sh, "canceled")),
    Move("mark_collected", frozenset({S.SUBMITTED}), S.COLLECTED, S.SUBMITTED,
         lambda st, sh: st.mark_collected(sh, OUTCOME)),
    Move("mark_collected", frozenset({S.CANCELING}), S.COLLECTED, S.CANCELING,
         lambda st, sh: st.mark_collected(sh, OUTCOME)),
    Move("mark_collected", frozenset({S.REFUSED}), S.COLLECTED, S.REFUSED,
         lambda st, sh: st.mark_collected(sh, OUTCOME)),
    Move("schedule_retry", frozenset({S.SUBMITTED}), S.PENDING, S.SUBMITTED,
         lambda st, sh: st.schedule_retry(sh, OUTCOME, RETRY)),
    Move("split_refused", frozenset({S.REFUSED}), S.SPLIT, S.REFUSED,
         lambda st, sh: st.split_refused(sh, 1, HALVES, SPLIT_ENTRY)),
]  # fmt: skip


def test_every_move_starts_from_states_the_state_machine_allows() -> None:
    for move in MOVES:
        assert all(move.to in SHARD_NEXT[start] for start in move.starts), move


@pytest.mark.parametrize("move", MOVES, ids=str)
def test_a_shard_move_succeeds_exactly_from_the_states_it_starts_from(both: Both, move: Move) -> None:
    both.hold_lease(OWNER)
    for state in ShardState:
        # Given the shard's item in `state`, holding the fences the caller read, with the lease
        # held for the intent and a job that may still submit
        both.job_id = f"j{uuid.uuid4().hex[:24]}"
        shard = both.given(JobStatus.RUNNING, state)
        assert shard is not None
        read = replace(shard, state=move.read_as)

        def write(store: StateStore, read: ShardRecord = read) -> bool:
            return move.write(store, read)

        # When the caller makes the move / Then it holds only from the states the move starts from
        moved = both.same(write)
        assert moved is (state in move.starts), f"{move} on a {state} shard"
        after = both.fake.shard_items[(both.job_id, 0)]
        assert after.state is (move.to if moved else state)


@pytest.mark.parametrize("read_as", list(ShardState), ids=str)
def test_a_move_from_a_state_the_machine_does_not_have_is_never_written(both: Both, read_as: ShardState) -> None:
    # Given a shard read in `read_as`
    shard = both.given(JobStatus.RUNNING, read_as)
    assert shard is not None

    # When a caller asks to move it to COLLECTED, or back to PENDING as an unsettled create
    for target, write in (
        (ShardState.COLLECTED, lambda store: store.mark_collected(shard, OUTCOME)),
        (ShardState.PENDING, lambda store: store.resubmit_unsettled(shard, "no batch")),
    ):
        # Then a move the state machine lacks raises before anything is written (a repeated
        # write, from the state it sets, is a move the machine allows)
        if read_as is target or target in SHARD_NEXT[read_as]:
            continue
        with pytest.raises(TransitionError):
            both.same(write)


# --- fences -----------------------------------------------------------------------------

ANOTHER_INTENT = "2026-11-23T10:09:00.000Z"


def _stale(
    name: str, state: ShardState, stale: dict[str, Any], write: Callable[[StateStore, ShardRecord], bool]
) -> Any:
    return pytest.param(state, stale, write, id=name)


@pytest.mark.parametrize(
    ("state", "stale", "write"),
    [
        _stale("mark_submitted: another intent", S.SUBMITTING, {},
               lambda st, sh: st.mark_submitted(sh.job_id, 0, _new_batch(sh), ANOTHER_INTENT)),
        _stale("mark_unknown: another intent", S.SUBMITTING, {},
               lambda st, sh: st.mark_unknown(sh.job_id, 0, "500", ANOTHER_INTENT)),
        _stale("release_submit: another intent", S.SUBMITTING, {},
               lambda st, sh: st.release_submit(sh.job_id, 0, "429", ANOTHER_INTENT)),
        _stale("refuse: another intent", S.SUBMITTING, {},
               lambda st, sh: st.refuse(sh.job_id, 0, "400", ANOTHER_INTENT)),
        _stale("adopt_batch: another intent", S.UNKNOWN, {"sent_at": ANOTHER_INTENT},
               lambda st, sh: st.adopt_batch(sh, _new_batch(sh))),
        _stale("resubmit_unsettled: another intent", S.UNKNOWN, {"sent_at": ANOTHER_INTENT},
               lambda st, sh: st.resubmit_unsettled(sh, "no batch")),
        _stale("resubmit_unsettled: no intent", S.UNKNOWN, {"sent_at": None},
               lambda st, sh: st.resubmit_unsettled(sh, "no batch")),
        _stale("cancel_unsent: another attempt", S.PENDING, {"attempt": 2},
               lambda st, sh: st.cancel_unsent(sh, "canceled")),
        _stale("cancel_unsent: another body", S.PENDING, {"key": "work/j/other.jsonl"},
               lambda st, sh: st.cancel_unsent(sh, "canceled")),
        _stale("mark_collected: another batch", S.SUBMITTED, {"batch_id": "msgbatch_other"},
               lambda st, sh: st.mark_collected(sh, OUTCOME)),
        _stale("mark_collected: another attempt", S.SUBMITTED, {"attempt": 2},
               lambda st, sh: st.mark_collected(sh, OUTCOME)),
        _stale("mark_collected refused: another attempt", S.REFUSED, {"attempt": 2},
               lambda st, sh: st.mark_collected(sh, OUTCOME)),
        _stale("mark_collected canceling: another body", S.CANCELING, {"key": "work/j/other.jsonl"},
               lambda st, sh: st.mark_collected(sh, OUTCOME)),
        _stale("schedule_retry: another batch", S.SUBMITTED, {"batch_id": "msgbatch_other"},
               lambda st, sh: st.schedule_retry(sh, OUTCOME, RETRY)),
        _stale("schedule_retry: another attempt", S.SUBMITTED, {"attempt": 2},
               lambda st, sh: st.schedule_retry(sh, OUTCOME, RETRY)),
        _stale("split_refused: another attempt", S.REFUSED, {"attempt": 2},
               lambda st, sh: st.split_refused(sh, 1, HALVES, SPLIT_ENTRY)),
        _stale("split_refused: another body", S.REFUSED, {"key": "work/j/other.jsonl"},
               lambda st, sh: st.split_refused(sh, 1, HALVES, SPLIT_ENTRY)),
        _stale("split_refused: another shard count", S.REFUSED, {},
               lambda st, sh: st.split_refused(sh, 2, HALVES, SPLIT_ENTRY)),
        _stale("flag_overdue: another batch", S.SUBMITTED, {"batch_id": "msgbatch_other"},
               lambda st, sh: st.flag_overdue(sh, SENT_AT)),
        _stale("note_progress: another batch", S.SUBMITTED, {"batch_id": "msgbatch_other"},
               lambda st, sh: st.note_progress(sh, PROGRESS, EXPIRES_AT)),
    ],
)  # fmt: skip
def test_a_stale_writer_is_refused_by_the_fences(
    both: Both, state: ShardState, stale: dict[str, Any], write: Callable[[StateStore, ShardRecord], bool]
) -> None:
    # Given a shard in the state the write moves from, read by a writer that is behind:
    # another intent, attempt, body or batch
    shard = both.given(JobStatus.RUNNING, state)
    assert shard is not None

    # When the stale writer writes, Then the write is refused and the item is left as it was
    assert both.same(lambda store: write(store, replace(shard, **stale))) is False
    assert both.fake.get_shard(both.job_id, 0) == shard


def test_an_intent_is_recorded_only_while_the_job_has_no_cancel_and_the_owner_holds_the_lease(both: Both) -> None:
    def begin(shard: ShardRecord | None, owner: str) -> Callable[[StateStore], bool]:
        assert shard is not None
        return lambda store: store.begin_submit(shard, ANOTHER_INTENT, owner)

    # Given a pending shard of a canceled job, When an intent is recorded, Then it is refused
    canceled = both.given(JobStatus.SUBMITTING, S.PENDING, cancel=True, sent_at=None, lease_owner=None, creates_sent=0)
    both.hold_lease(OWNER)
    assert both.same(begin(canceled, OWNER)) is False

    # Given the job not canceled, and the lease held by another owner, or by nobody: refused
    pending = both.given(JobStatus.SUBMITTING, S.PENDING, sent_at=None, lease_owner=None, creates_sent=0)
    both.hold_lease("someone-else")
    assert both.same(begin(pending, OWNER)) is False
    both.hold_lease(None)
    assert both.same(begin(pending, OWNER)) is False

    # Given the lease held by the owner, but a reader of another attempt or body: refused
    both.hold_lease(OWNER)
    assert pending is not None
    assert both.same(begin(replace(pending, attempt=pending.attempt + 1), OWNER)) is False
    assert both.same(begin(replace(pending, key=pending.key + ".other"), OWNER)) is False

    # Given the reader of this attempt: the intent is recorded, and the create counted
    assert both.same(begin(pending, OWNER)) is True
    assert both.fake.get_shard(both.job_id, 0) == replace(
        pending, state=S.SUBMITTING, sent_at=ANOTHER_INTENT, lease_owner=OWNER, creates_sent=1
    )
    # ...once: a second intent for the same shard is refused
    assert both.same(begin(pending, OWNER)) is False


@pytest.mark.parametrize("adopt", [False, True], ids=["mark_submitted", "adopt_batch"])
def test_a_batch_another_shard_owns_is_never_attached(both: Both, adopt: bool) -> None:
    # Given a batch that another shard took
    owner_job = both.job_id
    shard = both.given(JobStatus.RUNNING, S.SUBMITTING, batch_id=None)
    assert shard is not None
    assert both.same(lambda store: store.mark_submitted(owner_job, 0, "msgbatch_taken" + owner_job, SENT_AT))

    # When a second shard, awaiting its batch, is given the same batch
    both.job_id = f"j{uuid.uuid4().hex[:24]}"
    second = both.given(JobStatus.RUNNING, S.UNKNOWN if adopt else S.SUBMITTING, batch_id=None)
    assert second is not None

    def attach(store: StateStore) -> bool:
        if adopt:
            return store.adopt_batch(second, "msgbatch_taken" + owner_job)
        return store.mark_submitted(second.job_id, 0, "msgbatch_taken" + owner_job, SENT_AT)

    # Then it is refused, and the second shard still awaits its own
    assert both.same(attach) is False
    assert both.fake.get_shard(both.job_id, 0) == second


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_a_retry_is_scheduled_only_with_its_job_moved_back_to_submitting(both: Both, status: JobStatus) -> None:
    # Given a shard whose batch ended, of a job in `status`
    shard = both.given(status, S.SUBMITTED)
    assert shard is not None

    # When its retry is scheduled
    scheduled = both.same(lambda store: store.schedule_retry(shard, OUTCOME, RETRY))

    # Then shard and job move together, or neither does
    assert scheduled is (status in (JobStatus.SUBMITTING, JobStatus.RUNNING))
    job, shards = both.fake.job_and_shards(both.job_id)
    assert job is not None
    assert (job.status, shards[0].state) == ((JobStatus.SUBMITTING, S.PENDING) if scheduled else (status, S.SUBMITTED))


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_a_refused_shard_is_split_with_its_halves_and_the_jobs_count_all_at_once(both: Both, status: JobStatus) -> None:
    # Given a refused shard of two requests, of a job in `status`
    shard = both.given(status, S.REFUSED)
    assert shard is not None

    # When it is split in two
    split = both.same(lambda store: store.split_refused(shard, 1, HALVES, SPLIT_ENTRY))

    # Then the shard, its halves and the job's shard count move together, or nothing does
    assert split is (status in (JobStatus.SUBMITTING, JobStatus.RUNNING))
    job, shards = both.fake.job_and_shards(both.job_id)
    assert job is not None
    if not split:
        assert ([s.state for s in shards], job.shard_count) == ([S.REFUSED], 1)
        return
    assert (job.status, job.shard_count) == (JobStatus.SUBMITTING, 3)
    parent, *halves = shards
    assert (parent.state, parent.requests, parent.attempts_log[-1]) == (S.SPLIT, 0, SPLIT_ENTRY)
    assert [(h.state, h.index, h.key, h.version_id, h.attempt, h.max_attempts) for h in halves] == [
        (S.PENDING, plan.index, plan.key, plan.version_id, 1, 3) for plan in HALVES
    ]
    # And a second split of it records nothing
    assert both.same(lambda store: store.split_refused(shard, 3, HALVES, SPLIT_ENTRY)) is False


def test_an_overdue_flag_keeps_the_first_time(both: Both) -> None:
    shard = both.given(JobStatus.RUNNING, S.SUBMITTED, overdue_at=None)
    assert shard is not None

    assert both.same(lambda store: store.flag_overdue(shard, "2026-11-25T10:00:00.000Z")) is True
    assert both.same(lambda store: store.flag_overdue(shard, "2026-11-25T11:00:00.000Z")) is True

    flagged = both.fake.get_shard(both.job_id, 0)
    assert flagged is not None
    assert flagged.overdue_at == "2026-11-25T10:00:00.000Z"


PROGRESS = {"processing": 1, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0}
EXPIRES_AT = "2026-11-24T10:00:00.000Z"


@pytest.mark.parametrize("state", list(ShardState), ids=str)
def test_progress_is_noted_only_on_a_shard_whose_batch_is_open(both: Both, state: ShardState) -> None:
    # Given a shard in `state`, holding a batch id
    shard = both.given(JobStatus.RUNNING, state)
    assert shard is not None

    # When the checker notes its batch's counts and expiry
    noted = both.same(lambda store: store.note_progress(shard, PROGRESS, EXPIRES_AT))

    # Then they are written, without a move, exactly when the shard is SUBMITTED
    after = both.fake.get_shard(both.job_id, 0)
    assert after is not None
    assert noted is (state is ShardState.SUBMITTED)
    assert after.state is state
    if noted:
        assert (after.progress, after.expires_at) == (PROGRESS, EXPIRES_AT)
        assert both.table.get_shard(both.job_id, 0) == after
    else:
        assert after == shard


def test_a_retry_forgets_the_last_batchs_progress(both: Both) -> None:
    shard = both.given(JobStatus.RUNNING, S.SUBMITTED)
    assert shard is not None
    assert both.same(lambda store: store.note_progress(shard, PROGRESS, EXPIRES_AT)) is True
    noted = both.fake.get_shard(both.job_id, 0)
    assert noted is not None

    assert both.same(lambda store: store.schedule_retry(noted, OUTCOME, RETRY)) is True

    retried = both.table.get_shard(both.job_id, 0)
    assert retried is not None
    assert (retried.progress, retried.expires_at) == ({}, None)


# --- job moves --------------------------------------------------------------------------

PLAN = ShardPlan(0, KEY, 2, 80, "d1")
J = JobStatus


@dataclass(frozen=True)
class JobMove:
    name: str
    starts: frozenset[JobStatus]
    to: JobStatus
    write: Callable[[StateStore, str], object]

    def __str__(self) -> str:
        return self.name


JOB_MOVES = [
    JobMove("record_shards", frozenset({J.RECEIVED}), J.SUBMITTING,
            lambda st, job: st.record_shards(job, [PLAN], requested=2, rejected=1, max_attempts=3)),
    JobMove("fail_job", frozenset({J.RECEIVED, J.SUBMITTING}), J.FAILED,
            lambda st, job: st.fail_job(job, "empty", requested=0, rejected=3, manifest_key="results/m.json")),
    JobMove("record_shards(hold)", frozenset({J.RECEIVED}), J.AWAITING_APPROVAL,
            lambda st, job: st.record_shards(job, [PLAN], requested=2, rejected=1, max_attempts=3, hold=True)),
    JobMove("release_job", frozenset({J.AWAITING_APPROVAL}), J.SUBMITTING, lambda st, job: st.release_job(job)),
    JobMove("mark_job_running", frozenset({J.SUBMITTING}), J.RUNNING, lambda st, job: st.mark_job_running(job)),
    JobMove("reopen_job", frozenset({J.RUNNING}), J.SUBMITTING, lambda st, job: st.reopen_job(job)),
    JobMove("finish_job(COMPLETED)", frozenset({J.SUBMITTING, J.RUNNING}), J.COMPLETED,
            lambda st, job: st.finish_job(job, J.COMPLETED, "results/m.json", SENT_AT)),
    JobMove("finish_job(CANCELED)", frozenset({J.SUBMITTING, J.RUNNING}), J.CANCELED,
            lambda st, job: st.finish_job(job, J.CANCELED, "results/m.json", SENT_AT)),
]  # fmt: skip


def test_every_job_move_starts_from_statuses_the_state_machine_allows() -> None:
    for move in JOB_MOVES:
        assert all(move.to in JOB_NEXT[start] for start in move.starts), move


@pytest.mark.parametrize("move", JOB_MOVES, ids=str)
def test_a_job_move_succeeds_exactly_from_the_statuses_it_starts_from(both: Both, move: JobMove) -> None:
    for status in JobStatus:
        # Given the job's item in `status`
        both.job_id = f"j{uuid.uuid4().hex[:24]}"
        both.given(status)

        # When the move is made / Then it holds only from the statuses it starts from
        moved = both.same(lambda store: move.write(store, both.job_id))
        assert moved is (status in move.starts), f"{move} on a {status} job"
        job = both.fake.get_job(both.job_id)
        assert job is not None
        assert job.status is (move.to if moved else status)


def test_a_job_is_created_once(both: Both) -> None:
    source = SourceRef("bucket", "inbox/x.jsonl", "v1")
    assert both.same(lambda store: store.create_job(both.job_id, source, SENT_AT)) is True
    assert both.same(lambda store: store.create_job(both.job_id, source, ANOTHER_INTENT)) is False


def test_a_records_job_keeps_the_pipeline_version_it_was_created_with(both: Both) -> None:
    source = SourceRef("bucket", "inbox/reviews/x.csv", "v1")
    first, later = PipelineRef("pipelines/reviews.json", "p1"), PipelineRef("pipelines/reviews.json", "p2")
    assert both.same(lambda store: store.create_job(both.job_id, source, SENT_AT, first)) is True
    assert both.same(lambda store: store.create_job(both.job_id, source, SENT_AT, later)) is False
    for store in both.stores:
        job = store.get_job(both.job_id)
        assert job is not None
        assert job.pipeline == first


def test_a_native_job_has_no_pipeline(both: Both) -> None:
    source = SourceRef("bucket", "inbox/x.jsonl", "v1")
    assert both.same(lambda store: store.create_job(both.job_id, source, SENT_AT)) is True
    for store in both.stores:
        job = store.get_job(both.job_id)
        assert job is not None
        assert job.pipeline is None


def test_shards_are_recorded_only_once(both: Both) -> None:
    both.given(JobStatus.RECEIVED)

    def record(store: StateStore) -> bool:
        return store.record_shards(both.job_id, [PLAN], requested=2, rejected=0, max_attempts=3)

    assert both.same(record) is True
    assert both.same(record) is False
    assert both.same(lambda store: store.add_missing_shard(both.job_id, PLAN, 3)) is False
    assert both.same(lambda store: store.add_missing_shard(both.job_id, replace(PLAN, index=1), 3)) is True


def test_a_shard_keeps_the_version_of_its_body_that_was_written(both: Both) -> None:
    """The version the split wrote is recorded with the shard; a retry's body brings its
    own, and a retry whose version is not known leaves none of the attempt before it."""
    both.given(JobStatus.RECEIVED)
    plans = [replace(PLAN, version_id="v-shard-0"), replace(PLAN, index=1, version_id="v-shard-1")]
    assert both.same(lambda st: st.record_shards(both.job_id, plans[:1], requested=2, rejected=0, max_attempts=3))
    assert both.same(lambda store: store.add_missing_shard(both.job_id, plans[1], 3)) is True
    assert [shard.version_id for shard in both.table.shards(both.job_id)] == ["v-shard-0", "v-shard-1"]

    sent = both.given(JobStatus.RUNNING, ShardState.SUBMITTED, version_id="v-shard-0")
    assert sent is not None
    assert both.same(lambda store: store.schedule_retry(sent, OUTCOME, replace(RETRY, version_id="v-retry"))) is True
    retried = both.table.get_shard(both.job_id, 0)
    assert retried is not None
    assert (retried.key, retried.version_id) == (RETRY.key, "v-retry")

    sent = both.given(JobStatus.RUNNING, ShardState.SUBMITTED, version_id="v-shard-0")
    assert sent is not None
    assert both.same(lambda store: store.schedule_retry(sent, OUTCOME, RETRY)) is True
    retried = both.table.get_shard(both.job_id, 0)
    assert retried is not None
    assert retried.version_id is None


def test_a_job_finishes_only_as_a_final_status(both: Both) -> None:
    both.given(JobStatus.RUNNING)
    with pytest.raises(ValueError, match="finishes as one of"):
        both.same(lambda store: store.finish_job(both.job_id, JobStatus.RUNNING, "m", SENT_AT))


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_a_cancel_is_requested_once_and_only_of_an_unfinished_job(both: Both, status: JobStatus) -> None:
    both.given(status)

    first = both.same(lambda store: store.request_cancel(both.job_id, SENT_AT))
    again = both.same(lambda store: store.request_cancel(both.job_id, ANOTHER_INTENT))

    unfinished = status in (JobStatus.RECEIVED, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING, JobStatus.RUNNING)
    assert first.cancel_requested_at == again.cancel_requested_at == (SENT_AT if unfinished else None)


def test_a_cancel_of_no_job_finds_none(both: Both) -> None:
    assert both.same(lambda store: store.request_cancel(both.job_id, SENT_AT)) is None


def test_the_create_lease_is_held_by_one_owner_at_a_time(both: Both) -> None:
    both.hold_lease(None)
    assert both.same(lambda store: store.acquire_create_lease("a", SENT_AT, SENT_AT)) is True
    assert both.same(lambda store: store.acquire_create_lease("b", SENT_AT, SENT_AT)) is False
    assert both.same(lambda store: store.acquire_create_lease("a", ANOTHER_INTENT, SENT_AT)) is True
    assert both.same(lambda store: store.release_create_lease("b")) is False
    assert both.same(lambda store: store.get_create_lease()).taken_at == ANOTHER_INTENT
    assert both.same(lambda store: store.release_create_lease("a")) is True
    assert both.same(lambda store: store.get_create_lease()) is None


# --- the re-drive of a job left RECEIVED ------------------------------------------------


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_a_redrive_is_counted_once_per_count_read_and_only_on_a_job_not_yet_running(
    both: Both, status: JobStatus
) -> None:
    # Given a job in `status`, never re-driven
    both.given(status)
    counts = status in (JobStatus.RECEIVED, JobStatus.SUBMITTING)

    # When two drivers that read the count 0 each count a try, and one counts on from 1
    first = both.same(lambda store: store.count_redrive(both.job_id, 0, SENT_AT))
    second = both.same(lambda store: store.count_redrive(both.job_id, 0, SENT_AT))
    next_try = both.same(lambda store: store.count_redrive(both.job_id, 1, "2026-11-23T10:30:00.000Z"))

    # Then only a RECEIVED or SUBMITTING job counts, and one try per count read
    assert (first, second, next_try) == (counts, False, counts)
    job = both.table.get_jobs([both.job_id, "no-such-job"])[both.job_id]
    assert job == both.fake.get_jobs([both.job_id])[both.job_id]
    assert (job.redrives, job.redriven_at) == ((2, "2026-11-23T10:30:00.000Z") if counts else (0, None))


@pytest.mark.parametrize("status", [JobStatus.RECEIVED, JobStatus.SUBMITTING, JobStatus.FAILED], ids=str)
def test_a_redrive_error_is_kept_only_on_a_received_job(both: Both, status: JobStatus) -> None:
    both.given(status)

    kept = both.same(lambda store: store.note_redrive_error(both.job_id, "MemoryError: "))

    assert kept is (status is JobStatus.RECEIVED)
    job = both.table.get_job(both.job_id)
    assert job is not None
    assert job.redrive_error == ("MemoryError: " if kept else None)


# --- a split that continues across invocations (services/segments.py) -----------------

CHECKPOINT = SplitCheckpoint(
    offset=120,
    line=4,
    requested=2,
    rejected=1,
    next_shard=1,
    compressed=False,
    ids_keys=("work/j/ids-000000000000000-000000000000120.txt",),
    rejected_version="v-rejected",
    rejected_bytes=90,
)
LEASE = "2026-11-23T10:15:00.000Z"


@pytest.mark.parametrize("status", [JobStatus.RECEIVED, JobStatus.SUBMITTING], ids=str)
def test_a_split_checkpoint_moves_only_forward_from_the_one_read_and_only_on_a_received_job(
    both: Both, status: JobStatus
) -> None:
    # Given a job in `status`, with a no-progress try counted
    both.given(status)
    assert both.same(lambda store: store.count_redrive(both.job_id, 0, SENT_AT))
    further = replace(CHECKPOINT, offset=300, line=9, requested=4, next_shard=2, rejected_version=None)

    # When a first checkpoint is saved twice from none, then a further one twice from it
    first = both.same(lambda store: store.save_checkpoint(both.job_id, CHECKPOINT, previous=None, lease=LEASE))
    again = both.same(lambda store: store.save_checkpoint(both.job_id, CHECKPOINT, previous=None, lease=LEASE))
    on = both.same(lambda store: store.save_checkpoint(both.job_id, further, previous=120, lease=SENT_AT))
    stale = both.same(lambda store: store.save_checkpoint(both.job_id, further, previous=120, lease=SENT_AT))

    # Then only a RECEIVED job takes them, each once, and the count of tries starts over
    received = status is JobStatus.RECEIVED
    assert (first, again, on, stale) == (received, False, received, False)
    job = both.table.get_job(both.job_id)
    assert job == both.fake.get_job(both.job_id)
    assert job is not None
    if received:
        assert (job.checkpoint, job.split_lease, job.redrives) == (further, SENT_AT, 0)
        # ...and a try is counted from 0 again, with its lease
        assert both.same(lambda store: store.count_redrive(both.job_id, 0, SENT_AT, lease=LEASE)) is True
        assert both.same(lambda store: store.get_job(both.job_id)).split_lease == LEASE
    else:
        assert (job.checkpoint, job.split_lease, job.redrives) == (None, None, 1)
    # ...and a checkpoint never goes back
    with pytest.raises(ValueError, match="moves forward only"):
        both.same(lambda store: store.save_checkpoint(both.job_id, CHECKPOINT, previous=300, lease=LEASE))


def test_the_last_segment_records_its_shards_only_from_the_checkpoint_it_started_at(both: Both) -> None:
    # Given a job whose split saved a checkpoint, its first shard recorded
    both.given(JobStatus.RECEIVED)
    assert both.same(lambda store: store.add_missing_shard(both.job_id, PLAN, 3)) is True
    assert both.same(lambda store: store.save_checkpoint(both.job_id, CHECKPOINT, previous=None, lease=LEASE))
    last = [replace(PLAN, index=1)]

    def record(resumed_from: int | None) -> Callable[[StateStore], bool]:
        return lambda store: store.record_shards(
            both.job_id, last, requested=3, rejected=1, max_attempts=3, shard_count=2, resumed_from=resumed_from
        )

    # When runs that started from no checkpoint, or another one, record, then one from it
    assert both.same(record(None)) is False
    assert both.same(record(60)) is False
    assert both.same(record(120)) is True

    # Then the job counts every shard of every segment
    job, shards = both.table.job_and_shards(both.job_id)
    assert job is not None
    assert (job.status, job.shard_count, job.requested, job.rejected) == (JobStatus.SUBMITTING, 2, 3, 1)
    assert [shard.index for shard in shards] == [0, 1]


def test_a_days_spend_grows_within_its_cap_and_takes_each_jobs_actual_cost_as_it_closes(both: Both) -> None:
    day = f"day-of-{both.job_id}"  # the table is the module's: a day of this test's own

    def record(spend: DaySpend) -> Callable[[StateStore], bool]:
        return lambda store: store.record_shards(
            both.job_id, [PLAN], requested=2, rejected=0, max_attempts=3, spend=spend
        )

    # A job sent adds its upper bound to the day, with the move that sends it
    both.given(JobStatus.RECEIVED)
    assert both.same(record(DaySpend(day, Decimal("0.75"), cap=Decimal("1")))) is True
    for store in both.stores:
        assert store.spent_on(day) == Decimal("0.75")
        job = store.get_job(both.job_id)
        assert job is not None
        assert (job.spend_day, job.spend_usd) == (day, Decimal("0.75"))

    # One the day has no room for is refused as such, and nothing of it is written
    both.given(JobStatus.RECEIVED)
    for store in both.stores:
        with pytest.raises(DailyBudgetTaken):
            record(DaySpend(day, Decimal("0.26"), cap=Decimal("1")))(store)
    # ...one that fits exactly is not refused for the day's sake, but the whole transaction
    # fails with its shard (recorded already), and the day is left as it was
    assert both.same(record(DaySpend(day, Decimal("0.25"), cap=Decimal("1")))) is False
    assert [store.spent_on(day) for store in both.stores] == [Decimal("0.75")] * 2

    # Closing a job swaps its upper bound for its actual cost, once
    both.given(JobStatus.RUNNING)
    settle = DaySpend(day, Decimal("-0.5"))
    finish = lambda store: store.finish_job(both.job_id, JobStatus.COMPLETED, "m.json", SENT_AT, settle=settle)  # noqa: E731
    assert both.same(finish) is True
    assert both.same(finish) is False
    assert [store.spent_on(day) for store in both.stores] == [Decimal("0.25")] * 2

    # An approved job is added whatever the cap: someone chose to pay it
    both.given(JobStatus.AWAITING_APPROVAL)
    assert both.same(lambda store: store.release_job(both.job_id, DaySpend(day, Decimal("2")))) is True
    assert [store.spent_on(day) for store in both.stores] == [Decimal("2.25")] * 2
    assert [store.spent_on("another-day") for store in both.stores] == [Decimal(0)] * 2
