"""What a file of requests will cost, before anything is sent (docs/cost.md).

The requests stream through an Estimator once: it keeps, per model, the request count, the sum
of max_tokens, the local approximation of the input tokens (domain/prompt_shape.py) and the
cacheable prefixes, and holds a seeded sample of at most `sample_size` requests: those whose
custom_id hashes lowest with the seed, a uniform sample that the same file and seed always
draw alike. A file no larger than the sample is counted whole.

The sampled requests are counted by the API (a counter passed in). The input tokens of the
file are then the counted ones plus, for the rest, the ratio estimate: the counted tokens per
approximate token times the approximate tokens not counted. Its error bound is the half-width
of a 95% interval (normal approximation, 1.96 standard errors, the residual variance of the
sample with the finite-population correction): 0 when every request was counted. When no
count succeeds, the input is the local approximation, and the result says so and why.

The submit function estimates every job from the lines it checks, without parsing them again
(add_line): a request's approximation is its line's bytes / 4, its model and max_tokens are
read as the line was checked, and only a line marked for caching is parsed again, for its
prefix. The sample keeps such a line's bytes, parsed when it is counted; the whole state can
be saved between the invocations of a split that continues (snapshot, restored).

Output tokens: the upper bound is the sum of max_tokens; the expected figure is a share of
it, from earlier jobs' output and max_tokens when given, else DEFAULT_OUTPUT_SHARE.

Caching, expected: per distinct prefix (same model, same blocks up to the last breakpoint,
at least the model's minimum cacheable length by the approximation), the first request
writes it and every later one reads it. The upper bound (`batch_max`) takes every cached
prefix as a write, the input at the top of its interval and every max_tokens as output.

A job that primes its cache (services/priming.py) writes its prefix with one synchronous
request, at the standard price, before its batch: then every request of the batch reads it,
and the priming request is a cost of its own (`priming`: the prefix written, at the standard
price, and one output token), counted in `batch_cached_expected` and in `batch_max`, since the
job pays it as well. Priming warms one prefix: a job with several distinct ones is estimated as
if each were primed (the expected figure is then low by their writes in the batch)."""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from batchdrop.domain.jobs import id_hash
from batchdrop.domain.prices import PriceTable, price_table
from batchdrop.domain.prompt_shape import prompt_shape
from batchdrop.domain.usage import Usage, cost_usd

DEFAULT_SAMPLE_SIZE = 200
DEFAULT_SEED = 0
DEFAULT_OUTPUT_SHARE = Decimal("0.5")
Z_95 = 1.96
# Counting with a precision target goes in rounds of this many requests (at least the workers).
COUNT_ROUND = 32
MAX_DISTINCT_PREFIXES = 200_000  # beyond it, a new prefix is taken as a write (the costlier case)
SAMPLE_LINE_BYTES = 256 * 1024  # a sampled line longer than this is not held to be counted
_CACHE_MARK = b'"cache_control"'
_SNAPSHOT_VERSION = 2  # 2: ranks from the id's SHA-256 and the seed's mask
# What count_tokens takes of a Messages body (max_tokens, temperature, metadata... it does not).
COUNTED_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "cache_control",
    "output_config",
    "output_format",
    "speed",
)
_USD_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class OutputHistory:
    """Earlier jobs' output tokens and the max_tokens their requests allowed."""

    output_tokens: int
    max_tokens: int


@dataclass(slots=True)
class _ModelTally:
    requests: int = 0
    approx: int = 0
    max_tokens: int = 0
    prefix_5m: int = 0  # approximate tokens of every cacheable prefix, by lifetime
    prefix_1h: int = 0
    write_5m: int = 0  # of the first request of each distinct prefix
    write_1h: int = 0
    counted: int = 0  # tokens counted by the API, and the approximate tokens of those requests
    counted_approx: int = 0


