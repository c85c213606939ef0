"""`make demo` runs records mode: a pipeline is put, a CSV of reviews dropped into its inbox
folder comes back as outputs.csv, printed as a table with one row per review in the CSV's
order, then the manifest's counts and cost."""

import re
from typing import Any

import pytest

from batchdrop_local import demo

pytestmark = pytest.mark.e2e


def test_demo_prints_one_classified_row_per_review_in_the_csv_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # the demo sets it; restored after the test
    monkeypatch.setenv("COLUMNS", "160")  # the table's width, as a terminal would give it
    # Given the sample CSV the demo drops (12 reviews, quoted commas and quotes in its fields)
    ids = demo.sample_ids()
    assert len(ids) == 12

    # When the demo runs
    assert demo.main() == 0
    out = capsys.readouterr().out

    # Then it says the answers come from the emulator, and puts the pipeline before the file
    assert "not from Claude" in out
    assert "pipelines/reviews.yaml" in out
    assert "inbox/reviews/reviews.csv" in out
    # ...the table has the answer's columns and one row per review, in the CSV's order
    lines = out.splitlines()
    [head] = [line for line in lines if line.startswith("id ")]
    assert re.split(r"\s{2,}", head) == ["id", "product", "status", "sentiment", "confidence", "reason"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines if line.startswith("review-")]
    assert [row[0] for row in rows] == ids
    by_id = {row[0]: row for row in rows}
    for row in rows:
        assert row[2] == "succeeded"
        assert row[3] in {"positive", "negative", "mixed"}
        assert 0 <= float(row[4]) <= 1
    # ...the answers are the responder's reading of each review's words, kept fields beside them
    assert by_id["review-001"][1:4] == ["blender", "succeeded", "positive"]
    assert by_id["review-008"][1] == "tablet, kids' edition"
    assert by_id["review-002"][3:] == ["negative", "0.75", "negative words: never, stopped"]
    assert by_id["review-009"][3:] == ["mixed", "0.5", "positive words: sturdy; negative words: confusing"]
    # ...then the manifest's counts, its outputs and the cost
    assert "12 requests, 12 succeeded, 0 errored, 0 expired, 0 rejected" in out
    assert re.search(r"outputs: results/j[0-9a-f]{24}/outputs\.csv, results/j[0-9a-f]{24}/outputs\.jsonl", out)
    assert re.search(
        r"report: results/(j[0-9a-f]{24})/report\.html \(one HTML page: `batchdrop report \1 --open`\)", out
    )
    assert re.search(r"cost \$[0-9.]+ at the batch price; \$[0-9.]+ at the standard price", out)


def _manifest(status: str = "COMPLETED") -> dict[str, Any]:
    return {"job_id": "j" + "0" * 24, "status": status, "reason": "why"}


@pytest.mark.parametrize(
    ("status", "ids_in_rows", "code"),
    [
        ("COMPLETED", ["a", "b", "c"], 0),
        ("COMPLETED_WITH_ERRORS", ["a", "b", "c"], 1),
        ("FAILED", [], 1),
        ("COMPLETED", ["a", "c"], 1),  # a review without its row
        ("COMPLETED", ["a", "c", "b"], 1),  # rows out of the CSV's order
        ("COMPLETED", ["a", "b", "c", "c"], 1),  # a review with two rows
    ],
)
def test_the_demo_exits_0_only_for_a_completed_job_with_one_row_per_review_in_order(
    status: str, ids_in_rows: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    header = ["id", "product", "status"]
    rows = [[cid, "p", "succeeded"] for cid in ids_in_rows]
    assert demo._verdict(_manifest(status), header, rows, ["a", "b", "c"]) == code
    said = capsys.readouterr().out
    assert ("demo failed:" in said) == bool(code)
