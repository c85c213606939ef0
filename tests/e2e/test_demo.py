"""`make demo` runs a batch of reviews through the emulator and prints every result."""

import json
from pathlib import Path

import pytest

from batchdrop_local import demo


def test_demo_classifies_every_sample_review(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # the demo sets it; restored after the test
    # Given the sample file the demo submits
    lines = [json.loads(line) for line in Path(demo.SAMPLE).read_text().splitlines() if line.strip()]

    # When the demo runs
    assert demo.main() == 0
    out = capsys.readouterr().out

    # Then it says the answers come from the emulator, every review has a label, and the
    # manifest's counts and cost are shown
    assert "not from Claude" in out
    assert f"{len(lines)} requests, {len(lines)} succeeded" in out
    assert "at the batch price" in out
    for request in lines:
        row = next(row for row in out.splitlines() if row.startswith(request["custom_id"]))
        assert row.split()[1] in {"POSITIVE", "NEGATIVE", "NEUTRAL"}