@dataclass(frozen=True, slots=True)
class Sampled:
    custom_id: str
    params: Mapping[str, Any] | None  # None: read from `line` when counted
    model: str
    approx_tokens: int
    line: bytes | None = None  # the request line (None with params, or when too long to hold)

    def counted_body(self) -> dict[str, Any] | None:
        """What count_tokens is sent for this request (None: it cannot be counted)."""
        params = self.params
        if params is None:
            if self.line is None:
                return None
            params = json.loads(self.line)["params"]
        return {name: params[name] for name in COUNTED_FIELDS if name in params}


@dataclass
class Estimator:
    sample_size: int = DEFAULT_SAMPLE_SIZE
    seed: int = DEFAULT_SEED
    prices: PriceTable = field(default_factory=price_table)
    requests: int = 0
    _models: dict[str, _ModelTally] = field(default_factory=dict)
    _heap: list[tuple[int, str, Sampled]] = field(default_factory=list)
    _prefixes: set[bytes] = field(default_factory=set)
    _mask: int = 0  # the seed's: ranks are an id's hash XOR it (_rank)

    def __post_init__(self) -> None:
        if self.sample_size < 2:
            raise ValueError("the sample holds at least 2 requests (a bound needs two)")
        self._mask = int.from_bytes(hashlib.sha256(f"seed:{self.seed}".encode()).digest()[:8], "big")

    def add(self, custom_id: str, params: Mapping[str, Any]) -> None:
        """One request of the file, in any order."""
        model = str(params.get("model", ""))
        shape = prompt_shape(params)
        prefix = None
        if shape.prefix_digest is not None and shape.prefix_tokens >= self.prices.prices(model).cache_min_tokens:
            prefix = (shape.prefix_digest, shape.prefix_tokens, shape.prefix_ttl)
        sampled = Sampled(custom_id, params, model, shape.approx_tokens)
        self._add(sampled, int(params.get("max_tokens") or 0), prefix)

    def add_line(
        self,
        custom_id: str,
        line: bytes,
        model: str,
        max_tokens: int,
        hashed: bytes | None = None,
        cache_marked: bool | None = None,
    ) -> None:
        """One checked request line, its approximation its bytes / 4 (see the module's doc).
        The submit function calls this for every line it splits: only a line that enters the
        sample is held (its Sampled made), and only a line marked for caching parsed again.
        `hashed`: the custom_id's id_hash, when the caller has it already; `cache_marked`:
        whether an object in the line holds a cache_control key, when the caller knows it
        (otherwise the line is searched for one)."""
        approx = len(line) // 4
        prefix = None
        if cache_marked or (cache_marked is None and _CACHE_MARK in line):
            shape = prompt_shape(json.loads(line).get("params") or {})
            minimum = self.prices.prices(model).cache_min_tokens
            if shape.prefix_digest is not None and shape.prefix_tokens >= minimum and shape.approx_tokens:
                # The prefix's share of the request, on this approximation's scale.
                prefix = (shape.prefix_digest, shape.prefix_tokens * approx // shape.approx_tokens, shape.prefix_ttl)
        tally = self._models.get(model)
        if prefix is None and tally is not None:  # _count's common case, inline: it runs for every line
            self.requests += 1
            tally.requests += 1
            tally.approx += approx
            tally.max_tokens += max_tokens
        else:
            self._count(model, approx, max_tokens, prefix)
        minus_rank = -(int.from_bytes((hashed or id_hash(custom_id))[16:24], "big") ^ self._mask)  # _rank, inline
        heap = self._heap
        top = heap[0] if len(heap) >= self.sample_size else None
        if top is None or minus_rank > top[0] or (minus_rank == top[0] and custom_id > top[1]):
            held = line if len(line) <= SAMPLE_LINE_BYTES else None
            self._keep((minus_rank, custom_id), Sampled(custom_id, None, model, approx, held))

    def _add(self, sampled: Sampled, max_tokens: int, prefix: tuple[bytes, int, str] | None) -> None:
        self._count(sampled.model, sampled.approx_tokens, max_tokens, prefix)
        key = (-self._rank(sampled.custom_id), sampled.custom_id)
        if len(self._heap) < self.sample_size or key > self._heap[0][:2]:
            self._keep(key, sampled)

    def _count(self, model: str, approx: int, max_tokens: int, prefix: tuple[bytes, int, str] | None) -> None:
        """Tally one request of `model` (the sample aside)."""
        tally = self._models.get(model)
        if tally is None:
            tally = self._models[model] = _ModelTally()
        self.requests += 1
        tally.requests += 1
        tally.approx += approx
        tally.max_tokens += max_tokens
        if prefix is not None:
            digest, tokens, ttl = prefix
            long = ttl == "1h"
            tally.prefix_1h += tokens if long else 0
            tally.prefix_5m += 0 if long else tokens
            if digest not in self._prefixes:
                if len(self._prefixes) < MAX_DISTINCT_PREFIXES:
                    self._prefixes.add(digest)
                tally.write_1h += tokens if long else 0
                tally.write_5m += 0 if long else tokens

    def _rank(self, custom_id: str) -> int:
        """Where a request falls in the seeded order the sample takes the lowest of: 8 bytes of
        its id's SHA-256 XOR the seed's mask. Each seed orders the ids uniformly at random, each
        differently; the same file and seed always alike."""
        return int.from_bytes(id_hash(custom_id)[16:24], "big") ^ self._mask

    def _keep(self, key: tuple[int, str], sampled: Sampled) -> None:
        """Hold `sampled` in the sample, dropping the highest-ranked one when it is full."""
        entry = (*key, sampled)
        if len(self._heap) < self.sample_size:
            heapq.heappush(self._heap, entry)
        else:  # the caller saw it rank lower than the highest kept
            heapq.heapreplace(self._heap, entry)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON, for `restored` (a split that goes on in another invocation)."""
        return {
            "version": _SNAPSHOT_VERSION,
            "sample_size": self.sample_size,
            "seed": self.seed,
            "requests": self.requests,
            "models": {
                model: [getattr(tally, name) for name in _TALLY_FIELDS] for model, tally in self._models.items()
            },
            "prefixes": sorted(digest.hex() for digest in self._prefixes),
            "sample": [
                [-rank, s.custom_id, s.model, s.approx_tokens, _held_text(s)] for rank, _, s in sorted(self._heap)
            ],
        }

    @classmethod
    def restored(cls, data: Mapping[str, Any], prices: PriceTable | None = None) -> Estimator:
        """The estimator a snapshot was taken of (ValueError: not a snapshot of this version)."""
        if not isinstance(data, Mapping) or data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError("not an estimator snapshot of this version")
        made = cls(sample_size=int(data["sample_size"]), seed=int(data["seed"]), prices=prices or price_table())
        made.requests = int(data["requests"])
        for model, figures in data["models"].items():
            made._models[model] = _ModelTally(**dict(zip(_TALLY_FIELDS, figures, strict=True)))
        made._prefixes = {bytes.fromhex(digest) for digest in data["prefixes"]}
        for rank, custom_id, model, approx, text in data["sample"]:
            line = None if text is None else text.encode()
            made._heap.append((-int(rank), custom_id, Sampled(custom_id, None, model, int(approx), line)))
        heapq.heapify(made._heap)
        return made

    def sample(self) -> list[Sampled]:
        """The requests to count, lowest rank first."""
        return [entry[2] for entry in sorted(self._heap, reverse=True)]

    def result(
        self,
        counts: Mapping[str, int],
        *,
        failed: int = 0,
        fallback: str | None = None,
        history: OutputHistory | None = None,
        primed: bool = False,
    ) -> dict[str, Any]:
        """The estimate as JSON, from the sample's `counts` by custom_id (those missing were not
        counted); `failed`: how many counts were tried and failed; `fallback`: why nothing could
        be counted, when so; `primed`: whether the job primes its cache."""
        counted = [s for s in self.sample() if s.custom_id in counts]
        for tally in self._models.values():
            tally.counted = tally.counted_approx = 0
        for sampled in counted:
            tally = self._models[sampled.model]
            tally.counted += counts[sampled.custom_id]
            tally.counted_approx += sampled.approx_tokens
        bound = _bound(counted, counts, self.requests) if counted else None
        input_by_model = _input_by_model(self._models, counted=bool(counted))
        share = _output_share(history)
        return _estimate_json(self, input_by_model, bound, share, (len(counted), failed), fallback, history, primed)

    def relative_bound(self, counts: Mapping[str, int]) -> float | None:
        """The input's 95% half-width as a share of the input, from the sample's `counts` so far
        (None: too few counted to tell)."""
        counted = [s for s in self.sample() if s.custom_id in counts]
        bound = _bound(counted, counts, self.requests) if counted else None
        approx = sum(s.approx_tokens for s in counted)
        if bound is None or not approx:
            return None
        total = sum(counts[s.custom_id] for s in counted) / approx * sum(t.approx for t in self._models.values())
        return bound / total if total else None

    def tallies(self) -> Mapping[str, _ModelTally]:
        return self._models


_TALLY_FIELDS = tuple(_ModelTally.__dataclass_fields__)


def _held_text(sampled: Sampled) -> str | None:
    """A sampled request as the text a snapshot keeps: its line, or its params as one."""
    if sampled.line is not None:
        return sampled.line.decode()
    if sampled.params is not None:
        return json.dumps({"params": sampled.params}, ensure_ascii=False, separators=(",", ":"))
    return None


def estimate(
    requests: Iterable[tuple[str, Mapping[str, Any]]],
    count: Callable[[Mapping[str, Any]], int],
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = DEFAULT_SEED,
    prices: PriceTable | None = None,
    history: OutputHistory | None = None,
) -> dict[str, Any]:
    """The estimate of `requests` ((custom_id, params) pairs, streamed), each sampled request
    counted by `count` one after the other; a count that raises is left out of the sample."""
    estimator = Estimator(sample_size=sample_size, seed=seed, prices=prices or price_table())
    for custom_id, params in requests:
        estimator.add(custom_id, params)
    counts: dict[str, int] = {}
    failures: list[str] = []
    for sampled in estimator.sample():
        body = sampled.counted_body()
        if body is None:
            continue
        try:
            counts[sampled.custom_id] = int(count(body))
        except Exception as exc:  # noqa: BLE001 - a failed count never fails the estimate
            failures.append(f"{type(exc).__name__}: {exc}")
    fallback = None if counts or not failures else f"no count succeeded ({failures[0]})"
    return estimator.result(counts, failed=len(failures), fallback=fallback, history=history)


def counted_estimate(
    estimator: Estimator,
    counter: Callable[[Mapping[str, Any]], int] | None,
    *,
    workers: int = 4,
    seconds: float | None = None,
    no_counter_reason: str | None = None,
    history: OutputHistory | None = None,
    primed: bool = False,
    precision: float | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The estimate, its sample counted by `counter` (a count_tokens call), `workers` at a
    time, for at most `seconds` (None: no limit): a count that fails or finds the time spent
    is left out of the sample, and when none succeeds the estimate is the approximation,
    saying why. Also a note for people when some counts failed (None when none did).

    With `precision`, the sample is counted in rounds, lowest rank first (the first requests of
    the seeded order are a uniform sample too), and counting stops after the round whose
    input bound is within that share of the input: a file whose requests are alike, as most
    batch jobs' are, needs a few dozen counts, not the whole sample."""
    from concurrent.futures import ThreadPoolExecutor  # only a count needs it

    sample = estimator.sample()
    ends = None if seconds is None else time.monotonic() + seconds

    def attempt(sampled: Sampled) -> int | str:
        body = sampled.counted_body()
        if body is None:
            return "not held: the request is longer than a sampled line may be"
        if ends is not None and time.monotonic() >= ends:
            return f"not counted: the {seconds:g} s given to counting were spent"
        try:
            return int(counter(body)) if counter is not None else "no counter"
        except Exception as exc:  # noqa: BLE001 - a failed count never fails the estimate
            return f"{type(exc).__name__}: {str(exc)[:200]}"

    counts: dict[str, int] = {}
    failures: list[str] = []
    stopped = None
    if counter is not None and sample:
        step = len(sample) if precision is None else max(COUNT_ROUND, workers)
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="count-tokens") as pool:
            for start in range(0, len(sample), step):
                chunk = sample[start : start + step]
                for sampled, answer in zip(chunk, pool.map(attempt, chunk), strict=True):
                    if isinstance(answer, int):
                        counts[sampled.custom_id] = answer
                    else:
                        failures.append(answer)
                if precision is None or start + step >= len(sample):
                    continue
                within = estimator.relative_bound(counts)
                if within is not None and within <= precision:
                    stopped = f"after {len(counts)} counts: the input's 95% bound was within {precision:.1%} of it"
                    break
    fallback, note = None, None
    if not estimator.requests:
        fallback = "the file holds no valid request"
    elif not counts:
        fallback = no_counter_reason if counter is None else f"no count succeeded ({failures[0]})"
    elif failures:
        note = f"{len(failures)} of {len(failures) + len(counts)} counts failed, first: {failures[0]}"
    result = estimator.result(counts, failed=len(failures), fallback=fallback, history=history, primed=primed)
    result["method"]["counting_stopped"] = stopped
    return result, note


