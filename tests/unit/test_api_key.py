"""The Anthropic API key: read through Powertools' SecretsProvider for at most its max age, so a
warm function picks up a rotated key; a call the API refuses (401/403) fetches the key anew
and is made once more, never twice; a key refused again counts one ApiKeyRefused metric and
fails the checker's tick after it has done what needs no API; results are fetched only from
the API's own host. No socket: fake secrets client, fake SDK, in-memory fakes of the ports."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from aws_lambda_powertools.utilities.parameters import base as powertools_parameters

from batchdrop import wiring
from batchdrop.adapters.batches import BatchesApi
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop.errors import ApiKeyRefusedError, CheckerItemsFailedError, ProviderUnavailableError
from batchdrop.observability import KEY_REFUSED_METRIC, count_key_refused, metrics, quiet_libraries
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from batchdrop.wiring import SecretKey
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.runner import load_handler
from batchdrop_local.stack import SamTemplate
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:batchdrop/anthropic-AbCdEf"
OLD_KEY, NEW_KEY = "sk-ant-old-key", "sk-ant-new-key"
API = "https://api.anthropic.com"


@pytest.fixture(autouse=True)
def no_metrics() -> Iterator[None]:
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def refusals_counted() -> int:
    counted = metrics.metric_set.get(KEY_REFUSED_METRIC)
    return len(counted["Value"]) if counted else 0


# ---------------------------------------------------------------- the secret and its max age


class FakeSecrets:
    """Secrets Manager's GetSecretValue for one secret whose value a test changes (a rotation)."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0

    def get_secret_value(self, SecretId: str, **options: Any) -> dict[str, Any]:
        assert SecretId == SECRET_ARN
        self.reads += 1
        return {"ARN": SECRET_ARN, "SecretString": self.value}


class FakeNow:
    """Stands for datetime in Powertools' parameter cache: the test moves time on."""

    moment = datetime(2026, 12, 6, 12, 0)

    @classmethod
    def now(cls) -> datetime:
        return cls.moment


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[FakeNow]:
    monkeypatch.setattr(powertools_parameters, "datetime", FakeNow)
    FakeNow.moment = datetime(2026, 12, 6, 12, 0)
    return FakeNow


def test_a_rotated_key_is_read_once_the_max_age_has_passed(clock: type[FakeNow]) -> None:
    secrets = FakeSecrets(OLD_KEY)
    key = SecretKey(SECRET_ARN, 300, lambda: secrets)

    assert key.get() == OLD_KEY
    secrets.value = NEW_KEY  # put-secret-value
    clock.moment += timedelta(seconds=299)
    assert key.get() == OLD_KEY  # cached: no read within the max age
    assert secrets.reads == 1
    clock.moment += timedelta(seconds=2)
    assert key.get() == NEW_KEY
    assert secrets.reads == 2


def test_refetch_reads_the_secret_past_the_cache(clock: type[FakeNow]) -> None:
    secrets = FakeSecrets(OLD_KEY)
    key = SecretKey(SECRET_ARN, 300, lambda: secrets)
    assert key.get() == OLD_KEY

    secrets.value = NEW_KEY
    assert key.refetch() == NEW_KEY
    assert key.get() == NEW_KEY  # the fresh value is what the cache holds now
    assert secrets.reads == 2


def test_the_client_follows_the_key_in_a_warm_function(clock: type[FakeNow]) -> None:
    secrets = FakeSecrets(OLD_KEY)
    key = SecretKey(SECRET_ARN, 300, lambda: secrets)
    sdk = FakeSdk(accepted={OLD_KEY, NEW_KEY})
    api = BatchesApi(key.get, refetch_key=key.refetch, make_client=sdk.make)

    api.retrieve("msgbatch_1")
    secrets.value = NEW_KEY
    clock.moment += timedelta(seconds=301)
    api.retrieve("msgbatch_1")

    assert sdk.calls == [(OLD_KEY, "retrieve"), (NEW_KEY, "retrieve")]
    assert sdk.made == [OLD_KEY, NEW_KEY]  # made again for the new key only
    api.retrieve("msgbatch_1")
    assert sdk.made == [OLD_KEY, NEW_KEY]


