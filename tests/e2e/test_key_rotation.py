"""A rotated or revoked key on the local stack, with warm functions that hold the old key in
their cache (POWERTOOLS_PARAMETERS_MAX_AGE is the template's 300 s): the emulator stands for
the Anthropic Console (it accepts one key at a time) and the stack's secret for Secrets
Manager. Rotating with no wait at all costs one refused call per function and nothing else;
a key refused after a fresh read fails the checker's tick and the submit, and a working key
put into the secret resumes the pipeline with one batch per shard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import CHECKER, SUBMIT, run_to_the_end, shard_states, upload

OLD_KEY = "sk-ant-api03-rotation-old-key-AA"
NEW_KEY = "sk-ant-api03-rotation-new-key-AA"
NEWER_KEY = "sk-ant-api03-rotation-newer-key-AA"

# This module's stack and runner (tests/e2e/conftest.py)
STACK = {"api_key": OLD_KEY, "latency": 0.05}
RUNNER = {"tick_seconds": 0.2, "retry_delay_seconds": 0.05}
FRESH_EMULATOR = True


def console_accepts(stack: LocalStack, key: str) -> None:
    """The emulator takes `key` and refuses every other (the old one is revoked at once)."""
    emulator = stack.emulator
    assert emulator is not None
    emulator.settings = dataclasses.replace(emulator.settings, api_key=key)


def put_secret(stack: LocalStack, key: str) -> None:
    stack.client("secretsmanager").put_secret_value(SecretId=stack.secret_arn, SecretString=key)


def test_a_rotated_key_is_used_by_warm_functions_and_a_refused_one_fails_loudly_until_fixed(
    stack: LocalStack, runner: LocalRunner, tmp_path: Path
) -> None:
    # Given both functions warm, their cache holding the old key
    first = upload(stack, tmp_path, "inbox/before.jsonl", requests=2)
    assert run_to_the_end(stack, runner, first)["status"] == "COMPLETED"

    # When the key is rotated and the old one revoked at once, well within the max age
    put_secret(stack, NEW_KEY)
    console_accepts(stack, NEW_KEY)
    seen = len(runner.invocations)
    second = upload(stack, tmp_path, "inbox/after.jsonl", requests=2)

    # Then the next job runs through with the new key, without a failed invocation
    assert run_to_the_end(stack, runner, second)["status"] == "COMPLETED"
    assert [i.error for i in runner.invocations[seen:] if i.error] == []

    # When the key is revoked and the secret still holds it
    console_accepts(stack, NEWER_KEY)
    creates = stack.emulator_control().counters()["creates_accepted"]
    seen = len(runner.invocations)
    third = upload(stack, tmp_path, "inbox/refused.jsonl", requests=2)
    runner.deliver_pending()
    tick = runner.tick()

    # Then the submit failed every attempt, the tick failed, each naming the refused key, and
    # no batch was made: the job's shard waits, PENDING
    failed = {(i.function_logical_id, i.error) for i in runner.invocations[seen:] if i.error}
    assert {name for name, _ in failed} == {SUBMIT, CHECKER}
    assert all("the API refused the key" in str(error) for _, error in failed)
    assert tick.error is not None
    assert shard_states(stack, third) == ["PENDING"]
    assert stack.emulator_control().counters()["creates_accepted"] == creates

    # When a working key is put into the secret, and nothing else is done
    put_secret(stack, NEWER_KEY)

    # Then the job completes with one batch for its one shard
    assert run_to_the_end(stack, runner, third)["status"] == "COMPLETED"
    assert stack.emulator_control().counters()["creates_accepted"] == creates + 1