def _bound(counted: list[Sampled], counts: Mapping[str, int], population: int) -> float | None:
    """Half-width of the 95% interval of the ratio estimate of the total (0: all counted)."""
    n = len(counted)
    if n >= population:
        return 0.0
    if n < 2:
        return None
    xs = [s.approx_tokens for s in counted]
    ys = [counts[s.custom_id] for s in counted]
    ratio = sum(ys) / sum(xs)
    residual_variance = sum((y - ratio * x) ** 2 for x, y in zip(xs, ys, strict=True)) / (n - 1)
    variance = population**2 * (1 - n / population) * residual_variance / n
    return Z_95 * math.sqrt(variance)


def _input_by_model(models: Mapping[str, _ModelTally], *, counted: bool) -> dict[str, float]:
    """Each model's input tokens: the counted ones plus the ratio estimate of the rest (the
    local approximation when nothing was counted)."""
    if not counted:
        return {model: float(tally.approx) for model, tally in models.items()}
    ratio = sum(t.counted for t in models.values()) / sum(t.counted_approx for t in models.values())
    return {model: t.counted + ratio * (t.approx - t.counted_approx) for model, t in models.items()}


def _output_share(history: OutputHistory | None) -> Decimal:
    if history is None or history.max_tokens <= 0:
        return DEFAULT_OUTPUT_SHARE
    return min(Decimal(1), Decimal(history.output_tokens) / Decimal(history.max_tokens))