def test_warm_makes_the_client_ahead_so_the_first_call_reads_no_key(clock: type[FakeNow]) -> None:
    secrets = FakeSecrets(OLD_KEY)
    key = SecretKey(SECRET_ARN, 300, lambda: secrets)
    sdk = FakeSdk(accepted={OLD_KEY})
    api = BatchesApi(key.get, refetch_key=key.refetch, make_client=sdk.make)

    api.warm()
    assert (secrets.reads, sdk.made, sdk.calls) == (1, [OLD_KEY], [])  # made, nothing called
    api.retrieve("msgbatch_1")
    assert (secrets.reads, sdk.made) == (1, [OLD_KEY])  # the call found it made


def test_a_key_that_cannot_be_read_ahead_is_left_for_the_first_call_to_report() -> None:
    def unreadable() -> str:
        raise RuntimeError("AccessDeniedException: not allowed to read the secret")

    sdk = FakeSdk(accepted={OLD_KEY})
    api = BatchesApi(unreadable, make_client=sdk.make)

    api.warm()  # never raises
    assert sdk.made == []
    with pytest.raises(RuntimeError, match="AccessDeniedException"):
        api.retrieve("msgbatch_1")


# ---------------------------------------------------------------- a refused key, in the adapter


def api_error(status: int, url: str = f"{API}/v1/messages/batches/msgbatch_1") -> anthropic.APIStatusError:
    kind = {401: "authentication_error", 403: "permission_error"}[status]
    error = {401: anthropic.AuthenticationError, 403: anthropic.PermissionDeniedError}[status]
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return error(
        f"Error code: {status}",
        response=response,
        body={"type": "error", "error": {"type": kind, "message": "invalid x-api-key"}},
    )


class FakeSdk:
    """The SDK's client as the adapter uses it, made per key; a key outside `accepted` is
    answered `status` (401 or 403)."""

    def __init__(self, accepted: set[str], status: int = 401) -> None:
        self.accepted = accepted
        self.status = status
        self.made: list[str] = []  # the key of each client made
        self.calls: list[tuple[str, str]] = []  # (key, call) of each call made
        self.fetched: list[str] = []  # URLs of results fetched

    def make(self, key: str, base_url: str) -> Any:
        assert base_url == API
        self.made.append(key)
        return _Client(self, key)


class _Batch:
    def __init__(self, batch_id: str) -> None:
        self.id = batch_id

    def model_dump(self, mode: str) -> dict[str, Any]:
        return {"id": self.id, "processing_status": "ended", "mode": mode}


class _Client:
    def __init__(self, sdk: FakeSdk, key: str) -> None:
        self.sdk, self.key = sdk, key
        self.messages = self
        self.batches = self

    def _answer(self, call: str) -> None:
        self.sdk.calls.append((self.key, call))
        if self.key not in self.sdk.accepted:
            raise api_error(self.sdk.status)

    def retrieve(self, batch_id: str) -> _Batch:
        self._answer("retrieve")
        return _Batch(batch_id)

    def cancel(self, batch_id: str) -> _Batch:
        self._answer("cancel")
        return _Batch(batch_id)

    def get(self, url: str, **options: Any) -> Any:
        self._answer("results")
        self.sdk.fetched.append(url)
        return httpx2.Response(200, content=b'{"custom_id": "a"}\n')


class KeySource:
    """The key as the secret gives it: `get` cached, `refetch` fresh (the secret's value now)."""

    def __init__(self, cached: str, current: str) -> None:
        self.cached, self.current = cached, current
        self.refetches = 0

    def get(self) -> str:
        return self.cached

    def refetch(self) -> str:
        self.refetches += 1
        self.cached = self.current
        return self.current


def test_a_refused_key_is_fetched_anew_once_and_the_call_made_once_more() -> None:
    key = KeySource(cached=OLD_KEY, current=NEW_KEY)  # rotated, the old key revoked
    sdk = FakeSdk(accepted={NEW_KEY})
    api = BatchesApi(key.get, refetch_key=key.refetch, make_client=sdk.make)

    assert api.retrieve("msgbatch_1")["id"] == "msgbatch_1"
    assert key.refetches == 1
    assert sdk.calls == [(OLD_KEY, "retrieve"), (NEW_KEY, "retrieve")]
    assert refusals_counted() == 0  # the new key worked: nothing to alarm on

    api.retrieve("msgbatch_1")
    assert key.refetches == 1  # the next call uses the new key at once


