"""Every fault the emulator injects, and what an SDK client sees when it meets it: HTTP errors,
stalls, errored and expired shares, the queue limit, a lost create response, a cut results
download; set through the control endpoint or the settings (docs/local.md, Faults)."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import anthropic
import httpx2
import pytest

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.faults import FaultSettings
from batchdrop_local.emulator.server import Emulator
from tests.integration.emulator_support import (
    MakeClient,
    StartEmulator,
    api_error,
    api_headers,
    outcomes,
    requests_for,
)


def faulty(start_emulator: StartEmulator, **faults: Any) -> Emulator:
    """An emulator started with these fault settings (the JSON of PUT /_emulator/faults)."""
    return start_emulator(faults=FaultSettings.model_validate(faults))


# --- HTTP errors --------------------------------------------------------------------------


def test_an_injected_429_raises_rate_limit_error_with_retry_after_and_creates_nothing(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator answering every create with 429, retry after 3 s
    emulator = faulty(start_emulator, http_errors=[{"endpoint": "create", "status": 429, "rate": 1}], retry_after=3)
    client = make_client(emulator)

    # When a batch is created by a client that does not retry
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.create(requests=requests_for(2))

    # Then it sees a 429 rate_limit_error with retry-after, and no batch exists
    error = caught.value
    assert error.status_code == 429
    assert error.body["error"]["type"] == "rate_limit_error"
    assert error.response.headers["retry-after"] == "3"
    assert error.request_id == error.body["request_id"]
    counters = EmulatorControl(emulator.url).counters()
    assert counters["batches"] == 0
    assert counters["faults_injected"] == {"http_429": 1}


def test_the_sdk_retries_an_injected_429_and_creates_exactly_one_batch(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator answering the first create with 429, retry after 0.05 s
    emulator = faulty(
        start_emulator, http_errors=[{"endpoint": "create", "status": 429, "rate": 1, "times": 1}], retry_after=0.05
    )
    client = make_client(emulator, max_retries=1)

    # When a client allowed one retry creates a batch
    batch = client.messages.batches.create(requests=requests_for(3))

    # Then the retry succeeded: two creates reached the emulator, one batch was made
    counters = EmulatorControl(emulator.url).counters()
    assert (counters["creates_received"], counters["creates_accepted"], counters["batches"]) == (2, 1, 1)
    assert counters["duplicate_custom_ids"] == 0
    assert client.messages.batches.retrieve(batch.id).request_counts.processing == 3


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.ServiceUnavailableError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_an_injected_server_error_raises_its_sdk_exception(
    start_emulator: StartEmulator,
    make_client: MakeClient,
    status: int,
    exception: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    # Given an emulator failing every create with this status
    emulator = faulty(start_emulator, http_errors=[{"endpoint": "create", "status": status, "rate": 1}])

    # When a batch is created
    with pytest.raises(exception) as caught:
        make_client(emulator).messages.batches.create(requests=requests_for(1))

    # Then the SDK raises the exception of that status, the body in the API's envelope
    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type
    assert EmulatorControl(emulator.url).counters()["batches"] == 0


def test_a_fault_on_one_endpoint_leaves_the_others_alone(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator failing every retrieve with 500
    emulator = faulty(start_emulator, http_errors=[{"endpoint": "retrieve", "status": 500, "rate": 1}])
    client = make_client(emulator)

    # When a batch is created, listed and retrieved
    batch = client.messages.batches.create(requests=requests_for(1))
    listed = client.messages.batches.list()
    with pytest.raises(anthropic.InternalServerError):
        client.messages.batches.retrieve(batch.id)

    # Then only the retrieve failed
    assert [b.id for b in listed.data] == [batch.id]


def test_times_limits_how_often_a_fault_fires(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given an emulator failing creates with 500, at most twice, on any endpoint
    emulator = faulty(start_emulator, http_errors=[{"endpoint": "*", "status": 500, "rate": 1, "times": 2}])
    client = make_client(emulator)

    # When three batches are created
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            client.messages.batches.create(requests=requests_for(1))
    third = client.messages.batches.create(requests=requests_for(1))

    # Then the first two failed and the third, and everything after, went through
    assert third.processing_status == "in_progress"
    assert client.messages.batches.retrieve(third.id).id == third.id
    assert EmulatorControl(emulator.url).counters()["faults_injected"] == {"http_500": 2}


def test_a_fault_rate_fires_on_about_that_share_of_calls_reproducibly(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given two emulators with the same seed, failing 30% of lists
    rule = {"endpoint": "list", "status": 500, "rate": 0.3}
    first, second = (faulty(start_emulator, http_errors=[rule]) for _ in range(2))

    # When each is listed 100 times
    def failures(emulator: Emulator) -> list[bool]:
        client = make_client(emulator)
        seen = []
        for _ in range(100):
            try:
                client.messages.batches.list()
                seen.append(False)
            except anthropic.InternalServerError:
                seen.append(True)
        return seen

    # Then about 30 failed, and on the same calls in both
    pattern = failures(first)
    assert 15 <= sum(pattern) <= 45
    assert failures(second) == pattern


# --- stalls -------------------------------------------------------------------------------


def test_a_stalled_create_times_out_at_the_client_but_the_batch_was_created(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator that waits 0.5 s before answering a create, once
    emulator = faulty(start_emulator, stalls=[{"endpoint": "create", "seconds": 0.5, "rate": 1, "times": 1}])
    impatient = make_client(emulator, timeout=0.1)

    # When a client with a 0.1 s timeout creates a batch
    with pytest.raises(anthropic.APITimeoutError):
        impatient.messages.batches.create(requests=requests_for(3))

    # Then it timed out, yet the batch exists: the create was committed before the stall
    counters = EmulatorControl(emulator.url).counters()
    assert (counters["creates_accepted"], counters["batches"], counters["faults_injected"]) == (1, 1, {"stall": 1})
    (batch,) = make_client(emulator).messages.batches.list().data
    assert batch.request_counts.processing == 3


def test_the_sdk_retrying_a_stalled_create_submits_the_batch_twice(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator that stalls every create for 0.5 s
    emulator = faulty(start_emulator, stalls=[{"endpoint": "create", "seconds": 0.5, "rate": 1}])

    # When a client with a 0.1 s timeout, allowed one retry, creates a batch
    with pytest.raises(anthropic.APITimeoutError):
        make_client(emulator, timeout=0.1, max_retries=1).messages.batches.create(requests=requests_for(2))

    # Then both attempts created a batch: a timeout says nothing about what the server did
    counters = EmulatorControl(emulator.url).counters()
    assert (counters["creates_received"], counters["batches"], counters["duplicate_custom_ids"]) == (2, 2, 2)


# --- per-request outcomes -------------------------------------------------------------------


def test_errored_shares_come_back_as_nested_api_and_overloaded_errors(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator erroring 20% of requests with api_error and 10% with overloaded_error
    emulator = faulty(start_emulator, errored={"api_error": 0.2, "overloaded_error": 0.1})
    client = make_client(emulator)

    # When a batch of 400 requests is processed
    batch = client.messages.batches.create(requests=requests_for(400))
    EmulatorControl(emulator.url).end([batch.id])
    ended = client.messages.batches.retrieve(batch.id)
    rows = list(client.messages.batches.results(batch.id))

    # Then about those shares came back errored, in the nested envelope, and the rest succeeded
    errors = [row.result.error for row in rows if row.result.type == "errored"]
    by_type = {kind: sum(e.error.type == kind for e in errors) for kind in ("api_error", "overloaded_error")}
    assert 50 <= by_type["api_error"] <= 110
    assert 20 <= by_type["overloaded_error"] <= 60
    assert len(errors) == sum(by_type.values()) == ended.request_counts.errored
    assert all(error.type == "error" and error.request_id is None for error in errors)
    assert ended.request_counts.succeeded == 400 - len(errors)


def test_errored_outcomes_replay_for_the_same_seed_and_custom_ids(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given three fresh emulators erroring half the requests: two seeded 7, one seeded 8
    def outcomes_with(seed: int) -> dict[str, str]:
        emulator = start_emulator(seed=seed, faults=FaultSettings(errored={"api_error": 0.5}))
        client = make_client(emulator)
        batch = client.messages.batches.create(requests=requests_for(40))
        EmulatorControl(emulator.url).end([batch.id])
        return outcomes(client, batch.id)

    # When the same 40 requests go through each
    first, again, other_seed = outcomes_with(7), outcomes_with(7), outcomes_with(8)

    # Then the same seed gave the same outcome to every request, and another seed did not
    assert set(first.values()) == {"succeeded", "errored"}
    assert again == first
    assert other_seed != first


def test_a_resubmitted_errored_request_gets_a_fresh_draw(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator erroring half the requests, and a batch of 40 with some errored
    emulator = faulty(start_emulator, errored={"overloaded_error": 0.5})
    client = make_client(emulator)
    control = EmulatorControl(emulator.url)
    first = client.messages.batches.create(requests=requests_for(40))
    control.end([first.id])
    errored = sorted(cid for cid, outcome in outcomes(client, first.id).items() if outcome == "errored")
    assert errored

    # When the errored ones are resubmitted
    retry = client.messages.batches.create(requests=[r for r in requests_for(40) if r["custom_id"] in set(errored)])
    control.end([retry.id])
    retried = outcomes(client, retry.id)

    # Then they were drawn again: some succeed this time
    assert sorted(retried) == errored
    assert "succeeded" in retried.values()
    assert control.custom_ids(minimum=2) == dict.fromkeys(errored, 2)


def test_an_expired_share_comes_back_expired_in_an_ended_batch(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator expiring 25% of requests
    emulator = faulty(start_emulator, expired=0.25)
    client = make_client(emulator)

    # When a batch of 200 is processed
    batch = client.messages.batches.create(requests=requests_for(200))
    EmulatorControl(emulator.url).end([batch.id])
    ended = client.messages.batches.retrieve(batch.id)
    results = outcomes(client, batch.id)

    # Then about a quarter came back expired, the rest succeeded
    expired = list(results.values()).count("expired")
    assert 25 <= expired <= 75
    assert ended.request_counts.expired == expired
    assert ended.request_counts.succeeded == 200 - expired


# --- queue limit, lost create response, cut results -----------------------------------------


def test_the_queue_limit_answers_429_and_creates_nothing(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator whose processing queue holds 5 requests, 3 of them taken
    emulator = faulty(start_emulator, queue_limit=5)
    client = make_client(emulator)
    control = EmulatorControl(emulator.url)
    first = client.messages.batches.create(requests=requests_for(3, prefix="first"))

    # When 3 more are submitted
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.create(requests=requests_for(3, prefix="second"))

    # Then the create answers 429 rate_limit_error and nothing was created
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    counters = control.counters()
    assert (counters["batches"], counters["creates_rejected"]) == (1, 1)
    assert counters["faults_injected"] == {"queue_full": 1}
    # And once the first batch ended, the queue has room again
    control.end([first.id])
    assert client.messages.batches.create(requests=requests_for(3, prefix="second")).request_counts.processing == 3


def test_a_lost_create_response_looks_dropped_but_the_batch_exists(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator that loses the response of the first create
    emulator = faulty(start_emulator, lose_create_response={"rate": 1, "times": 1})
    control = EmulatorControl(emulator.url)
    client = make_client(emulator)

    # When a client that does not retry creates a batch
    with pytest.raises(anthropic.APIConnectionError) as caught:
        client.messages.batches.create(requests=requests_for(4))

    # Then it saw a dropped connection (not a timeout), yet the batch was created, once
    assert not isinstance(caught.value, anthropic.APITimeoutError)
    counters = control.counters()
    assert (counters["creates_accepted"], counters["batches"], counters["requests_received"]) == (1, 1, 4)
    assert counters["faults_injected"] == {"lost_create_response": 1}
    (batch,) = client.messages.batches.list().data
    assert batch.request_counts.processing == 4


def test_the_sdk_retrying_a_lost_create_response_submits_the_batch_twice(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator that loses the response of the first create
    emulator = faulty(start_emulator, lose_create_response={"rate": 1, "times": 1})
    control = EmulatorControl(emulator.url)

    # When a client allowed to retry creates a batch
    batch = make_client(emulator, max_retries=1).messages.batches.create(requests=requests_for(4))

    # Then its retry created a second batch of the same requests: the double submission
    counters = control.counters()
    assert (counters["creates_accepted"], counters["batches"], counters["duplicate_custom_ids"]) == (2, 2, 4)
    assert control.custom_ids(minimum=2) == {f"req-{i:04d}": 2 for i in range(4)}
    assert batch.request_counts.processing == 4


def test_dropped_results_cut_the_download_mid_stream(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given an ended batch of 20 on an emulator that cuts the first results download
    emulator = faulty(start_emulator, drop_results={"rate": 1, "times": 1})
    client = make_client(emulator)
    batch = client.messages.batches.create(requests=requests_for(20))
    EmulatorControl(emulator.url).end([batch.id])

    # When the SDK iterates the results
    received: list[str] = []
    with closing(client.messages.batches.results(batch.id)) as results, pytest.raises(httpx2.RemoteProtocolError):
        received.extend(row.custom_id for row in results)

    # Then it raised part-way, after some lines, and a second download is whole
    assert 0 < len(received) < 20
    assert len(outcomes(client, batch.id)) == 20


# --- setting faults -------------------------------------------------------------------------


def test_faults_set_through_the_control_endpoint_take_effect_and_read_back(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    # Given an emulator with no faults, serving a create
    client.messages.batches.create(requests=requests_for(1))

    # When a 529 on create is set through PUT /_emulator/faults
    answered = control.set_faults({"http_errors": [{"endpoint": "create", "status": 529, "rate": 1, "times": 1}]})

    # Then it reads back with its defaults filled in, and the next create meets it, once
    assert answered == control.faults()
    assert answered["http_errors"] == [{"endpoint": "create", "status": 529, "rate": 1.0, "times": 1}]
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.create(requests=requests_for(1))
    client.messages.batches.create(requests=requests_for(1))
    assert control.counters()["batches"] == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"http_errors": [{"endpoint": "create", "status": 500, "rate": 2}]}', id="rate-above-1"),
        pytest.param(b'{"http_errors": [{"endpoint": "upload", "status": 500, "rate": 1}]}', id="unknown-endpoint"),
        pytest.param(b'{"errored": {"timeout_error": 0.1}}', id="unknown-errored-type"),
        pytest.param(b'{"latency": 3}', id="unknown-key"),
    ],
)
def test_invalid_fault_settings_answer_400_and_change_nothing(
    http: httpx2.Client, control: EmulatorControl, body: bytes
) -> None:
    # Given an emulator with a 500 rule in place
    before = control.set_faults({"http_errors": [{"endpoint": "list", "status": 500, "rate": 0.5}]})

    # When invalid fault settings are PUT
    response = http.put("/_emulator/faults", content=body, headers={"Content-Type": "application/json"})

    # Then they are refused in the API's envelope, and the rule in place stays
    assert response.status_code == 400
    assert api_error(response).error.type == "invalid_request_error"
    assert control.faults() == before


def test_reset_forgets_batches_counters_and_faults_set_since_start(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator started with a queue limit, then given a batch and a 500 on lists
    emulator = faulty(start_emulator, queue_limit=10)
    control = EmulatorControl(emulator.url)
    client = make_client(emulator)
    client.messages.batches.create(requests=requests_for(2))
    control.set_faults({"http_errors": [{"endpoint": "list", "status": 500, "rate": 1}]})

    # When it is reset
    control.reset()

    # Then no batch or count remains, and the faults are those it started with
    assert client.messages.batches.list().data == []
    counters = control.counters()
    assert (counters["batches"], counters["creates_received"], counters["requests_received"]) == (0, 0, 0)
    assert control.faults() == FaultSettings(queue_limit=10).model_dump()


def test_reset_with_faults_true_forgets_the_faults_of_the_settings_too(start_emulator: StartEmulator) -> None:
    # Given an emulator started with a queue limit
    control = EmulatorControl(faulty(start_emulator, queue_limit=10).url)

    # When it is reset with {"faults": true}
    control.reset(faults=True)

    # Then no fault is left
    assert control.faults() == FaultSettings().model_dump()


def test_the_control_endpoint_needs_no_key_and_answers_404_for_unknown_calls(http: httpx2.Client) -> None:
    health = http.get("/_emulator/health")
    unknown = http.post("/_emulator/explode", headers=api_headers())

    assert health.json() == {"ok": True}
    assert unknown.status_code == 404
    assert api_error(unknown).error.type == "not_found_error"


# --- a poisoned request -------------------------------------------------------------------


def test_a_create_holding_a_poisoned_request_is_refused_naming_it_and_creates_nothing(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator refusing any create holding a request whose params carry "POISON"
    emulator = faulty(start_emulator, poison="POISON")
    client = make_client(emulator)
    requests = requests_for(3)
    requests[1]["params"]["metadata"] = {"user_id": "POISON-1"}

    # When a batch of it is created
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)

    # Then the create is refused with 400 naming that request, and no batch exists
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("requests.1.params: integer overflow")
    counters = EmulatorControl(emulator.url).counters()
    assert (counters["batches"], counters["creates_rejected"]) == (0, 1)

    # And a body without it is taken
    assert client.messages.batches.create(requests=requests_for(2)).processing_status == "in_progress"