def _usages(
    tally: _ModelTally, input_tokens: float, upper: float, share: Decimal, *, primed: bool = False
) -> tuple[Usage, Usage, Usage, Usage]:
    """(plain, cached as expected, the upper bound, the priming request's) usage of one model."""
    scale = input_tokens / tally.approx if tally.approx else 0.0
    expected_out = int((share * tally.max_tokens).to_integral_value(ROUND_HALF_UP))
    plain = Usage(input_tokens=round(input_tokens), output_tokens=expected_out)
    write_5m, write_1h = round(tally.write_5m * scale), round(tally.write_1h * scale)
    read = round((tally.prefix_5m + tally.prefix_1h - tally.write_5m - tally.write_1h) * scale)
    priming = Usage()
    if primed and write_5m + write_1h:  # the priming request writes; the batch reads it all
        priming = Usage(
            output_tokens=1,
            cache_creation_input_tokens=write_5m + write_1h,
            cache_creation_5m=write_5m,
            cache_creation_1h=write_1h,
        )
        read, write_5m, write_1h = read + write_5m + write_1h, 0, 0
    cached = Usage(
        input_tokens=max(0, round(input_tokens) - write_5m - write_1h - read),
        output_tokens=expected_out,
        cache_creation_input_tokens=write_5m + write_1h,
        cache_read_input_tokens=read,
        cache_creation_5m=write_5m,
        cache_creation_1h=write_1h,
    )
    top = upper / tally.approx if tally.approx else 0.0
    prefix_5m, prefix_1h = round(tally.prefix_5m * top), round(tally.prefix_1h * top)
    most = Usage(
        input_tokens=max(0, math.ceil(upper) - prefix_5m - prefix_1h),
        output_tokens=tally.max_tokens,
        cache_creation_input_tokens=prefix_5m + prefix_1h,
        cache_creation_5m=prefix_5m,
        cache_creation_1h=prefix_1h,
    )
    return plain, cached, most, priming


