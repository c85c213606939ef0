"""A finished job's report (results/<job_id>/report.html): its manifest, and the first of its
rejected lines, drawn as one HTML page a person reads in a browser.

The page is self-contained: its style is inline, its charts are inline SVG drawn here, it
loads nothing (no script, font, image or stylesheet from anywhere) and its Content-Security-
Policy forbids loading any, so it opens the same from a presigned URL, an attachment or a
laptop offline. Every string that comes from data (a custom_id, a reason, a key, a model) is
escaped: a rejected line's custom_id may be `<script>`, and it must stay text.

Pure: data in, a string out; the standard library only, so the checker imports it cheaply."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# How many of the job's rejected lines the report shows, and how much of one it shows.
REJECTED_SHOWN = 20
_ID_CHARS = 80
_REASON_CHARS = 600
# The timeline draws at most this many shards (a job has up to one per 100,000 requests).
TIMELINE_SHARDS = 60
SLOWEST_SHOWN = 5
REFUSED_SHOWN = 5  # batches the API refused, named under the attempts

OUTCOME_COLOURS = {
    "succeeded": "#2e7d32",
    "errored": "#c62828",
    "expired": "#ef6c00",
    "canceled": "#757575",
    "rejected": "#6a1b9a",
}
# Token kinds as the manifest's usage names them, and what the report calls them.
TOKEN_KINDS = (
    ("input_tokens", "input", "#1565c0"),
    ("output_tokens", "output", "#00838f"),
    ("cache_creation_input_tokens", "cache write", "#8e24aa"),
    ("cache_read_input_tokens", "cache read", "#7cb342"),
)
ATTEMPT_COLOURS = ("#1976d2", "#f9a825", "#d84315", "#5d4037")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:16px 20px;margin:0 0 16px}
table{border-collapse:collapse;margin:6px 0}th,td{text-align:left;padding:3px 12px 3px 0;vertical-align:top}
th{color:#57606a;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.muted{color:#57606a}.status{display:inline-block;padding:1px 8px;border-radius:10px;background:#ddf4ff}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}svg{display:block;max-width:100%;height:auto}
td.reason{white-space:pre-wrap;word-break:break-word}
"""


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """One line of errors/<job_id>/rejected.jsonl as the report shows it."""

    line: int | None
    custom_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RejectedSample:
    """The first rejected lines read, and whether the file holds more than were read (or a
    line too long to read whole)."""

    entries: tuple[RejectedEntry, ...]
    more: bool


def rejected_entries(lines: Iterable[bytes]) -> list[RejectedEntry]:
    """The rejected lines' records, each read alone: a line that is not the record the
    submit function writes is shown as it is rather than dropped."""
    entries = []
    for raw in lines:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            entries.append(RejectedEntry(None, None, f"(not a rejected-line record) {text}"))
            continue
        line = record.get("line")
        custom_id = record.get("custom_id")
        entries.append(
            RejectedEntry(
                line if isinstance(line, int) and not isinstance(line, bool) else None,
                None if custom_id is None else str(custom_id),
                str(record.get("reason", "")),
            )
        )
    return entries


def render_report(manifest: Mapping[str, Any], rejected: RejectedSample | None = None) -> str:
    """The report of the job `manifest` describes, as one HTML document. Fields a manifest of
    an older version lacks are left out, never guessed."""
    job_id = str(manifest.get("job_id", "?"))
    sections = [
        _header(manifest),
        f'<div class="grid">{_outcomes(manifest)}{_tokens(manifest)}</div>',
        _cost(manifest),
        _attempts(manifest),
        _timeline(manifest),
        _slowest(manifest),
        _rejected(manifest, rejected),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # Nothing may load from anywhere: the page holds all it shows.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>batchdrop report: job {_e(job_id)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{''.join(sections)}"
        '<p class="muted">Written by batchdrop when the job finished. Figures are the manifest\'s '
        f"(<code>{_e(f'results/{job_id}/manifest.json')}</code>).</p></main></body></html>\n"
    )


# --- sections ------------------------------------------------------------------------------


