"""The estimate before sending: census or seeded sample, the bound, the fallback, the costs."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from batchdrop.domain.estimate import Estimator, OutputHistory, estimate
from batchdrop.domain.prompt_shape import prompt_shape

pytestmark = pytest.mark.unit

KEYS = {"requests", "input_tokens", "output_tokens_expected", "output_tokens_max", "cost_usd", "method"}


def request(text: str, *, model: str = "claude-haiku-4-5", max_tokens: int = 10, system: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    if system is not None:
        params["system"] = system
    return params


def requests(count: int, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for index in range(count):
        yield f"r-{index:06d}", request(f"question {index}", **kwargs)


def approximation(params: Mapping[str, Any]) -> int:
    return prompt_shape(params).approx_tokens


def test_a_small_file_is_counted_whole_and_exactly() -> None:
    # Given 5 requests and a counter that answers 1000 + the request's number
    def count(params: Mapping[str, Any]) -> int:
        return 1000 + int(params["messages"][0]["content"].split()[-1])

    # When estimated
    result = estimate(requests(5), count)
    # Then the input is the sum of the counts, with no error, and the keys are the documented ones
    assert set(result) == KEYS
    assert set(result["cost_usd"]) == {"standard", "batch", "batch_cached_expected", "batch_max"}
    assert result["requests"] == 5
    assert result["input_tokens"] == 5010
    assert result["method"]["input"] == "counted"
    assert result["method"]["input_tokens_bound"] == 0


def test_costs_of_a_plain_file_are_the_hand_computed_figures() -> None:
    # 2 Haiku requests of 1000 input tokens and max_tokens 100: expected output 0.5 x 200 = 100
    result = estimate(requests(2, max_tokens=100), lambda _: 1000)
    assert result["output_tokens_expected"] == 100
    assert result["output_tokens_max"] == 200
    # standard: 2000 x $1 + 100 x $5 = 2,500 per million; batch half of it
    # batch_max: (2000 x $1 + 200 x $5) x 0.5 = 1,500 per million
    assert result["cost_usd"] == {
        "standard": "0.002500",
        "batch": "0.001250",
        "batch_cached_expected": "0.001250",
        "batch_max": "0.001500",
    }


def test_a_shared_cacheable_prefix_is_written_once_and_read_by_the_rest() -> None:
    # Given 3 Haiku requests sharing a 20,000-character system prompt marked for caching
    system = [{"type": "text", "text": "s" * 20_000, "cache_control": {"type": "ephemeral"}}]
    result = estimate(requests(3, system=system), approximation)
    # Then each request is 5005 tokens (20,018 characters / 4), its prefix 5001 (20,004 / 4):
    # cached: 12 plain + 5001 written (x $1.25) + 10,002 read (x $0.10) + 15 out (x $5) = 7,338.45 / 2
    assert result["input_tokens"] == 3 * 5005
    assert result["cost_usd"]["batch_cached_expected"] == "0.003669"
    # plain batch: (15,015 x $1 + 15 x $5) / 2 = 7,545; the upper bound writes every prefix:
    # (12 + 15,003 x $1.25 + 30 x $5) / 2 = 9,457.875
    assert result["cost_usd"]["batch"] == "0.007545"
    assert result["cost_usd"]["batch_max"] == "0.009458"


def test_a_primed_job_pays_its_prefix_written_once_at_the_standard_price_and_reads_it_in_every_request() -> None:
    # Given the same 3 requests sharing a 5001-token cached prefix, in a job that primes its cache
    system = [{"type": "text", "text": "s" * 20_000, "cache_control": {"type": "ephemeral"}}]
    estimator = Estimator(sample_size=10)
    for custom_id, params in requests(3, system=system):
        estimator.add(custom_id, params)
    counts = {sampled.custom_id: approximation(sampled.params) for sampled in estimator.sample()}
    result = estimator.result(counts, primed=True)
    costs = result["cost_usd"]
    # Then priming writes the prefix at the standard price with one output token:
    # 5001 x $1.25 + 1 x $5 = 6,256.25 per million
    assert costs["priming"] == "0.006256"
    # ...the batch reads it in all 3: (12 plain + 15,003 read x $0.10 + 15 out x $5) / 2 = 793.65,
    # and the job's expected cost is both: 7,049.9 per million
    assert costs["batch_cached_expected"] == "0.007050"
    # ...and the upper bound (every prefix written in the batch) pays the priming as well
    assert costs["batch_max"] == "0.015714"
    assert result["method"]["cache"].startswith("primed:")
    # Unprimed, the same job writes once in the batch and has no priming cost
    unprimed = estimator.result(counts)["cost_usd"]
    assert "priming" not in unprimed
    assert unprimed["batch_cached_expected"] == "0.003669"


def test_a_prefix_shorter_than_the_models_minimum_is_not_cached() -> None:
    system = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    result = estimate(requests(3, system=system), approximation)
    assert result["cost_usd"]["batch_cached_expected"] == result["cost_usd"]["batch"]


def test_the_sample_is_seeded_reproducible_and_stated() -> None:
    def sample_ids(seed: int) -> list[str]:
        estimator = Estimator(sample_size=20, seed=seed)
        for custom_id, params in requests(500):
            estimator.add(custom_id, params)
        return [s.custom_id for s in estimator.sample()]

    assert sample_ids(7) == sample_ids(7)
    assert sample_ids(7) != sample_ids(8)
    assert len(set(sample_ids(7))) == 20
    result = estimate(requests(500), approximation, sample_size=20, seed=7)
    assert result["method"]["input"] == "sampled"
    assert (result["method"]["sample_size"], result["method"]["seed"]) == (20, 7)


def test_when_no_count_succeeds_the_local_approximation_is_used_and_said() -> None:
    def failing(_: Mapping[str, Any]) -> int:
        raise ConnectionError("no route")

    result = estimate(requests(4), failing)
    assert result["input_tokens"] == sum(approximation(p) for _, p in requests(4))
    assert result["method"]["input"] == "approximated"
    assert result["method"]["fallback"] == "no count succeeded (ConnectionError: no route)"
    assert result["method"]["input_tokens_bound"] is None


def test_the_expected_output_follows_earlier_jobs_when_given() -> None:
    result = estimate(requests(4, max_tokens=100), approximation, history=OutputHistory(50, 1000))
    assert result["output_tokens_expected"] == 20
    assert result["method"]["output_expected"].startswith("0.05 x max_tokens, the share earlier jobs used")


@pytest.mark.parametrize("shape", ["lognormal", "bimodal", "uncorrelated"])
def test_the_bound_covers_the_true_total_in_most_seeded_trials(shape: str) -> None:
    # Populations whose true tokens relate to the approximation more or less loosely; fixed
    # seeds make each trial the same on every run. A 95% interval should cover ~95% of them.
    covered = 0
    trials = 30
    for trial in range(trials):
        rng = random.Random(f"{shape}-{trial}")
        truth: dict[str, int] = {}
        population = []
        for index in range(600):
            text = "w" * rng.randint(10, 2000) + f" {index}"
            params = request(text)
            approx = approximation(params)
            if shape == "lognormal":
                tokens = max(1, round(approx * rng.lognormvariate(0, 0.3)))
            elif shape == "bimodal":
                tokens = approx * (3 if rng.random() < 0.1 else 1)
            else:
                tokens = rng.randint(1, 2000)
            truth[text] = tokens
            population.append((f"r-{index}", params))
        result = estimate(population, truth_of(truth), sample_size=100, seed=trial)
        bound = result["method"]["input_tokens_bound"]
        covered += abs(result["input_tokens"] - sum(truth.values())) <= bound
    assert covered >= 0.85 * trials


def truth_of(truth: Mapping[str, int]) -> Callable[[Mapping[str, Any]], int]:
    return lambda params: truth[params["messages"][0]["content"]]


def test_memory_holds_the_sample_not_the_stream() -> None:
    # Given streams of 1,000 and 4,000 requests of 2 KB each
    import tracemalloc

    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            estimator = Estimator(sample_size=50)
            for custom_id, params in requests(count, system="x" * 2000):
                estimator.add(custom_id, params)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Then four times the requests take well under twice the memory (the stream is 8 MB)
    assert peak(4000) < 1.5 * peak(1000)


def test_a_prefix_is_what_comes_up_to_the_last_breakpoint() -> None:
    marked = {"type": "ephemeral"}
    system = [{"type": "text", "text": "rules " * 10, "cache_control": marked}]
    one = prompt_shape(request("first question", system=system))
    two = prompt_shape(request("another question", system=system))
    other = prompt_shape(request("first question", system=[{**system[0], "text": "other rules"}]))
    assert one.prefix_digest is not None
    assert one.prefix_digest == two.prefix_digest != other.prefix_digest
    assert one.prefix_tokens == 16  # "text" + "rules " x 10: 64 characters / 4
    assert prompt_shape(request("q")).prefix_digest is None
    long_lived = prompt_shape({**request("q", system=[{**system[0], "cache_control": {**marked, "ttl": "1h"}}])})
    assert long_lived.prefix_ttl == "1h"
    whole = prompt_shape({**request("the last block"), "cache_control": marked})
    assert whole.prefix_tokens == whole.approx_tokens


def _line(custom_id: str, params: Mapping[str, Any]) -> bytes:
    import json

    return json.dumps({"custom_id": custom_id, "params": params}).encode()


def test_lines_are_approximated_by_their_bytes_and_a_snapshot_restores_the_same_estimate() -> None:
    import json

    from batchdrop.domain.estimate import SAMPLE_LINE_BYTES, counted_estimate

    # Given request lines, some sharing a cached system prefix long enough to cache, one too long to hold
    cached = [{"type": "text", "text": "policy " * 4000, "cache_control": {"type": "ephemeral"}}]
    lines = [_line(f"r-{n}", request(f"question {n}", system=cached if n % 2 else None)) for n in range(30)]
    lines.append(_line("huge", request("x" * (SAMPLE_LINE_BYTES + 10))))

    def fed(estimator: Estimator, part: list[bytes]) -> Estimator:
        for line in part:
            params = json.loads(line)["params"]
            estimator.add_line(json.loads(line)["custom_id"], line, params["model"], params["max_tokens"])
        return estimator

    def count(body: Mapping[str, Any]) -> int:
        assert "max_tokens" not in body
        return len(json.dumps(body)) // 3

    # When fed whole, and fed in two parts with a snapshot (through JSON) between them
    whole = fed(Estimator(sample_size=10, seed=3), lines)
    first = fed(Estimator(sample_size=10, seed=3), lines[:13])
    resumed = fed(Estimator.restored(json.loads(json.dumps(first.snapshot()))), lines[13:])

    # Then both give the same state and the same estimate
    assert resumed.snapshot() == whole.snapshot()
    assert counted_estimate(resumed, count) == counted_estimate(whole, count)
    # ...each request approximated by its line's bytes / 4
    assert sum(t.approx for t in whole.tallies().values()) == sum(len(line) // 4 for line in lines)
    # ...the cached prefix written once and read by the other 14 requests holding it (each one's
    # prefix on its own line's scale, so within a percent of one another)
    tally = whole.tallies()["claude-haiku-4-5"]
    assert tally.write_5m > 0
    assert tally.prefix_5m == pytest.approx(15 * tally.write_5m, rel=0.01)
    # ...and a sampled line too long to hold is not counted, and says so
    estimate, _ = counted_estimate(Estimator(sample_size=2, seed=0), count)
    assert estimate["method"]["fallback"] == "the file holds no valid request"
    lone = fed(Estimator(sample_size=2), [lines[-1]])
    estimate, _ = counted_estimate(lone, count)
    assert estimate["method"]["input"] == "approximated"
    assert "longer than a sampled line may be" in estimate["method"]["fallback"]


def test_counting_stops_when_its_time_is_spent() -> None:
    from batchdrop.domain.estimate import counted_estimate

    estimator = Estimator(sample_size=5)
    for custom_id, params in requests(5):
        estimator.add(custom_id, params)
    estimate, _ = counted_estimate(estimator, lambda body: 100, seconds=0)
    assert estimate["method"]["input"] == "approximated"
    assert "the 0 s given to counting were spent" in estimate["method"]["fallback"]


def test_with_a_precision_target_counting_stops_once_the_bound_is_within_it() -> None:
    from batchdrop.domain.estimate import COUNT_ROUND, counted_estimate

    def fill() -> Estimator:
        estimator = Estimator(sample_size=200)
        for custom_id, params in requests(1000):
            estimator.add(custom_id, params)
        return estimator

    calls: list[str] = []

    def alike(params: Mapping[str, Any]) -> int:  # every request's count in step with its approximation
        calls.append("x")
        return 3 * approximation(params)

    # Given requests whose counts follow their approximation: one round is enough
    result, _ = counted_estimate(fill(), alike, workers=4, precision=0.005)
    assert len(calls) == COUNT_ROUND
    assert result["method"]["counted"] == COUNT_ROUND
    assert result["method"]["input"] == "sampled"
    assert (
        result["method"]["counting_stopped"]
        == f"after {COUNT_ROUND} counts: the input's 95% bound was within 0.5% of it"
    )
    assert result["input_tokens"] == 3 * sum(approximation(params) for _, params in requests(1000))

    # Given requests whose counts scatter widely: the whole sample is counted, and no stop is stated
    rng = random.Random(7)
    scattered, _ = counted_estimate(fill(), lambda params: rng.randint(1, 5000), workers=4, precision=0.005)
    assert scattered["method"]["counted"] == 200
    assert scattered["method"]["counting_stopped"] is None
    # ...as it is without a target
    calls.clear()
    whole, _ = counted_estimate(fill(), alike, workers=4)
    assert len(calls) == 200
    assert whole["method"]["counting_stopped"] is None


def test_a_lines_cache_mark_as_its_check_found_it_gives_the_estimate_a_search_of_the_line_gives() -> None:
    import json

    from batchdrop.domain.estimate import counted_estimate
    from batchdrop.domain.requests import ValidLine, check_lines

    # Given lines with a cached prefix, lines mentioning cache_control in text only, and plain ones
    cached = [{"type": "text", "text": "policy " * 4000, "cache_control": {"type": "ephemeral"}}]
    mention = [{"type": "text", "text": 'say "cache_control" ' * 10}]
    systems = [cached, mention, None]
    lines = [_line(f"r-{n}", request(f"question {n}", system=systems[n % 3])) for n in range(30)]
    checked = [line for line in check_lines(lines) if isinstance(line, ValidLine)]
    assert [line.cache_marked for line in checked[:3]] == [True, False, False]

    def fed(marks: bool) -> Estimator:
        estimator = Estimator(sample_size=10, seed=5)
        for line in checked:
            mark = line.cache_marked if marks else None
            estimator.add_line(line.custom_id, line.body, line.model or "", line.max_tokens, cache_marked=mark)
        return estimator

    # When fed with the mark the check found, and with none (each line searched for it)
    def count(body: Any) -> int:
        return len(json.dumps(body)) // 3

    # Then the state and the estimate are the same, the cached prefix found in both
    assert fed(marks=True).snapshot() == fed(marks=False).snapshot()
    assert counted_estimate(fed(marks=True), count) == counted_estimate(fed(marks=False), count)
    tally = fed(marks=True).tallies()["claude-haiku-4-5"]
    assert tally.write_5m > 0
    assert tally.prefix_5m == pytest.approx(10 * tally.write_5m, rel=0.01)  # the 10 lines holding it
