"""A tick that collects a records job's batches and then finishes the job makes its rows'
tails as the results stream in (services/outputs.CollectedResults), instead of reading the
parts back from S3: the outputs must be the bytes a later tick writes from S3, whatever the
results hold, and any surprise must fall back to S3 without changing what is collected."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from batchdrop.domain.rows import outputs_keys
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.errors import CheckerItemsFailedError
from batchdrop.services import outputs, tick
from batchdrop.services.outputs import CollectedResults
from batchdrop.services.tick import Checker
from tests.records_jobs import RecordsJob, message, pipeline_document, result_line, seed_records_job, text_answer
from tests.unit.fakes import Fakes, errored
from tests.unit.test_records_outputs import classified, count_spill_files, reviews

pytestmark = pytest.mark.unit

Answer = Callable[[str, int], Mapping[str, Any]]
TOOL = {
    "name": "classify",
    "description": "Record how the customer feels.",
    "input_schema": {
        "type": "object",
        "properties": {"sentiment": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["sentiment"],
    },
}


def no_retry(custom_id: str, attempt: int) -> Mapping[str, Any]:
    return classified(custom_id, 2)


def tool_call(custom_id: str, attempt: int) -> Mapping[str, Any]:
    n = int(custom_id.rpartition("-")[2])
    if n % 4 == 0:
        return text_answer("I would rather not call it.")
    block = {"type": "tool_use", "id": f"t{n}", "name": "classify", "input": {"sentiment": "ok", "tags": ["a", n]}}
    return message([block], stop_reason="tool_use")


def plain_text(custom_id: str, attempt: int) -> Mapping[str, Any]:
    n = int(custom_id.rpartition("-")[2])
    return errored("invalid_request_error") if n % 6 == 0 else text_answer(f'answer "{n}",\r\n\x00 ✓' * (n % 3))


class Taken:
    """What each CollectedResults.take gave: whether a shard's tails were made as it was collected."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[int] = []
        self.from_s3: list[int] = []
        take = CollectedResults.take

        def counted(owner: CollectedResults, job_id: str, index: int, keys: tuple[str, ...]) -> Any:
            spill = take(owner, job_id, index, keys)
            (self.from_s3 if spill is None else self.made).append(index)
            return spill

        monkeypatch.setattr(CollectedResults, "take", counted)


def run(world: Fakes, job: RecordsJob, answer: Answer, *, end: Callable[[list[str]], list[str]] = list) -> None:
    """Tick until the job is finished, ending after each tick the batches `end` picks of the
    open ones (all of them by default) with `answer`'s results, shuffled."""
    attempts: dict[str, int] = {}
    for _ in range(50):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
        if world.state.jobs[job.job_id].status not in (JobStatus.SUBMITTING, JobStatus.RUNNING):
            return
        open_batches = [
            key for key, batch in world.batches.batches.items() if batch["processing_status"] == "in_progress"
        ]
        for batch_id in end(open_batches):
            ids = world.batches.requests[batch_id]
            for custom_id in ids:
                attempts[custom_id] = attempts.get(custom_id, 0) + 1
            lines = [result_line(cid, answer(cid, attempts[cid])) for cid in ids]
            random.Random(batch_id).shuffle(lines)
            world.batches.end(batch_id, lines=lines)
    raise AssertionError("the job never finished")


def outputs_from_s3(
    records: int, document: Mapping[str, Any], answer: Answer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, bytes]:
    """The outputs of the same job run by ticks that make no tails while collecting."""
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(records, missing=(3,)), document=document, per_shard=8)
    with monkeypatch.context() as patched:
        patched.setattr(tick.Collected, "for_job", lambda collected, job_id: None)
        run(world, job, answer)
    return {name: world.store.get(key) for name, key in outputs_keys(job.job_id).items()}


@pytest.mark.parametrize(
    ("document", "answer"),
    [
        (pipeline_document(), no_retry),
        (pipeline_document(), classified),
        (pipeline_document(output={"tool": TOOL}, keep_fields=["product", "review"]), tool_call),
        (pipeline_document(output=None, keep_fields=None), plain_text),
    ],
    ids=["schema", "schema-with-retries", "tool", "text"],
)
def test_outputs_made_while_collecting_are_the_bytes_made_from_s3(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any], answer: Answer
) -> None:
    # Given a records job of 30 reviews in 4 shards, and the outputs ticks that read every
    # result back from S3 write for it
    expected = outputs_from_s3(30, document, answer, monkeypatch)
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(30, missing=(3,)), document=document, per_shard=8)
    taken = Taken(monkeypatch)

    # When the checker runs it to the end, its batches ending together
    run(world, job, answer)

    # Then the outputs are those bytes; two shards' tails were made as they were collected
    # (no more per tick) unless a retry was sent, and the others' read from S3
    assert {name: world.store.get(key) for name, key in outputs_keys(job.job_id).items()} == expected
    retried = answer is classified
    assert (len(taken.made), len(taken.from_s3)) == ((0, 4) if retried else (2, 2))


