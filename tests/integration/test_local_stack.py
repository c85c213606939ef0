"""The local stack and runner: template.yaml's resources in moto, the environment handlers and
clients get, and Lambda's wiring (S3 notifications per object version, scheduled ticks, async
retries), driven with stand-in handlers so this tier does not depend on the real ones."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3Model

from batchdrop.config import Settings, environment
from batchdrop.observability import logger
from batchdrop_local.runner import HIDDEN_FROM_HANDLERS, LocalRunner, build_s3_event, load_event, load_handler
from batchdrop_local.stack import SKIPPED_TYPES, FunctionSpec, LocalStack, SamTemplate

CLIENT_NAMES = {
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_SECRET_ARN",
    "BATCHDROP_BUCKET",
    "BATCHDROP_TABLE",
    "BATCHDROP_EVENT_BUS",
}
DEADLINE_SECONDS = 10.0


# ---------------------------------------------------------------- fixtures and stand-ins


class StandInHandler:
    """Records every call (event, context, the environment it ran in, as
    `batchdrop.config` gives it to a handler); fails the first `failures` calls, like a
    handler whose dependency is briefly down."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock:
            self.calls.append(
                {
                    "event": event,
                    "context": context,
                    "remaining_ms": context.get_remaining_time_in_millis(),
                    "environ": dict(environment()),
                }
            )
            number = len(self.calls)
        if number <= self.failures:
            raise RuntimeError(f"stand-in failure {number}")
        return {"ok": number}

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [call["event"] for call in self.calls]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(latency=0.2) as running:
        yield running


@pytest.fixture(scope="module")
def template() -> SamTemplate:
    return SamTemplate.load()


@pytest.fixture
def submit() -> StandInHandler:
    return StandInHandler()


@pytest.fixture
def checker() -> StandInHandler:
    return StandInHandler()


@pytest.fixture
def runner(stack: LocalStack, submit: StandInHandler, checker: StandInHandler) -> Iterator[LocalRunner]:
    local_runner = LocalRunner(stack, submit, checker, tick_seconds=0.05, poll_seconds=0.02, retry_delay_seconds=0)
    yield local_runner
    local_runner.stop()


def put(stack: LocalStack, key: str, body: bytes = b'{"custom_id": "a"}\n') -> str:
    """Upload and return the new version id."""
    return str(stack.client("s3").put_object(Bucket=stack.bucket_name, Key=key, Body=body)["VersionId"])


def unique_key(prefix: str = "inbox/", name: str = "reviews.jsonl") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}/{name}"


