"""The emulator's state: batches, the custom_ids each one carried, and their results, in
SQLite; each batch's request body is kept as submitted in a file beside the database.

A batch's requests are only read back when it ends (`finalize`), streamed from its body
file, so neither create nor finalize ever holds a whole batch in memory."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ijson

from batchdrop_local.emulator.caching import BatchRequestView, PromptCacheTable, SynchronousView, request_rng_seed
from batchdrop_local.emulator.faults import FaultInjector
from batchdrop_local.emulator.responder import PromptCache
from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.emulator.structured import InvalidKind
from batchdrop_local.emulator.validation import params_error
from batchdrop_local.emulator.wire import compact, derived_id, new_batch_id, rfc3339

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    n INTEGER NOT NULL,
    created_at REAL NOT NULL,
    ready_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    archive_at REAL NOT NULL,
    cancel_initiated_at REAL,
    cancel_done_at REAL,
    ended_at REAL,
    archived_at REAL,
    status TEXT NOT NULL,
    counts TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS request_ids (
    batch_seq INTEGER NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL,
    PRIMARY KEY (batch_seq, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_ids_by_custom_id ON request_ids (custom_id, batch_seq);
-- Results are stored in request order (appends, cheap for a 100,000-line batch) and served in
-- shuffled order through the index.
CREATE TABLE IF NOT EXISTS results (
    batch_seq INTEGER NOT NULL, shuffle INTEGER NOT NULL, idx INTEGER NOT NULL, line BLOB NOT NULL,
    PRIMARY KEY (batch_seq, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_by_shuffle ON results (batch_seq, shuffle, idx);
-- The workspace (a digest of the API key) each batch was created with: its prompt cache.
CREATE TABLE IF NOT EXISTS batch_workspaces (batch_seq INTEGER PRIMARY KEY, workspace TEXT NOT NULL);
"""
# Databases made before the cache had owners and lifetimes hold a `prompt_cache (key)` table:
# those entries cannot be given either, so the table is made again, empty.
_PROMPT_CACHE = """
CREATE TABLE prompt_cache (
    workspace TEXT NOT NULL, key TEXT NOT NULL, written_at REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (workspace, key)
) WITHOUT ROWID
"""
_PROMPT_CACHE_COLUMNS = ["workspace", "key", "written_at", "expires_at"]

_CHUNK = 2000
_COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")
_TRANSIENT_MESSAGES = {"api_error": "Internal server error", "overloaded_error": "Overloaded"}


