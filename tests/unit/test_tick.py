"""The checker's decisions (services/tick.py and the collect, settle, unsent and finish steps
it drives), against in-memory fakes of S3, the state table and the Message Batches API."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from batchdrop.domain.jobs import IdsDigest, manifest_key, results_part_key
from batchdrop.domain.shards import ShardLimits, shard_key
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.domain.timings import Timings
from batchdrop.errors import CheckerItemsFailedError, ProviderOutcomeUnknownError, ProviderRejectedError
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker, TickReport
from tests.unit.fakes import CANCELED, EXPIRED, MODEL, Fakes, errored, request, succeeded

pytestmark = pytest.mark.unit

LOST = ProviderOutcomeUnknownError("create got no answer: ReadTimeout")


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def submit(world: Fakes, ids: str | list[str], name: str = "file", **settings: Any) -> str:
    """Upload a file of these requests and submit it; its job id."""
    source = world.upload(f"inbox/{name}.jsonl", [request(cid) for cid in ids])
    return Intake(world.wiring(**settings)).submit(source).job_id


def submit_lost(world: Fakes, ids: str, name: str = "file") -> str:
    """Submit a file whose create gets no answer; its job id."""
    with pytest.raises(ProviderOutcomeUnknownError):
        submit(world, ids, name)
    return next(iter(world.state.jobs))


def tick(world: Fakes, seconds_left: float = 900.0, **settings: Any) -> TickReport:
    return Checker(world.wiring(**settings), seconds_left=lambda: seconds_left).tick()


def batch_of(world: Fakes, job_id: str, index: int = 0) -> str:
    shard = world.state.get_shard(job_id, index)
    assert shard is not None
    assert shard.batch_id is not None
    return shard.batch_id


def part(world: Fakes, job_id: str, index: int = 0, attempt: int = 1) -> list[dict[str, Any]]:
    return [json.loads(line) for line in world.store.get(results_part_key(job_id, index, attempt)).splitlines()]


def status(world: Fakes, job_id: str) -> JobStatus:
    job = world.state.get_job(job_id)
    assert job is not None
    return job.status


# --- collecting -------------------------------------------------------------------------


def test_an_ended_batch_is_collected_with_its_counts_and_usage(world: Fakes) -> None:
    # Given a job whose batch ended: two succeeded, one invalid
    job_id = submit(world, "abc")
    batch_id = batch_of(world, job_id)
    world.batches.end(
        batch_id,
        {
            "a": succeeded("a", input_tokens=10, output_tokens=2),
            "b": succeeded("b", input_tokens=7, output_tokens=3),
            "c": errored("invalid_request_error"),
        },
    )

    # When the checker ticks
    report = tick(world)

    # Then the results are in results/ as the API gave them, and the shard is recorded with them
    assert report.collected == [batch_id]
    assert world.store.get(results_part_key(job_id, 0)) == b"".join(
        line + b"\n" for line in world.batches.results[batch_id]
    )
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.state is ShardState.COLLECTED
    assert shard.counts == {"succeeded": 2, "errored": 1}
    assert shard.usage[MODEL]["input_tokens"] == 17
    assert shard.usage[MODEL]["output_tokens"] == 5
    assert shard.result_keys == (results_part_key(job_id, 0),)
    [entry] = shard.attempts_log
    assert (entry["attempt"], entry["batch_id"], entry["requests"], entry["retried"]) == (1, batch_id, 3, 0)
    # ...and the job, all in, is finished
    assert status(world, job_id) is JobStatus.COMPLETED_WITH_ERRORS


def test_an_open_batch_is_left_open(world: Fakes) -> None:
    job_id = submit(world, "ab")

    report = tick(world)

    assert report.collected == []
    assert report.open_batches == 1
    assert status(world, job_id) is JobStatus.RUNNING
    assert not world.store.exists(results_part_key(job_id, 0))


def test_an_open_batchs_progress_is_noted_on_its_shard_only_when_it_changed(world: Fakes) -> None:
    # Given a job whose batch is open, its requests all processing
    job_id = submit(world, "abcd")
    batch_id = batch_of(world, job_id)
    batch = world.batches.batches[batch_id]

    # When the checker first sees it, Then its counts and expiry are noted on the shard
    tick(world)
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.progress == {"processing": 4, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert shard.expires_at == batch["expires_at"]
    assert world.state.progress_writes == 1

    # And a tick that sees the same counts writes nothing
    tick(world)
    assert world.state.progress_writes == 1

    # When the provider has processed some, Then the next tick notes the new counts
    batch["request_counts"] = {"processing": 1, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
    tick(world)
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.progress == {"processing": 1, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
    assert world.state.progress_writes == 2
    assert shard.state is ShardState.SUBMITTED


def test_progress_is_not_noted_on_a_shard_that_has_moved_on(world: Fakes) -> None:
    # Given the checker read a shard whose batch was open, and the shard then moved to another batch
    job_id = submit(world, "ab")
    seen = world.state.get_shard(job_id, 0)
    assert seen is not None
    counts = {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0}

    # When progress for a batch the shard no longer holds is noted, Then nothing is written
    assert world.state.note_progress(replace(seen, batch_id="msgbatch_other"), counts, None) is False
    assert world.state.get_shard(job_id, 0) == seen
    assert world.state.progress_writes == 0


def test_a_job_finishes_with_manifest_event_and_status_only_when_every_shard_is_collected(world: Fakes) -> None:
    # Given a job of two shards, of which one batch has ended
    job_id = submit(world, "ab", limits=ShardLimits(max_requests=1))
    world.batches.end(batch_of(world, job_id, 0))

    # When the checker ticks, Then it collects that one and leaves the job open
    report = tick(world)
    assert report.finished_jobs == []
    assert not world.store.exists(manifest_key(job_id))
    assert world.events.published == []
    assert status(world, job_id) is JobStatus.RUNNING

    # When the other ends and the checker ticks again
    world.batches.end(batch_of(world, job_id, 1))
    report = tick(world)

    # Then the job gets its manifest, its event and its final status, and leaves the open index
    assert report.finished_jobs == [job_id]
    manifest = world.store.get_json(manifest_key(job_id))
    assert manifest["status"] == "COMPLETED"
    assert manifest["counts"] == {
        "requests": 2,
        "rejected": 0,
        "succeeded": 2,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert manifest["results"] == [results_part_key(job_id, 0), results_part_key(job_id, 1)]
    [event] = world.events.published
    assert (event["job_id"], event["status"], event["manifest_key"]) == (job_id, "COMPLETED", manifest_key(job_id))
    assert event["counts"] == manifest["counts"]
    job = world.state.get_job(job_id)
    assert job is not None
    assert (job.status, job.manifest_key) == (JobStatus.COMPLETED, manifest_key(job_id))
    assert world.state.open_work().jobs == []

    # And a later tick sends nothing more
    tick(world)
    assert len(world.events.published) == 1


# --- retries ----------------------------------------------------------------------------


def test_transient_failures_are_sent_again_in_a_batch_of_exactly_those_requests(world: Fakes) -> None:
    # Given a batch that ended with one success, two transient failures and one invalid request
    job_id = submit(world, "abcd")
    first = batch_of(world, job_id)
    world.batches.end(
        first,
        {"b": errored("api_error"), "c": EXPIRED, "d": errored("invalid_request_error")},
    )

    # When the checker ticks
    report = tick(world)

    # Then the final outcomes are written and counted, and the shard waits for attempt 2 with
    # a body of exactly the transient ones, as they were written
    assert report.retried == 2
    assert [line["custom_id"] for line in part(world, job_id)] == ["a", "d"]
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.state is ShardState.PENDING
    assert (shard.attempt, shard.key, shard.attempt_requests) == (2, shard_key(job_id, 0, 2), 2)
    assert world.store.get(shard.key) == request("b") + b"\n" + request("c") + b"\n"
    digest = IdsDigest()
    digest.add("b")
    digest.add("c")
    assert shard.ids_digest == digest.hex
    assert shard.counts == {"succeeded": 1, "errored": 1}
    assert shard.batch_id is None
    assert status(world, job_id) is JobStatus.SUBMITTING

    # When the checker ticks again, Then it sends that body as the next batch
    report = tick(world)
    second = batch_of(world, job_id)
    assert report.submitted == 1
    assert world.batches.bodies[second] == [request("b"), request("c")]

    # And when that batch succeeds, the job ends with each request's last outcome once
    world.batches.end(second)
    tick(world)
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.counts == {"succeeded": 3, "errored": 1}
    assert [line["custom_id"] for line in part(world, job_id, attempt=2)] == ["b", "c"]
    assert shard.result_keys == (results_part_key(job_id, 0), results_part_key(job_id, 0, 2))
    manifest = world.store.get_json(manifest_key(job_id))
    assert manifest["status"] == "COMPLETED_WITH_ERRORS"
    assert manifest["attempts"]["final_at_attempt"] == {"1": 2, "2": 2}


def test_transient_failures_are_final_at_the_last_attempt(world: Fakes) -> None:
    # Given shards of at most two attempts, and a request that fails transiently every time
    job_id = submit(world, "ab", max_attempts=2)
    world.batches.end(batch_of(world, job_id), {"a": errored("overloaded_error")})
    tick(world, max_attempts=2)
    tick(world, max_attempts=2)

    # When its second attempt fails the same way
    world.batches.end(batch_of(world, job_id), {"a": errored("overloaded_error")})
    tick(world, max_attempts=2)

    # Then it is not sent a third time: its errored line is final, in attempt 2's part
    assert world.batches.creates == 2
    assert [line["custom_id"] for line in part(world, job_id, attempt=2)] == ["a"]
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.attempt) == (ShardState.COLLECTED, 2)
    assert shard.counts == {"succeeded": 1, "errored": 1}
    assert status(world, job_id) is JobStatus.COMPLETED_WITH_ERRORS


# --- results that cannot be this shard's -------------------------------------------------


@pytest.mark.parametrize(
    "returned",
    ["ab", "abx"],
    ids=["results-that-do-not-add-up", "results-for-other-requests-fail-the-ids-digest"],
)
def test_results_that_cannot_be_this_shards_are_never_recorded(world: Fakes, returned: str) -> None:
    # Given a batch of a, b, c whose results hold two of them, or are for a, b and x
    job_id = submit(world, "abc")
    batch_id = batch_of(world, job_id)
    world.batches.end(batch_id, lines=[json.dumps({"custom_id": c, "result": succeeded(c)}).encode() for c in returned])

    # When the checker ticks, Then the batch fails the tick...
    with pytest.raises(CheckerItemsFailedError, match=batch_id):
        tick(world)

    # ...and nothing of it is recorded or written: the job can never close on it
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.counts) == (ShardState.SUBMITTED, {})
    assert not world.store.exists(results_part_key(job_id, 0))
    assert status(world, job_id) is JobStatus.RUNNING
    assert world.events.published == []


def test_one_failing_batch_does_not_stop_the_others(world: Fakes) -> None:
    # Given three jobs whose batches ended, the middle one with results that do not add up
    jobs = [submit(world, "ab", name=name) for name in ("one", "two", "three")]
    for job_id in jobs:
        world.batches.end(batch_of(world, job_id))
    broken = batch_of(world, jobs[1])
    world.batches.results[broken] = world.batches.results[broken][:1]

    # When the checker ticks, Then it fails at the end, naming that batch...
    with pytest.raises(CheckerItemsFailedError, match=f"batch {broken}"):
        tick(world)

    # ...after collecting the others and finishing their jobs
    assert [status(world, job_id) for job_id in jobs] == [JobStatus.COMPLETED, JobStatus.RUNNING, JobStatus.COMPLETED]


# --- creates whose outcome is unknown ----------------------------------------------------


def test_an_unknown_create_adopts_the_matching_batch_the_listing_shows(world: Fakes) -> None:
    # Given a create that made its batch, but whose answer was lost
    world.batches.fail_create(LOST, made=True)
    job_id = submit_lost(world, "abc")
    [made] = world.batches.batches

    # When the checker ticks
    world.clock.advance(30)
    report = tick(world)

    # Then the shard takes that batch, nothing is sent again, and the lease is free
    assert report.adopted == [made]
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.batch_id) == (ShardState.SUBMITTED, made)
    assert world.batches.creates == 1
    assert world.state.get_create_lease() is None
    assert world.state.owned_batches([made]) == {made}
    assert status(world, job_id) is JobStatus.RUNNING


def test_an_unknown_create_is_sent_again_once_the_grace_period_has_passed_and_none_matched(world: Fakes) -> None:
    # Given a create that got no answer and made no batch
    world.batches.fail_create(LOST)
    job_id = submit_lost(world, "abc")
    grace = Timings().grace

    # When the checker ticks within the grace period, Then the shard waits
    world.clock.advance(grace / 2)
    report = tick(world)
    assert report.deferred == 1
    assert report.resubmitted == 0
    assert world.batches.creates == 1
    unknown = world.state.get_shard(job_id, 0)
    assert unknown is not None
    assert unknown.state is ShardState.UNKNOWN

    # When it ticks after the grace period, the listing having covered the window
    world.clock.advance(grace)
    report = tick(world)

    # Then the shard is sent again, once, and counts both creates
    assert (report.resubmitted, report.submitted) == (1, 1)
    assert world.batches.creates == 2
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.creates_sent) == (ShardState.SUBMITTED, 2)
    assert world.batches.requests[shard.batch_id or ""] == ["a", "b", "c"]


def test_an_unknown_create_waits_while_the_listing_does_not_reach_back_past_its_window(world: Fakes) -> None:
    # Given a create that got no answer, and a listing that is cut short
    world.batches.fail_create(LOST)
    job_id = submit_lost(world, "abc")
    world.batches.listing_complete = False

    # When the checker ticks long after the grace period
    world.clock.advance(3600)
    report = tick(world)

    # Then nothing is sent again: a listing cut short is no proof that no batch exists
    assert report.resubmitted == 0
    assert world.batches.creates == 1
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.state is ShardState.UNKNOWN
    lease = world.state.get_create_lease()
    assert lease is not None
    assert lease.owner == shard.lease_owner


def test_a_second_batch_for_one_unknown_create_is_canceled(world: Fakes) -> None:
    # Given a lost create that made two batches of the same requests
    world.batches.fail_create(LOST, made=True)
    job_id = submit_lost(world, "abc")
    [first] = world.batches.batches
    world.clock.advance(1)
    second = world.batches.make(world.batches.bodies[first])["id"]

    # When the checker ticks
    world.clock.advance(30)
    report = tick(world)

    # Then the shard adopts the earlier one and the other is canceled
    assert report.adopted == [first]
    assert report.canceled == [second]
    assert world.batches.canceled == [second]
    assert batch_of(world, job_id) == first


def test_a_batch_of_another_size_is_never_adopted(world: Fakes) -> None:
    # Given a lost create that made no batch, and another batch of a different size in its window
    world.batches.fail_create(LOST)
    job_id = submit_lost(world, "abc")
    world.batches.make([request("x")])

    # When the checker ticks after the grace period
    world.clock.advance(Timings().grace + 1)
    report = tick(world)

    # Then the stranger is left alone and the shard is sent again
    assert report.adopted == []
    assert report.canceled == []
    assert report.resubmitted == 1
    assert world.batches.requests[batch_of(world, job_id)] == ["a", "b", "c"]


# --- creates the submit function left to the checker ------------------------------------


def test_a_shard_a_full_queue_deferred_is_sent_by_a_later_tick(world: Fakes) -> None:
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    job_id = submit(world, "ab")

    report = tick(world)

    assert report.submitted == 1
    assert world.batches.requests[batch_of(world, job_id)] == ["a", "b"]
    assert status(world, job_id) is JobStatus.RUNNING


def test_a_refused_body_gets_an_errored_line_per_request_and_is_never_sent_again(world: Fakes) -> None:
    # Given a shard the provider refused for good, and each of its requests refused on its own
    for _ in range(3):
        world.batches.fail_create(ProviderRejectedError(413, "request too large"))
    job_id = submit(world, "ab")

    # When the checker ticks (the refused shard is halved, each half refused again)
    tick(world)
    tick(world)

    # Then each request has an errored line saying why, and the job is finished with them
    lines = part(world, job_id, 1) + part(world, job_id, 2)
    assert [line["custom_id"] for line in lines] == ["a", "b"]
    for line in lines:
        error = line["result"]["error"]["error"]
        assert (line["result"]["type"], error["type"]) == ("errored", "invalid_request_error")
        assert "413: request too large" in error["message"]
    assert world.batches.creates == 3
    assert world.store.get_json(manifest_key(job_id))["counts"]["errored"] == 2
    assert status(world, job_id) is JobStatus.COMPLETED_WITH_ERRORS


def test_a_tick_with_too_little_time_left_starts_no_create(world: Fakes) -> None:
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    job_id = submit(world, "ab")

    report = tick(world, seconds_left=Timings().tick_safety + Timings().create_timeout - 1)

    assert report.deferred == 1
    assert world.batches.creates == 1
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.state is ShardState.PENDING


# --- cancel -----------------------------------------------------------------------------


def test_a_canceled_jobs_pending_shards_come_back_canceled_and_the_job_ends_canceled(world: Fakes) -> None:
    # Given a job whose shard is waiting for a create, then canceled
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    job_id = submit(world, "ab")
    Canceler(world.wiring()).cancel(job_id)

    # When the checker ticks
    tick(world)

    # Then nothing is sent: each request has a `canceled` line, and the job ends CANCELED
    assert world.batches.batches == {}
    assert part(world, job_id) == [{"custom_id": c, "result": CANCELED} for c in "ab"]
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.counts) == (ShardState.COLLECTED, {"canceled": 2})
    assert status(world, job_id) is JobStatus.CANCELED
    assert world.store.get_json(manifest_key(job_id))["status"] == "CANCELED"
    assert [event["status"] for event in world.events.published] == ["CANCELED"]


def test_a_canceled_jobs_open_batch_is_asked_to_stop_and_its_finished_requests_are_kept(world: Fakes) -> None:
    # Given a running job whose cancel request reached the table but not the provider
    job_id = submit(world, "ab")
    batch_id = batch_of(world, job_id)
    world.state.request_cancel(job_id, world.wiring().stamp())

    # When the checker ticks, twice
    first = tick(world)
    second = tick(world)

    # Then it asks the provider to cancel the batch, once the provider shows it no more
    assert first.cancel_sent == [batch_id]
    assert second.cancel_sent == []
    assert world.batches.canceled == [batch_id]

    # And when the batch ends with one request done, the job ends CANCELED with that result kept
    world.batches.end(batch_id, {"a": succeeded("a")})
    tick(world)
    assert status(world, job_id) is JobStatus.CANCELED
    assert [line["result"]["type"] for line in part(world, job_id)] == ["succeeded", "canceled"]


# --- time -------------------------------------------------------------------------------


def test_a_tick_past_its_budget_defers_the_rest_to_the_next(world: Fakes) -> None:
    # Given three ended batches
    jobs = [submit(world, "a", name=name) for name in ("one", "two", "three")]
    for job_id in jobs:
        world.batches.end(batch_of(world, job_id))

    # When a tick whose budget is already spent runs
    report = tick(world, timings=Timings(tick_budget=0))

    # Then it collects nothing and leaves all three to the next tick
    assert report.collected == []
    assert report.deferred == 3
    assert [status(world, job_id) for job_id in jobs] == [JobStatus.RUNNING] * 3

    # And the next tick, on time, collects them
    assert len(tick(world).collected) == 3


def test_a_batch_open_past_its_expiry_is_flagged_canceled_and_its_requests_retried(world: Fakes) -> None:
    # Given a batch still open more than an hour past its expiry
    job_id = submit(world, "ab")
    batch_id = batch_of(world, job_id)
    world.clock.advance(24 * 3600 + Timings().expiry_margin + 1)

    # When the checker ticks, Then it flags the shard and cancels the batch
    report = tick(world)
    assert report.past_expiry == [batch_id]
    assert world.batches.canceled == [batch_id]
    flagged = world.state.get_shard(job_id, 0)
    assert flagged is not None
    assert flagged.overdue_at is not None

    # And when the batch ends canceled, its requests go out again in the next attempt
    world.batches.end(batch_id)
    assert tick(world).retried == 2
    retry = world.state.get_shard(job_id, 0)
    assert retry is not None
    assert (retry.state, retry.attempt, retry.overdue_at) == (ShardState.PENDING, 2, None)


# --- the create lease -------------------------------------------------------------------


def test_a_lease_whose_holder_died_before_its_intent_is_freed_and_the_shard_sent(world: Fakes) -> None:
    # Given a pending shard, and a lease its holder took for it but never used (it died)
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    job_id = submit(world, "ab")
    assert world.state.acquire_create_lease(f"{job_id}#0#dead", world.wiring().stamp(), world.wiring().stamp())

    # When the checker ticks within a minute, Then the holder may still be alive: nothing is sent
    world.clock.advance(Timings().stale_pending_lease / 2)
    assert tick(world).deferred == 1
    assert world.batches.creates == 1

    # When it ticks after that, Then the lease is freed and the shard sent
    world.clock.advance(Timings().stale_pending_lease)
    assert tick(world).submitted == 1
    assert world.batches.requests[batch_of(world, job_id)] == ["a", "b"]
    assert world.state.get_create_lease() is None
