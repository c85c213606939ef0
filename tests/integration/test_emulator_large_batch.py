"""The emulator at the API's limits: a 100,000-request, 256 MB create is accepted and its
results served without the emulator's memory growing with the batch."""

from pathlib import Path

import pytest

from batchdrop_local.synth import write_requests
from bench.emulator_large_batch import MB, measure

# The emulator idles at ~40 MB and measured 56 MB at every stage of this batch; a body
# parsed whole would take ~600 MB. The bound catches any stage that starts buffering.
PEAK_RSS_BOUND_MB = 200


@pytest.mark.slow
def test_a_full_size_batch_is_accepted_and_served_in_bounded_memory(tmp_path: Path) -> None:
    # Given a create body at both limits: 100,000 requests, just under 256 MB
    body = tmp_path / "batch.json"
    size = write_requests(body, 100_000, 256 * MB - 1, shape="batch")
    assert 255 * MB < size < 256 * MB

    # When the emulator (its own process) takes it, ends it and serves its results
    figures = measure(body)

    # Then every request comes back, and no stage held the batch in memory
    assert figures["results_lines"] == 100_000
    for stage in ("create", "finalize", "results"):
        assert figures[f"{stage}_peak_mb"] < PEAK_RSS_BOUND_MB, (stage, figures)
