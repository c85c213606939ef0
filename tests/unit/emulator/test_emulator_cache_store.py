"""The prompt cache inside the emulator's store, on a clock the tests move: ttls scaled by the
latency, a read renewing an entry's life, a batch reading what was alive when it was created,
and a database from before the cache had owners and lifetimes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from batchdrop_local.cli import main
from batchdrop_local.emulator.faults import FaultInjector, FaultSettings
from batchdrop_local.emulator.responder import Responder
from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.emulator.store import Store

MODEL = "claude-sonnet-4-5"  # caches from 1024 tokens
PREFIX_TOKENS = 1200
WORKSPACE = "w1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_store(db: Path, clock: Clock, **settings: Any) -> Store:
    faults = FaultInjector(FaultSettings(), 0)
    # Latency 3600: the emulator's hour is a real one, so ttls are the real 300 s and 3600 s.
    merged = EmulatorSettings(**({"port": 0, "latency": 3600.0, "db": db} | settings))
    return Store(merged, lambda: faults, lambda: Responder(seed=0), clock)


def params(question: str = "Q0") -> dict[str, Any]:
    prefix = {"type": "text", "text": "p" * 4 * PREFIX_TOKENS, "cache_control": {"type": "ephemeral"}}
    return {"model": MODEL, "max_tokens": 16, "system": [prefix], "messages": [{"role": "user", "content": question}]}


def split(result: dict[str, Any]) -> tuple[int, int]:
    usage = result["message"]["usage"]
    return usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]


def ask(store: Store, workspace: str = WORKSPACE) -> tuple[int, int]:
    return split(store.message(params(), workspace, "msg_test"))


def run_batch(store: Store, count: int, workspace: str = WORKSPACE) -> list[tuple[int, int]]:
    """Create a batch of `count` requests sharing the prefix and end it now: each one's split."""
    custom_ids = [f"r-{i}" for i in range(count)]
    spool = store.new_spool()
    spool.write_text(json.dumps({"requests": [{"custom_id": c, "params": params(c)} for c in custom_ids]}))
    batch = store.add_batch(spool, custom_ids, workspace)
    return end_batch(store, batch.id)


def end_batch(store: Store, batch_id: str) -> list[tuple[int, int]]:
    assert store.end_now([batch_id], "complete") == [batch_id]
    _, lines = store.results_of(batch_id)
    rows = [json.loads(line) for line in b"".join(lines).splitlines()]
    return [split(row["result"]) for row in sorted(rows, key=lambda row: row["custom_id"])]


WRITE, READ = (PREFIX_TOKENS, 0), (0, PREFIX_TOKENS)


def test_ttls_are_scaled_like_the_other_spans() -> None:
    # The latency stands for an hour; at latency 0 the spans are the real ones
    assert EmulatorSettings(latency=2.0).cache_ttl_seconds == pytest.approx({"5m": 2 / 12, "1h": 2.0})
    assert EmulatorSettings(latency=0).cache_ttl_seconds == {"5m": 300.0, "1h": 3600.0}
    with pytest.raises(ValueError, match=r"--cache-visibility must be between 0 and 1, got 1\.5"):
        EmulatorSettings(cache_visibility=1.5)


def test_a_read_renews_the_entrys_life(tmp_path: Path) -> None:
    # Given a store whose clock the test moves, and a prefix written at 0 for 5 minutes
    clock = Clock()
    store = make_store(tmp_path / "e.sqlite3", clock)
    try:
        splits = [ask(store)]

        # When it is read at 200 s, again at 450 s (past its first expiry), then not until 1000 s
        for moment in (200.0, 450.0, 1000.0):
            clock.now = moment
            splits.append(ask(store))

        # Then each read renewed it for 5 minutes, until it was left unread longer than that
        assert splits == [WRITE, READ, READ, WRITE]
    finally:
        store.close()


def test_a_batch_reads_what_was_alive_at_its_creation_even_if_it_expired_before_processing(tmp_path: Path) -> None:
    # Given a prefix written at 0 for 5 minutes, and a batch created at 100 s
    clock = Clock()
    store = make_store(tmp_path / "e.sqlite3", clock)
    try:
        ask(store)
        clock.now = 100.0
        spool = store.new_spool()
        requests = [{"custom_id": f"r-{i}", "params": params(f"r-{i}")} for i in range(3)]
        spool.write_text(json.dumps({"requests": requests}))
        batch = store.add_batch(spool, [r["custom_id"] for r in requests], WORKSPACE)

        # When the batch is processed at 1000 s, long after the entry would have expired
        clock.now = 1000.0
        splits = end_batch(store, batch.id)

        # Then every request read it, and the reads renewed it from 1000 s
        assert splits == [READ] * 3
        clock.now = 1250.0
        assert ask(store) == READ
    finally:
        store.close()


def test_a_batch_sees_nothing_of_another_workspace_and_a_full_visibility_shares_writes(tmp_path: Path) -> None:
    # Given a store where every write inside a batch is visible to its later requests
    clock = Clock()
    store = make_store(tmp_path / "e.sqlite3", clock, cache_visibility=1.0)
    try:
        # When one workspace primes the prefix and another runs a batch with it
        ask(store, "other")
        splits = run_batch(store, 4)

        # Then the batch's first request writes the workspace's own entry and the others read it
        assert splits == [WRITE, READ, READ, READ]
    finally:
        store.close()


def test_a_database_with_the_earlier_prompt_cache_table_gets_it_made_again(tmp_path: Path) -> None:
    # Given a database whose prompt_cache table has only keys, with one in it
    db = tmp_path / "e.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE prompt_cache (key TEXT PRIMARY KEY) WITHOUT ROWID")
        conn.execute("INSERT INTO prompt_cache (key) VALUES ('claude-sonnet-4-5:abc')")
    conn.close()

    # When a store opens it and a request is cached, then the store is opened again
    store = make_store(db, Clock())
    try:
        first = ask(store)
    finally:
        store.close()
    reopened = make_store(db, Clock())
    try:
        second = ask(reopened)
    finally:
        reopened.close()

    # Then the table has the new shape, the old key is gone, and the new entry was kept
    assert (first, second) == (WRITE, READ)
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(prompt_cache)")]
        keys = [row[0] for row in conn.execute("SELECT key FROM prompt_cache")]
    conn.close()
    assert columns == ["workspace", "key", "written_at", "expires_at"]
    assert len(keys) == 1
    assert keys[0].startswith(f"{MODEL}:")


def test_the_cache_visibility_flag_becomes_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an emulator class that records the settings it is given and refuses to listen
    seen: list[Any] = []

    def record(settings: Any) -> None:
        seen.append(settings)
        raise OSError("not listening in a unit test")

    monkeypatch.setattr("batchdrop_local.emulator.server.Emulator", record)

    # When the command is run with the flag, and without it
    for flags in (["--cache-visibility", "0.25"], []):
        with pytest.raises(SystemExit):
            main(["emulator", "--port", "0", *flags])

    # Then the setting is the flag's value, 0.1 by default
    assert [settings.cache_visibility for settings in seen] == [0.25, 0.1]