def _header(manifest: Mapping[str, Any]) -> str:
    source = manifest.get("source") or {}
    timings = manifest.get("timings") or {}
    created, completed = timings.get("created_at"), timings.get("completed_at")
    took = _seconds_between(created, completed)
    rows = [
        ("source", f"<code>s3://{_e(source.get('bucket', '?'))}/{_e(source.get('key', '?'))}</code>"),
        ("version", f"<code>{_e(source.get('version_id', '?'))}</code>"),
        ("uploaded", _e(created or "?")),
        ("finished", _e(completed or "?") + ("" if took is None else f" ({_e(_duration(took))} after upload)")),
    ]
    if manifest.get("reason"):
        rows.append(("reason", _e(manifest["reason"])))
    return (
        f"<section><h1>Job <code>{_e(manifest.get('job_id', '?'))}</code> "
        f'<span class="status">{_e(manifest.get("status", "?"))}</span></h1>{_table(None, rows)}</section>'
    )


def _outcomes(manifest: Mapping[str, Any]) -> str:
    counts = manifest.get("counts") or {}
    requests = _int(counts.get("requests"))
    kinds = [name for name in OUTCOME_COLOURS if name != "rejected"]
    kinds += [name for name in counts if name not in OUTCOME_COLOURS and name != "requests"]
    bars = [(name, _int(counts.get(name)), OUTCOME_COLOURS.get(name, "#455a64")) for name in kinds]
    bars.append(("rejected", _int(counts.get("rejected")), OUTCOME_COLOURS["rejected"]))
    sent_and_rejected = requests + _int(counts.get("rejected"))
    rows = [
        (_e(name), f'<td class="n">{value:,}</td><td class="n muted">{_share(value, sent_and_rejected)}</td>')
        for name, value, _ in bars
    ]
    table = "<table><tr><th>outcome</th><th>lines</th><th>share</th></tr>"
    table += "".join(f"<tr><td>{name}</td>{cells}</tr>" for name, cells in rows) + "</table>"
    return (
        f"<section><h2>Outcomes</h2><p>{requests:,} requests sent, {_int(counts.get('rejected')):,} lines "
        f"rejected before sending.</p>{_bar_chart(bars, 'requests by outcome')}{table}</section>"
    )


def _tokens(manifest: Mapping[str, Any]) -> str:
    usage = manifest.get("usage") or {}
    total = usage.get("total") or {}
    bars = [(label, _int(total.get(name)), colour) for name, label, colour in TOKEN_KINDS]
    table = "<table><tr><th>kind</th><th>tokens</th></tr>"
    table += "".join(f'<tr><td>{_e(label)}</td><td class="n">{value:,}</td></tr>' for label, value, _ in bars)
    table += "</table>"
    by_model = usage.get("by_model") or {}
    if len(by_model) > 1:
        table += "<table><tr><th>model</th>" + "".join(f"<th>{_e(label)}</th>" for _, label, _ in TOKEN_KINDS)
        for model, figures in sorted(by_model.items()):
            cells = "".join(f'<td class="n">{_int((figures or {}).get(name)):,}</td>' for name, _, _ in TOKEN_KINDS)
            table += f"<tr><td><code>{_e(model)}</code></td>{cells}</tr>"
        table += "</table>"
    return f"<section><h2>Tokens</h2>{_bar_chart(bars, 'tokens by kind')}{table}</section>"