class ApiError(Exception):
    """An error the API answers with its envelope."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


class Answerer(Protocol):
    def result(
        self,
        params: dict[str, Any],
        *,
        custom_id: str,
        message_id: str,
        invalid_output: InvalidKind | None = None,
        cache: PromptCache | None = None,
        service_tier: str = "batch",
    ) -> dict[str, Any]: ...

    def structured(self, params: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Batch:
    seq: int
    id: str
    n: int
    created_at: float
    ready_at: float
    expires_at: float
    archive_at: float
    cancel_initiated_at: float | None
    cancel_done_at: float | None
    ended_at: float | None
    archived_at: float | None
    status: str
    counts: str | None
    deleted: int

    def processed_by(self, moment: float) -> int:
        """How many of its requests (in order) were processed by `moment`: processing runs
        evenly from create over the latency."""
        span = self.ready_at - self.created_at
        share = 1.0 if span <= 0 else min(1.0, max(0.0, (moment - self.created_at) / span))
        return math.floor(self.n * share)

    def live_counts(self, now: float | None) -> dict[str, int]:
        """request_counts before the batch ends: the requests processed so far (up to the cancel,
        once one was asked for) move out of `processing` evenly over the latency, as the real
        API's do. Their outcomes are drawn only when the batch ends, so until then they count
        as `succeeded`; the counts at the end are the real ones. Without `now`, all processing."""
        done = 0
        if now is not None:
            done = self.processed_by(min(now, self.cancel_initiated_at or now))
        return dict.fromkeys(_COUNT_KEYS, 0) | {"processing": self.n - done, "succeeded": done}

    def to_api(self, results_base: str, now: float | None = None) -> dict[str, Any]:
        """The MessageBatch object, keys in the real API's order, its counts as of `now`."""
        counts = json.loads(self.counts) if self.counts else self.live_counts(now)
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": counts,
            "ended_at": rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": rfc3339(self.archived_at),
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "results_url": f"{results_base}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class Store:
    def __init__(
        self,
        settings: EmulatorSettings,
        faults: Callable[[], FaultInjector],
        make_answerer: Callable[[], Answerer],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._faults = faults
        self._clock = clock
        if settings.db is None:
            self._tmpdir: Path | None = Path(tempfile.mkdtemp(prefix="batchdrop-emulator-"))
            self.db_path = self._tmpdir / "emulator.sqlite3"
        else:
            self._tmpdir = None
            self.db_path = Path(settings.db)
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.bodies = self.db_path.with_name(self.db_path.name + ".bodies")
        self.bodies.mkdir(exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._finalize_lock = threading.Lock()
        conn = self._conn()
        conn.executescript(_SCHEMA)
        self._cache = _open_prompt_cache(conn)
        self._answerer = make_answerer()
        for leftover in self.bodies.glob(".incoming-*"):
            leftover.unlink()

    # --- connections ------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def release(self) -> None:
        """Close the calling thread's connection. The server runs each HTTP connection in a
        thread of its own: one left open would hold its file descriptors until `close`."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._connections_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # --- create -----------------------------------------------------------------------

    def new_spool(self) -> Path:
        return self.bodies / f".incoming-{uuid.uuid4().hex}"

    def pending_requests(self) -> int:
        row = (
            self._conn()
            .execute("SELECT COALESCE(SUM(n), 0) FROM batches WHERE status != 'ended' AND deleted = 0")
            .fetchone()
        )
        return int(row[0])

    def add_batch(self, spool: Path, custom_ids: list[str], workspace: str = "") -> Batch:
        """Record a validated batch whose body is in `spool`; the body moves beside the db.
        `workspace` owns the prompt cache its requests read and write."""
        now = self._clock()
        settings = self.settings
        batch_id = new_batch_id()
        body = self._body_path(batch_id)
        spool.rename(body)
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO batches (id, n, created_at, ready_at, expires_at, archive_at, status)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'in_progress')",
                    (
                        batch_id,
                        len(custom_ids),
                        now,
                        now + settings.latency,
                        now + settings.expiry_seconds,
                        now + settings.retention_seconds,
                    ),
                )
                seq = cursor.lastrowid
                conn.execute("INSERT INTO batch_workspaces (batch_seq, workspace) VALUES (?, ?)", (seq, workspace))
                conn.executemany(
                    "INSERT INTO request_ids (batch_seq, idx, custom_id) VALUES (?, ?, ?)",
                    ((seq, idx, cid) for idx, cid in enumerate(custom_ids)),
                )
        except BaseException:
            body.unlink(missing_ok=True)
            raise
        return self._get(batch_id)

    # --- reads ------------------------------------------------------------------------

    def _get(self, batch_id: str, *, include_deleted: bool = False) -> Batch:
        row = self._conn().execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None or (row[-1] and not include_deleted):
            raise ApiError(404, "not_found_error", f"No message batch found with id '{batch_id}'")
        return Batch(*row)

    def now(self) -> float:
        """The store's clock: what a batch's counts are reckoned against."""
        return self._clock()

    def get(self, batch_id: str) -> Batch:
        return self._get(batch_id)

    def page(self, limit: int, after_id: str | None, before_id: str | None) -> tuple[list[Batch], bool]:
        """One page of the list, newest first, and whether more lie beyond it."""
        conn = self._conn()
        if before_id is not None:
            seq = self._cursor_seq(before_id, "before_id")
            rows = conn.execute(
                "SELECT * FROM batches WHERE deleted = 0 AND seq > ? ORDER BY seq ASC LIMIT ?",
                (seq, limit + 1),
            ).fetchall()
            return [Batch(*r) for r in reversed(rows[:limit])], len(rows) > limit
        if after_id is not None:
            seq = self._cursor_seq(after_id, "after_id")
            rows = conn.execute(
                "SELECT * FROM batches WHERE deleted = 0 AND seq < ? ORDER BY seq DESC LIMIT ?",
                (seq, limit + 1),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT * FROM batches WHERE deleted = 0 ORDER BY seq DESC LIMIT ?", (limit + 1,)
            ).fetchall()
        return [Batch(*r) for r in rows[:limit]], len(rows) > limit

    def _cursor_seq(self, batch_id: str, name: str) -> int:
        row = self._conn().execute("SELECT seq FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise ApiError(400, "invalid_request_error", f"{name}: no message batch with id '{batch_id}'")
        return int(row[0])

    # --- transitions ------------------------------------------------------------------

    def cancel(self, batch_id: str) -> Batch:
        batch = self._get(batch_id)
        if batch.status == "ended":
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch '{batch_id}' has already ended and cannot be canceled",
            )
        if batch.status == "in_progress":
            now = self._clock()
            with self._write() as conn:
                conn.execute(
                    "UPDATE batches SET status = 'canceling', cancel_initiated_at = ?, cancel_done_at = ?"
                    " WHERE seq = ? AND status = 'in_progress'",
                    (now, now + self.settings.cancel_seconds, batch.seq),
                )
        return self._get(batch_id)

    def delete(self, batch_id: str) -> None:
        batch = self._get(batch_id)
        if batch.status != "ended":
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch '{batch_id}' is {batch.status}; only ended batches can be deleted (cancel it first)",
            )
        with self._write() as conn:
            conn.execute("UPDATE batches SET deleted = 1 WHERE seq = ?", (batch.seq,))
            conn.execute("DELETE FROM results WHERE batch_seq = ?", (batch.seq,))
        self._body_path(batch_id).unlink(missing_ok=True)

    # --- results ----------------------------------------------------------------------

    def results_of(self, batch_id: str) -> tuple[int, Iterator[bytes]]:
        """The size in bytes of a batch's JSONL results and an iterator over its lines."""
        batch = self._get(batch_id)
        if batch.status != "ended":
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch '{batch_id}' is still {batch.status}; results are available once it has ended",
            )
        if batch.archived_at is not None:
            raise ApiError(
                404,
                "not_found_error",
                f"Results of message batch '{batch_id}' are no longer available (archived)",
            )
        (size,) = (
            self._conn()
            .execute(
                "SELECT COALESCE(SUM(LENGTH(line) + 1), 0) FROM results WHERE batch_seq = ?",
                (batch.seq,),
            )
            .fetchone()
        )
        return int(size), self._result_lines(batch.seq)

    def _result_lines(self, seq: int) -> Iterator[bytes]:
        conn = self._conn()
        position = (-(2**63), -1)
        while True:
            rows = conn.execute(
                "SELECT shuffle, idx, line FROM results WHERE batch_seq = ? AND (shuffle, idx) > (?, ?)"
                " ORDER BY shuffle, idx LIMIT ?",
                (seq, *position, _CHUNK),
            ).fetchall()
            if not rows:
                return
            for _, _, line in rows:
                yield line + b"\n"
            position = (rows[-1][0], rows[-1][1])

    # --- the passing of time ----------------------------------------------------------

    def advance(self) -> None:
        """End every batch whose time has come, and archive those past retention."""
        now = self._clock()
        due = (
            self._conn()
            .execute(
                "SELECT id FROM batches WHERE status != 'ended' AND deleted = 0"
                " AND (ready_at <= ? OR expires_at <= ? OR cancel_done_at <= ?) ORDER BY seq",
                (now, now, now),
            )
            .fetchall()
        )
        for (batch_id,) in due:
            self._finalize(batch_id, None)
        stale = (
            self._conn()
            .execute(
                "SELECT id FROM batches WHERE status = 'ended' AND deleted = 0 AND archived_at IS NULL"
                " AND archive_at <= ?",
                (now,),
            )
            .fetchall()
        )
        for (batch_id,) in stale:
            self._archive(batch_id, None)

    def end_now(self, batch_ids: list[str] | None, how: str) -> list[str]:
        """Control: end open batches now, processing complete (`complete`) or `expired`."""
        return [batch_id for batch_id in self._open_ids(batch_ids) if self._finalize(batch_id, how)]

    def archive_now(self, batch_ids: list[str] | None) -> list[str]:
        ids = batch_ids
        if ids is None:
            rows = (
                self._conn()
                .execute("SELECT id FROM batches WHERE status = 'ended' AND deleted = 0 AND archived_at IS NULL")
                .fetchall()
            )
            ids = [r[0] for r in rows]
        return [batch_id for batch_id in ids if self._archive(batch_id, self._clock())]

    def _open_ids(self, batch_ids: list[str] | None) -> list[str]:
        if batch_ids is not None:
            for batch_id in batch_ids:
                self._get(batch_id)
            return batch_ids
        rows = (
            self._conn()
            .execute("SELECT id FROM batches WHERE status != 'ended' AND deleted = 0 ORDER BY seq")
            .fetchall()
        )
        return [r[0] for r in rows]

    def _archive(self, batch_id: str, at: float | None) -> bool:
        with self._finalize_lock:
            batch = self._get(batch_id)
            if batch.status != "ended" or batch.archived_at is not None:
                return False
            with self._write() as conn:
                conn.execute(
                    "UPDATE batches SET archived_at = ? WHERE seq = ?",
                    (at if at is not None else batch.archive_at, batch.seq),
                )
                conn.execute("DELETE FROM results WHERE batch_seq = ?", (batch.seq,))
            self._body_path(batch_id).unlink(missing_ok=True)
            return True

    def _ending(self, batch: Batch, forced: str | None) -> tuple[float, str, int]:
        """When the batch ends, how ("complete", "canceled" or "expired") and how many of its
        requests (in order) were processed by then: processing runs evenly over the latency."""
        processed_by = batch.processed_by
        now = self._clock()
        if batch.status == "canceling" and forced != "expired":
            assert batch.cancel_initiated_at is not None
            assert batch.cancel_done_at is not None
            # A cancel wins unless the batch would have ended on its own before it completed.
            if forced == "complete" or batch.cancel_done_at <= min(batch.ready_at, batch.expires_at):
                ended_at = now if forced else batch.cancel_done_at
                return ended_at, "canceled", processed_by(batch.cancel_initiated_at)
        if forced == "complete":
            return now, "complete", batch.n
        if forced == "expired":
            return now, "expired", processed_by(now)
        if batch.ready_at <= batch.expires_at:
            return batch.ready_at, "complete", batch.n
        return batch.expires_at, "expired", processed_by(batch.expires_at)

    def _finalize(self, batch_id: str, forced: str | None) -> bool:
        with self._finalize_lock:
            batch = self._get(batch_id, include_deleted=True)
            if batch.status == "ended" or batch.deleted:
                return False
            ended_at, how, processed = self._ending(batch, forced)
            attempts = self._prior_submissions(batch.seq)
            workspace = self._workspace_of(batch.seq)
            counts: Counter[str] = Counter()
            rows: list[tuple[int, int, int, bytes]] = []
            with self._body_path(batch_id).open("rb") as body:
                items = ijson.items(body, "requests.item", use_float=True, buf_size=1 << 20)
                for idx, item in enumerate(items):
                    custom_id = item["custom_id"]
                    if idx < processed:
                        cache = self._batch_view(batch, workspace, ended_at, custom_id)
                        result = self._outcome(batch_id, custom_id, item["params"], attempts[idx], cache)
                    else:
                        result = {"type": how}
                    counts[result["type"]] += 1
                    line = compact({"custom_id": custom_id, "result": result})
                    rows.append((batch.seq, self._shuffle_key(batch_id, custom_id), idx, line))
                    if len(rows) >= _CHUNK:
                        self._save_results(rows)
            self._save_results(rows)
            final_counts = {key: counts.get(key, 0) for key in _COUNT_KEYS}
            with self._write() as conn:
                conn.execute(
                    "UPDATE batches SET status = 'ended', ended_at = ?, counts = ? WHERE seq = ? AND status != 'ended'",
                    (ended_at, json.dumps(final_counts), batch.seq),
                )
            self._forget_expired_cache()
            return True

    def _workspace_of(self, seq: int) -> str:
        row = self._conn().execute("SELECT workspace FROM batch_workspaces WHERE batch_seq = ?", (seq,)).fetchone()
        return "" if row is None else str(row[0])  # a batch from before workspaces: the shared one

    def _batch_view(self, batch: Batch, workspace: str, moment: float, custom_id: str) -> BatchRequestView:
        """The prompt cache as one request of `batch` sees it, processed at `moment`."""
        settings = self.settings
        return BatchRequestView(
            self._cache,
            workspace,
            moment,
            settings.cache_ttl_seconds,
            created_at=batch.created_at,
            visibility=settings.cache_visibility,
            rng_seed=request_rng_seed(settings.seed, batch.seq, custom_id),
        )

    def _forget_expired_cache(self) -> None:
        """Entries that expired longer ago than a batch can stay open can never be read again."""
        before = self._clock() - self.settings.expiry_seconds
        self._cache.forget_expired(before)
        with self._write() as conn:
            conn.execute("DELETE FROM prompt_cache WHERE expires_at < ?", (before,))

    # --- synchronous messages ---------------------------------------------------------

    def message(self, params: dict[str, Any], workspace: str, message_id: str) -> dict[str, Any]:
        """A synchronous request's result (validated by the caller): it reads the workspace's
        cache as it is now, and what it writes is saved before it answers, so that a batch
        created next reads it."""
        settings = self.settings
        cache = SynchronousView(self._cache, workspace, self._clock(), settings.cache_ttl_seconds)
        result = self._answerer.result(
            params, custom_id=message_id, message_id=message_id, cache=cache, service_tier="standard"
        )
        with self._write() as conn:
            self._save_cache(conn)
        return result

    def _save_results(self, rows: list[tuple[int, int, int, bytes]]) -> None:
        with self._write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO results (batch_seq, shuffle, idx, line) VALUES (?, ?, ?, ?)",
                rows,
            )
            self._save_cache(conn)
        rows.clear()

    def _save_cache(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO prompt_cache (workspace, key, written_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (workspace, key) DO UPDATE SET written_at = excluded.written_at,"
            " expires_at = excluded.expires_at",
            self._cache.take_unsaved(),
        )

    def _prior_submissions(self, seq: int) -> list[int]:
        """For each request of the batch, how many earlier batches carried its custom_id."""
        rows = (
            self._conn()
            .execute(
                "SELECT (SELECT COUNT(*) FROM request_ids p"
                " WHERE p.custom_id = r.custom_id AND p.batch_seq < r.batch_seq)"
                " FROM request_ids r WHERE r.batch_seq = ? ORDER BY r.idx",
                (seq,),
            )
            .fetchall()
        )
        return [r[0] for r in rows]

    def _outcome(
        self, batch_id: str, custom_id: str, params: dict[str, Any], attempt: int, cache: PromptCache
    ) -> dict[str, Any]:
        problem = params_error(params, self.settings.max_output_tokens)
        if problem is not None:
            return _errored("invalid_request_error", problem)
        fault = self._faults().request_outcome(custom_id, attempt)
        if fault is not None:
            kind, error_type = fault
            if kind == "expired":
                return {"type": "expired"}
            assert error_type is not None
            return _errored(error_type, _TRANSIENT_MESSAGES[error_type])
        message_id = derived_id("msg_", self.settings.seed, batch_id, custom_id)
        try:
            spoil = self._faults().invalid_output(custom_id, attempt) if self._answerer.structured(params) else None
            return self._answerer.result(
                params, custom_id=custom_id, message_id=message_id, invalid_output=spoil, cache=cache
            )
        except Exception as exc:  # a user's responder failing must not wedge the batch  # noqa: BLE001
            return _errored("api_error", f"emulator responder failed: {type(exc).__name__}: {exc}")

    def _shuffle_key(self, batch_id: str, custom_id: str) -> int:
        digest = hashlib.sha256(f"{self.settings.seed}:{batch_id}:{custom_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def _body_path(self, batch_id: str) -> Path:
        return self.bodies / f"{batch_id}.json"

    # --- counters and reset -----------------------------------------------------------

    def stats(self) -> dict[str, int]:
        conn = self._conn()
        (batches,) = conn.execute("SELECT COUNT(*) FROM batches").fetchone()
        received, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT custom_id) FROM request_ids").fetchone()
        (duplicates,) = conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM request_ids GROUP BY custom_id HAVING COUNT(*) > 1)"
        ).fetchone()
        return {
            "batches": batches,
            "requests_received": received,
            "distinct_custom_ids": distinct,
            "duplicate_custom_ids": duplicates,
        }

    def custom_id_counts(self, minimum: int) -> dict[str, int]:
        rows = self._conn().execute(
            "SELECT custom_id, COUNT(*) FROM request_ids GROUP BY custom_id HAVING COUNT(*) >= ?",
            (minimum,),
        )
        return dict(rows)

    def reset(self) -> None:
        with self._finalize_lock, self._write() as conn:
            for table in ("batches", "request_ids", "results", "batch_workspaces", "prompt_cache"):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'batches'")
            self._cache.clear()
        for body in self.bodies.iterdir():
            body.unlink(missing_ok=True)


def _open_prompt_cache(conn: sqlite3.Connection) -> PromptCacheTable:
    """The saved prompt cache; a table of an earlier shape is made again, empty."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(prompt_cache)")]
    if columns != _PROMPT_CACHE_COLUMNS:
        conn.execute("DROP TABLE IF EXISTS prompt_cache")
        conn.execute(_PROMPT_CACHE)
    return PromptCacheTable(conn.execute("SELECT workspace, key, written_at, expires_at FROM prompt_cache"))


def _errored(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": None,
        },
    }
