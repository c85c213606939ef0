"""Cache priming (services/priming.py): before a job's first create, and only then, the first
request of its first shard that holds a `cache_control` is sent synchronously with
max_tokens 1, when the upload's metadata, the pipeline or the stack's default says so; what it
did is kept at work/<job_id>/priming.json (once), a failure never holds the job, and the
manifest shows the priming beside the batch cost, which it leaves alone."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from batchdrop.domain.jobs import job_id_for, manifest_key
from batchdrop.domain.pipelines import PipelineError, parse_pipeline
from batchdrop.domain.records import SourceRef
from batchdrop.domain.shards import ShardLimits
from batchdrop.domain.states import ShardState
from batchdrop.domain.usage import Usage, cost_usd
from batchdrop.errors import ProviderRejectedError, ProviderUnavailableError
from batchdrop.services.intake import Intake
from batchdrop.services.priming import prime_before_first_create, priming_key
from batchdrop.services.tick import Checker
from tests.unit.fakes import MODEL, Fakes, request

pytestmark = pytest.mark.unit

LONG_SYSTEM = "You grade essays against the rubric below. " * 200


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def cached_request(custom_id: str, text: str = "Grade this.") -> bytes:
    """A request whose system prompt is a cached prefix (1 hour)."""
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    params = {
        "model": MODEL,
        "max_tokens": 300,
        "temperature": 0.2,
        "system": system,
        "messages": [{"role": "user", "content": text}],
    }
    return json.dumps({"custom_id": custom_id, "params": params}).encode()


def body(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


FILE = body(request("plain-1"), cached_request("cached-1"), cached_request("cached-2", "Another."))


def drop(
    world: Fakes, key: str, data: bytes = FILE, metadata: dict[str, str] | None = None, **settings: Any
) -> SourceRef:
    source = SourceRef(world.store.bucket, key, world.store.put(key, data, metadata=metadata))
    Intake(world.wiring(**settings)).submit(source)
    return source


def job_of(source: SourceRef) -> str:
    return job_id_for(source.bucket, source.key, source.version_id)


def put_pipeline(world: Fakes, **fields: Any) -> None:
    document = {
        "model": MODEL,
        "max_tokens": 50,
        "system": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "prompt": "Essay by {{author}}: {{essay}}",
        **fields,
    }
    world.store.put("pipelines/essays.json", json.dumps(document).encode())


RECORDS = b"author,essay\nAda,On engines\nAlan,On machines\n"


# --- the pipeline field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "read"), [({"prime_cache": True}, True), ({"prime_cache": False}, False), ({}, None)]
)
def test_a_pipeline_reads_prime_cache_as_written_and_none_when_left_out(written: dict[str, Any], read: bool) -> None:
    document = {"model": MODEL, "max_tokens": 5, "prompt": "{{x}}", **written}
    assert parse_pipeline("p", json.dumps(document)).prime_cache is read


@pytest.mark.parametrize("value", ["true", 1, None, "yes"])
def test_a_pipeline_whose_prime_cache_is_not_a_boolean_is_refused_naming_the_field(value: Any) -> None:
    document = {"model": MODEL, "max_tokens": 5, "prompt": "{{x}}", "prime_cache": value}
    with pytest.raises(PipelineError) as refused:
        parse_pipeline("p", json.dumps(document))
    assert refused.value.problems == [f"prime_cache: must be true or false, got {json.dumps(value)}"]


def test_a_yaml_pipeline_with_a_bad_prime_cache_names_its_line() -> None:
    text = "model: claude-haiku-4-5\nmax_tokens: 5\nprompt: '{{x}}'\nprime_cache: 'on'\n"
    with pytest.raises(PipelineError) as refused:
        parse_pipeline("p", text, syntax="yaml", source="pipelines/p.yaml")
    assert refused.value.problems == ['prime_cache: must be true or false, got "on" (line 4)']
    assert str(refused.value).startswith("pipelines/p.yaml: pipeline p is not valid")


# --- on or off ---------------------------------------------------------------------------


def test_a_native_upload_is_not_primed_by_default(world: Fakes) -> None:
    source = drop(world, "inbox/essays.jsonl")

    assert world.batches.primed == []
    assert not world.store.exists(priming_key(job_of(source)))
    assert world.batches.creates == 1


def test_the_upload_metadata_primes_its_job_with_the_first_cached_request_at_max_tokens_1_before_the_create(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given creates watched for a priming done before them
    primed_at_create: list[int] = []
    create = world.batches.create

    def watched(*args: Any, **kwargs: Any) -> dict[str, Any]:
        primed_at_create.append(len(world.batches.primed))
        return create(*args, **kwargs)

    monkeypatch.setattr(world.batches, "create", watched)

    # When a file whose second line is the first with a cache_control is uploaded with the metadata on
    source = drop(world, "inbox/essays.jsonl", metadata={"prime-cache": "true"})

    # Then that request was sent once, before the create, as it is but for max_tokens 1
    assert primed_at_create == [1]
    [sent] = world.batches.primed
    expected = json.loads(cached_request("cached-1"))["params"]
    assert sent == {**expected, "max_tokens": 1}
    # ...and what it did is kept, priced at the standard price (a synchronous call)
    kept = world.store.get_json(priming_key(job_of(source)))
    assert kept["custom_id"] == "cached-1"
    assert kept["usage"]["cache_creation_input_tokens"] > 1000
    usage = Usage()
    usage.add_message_usage(kept["usage"])
    standard = cost_usd({MODEL: usage}, batch=False)
    assert Decimal(kept["cost_usd"]) == standard.quantize(Decimal("0.000001"))
    assert Decimal(kept["cost_usd"]) > cost_usd({MODEL: usage}, batch=True)
    assert kept["said_by"] == "the upload's x-amz-meta-prime-cache"
    # ...and the batch went out with every request unchanged
    [batch] = world.batches.bodies.values()
    assert [json.loads(line)["params"]["max_tokens"] for line in batch] == [5, 300, 300]


def test_the_stack_default_primes_and_the_upload_metadata_wins_over_it(world: Fakes) -> None:
    primed = drop(world, "inbox/a.jsonl", prime_cache=True)
    assert len(world.batches.primed) == 1
    assert world.store.get_json(priming_key(job_of(primed)))["said_by"] == "the stack's PrimeCache"

    not_primed = drop(world, "inbox/b.jsonl", metadata={"prime-cache": "False"}, prime_cache=True)
    assert len(world.batches.primed) == 1
    assert not world.store.exists(priming_key(job_of(not_primed)))


def test_metadata_that_is_neither_true_nor_false_is_ignored_for_the_stack_default(world: Fakes) -> None:
    source = drop(world, "inbox/a.jsonl", metadata={"prime-cache": "yes"}, prime_cache=True)
    assert world.store.get_json(priming_key(job_of(source)))["said_by"] == "the stack's PrimeCache"


def test_a_pipeline_primes_its_jobs_over_the_stack_default_and_the_metadata_wins_over_it(world: Fakes) -> None:
    put_pipeline(world, prime_cache=True)
    primed = drop(world, "inbox/essays/one.csv", RECORDS)
    [sent] = world.batches.primed
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["max_tokens"] == 1
    kept = world.store.get_json(priming_key(job_of(primed)))
    assert (kept["custom_id"], kept["said_by"]) == ("row-000001", "the pipeline's prime_cache (pipelines/essays.json)")

    drop(world, "inbox/essays/two.csv", RECORDS, metadata={"prime-cache": "false"})
    assert len(world.batches.primed) == 1

    put_pipeline(world, prime_cache=False)
    drop(world, "inbox/essays/three.csv", RECORDS, prime_cache=True)
    assert len(world.batches.primed) == 1


def test_a_file_without_cache_control_is_not_primed(world: Fakes) -> None:
    source = drop(world, "inbox/plain.jsonl", body(request("a"), request("b")), prime_cache=True)

    assert world.batches.primed == []
    assert not world.store.exists(priming_key(job_of(source)))
    assert world.batches.creates == 1


def test_only_the_first_shard_is_looked_at(world: Fakes) -> None:
    # Given shards of one request: the cached request is in the second shard only
    data = body(request("a"), cached_request("b"))
    drop(world, "inbox/two.jsonl", data, prime_cache=True, limits=ShardLimits(max_requests=1))

    assert world.batches.primed == []
    assert world.batches.creates == 2


# --- once, and never in the way ------------------------------------------------------------


def test_nothing_is_primed_once_any_shard_of_the_job_was_sent(world: Fakes) -> None:
    # Given a job of two shards taken in with priming off, both sent
    data = body(cached_request("a"), cached_request("b"), cached_request("c"))
    source = drop(world, "inbox/two.jsonl", data, limits=ShardLimits(max_requests=2))
    job, shards = world.state.job_and_shards(job_of(source))
    assert job is not None
    assert [shard.state for shard in shards] == [ShardState.SUBMITTED, ShardState.SUBMITTED]
    wired = world.wiring(prime_cache=True)

    # When priming is asked for with it on, then nothing is primed (a retry's creates, say)
    assert prime_before_first_create(wired, job, shards) is None
    # ...nor when only one of them was sent
    first_only = [shards[0], replace(shards[1], state=ShardState.PENDING, creates_sent=0, batch_id=None)]
    assert prime_before_first_create(wired, job, first_only) is None
    # ...nor for a shard's second attempt
    retried = [replace(shard, state=ShardState.PENDING, creates_sent=0, batch_id=None, attempt=2) for shard in shards]
    assert prime_before_first_create(wired, job, retried) is None
    assert world.batches.primed == []
    # ...while the same shards before any create would be
    untried = [replace(shard, state=ShardState.PENDING, creates_sent=0, batch_id=None) for shard in shards]
    assert prime_before_first_create(wired, job, untried) is not None
    assert len(world.batches.primed) == 1


def test_a_job_is_primed_before_its_first_create_and_not_when_its_submit_runs_again(world: Fakes) -> None:
    # Given a job of two shards primed, whose creates all found the provider's queue full
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    world.batches.fail_create(ProviderRejectedError(429, "queue full", queue_full=True))
    data = body(cached_request("a"), cached_request("b"), cached_request("c"))
    settings: dict[str, Any] = {"prime_cache": True, "limits": ShardLimits(max_requests=2)}
    source = drop(world, "inbox/two.jsonl", data, **settings)
    assert len(world.batches.primed) == 1
    assert (world.batches.creates, world.batches.batches) == (2, {})

    # When its submit runs again and the queue has room
    Intake(world.wiring(**settings)).submit(source)

    # Then both shards went out and nothing was primed again
    assert len(world.batches.primed) == 1
    assert len(world.batches.batches) == 2


def test_a_kept_priming_is_not_done_again(world: Fakes) -> None:
    # Given a priming kept by an earlier run of the job's submit
    key = "inbox/again.jsonl"
    version = world.store.put(key, FILE)
    source = SourceRef(world.store.bucket, key, version)
    world.store.put_json(priming_key(job_of(source)), {"custom_id": "cached-1", "kept": "first"})

    # When the job is taken in with priming on
    Intake(world.wiring(prime_cache=True)).submit(source)

    # Then nothing is primed, the first priming stays, and the job goes on
    assert world.batches.primed == []
    assert world.store.get_json(priming_key(job_of(source)))["kept"] == "first"
    assert world.batches.creates == 1


def test_a_failed_priming_is_kept_with_its_error_and_the_job_goes_on_unprimed(world: Fakes) -> None:
    world.batches.prime_error = ProviderUnavailableError("prime: APIConnectionError: Connection error.")

    source = drop(world, "inbox/fails.jsonl", prime_cache=True)

    assert len(world.batches.primed) == 1
    assert world.batches.creates == 1
    kept = world.store.get_json(priming_key(job_of(source)))
    assert kept["error"] == "ProviderUnavailableError: prime: APIConnectionError: Connection error."
    assert "usage" not in kept


def test_an_unreadable_pipeline_at_priming_never_fails_the_job(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, str]:
        raise RuntimeError("S3 is down")

    monkeypatch.setattr(world.store, "metadata", broken)
    drop(world, "inbox/x.jsonl", prime_cache=True)

    assert world.batches.primed == []
    assert world.batches.creates == 1


# --- the manifest ------------------------------------------------------------------------


def test_the_manifest_shows_the_priming_beside_a_batch_cost_it_leaves_alone(world: Fakes) -> None:
    # Given two jobs of the same file, one primed, whose batches ended alike
    primed = drop(world, "inbox/primed.jsonl", prime_cache=True)
    plain = drop(world, "inbox/plain.jsonl")
    for batch_id in world.batches.batches:
        world.batches.end(batch_id)

    # When the checker finishes them
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then the primed job's manifest names its priming, its usage and its standard cost
    manifest = world.store.get_json(manifest_key(job_of(primed)))
    kept = world.store.get_json(priming_key(job_of(primed)))
    assert manifest["priming"] == {
        "key": priming_key(job_of(primed)),
        "custom_id": "cached-1",
        "usage": kept["usage"],
        "cost_usd": kept["cost_usd"],
    }
    # ...and its cost is the batches' only: the same as the unprimed job's
    unprimed = world.store.get_json(manifest_key(job_of(plain)))
    assert "priming" not in unprimed
    assert manifest["cost"] == unprimed["cost"]


# --- the stack's default and the adapter ---------------------------------------------------

ENV = {
    "BATCHDROP_BUCKET": "b",
    "BATCHDROP_TABLE": "t",
    "BATCHDROP_EVENT_BUS": "e",
    "ANTHROPIC_SECRET_ARN": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:k-AbCdEf",
    "AWS_DEFAULT_REGION": "eu-central-1",
}


@pytest.mark.parametrize(
    ("value", "wired"), [(None, False), ("", False), ("false", False), ("true", True), ("TRUE", True)]
)
def test_the_wiring_reads_the_stacks_default_from_its_environment(value: str | None, wired: bool) -> None:
    from batchdrop import wiring
    from batchdrop.config import ENV_PRIME_CACHE, invocation_environment

    env = ENV if value is None else {**ENV, ENV_PRIME_CACHE: value}
    wiring._build.cache_clear()
    try:
        with invocation_environment(env):
            assert wiring.from_env().prime_cache is wired
    finally:
        wiring._build.cache_clear()


def test_a_default_that_is_neither_true_nor_false_stops_the_function_naming_the_variable() -> None:
    from batchdrop.config import ENV_PRIME_CACHE, Settings
    from batchdrop.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="BATCHDROP_PRIME_CACHE must be true or false, got 'yes'"):
        Settings.from_env({**ENV, ENV_PRIME_CACHE: "yes"})


class _Messages:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create(self, **arguments: Any) -> Any:
        from anthropic.types import Message

        self.calls.append(arguments)
        usage = {"input_tokens": 4, "output_tokens": 1, "cache_creation_input_tokens": 5000}
        return Message.model_validate(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [{"type": "text", "text": "O"}],
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": usage,
            }
        )


class _Sdk:
    def __init__(self) -> None:
        self.messages = _Messages()
        self.options: list[dict[str, Any]] = []

    def with_options(self, **options: Any) -> _Sdk:
        self.options.append(options)
        return self


def test_the_adapter_sends_the_params_through_messages_create_bounded_and_unknown_fields_as_they_are() -> None:
    from batchdrop.adapters.batches import PRIME_RETRIES, PRIME_TIMEOUT, BatchesApi

    sdk = _Sdk()
    params = {**json.loads(cached_request("x"))["params"], "max_tokens": 1, "a_newer_field": {"on": True}}

    usage = BatchesApi(lambda: "key", client=sdk).prime(params)

    assert sdk.options == [{"max_retries": PRIME_RETRIES, "timeout": PRIME_TIMEOUT}]
    [arguments] = sdk.messages.calls
    extra = arguments.pop("extra_body")
    assert extra["a_newer_field"] == {"on": True}
    assert {"model", "max_tokens", "system", "messages"} <= arguments.keys()
    assert not arguments.keys() & extra.keys()
    assert {**arguments, **extra} == params
    assert usage == {"input_tokens": 4, "output_tokens": 1, "cache_creation_input_tokens": 5000}
