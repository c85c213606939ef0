"""`batchdrop estimate`'s work, on this machine: read a native .jsonl[.gz] file, or a records
.csv/.jsonl[.gz] rendered through a pipeline, as the submit function would; feed every valid
request to the layer's Estimator (domain/estimate.py) as it streams, so only the sample is
held; count the sample's input tokens with the official SDK's `messages.count_tokens`, a few
at a time, with the SDK's retries (a 429 waits as its retry-after says); and never fail on a
count: a request whose count fails is left out of the sample, and when none succeeds the
estimate uses the local approximation and says why. docs/cost.md."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from batchdrop_client.errors import InputFileError

if TYPE_CHECKING:
    from batchdrop.domain.estimate import Estimator
    from batchdrop.domain.pipelines import Pipeline

COUNT_WORKERS = 4
COUNT_RETRIES = 4  # the SDK's retries per count (429 and 5xx back off, honouring retry-after)
COUNT_TIMEOUT = 30.0
_GZIP_MAGIC = b"\x1f\x8b"

Counter = Callable[[Mapping[str, Any]], int]


@dataclass
class FileEstimate:
    """The estimate's JSON, and what a person should know beside it."""

    path: Path
    estimate: dict[str, Any]
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


def sdk_counter(*, api_key: str, base_url: str | None) -> tuple[Counter, Callable[[], None]]:
    """A counter on the official SDK, and what closes its client."""
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=COUNT_RETRIES, timeout=COUNT_TIMEOUT)

    def count(params: Mapping[str, Any]) -> int:
        return int(client.messages.count_tokens(**params).input_tokens)

    return count, client.close


def estimate_file(
    path: Path,
    *,
    counter: Counter | None,
    no_counter_reason: str | None = None,
    pipeline: Pipeline | None = None,
    estimator: Estimator | None = None,
    workers: int = COUNT_WORKERS,
    primed: bool = False,
) -> FileEstimate:
    """Stream `path`'s requests into the estimator, count its sample, and estimate
    (`primed`: as a job that primes its cache, services/priming.py)."""
    from batchdrop.domain.estimate import Estimator, counted_estimate

    estimator = estimator or Estimator()
    found = FileEstimate(path, {})
    for custom_id, params in _requests(path, pipeline, found):
        estimator.add(custom_id, params)
    found.estimate, note = counted_estimate(
        estimator, counter, workers=workers, no_counter_reason=no_counter_reason, primed=primed
    )
    if note is not None:
        found.notes.append(note)
    return found


def _requests(path: Path, pipeline: Pipeline | None, found: FileEstimate) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.is_dir():
        raise InputFileError(f"{path} is a directory: give a request or records file")
    try:
        with path.open("rb") as raw:
            if pipeline is None:
                yield from _native(raw, path, found)
            else:
                yield from _records(raw, path, pipeline, found)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None


def _native(raw: BinaryIO, path: Path, found: FileEstimate) -> Iterator[tuple[str, dict[str, Any]]]:
    from batchdrop.domain.lines import SourceLines, UnreadableFileError
    from batchdrop.domain.requests import ValidLine, check_lines

    try:
        for line in check_lines(SourceLines(raw, path.name)):
            if isinstance(line, ValidLine):
                yield line.custom_id, json.loads(line.body)["params"]
            else:
                found.rejected += 1
    except UnreadableFileError as exc:
        raise InputFileError(f"{path}: {exc}") from None


def _records(
    raw: BinaryIO, path: Path, pipeline: Pipeline, found: FileEstimate
) -> Iterator[tuple[str, dict[str, Any]]]:
    from batchdrop.domain.record_readers import RecordFileError, read_csv, read_jsonl

    name = path.name.lower().removesuffix(".gz")
    if not name.endswith((".csv", ".jsonl")):
        raise InputFileError(f"{path}: a records file is .csv, .jsonl, .csv.gz or .jsonl.gz")
    gzipped = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    body = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw
    try:
        items = read_csv(body) if name.endswith(".csv") else read_jsonl(body)
        for position, (_, record) in enumerate(items, start=1):
            rendered = pipeline.render(record, position) if isinstance(record, dict) else record
            if isinstance(rendered, bytes):
                request = json.loads(rendered)
                yield request["custom_id"], request["params"]
            else:
                found.rejected += 1
    except RecordFileError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    except (gzip.BadGzipFile, EOFError) as exc:
        raise InputFileError(f"{path}: not a readable gzip file ({exc or 'truncated'})") from None


def summary_lines(found: FileEstimate) -> list[str]:
    """The estimate for people: requests, tokens, the four costs, the method in a sentence."""
    result, method = found.estimate, found.estimate["method"]
    cost = result["cost_usd"]
    rejected = f" ({found.rejected} rejected, not counted)" if found.rejected else ""
    lines = [
        f"{found.path}: {result['requests']:,} requests{rejected}",
        f"  input tokens   {result['input_tokens']:,}{_bound_text(method)}",
        f"  output tokens  {result['output_tokens_expected']:,} expected ({method['output_expected']}), "
        f"at most {result['output_tokens_max']:,}",
        f"  cost (USD)     standard ${cost['standard']}   batch ${cost['batch']}   "
        f"batch with caching ${cost['batch_cached_expected']} (expected)   batch at most ${cost['batch_max']}",
        *(
            [f"  priming        ${cost['priming']} at the standard price, in both of the last two"]
            if "priming" in cost
            else []
        ),
        f"  method: {_method_sentence(method)}",
        f"  prices: {_families(method['prices']['priced_as'])}; {method['prices']['source']}, "
        f"as of {method['prices']['as_of']}",
    ]
    return lines + [f"  note: {note}" for note in found.notes]


def _bound_text(method: Mapping[str, Any]) -> str:
    if method["input"] == "sampled" and method["input_tokens_bound"] is not None:
        return f" ± {method['input_tokens_bound']:,} (95%)"
    return ""


def _method_sentence(method: Mapping[str, Any]) -> str:
    if method["input"] == "counted":
        return f"input counted by the API for all {method['counted']:,} requests"
    if method["input"] == "sampled":
        return (
            f"input counted by the API for a sample of {method['counted']:,} requests (seed {method['seed']}), "
            "extrapolated by the ratio to the local approximation; ± is the half-width of a 95% interval"
        )
    return f"input approximated locally ({method['approximation']}): {method['fallback']}"


def _families(priced_as: Mapping[str, str]) -> str:
    return ", ".join(f"{model} as {family}" for model, family in priced_as.items()) or "no model"