@pytest.mark.parametrize("status", [401, 403])
def test_a_key_refused_again_is_not_retried_a_second_time(status: int) -> None:
    key = KeySource(cached=OLD_KEY, current=OLD_KEY)  # revoked, and no new key put
    sdk = FakeSdk(accepted=set(), status=status)
    api = BatchesApi(key.get, refetch_key=key.refetch, make_client=sdk.make)

    with pytest.raises(ApiKeyRefusedError, match=f"^{status}: cancel: the API refused the key") as raised:
        api.cancel("msgbatch_1")

    assert raised.value.status == status
    assert key.refetches == 1
    assert sdk.calls == [(OLD_KEY, "cancel"), (OLD_KEY, "cancel")]
    assert refusals_counted() == 1
    assert OLD_KEY not in str(raised.value)


def test_a_refused_create_fetches_the_key_anew_and_leaves_the_resend_to_its_caller() -> None:
    """The body is read once by the adapter: it cannot send it again itself."""
    key = KeySource(cached=OLD_KEY, current=NEW_KEY)

    class Refusing:
        def with_options(self, **options: Any) -> Refusing:
            return self

        def post(self, path: str, **options: Any) -> Any:
            raise api_error(401, f"{API}{path}")

    made: list[str] = []

    def make(k: str, base_url: str) -> Any:
        made.append(k)
        return Refusing()

    api = BatchesApi(key.get, refetch_key=key.refetch, make_client=make)
    with pytest.raises(ApiKeyRefusedError, match=r"^401: create: the API refused the key"):
        api.create([b"{}"], 2, timeout=5.0)

    assert key.refetches == 1
    assert made == [OLD_KEY, NEW_KEY]  # the client for the next try is ready


# ---------------------------------------------------------------- results_url's host


def ended(results_url: str) -> dict[str, Any]:
    return {"id": "msgbatch_1", "processing_status": "ended", "results_url": results_url}


