"""The records intake bench's input and judging (bench/records.py), without a stack: its CSV
is what people export and every record of it renders; its goals are judged from the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchdrop.domain.record_readers import Rejection, read_csv
from bench import records
from bench.table import Figure

pytestmark = pytest.mark.unit


def test_the_csv_is_about_its_size_with_the_edges_people_export(tmp_path: Path) -> None:
    # Given the bench's CSV of 500 reviews in about 500 KB
    source = tmp_path / "reviews.csv"
    size = records.write_reviews(source, 500, 500_000)
    data = source.read_bytes()
    # Then it is within a tenth of its size, in CRLF, with quoted quotes and commas, line
    # breaks inside fields, non-ASCII text and empty fields
    assert abs(size - 500_000) < 50_000
    assert data.count(b"\r\n") > 500
    assert b'""' in data
    assert "é".encode() in data
    read = [item for _, item in read_csv([data])]
    assert len(read) == 500
    assert not any(isinstance(item, Rejection) for item in read)
    assert any("\r\n" in item["review"] for item in read if isinstance(item, dict))
    assert any(item["title"] == "" for item in read if isinstance(item, dict))


def test_every_record_renders_into_the_native_file(tmp_path: Path) -> None:
    # Given the bench's CSV, When it is rendered into native mode's request lines
    source, rendered = tmp_path / "reviews.csv", tmp_path / "requests.jsonl"
    records.write_reviews(source, 200, 200_000)
    # Then there is one line per record
    assert records.write_rendered(source, rendered) == 200
    assert rendered.read_bytes().count(b"\n") == 200


@pytest.mark.parametrize(
    ("ours", "native", "rss", "met"), [(14.0, 10.0, 200.0, (True, True)), (16.0, 10.0, 300.0, (False, False))]
)
def test_time_is_judged_against_native_and_rss_against_256_mb(
    ours: float, native: float, rss: float, met: tuple[bool, bool]
) -> None:
    # Given records mode's and native mode's figures, When they are judged
    judged: list[Figure] = records.figures(
        "label", {"seconds": ours, "peak_rss_mb": rss}, {"seconds": native, "peak_rss_mb": 100.0}
    )
    # Then the time is met within 1.5x native's, the peak RSS under 256 MB
    assert tuple(figure.met for figure in judged) == met
    assert judged[0].ratio == pytest.approx(native / ours)
