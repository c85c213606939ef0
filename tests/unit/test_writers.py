"""What a writer other than our functions cannot change: a shard body replaced in work/
after it was written is never sent (each create reads the version recorded with the
shard), and what the submit function is handed that is not an upload of ours is refused."""

from __future__ import annotations

import pytest

from batchdrop.domain.shards import shard_key
from batchdrop.domain.states import ShardState
from batchdrop.errors import ProviderRejectedError
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker, TickReport
from tests.unit.fakes import Fakes, errored, request

pytestmark = pytest.mark.unit


QUEUE_FULL = ProviderRejectedError(429, "the queue is full", queue_full=True)


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def tick(world: Fakes) -> TickReport:
    return Checker(world.wiring(), seconds_left=lambda: 900.0).tick()


def forged(*custom_ids: str) -> bytes:
    """A body of other requests, of the same count and byte length as the real ones."""
    return b"".join(request(custom_id) + b"\n" for custom_id in custom_ids)


def test_a_shard_replaced_after_the_split_is_sent_as_it_was_written(world: Fakes) -> None:
    # Given a file whose shard was written and recorded, but not sent (the queue was full)
    world.batches.fail_create(QUEUE_FULL)
    source = world.upload("inbox/swap.jsonl", [request("a"), request("b")])
    job_id = Intake(world.wiring()).submit(source).job_id
    [shard] = world.state.shards(job_id)
    assert shard.state is ShardState.PENDING
    assert shard.version_id == world.store.version_of(shard.key)

    # When another writer replaces its body in work/ before the checker sends it
    world.store.put(shard.key, forged("x", "y"))
    tick(world)

    # Then the batch carries the requests the split wrote, not the replacement
    [batch_id] = world.batches.batches
    assert world.batches.bodies[batch_id] == [request("a"), request("b")]


def test_a_retry_body_replaced_before_its_create_is_sent_as_it_was_written(world: Fakes) -> None:
    # Given a batch whose request "b" failed transiently: its retry body is written and recorded
    job_id = Intake(world.wiring()).submit(world.upload("inbox/retry.jsonl", [request("a"), request("b")])).job_id
    [first] = world.batches.batches
    world.batches.end(first, {"b": errored("api_error")})
    tick(world)
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert (shard.state, shard.key) == (ShardState.PENDING, shard_key(job_id, 0, 2))
    assert shard.version_id == world.store.version_of(shard.key)

    # When another writer replaces the retry body, then the checker sends the retry
    world.store.put(shard.key, forged("x"))
    tick(world)

    # Then the retry's batch carries "b" as it was written
    second = next(batch for batch in world.batches.batches if batch != first)
    assert world.batches.bodies[second] == [request("b")]


def test_a_retry_body_is_made_from_the_version_of_the_attempt_before_it(world: Fakes) -> None:
    # Given a sent shard whose body in work/ was replaced after its create
    job_id = Intake(world.wiring()).submit(world.upload("inbox/after.jsonl", [request("a"), request("b")])).job_id
    [first] = world.batches.batches
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    world.store.put(shard.key, forged("x", "y"))

    # When "b" fails transiently and the checker writes the retry body and sends it
    world.batches.end(first, {"b": errored("api_error")})
    tick(world)
    tick(world)

    # Then the retry is "b" as the split wrote it
    second = next(batch for batch in world.batches.batches if batch != first)
    assert world.batches.bodies[second] == [request("b")]