@pytest.mark.parametrize(
    ("base_url", "results_url"),
    [
        (None, "https://evil.example/v1/messages/batches/msgbatch_1/results"),
        (None, "https://api.anthropic.com.evil.example/v1/messages/batches/msgbatch_1/results"),
        (None, "http://api.anthropic.com/v1/messages/batches/msgbatch_1/results"),  # not TLS
        (None, "https://api.anthropic.com:8443/v1/messages/batches/msgbatch_1/results"),
        (None, "//evil.example/v1/messages/batches/msgbatch_1/results"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8124/v1/messages/batches/msgbatch_1/results"),
    ],
)
def test_results_are_not_fetched_from_another_host(base_url: str | None, results_url: str) -> None:
    sdk = FakeSdk(accepted={OLD_KEY})
    api = BatchesApi(lambda: OLD_KEY, base_url=base_url, make_client=lambda k, _b: _Client(sdk, k))

    with pytest.raises(ProviderUnavailableError, match=r"^results of msgbatch_1: results_url host .* is not the API's"):
        list(api.result_lines(ended(results_url)))
    assert sdk.calls == []  # nothing was sent, so no key either


@pytest.mark.parametrize(
    ("base_url", "results_url"),
    [
        (None, "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results"),
        (None, "https://API.Anthropic.com:443/v1/messages/batches/msgbatch_1/results"),
        (None, "/v1/messages/batches/msgbatch_1/results"),  # relative: the API's host
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123/v1/messages/batches/msgbatch_1/results"),
    ],
)
def test_results_are_fetched_from_the_api_host(base_url: str | None, results_url: str) -> None:
    sdk = FakeSdk(accepted={OLD_KEY})
    api = BatchesApi(lambda: OLD_KEY, base_url=base_url, make_client=lambda k, _b: _Client(sdk, k))

    assert list(api.result_lines(ended(results_url))) == [b'{"custom_id": "a"}']
    assert sdk.fetched == [results_url]


# ---------------------------------------------------------------- the create, the submit, the tick


def refused(status: int = 401) -> ApiKeyRefusedError:
    return ApiKeyRefusedError(status, "create: the API refused the key: invalid x-api-key")


def test_a_create_refused_once_is_sent_again_and_made_once() -> None:
    world = Fakes()
    world.batches.fail_create(refused())
    source = world.upload("inbox/file.jsonl", [request("a"), request("b")])

    outcome = Intake(world.wiring()).submit(source)

    assert outcome.status is JobStatus.RUNNING
    assert world.batches.creates == 2  # the refused one (no batch) and the one that made it
    assert len(world.batches.batches) == 1
    assert world.batches.requests[next(iter(world.batches.batches))] == ["a", "b"]  # the whole body again
    assert refusals_counted() == 0


def test_a_create_refused_twice_fails_the_submit_and_leaves_the_shard_pending() -> None:
    world = Fakes()
    world.batches.fail_create(refused())
    world.batches.fail_create(refused(403))
    world.batches.fail_create(refused())  # a third refusal is there, never asked for
    source = world.upload("inbox/file.jsonl", [request("a")])

    with pytest.raises(ApiKeyRefusedError, match=r"^403: "):
        Intake(world.wiring()).submit(source)

    assert world.batches.creates == 2
    assert not world.batches.batches
    (job_id,) = world.state.jobs
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.state is ShardState.PENDING  # no batch exists: the checker creates it later
    assert world.state.get_create_lease() is None
    assert refusals_counted() == 1


def test_a_tick_with_a_refused_key_stops_calling_the_api_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    world = Fakes()
    jobs = [Intake(world.wiring()).submit(world.upload(f"inbox/{n}.jsonl", [request(n)])).job_id for n in "ab"]
    for job_id in jobs:
        shard = world.state.get_shard(job_id, 0)
        assert shard is not None
        assert shard.batch_id is not None
        world.batches.end(shard.batch_id)
    calls: list[str] = []

    def refuse(*args: Any) -> Any:
        calls.append(str(args[0]))
        raise ApiKeyRefusedError(401, "retrieve: the API refused the key: invalid x-api-key")

    monkeypatch.setattr(world.batches, "find_recent", refuse)
    monkeypatch.setattr(world.batches, "retrieve", refuse)
    with pytest.raises(CheckerItemsFailedError, match=r"^the API refused the key \(401: .*\); 3 item\(s\) left"):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    assert len(calls) == 1  # the listing; neither batch is retrieved with a key refused
    assert [getattr(world.state.get_job(job_id), "status", None) for job_id in jobs] == [JobStatus.RUNNING] * 2

    monkeypatch.undo()  # a new key: the next tick does it all
    report = Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    assert sorted(report.finished_jobs) == sorted(jobs)


# ---------------------------------------------------------------- the libraries' loggers


def test_library_loggers_stay_at_warning_whatever_the_root_level(caplog: pytest.LogCaptureFixture) -> None:
    botocore, anthropic_logger = logging.getLogger("botocore"), logging.getLogger("anthropic")
    levels = botocore.level, anthropic_logger.level
    try:
        botocore.setLevel(logging.DEBUG)  # as boto3.set_stream_logger would
        anthropic_logger.setLevel(logging.ERROR)  # a stricter level is kept
        quiet_libraries()
        with caplog.at_level(logging.DEBUG):  # the root logger at DEBUG
            logging.getLogger("botocore.parsers").debug("Response body: %s", b'{"SecretString": "sk-ant"}')
            logging.getLogger("urllib3.connectionpool").info("https://secretsmanager")
            logging.getLogger("botocore.credentials").warning("a warning still shows")
        assert [record.getMessage() for record in caplog.records] == ["a warning still shows"]
        assert anthropic_logger.level == logging.ERROR
    finally:
        botocore.setLevel(levels[0])
        anthropic_logger.setLevel(levels[1])


def test_a_checker_invocation_with_a_refused_key_raises_and_still_emits_the_metric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lambda counts the raised error (CheckerErrorsAlarm), and the ApiKeyRefused count is
    flushed with the invocation's other metrics all the same (ApiKeyRefusedAlarm)."""
    world = Fakes()
    job_id = Intake(world.wiring()).submit(world.upload("inbox/a.jsonl", [request("a")])).job_id
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.batch_id is not None
    world.batches.end(shard.batch_id)

    def refuse(batch_id: str) -> dict[str, Any]:
        count_key_refused()  # as the adapter does when the fresh key is refused too
        raise ApiKeyRefusedError(401, "retrieve: the API refused the key: invalid x-api-key")

    monkeypatch.setattr(world.batches, "retrieve", refuse)
    monkeypatch.setattr(wiring, "from_env", world.wiring)
    monkeypatch.setattr(metrics, "namespace", "batchdrop/test")
    root = Path(__file__).resolve().parents[2]
    handler = load_handler(SamTemplate.load(root / "template.yaml").function("CheckerFunction"), root)
    metrics.clear_metrics()
    capsys.readouterr()

    with pytest.raises(CheckerItemsFailedError, match=r"^the API refused the key"):
        handler({}, LocalLambdaContext(function_name="checker", timeout_seconds=900))

    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = [m["Name"] for e in emitted for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    assert KEY_REFUSED_METRIC in names
