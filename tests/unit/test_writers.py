"""What a writer other than our functions cannot change: a shard body replaced in work/
after it was written is never sent (each create reads the version recorded with the
shard), and what the submit function is handed that is not an upload of ours is refused."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from batchdrop import wiring
from batchdrop.domain.shards import shard_key
from batchdrop.domain.states import ShardState
from batchdrop.errors import ProviderRejectedError
from batchdrop.services.cancel import CANCEL_PREFIX, Canceler, refusal_key
from batchdrop.services.intake import Intake, RefusedRecord, S3Upload, check_record
from batchdrop.services.tick import Checker, TickReport
from batchdrop_local.lambda_context import LocalLambdaContext
from tests.unit.fakes import Fakes, errored, request

pytestmark = pytest.mark.unit

SUBMIT_APP = Path(__file__).resolve().parents[2] / "functions" / "submit" / "app.py"

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


# --- the records SubmitFunction is handed --------------------------------------------------


def s3_record(key: str, bucket: str = "bucket", source: str = "aws:s3", version_id: str = "v1") -> dict[str, Any]:
    """One record as S3 sends it (the key URL-encoded)."""
    obj = {"key": quote_plus(key, safe="/"), "size": 10, "versionId": version_id}
    return {"eventSource": source, "s3": {"bucket": {"name": bucket}, "object": obj}}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (s3_record("inbox/a.jsonl", source="aws:sqs"), "eventSource is 'aws:sqs', not 'aws:s3'"),
        ({**s3_record("inbox/a.jsonl"), "eventSource": None}, "eventSource is None, not 'aws:s3'"),
        (s3_record("inbox/a.jsonl", bucket="elsewhere"), "bucket 'elsewhere' is not this stack's 'bucket'"),
        (s3_record("work/j/shard-00000.jsonl"), "the key is under none of inbox/, cancel/, approve/"),
        (s3_record("results/j/manifest.json"), "the key is under none of inbox/, cancel/, approve/"),
        (s3_record("inboxes/a.jsonl"), "the key is under none of inbox/, cancel/, approve/"),
        ({"eventSource": "aws:s3"}, "the record names no S3 object"),
        (
            {"eventSource": "aws:s3", "s3": {"bucket": {"name": "bucket"}, "object": {}}},
            "the record names no S3 object",
        ),
        ("not a record", "the record names no S3 object"),
    ],
    ids=["not-s3", "no-source", "other-bucket", "work", "results", "inboxes", "no-s3", "no-key", "not-a-dict"],
)
def test_a_record_that_is_not_an_upload_of_ours_is_refused_with_its_reason(record: Any, reason: str) -> None:
    checked = check_record(record, "bucket")
    assert isinstance(checked, RefusedRecord)
    assert checked.reason == reason


def test_an_upload_to_inbox_or_cancel_is_taken_with_its_key_decoded() -> None:
    assert check_record(s3_record("inbox/a b+c.jsonl"), "bucket") == S3Upload("inbox/a b+c.jsonl", "v1", 10)
    upload = check_record(s3_record("cancel/j0123456789abcdef01234567"), "bucket")
    assert isinstance(upload, S3Upload)
    assert upload.is_cancel


@pytest.fixture
def submit_handler(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """SubmitFunction's handler, imported as Lambda does, wired to the fakes."""
    monkeypatch.setattr(wiring, "from_env", world.wiring)
    spec = importlib.util.spec_from_file_location("_submit_app_under_test", SUBMIT_APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.lambda_handler
    return lambda event: dict(handler(event, LocalLambdaContext("SubmitFunction")))


def test_submit_refuses_forged_records_and_takes_the_others(
    world: Fakes, submit_handler: Callable[[dict[str, Any]], dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an upload of ours, and records naming another bucket, another source and work/
    source = world.upload("inbox/real.jsonl", [request("a")])
    world.store.put("work/forged.jsonl", forged("x"))
    event = {
        "Records": [
            s3_record("inbox/real.jsonl", bucket="elsewhere", version_id=source.version_id),
            s3_record("inbox/real.jsonl", source="aws:sqs", version_id=source.version_id),
            s3_record("work/forged.jsonl"),
            s3_record("inbox/real.jsonl", version_id=source.version_id),
        ]
    }

    # When the submit function is invoked with them all
    answer = submit_handler(event)

    # Then only the upload of ours became a job and a batch; each other record is refused,
    # said with its key and reason in a warning, and none failed the invocation
    assert [sorted(outcome) for outcome in answer["jobs"]] == [["key", "refused"]] * 3 + [
        ["duplicate", "job_id", "status"]
    ]
    assert list(world.state.jobs) == [answer["jobs"][3]["job_id"]]
    [batch_id] = world.batches.batches
    assert world.batches.bodies[batch_id] == [request("a")]
    refusals = [
        (record.levelname, getattr(record, "key", None), getattr(record, "reason", None))
        for record in caplog.records
        if record.getMessage() == "S3 record refused"
    ]
    assert refusals == [
        ("WARNING", "inbox/real.jsonl", "bucket 'elsewhere' is not this stack's 'bucket'"),
        ("WARNING", "inbox/real.jsonl", "eventSource is 'aws:sqs', not 'aws:s3'"),
        ("WARNING", "work/forged.jsonl", "the key is under none of inbox/, cancel/, approve/"),
    ]


# --- a cancel object's refusal -------------------------------------------------------------


def _longest_fitting_name(char: str) -> str:
    """A cancel/ name made of `char` whose errors/cancel/<name>.json is exactly 1,024 bytes."""
    room = 1024 - len(b"errors/cancel/") - len(b".json")
    return char * (room // len(char.encode()))


@pytest.mark.parametrize("char", ["x", "é", "猫"], ids=["ascii", "two-byte", "three-byte"])
def test_a_cancel_name_too_long_for_its_error_key_gets_its_refusal_under_a_hashed_name(world: Fakes, char: str) -> None:
    # Given cancel objects whose names are as long as an S3 key allows (1,024 bytes of UTF-8)
    key = CANCEL_PREFIX + char * ((1024 - len(CANCEL_PREFIX)) // len(char.encode()))
    assert len(key.encode()) <= 1024 < len(f"errors/cancel/{key.removeprefix(CANCEL_PREFIX)}.json".encode())

    # When it is handled
    outcome = Canceler(world.wiring()).cancel_from_key(key)

    # Then it is refused, and its reason is written under the SHA-256 of its key, naming the key
    assert outcome.status == "BAD_KEY"
    hashed = f"errors/cancel/{hashlib.sha256(key.encode()).hexdigest()}.json"
    assert world.store.keys("errors/") == [hashed]
    written = world.store.get_json(hashed)
    assert written["key"] == key
    assert "is not cancel/<job_id>" in written["reason"]


@pytest.mark.parametrize("char", ["x", "é"], ids=["ascii", "two-byte"])
def test_a_cancel_name_whose_error_key_fits_keeps_its_readable_name(world: Fakes, char: str) -> None:
    name = _longest_fitting_name(char)
    Canceler(world.wiring()).cancel_from_key(CANCEL_PREFIX + name)
    assert world.store.keys("errors/") == [f"errors/cancel/{name}.json"]
    assert len(f"errors/cancel/{name}.json".encode()) <= 1024
    assert refusal_key(CANCEL_PREFIX + name + "x") != refusal_key(CANCEL_PREFIX + name + "y")