def _estimate_json(
    estimator: Estimator,
    input_by_model: Mapping[str, float],
    bound: float | None,
    share: Decimal,
    counted: tuple[int, int],
    fallback: str | None,
    history: OutputHistory | None,
    primed: bool = False,
) -> dict[str, Any]:
    total = sum(input_by_model.values())
    # The upper bound spreads the interval's half-width over the models by their share.
    widen = (total + (bound or 0.0)) / total if total else 1.0
    plain, cached, most, priming = {}, {}, {}, {}
    for model, tally in estimator.tallies().items():
        plain[model], cached[model], most[model], priming[model] = _usages(
            tally, input_by_model[model], input_by_model[model] * widen, share, primed=primed
        )
    prices = estimator.prices
    primed_usd = cost_usd(priming, batch=False, prices=prices)
    costs = {
        "standard": cost_usd(plain, batch=False, prices=prices),
        "batch": cost_usd(plain, batch=True, prices=prices),
        "batch_cached_expected": cost_usd(cached, batch=True, prices=prices) + primed_usd,
        "batch_max": cost_usd(most, batch=True, prices=prices) + primed_usd,
    }
    if primed:
        costs["priming"] = primed_usd
    return {
        "requests": estimator.requests,
        "input_tokens": round(total),
        "output_tokens_expected": sum(u.output_tokens for u in plain.values()),
        "output_tokens_max": sum(u.output_tokens for u in most.values()),
        "cost_usd": {name: str(cost.quantize(_USD_PLACES, rounding=ROUND_HALF_UP)) for name, cost in costs.items()},
        "method": _method(estimator, counted, bound, share, fallback, history, primed),
    }


