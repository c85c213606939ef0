"""The job's report page (domain/report.py): what each part shows, that data never becomes
markup, that it loads nothing, and that its charts are well-formed SVG."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from batchdrop.domain.jobs import report_key
from batchdrop.domain.manifest import build_manifest
from batchdrop.domain.report import (
    REJECTED_SHOWN,
    SLOWEST_SHOWN,
    TIMELINE_SHARDS,
    RejectedEntry,
    RejectedSample,
    _duration,
    rejected_entries,
    render_report,
)
from batchdrop.domain.usage import Usage

pytestmark = pytest.mark.unit

JOB = "j0123456789abcdef01234567"
HOSTILE = "<script>alert('x')</script>"
SOURCE = {"bucket": "batchdrop-bucket", "key": "inbox/reviews.jsonl", "version_id": "v1"}


def attempt(number: int, requests: int, counts: dict[str, int], retried: int, ended_at: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": number,
        "batch_id": f"msgbatch_{number:02d}",
        "requests": requests,
        "counts": counts,
        "retried": retried,
    }
    if ended_at is not None:
        entry["ended_at"] = ended_at
    return entry


def every_outcome(**overrides: Any) -> dict[str, Any]:
    """A job with every outcome, rejected lines, a retry, cache writes and reads, two models."""
    arguments: dict[str, Any] = {
        "job_id": JOB,
        "source": SOURCE,
        "status": "COMPLETED_WITH_ERRORS",
        "requested": 20,
        "rejected": 3,
        "counts": {"succeeded": 12, "errored": 3, "canceled": 1, "expired": 4},
        "batches": [
            {
                "shard": 0,
                "requests": 10,
                "counts": {"succeeded": 6, "errored": 1, "expired": 3},
                "attempts": [
                    attempt(1, 10, {"succeeded": 5, "errored": 1, "expired": 4}, 4, "2026-11-23T10:20:00Z"),
                    attempt(2, 4, {"succeeded": 1, "expired": 3}, 0, "2026-11-23T10:50:00.000Z"),
                ],
            },
            {
                "shard": 1,
                "requests": 10,
                "counts": {"succeeded": 6, "errored": 2, "canceled": 1, "expired": 1},
                "attempts": [
                    attempt(
                        1, 10, {"succeeded": 6, "errored": 2, "canceled": 1, "expired": 1}, 0, "2026-11-23T10:05:00Z"
                    )
                ],
            },
        ],
        "usage_by_model": {
            "claude-haiku-4-5": Usage(
                input_tokens=120_000,
                output_tokens=9_000,
                cache_creation_input_tokens=4_000,
                cache_read_input_tokens=80_000,
            ),
            "claude-sonnet-4-5": Usage(input_tokens=1_000, output_tokens=500),
        },
        "result_keys": [f"results/{JOB}/results-00000.jsonl"],
        "rejected_key": f"errors/{JOB}/rejected.jsonl",
        "created_at": "2026-11-23T10:00:00.000Z",
        "completed_at": "2026-11-23T11:00:00.000Z",
        "report_key": report_key(JOB),
    }
    arguments.update(overrides)
    manifest = build_manifest(**arguments)
    manifest["estimate"] = {
        "cost_usd": {"batch_cached_expected": "0.050000", "batch_max": "0.200000"},
        "actual_batch_usd": manifest["cost"]["batch_usd"],
        "error": -0.25,
        "within_max": True,
    }
    return manifest


SAMPLE = RejectedSample(
    (
        RejectedEntry(4, "bad id", 'custom_id: may hold only letters, digits, got "bad id"'),
        RejectedEntry(9, None, "not JSON: Expecting value"),
        RejectedEntry(11, HOSTILE, f"custom_id: got {HOSTILE!r}; params.model: missing"),
    ),
    more=False,
)


class _Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and its text as a browser reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> _Tags:
    tags = _Tags()
    tags.feed(page)
    tags.close()
    return tags


def svgs(page: str) -> list[ET.Element]:
    """Each <svg> element of the page, parsed as XML: it raises if one is not well-formed."""
    found = re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)
    return [ET.fromstring(svg) for svg in found]


def test_a_job_with_every_outcome_shows_its_counts_tokens_cost_estimate_and_rejected_lines() -> None:
    # Given a job with every outcome, rejected lines, a retry and an estimate
    manifest = every_outcome()
    # When its report is rendered
    page = render_report(manifest, SAMPLE)
    text = " ".join(parsed(page).text)
    # Then the page names the job, its status and source
    assert JOB in text
    assert "COMPLETED_WITH_ERRORS" in text
    assert "s3://batchdrop-bucket/inbox/reviews.jsonl" in text
    # And each outcome's count, with the rejected lines
    for name, count in (("succeeded", 12), ("errored", 3), ("expired", 4), ("canceled", 1), ("rejected", 3)):
        assert re.search(rf"{name}\s+{count}\b", text), name
    # And the tokens by kind
    for figure in ("121,000", "9,500", "4,000", "80,000"):
        assert figure in text
    # And the cost at both prices, what batching and caching saved, and the estimate beside it
    cost = manifest["cost"]
    for figure in (
        cost["batch_usd"],
        cost["standard_usd"],
        cost["saved_vs_standard_usd"],
        cost["saved_by_caching_usd"],
    ):
        assert f"${figure}" in text
    assert "$0.050000" in text
    assert "$0.200000" in text
    assert "-25.0%" in text
    # And the retries, and the rejected lines with their reasons
    assert "final at attempt 2" in text
    assert "requests sent again (retries)" in text
    assert "params.model: missing" in text
    assert "not JSON: Expecting value" in text
    # And every chart is well-formed SVG: outcomes, tokens, cost, estimate and the timeline
    assert len(svgs(page)) == 5


def test_no_string_from_data_becomes_markup() -> None:
    # Given a manifest whose every free text holds markup, and a rejected line whose custom_id is a script
    manifest = every_outcome(
        source={"bucket": "b", "key": f"inbox/{HOSTILE}.jsonl", "version_id": '"><img src=x onerror=alert(1)>'},
        usage_by_model={f"model-{HOSTILE}": Usage(input_tokens=10, output_tokens=1)},
    )
    manifest["batches"][0]["attempts"][0]["batch_id"] = f"msgbatch_{HOSTILE}"
    manifest["reason"] = HOSTILE
    # When its report is rendered
    page = render_report(manifest, SAMPLE)
    tags = parsed(page)
    # Then no script or image element is made, no attribute but the page's own
    assert {tag for tag, _ in tags.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "section", "h1", "h2", "p", "table",
        "tr", "th", "td", "code", "span", "div", "strong", "svg", "line", "text", "rect",
    }  # fmt: skip
    assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs)
    # And the script stays text, as written
    assert HOSTILE in " ".join(tags.text)
    assert "&lt;script&gt;" in page
    assert "<script" not in page
    for svg in svgs(page):  # a batch id in a bar's tooltip is escaped for XML too
        assert svg.tag == "svg"


def test_the_page_loads_nothing() -> None:
    # Given a report
    page = render_report(every_outcome(), SAMPLE)
    tags = parsed(page)
    # Then nothing in it names anything to load: no script, stylesheet, image, font or frame
    assert not [(tag, attrs) for tag, attrs in tags.tags if tag in ("script", "link", "img", "iframe", "object")]
    assert not [attrs for _, attrs in tags.tags if {"src", "href", "xlink:href"} & set(attrs)]
    assert "url(" not in page
    assert "@import" not in page
    assert "http://" not in page
    assert "https://" not in page
    # And its policy forbids loading anything, should something slip in
    policies = [attrs["content"] for tag, attrs in tags.tags if tag == "meta" and attrs.get("http-equiv")]
    assert policies == ["default-src 'none'; style-src 'unsafe-inline'"]


def test_an_empty_job_renders_without_charts_to_divide_by_zero() -> None:
    # Given a job that sent nothing and recorded no batch (a canceled one, or a manifest of an older version)
    manifest = build_manifest(
        job_id=JOB,
        source=SOURCE,
        status="CANCELED",
        requested=0,
        rejected=0,
        counts={},
        batches=[],
        usage_by_model={},
        result_keys=[],
        rejected_key=None,
        created_at="2026-11-23T10:00:00.000Z",
        completed_at="2026-11-23T10:00:01.000Z",
    )
    # When its report is rendered
    page = render_report(manifest)
    text = " ".join(parsed(page).text)
    # Then it says so, in every part
    assert "CANCELED" in text
    assert "0 requests sent" in text
    assert "nothing to draw" in text
    assert "No line was rejected" in text
    assert "No estimate" in text
    assert "Slowest batches" not in text
    # And its charts are still well-formed
    for svg in svgs(page):
        assert all(float(rect.get("width", "0")) >= 0 for rect in svg.iter("rect"))


def test_a_manifest_missing_fields_still_renders() -> None:
    # Given a manifest of an older version: no cost, no timings, no attempts
    page = render_report({"job_id": JOB, "status": "COMPLETED", "counts": {"requests": 2, "succeeded": 2}})
    text = " ".join(parsed(page).text)
    # Then the parts it has are shown, and those it lacks say so
    assert JOB in text
    assert "This manifest has no cost" in text
    assert "nothing to draw" in text


def test_the_timeline_draws_one_bar_per_attempt_that_ended_from_the_upload() -> None:
    # Given a job of two shards: one retried once (ended at 20 and 50 min), one ended at 5 min
    page = render_report(every_outcome())
    timeline = svgs(page)[-1]
    bars = [rect for rect in timeline.iter("rect") if rect.find("title") is not None]
    # Then three bars are drawn, each titled with its shard and attempt
    titles = sorted(rect.findtext("title") or "" for rect in bars)
    assert [title.split(":")[0] for title in titles] == [
        "shard 0, attempt 1, 10 requests, msgbatch_01",
        "shard 0, attempt 2, 4 requests, msgbatch_02",
        "shard 1, attempt 1, 10 requests, msgbatch_01",
    ]
    # And on one scale, from the upload (0) to the job's end (1 h = the plot's full width)
    first, retry = (rect for rect in bars if (rect.findtext("title") or "").startswith("shard 0"))
    assert float(retry.get("x", "0")) == pytest.approx(float(first.get("x", "0")) + float(first.get("width", "0")))
    assert float(retry.get("width", "0")) == pytest.approx(float(first.get("width", "0")) * 30 / 20, abs=0.2)


def test_the_timeline_draws_at_most_its_limit_of_shards() -> None:
    # Given a job of more shards than the timeline draws
    shards = TIMELINE_SHARDS + 5
    batches = [
        {
            "shard": index,
            "requests": 1,
            "counts": {"succeeded": 1},
            "attempts": [attempt(1, 1, {"succeeded": 1}, 0, "2026-11-23T10:30:00Z")],
        }
        for index in range(shards)
    ]
    manifest = every_outcome(
        requested=shards, rejected=0, rejected_key=None, counts={"succeeded": shards}, batches=batches
    )
    page = render_report(manifest)
    # Then it draws its limit and says how many there are
    timeline = svgs(page)[-1]
    assert sum(1 for rect in timeline.iter("rect") if rect.find("title") is not None) == TIMELINE_SHARDS
    assert f"The first {TIMELINE_SHARDS} of {shards} shards are drawn" in page


def test_the_slowest_batches_are_the_longest_attempts_first() -> None:
    # Given seven shards whose batches took 1 to 7 minutes
    batches = [
        {
            "shard": index,
            "requests": 1,
            "counts": {"succeeded": 1},
            "attempts": [attempt(1, 1, {"succeeded": 1}, 0, f"2026-11-23T10:0{minutes}:00Z")],
        }
        for index, minutes in enumerate((3, 7, 1, 5, 2, 6, 4))
    ]
    manifest = every_outcome(requested=7, rejected=0, rejected_key=None, counts={"succeeded": 7}, batches=batches)
    page = render_report(manifest)
    slowest = page.split("<h2>Slowest batches</h2>", 1)[1].split("</table>", 1)[0]
    # Then the five slowest are listed, longest first
    durations = re.findall(r'<td class="n">(\d+) min</td><td class="n">', slowest)
    assert durations == ["7", "6", "5", "4", "3"][:SLOWEST_SHOWN]


def test_caching_that_cost_more_says_so() -> None:
    # Given a job that wrote cache prefixes and never read them
    manifest = every_outcome(
        usage_by_model={
            "claude-haiku-4-5": Usage(input_tokens=100, output_tokens=10, cache_creation_input_tokens=50_000)
        }
    )
    assert manifest["cost"]["saved_by_caching_usd"].startswith("-")
    text = " ".join(parsed(render_report(manifest)).text)
    # Then the report says what caching cost, as a positive figure
    assert f"caching cost more ${manifest['cost']['saved_by_caching_usd'][1:]}" in " ".join(text.split())


def test_the_rejected_lines_shown_are_bounded_and_clipped() -> None:
    # Given more rejected lines than are shown, one with a very long reason
    entries = tuple(RejectedEntry(n, f"id-{n}", "x" * 5000 if n == 1 else f"reason {n}") for n in range(1, 40))
    page = render_report(every_outcome(rejected=39), RejectedSample(entries, more=True))
    text = " ".join(parsed(page).text)
    # Then the first REJECTED_SHOWN are shown, each reason clipped, and the page says there are more
    assert f"reason {REJECTED_SHOWN}" in text
    assert f"reason {REJECTED_SHOWN + 1}" not in text
    assert "x" * 600 not in text
    assert "x" * 599 in text
    words = " ".join(text.split())  # the key is in a <code> of its own
    assert f"39 lines were rejected before sending in errors/{JOB}/rejected.jsonl ; the first {REJECTED_SHOWN}" in words


def test_rejected_entries_reads_each_line_alone() -> None:
    lines = [
        b'{"line": 4, "custom_id": "a b", "reason": "custom_id: bad", "source": "inbox/x.jsonl"}',
        b"",
        b"not json <b>",
        b'{"line": true, "custom_id": null, "reason": "no id"}',
        b"\xff\xfe",
    ]
    assert rejected_entries(lines) == [
        RejectedEntry(4, "a b", "custom_id: bad"),
        RejectedEntry(None, None, "(not a rejected-line record) not json <b>"),
        RejectedEntry(None, None, "no id"),
        RejectedEntry(None, None, "(not a rejected-line record) \ufffd\ufffd"),
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.0, "0.0 s"), (4.25, "4.2 s"), (42, "42 s"), (600, "10 min"), (725, "12 min 5 s"), (11_400, "3 h 10 min")],
)
def test_durations_are_read_in_two_units_at_most(seconds: float, shown: str) -> None:
    assert _duration(seconds) == shown


def test_the_report_key_is_beside_the_manifest() -> None:
    assert report_key(JOB) == f"results/{JOB}/report.html"
    assert every_outcome()["report"] == report_key(JOB)


def test_a_refused_batch_is_named_with_its_reason_and_has_no_bar() -> None:
    # Given a shard whose create body the API refused for good (no batch, no end)
    manifest = every_outcome()
    manifest["batches"][1]["attempts"] = [
        {
            "attempt": 1,
            "batch_id": None,
            "requests": 10,
            "counts": {"errored": 10},
            "retried": 0,
            "refused": "413: request too large <b>",
        }
    ]
    page = render_report(manifest)
    text = " ".join(parsed(page).text)
    # Then the attempts part names it, its reason as text
    assert "Shard 1, attempt 1: refused by the API: 413: request too large <b>" in text
    assert "&lt;b&gt;" in page
    # And the timeline draws only the other shard's attempts
    titles = [rect.findtext("title") or "" for rect in svgs(page)[-1].iter("rect") if rect.find("title") is not None]
    assert [title.split(",")[0] for title in titles] == ["shard 0", "shard 0"]


def test_cache_priming_is_shown_beside_the_cost_not_in_it() -> None:
    manifest = every_outcome()
    manifest["priming"] = {"key": "work/j/priming.json", "custom_id": "req-1", "cost_usd": "0.001250"}
    text = " ".join(" ".join(parsed(render_report(manifest)).text).split())
    assert "primed before the first batch (request req-1 ), at the standard price: $0.001250" in text
    manifest["priming"] = {"key": "work/j/priming.json", "custom_id": "req-1", "error": "overloaded <i>"}
    assert "Priming the prompt cache failed: overloaded <i>" in " ".join(parsed(render_report(manifest)).text)


def test_a_primed_jobs_estimate_is_set_beside_its_whole_cost_priming_included() -> None:
    manifest = every_outcome()
    manifest["estimate"] = {**manifest["estimate"], "actual_batch_usd": "0.006998", "actual_usd": "0.019011"}
    text = " ".join(" ".join(parsed(render_report(manifest)).text).split())
    assert "actual, priming included $0.019011" in text
    del manifest["estimate"]["actual_usd"]
    assert "actual $0.006998" in " ".join(" ".join(parsed(render_report(manifest)).text).split())