def wait_until(condition: Callable[[], bool], deadline_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def s3_object(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["Records"][0]["s3"]["object"])


def shape(value: Any) -> Any:
    """The keys and value types of a JSON document, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


# ---------------------------------------------------------------- lifecycle
# First in the module on purpose: it needs moto's process-global state to itself, so it runs
# before the module's shared stack starts.


def test_a_stopped_stack_leaves_nothing_behind_for_the_next_one() -> None:
    with LocalStack(latency=0) as first:
        put(first, "inbox/left-behind.jsonl")

    with LocalStack(latency=0) as second:
        listing = second.client("s3").list_objects_v2(Bucket=second.bucket_name)

    assert listing["KeyCount"] == 0


# ---------------------------------------------------------------- resources from the template


def test_table_is_created_with_the_templates_keys_and_indexes(stack: LocalStack, template: SamTemplate) -> None:
    (table_id,) = template.resources_of_type("AWS::DynamoDB::Table")
    declared = template.properties(table_id)

    table = stack.client("dynamodb").describe_table(TableName=stack.table_name)["Table"]

    assert table["KeySchema"] == declared["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(declared["AttributeDefinitions"], key=str)
    assert {gsi["IndexName"]: gsi["KeySchema"] for gsi in table["GlobalSecondaryIndexes"]} == {
        gsi["IndexName"]: gsi["KeySchema"] for gsi in declared["GlobalSecondaryIndexes"]
    }
    assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
    ttl = stack.client("dynamodb").describe_time_to_live(TableName=stack.table_name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == declared["TimeToLiveSpecification"]["AttributeName"]


def test_bucket_is_versioned_encrypted_private_and_has_the_templates_lifecycle(
    stack: LocalStack, template: SamTemplate
) -> None:
    (bucket_id,) = template.resources_of_type("AWS::S3::Bucket")
    declared = stack.resolver.resolve(template.properties(bucket_id))  # with its parameters' defaults
    s3 = stack.client("s3")

    assert s3.get_bucket_versioning(Bucket=stack.bucket_name)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=stack.bucket_name)["ServerSideEncryptionConfiguration"]["Rules"]
    declared_sse = declared["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == declared_sse["ServerSideEncryptionByDefault"]
    block = s3.get_public_access_block(Bucket=stack.bucket_name)["PublicAccessBlockConfiguration"]
    assert block == declared["PublicAccessBlockConfiguration"]
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=stack.bucket_name)["Rules"]
    assert [rule["ID"] for rule in lifecycle] == [rule["Id"] for rule in declared["LifecycleConfiguration"]["Rules"]]


def test_event_bus_queues_and_secret_exist(stack: LocalStack, template: SamTemplate) -> None:
    buses = stack.client("events").list_event_buses()["EventBuses"]
    assert stack.event_bus_name in {bus["Name"] for bus in buses}
    assert set(stack.queue_urls) == set(template.resources_of_type("AWS::SQS::Queue"))
    for url in stack.queue_urls.values():
        stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    secret = stack.client("secretsmanager").get_secret_value(SecretId=stack.env["ANTHROPIC_SECRET_ARN"])
    assert secret["SecretString"] == stack.env["ANTHROPIC_API_KEY"]


def test_every_template_resource_is_created_or_skipped_for_a_stated_reason(
    stack: LocalStack, template: SamTemplate
) -> None:
    created = {name for name in template.resources if name not in stack.skipped_resources}
    assert created, "nothing was created"
    for name, resource in template.resources.items():
        if name in stack.skipped_resources:
            assert resource["Type"] in SKIPPED_TYPES, f"{name} ({resource['Type']}) was skipped without a reason"
        else:
            assert stack.resource(name).ref


# ---------------------------------------------------------------- environment


def test_env_has_every_name_a_client_and_the_handlers_need(stack: LocalStack, template: SamTemplate) -> None:
    names_in_template = set(template.function_globals["Environment"]["Variables"])

    env = stack.env

    assert names_in_template <= set(env)
    assert set(env) >= CLIENT_NAMES
    assert all(value for value in env.values()), env
    assert env["BATCHDROP_BUCKET"] == stack.bucket_name
    assert env["BATCHDROP_TABLE"] == stack.table_name
    assert env["BATCHDROP_EVENT_BUS"] == stack.event_bus_name
    assert env["AWS_ENDPOINT_URL"] == stack.moto_url
    assert env["ANTHROPIC_BASE_URL"] == stack.emulator_url


def test_function_env_is_what_lambda_gives_that_function(stack: LocalStack, template: SamTemplate) -> None:
    for name, function in template.functions().items():
        env = stack.function_env(name)

        assert set(function.environment) <= set(env)
        for variable, value in function.environment.items():
            if isinstance(value, str):
                assert env[variable] == value
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == stack.function_name(name)
        assert "ANTHROPIC_API_KEY" not in env, "on AWS the key comes from the secret only"


def test_env_file_is_written_as_shell_assignments(stack: LocalStack, tmp_path: Path) -> None:
    path = stack.write_env_file(tmp_path / ".batchdrop" / "local.env")

    parsed = dict(line.split("=", 1) for line in path.read_text().splitlines())

    assert {name: shlex.split(value)[0] for name, value in parsed.items()} == {
        **stack.env,
        "BATCHDROP_LOCAL_PID": str(os.getpid()),
        "BATCHDROP_LOCAL_STARTED_AT": parsed["BATCHDROP_LOCAL_STARTED_AT"],
        "BATCHDROP_ENV_FILE": str(path),
    }


def _deleted_file_bytes() -> int:
    """Bytes of the deleted files this process holds open (moto's temporary files among them)."""
    total = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").endswith(" (deleted)"):
                total += os.fstat(int(name)).st_size
        except OSError:
            continue
    return total


def test_listing_object_versions_keeps_no_copy_of_the_bucket(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    key = unique_key(prefix="work/", name="large.bin")
    old = put(stack, key, b"o" * (6 * 1024 * 1024))  # over moto's 5 MB in-memory limit
    new = put(stack, key, b"n" * (6 * 1024 * 1024))
    s3.delete_object(Bucket=stack.bucket_name, Key=key)
    before = _deleted_file_bytes()

    listings = [s3.list_object_versions(Bucket=stack.bucket_name, Prefix=prefix) for prefix in ("inbox/", key) * 3]

    assert _deleted_file_bytes() - before < 1024 * 1024
    versions = listings[-1]["Versions"]
    assert [(item["VersionId"], item["IsLatest"], item["Size"]) for item in versions] == [
        (new, False, 6 * 1024 * 1024),
        (old, False, 6 * 1024 * 1024),
    ]
    assert [marker["IsLatest"] for marker in listings[-1]["DeleteMarkers"]] == [True]
    assert s3.get_object(Bucket=stack.bucket_name, Key=key, VersionId=old)["Body"].read(1) == b"o"


# ---------------------------------------------------------------- S3 notifications


def test_a_put_into_inbox_delivers_one_real_shaped_event_with_its_version(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    key = unique_key(name="some file+1.jsonl")
    version_id = put(stack, key)

    runner.run_once()
    runner.run_once()

    assert len(submit.events) == 1
    event = submit.events[0]
    assert s3_object(event)["versionId"] == version_id
    assert s3_object(event)["key"] == quote_plus(key, safe="/")
    assert s3_object(event)["key"] != key
    parsed = S3Event(event)
    assert parsed.object_key == key
    assert parsed.bucket_name == stack.bucket_name
    assert parsed.record.s3.get_object.version_id == version_id
    model = parse(event=event, model=S3Model)
    assert model.Records[0].s3.object.versionId == version_id
    assert model.Records[0].eventName == "ObjectCreated:Put"


def test_a_second_put_of_the_same_key_is_a_new_version_and_a_new_event(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    key = unique_key()
    first = put(stack, key, b"first\n")
    runner.run_once()
    second = put(stack, key, b"second\n")

    runner.run_once()

    assert first != second
    assert [s3_object(event)["versionId"] for event in submit.events] == [first, second]
    sequencers = [s3_object(event)["sequencer"] for event in submit.events]
    assert sequencers == sorted(sequencers)
    assert len(set(sequencers)) == 2
    assert s3_object(submit.events[1])["size"] == len(b"second\n")


@pytest.mark.parametrize("prefix", ["results/", "work/", "errors/", "pipelines/", "inbox-not/", "cancel-not/"])
def test_puts_outside_inbox_deliver_nothing(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler, prefix: str
) -> None:
    put(stack, unique_key(prefix=prefix))

    delivered = runner.run_once()

    assert delivered == 0
    assert submit.events == []


def test_objects_already_there_when_the_runner_starts_are_not_delivered(
    stack: LocalStack, submit: StandInHandler, checker: StandInHandler
) -> None:
    put(stack, unique_key())

    late_runner = LocalRunner(stack, submit, checker, retry_delay_seconds=0)
    late_runner.run_once()

    assert submit.events == []


def test_redeliver_sends_a_duplicate_of_the_same_version(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    key = unique_key()
    version_id = put(stack, key)
    runner.run_once()

    runner.redeliver(key, version_id)
    runner.run_once()

    assert len(submit.events) == 2
    assert [s3_object(event)["versionId"] for event in submit.events] == [version_id, version_id]
    assert s3_object(submit.events[0])["key"] == s3_object(submit.events[1])["key"]


def test_a_put_into_cancel_delivers_its_own_event_to_the_submit_function(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler, template: SamTemplate
) -> None:
    (cancel_event,) = (
        name
        for name, event in template.function("SubmitFunction").events_of_type("S3").items()
        if event["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "cancel/"}]
    )
    key = f"cancel/j{uuid.uuid4().hex[:24]}"
    version_id = put(stack, key, b"")

    runner.run_once()

    (event,) = submit.events
    record = event["Records"][0]
    assert S3Event(event).object_key == key
    assert s3_object(event)["versionId"] == version_id
    assert s3_object(event)["size"] == 0
    assert record["s3"]["configurationId"] == f"SubmitFunction{cancel_event}"
    assert record["eventName"] == "ObjectCreated:Put"


def test_a_lost_event_is_never_delivered_and_others_still_are(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    lost_key, kept_key = unique_key(name="lost.jsonl"), unique_key(name="kept.jsonl")
    lost_version = put(stack, lost_key)
    kept_version = put(stack, kept_key)

    runner.lose_event(lost_key, lost_version)
    runner.run_once()
    runner.run_once()

    assert [S3Event(event).object_key for event in submit.events] == [kept_key]
    assert runner.lost_events == [(lost_key, lost_version)]
    assert (lost_key, lost_version) not in runner.accepted_versions
    assert (kept_key, kept_version) in runner.accepted_versions


def test_a_lost_event_can_still_arrive_late_with_redeliver(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    key = unique_key()
    version_id = put(stack, key)
    runner.lose_event(key, version_id)
    runner.run_once()

    runner.redeliver(key, version_id)
    runner.run_once()

    assert [s3_object(event)["versionId"] for event in submit.events] == [version_id]


def test_a_queued_event_can_be_lost_but_a_delivered_one_cannot(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    queued_key, delivered_key = unique_key(), unique_key()
    delivered_version = put(stack, delivered_key)
    runner.run_once()
    queued_version = put(stack, queued_key)
    assert runner.discover() == 1  # queued, not yet delivered

    runner.lose_event(queued_key, queued_version)
    runner.run_once()

    assert [S3Event(event).object_key for event in submit.events] == [delivered_key]
    with pytest.raises(ValueError, match="already delivered"):
        runner.lose_event(delivered_key, delivered_version)


def test_lose_events_drops_matching_uploads_in_the_background(
    stack: LocalStack, submit: StandInHandler, checker: StandInHandler
) -> None:
    lost_key, kept_key = unique_key(name="lost.jsonl"), unique_key(name="kept.jsonl")
    lossy_runner = LocalRunner(
        stack,
        submit,
        checker,
        poll_seconds=0.02,
        retry_delay_seconds=0,
        lose_events=lambda key, _version_id: key == lost_key,
    )

    with lossy_runner:
        lost_version = put(stack, lost_key)
        put(stack, kept_key)
        wait_until(lambda: len(submit.events) == 1 and lossy_runner.lost_events != [])

    assert S3Event(submit.events[0]).object_key == kept_key
    assert lossy_runner.lost_events == [(lost_key, lost_version)]


def test_a_multipart_upload_arrives_as_complete_multipart_upload(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    s3 = stack.client("s3")
    key = unique_key()
    upload = s3.create_multipart_upload(Bucket=stack.bucket_name, Key=key)
    part = s3.upload_part(Bucket=stack.bucket_name, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
    done = s3.complete_multipart_upload(
        Bucket=stack.bucket_name,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )

    runner.run_once()

    (event,) = submit.events
    assert event["Records"][0]["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert s3_object(event)["versionId"] == done["VersionId"]


def test_a_failing_handler_is_tried_three_times_then_recorded_and_sent_to_the_failure_queue(
    stack: LocalStack, checker: StandInHandler, template: SamTemplate
) -> None:
    always_failing = StandInHandler(failures=100)
    failing_runner = LocalRunner(stack, always_failing, checker, retry_delay_seconds=0)
    key = unique_key()
    put(stack, key)

    failing_runner.run_once()

    assert len(always_failing.calls) == 3
    assert [invocation.attempt for invocation in failing_runner.invocations_of("SubmitFunction")] == [1, 2, 3]
    (failure,) = failing_runner.failures
    assert failure.attempts == 3
    assert "stand-in failure 3" in failure.error
    destination = template.function("SubmitFunction").event_invoke_config["DestinationConfig"]["OnFailure"]
    queue_id = destination["Destination"]["Fn::GetAtt"][0]
    messages = stack.client("sqs").receive_message(QueueUrl=stack.queue_urls[queue_id], WaitTimeSeconds=1)["Messages"]
    record = json.loads(messages[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == always_failing.events[0]
    assert record["responsePayload"]["errorType"] == "RuntimeError"


def test_a_handler_that_fails_once_succeeds_on_the_retry(stack: LocalStack, checker: StandInHandler) -> None:
    flaky = StandInHandler(failures=1)
    flaky_runner = LocalRunner(stack, flaky, checker, retry_delay_seconds=0)
    put(stack, unique_key())

    flaky_runner.run_once()

    assert len(flaky.calls) == 2
    assert flaky.events[0] == flaky.events[1]
    assert flaky_runner.failures == []


def test_handlers_run_in_their_functions_environment_with_a_lambda_context(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler, template: SamTemplate
) -> None:
    os.environ["ANTHROPIC_API_KEY"] = "a-real-key-in-the-users-shell"
    try:
        before = dict(os.environ)
        put(stack, unique_key())
        runner.run_once()
        assert dict(os.environ) == before
    finally:
        del os.environ["ANTHROPIC_API_KEY"]

    (call,) = submit.calls
    function = template.function("SubmitFunction")
    assert call["environ"] == {
        name: value for name, value in stack.function_env("SubmitFunction").items() if name not in HIDDEN_FROM_HANDLERS
    }
    assert call["environ"]["POWERTOOLS_SERVICE_NAME"] == function.environment["POWERTOOLS_SERVICE_NAME"]
    assert call["environ"]["AWS_ENDPOINT_URL"] == stack.moto_url
    assert "ANTHROPIC_API_KEY" not in call["environ"]
    context = call["context"]
    assert context.function_name == stack.function_name("SubmitFunction")
    assert context.memory_limit_in_mb == function.memory_mb
    assert context.invoked_function_arn.endswith(f":function:{context.function_name}")
    assert 0 < call["remaining_ms"] <= function.timeout_seconds * 1000
    assert uuid.UUID(context.aws_request_id)


def test_submit_and_checker_run_at_once_each_with_its_own_environment_and_service(
    stack: LocalStack, template: SamTemplate
) -> None:
    # Given stand-ins decorated as the real handlers are, that wait for each other: each gets
    # past the first barrier only while the other is under way too
    barrier = threading.Barrier(2, timeout=DEADLINE_SECONDS)
    seen: dict[str, dict[str, Any]] = {}

    def meeting(name: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        @logger.inject_lambda_context(clear_state=True)
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            barrier.wait()
            logger.warning("both under way", extra={"who": name})
            seen[name] = {"settings": Settings.from_env(), "environ": dict(environment()), "os": dict(os.environ)}
            barrier.wait()  # neither ends before both have logged and looked
            return {}

        return handler

    both = LocalRunner(stack, meeting("SubmitFunction"), meeting("CheckerFunction"), retry_delay_seconds=0)
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(logger.registered_formatter)
    logger.addHandler(capture)
    process_environ = dict(os.environ)
    try:
        put(stack, unique_key())
        # When the S3 event is delivered in one thread while the checker ticks in another
        threads = [threading.Thread(target=both.deliver_pending), threading.Thread(target=both.tick)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(4 * DEADLINE_SECONDS)
    finally:
        logger.removeHandler(capture)

    # Then both ran at once, neither failed, and os.environ was never changed
    assert [invocation.error for invocation in both.invocations] == [None, None]
    assert set(seen) == {"SubmitFunction", "CheckerFunction"}
    assert dict(os.environ) == process_environ
    services = {}
    for name, saw in seen.items():
        # each saw its own function's variables, through Settings as through its environment
        declared = template.function(name).environment["POWERTOOLS_SERVICE_NAME"]
        services[name] = declared
        assert saw["os"] == process_environ
        assert saw["environ"]["POWERTOOLS_SERVICE_NAME"] == declared
        assert saw["environ"]["AWS_LAMBDA_FUNCTION_NAME"] == stack.function_name(name)
        assert saw["settings"].function_name == stack.function_name(name)
        assert saw["settings"].aws_endpoint == stack.moto_url
        assert saw["settings"].bucket == stack.bucket_name
    assert services["SubmitFunction"] != services["CheckerFunction"]
    # And each one's log line carries its own service
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert {record["who"]: record["service"] for record in logged if "who" in record} == services


def test_a_change_to_os_environ_during_an_invocation_is_not_undone_when_it_ends(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, changed = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def slow_checker(event: dict[str, Any], context: Any) -> None:
        started.set()
        assert changed.wait(DEADLINE_SECONDS)
        seen["region"] = Settings.from_env().region

    slow = LocalRunner(stack, StandInHandler(), slow_checker, retry_delay_seconds=0)
    ticking = threading.Thread(target=slow.tick)
    ticking.start()
    assert started.wait(DEADLINE_SECONDS)

    # When the test changes the process environment while the checker is under way
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("BATCHDROP_BUCKET", "the-users-own-bucket")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    changed.set()
    ticking.join(DEADLINE_SECONDS)

    # Then the change outlives the invocation, which saw its function's values throughout
    assert [invocation.error for invocation in slow.invocations] == [None]
    assert os.environ["AWS_DEFAULT_REGION"] == "eu-west-3"
    assert os.environ["BATCHDROP_BUCKET"] == "the-users-own-bucket"
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert seen == {"region": stack.region}


def test_the_background_runner_delivers_uploads_without_being_asked(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    runner.start()
    version_id = put(stack, unique_key())

    wait_until(lambda: len(submit.events) == 1)

    assert s3_object(submit.events[0])["versionId"] == version_id


def test_a_running_runner_makes_no_s3_call_until_an_object_is_created(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    s3 = stack.client("s3")
    calls: list[str] = []

    def record(**kwargs: Any) -> None:
        calls.append(kwargs["model"].name)

    s3.meta.events.register("before-call.s3", record, unique_id="count-runner-calls")
    try:
        runner.start()
        time.sleep(0.5)  # 25 of its 0.02 s worker waits; the watcher waits on its queue
        idle_calls = list(calls)
        key = unique_key()
        put(stack, key)
        wait_until(lambda: len(submit.events) == 1)
    finally:
        s3.meta.events.unregister("before-call.s3", unique_id="count-runner-calls")

    assert idle_calls == []
    # the upload, then one listing of that one key
    assert calls == ["PutObject", "ListObjectVersions"]


def test_a_key_with_a_control_character_is_listed_and_delivered(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    odd_key, good_key = unique_key(name="odd\x01name.jsonl"), unique_key()
    odd_versions = [put(stack, odd_key)]
    try:
        good_version = put(stack, good_key)
        odd_versions.append(put(stack, odd_key))

        runner.run_once()
        runner.run_once()

        delivered = sorted((s3_object(event)["key"], s3_object(event)["versionId"]) for event in submit.events)
        assert delivered == sorted(
            [(good_key, good_version)] + [(quote_plus(odd_key, safe="/"), v) for v in odd_versions]
        )
        assert runner.skipped == {}
    finally:
        for version_id in odd_versions:
            stack.client("s3").delete_object(Bucket=stack.bucket_name, Key=odd_key, VersionId=version_id)


def test_moto_lists_object_versions_url_encoded_as_s3_does(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    keys = [unique_key(name="a\x01b.jsonl"), unique_key(name="c d+e%f.jsonl")]
    versions = [(key, put(stack, key)) for key in keys]
    try:
        pages = s3.get_paginator("list_object_versions").paginate(
            Bucket=stack.bucket_name, Prefix="inbox/", PaginationConfig={"PageSize": 1}
        )
        listed = [version["Key"] for page in pages for version in page.get("Versions", [])]
        raw = s3.list_object_versions(Bucket=stack.bucket_name, Prefix=keys[0], EncodingType="url")
    finally:
        for key, version_id in versions:
            s3.delete_object(Bucket=stack.bucket_name, Key=key, VersionId=version_id)

    assert set(keys) <= set(listed)
    assert raw["Versions"][0]["Key"] == quote(keys[0])  # asked for by the caller: left encoded
    assert raw["EncodingType"] == "url"


def test_a_listing_that_fails_for_one_key_skips_that_key_only(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="batchdrop_local.runner")
    failing_key, good_key = unique_key(name="failing.jsonl"), unique_key()
    s3 = stack.client("s3")

    def fail_for_one_key(**kwargs: Any) -> None:
        if kwargs["params"].get("Prefix") == failing_key:
            raise RuntimeError("injected listing failure")

    s3.meta.events.register("before-parameter-build.s3.ListObjectVersions", fail_for_one_key, unique_id="fail-one-key")
    try:
        put(stack, failing_key)
        good_version = put(stack, good_key)
        put(stack, failing_key)
        runner.run_once()
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.ListObjectVersions", unique_id="fail-one-key")

    assert [s3_object(event)["versionId"] for event in submit.events] == [good_version]
    assert "injected listing failure" in runner.skipped[failing_key]
    assert len([record for record in caplog.records if repr(failing_key) in record.getMessage()]) == 1


def test_the_next_runner_removes_the_queue_of_a_runner_that_no_longer_exists(
    stack: LocalStack, submit: StandInHandler, checker: StandInHandler
) -> None:
    s3, sqs = stack.client("s3"), stack.client("sqs")

    def notified_queues() -> list[str]:
        configuration = s3.get_bucket_notification_configuration(Bucket=stack.bucket_name)
        return [item["QueueArn"] for item in configuration.get("QueueConfigurations", [])]

    before = set(notified_queues())
    gone = LocalRunner(stack, submit, checker)
    (gone_queue,) = set(notified_queues()) - before
    del gone
    gc.collect()

    LocalRunner(stack, submit, checker)

    assert gone_queue not in notified_queues()
    assert gone_queue.rpartition(":")[2] not in " ".join(sqs.list_queues().get("QueueUrls", []))


# ---------------------------------------------------------------- the schedule


def test_the_checker_is_ticked_with_the_schedules_payload(
    stack: LocalStack, runner: LocalRunner, checker: StandInHandler, template: SamTemplate
) -> None:
    schedule = template.function("CheckerFunction").events_of_type("ScheduleV2")
    declared_input = json.loads(next(iter(schedule.values()))["Properties"]["Input"])

    runner.start()
    wait_until(lambda: len(checker.events) >= 2)

    tick = checker.events[0]
    assert set(tick) == set(declared_input)
    assert not any("<aws.scheduler." in str(value) for value in tick.values())
    assert tick["source"] == declared_input["source"]
    assert tick["schedule_arn"].startswith(f"arn:aws:scheduler:{stack.region}:{stack.account_id}:schedule/")
    assert datetime.fromisoformat(tick["scheduled_time"])
    assert tick["attempt"] == "1"
    assert checker.events[0]["execution_id"] != checker.events[1]["execution_id"]
    assert checker.calls[0]["context"].function_name == stack.function_name("CheckerFunction")


def test_the_two_schedules_are_told_apart_by_their_functions_s3_events(runner: LocalRunner) -> None:
    assert runner.scheduled_function.logical_id == "CheckerFunction"
    assert runner.submit_function.logical_id == "SubmitFunction"
    assert runner.scheduled_event()["source"] == "batchdrop.scheduler"
    assert runner.sweep_event()["source"] == "batchdrop.sweeper"


# ---------------------------------------------------------------- the sweep


def test_sweep_invokes_the_submit_function_with_the_sweep_schedules_payload(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler, checker: StandInHandler, template: SamTemplate
) -> None:
    schedule = template.function("SubmitFunction").events_of_type("ScheduleV2")
    declared_input = json.loads(next(iter(schedule.values()))["Properties"]["Input"])

    first = runner.sweep()
    second = runner.sweep()

    assert (first.function_logical_id, first.error, first.result) == ("SubmitFunction", None, {"ok": 1})
    assert second.error is None
    sweep = submit.events[0]
    assert set(sweep) == set(declared_input)
    assert sweep["source"] == declared_input["source"] == "batchdrop.sweeper"
    assert not any("<aws.scheduler." in str(value) for value in sweep.values())
    assert datetime.fromisoformat(sweep["scheduled_time"])
    assert submit.events[0]["execution_id"] != submit.events[1]["execution_id"]
    assert submit.calls[0]["context"].function_name == stack.function_name("SubmitFunction")
    assert submit.calls[0]["environ"]["POWERTOOLS_SERVICE_NAME"] == "submit"
    assert checker.events == []


def test_after_a_lost_event_the_sweep_reaches_the_submit_function(
    stack: LocalStack, runner: LocalRunner, submit: StandInHandler
) -> None:
    # Given an upload whose event is lost
    key = unique_key()
    version_id = put(stack, key)
    runner.lose_event(key, version_id)
    runner.run_once()
    assert submit.events == []

    # When the sweeper runs
    invocation = runner.sweep()

    # Then the submit function is invoked with the sweep, and the object is there to be found
    assert invocation.error is None
    (event,) = submit.events
    assert event["source"] == "batchdrop.sweeper"
    listing = stack.client("s3").list_object_versions(Bucket=stack.bucket_name, Prefix="inbox/")
    assert (key, version_id) in {(v["Key"], v["VersionId"]) for v in listing["Versions"]}


def test_a_failing_sweep_is_retried_then_sent_to_the_submit_failure_queue(
    stack: LocalStack, checker: StandInHandler, template: SamTemplate
) -> None:
    always_failing = StandInHandler(failures=100)
    failing_runner = LocalRunner(stack, always_failing, checker, retry_delay_seconds=0)
    destination = template.function("SubmitFunction").event_invoke_config["DestinationConfig"]["OnFailure"]
    queue_url = stack.queue_urls[destination["Destination"]["Fn::GetAtt"][0]]
    sqs = stack.client("sqs")
    sqs.purge_queue(QueueUrl=queue_url)

    invocation = failing_runner.sweep()

    assert invocation.attempt == 3
    assert [event["source"] for event in always_failing.events] == ["batchdrop.sweeper"] * 3
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(messages[0]["Body"])["requestPayload"]["source"] == "batchdrop.sweeper"


def test_the_background_runner_sweeps_only_when_asked(
    stack: LocalStack, submit: StandInHandler, checker: StandInHandler
) -> None:
    with LocalRunner(stack, submit, checker, tick_seconds=0.05, sweep_seconds=0.05):
        wait_until(lambda: len(submit.events) >= 2)
    quiet_submit, quiet_checker = StandInHandler(), StandInHandler()
    with LocalRunner(stack, quiet_submit, quiet_checker, tick_seconds=0.05):
        wait_until(lambda: len(quiet_checker.events) >= 3)

    assert {event["source"] for event in submit.events} == {"batchdrop.sweeper"}
    assert quiet_submit.events == []


def test_drain_ticks_until_idle_or_timeout(stack: LocalStack, submit: StandInHandler) -> None:
    finishes_on_third_tick = StandInHandler()
    draining_runner = LocalRunner(stack, submit, finishes_on_third_tick, poll_seconds=0.01, retry_delay_seconds=0)
    put(stack, unique_key())

    assert draining_runner.drain(timeout=5, idle=lambda: len(finishes_on_third_tick.calls) >= 3)
    assert len(submit.events) == 1
    assert not draining_runner.drain(timeout=0.1, idle=lambda: False)


def test_drain_by_default_waits_for_a_manifest_per_accepted_upload(stack: LocalStack, submit: StandInHandler) -> None:
    from batchdrop.domain.jobs import job_id_for, manifest_key

    key = unique_key()
    ticks: list[dict[str, Any]] = []
    uploaded: dict[str, str] = {}

    def checker_that_finishes_on_its_third_tick(event: dict[str, Any], context: Any) -> None:
        ticks.append(event)
        s3 = stack.client("s3")
        if len(ticks) == 1:  # another job's manifest must not count for this upload's
            s3.put_object(Bucket=stack.bucket_name, Key=f"results/j{uuid.uuid4().hex[:24]}/manifest.json", Body=b"{}")
        if len(ticks) == 3:
            own = manifest_key(job_id_for(stack.bucket_name, key, uploaded["version"]))
            s3.put_object(Bucket=stack.bucket_name, Key=own, Body=b"{}")

    draining_runner = LocalRunner(
        stack, submit, checker_that_finishes_on_its_third_tick, poll_seconds=0.01, retry_delay_seconds=0
    )
    uploaded["version"] = put(stack, key)

    assert not draining_runner.drain(timeout=0)
    assert draining_runner.drain(timeout=5)
    assert len(ticks) == 3
    assert len(submit.events) == 1


# ---------------------------------------------------------------- event files


def test_the_s3_event_file_has_the_runners_shape_and_parses_with_powertools() -> None:
    event = load_event("s3-put-inbox")
    record = event["Records"][0]

    built = build_s3_event(
        _version_like(record),
        region=record["awsRegion"],
        sequencer=record["s3"]["object"]["sequencer"],
        configuration_id=record["s3"]["configurationId"],
    )

    assert shape(built) == shape(event)
    parsed = S3Event(event)
    assert parsed.object_key == "inbox/reviews.jsonl"
    assert parsed.record.s3.get_object.version_id
    assert parse(event=event, model=S3Model).Records[0].s3.object.versionId


def test_the_scheduled_tick_file_is_the_schedules_input_with_its_attributes_filled(template: SamTemplate) -> None:
    schedule = template.function("CheckerFunction").events_of_type("ScheduleV2")
    declared_input = json.loads(next(iter(schedule.values()))["Properties"]["Input"])

    tick = load_event("scheduled-tick.json")

    assert set(tick) == set(declared_input)
    assert tick["source"] == declared_input["source"]
    assert not any("<aws.scheduler." in str(value) for value in tick.values())
    assert datetime.fromisoformat(tick["scheduled_time"])


def _version_like(record: dict[str, Any]) -> Any:
    from batchdrop_local.runner import ObjectVersion

    s3 = record["s3"]
    return ObjectVersion(
        bucket=s3["bucket"]["name"],
        key=S3Event({"Records": [record]}).object_key,
        version_id=s3["object"]["versionId"],
        size=s3["object"]["size"],
        etag=s3["object"]["eTag"],
        last_modified=datetime.fromisoformat(record["eventTime"]),
    )


# ---------------------------------------------------------------- handler loading


def test_two_app_py_handlers_load_as_distinct_modules(tmp_path: Path) -> None:
    for name in ("submit", "checker"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "helper.py").write_text(f"NAME = {name!r}\n")
        (tmp_path / name / "app.py").write_text(
            "import helper\n\ndef lambda_handler(event, context):\n    return helper.NAME\n"
        )

    handlers = {
        name: load_handler(
            FunctionSpec(f"{name}Function", {"CodeUri": name, "Handler": "app.lambda_handler"}), tmp_path
        )
        for name in ("submit", "checker")
    }

    assert {name: handler({}, None) for name, handler in handlers.items()} == {"submit": "submit", "checker": "checker"}
    assert handlers["submit"].__module__ != handlers["checker"].__module__
    assert "helper" not in sys.modules