def test_shards_collected_in_an_earlier_tick_are_read_from_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a records job of 4 shards whose batches end one per tick
    expected = outputs_from_s3(30, pipeline_document(), no_retry, monkeypatch)
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(30, missing=(3,)), document=pipeline_document(), per_shard=8)
    taken = Taken(monkeypatch)
    opened = count_spill_files(monkeypatch)

    # When the checker runs it to the end
    run(world, job, no_retry, end=lambda batches: batches[:1])

    # Then only the shard collected in the finishing tick had its tails made then, the tails
    # made in earlier ticks were freed with their tick, and the outputs are the same bytes
    assert {name: world.store.get(key) for name, key in outputs_keys(job.job_id).items()} == expected
    assert (len(taken.made), len(taken.from_s3)) == (1, 3)
    assert opened
    assert all(file.closed for file in opened)


@pytest.mark.parametrize("surprise", ["no room", "a part already there", "pipeline unreadable", "a bug"])
def test_tails_not_made_fall_back_to_s3(monkeypatch: pytest.MonkeyPatch, surprise: str) -> None:
    # Given a records job of one shard, and a tick that cannot keep its tails: /tmp has no
    # room for them, its results part was written by an earlier run, its pipeline cannot be
    # read while collecting, or making them fails
    expected = outputs_from_s3(7, pipeline_document(), no_retry, monkeypatch)
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(7, missing=(3,)), document=pipeline_document(), per_shard=8)
    taken = Taken(monkeypatch)
    if surprise == "no room":
        monkeypatch.setattr(outputs, "_COLLECTED_SHARE", 0.0)
    elif surprise == "a part already there":
        write_parts_first(world, monkeypatch)
    elif surprise == "pipeline unreadable":
        monkeypatch.setattr(CollectedResults, "_maker", lambda owner, job: None)
    else:
        monkeypatch.setattr(outputs, "_line_bytes_at_most", lambda maker: 1 / 0)

    # When the checker runs it to the end
    run(world, job, no_retry)

    # Then the shard's outputs came from S3, the same bytes
    assert {name: world.store.get(key) for name, key in outputs_keys(job.job_id).items()} == expected
    assert (taken.made, taken.from_s3) == ([], [0])


def write_parts_first(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each results part is found there already when the collection closes it, as when a
    collection died after writing it: the same results, in another order."""
    from batchdrop.services.collect import Collector

    stream = Collector._stream

    def after_a_crash(collector: Collector, shard: Any, batch: Any, part_key: str, sink: Any) -> Any:
        lines = list(world.batches.results[batch["id"]])
        world.store.put(part_key, b"".join(line + b"\n" for line in reversed(lines)))
        return stream(collector, shard, batch, part_key, sink)

    monkeypatch.setattr(Collector, "_stream", after_a_crash)


def test_a_result_the_outputs_refuse_is_collected_and_refused_as_from_s3(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a records job one of whose results is a succeeded one with no content
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(6), document=pipeline_document(), per_shard=8)
    taken = Taken(monkeypatch)

    def odd(custom_id: str, attempt: int) -> Mapping[str, Any]:
        if custom_id.endswith("4"):
            hollow = message([])
            del hollow["message"]["content"]
            return hollow
        return no_retry(custom_id, attempt)

    # When the checker collects it, then the batch is collected but the job is not finished:
    # the outputs refuse the line, as they would reading it from S3
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    (batch_id,) = world.batches.batches
    world.batches.end(batch_id, lines=[result_line(cid, odd(cid, 1)) for cid in world.batches.requests[batch_id]])
    with pytest.raises(CheckerItemsFailedError, match="job"):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    assert "a succeeded result has no message with content" in caplog.text
    assert world.state.shards(job.job_id)[0].state is ShardState.COLLECTED
    assert world.state.jobs[job.job_id].status is JobStatus.RUNNING
    assert not world.store.exists(outputs_keys(job.job_id)["csv"])
    assert (taken.made, taken.from_s3) == ([], [0])


def test_tails_are_made_only_for_records_jobs_whose_every_batch_was_sent() -> None:
    world = Fakes()
    job = seed_records_job(world.wiring(), reviews(3), document=pipeline_document(), per_shard=8)
    native = replace(world.state.jobs[job.job_id], job_id="native", pipeline=None, status=JobStatus.RUNNING)
    submitting = tick.Collected(world.wiring(), [world.state.jobs[job.job_id], native])
    assert submitting.for_job(job.job_id) is None  # still SUBMITTING
    assert submitting.for_job("native") is None
    assert submitting.results is None
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    running = tick.Collected(world.wiring(), [world.state.jobs[job.job_id]])
    assert isinstance(running.for_job(job.job_id), CollectedResults)
    assert running.for_job(job.job_id) is running.results  # one per tick


FOLLOWING = """
import sys
from batchdrop.domain.states import JobStatus
from batchdrop.services.tick import Checker
from tests.records_jobs import pipeline_document, seed_records_job
from tests.unit.fakes import Fakes
from tests.unit.test_records_outputs import reviews

world = Fakes()
job = seed_records_job(world.wiring(), reviews(3), document=pipeline_document(), per_shard=8)
for _ in range(3):  # its batch made, then followed while it runs
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
assert world.state.jobs[job.job_id].status is JobStatus.RUNNING
print("batchdrop.services.outputs" in sys.modules)
"""


def test_a_tick_that_only_follows_a_records_jobs_batches_loads_no_outputs_code() -> None:
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), str(root / "layers" / "common"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", FOLLOWING],
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
