"""The emulator on the wire: both auth header forms, request ids and error envelopes on every
response, the headers and query parameters it ignores, and the bodies it accepts (chunked,
empty), checked with raw HTTP where the SDK would hide them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx2
import pytest
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.server import Emulator
from tests.integration.emulator_support import (
    MakeClient,
    StartEmulator,
    api_error,
    api_headers,
    outcomes,
    requests_for,
)

# --- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/messages/batches"), ("POST", "/v1/messages/batches"), ("GET", "/v1/messages/batches/msgbatch_01x")],
)
def test_a_request_without_a_key_answers_401_authentication_error(
    http: httpx2.Client, control: EmulatorControl, method: str, path: str
) -> None:
    # When a request carries no key at all
    body = json.dumps({"requests": requests_for(1)}).encode() if method == "POST" else None
    response = http.request(method, path, content=body, headers={"anthropic-version": "2023-06-01"})

    # Then it is refused with 401 authentication_error in the API's envelope, and creates nothing
    assert response.status_code == 401
    assert api_error(response).error.type == "authentication_error"
    assert control.counters()["batches"] == 0


def test_the_sdk_without_a_key_header_gets_an_authentication_error(make_client: MakeClient, emulator: Emulator) -> None:
    # Given an SDK client told to send no Authorization header
    client = make_client(emulator, default_headers={"Authorization": anthropic.Omit()})

    # When it lists batches
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.batches.list()

    # Then it raises on the 401
    assert caught.value.status_code == 401
    assert caught.value.body["error"]["type"] == "authentication_error"


def test_the_sdk_sends_its_key_as_a_bearer_token_and_is_accepted(client: anthropic.Anthropic) -> None:
    # When the SDK (2.x) lists batches
    response = client.messages.batches.with_raw_response.list()

    # Then it authenticated with Authorization: Bearer, no x-api-key, and was served
    sent = response.http_request.headers
    assert sent["authorization"] == "Bearer test-key"
    assert "x-api-key" not in sent
    assert response.status_code == 200


def test_the_x_api_key_form_works_on_every_endpoint(http: httpx2.Client, control: EmulatorControl) -> None:
    # Given the headers of an SDK 0.x/1.x client: x-api-key and anthropic-version 2023-06-01
    headers = api_headers()

    # When a batch goes through every endpoint with them
    created = http.post("/v1/messages/batches", json={"requests": requests_for(2)}, headers=headers)
    batch = MessageBatch.model_validate(created.json())
    retrieved = http.get(f"/v1/messages/batches/{batch.id}", headers=headers)
    listed = http.get("/v1/messages/batches", params={"limit": 5}, headers=headers)
    control.end([batch.id])
    results = http.get(f"/v1/messages/batches/{batch.id}/results", headers=headers)
    deleted = http.delete(f"/v1/messages/batches/{batch.id}", headers=headers)
    other = MessageBatch.model_validate(
        http.post("/v1/messages/batches", json={"requests": requests_for(1)}, headers=headers).json()
    )
    canceled = http.post(f"/v1/messages/batches/{other.id}/cancel", headers=headers)

    # Then every call is served, and every body parses as the SDK's own types
    assert [r.status_code for r in (created, retrieved, listed, results, deleted, canceled)] == [200] * 6
    assert MessageBatch.model_validate(retrieved.json()).id == batch.id
    assert [MessageBatch.model_validate(item).id for item in listed.json()["data"]] == [batch.id]
    rows = [MessageBatchIndividualResponse.model_validate_json(line) for line in results.content.splitlines()]
    assert sorted(row.custom_id for row in rows) == ["req-0000", "req-0001"]
    assert DeletedMessageBatch.model_validate(deleted.json()).type == "message_batch_deleted"
    assert MessageBatch.model_validate(canceled.json()).processing_status == "canceling"


def test_a_wrong_key_answers_401_when_the_emulator_requires_one(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator accepting only the key "secret"
    emulator = start_emulator(api_key="secret")

    # When clients call it with another key, and with that key in both forms
    with pytest.raises(anthropic.AuthenticationError) as caught:
        make_client(emulator, api_key="wrong").messages.batches.list()
    bearer = make_client(emulator, api_key="secret").messages.batches.list()
    with httpx2.Client(base_url=emulator.url) as http:
        x_api_key = http.get("/v1/messages/batches", headers=api_headers("secret"))

    # Then the wrong key is refused and the right one accepted either way
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert bearer.data == []
    assert x_api_key.status_code == 200


@pytest.mark.parametrize("version", ["2023-06-01", "2026-10-21", "1999-12-31"])
def test_any_anthropic_version_is_accepted(http: httpx2.Client, version: str) -> None:
    response = http.get("/v1/messages/batches", headers={"x-api-key": "k", "anthropic-version": version})

    assert response.status_code == 200


# --- request ids and error envelopes -----------------------------------------------------


def test_every_success_carries_a_request_id_header(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # When a batch goes through every endpoint
    raw = client.messages.batches.with_raw_response
    created = raw.create(requests=requests_for(1))
    batch_id = created.parse().id
    responses = [created, raw.retrieve(batch_id), raw.list()]
    control.end([batch_id])
    results = client.messages.batches.results(batch_id)
    list(results)
    responses.append(raw.delete(batch_id))
    responses.append(raw.cancel(client.messages.batches.create(requests=requests_for(1)).id))

    # Then every response, the results download included, carries its own request-id
    ids = [response.headers["request-id"] for response in responses] + [results.http_response.headers["request-id"]]
    assert all(request_id.startswith("req_") for request_id in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "error_type"),
    [
        pytest.param("GET", "/v1/messages/batches?limit=0", api_headers(), 400, "invalid_request_error", id="400"),
        pytest.param("GET", "/v1/messages/batches", {}, 401, "authentication_error", id="401"),
        pytest.param("GET", "/v1/messages/batches/msgbatch_01x", api_headers(), 404, "not_found_error", id="404"),
        pytest.param("GET", "/v1/no/such/route", api_headers(), 404, "not_found_error", id="404-route"),
        pytest.param("PUT", "/v1/messages/batches", api_headers(), 405, "invalid_request_error", id="405"),
    ],
)
def test_every_error_is_the_api_envelope_with_the_request_id(
    http: httpx2.Client, method: str, path: str, headers: dict[str, str], status: int, error_type: str
) -> None:
    # When a request fails
    response = http.request(method, path, headers=headers)

    # Then the body is exactly the API's envelope, its request_id the request-id header
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert set(body["error"]) == {"type", "message"}
    assert api_error(response).error.type == error_type


def test_the_sdk_reads_the_request_id_of_an_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve("msgbatch_01NoSuchBatchNoSuchBatchXY")

    error = caught.value
    assert error.request_id is not None
    assert error.request_id == error.response.headers["request-id"] == error.body["request_id"]


# --- what the emulator ignores or accepts -------------------------------------------------


def test_the_beta_query_parameter_and_header_are_ignored(http: httpx2.Client, control: EmulatorControl) -> None:
    # Given the query and header the beta surface of older SDKs adds, and an unknown header
    headers = api_headers(**{"anthropic-beta": "message-batches-2024-09-24", "x-unknown-header": "1"})
    query = {"beta": "true", "unexpected": "x"}

    # When a batch is created, read and listed with them
    created = http.post("/v1/messages/batches", params=query, json={"requests": requests_for(1)}, headers=headers)
    batch = MessageBatch.model_validate(created.json())
    retrieved = http.get(f"/v1/messages/batches/{batch.id}", params=query, headers=headers)
    listed = http.get("/v1/messages/batches", params=query, headers=headers)
    control.end([batch.id])
    results = http.get(f"/v1/messages/batches/{batch.id}/results", params=query, headers=headers)

    # Then they changed nothing
    assert [r.status_code for r in (created, retrieved, listed, results)] == [200] * 4
    assert retrieved.json()["id"] == batch.id
    assert listed.json()["data"][0]["id"] == batch.id
    assert json.loads(results.content.splitlines()[0])["custom_id"] == "req-0000"


def test_the_sdk_beta_surface_works_too(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # Given the SDK's beta batches surface, sending the old beta header and query too
    batches = client.beta.messages.batches
    extra = {"extra_headers": {"anthropic-beta": "message-batches-2024-09-24"}, "extra_query": {"beta": "true"}}

    # When a batch goes through it from create to results
    batch = batches.create(requests=requests_for(2), **extra)
    control.end([batch.id])
    ended = batches.retrieve(batch.id, **extra)
    listed = [listed.id for listed in batches.list(**extra)]
    results = {row.custom_id: row.result.type for row in batches.results(batch.id, **extra)}

    # Then it behaves as the GA surface
    assert ended.processing_status == "ended"
    assert listed == [batch.id]
    assert results == {"req-0000": "succeeded", "req-0001": "succeeded"}


def test_cancel_and_delete_accept_an_empty_json_body(http: httpx2.Client, control: EmulatorControl) -> None:
    # Given a batch in progress and an ended one
    headers = api_headers(**{"Content-Type": "application/json"})
    open_ = MessageBatch.model_validate(
        http.post("/v1/messages/batches", json={"requests": requests_for(1)}, headers=headers).json()
    )
    done = MessageBatch.model_validate(
        http.post("/v1/messages/batches", json={"requests": requests_for(1)}, headers=headers).json()
    )
    control.end([done.id])

    # When they are canceled and deleted with Content-Type: application/json and no body
    canceled = http.post(f"/v1/messages/batches/{open_.id}/cancel", content=b"", headers=headers)
    deleted = http.request("DELETE", f"/v1/messages/batches/{done.id}", content=b"", headers=headers)

    # Then both are served
    assert canceled.status_code == 200
    assert MessageBatch.model_validate(canceled.json()).processing_status == "canceling"
    assert deleted.status_code == 200
    assert DeletedMessageBatch.model_validate(deleted.json()).id == done.id


def test_a_chunked_create_body_is_accepted(http: httpx2.Client, control: EmulatorControl) -> None:
    # Given a create body sent in small chunks, with no Content-Length
    body = json.dumps({"requests": requests_for(20)}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    # When it is posted
    response = http.post("/v1/messages/batches", content=chunks(), headers=api_headers())

    # Then it went chunked, and the batch holds every request
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200
    batch = MessageBatch.model_validate(response.json())
    assert batch.request_counts.processing == 20
    control.end([batch.id])
    assert control.counters()["requests_received"] == 20


def test_a_chunked_create_through_the_sdk_generic_post_is_accepted(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    # Given a create body streamed from an iterator, as a large batch would be
    body = json.dumps({"requests": requests_for(20)}).encode()
    chunks = iter([body[:1000], body[1000:]])

    # When the SDK's generic post sends it
    batch = client.post(
        "/v1/messages/batches",
        content=chunks,
        cast_to=MessageBatch,
        options={"headers": {"Content-Type": "application/json"}},
    )

    # Then the batch is created with every request
    assert batch.request_counts.processing == 20
    control.end([batch.id])
    assert len(outcomes(client, batch.id)) == 20


def test_keep_alive_connections_serve_many_calls(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # When one SDK client makes many calls, errors included, over its pooled connection
    batch = client.messages.batches.create(requests=requests_for(1))
    for _ in range(20):
        client.messages.batches.retrieve(batch.id)
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve("msgbatch_01NoSuchBatchNoSuchBatchXY")

    # Then every one was answered
    assert control.counters()["http_requests"]["retrieve"] == 40
