"""What the emulator checks, and when, as the real API: the request envelope at create (a
synchronous 400 or 413, and no batch), each request's params afterwards (an `errored` result
carrying `invalid_request_error`, the batch accepted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.messages import MessageBatch

from batchdrop_local.emulator.control import EmulatorControl
from tests.integration.emulator_support import (
    MakeClient,
    StartEmulator,
    api_error,
    api_headers,
    params,
    request,
    requests_for,
)

# --- the envelope: synchronous 400 ------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_request", "message"),
    [
        pytest.param(
            {"custom_id": "x" * 65, "params": params()},
            "requests.1.custom_id: String should have at most 64 characters",
            id="custom_id-too-long",
        ),
        pytest.param(
            {"custom_id": "has space", "params": params()},
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
            id="custom_id-bad-character",
        ),
        pytest.param(
            {"custom_id": "", "params": params()},
            "requests.1.custom_id: String should have at least 1 character",
            id="custom_id-empty",
        ),
        pytest.param(
            {"custom_id": 7, "params": params()},
            "requests.1.custom_id: Input should be a valid string",
            id="custom_id-not-a-string",
        ),
        pytest.param({"params": params()}, "requests.1.custom_id: Field required", id="custom_id-missing"),
        pytest.param({"custom_id": "no-params"}, "requests.1.params: Field required", id="params-missing"),
        pytest.param(
            {"custom_id": "text-params", "params": "Hello"},
            "requests.1.params: Input should be a valid dictionary",
            id="params-not-an-object",
        ),
        pytest.param(
            {"custom_id": "extra", "params": params(), "priority": 1},
            "requests.1.priority: Extra inputs are not permitted",
            id="unknown-field",
        ),
    ],
)
def test_a_malformed_request_is_rejected_at_create_and_nothing_is_created(
    client: anthropic.Anthropic, control: EmulatorControl, bad_request: dict[str, Any], message: str
) -> None:
    # Given a valid request followed by a malformed one
    requests = [request("fine"), bad_request]

    # When they are submitted
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)

    # Then the API answers 400 invalid_request_error naming the place, pydantic style
    error = caught.value
    assert error.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": error.request_id,
    }
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    # And no batch was created
    counters = control.counters()
    assert (counters["batches"], counters["creates_rejected"]) == (0, 1)


def test_duplicate_custom_ids_are_rejected_at_create(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # Given three requests, the third reusing the first one's custom_id
    requests = [request("first"), request("second"), request("first")]

    # When they are submitted
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)

    # Then the API answers 400 naming the duplicate, and creates nothing
    message = caught.value.body["error"]["message"]
    assert message.startswith("requests.2.custom_id: ")
    assert "'first'" in message
    assert control.counters()["batches"] == 0


def test_duplicate_custom_ids_are_accepted_when_allowed(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given an emulator allowing duplicate custom_ids
    emulator = start_emulator(allow_duplicate_custom_ids=True)
    client = make_client(emulator)

    # When two requests share a custom_id
    batch = client.messages.batches.create(requests=[request("same"), request("same")])
    EmulatorControl(emulator.url).end([batch.id])

    # Then both are processed and both come back
    assert batch.request_counts.processing == 2
    assert [row.custom_id for row in client.messages.batches.results(batch.id)] == ["same", "same"]


def test_an_empty_requests_list_is_rejected(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[])

    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "requests: List should have at least 1 item after validation, not 0",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "requests: Field required", id="requests-missing"),
        pytest.param({"requests": {"custom_id": "a"}}, "requests: Input should be a valid list", id="requests-object"),
        pytest.param([], "Input should be a valid dictionary or object to extract fields from", id="body-a-list"),
    ],
)
def test_a_body_without_a_requests_list_is_rejected(client: anthropic.Anthropic, body: Any, message: str) -> None:
    # When a body of another shape is posted through the SDK's generic call
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages/batches", body=body, cast_to=MessageBatch)

    # Then the API answers 400 saying what is wrong with it
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}


def test_more_requests_than_the_limit_are_rejected(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given an emulator taking at most 5 requests per batch (the real limit is 100,000)
    client = make_client(start_emulator(max_requests=5))

    # When 6 are submitted, then 5
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests_for(6))
    accepted = client.messages.batches.create(requests=requests_for(5))

    # Then 6 are refused with the count in the message, and 5 are accepted
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "requests: List should have at most 5 items after validation, not 6",
    }
    assert accepted.request_counts.processing == 5


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"requests": [{"custom_id": "a", "params": {}}', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"requests": [{"custom_id": "a", "params": {}}]} trailing', id="trailing-garbage"),
    ],
)
def test_a_malformed_json_body_answers_400(http: httpx2.Client, control: EmulatorControl, body: bytes) -> None:
    # When a body that is not one JSON document is posted
    response = http.post("/v1/messages/batches", content=body, headers=api_headers())

    # Then the API answers 400 invalid_request_error, and creates nothing
    assert response.status_code == 400
    error = api_error(response)
    assert error.error.type == "invalid_request_error"
    assert error.error.message.startswith("There was an error parsing the body of your request")
    assert control.counters()["batches"] == 0


# --- the body size: 413 ------------------------------------------------------------------


def _body(count: int) -> bytes:
    return json.dumps({"requests": requests_for(count)}).encode()


def test_a_body_at_the_size_limit_is_accepted_and_one_byte_more_answers_413(
    start_emulator: StartEmulator,
) -> None:
    # Given an emulator whose size limit is exactly this body's size
    body = _body(5)
    emulator = start_emulator(max_body_bytes=len(body))

    # When the body is posted, then the same body with one more byte
    with httpx2.Client(base_url=emulator.url) as http:
        at_limit = http.post("/v1/messages/batches", content=body, headers=api_headers())
        over_limit = http.post("/v1/messages/batches", content=body + b" ", headers=api_headers())

    # Then the first is created and the second answers 413 request_too_large
    assert at_limit.status_code == 200
    assert MessageBatch.model_validate(at_limit.json()).request_counts.processing == 5
    assert over_limit.status_code == 413
    assert over_limit.json() == {
        "type": "error",
        "error": {"type": "request_too_large", "message": "Request exceeds the maximum allowed number of bytes."},
        "request_id": over_limit.headers["request-id"],
    }
    assert EmulatorControl(emulator.url).counters()["batches"] == 1


def test_a_body_over_the_size_limit_raises_content_too_large_in_the_sdk(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator taking bodies of at most 2 kB
    emulator = start_emulator(max_body_bytes=2048)
    client = make_client(emulator)

    # When a larger batch is submitted through the SDK
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.batches.create(requests=requests_for(30))

    # Then the SDK raises on the 413, and nothing was created
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert EmulatorControl(emulator.url).counters()["batches"] == 0


def test_a_chunked_body_over_the_size_limit_answers_413(start_emulator: StartEmulator) -> None:
    # Given an emulator taking bodies of at most 2 kB
    emulator = start_emulator(max_body_bytes=2048)
    body = _body(30)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    # When a larger body is sent chunked, with no Content-Length to refuse it on
    with httpx2.Client(base_url=emulator.url) as http:
        response = http.post("/v1/messages/batches", content=chunks(), headers=api_headers())

    # Then the emulator counts the bytes as they come and answers 413
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


# --- params: checked after create, errored results ----------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"model": "gpt-4o"}, "model: unknown model 'gpt-4o'", id="unknown-model"),
        pytest.param({"max_tokens": None}, "max_tokens: Field required", id="max_tokens-missing"),
        pytest.param({"max_tokens": "ten"}, "max_tokens: Input should be a valid integer", id="max_tokens-not-integer"),
        pytest.param({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1", id="max_tokens-zero"),
        pytest.param({"max_tokens": 64_001}, "max_tokens: 64001 > 64000", id="max_tokens-too-large"),
        pytest.param(
            {"messages": []}, "messages: List should have at least 1 item after validation", id="messages-empty"
        ),
        pytest.param({"messages": None}, "messages: Field required", id="messages-missing"),
        pytest.param({"stream": True}, "stream: ", id="stream-true"),
        pytest.param({"speed": "fast"}, "speed: not supported in batch requests", id="fast-mode"),
        pytest.param(
            {"research_preview_2026_02": "active"},
            "research_preview_2026_02: not supported in batch requests",
            id="research-preview",
        ),
    ],
)
def test_a_params_problem_is_accepted_at_create_and_comes_back_errored(
    client: anthropic.Anthropic, control: EmulatorControl, overrides: dict[str, Any], message: str
) -> None:
    # Given a batch of one valid request and one whose params the API refuses
    requests = [request("good"), request("bad", **overrides)]

    # When it is submitted and processed
    batch = client.messages.batches.create(requests=requests)
    control.end([batch.id])
    ended = client.messages.batches.retrieve(batch.id)
    results = {row.custom_id: row.result for row in client.messages.batches.results(batch.id)}

    # Then create accepted both, and the bad one came back errored with invalid_request_error
    assert batch.request_counts.processing == 2
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 1)
    assert results["good"].type == "succeeded"
    bad = results["bad"]
    assert bad.type == "errored"
    assert bad.error.type == "error"
    assert bad.error.error.type == "invalid_request_error"
    assert bad.error.error.message.startswith(message)
    assert bad.error.request_id is None


def test_max_output_tokens_setting_moves_the_max_tokens_limit(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator whose models answer at most 100 tokens
    emulator = start_emulator(max_output_tokens=100)
    client = make_client(emulator)

    # When requests ask for 100 and for 101
    batch = client.messages.batches.create(requests=[request("at", max_tokens=100), request("over", max_tokens=101)])
    EmulatorControl(emulator.url).end([batch.id])

    # Then the first runs and the second is refused
    results = {row.custom_id: row.result.type for row in client.messages.batches.results(batch.id)}
    assert results == {"at": "succeeded", "over": "errored"}
