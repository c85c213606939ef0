"""No request is ever submitted twice, whatever happens to a create (docs/guarantees.md):
a lost response, a stall past the client's timeout, a full queue, a 500. Each test
injects the fault in the emulator, runs the pipeline on the local stack, and checks from
the emulator's counters and the result files that every request went out once and came
back once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchdrop.domain.timings import Timings
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import SUBMIT, result_ids, run_to_the_end, shard_states, upload, with_settings

# A submit invocation that fails on purpose flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"latency": 0.3}
RUNNER = {"tick_seconds": 0.5, "retry_delay_seconds": 0.1}
FRESH_EMULATOR = True  # counters and custom_ids start from zero in each test, faults lifted after it


def _assert_exactly_once(stack: LocalStack, manifest: dict[str, Any], requests: int) -> None:
    control = stack.emulator_control()
    assert manifest["status"] == "COMPLETED"
    assert len(manifest["batches"]) == 1
    assert control.counters()["creates_accepted"] == 1
    assert control.custom_ids(minimum=2) == {}
    ids = result_ids(stack, manifest)
    assert len(ids) == requests
    assert set(ids.values()) == {1}
    assert manifest["counts"]["succeeded"] == requests


def test_a_lost_create_response_is_settled_by_adopting_the_batch_not_by_sending_again(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a create that the provider accepts but whose response never arrives
    stack.emulator_control().set_faults({"lose_create_response": {"rate": 1, "times": 1}})
    job_id = upload(stack, tmp_path, "inbox/lost/requests.jsonl", 37)

    # When the submit function fails and Lambda retries it
    runner.deliver_pending()
    attempts = runner.invocations_of(SUBMIT)
    assert [invocation.error is None for invocation in attempts] == [False, True]
    assert shard_states(stack, job_id) == ["UNKNOWN"]
    assert stack.emulator_control().counters()["creates_accepted"] == 1  # the retry sent nothing

    # Then the checker finds the batch, and the job completes with every request once
    manifest = run_to_the_end(stack, runner, job_id)
    _assert_exactly_once(stack, manifest, 37)


def test_a_create_stalled_past_the_client_timeout_is_adopted(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a create that answers only after the client has given up
    with_settings(stack, monkeypatch, timings=Timings(create_timeout=1.0))
    stack.emulator_control().set_faults({"stalls": [{"endpoint": "create", "seconds": 3, "rate": 1, "times": 1}]})
    job_id = upload(stack, tmp_path, "inbox/stalled/requests.jsonl", 23)

    # When the submit function times out on it
    runner.deliver_pending()
    assert shard_states(stack, job_id) == ["UNKNOWN"]

    # Then the batch it made is adopted: one batch, every request once
    manifest = run_to_the_end(stack, runner, job_id)
    _assert_exactly_once(stack, manifest, 23)


def test_a_full_queue_defers_the_shard_and_the_checker_submits_it_later(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given a processing queue smaller than the file
    control = stack.emulator_control()
    control.set_faults({"queue_limit": 10})
    job_id = upload(stack, tmp_path, "inbox/queue/requests.jsonl", 29)

    # When the file arrives, and the checker ticks while the queue is still full
    runner.deliver_pending()
    assert all(invocation.error is None for invocation in runner.invocations_of(SUBMIT))
    assert shard_states(stack, job_id) == ["PENDING"]
    assert runner.tick().error is None
    assert shard_states(stack, job_id) == ["PENDING"]
    assert control.counters()["creates_accepted"] == 0

    # Then once the queue has room the checker submits the shard, and the job completes
    control.set_faults({})
    manifest = run_to_the_end(stack, runner, job_id)
    _assert_exactly_once(stack, manifest, 29)


def test_a_500_on_create_is_resubmitted_after_the_grace_period_once_no_batch_is_found(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a create answered 500 (the emulator made no batch) and a short grace period
    with_settings(stack, monkeypatch, timings=Timings(grace=2.0))
    control = stack.emulator_control()
    control.set_faults({"http_errors": [{"endpoint": "create", "status": 500, "rate": 1, "times": 1}]})
    job_id = upload(stack, tmp_path, "inbox/error/requests.jsonl", 31)

    # When the submit function gets the 500, and a checker ticks within the grace period
    runner.deliver_pending()
    assert shard_states(stack, job_id) == ["UNKNOWN"]
    assert runner.tick().error is None
    assert shard_states(stack, job_id) == ["UNKNOWN"]  # not resent: a batch may yet show up

    # Then after the grace period the shard is submitted again, once, and the job completes
    manifest = run_to_the_end(stack, runner, job_id)
    _assert_exactly_once(stack, manifest, 31)
    assert manifest["batches"][0]["attempts"][0]["creates"] == 2
