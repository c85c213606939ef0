"""Synchronous `POST /v1/messages` through the SDK's `messages.create`: the same responder as a
batch's, usage in the standard tier, params checked as a batch request's are (a 400 here),
and errors in the API's envelope."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from batchdrop_local.emulator.faults import FaultSettings
from tests.integration.emulator_support import MODEL, MakeClient, StartEmulator, api_error, api_headers

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_messages_create_answers_a_complete_message_in_the_standard_tier(client: anthropic.Anthropic) -> None:
    # When the same request is sent twice through the SDK
    first = client.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)  # type: ignore[arg-type]
    second = client.messages.create(model=MODEL, max_tokens=64, messages=QUESTION)  # type: ignore[arg-type]

    # Then each is a whole message with its own id, the same deterministic answer, standard tier
    assert first.id.startswith("msg_01")
    assert first.id != second.id
    assert (first.type, first.role, first.model, first.stop_reason) == ("message", "assistant", MODEL, "end_turn")
    assert first.content == second.content
    assert first.content[0].type == "text"
    assert "What is the capital of France?" in first.content[0].text
    assert first.usage.service_tier == "standard"
    assert first.usage.input_tokens > 0
    assert first.usage.output_tokens > 0
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (0, 0)


def test_max_tokens_cuts_a_synchronous_answer(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=2, messages=QUESTION)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": MODEL, "messages": QUESTION}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 10**6, "messages": QUESTION}, "max_tokens: 1000000 > 64000"),
        ({"model": "gpt-4", "max_tokens": 8, "messages": QUESTION}, "model: unknown model 'gpt-4'"),
        ({"model": MODEL, "max_tokens": 8, "messages": []}, "messages: List should have at least 1 item"),
        ({"model": MODEL, "max_tokens": 8, "messages": QUESTION, "stream": True}, "stream: the emulator does not"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_invalid_params_answer_400_naming_the_field(client: anthropic.Anthropic, body: Any, problem: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", body=body, cast_to=httpx2.Response)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith(problem)


def test_a_streamed_request_is_refused_saying_the_emulator_does_not_stream(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="the emulator does not stream"):
        client.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, stream=True)  # type: ignore[arg-type]


def test_messages_needs_an_api_key_and_takes_only_post(http: httpx2.Client) -> None:
    body = {"model": MODEL, "max_tokens": 8, "messages": QUESTION}
    unauthenticated = http.post("/v1/messages", json=body)
    assert unauthenticated.status_code == 401
    assert api_error(unauthenticated).error.type == "authentication_error"
    wrong_method = http.get("/v1/messages", headers=api_headers())
    assert wrong_method.status_code == 405
    assert api_error(wrong_method).error.type == "invalid_request_error"


def test_a_fault_can_target_messages(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    faults = FaultSettings.model_validate({"http_errors": [{"endpoint": "messages", "status": 529, "rate": 1}]})
    client = make_client(start_emulator(faults=faults))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=8, messages=QUESTION)  # type: ignore[arg-type]
    client.messages.count_tokens(model=MODEL, messages=QUESTION)  # type: ignore[arg-type]  # others left alone


def test_a_user_responder_answers_synchronously_and_its_errors_become_http_errors(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator answering with the tests' responder that reads the question
    client = make_client(start_emulator(responder="tests.integration.emulator_responders:by_question"))

    def ask(question: str) -> anthropic.types.Message:
        return client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": question}])

    # When it is asked a plain question, one it fails as overloaded, and one it crashes on
    answered = ask("plain")
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ask("overloaded please")
    with pytest.raises(anthropic.InternalServerError) as crashed:
        ask("crash now")

    # Then the plain one is its text, usage computed as usual; the errors come with the API's statuses
    assert [block.text for block in answered.content if block.type == "text"] == ["you asked: plain"]
    assert answered.usage.service_tier == "standard"
    assert overloaded.value.status_code == 529
    assert "the responder is overloaded" in str(overloaded.value)
    assert crashed.value.status_code == 500
    assert "emulator responder failed: RuntimeError: the responder crashed" in str(crashed.value)
