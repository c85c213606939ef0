"""Each invocation's environment without os.environ: `batchdrop.config` gives a handler the
environment its caller set for this thread (os.environ otherwise), `wiring` makes every AWS
client from those Settings alone, and each log line carries that environment's service."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from batchdrop import wiring
from batchdrop.adapters.objects import ObjectStore
from batchdrop.config import Settings, environment, invocation_environment, service_name
from batchdrop.observability import logger

pytestmark = pytest.mark.unit

FUNCTION_ENV = {
    "BATCHDROP_BUCKET": "bucket-of-the-function",
    "BATCHDROP_TABLE": "table-of-the-function",
    "BATCHDROP_EVENT_BUS": "bus-of-the-function",
    "ANTHROPIC_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:key-AbCdEf",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "AWS_DEFAULT_REGION": "eu-central-1",
    "AWS_ACCESS_KEY_ID": "function-key-id",
    "AWS_SECRET_ACCESS_KEY": "function-secret",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_LAMBDA_FUNCTION_NAME": "batchdrop-SubmitFunction",
    "POWERTOOLS_SERVICE_NAME": "submit",
    "POWERTOOLS_PARAMETERS_MAX_AGE": "300",
}


@pytest.fixture
def other_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process environment that disagrees with the function's on everything."""
    for name, value in {
        "AWS_ENDPOINT_URL": "http://elsewhere.invalid",
        "AWS_DEFAULT_REGION": "ap-southeast-2",
        "AWS_REGION": "ap-southeast-2",
        "AWS_ACCESS_KEY_ID": "shell-key-id",
        "AWS_SECRET_ACCESS_KEY": "shell-secret",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_supported",
        "POWERTOOLS_SERVICE_NAME": "the-shell",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def fresh_wiring() -> Iterator[None]:
    wiring._build.cache_clear()
    yield
    wiring._build.cache_clear()


def test_without_an_invocation_environment_the_environment_is_os_environ() -> None:
    assert environment() is os.environ


def test_settings_come_from_the_invocation_environment_not_os_environ(other_process_env: None) -> None:
    with invocation_environment(FUNCTION_ENV) as seen:
        settings = Settings.from_env()
        assert dict(environment()) == FUNCTION_ENV == dict(seen)

    assert (settings.bucket, settings.region, settings.aws_endpoint) == (
        "bucket-of-the-function",
        "eu-central-1",
        "http://127.0.0.1:4566",
    )
    assert settings.function_name == "batchdrop-SubmitFunction"
    assert settings.secret_max_age == 300
    assert "function-secret" not in repr(settings)
    assert environment() is os.environ  # the block's environment ended with it


def test_two_threads_each_see_their_own_environment() -> None:
    barrier = threading.Barrier(2, timeout=10)
    seen: dict[str, str | None] = {}

    def run(service: str) -> None:
        with invocation_environment({**FUNCTION_ENV, "POWERTOOLS_SERVICE_NAME": service}):
            barrier.wait()  # both environments are set at once
            seen[service] = service_name()
            barrier.wait()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("submit", "checker")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert seen == {"submit": "submit", "checker": "checker"}


@pytest.mark.usefixtures("other_process_env", "fresh_wiring")
def test_every_client_is_made_from_the_settings_alone() -> None:
    with invocation_environment(FUNCTION_ENV):
        wired = wiring.from_env()

    clients: dict[str, Any] = {
        "s3": wired.store.client,
        "dynamodb": wired.state.table.meta.client,
        "events": wired.events.client,
    }
    for service, client in clients.items():
        assert client.meta.endpoint_url == "http://127.0.0.1:4566", service
        assert client.meta.region_name == "eu-central-1", service
        assert client.meta.config.request_checksum_calculation == "when_required", service
    credentials = wiring.AwsClients(Settings.from_env(FUNCTION_ENV)).session().get_credentials()
    assert (credentials.access_key, credentials.secret_key) == ("function-key-id", "function-secret")


@pytest.mark.usefixtures("other_process_env", "fresh_wiring")  # the store's own client needs a region
def test_the_s3_client_has_the_object_stores_own_settings() -> None:
    with invocation_environment(FUNCTION_ENV):
        wired = wiring.from_env()

    assert wired.store.client.meta.config.s3 == ObjectStore("any", client=None).client.meta.config.s3


@pytest.mark.usefixtures("fresh_wiring")
def test_each_function_has_adapters_of_its_own() -> None:
    with invocation_environment(FUNCTION_ENV):
        submit = wiring.from_env()
        again = wiring.from_env()
    with invocation_environment({**FUNCTION_ENV, "AWS_LAMBDA_FUNCTION_NAME": "batchdrop-CheckerFunction"}):
        checker = wiring.from_env()

    assert submit is again
    assert checker is not submit
    assert checker.store is not submit.store


@pytest.mark.usefixtures("other_process_env")
def test_log_lines_carry_the_service_of_the_invocation_under_way() -> None:
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(logger.registered_formatter)
    logger.addHandler(capture)
    try:
        with invocation_environment(FUNCTION_ENV):
            logger.warning("inside")
        logger.warning("outside")
        with invocation_environment(FUNCTION_ENV):
            logger.warning("named by the caller", extra={"service": "explicit"})
    finally:
        logger.removeHandler(capture)

    services = {record["message"]: record["service"] for record in map(json.loads, lines.getvalue().splitlines())}
    assert services == {"inside": "submit", "outside": "the-shell", "named by the caller": "explicit"}
