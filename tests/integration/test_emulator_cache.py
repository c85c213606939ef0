"""The emulator's prompt cache over HTTP, through the SDK: each model's minimum length, ttls,
one cache per API key, a batch's parallel requests missing each other's writes unless the
prefix was primed first, reproducible draws, and the cache kept across a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
from anthropic.types import Usage

from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.server import Emulator
from batchdrop_local.emulator.settings import EmulatorSettings
from tests.integration.emulator_support import HOLD_LATENCY, MODEL, MakeClient, StartEmulator

HAIKU_MINIMUM = 4096  # Claude Haiku 4.5 (the tests' MODEL) caches prefixes from 4096 tokens
BATCH_SIZE = 50


def system(tokens: int, word: str = "s", **cache_control: str) -> list[dict[str, Any]]:
    """A system prompt of exactly `tokens` tokens (4 characters each), marked as a breakpoint."""
    return [{"type": "text", "text": word * 4 * tokens, "cache_control": {"type": "ephemeral", **cache_control}}]


def ask(client: anthropic.Anthropic, prompt: list[dict[str, Any]], question: str = "Question 000?") -> Usage:
    """One synchronous request with `prompt` as its system prompt; its usage."""
    message = client.messages.create(
        model=MODEL, max_tokens=32, system=prompt, messages=[{"role": "user", "content": question}]
    )
    return message.usage


def batch_usages(
    client: anthropic.Anthropic, emulator: Emulator, prompt: list[dict[str, Any]], count: int = BATCH_SIZE
) -> dict[str, Usage]:
    """Run a batch of `count` requests sharing `prompt`, each with its own question, to its end:
    custom_id -> usage."""
    requests = [
        {
            "custom_id": f"r-{i:03d}",
            "params": {
                "model": MODEL,
                "max_tokens": 32,
                "system": prompt,
                "messages": [{"role": "user", "content": f"Question {i:03d}?"}],
            },
        }
        for i in range(count)
    ]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    EmulatorControl(emulator.url, timeout=30).end([batch.id])
    usages = {}
    for row in client.messages.batches.results(batch.id):
        assert row.result.type == "succeeded", row.result
        usages[row.custom_id] = row.result.message.usage
    return usages


def cache_split(usage: Usage) -> tuple[int, int]:
    """(tokens written to the cache, tokens read from it)."""
    return usage.cache_creation_input_tokens or 0, usage.cache_read_input_tokens or 0


def test_a_prefix_below_the_models_minimum_is_plain_input_and_one_at_it_is_written_then_read(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator, and a prefix one token short of Haiku 4.5's minimum and one at it
    emulator = start_emulator()
    client = make_client(emulator)
    below, at = system(HAIKU_MINIMUM - 1, "b"), system(HAIKU_MINIMUM, "a")

    # When each goes in two batches, one after the other
    below_usages = [batch_usages(client, emulator, below, count=1)["r-000"] for _ in range(2)]
    at_usages = [batch_usages(client, emulator, at, count=1)["r-000"] for _ in range(2)]

    # Then the short one is never cached, and the other is written by the first, read by the second
    for usage in below_usages:
        assert cache_split(usage) == (0, 0)
        assert usage.input_tokens >= HAIKU_MINIMUM - 1
    assert cache_split(at_usages[0]) == (HAIKU_MINIMUM, 0)
    assert cache_split(at_usages[1]) == (0, HAIKU_MINIMUM)


def test_an_entry_expires_after_its_ttl_scaled_by_the_latency(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator whose latency (standing for an hour) makes "5m" 2 s and "1h" 24 s
    emulator = start_emulator(latency=24.0)
    client = make_client(emulator)
    five_minutes, one_hour = system(HAIKU_MINIMUM, "f"), system(HAIKU_MINIMUM, "h", ttl="1h")

    # When each prefix is written, read at once, then asked for again after 2.5 s
    written = [ask(client, five_minutes), ask(client, one_hour)]
    read_at_once = [ask(client, five_minutes), ask(client, one_hour)]
    time.sleep(2.5)
    later = [ask(client, five_minutes), ask(client, one_hour)]

    # Then both were cached, under their own ttl; 2.5 s later the 5-minute entry had expired
    # and is written again, while the 1-hour one is still read
    assert written[0].cache_creation is not None
    assert written[0].cache_creation.ephemeral_5m_input_tokens == HAIKU_MINIMUM
    assert written[1].cache_creation is not None
    assert written[1].cache_creation.ephemeral_1h_input_tokens == HAIKU_MINIMUM
    assert [cache_split(usage) for usage in read_at_once] == [(0, HAIKU_MINIMUM)] * 2
    assert cache_split(later[0]) == (HAIKU_MINIMUM, 0)
    assert cache_split(later[1]) == (0, HAIKU_MINIMUM)


def test_two_api_keys_never_share_a_cache_entry(start_emulator: StartEmulator, make_client: MakeClient) -> None:
    # Given one emulator, and clients with two different keys
    emulator = start_emulator()
    alice = make_client(emulator, api_key="key-alice")
    bob = make_client(emulator, api_key="key-bob")
    prompt = system(HAIKU_MINIMUM)

    # When Alice caches a prefix, then Bob sends it, synchronously and in a batch
    alice_first = ask(alice, prompt)
    bob_first = ask(bob, prompt)
    alice_batch = batch_usages(alice, emulator, prompt, count=1)["r-000"]
    EmulatorControl(emulator.url, timeout=30).reset()  # nothing cached: Bob's batch must not find Alice's write
    ask(alice, prompt)
    bob_batch = batch_usages(bob, emulator, prompt, count=1)["r-000"]

    # Then Bob writes his own entry each time, and Alice reads hers
    assert cache_split(alice_first) == (HAIKU_MINIMUM, 0)
    assert cache_split(bob_first) == (HAIKU_MINIMUM, 0)
    assert cache_split(alice_batch) == (0, HAIKU_MINIMUM)
    assert cache_split(bob_batch) == (HAIKU_MINIMUM, 0)


# With --seed 0 and --cache-visibility 0.1, how many of the 49 later requests of an emulator's
# first batch see the prefix the first one wrote (4.9 expected): those whose own generator,
# random.Random(f"cache:{seed}:{batch seq}:{custom_id}"), draws below 0.1 (docs/emulator-cache.md).
READS_AT_SEED_0 = 6


def test_a_batch_sharing_an_uncached_prefix_mostly_writes_it_and_after_priming_reads_it_everywhere(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a fresh emulator, seed 0, and a prefix shared by 50 requests, cached nowhere
    emulator = start_emulator(seed=0)
    client = make_client(emulator)
    prompt = system(HAIKU_MINIMUM)

    # When the batch runs cold
    cold = batch_usages(client, emulator, prompt)

    # Then its requests, running in parallel, mostly miss each other's write: the first writes,
    # and each other one reads only with probability 0.1, the count fixed by the seed
    splits = [cache_split(cold[custom_id]) for custom_id in sorted(cold)]
    assert splits[0] == (HAIKU_MINIMUM, 0)
    reads = splits.count((0, HAIKU_MINIMUM))
    assert splits.count((HAIKU_MINIMUM, 0)) == BATCH_SIZE - reads
    assert reads == READS_AT_SEED_0

    # And when the cache is emptied, the prefix primed by one synchronous request, then the
    # same batch sent again, every request reads it
    EmulatorControl(emulator.url, timeout=30).reset()
    primed = ask(client, prompt)
    warm = batch_usages(client, emulator, prompt)
    assert cache_split(primed) == (HAIKU_MINIMUM, 0)
    assert {cache_split(usage) for usage in warm.values()} == {(0, HAIKU_MINIMUM)}
    assert len(warm) == BATCH_SIZE


def test_the_same_seed_draws_the_same_usage_and_another_seed_other_draws(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given three fresh emulators, two with seed 3 and one with seed 4, visibility one half
    def cold_run(seed: int) -> dict[str, tuple[int, int]]:
        emulator = start_emulator(seed=seed, cache_visibility=0.5)
        usages = batch_usages(make_client(emulator), emulator, system(HAIKU_MINIMUM))
        return {custom_id: cache_split(usage) for custom_id, usage in usages.items()}

    # When each runs the same cold batch
    first, again, other = cold_run(3), cold_run(3), cold_run(4)

    # Then the same seed gives the same split for every request; another seed gives another
    assert first == again
    assert first != other
    assert 0 < list(first.values()).count((0, HAIKU_MINIMUM)) < BATCH_SIZE


def test_the_cache_survives_a_restart_on_the_same_database(
    start_emulator: StartEmulator, make_client: MakeClient, tmp_path: Path
) -> None:
    # Given an emulator on a database file, whose cache a synchronous request primed
    db = tmp_path / "emulator.sqlite3"
    with Emulator(EmulatorSettings(port=0, latency=HOLD_LATENCY, db=db)) as first:
        ask(make_client(first), system(HAIKU_MINIMUM))

    # When another emulator starts on the same file and gets a batch with the prefix
    second = start_emulator(db=db)
    usages = batch_usages(make_client(second), second, system(HAIKU_MINIMUM), count=3)

    # Then every request reads the entry the first emulator wrote
    assert {cache_split(usage) for usage in usages.values()} == {(0, HAIKU_MINIMUM)}


def test_count_tokens_is_every_input_token_however_the_cache_split_them(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a prompt long enough to cache, counted
    emulator = start_emulator()
    client = make_client(emulator)
    prompt = system(HAIKU_MINIMUM + 100)
    messages: Any = [{"role": "user", "content": "Question 000?"}]  # as long as every question here
    counted = client.messages.count_tokens(model=MODEL, system=prompt, messages=messages).input_tokens  # type: ignore[arg-type]

    # When it is written, read synchronously, then read and written by a batch's requests
    usages = [ask(client, prompt), ask(client, prompt), *batch_usages(client, emulator, prompt, count=5).values()]
    EmulatorControl(emulator.url, timeout=30).reset()
    usages += batch_usages(client, emulator, prompt, count=5).values()

    # Then each usage's input, written and read tokens add up to the count
    for usage in usages:
        written, read = cache_split(usage)
        assert usage.input_tokens + written + read == counted
    assert {cache_split(usage)[0] > 0 for usage in usages} == {True, False}
