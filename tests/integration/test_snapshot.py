"""LocalStack's state directory (batchdrop_local.snapshot): what one stack leaves in moto is
there again, the same, in the next stack started with the same directory, on other ports:
every object version with its version id, bytes and metadata (a delete marker too), the
table's items and index, the queues' messages, the event bus's rules and targets, the
secret. A snapshot that cannot be read stops the start and is left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.snapshot import SNAPSHOT_NAME, SnapshotError
from batchdrop_local.stack import LocalStack

LARGE = 6 * 1024 * 1024  # above moto's 5 MB buffer: kept in a temporary file
BATCHDROP = Path(sys.executable).with_name("batchdrop")


@dataclass
class Before:
    """What the first stack held when it stopped."""

    moto_url: str = ""
    versions: list[dict[str, Any]] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    bodies: dict[tuple[str, str], bytes] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    secret: tuple[str, str] = ("", "")


def _versions(stack: LocalStack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    listing = stack.client("s3").list_object_versions(Bucket=stack.bucket_name)
    return listing.get("Versions", []), listing.get("DeleteMarkers", [])


def _scan(stack: LocalStack) -> list[dict[str, Any]]:
    items = stack.client("dynamodb").scan(TableName=stack.table_name, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["PK"]["S"], item["SK"]["S"]))


def _fill(stack: LocalStack) -> Before:
    s3, bucket = stack.client("s3"), stack.bucket_name
    before = Before(moto_url=stack.moto_url)
    for key, body in (("inbox/a.jsonl", b"one\n"), ("inbox/a.jsonl", b"two\n"), ("work/big.bin", os.urandom(LARGE))):
        version = s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"note": key})["VersionId"]
        before.bodies[key, version] = body
    s3.delete_object(Bucket=bucket, Key="inbox/a.jsonl")  # a delete marker on top
    before.versions, before.markers = _versions(stack)
    dynamodb = stack.client("dynamodb")
    for index in range(3):
        item = {"PK": {"S": f"JOB#{index}"}, "SK": {"S": "JOB"}, "n": {"N": str(index)}}
        dynamodb.put_item(TableName=stack.table_name, Item=item)
    open_batch = {"PK": {"S": "JOB#0"}, "SK": {"S": "SHARD#0"}, "GSI1PK": {"S": "OPEN"}, "GSI1SK": {"S": "b"}}
    dynamodb.put_item(TableName=stack.table_name, Item=open_batch)
    before.items = _scan(stack)
    sqs = stack.client("sqs")
    queue = next(iter(stack.queue_urls.values()))
    before.messages = [f"message {index}" for index in range(3)]
    for body in before.messages:
        sqs.send_message(QueueUrl=queue, MessageBody=body)
    events = stack.client("events")
    pattern = json.dumps({"source": ["batchdrop"]})
    events.put_rule(Name="job-ended", EventBusName=stack.event_bus_name, EventPattern=pattern)
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_targets(Rule="job-ended", EventBusName=stack.event_bus_name, Targets=[{"Id": "q", "Arn": arn}])
    before.rules = events.list_rules(EventBusName=stack.event_bus_name)["Rules"]
    before.targets = events.list_targets_by_rule(Rule="job-ended", EventBusName=stack.event_bus_name)["Targets"]
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.secret_arn)
    before.secret = (secret["ARN"], secret["SecretString"])
    return before


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Before]]:
    """A stack started on the directory another stack filled and stopped, and what it held."""
    state = tmp_path_factory.mktemp("state")
    with LocalStack(state_dir=state, autosave_seconds=None) as first:
        assert not first.restored
        before = _fill(first)
    with LocalStack(state_dir=state, autosave_seconds=None) as second:
        yield second, before


def test_every_object_version_comes_back_with_its_version_id_etag_and_bytes(
    restarted: tuple[LocalStack, Before],
) -> None:
    stack, before = restarted
    assert stack.restored
    versions, markers = _versions(stack)
    assert versions == before.versions
    assert markers == before.markers
    assert [marker["IsLatest"] for marker in markers] == [True]
    s3 = stack.client("s3")
    for (key, version), body in before.bodies.items():
        got = s3.get_object(Bucket=stack.bucket_name, Key=key, VersionId=version)
        assert got["Body"].read() == body
        assert got["Metadata"] == {"note": key}
    assert s3.get_bucket_versioning(Bucket=stack.bucket_name)["Status"] == "Enabled"


def test_the_tables_items_and_its_open_batches_index_come_back(restarted: tuple[LocalStack, Before]) -> None:
    stack, before = restarted
    assert _scan(stack) == before.items
    assert stack.open_batch_count() == 1


def test_the_queues_messages_come_back(restarted: tuple[LocalStack, Before]) -> None:
    stack, before = restarted
    queue = next(iter(stack.queue_urls.values()))
    received = stack.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert sorted(message["Body"] for message in received) == before.messages


def test_the_event_buss_rules_and_targets_and_the_secret_come_back(restarted: tuple[LocalStack, Before]) -> None:
    stack, before = restarted
    events = stack.client("events")
    assert events.list_rules(EventBusName=stack.event_bus_name)["Rules"] == before.rules
    assert events.list_targets_by_rule(Rule="job-ended", EventBusName=stack.event_bus_name)["Targets"] == before.targets
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.secret_arn)
    assert (secret["ARN"], secret["SecretString"]) == before.secret


def test_the_restarted_stack_serves_on_its_own_port_and_names_it_everywhere(
    restarted: tuple[LocalStack, Before],
) -> None:
    stack, before = restarted
    assert stack.moto_url != before.moto_url
    assert stack.env["AWS_ENDPOINT_URL"] == stack.moto_url
    assert all(url.startswith(stack.moto_url + "/") for url in stack.queue_urls.values())


def test_the_directory_holds_one_snapshot_and_no_partial_file(restarted: tuple[LocalStack, Before]) -> None:
    stack, _ = restarted
    assert stack.state_dir is not None
    names = {path.name for path in stack.state_dir.iterdir()}
    assert {SNAPSHOT_NAME, "emulator.sqlite3", "lock"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    with zipfile.ZipFile(stack.state_dir / SNAPSHOT_NAME) as archive:
        sizes = sorted(info.file_size for info in archive.infolist() if info.filename.startswith("blobs/"))
    assert sizes == [4, 4, LARGE]  # one entry per object version, its bytes as they are


def test_a_snapshot_that_cannot_be_read_stops_the_start_and_is_kept(tmp_path: Path) -> None:
    snapshot = tmp_path / SNAPSHOT_NAME
    snapshot.write_bytes(b"not a zip")
    stack = LocalStack(state_dir=tmp_path, autosave_seconds=None)
    with pytest.raises(SnapshotError) as raised:
        stack.start()
    assert str(raised.value) == f"cannot read the saved state {snapshot}: File is not a zip file"
    assert snapshot.read_bytes() == b"not a zip"


def test_local_up_on_a_snapshot_of_another_moto_says_so_in_one_line(tmp_path: Path) -> None:
    snapshot = tmp_path / "state" / SNAPSHOT_NAME
    snapshot.parent.mkdir()
    with zipfile.ZipFile(snapshot, "w") as archive:
        archive.writestr("header.json", json.dumps({"format": 1, "moto": "4.0.0"}))
    import moto

    done = subprocess.run(
        [str(BATCHDROP), "local", "up", "--state-dir", str(snapshot.parent), "--env-file", str(tmp_path / "e.env")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"batchdrop: error: {snapshot} was saved by moto 4.0.0 and this is moto {moto.__version__}: its objects may"
        " not load; move it away to start empty"
    )


def test_the_state_is_saved_as_it_changes_and_not_while_it_is_only_read(tmp_path: Path) -> None:
    with LocalStack(state_dir=tmp_path, autosave_seconds=0.2) as stack:
        assert stack.state is not None
        autosaver = stack.state.autosaver
        assert autosaver is not None
        time.sleep(0.5)
        assert autosaver.saves == 0  # nothing changed since the resources were made
        s3 = stack.client("s3")
        s3.put_object(Bucket=stack.bucket_name, Key="inbox/x.jsonl", Body=b"x\n")
        deadline = time.monotonic() + 10
        while autosaver.saves < 1:
            assert time.monotonic() < deadline, "no save 10 s after a put"
            time.sleep(0.05)
        with zipfile.ZipFile(tmp_path / SNAPSHOT_NAME) as archive:
            assert archive.read("blobs/0") == b"x\n"
        saves = autosaver.saves
        s3.list_object_versions(Bucket=stack.bucket_name)
        s3.get_object(Bucket=stack.bucket_name, Key="inbox/x.jsonl")["Body"].read()
        stack.client("dynamodb").scan(TableName=stack.table_name)
        time.sleep(0.6)
        assert autosaver.saves == saves


@pytest.mark.parametrize("explicit", [False, True], ids=["built-in settings", "settings given"])
def test_the_emulator_keeps_its_database_in_the_state_dir(tmp_path: Path, explicit: bool) -> None:
    settings = EmulatorSettings(host="127.0.0.1", port=0, latency=1.0) if explicit else None
    with LocalStack(state_dir=tmp_path, autosave_seconds=None, emulator_settings=settings) as stack:
        assert stack.emulator is not None
        assert stack.emulator.store.db_path == tmp_path / "emulator.sqlite3"


def test_what_the_autosave_wrote_is_restored_after_a_stop_that_never_saved(tmp_path: Path) -> None:
    state, kept = tmp_path / "state", tmp_path / "autosaved.snapshot"
    # Given a stack that autosaved after a first upload, and was then killed after a second
    with LocalStack(state_dir=state, autosave_seconds=0.2) as stack:
        assert stack.state is not None
        autosaver = stack.state.autosaver
        assert autosaver is not None
        s3 = stack.client("s3")
        first = s3.put_object(Bucket=stack.bucket_name, Key="inbox/first.jsonl", Body=b"1\n")["VersionId"]
        deadline = time.monotonic() + 10
        while autosaver.saves < 1:
            assert time.monotonic() < deadline, "no save 10 s after a put"
            time.sleep(0.05)
        (state / SNAPSHOT_NAME).replace(kept)  # what a kill -9 would leave: the autosaved snapshot
        autosaver.stop()
        s3.put_object(Bucket=stack.bucket_name, Key="inbox/second.jsonl", Body=b"2\n")
    kept.replace(state / SNAPSHOT_NAME)  # the save at the stop never happened
    # When the stack starts again, then it has what was autosaved, under the same version id
    with LocalStack(state_dir=state, autosave_seconds=None) as stack:
        versions = stack.client("s3").list_object_versions(Bucket=stack.bucket_name)["Versions"]
        assert [(version["Key"], version["VersionId"]) for version in versions] == [("inbox/first.jsonl", first)]