def _cost(manifest: Mapping[str, Any]) -> str:
    cost = manifest.get("cost") or {}
    if not cost:
        return "<section><h2>Cost</h2><p>This manifest has no cost.</p></section>"
    batch, standard = _usd(cost.get("batch_usd")), _usd(cost.get("standard_usd"))
    by_caching = _usd(cost.get("saved_by_caching_usd"))
    vs_standard = _usd(cost.get("saved_vs_standard_usd", cost.get("saved_usd")))
    rows = [("at the batch price (paid)", _money(batch)), ("at the standard price", _money(standard))]
    if vs_standard is not None:
        rows.append(("saved by batching", _money(vs_standard)))
    if by_caching is not None:
        label = "caching cost more" if by_caching < 0 else "saved by caching"
        rows.append((label, _money(abs(by_caching))))
    priced = cost.get("priced_as") or {}
    if priced:
        rows.append(("priced as", ", ".join(f"<code>{_e(m)}</code>: {_e(f)}" for m, f in sorted(priced.items()))))
    bars = [("standard price", standard, "#90a4ae"), ("batch price", batch, "#1565c0")]
    if by_caching is not None and batch is not None:
        bars.insert(1, ("batch, no caching", batch + by_caching, "#64b5f6"))
    chart = _bar_chart(
        [(label, value, colour) for label, value, colour in bars if value is not None], "cost", money=True
    )
    return f"<section><h2>Cost</h2>{chart}{_table(None, rows)}{_estimate(manifest)}{_priming(manifest)}</section>"


def _estimate(manifest: Mapping[str, Any]) -> str:
    estimate = manifest.get("estimate")
    if not isinstance(estimate, Mapping):
        return '<p class="muted">No estimate was kept for this job.</p>'
    costs = estimate.get("cost_usd") or {}
    expected, most = _usd(costs.get("batch_cached_expected")), _usd(costs.get("batch_max"))
    # A primed job's actual cost is its batches' and its priming request's, as its estimate counts it.
    primed = estimate.get("actual_usd") is not None
    actual = _usd(estimate.get("actual_usd") if primed else estimate.get("actual_batch_usd"))
    rows = [
        ("estimated (expected)", _money(expected)),
        ("estimated (at most)", _money(most)),
        ("actual, priming included" if primed else "actual", _money(actual)),
    ]
    error = estimate.get("error")
    if isinstance(error, int | float) and not isinstance(error, bool):
        rows.append(("actual against expected", f"{error:+.1%}"))
    if estimate.get("within_max") is not None:
        rows.append(("within the estimate's maximum", "yes" if estimate["within_max"] else "<strong>no</strong>"))
    bars = [
        (label, value, colour)
        for label, value, colour in (
            ("expected", expected, "#9fa8da"),
            ("at most", most, "#c5cae9"),
            ("actual", actual, "#1565c0"),
        )
        if value is not None
    ]
    return (
        f"<h2>Estimate beside actual</h2>{_bar_chart(bars, 'estimate and actual cost', money=True)}{_table(None, rows)}"
    )


def _priming(manifest: Mapping[str, Any]) -> str:
    priming = manifest.get("priming")
    if not isinstance(priming, Mapping):
        return ""
    if priming.get("error"):
        return f"<p>Priming the prompt cache failed: {_e(priming['error'])}</p>"
    return (
        f"<p>The prompt cache was primed before the first batch (request <code>{_e(priming.get('custom_id', '?'))}"
        f"</code>), at the standard price: {_money(_usd(priming.get('cost_usd')))}, not part of the cost above.</p>"
    )


def _attempts(manifest: Mapping[str, Any]) -> str:
    summary = manifest.get("attempts") or {}
    final_at = summary.get("final_at_attempt") or {}
    rows = [
        ("batches created", f"{_int(summary.get('batches_created')):,}"),
        ("requests sent again (retries)", f"{_int(summary.get('requests_retried')):,}"),
    ]
    rows += [
        (f"final at attempt {_e(number)}", f"{_int(count):,} requests")
        for number, count in sorted(final_at.items(), key=lambda item: _int(item[0]))
    ]
    refused = [
        (shard, attempt)
        for shard in _batches(manifest)
        for attempt in shard.get("attempts") or []
        if attempt.get("refused")
    ]
    text = "".join(
        f"<p>Shard {_int(shard.get('shard'))}, attempt {_int(attempt.get('attempt'))}: refused by the API: "
        f"{_e(_clip(str(attempt['refused']), _REASON_CHARS))}</p>"
        for shard, attempt in refused[:REFUSED_SHOWN]
    )
    return f"<section><h2>Attempts and retries</h2>{_table(None, rows)}{text}</section>"


