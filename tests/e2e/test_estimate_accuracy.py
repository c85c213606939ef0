"""The estimate every job gets before sending, against what the job then cost, on the demo's
data (the sample reviews through the sample pipeline, answered by the demo's deterministic
responder on the local stack). A pipeline's first job expects half of max_tokens as output,
an over-estimate here; its next job expects the share the first one used, and lands within
15% of the actual cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchdrop_local import demo
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack

pytestmark = pytest.mark.e2e

WITHIN = 0.15


def test_on_the_demo_data_the_estimate_is_within_15_percent_once_the_pipeline_has_a_finished_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    quiet = {"LogLevel": "WARNING"}
    with (
        LocalStack(latency=0.5, responder=demo.RESPONDER, parameters=quiet) as stack,
        LocalRunner(stack, tick_seconds=0.5),
    ):
        client = demo.local_client(stack)
        client.put_pipeline(demo.PIPELINE)
        # Given the demo's reviews dropped once, and the job finished
        first = client.submit(demo.SAMPLE, pipeline=demo.PIPELINE_NAME)
        before = demo.wait_for_manifest(stack, first.job_id, timeout=demo.TIMEOUT_SECONDS)
        # When they are dropped again (a new version of the key): a second job of the same pipeline
        second = client.submit(demo.SAMPLE, pipeline=demo.PIPELINE_NAME)
        assert second.job_id != first.job_id
        after = demo.wait_for_manifest(stack, second.job_id, timeout=demo.TIMEOUT_SECONDS)

    for manifest in (before, after):
        assert manifest["status"] == "COMPLETED"
        estimate = manifest["estimate"]
        # Both counted every request with the emulator's count_tokens, and stayed under their ceiling
        assert estimate["input"] == "counted"
        assert estimate["within_max"] is True
        assert estimate["actual_batch_usd"] == manifest["cost"]["batch_usd"]
    # Then the first job expected half of max_tokens (more than the answers took: an over-estimate)
    assert before["estimate"]["output_expected"].endswith("(default share)")
    assert before["estimate"]["error"] < -WITHIN
    # ...and the second the share the first used, its expected cost within 15% of the actual
    assert "earlier jobs" in after["estimate"]["output_expected"]
    assert abs(after["estimate"]["error"]) <= WITHIN
    expected = Decimal(after["estimate"]["cost_usd"]["batch_cached_expected"])
    actual = Decimal(after["cost"]["batch_usd"])
    assert abs(actual / expected - 1) <= Decimal(str(WITHIN))
