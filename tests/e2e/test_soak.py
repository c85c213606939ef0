"""A short soak (batchdrop_local.soak; `make soak` runs a long one): jobs of several shards
through the local stack while the emulator injects every fault it has, then the audit:
every request exactly once in results/, each sent once per attempt, no batch a manifest
does not name. The test also checks that faults were injected and requests retried, so it
cannot pass on a quiet provider."""

from __future__ import annotations

import pytest

from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.soak import run_soak
from batchdrop_local.stack import LOCAL_API_KEY, LocalStack

SEED = 3

# A failing invocation (an injected fault) flushes no metric, and Powertools warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

# This module's stack (tests/e2e/conftest.py): an emulator of its own settings, seeded
STACK = {"emulator_settings": EmulatorSettings(port=0, latency=0.3, seed=SEED, api_key=LOCAL_API_KEY)}


def test_a_short_soak_under_every_fault_accounts_for_each_request_once_and_submits_nothing_twice(
    stack: LocalStack,
) -> None:
    # Given 4 files of 40 requests (shards of 25), on a provider injecting faults
    # When they are uploaded (some events twice) and the pipeline runs until every job is done
    report = run_soak(4, 40, SEED, stack=stack, shard_requests=25, timeout=50)
    print(report.table())  # pytest -s shows the figures

    # Then every invariant of the audit holds
    assert report.ok, report.table()
    assert report.audit.finished == report.audit.jobs == 4
    assert report.audit.requests == sum(report.audit.outcomes.values()) == 160
    assert report.duplicates == 0
    assert report.audit.creates_accepted == report.audit.batches_created
    assert report.audit.requests_sent == 160 + report.audit.requests_retried
    # ... and they held under faults: several kinds were injected, and requests were retried
    injected = {kind for kind, times in report.faults_injected.items() if times}
    assert len(injected) >= 4, report.faults_injected
    assert injected & {"lost_create_response", "http_500", "http_529", "stall"}, report.faults_injected
    assert report.audit.requests_retried > 0
    assert report.duplicate_events > 0
    assert report.wall_seconds < 60