@dataclass(frozen=True, slots=True)
class _Span:
    """One attempt of one shard on the timeline: from when it could start (the upload, or
    its shard's previous attempt's end) to when its batch ended."""

    shard: int
    attempt: int
    batch_id: str | None
    requests: int
    start: float  # seconds after the upload
    end: float


def _spans(manifest: Mapping[str, Any]) -> list[_Span]:
    timings = manifest.get("timings") or {}
    origin = _moment(timings.get("created_at"))
    if origin is None:
        return []
    spans = []
    for shard in _batches(manifest):
        start = 0.0
        for attempt in shard.get("attempts") or []:
            ended = _moment(attempt.get("ended_at"))
            if ended is None:
                continue
            end = max((ended - origin).total_seconds(), start)
            spans.append(
                _Span(
                    _int(shard.get("shard")),
                    _int(attempt.get("attempt")),
                    attempt.get("batch_id"),
                    _int(attempt.get("requests")),
                    start,
                    end,
                )
            )
            start = end
    return spans


def _timeline(manifest: Mapping[str, Any]) -> str:
    timings = manifest.get("timings") or {}
    total = _seconds_between(timings.get("created_at"), timings.get("completed_at"))
    spans = _spans(manifest)
    if total is None or not spans:
        return (
            "<section><h2>Timeline</h2><p>No batch of this job recorded when it ended: nothing to draw.</p></section>"
        )
    total = max(total, max(span.end for span in spans), 0.001)
    shards = sorted({span.shard for span in spans})
    shown = shards[:TIMELINE_SHARDS]
    row = {shard: index for index, shard in enumerate(shown)}
    left, width, top, height = 90, 880, 24, 18
    plot_height = height * len(shown)
    parts = [
        f'<svg viewBox="0 0 {left + width + 20} {top + plot_height + 34}" width="{left + width + 20}" '
        f'height="{top + plot_height + 34}" role="img" aria-label="timeline of the batches">',
    ]
    for step in range(5):  # gridlines and elapsed-time labels at 0, 25, 50, 75 and 100 %
        x = left + width * step / 4
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_height}" stroke="#d0d7de"/>')
        anchor = "start" if step == 0 else "end" if step == 4 else "middle"
        elapsed = _duration(total * step / 4) if step else "upload"
        parts.append(
            f'<text x="{x:.1f}" y="{top - 8}" font-size="11" text-anchor="{anchor}" fill="#57606a">{_e(elapsed)}</text>'
        )
    for shard in shown:
        y = top + row[shard] * height
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">shard {shard}</text>')
    for span in spans:
        if span.shard not in row:
            continue
        x = left + width * span.start / total
        bar = max(width * (span.end - span.start) / total, 1.5)
        colour = ATTEMPT_COLOURS[min(span.attempt, len(ATTEMPT_COLOURS)) - 1]
        label = (
            f"shard {span.shard}, attempt {span.attempt}, {span.requests} requests, "
            f"{span.batch_id or 'no batch'}: ended {_duration(span.end)} after upload"
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{top + row[span.shard] * height + 3}" width="{bar:.1f}" height="{height - 6}" '
            f'fill="{colour}"><title>{_e(label)}</title></rect>'
        )
    legend_y = top + plot_height + 22
    for index, colour in enumerate(ATTEMPT_COLOURS):
        x = left + index * 110
        name = f"attempt {index + 1}" + ("+" if index == len(ATTEMPT_COLOURS) - 1 else "")
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{_e(name)}</text>')
    parts.append("</svg>")
    note = ""
    if len(shards) > len(shown):
        note = f'<p class="muted">The first {len(shown)} of {len(shards)} shards are drawn.</p>'
    return (
        '<section><h2>Timeline</h2><p class="muted">From the upload to the job\'s end. Each bar is one '
        "attempt of a shard: from the upload, or the shard's previous attempt's end, to when its batch "
        f"ended.</p>{''.join(parts)}{note}</section>"
    )


