"""The emulator's store: results written in request order, served in their shuffled order,
from a new database and from one made before results were stored that way."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from batchdrop_local.emulator.faults import FaultInjector, FaultSettings
from batchdrop_local.emulator.responder import Responder
from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.emulator.store import Store

# The results table as databases made by earlier versions of the emulator have it.
_EARLIER_RESULTS = """
CREATE TABLE results (
    batch_seq INTEGER NOT NULL, shuffle INTEGER NOT NULL, idx INTEGER NOT NULL, line BLOB NOT NULL,
    PRIMARY KEY (batch_seq, shuffle, idx)
) WITHOUT ROWID;
"""


def _store(db: Path) -> Store:
    faults = FaultInjector(FaultSettings(), 0)

    def answerer() -> Responder:
        return Responder(seed=0)

    return Store(EmulatorSettings(port=0, latency=3600, db=db), lambda: faults, answerer, lambda: 1_000.0)


def _results(store: Store, count: int) -> tuple[list[str], list[str]]:
    """End a batch of `count` requests; its custom_ids as served, and in submission order."""
    custom_ids = [f"req-{i:04d}" for i in range(count)]
    requests = [
        {
            "custom_id": cid,
            "params": {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": cid}]},
        }
        for cid in custom_ids
    ]
    spool = store.new_spool()
    spool.write_text(json.dumps({"requests": requests}))
    batch = store.add_batch(spool, custom_ids)
    assert store.end_now([batch.id], "complete") == [batch.id]
    size, lines = store.results_of(batch.id)
    body = b"".join(lines)
    assert len(body) == size
    return [json.loads(line)["custom_id"] for line in body.splitlines()], custom_ids


@pytest.mark.parametrize("earlier", [False, True], ids=["new database", "earlier database"])
def test_results_are_served_shuffled_by_the_shuffle_key_whatever_the_table(tmp_path: Path, earlier: bool) -> None:
    # Given a database, made by this emulator or with an earlier results table
    db = tmp_path / "emulator.sqlite3"
    if earlier:
        with sqlite3.connect(db) as conn:
            conn.executescript(_EARLIER_RESULTS)
    store = _store(db)
    try:
        # When a batch of 300 requests ends and its results are read
        served, submitted = _results(store, 300)
        batch_id = store.page(1, None, None)[0][0].id

        # Then every request is there once, in the order of its shuffle key, not submission order
        assert sorted(served) == submitted
        assert served != submitted
        assert served == sorted(submitted, key=lambda cid: store._shuffle_key(batch_id, cid))
    finally:
        store.close()


def test_serving_results_reads_them_in_order_without_sorting(tmp_path: Path) -> None:
    # Given a new database: 100,000 results must not be sorted in memory on every download
    store = _store(tmp_path / "emulator.sqlite3")
    try:
        # When SQLite plans the read of a batch's results, one page after another
        conn = sqlite3.connect(store.db_path)
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT shuffle, idx, line FROM results WHERE batch_seq = ?"
            " AND (shuffle, idx) > (?, ?) ORDER BY shuffle, idx LIMIT ?",
            (1, 0, 0, 10),
        ).fetchall()
        conn.close()

        # Then it walks the shuffle index rather than sorting
        details = " ".join(str(row[-1]) for row in plan)
        assert "results_by_shuffle" in details
        assert "TEMP B-TREE" not in details
    finally:
        store.close()