def _method(
    estimator: Estimator,
    tried: tuple[int, int],
    bound: float | None,
    share: Decimal,
    fallback: str | None,
    history: OutputHistory | None,
    primed: bool,
) -> dict[str, Any]:
    counted, failed = tried
    sampled = len(estimator.sample())
    how = "approximated" if counted == 0 else "counted" if counted == estimator.requests else "sampled"
    prices = estimator.prices
    return {
        "input": how,
        "sample_size": sampled,
        "counted": counted,
        "count_failures": failed,
        "seed": estimator.seed,
        "input_tokens_bound": None if bound is None else math.ceil(bound),
        "bound": "half-width of a 95% interval of the ratio estimate (finite-population corrected)",
        "fallback": fallback,
        "counting_stopped": None,  # counted_estimate's precision target: when it stopped short of the sample
        "approximation": "1 token per 4 characters of the prompt's strings; 1,600 per base64 source",
        "output_expected": (
            f"{share} x max_tokens, the share earlier jobs used"
            if history is not None and history.max_tokens > 0
            else f"{share} x max_tokens (default share)"
        ),
        "cache": (
            "primed: one request writes each prefix at the standard price before the batch, every request reads"
            if primed
            else "per distinct prefix of at least the model's minimum: the first request writes, the rest read"
        ),
        "prices": {
            "source": prices.source,
            "as_of": prices.as_of,
            "priced_as": {model: prices.family(model) for model in sorted(estimator.tallies())},
        },
    }