def _slowest(manifest: Mapping[str, Any]) -> str:
    spans = sorted(
        (span for span in _spans(manifest) if span.batch_id is not None),
        key=lambda span: (-(span.end - span.start), span.shard, span.attempt),
    )
    if not spans:
        return ""
    header = ("shard", "attempt", "batch", "requests", "took", "ended after upload")
    rows = "".join(
        f'<tr><td class="n">{span.shard}</td><td class="n">{span.attempt}</td>'
        f'<td><code>{_e(span.batch_id or "-")}</code></td><td class="n">{span.requests:,}</td>'
        f'<td class="n">{_e(_duration(span.end - span.start))}</td><td class="n">{_e(_duration(span.end))}</td></tr>'
        for span in spans[:SLOWEST_SHOWN]
    )
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    return (
        f"<section><h2>Slowest batches</h2><table><tr>{head}</tr>{rows}</table>"
        '<p class="muted">"took": from when the attempt could start to when its batch ended.</p></section>'
    )


def _rejected(manifest: Mapping[str, Any], sample: RejectedSample | None) -> str:
    count = _int((manifest.get("counts") or {}).get("rejected"))
    key = manifest.get("errors")
    if count == 0:
        return "<section><h2>Rejected lines</h2><p>No line was rejected.</p></section>"
    where = f" in <code>{_e(key)}</code>" if key else ""
    if sample is None or not sample.entries:
        return f"<section><h2>Rejected lines</h2><p>{count:,} lines were rejected{where}.</p></section>"
    shown = sample.entries[:REJECTED_SHOWN]
    rows = "".join(
        f'<tr><td class="n">{"?" if entry.line is None else entry.line}</td>'
        f"<td><code>{_e(_clip(entry.custom_id, _ID_CHARS) if entry.custom_id is not None else '-')}</code></td>"
        f'<td class="reason">{_e(_clip(entry.reason, _REASON_CHARS))}</td></tr>'
        for entry in shown
    )
    rest = f"; the first {len(shown)} below" if count > len(shown) or sample.more else ""
    return (
        f"<section><h2>Rejected lines</h2><p>{count:,} lines were rejected before sending{where}{rest}.</p>"
        f"<table><tr><th>line</th><th>custom_id</th><th>reason</th></tr>{rows}</table></section>"
    )


# --- charts ----------------------------------------------------------------------------------


def _bar_chart(bars: Sequence[tuple[str, int | Decimal, str]], label: str, *, money: bool = False) -> str:
    """Horizontal bars, one a row, scaled to the largest; each labelled with its figure."""
    left, width, height = 130, 300, 22
    largest = max((value for _, value, _ in bars), default=0) or 1
    parts = [
        f'<svg viewBox="0 0 {left + width + 110} {height * len(bars) + 4}" width="{left + width + 110}" '
        f'height="{height * len(bars) + 4}" role="img" aria-label="{_e(label)}">'
    ]
    for index, (name, value, colour) in enumerate(bars):
        y = index * height + 2
        bar = width * max(value, 0) / largest
        figure = _money(Decimal(value)) if money else f"{value:,}"
        parts.append(f'<text x="{left - 8}" y="{y + 15}" font-size="12" text-anchor="end">{_e(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{float(bar):.1f}" height="{height - 6}" fill="{colour}"/>')
        parts.append(f'<text x="{left + float(bar) + 6:.1f}" y="{y + 15}" font-size="12">{_e(figure)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- small helpers ---------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str] | None, rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; the cells are HTML already escaped by the caller."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{_e(name)}</th>" for name in header) + "</tr>"
    return f"<table>{head}{''.join(f'<tr><th>{name}</th><td>{cell}</td></tr>' for name, cell in rows)}</table>"


def _batches(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [shard for shard in manifest.get("batches") or [] if isinstance(shard, Mapping)]


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _usd(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _money(value: Decimal | None) -> str:
    return "?" if value is None else f"${value:.6f}"  # as the manifest and `batchdrop status` write it


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _seconds_between(start: Any, end: Any) -> float | None:
    first, last = _moment(start), _moment(end)
    return None if first is None or last is None else max((last - first).total_seconds(), 0.0)


def _duration(seconds: float) -> str:
    """`0.8 s`, `42 s`, `12 min 5 s`, `3 h 10 min`, `2 d 4 h`: two units at most."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{whole} s"
