"""The emulator behaves as the Message Batches API, seen through the official `anthropic` SDK
over real HTTP: create, poll, results, list pages, cancel, delete, 404s, expiry, archival and
restarts (docs/local.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx2
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.server import Emulator
from batchdrop_local.emulator.settings import EmulatorSettings
from tests.integration.emulator_support import (
    HOLD_LATENCY,
    MODEL,
    MakeClient,
    StartEmulator,
    api_error,
    api_headers,
    outcomes,
    requests_for,
    wait_for,
    wait_until_ended,
)

BATCH_ID = re.compile(r"^msgbatch_01[1-9A-HJ-NP-Za-km-z]{22}$")
MESSAGE_ID = re.compile(r"^msg_01[1-9A-HJ-NP-Za-km-z]{22}$")
NO_COUNTS = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


def counts(batch: MessageBatch) -> dict[str, int]:
    return batch.request_counts.model_dump()


# --- create, poll, results ------------------------------------------------------------


def test_create_answers_an_in_progress_batch_with_every_request_processing(client: anthropic.Anthropic) -> None:
    # Given three valid requests
    requests = requests_for(3)

    # When they are submitted
    response = client.messages.batches.with_raw_response.create(requests=requests)
    batch = response.parse()

    # Then the batch is in progress, every request processing, nothing ended or canceled yet
    assert response.status_code == 200
    assert BATCH_ID.match(batch.id)
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert counts(batch) == NO_COUNTS | {"processing": 3}
    assert (batch.ended_at, batch.archived_at, batch.cancel_initiated_at, batch.results_url) == (None, None, None, None)
    # And it expires after 24 latencies (the real 24 h, scaled like the processing time), to the microsecond
    assert batch.expires_at - batch.created_at == timedelta(seconds=24 * HOLD_LATENCY)
    # And retrieving it gives the same batch
    assert client.messages.batches.retrieve(batch.id) == batch


def test_counts_advance_evenly_over_the_latency_then_take_their_final_values_at_the_end(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator whose batches take a second, and a batch of 10 requests
    latency = 1.0
    client = make_client(start_emulator(latency=latency))
    batch = client.messages.batches.create(requests=requests_for(10))

    # When the batch is polled until it ends
    seen = [batch]

    def polled_to_the_end() -> bool:
        seen.append(client.messages.batches.retrieve(batch.id))
        return seen[-1].processing_status == "ended"

    wait_for(polled_to_the_end, what="the batch to end")

    # Then every poll before the end saw the requests processed by then (in order, evenly over
    # the latency) out of processing, never going back, and no end yet
    *before_end, ended = seen
    assert len(before_end) > 2
    done_seen = []
    for snapshot in before_end:
        assert snapshot.processing_status == "in_progress"
        snapshot_counts = counts(snapshot)
        assert sum(snapshot_counts.values()) == 10
        assert snapshot_counts == NO_COUNTS | {
            "processing": snapshot_counts["processing"],
            "succeeded": 10 - snapshot_counts["processing"],
        }
        assert (snapshot.ended_at, snapshot.results_url) == (None, None)
        done_seen.append(snapshot_counts["succeeded"])
    assert done_seen == sorted(done_seen)
    assert done_seen[0] == 0
    assert any(0 < done < 10 for done in done_seen), done_seen  # progress was visible before the end
    # And the end set the final counts, with ended_at and results_url together
    assert counts(ended) == NO_COUNTS | {"succeeded": 10}
    assert ended.ended_at is not None
    assert ended.results_url is not None


def test_a_listed_batch_shows_the_same_counts_so_far(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given a batch of 100 requests half-way through its 2 s
    latency = 2.0
    client = make_client(start_emulator(latency=latency))
    batch = client.messages.batches.create(requests=requests_for(100))
    wait_for(lambda: (datetime.now(UTC) - batch.created_at).total_seconds() >= latency / 2, what="half-way")

    # When it is listed, Then about half its requests are out of processing
    [listed] = [b for b in client.messages.batches.list(limit=5) if b.id == batch.id]
    assert listed.processing_status == "in_progress"
    assert 40 <= listed.request_counts.succeeded <= 90
    assert listed.request_counts.processing == 100 - listed.request_counts.succeeded


def test_results_hold_one_succeeded_message_per_request(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # Given a batch of five requests, ended
    requests = requests_for(5)
    batch = client.messages.batches.create(requests=requests)
    control.end([batch.id])

    # When its results are read through the SDK
    rows = list(client.messages.batches.results(batch.id))

    # Then each request has one line, with a complete message from the requested model
    assert sorted(row.custom_id for row in rows) == [r["custom_id"] for r in requests]
    for row in rows:
        assert row.result.type == "succeeded"
        message = row.result.message
        assert MESSAGE_ID.match(message.id)
        assert (message.type, message.role, message.model) == ("message", "assistant", MODEL)
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text"
        assert message.content[0].text


def test_results_download_is_jsonl_with_lf_line_ends_and_no_blank_lines(
    client: anthropic.Anthropic, control: EmulatorControl, http: httpx2.Client
) -> None:
    # Given an ended batch of 50 requests
    batch = client.messages.batches.create(requests=requests_for(50))
    control.end([batch.id])
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.results_url is not None

    # When its results_url is fetched as the SDK does, asking for application/binary
    response = http.get(ended.results_url, headers=api_headers(Accept="application/binary"))

    # Then the body is JSON Lines: one compact line per request, each ended by "\n" alone
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-jsonl"
    assert response.headers["request-id"].startswith("req_")
    body = response.content
    assert body.endswith(b"\n")
    assert b"\r" not in body
    assert b"\n\n" not in body
    lines = body.split(b"\n")[:-1]
    rows = [MessageBatchIndividualResponse.model_validate_json(line) for line in lines]
    assert len(rows) == 50
    assert {row.result.type for row in rows} == {"succeeded"}


def test_results_come_back_in_an_order_other_than_the_submission(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    # Given a batch of 50 requests, ended
    submitted = [r["custom_id"] for r in requests_for(50)]
    batch = client.messages.batches.create(requests=requests_for(50))
    control.end([batch.id])

    # When its results are read
    order = [row.custom_id for row in client.messages.batches.results(batch.id)]

    # Then every request is there, shuffled
    assert sorted(order) == submitted
    assert order != submitted


def test_results_url_is_absolute_and_points_at_the_emulator_itself(
    client: anthropic.Anthropic, control: EmulatorControl, emulator: Emulator
) -> None:
    # Given an ended batch
    batch = client.messages.batches.create(requests=requests_for(1))
    control.end([batch.id])

    # When it is retrieved
    ended = client.messages.batches.retrieve(batch.id)

    # Then its results_url is an absolute URL on the emulator's own host, never the real API's
    assert ended.results_url is not None
    url = urlsplit(ended.results_url)
    assert (url.scheme, url.netloc) == ("http", f"127.0.0.1:{emulator.port}")
    assert url.path == f"/v1/messages/batches/{batch.id}/results"


def test_a_relative_results_url_still_downloads_through_the_sdk(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator minting relative results URLs, and an ended batch
    emulator = start_emulator(results_url="relative")
    client = make_client(emulator)
    batch = client.messages.batches.create(requests=requests_for(2))
    EmulatorControl(emulator.url).end([batch.id])

    # When the batch is retrieved and its results read through the SDK
    ended = client.messages.batches.retrieve(batch.id)
    results = outcomes(client, batch.id)

    # Then the URL is the bare path, which the SDK resolves against its base_url
    assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"
    assert results == {"req-0000": "succeeded", "req-0001": "succeeded"}


def test_results_of_a_batch_still_in_progress_are_refused(client: anthropic.Anthropic, http: httpx2.Client) -> None:
    # Given a batch still in progress
    batch = client.messages.batches.create(requests=requests_for(2))

    # When its results are asked for directly
    response = http.get(f"/v1/messages/batches/{batch.id}/results", headers=api_headers())

    # Then the API answers 400 invalid_request_error
    assert response.status_code == 400
    assert api_error(response).error.type == "invalid_request_error"
    # And the SDK, seeing no results_url, refuses before sending anything
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(batch.id)


# --- list -----------------------------------------------------------------------------


@pytest.fixture
def five_batches(client: anthropic.Anthropic) -> list[str]:
    """The ids of five batches, newest first."""
    oldest_first = [client.messages.batches.create(requests=requests_for(1)).id for _ in range(5)]
    return oldest_first[::-1]


def test_list_pages_are_newest_first_with_their_first_and_last_ids(
    client: anthropic.Anthropic, five_batches: list[str]
) -> None:
    # When the first page of two is listed
    page = client.messages.batches.list(limit=2)

    # Then it holds the two newest batches, and says more follow
    assert [batch.id for batch in page.data] == five_batches[:2]
    assert (page.first_id, page.last_id) == (five_batches[0], five_batches[1])
    assert page.has_more is True


def test_after_id_pages_toward_older_batches(client: anthropic.Anthropic, five_batches: list[str]) -> None:
    # When the pages after the second and the fourth newest are listed
    middle = client.messages.batches.list(limit=2, after_id=five_batches[1])
    last = client.messages.batches.list(limit=2, after_id=five_batches[3])

    # Then each holds the batches just older than its cursor; the oldest page has no more
    assert [batch.id for batch in middle.data] == five_batches[2:4]
    assert middle.has_more is True
    assert [batch.id for batch in last.data] == five_batches[4:]
    assert (last.first_id, last.last_id, last.has_more) == (five_batches[4], five_batches[4], False)


def test_before_id_pages_toward_newer_batches(client: anthropic.Anthropic, five_batches: list[str]) -> None:
    # When the pages before the oldest and before the third newest are listed
    middle = client.messages.batches.list(limit=2, before_id=five_batches[4])
    first = client.messages.batches.list(limit=2, before_id=five_batches[2])

    # Then each holds the batches just newer than its cursor, newest first
    assert [batch.id for batch in middle.data] == five_batches[2:4]
    assert middle.has_more is True
    assert [batch.id for batch in first.data] == five_batches[:2]
    assert first.has_more is False


def test_auto_pagination_walks_every_page_newest_first(
    client: anthropic.Anthropic, control: EmulatorControl, five_batches: list[str]
) -> None:
    # When the SDK iterates a list of pages of two
    listed = [batch.id for batch in client.messages.batches.list(limit=2)]

    # Then it has seen every batch once, newest first, over three pages
    assert listed == five_batches
    assert control.counters()["http_requests"]["list"] == 3


def test_list_answers_twenty_batches_by_default(client: anthropic.Anthropic) -> None:
    # Given 21 batches
    for _ in range(21):
        client.messages.batches.create(requests=requests_for(1))

    # When the list is asked for without a limit
    page = client.messages.batches.list()

    # Then the page holds 20 and says more follow
    assert len(page.data) == 20
    assert page.has_more is True


def test_an_empty_list_has_no_data_and_no_cursors(client: anthropic.Anthropic) -> None:
    page = client.messages.batches.list()

    assert (page.data, page.has_more, page.first_id, page.last_id) == ([], False, None, None)


@pytest.mark.parametrize("limit", [0, 1001])
def test_a_limit_outside_1_to_1000_answers_400(client: anthropic.Anthropic, limit: int) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.list(limit=limit)

    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith("limit: ")


@pytest.mark.parametrize("limit", [1, 1000])
def test_limits_at_both_ends_of_the_range_are_accepted(
    client: anthropic.Anthropic, five_batches: list[str], limit: int
) -> None:
    page = client.messages.batches.list(limit=limit)

    assert [batch.id for batch in page.data] == five_batches[:limit]


def test_both_cursors_at_once_answer_400(client: anthropic.Anthropic, five_batches: list[str]) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.list(after_id=five_batches[0], before_id=five_batches[4])

    assert caught.value.body["error"]["type"] == "invalid_request_error"


# --- cancel -----------------------------------------------------------------------------


def test_cancel_goes_canceling_then_ended_with_the_unprocessed_requests_canceled(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a batch that would take a minute, on an emulator that cancels in 0.2 s
    client = make_client(start_emulator(latency=60, cancel_latency=0.2))
    batch = client.messages.batches.create(requests=requests_for(4))

    # When it is canceled at once
    canceling = client.messages.batches.cancel(batch.id)

    # Then it is canceling, its counts still frozen, and it ends with every request canceled
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert counts(canceling) == NO_COUNTS | {"processing": 4}
    assert (canceling.ended_at, canceling.results_url) == (None, None)
    ended = wait_until_ended(client, batch.id)
    assert counts(ended) == NO_COUNTS | {"canceled": 4}
    assert ended.cancel_initiated_at == canceling.cancel_initiated_at
    assert set(outcomes(client, batch.id).values()) == {"canceled"}


def test_a_cancel_half_way_keeps_the_results_processed_before_it(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a batch of 20 requests processed in order over 2 s
    latency = 2.0
    client = make_client(start_emulator(latency=latency, cancel_latency=0.1))
    batch = client.messages.batches.create(requests=requests_for(20))

    # When it is canceled about half-way
    wait_for(lambda: (datetime.now(UTC) - batch.created_at).total_seconds() >= latency / 2, what="half-way")
    canceling = client.messages.batches.cancel(batch.id)
    ended = wait_until_ended(client, batch.id)

    # Then the requests processed before the cancel succeeded and the rest were canceled
    assert canceling.cancel_initiated_at is not None
    share = (canceling.cancel_initiated_at - batch.created_at).total_seconds() / latency
    assert ended.request_counts.succeeded == pytest.approx(20 * share, abs=1)
    assert 0 < ended.request_counts.succeeded < 20
    assert ended.request_counts.succeeded + ended.request_counts.canceled == 20
    assert list(outcomes(client, batch.id).values()).count("canceled") == ended.request_counts.canceled


def test_canceling_an_ended_batch_answers_400(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # Given an ended batch
    batch = client.messages.batches.create(requests=requests_for(1))
    control.end([batch.id])

    # When it is canceled
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.cancel(batch.id)

    # Then the API refuses, and the batch is unchanged
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert counts(client.messages.batches.retrieve(batch.id)) == NO_COUNTS | {"succeeded": 1}


# --- delete and 404 ---------------------------------------------------------------------


def test_only_an_ended_batch_can_be_deleted(client: anthropic.Anthropic) -> None:
    # Given a batch in progress
    batch = client.messages.batches.create(requests=requests_for(1))

    # When it is deleted, in progress and then canceling
    with pytest.raises(anthropic.BadRequestError) as in_progress:
        client.messages.batches.delete(batch.id)
    client.messages.batches.cancel(batch.id)
    with pytest.raises(anthropic.BadRequestError) as canceling:
        client.messages.batches.delete(batch.id)

    # Then both are refused and the batch is still there
    assert in_progress.value.body["error"]["type"] == "invalid_request_error"
    assert canceling.value.body["error"]["type"] == "invalid_request_error"
    assert client.messages.batches.retrieve(batch.id).id == batch.id


def test_a_deleted_batch_answers_404_everywhere(
    client: anthropic.Anthropic, control: EmulatorControl, http: httpx2.Client
) -> None:
    # Given an ended batch
    batch = client.messages.batches.create(requests=requests_for(2))
    control.end([batch.id])

    # When it is deleted
    deleted = client.messages.batches.delete(batch.id)

    # Then the API answers 200 message_batch_deleted, and the batch is gone from every endpoint
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    for call in (client.messages.batches.retrieve, client.messages.batches.cancel, client.messages.batches.delete):
        with pytest.raises(anthropic.NotFoundError):
            call(batch.id)
    results = http.get(f"/v1/messages/batches/{batch.id}/results", headers=api_headers())
    assert results.status_code == 404
    assert api_error(results).error.type == "not_found_error"
    assert batch.id not in [listed.id for listed in client.messages.batches.list()]


@pytest.mark.parametrize("call", ["retrieve", "cancel", "delete"])
def test_an_unknown_batch_id_answers_404_through_the_sdk(client: anthropic.Anthropic, call: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        getattr(client.messages.batches, call)("msgbatch_01NoSuchBatchNoSuchBatchXY")

    error = caught.value
    assert error.status_code == 404
    assert error.body["error"]["type"] == "not_found_error"
    assert error.request_id == error.body["request_id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/messages/batches/msgbatch_01NoSuchBatchNoSuchBatchXY"),
        ("GET", "/v1/messages/batches/msgbatch_01NoSuchBatchNoSuchBatchXY/results"),
        ("POST", "/v1/messages/batches/msgbatch_01NoSuchBatchNoSuchBatchXY/cancel"),
        ("DELETE", "/v1/messages/batches/msgbatch_01NoSuchBatchNoSuchBatchXY"),
    ],
)
def test_an_unknown_batch_id_answers_404_on_every_endpoint(http: httpx2.Client, method: str, path: str) -> None:
    response = http.request(method, path, headers=api_headers())

    assert response.status_code == 404
    assert api_error(response).error.type == "not_found_error"


# --- expiry, archival, restart ----------------------------------------------------------


def test_a_batch_not_done_by_its_expiry_ends_with_its_requests_expired(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a batch that would take a minute but expires after 0.3 s
    client = make_client(start_emulator(latency=60, expiry=0.3))
    batch = client.messages.batches.create(requests=requests_for(4))

    # When its expiry passes
    ended = wait_until_ended(client, batch.id)

    # Then it ended at its expires_at, every unprocessed request expired
    assert ended.ended_at == ended.expires_at
    assert counts(ended) == NO_COUNTS | {"expired": 4}
    assert set(outcomes(client, batch.id).values()) == {"expired"}


def test_the_control_endpoint_expires_a_batch_now(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    # Given a batch in progress
    batch = client.messages.batches.create(requests=requests_for(3))

    # When the control endpoint expires it
    assert control.expire([batch.id]) == [batch.id]

    # Then it has ended with its requests expired
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert counts(ended) == NO_COUNTS | {"expired": 3}


def test_an_archived_batch_stays_visible_but_its_results_are_gone(
    client: anthropic.Anthropic, control: EmulatorControl, http: httpx2.Client
) -> None:
    # Given an ended batch
    batch = client.messages.batches.create(requests=requests_for(2))
    control.end([batch.id])

    # When its retention passes (the control endpoint archives it now)
    assert control.archive([batch.id]) == [batch.id]

    # Then the batch is still there with archived_at set, and its results answer 404
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.processing_status == "ended"
    assert archived.archived_at is not None
    response = http.get(f"/v1/messages/batches/{batch.id}/results", headers=api_headers())
    assert response.status_code == 404
    assert api_error(response).error.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.results(batch.id)


def test_results_are_archived_once_the_retention_has_passed(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator that ends batches at once and keeps results for 0.4 s
    client = make_client(start_emulator(latency=0.05, retention=0.4))
    batch = client.messages.batches.create(requests=requests_for(1))

    # When the retention passes
    archived = wait_for(
        lambda: (found := client.messages.batches.retrieve(batch.id)).archived_at and found,
        what="the batch to be archived",
    )

    # Then archived_at is set at the end of the retention, and the results are gone
    assert archived.processing_status == "ended"
    assert archived.archived_at is not None
    assert (archived.archived_at - archived.created_at).total_seconds() == pytest.approx(0.4, abs=0.001)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.results(batch.id)


def test_state_survives_a_restart_with_a_database_file(tmp_path: Path, make_client: MakeClient) -> None:
    # Given an emulator on a database file with one ended batch and one still in progress
    settings = EmulatorSettings(port=0, latency=HOLD_LATENCY, db=tmp_path / "emulator.sqlite3")
    with Emulator(settings) as first:
        client = make_client(first)
        done = client.messages.batches.create(requests=requests_for(3, prefix="done"))
        open_ = client.messages.batches.create(requests=requests_for(2, prefix="open"))
        EmulatorControl(first.url).end([done.id])
        results_before = outcomes(client, done.id)

    # When a new emulator starts on the same database
    with Emulator(settings) as second:
        client = make_client(second)

        # Then both batches are there, the ended one with its results
        assert [batch.id for batch in client.messages.batches.list()] == [open_.id, done.id]
        assert counts(client.messages.batches.retrieve(done.id)) == NO_COUNTS | {"succeeded": 3}
        assert outcomes(client, done.id) == results_before
        # And the open one is still in progress, and ends in the new emulator
        assert client.messages.batches.retrieve(open_.id).processing_status == "in_progress"
        EmulatorControl(second.url).end([open_.id])
        assert outcomes(client, open_.id) == {"open-0000": "succeeded", "open-0001": "succeeded"}
