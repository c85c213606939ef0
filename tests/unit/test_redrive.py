"""The safety net for a job left RECEIVED (services/redrive.py): the sweep re-drives it
through the intake once it is past its bound, counts each try before it runs, and fails
the job with its reason, manifest, errors/ entry and event once the tries have run out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import batchdrop.services.intake
from batchdrop.domain.job_events import FAILED
from batchdrop.domain.jobs import job_id_for, manifest_key, results_part_key
from batchdrop.domain.records import JobRecord, ShardPlan, SourceRef
from batchdrop.domain.shards import ShardLimits
from batchdrop.domain.states import JobStatus
from batchdrop.domain.timings import Timings
from batchdrop.services.redrive import NO_ERROR, REDRIVE_TRIES, stuck_reason
from batchdrop.services.sweeper import Sweeper, SweepReport
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, request
from tests.unit.test_template import TEMPLATE_PATH

pytestmark = pytest.mark.unit

TIMINGS = Timings()


class Died(BaseException):
    """The process dies (out of memory, out of time): nothing in it can catch this."""


def left_received(world: Fakes, ids: str = "abc") -> tuple[SourceRef, str]:
    """An upload whose job item was written and whose every try then died: still RECEIVED."""
    source = world.upload("inbox/stuck.jsonl", [request(cid) for cid in ids])
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    assert world.state.create_job(job_id, source, world.wiring().stamp())
    return source, job_id


def sweep(world: Fakes) -> SweepReport:
    wired = world.wiring()
    return Sweeper(wired, batchdrop.services.intake.Intake(wired), seconds_left=lambda: 900.0).sweep()


def job(world: Fakes, job_id: str) -> JobRecord:
    record = world.state.get_job(job_id)
    assert record is not None
    return record


def splitting_with(monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> list[int]:
    """Every split of a file fails with `failure`; the calls made."""
    calls: list[int] = []

    def failing(*_args: Any, **_kwargs: Any) -> Any:
        calls.append(1)
        raise failure

    monkeypatch.setattr(batchdrop.services.intake, "split_object", failing)
    return calls


def test_a_job_left_received_past_its_bound_is_redriven_and_runs(world: Fakes) -> None:
    # Given a job left RECEIVED, just short of its bound
    _, job_id = left_received(world)
    world.clock.advance(TIMINGS.stuck_after - 1)

    # When the sweeper runs before the bound, then after it, then once more
    early = sweep(world)
    world.clock.advance(1)
    due = sweep(world)
    again = sweep(world)

    # Then the early sweep left it to its own event, the next re-drove it once: its batch
    # went out; the one after found nothing left to do
    assert early.redrive.redriven == []
    assert early.started == []
    assert due.redrive.redriven == [job_id]
    assert again.redrive.redriven == again.redrive.failed == []
    assert job(world, job_id).status is JobStatus.RUNNING
    assert job(world, job_id).redrives == 1
    assert world.batches.creates == 1
    assert world.events.published == []


def test_a_job_whose_every_try_dies_is_failed_after_its_tries_with_manifest_errors_and_event(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job left RECEIVED whose file kills the process each time it is read
    _, job_id = left_received(world)
    splits = splitting_with(monkeypatch, Died())
    world.clock.advance(TIMINGS.stuck_after)

    # When the sweeper runs: each try dies; sweeps closer together than redrive_every count none
    for tried in range(1, REDRIVE_TRIES + 1):
        with pytest.raises(Died):
            sweep(world)
        assert job(world, job_id).redrives == tried
        assert sweep(world).redrive.redriven == []  # its try still counts as running
        world.clock.advance(TIMINGS.redrive_every)
    failing = sweep(world)

    # Then it was tried REDRIVE_TRIES times, then failed with the reason, announced once
    assert len(splits) == REDRIVE_TRIES
    assert failing.redrive.failed == [job_id]
    failed = job(world, job_id)
    reason = f"the file could not be read after {REDRIVE_TRIES} tries: {NO_ERROR}"
    assert (failed.status, failed.reason) == (JobStatus.FAILED, reason)
    manifest = world.store.get_json(manifest_key(job_id))
    assert (manifest["status"], manifest["reason"]) == ("FAILED", reason)
    assert world.store.get_json(f"errors/{job_id}/failure.json") == {"job_id": job_id, "reason": reason}
    assert world.events.ends() == [(FAILED, job_id, "FAILED")]
    world.clock.advance(TIMINGS.redrive_every)
    assert sweep(world).redrive.failed == []  # a FAILED job is never driven again


def test_the_error_the_last_try_raised_is_the_reason(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job left RECEIVED whose reading raises an error the intake does not know
    _, job_id = left_received(world)
    splitting_with(monkeypatch, RuntimeError("the reader broke\non two lines"))
    world.clock.advance(TIMINGS.stuck_after)

    # When its tries run out (a try that raises fails no sweep: the others go on)
    for _ in range(REDRIVE_TRIES + 1):
        sweep(world)
        world.clock.advance(TIMINGS.redrive_every)

    # Then the reason names that error, on one line
    failed = job(world, job_id)
    assert failed.status is JobStatus.FAILED
    assert failed.reason == stuck_reason(REDRIVE_TRIES, "RuntimeError: the reader broke on two lines")
    assert "\n" not in (failed.reason or "")


def test_two_sweeps_that_read_the_same_count_run_one_try(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stuck job, and a second sweep that counts its try while the first one reads
    _, job_id = left_received(world)
    world.clock.advance(TIMINGS.stuck_after)
    count: Callable[..., bool] = world.state.count_redrive
    raced: list[bool] = []

    def other_sweep_first(job_id: str, seen: int, at: str, *, lease: str | None = None) -> bool:
        raced.append(count(job_id, seen, at, lease=lease))
        return count(job_id, seen, at, lease=lease)

    monkeypatch.setattr(world.state, "count_redrive", other_sweep_first)

    # When this sweep runs
    report = sweep(world)

    # Then the try was counted once, by the other sweep, and this one ran nothing
    assert raced == [True]
    assert report.redrive.redriven == []
    assert job(world, job_id).redrives == 1
    assert job(world, job_id).status is JobStatus.RECEIVED


def test_a_sweep_short_of_time_leaves_a_stuck_job_to_the_next(world: Fakes) -> None:
    _, job_id = left_received(world)
    world.clock.advance(TIMINGS.stuck_after)
    wired = world.wiring()

    report = Sweeper(wired, batchdrop.services.intake.Intake(wired), lambda: TIMINGS.sweep_safety - 1).sweep()

    assert report.redrive.left == 1
    assert job(world, job_id).redrives == 0


def test_the_bounds_outlast_every_invocation_that_may_still_run_on_the_job() -> None:
    # A re-drive must never race a live try of the job's S3 event (kept up to its maximum
    # age, then run up to the timeout), and a failing sweep must never race the last re-drive
    # (its sweep event kept up to its own maximum age, then run up to the timeout).
    from cfnlint.decode import decode_str

    decoded, errors = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not errors, errors
    submit = decoded["Resources"]["SubmitFunction"]["Properties"]
    timeout = int(submit.get("Timeout") or decoded["Globals"]["Function"]["Timeout"])
    event_age = int(submit["EventInvokeConfig"]["MaximumEventAgeInSeconds"])
    sweep_age = int(submit["Events"]["Sweep"]["Properties"]["RetryPolicy"]["MaximumEventAgeInSeconds"])

    assert TIMINGS.stuck_after >= event_age + timeout
    assert TIMINGS.redrive_every >= sweep_age + timeout


def test_a_job_whose_recording_was_cut_short_waits_for_its_redrive_which_records_the_rest(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job of three shards whose recording died after its first transaction (the
    # third shard's, here): its event's tries all died, so none recorded the rest
    one_each = ShardLimits(max_requests=1)
    source = world.upload("inbox/cut.jsonl", [request(cid) for cid in "abc"])
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    record = world.state.record_shards

    def cut_short(job_id: str, shards: list[ShardPlan], **kwargs: Any) -> bool:
        record(job_id, shards, **kwargs)
        del world.state.shard_items[(job_id, 2)]
        raise Died

    monkeypatch.setattr(world.state, "record_shards", cut_short)
    with pytest.raises(Died):
        batchdrop.services.intake.Intake(world.wiring(limits=one_each)).submit(source)
    monkeypatch.undo()

    # When the checker ticks: it sends the two shards recorded
    Checker(world.wiring(limits=one_each), seconds_left=lambda: 900.0).tick()

    # Then the job is not marked RUNNING on two of its three shards
    assert [shard.batch_id is not None for shard in world.state.shards(job_id)] == [True, True]
    assert job(world, job_id).status is JobStatus.SUBMITTING

    # When the sweep runs past the bound, and the batches end
    world.clock.advance(TIMINGS.stuck_after)
    report = sweep(world)
    for shard in world.state.shards(job_id):
        assert shard.batch_id is not None
        world.batches.end(shard.batch_id)
    Checker(world.wiring(limits=one_each), seconds_left=lambda: 900.0).tick()

    # Then the re-drive recorded and sent the third shard, and the job completed, each request once
    assert report.redrive.redriven == [job_id]
    assert job(world, job_id).status is JobStatus.COMPLETED
    assert world.batches.creates == 3
    parts = [world.store.get(results_part_key(job_id, index)) for index in range(3)]
    assert sorted(json.loads(line)["custom_id"] for part in parts for line in part.splitlines()) == ["a", "b", "c"]


def test_an_intake_that_lost_the_recording_to_a_run_that_died_part_way_leaves_the_job_submitting(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two runs of one event: while this one splits, the other records the job's three
    # shards and dies after its first transaction (the third shard's, here)
    one_each = ShardLimits(max_requests=1)
    source = world.upload("inbox/race.jsonl", [request(cid) for cid in "abc"])
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    record, split = world.state.record_shards, batchdrop.services.intake.split_object
    splits: list[int] = []

    def cut_short(job_id: str, shards: list[ShardPlan], **kwargs: Any) -> bool:
        record(job_id, shards, **kwargs)
        del world.state.shard_items[(job_id, 2)]
        raise Died

    def split_while_the_other_run_records(*args: Any, **kwargs: Any) -> Any:
        splits.append(1)
        if len(splits) == 1:
            monkeypatch.setattr(world.state, "record_shards", cut_short)
            with pytest.raises(Died):
                batchdrop.services.intake.Intake(world.wiring(limits=one_each)).submit(source)
            monkeypatch.setattr(world.state, "record_shards", record)
        return split(*args, **kwargs)

    monkeypatch.setattr(batchdrop.services.intake, "split_object", split_while_the_other_run_records)

    # When this run finds the shards recorded by the other, and sends those there are
    batchdrop.services.intake.Intake(world.wiring(limits=one_each)).submit(source)

    # Then it does not mark the job RUNNING on two of its three shards; the re-drive completes it
    assert world.batches.creates == 2
    assert job(world, job_id).status is JobStatus.SUBMITTING
    world.clock.advance(TIMINGS.stuck_after)
    assert sweep(world).redrive.redriven == [job_id]
    assert (world.batches.creates, job(world, job_id).status) == (3, JobStatus.RUNNING)


@pytest.fixture
def world() -> Fakes:
    return Fakes()
