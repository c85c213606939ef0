"""The emulator's prompt cache, as the real one behaves for batches (docs/emulator-cache.md).

Each workspace (here: each API key) has its own cached prefixes, and each entry lives for its
ttl after its last use. A synchronous request reads what is alive and writes at once. A batch's
requests run in parallel on the real service, so they mostly miss each other's writes: an entry
that was alive when the batch was created is read by every request, while one written after
that is seen by a request only with probability `cache_visibility`, drawn from a generator
seeded by (seed, batch, custom_id) so that a run can be repeated exactly. The batch is named by
its sequence number in the emulator's database, not its id: ids are random, as the real ones
are, so a fresh emulator given the same seed and the same batches draws the same hits.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass

# The minimum number of tokens a cache breakpoint's prefix must have to be cached, from
# https://docs.claude.com/en/docs/build-with-claude/prompt-caching (read 2026-12-07): a model id
# or family prefix, first match wins. Every other model (Sonnet, the other Opus) caches from 1024.
MINIMUM_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
DEFAULT_MINIMUM_CACHEABLE_TOKENS = 1024

# The real lifetimes of the two ttls a `cache_control` may ask for.
REAL_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def minimum_cacheable_tokens(model: str) -> int:
    for name, minimum in MINIMUM_CACHEABLE_TOKENS:
        if model == name or model.startswith(name + "-"):
            return minimum
    return DEFAULT_MINIMUM_CACHEABLE_TOKENS


def workspace_of(api_key: str) -> str:
    """The cache's owner for a key: a digest, so the database never holds a key."""
    return hashlib.sha256(b"workspace:" + api_key.encode()).hexdigest()[:16]


@dataclass
class _Entry:
    written_at: float  # when this life of the entry began: an expired entry written again is new
    expires_at: float


CacheRow = tuple[str, str, float, float]  # workspace, key, written_at, expires_at


class PromptCacheTable:
    """Every workspace's entries, shared by the HTTP threads (synchronous requests) and the
    processor (batches); changes wait in a list until the store saves them."""

    def __init__(self, rows: Iterable[CacheRow] = ()) -> None:
        self._entries = {(ws, key): _Entry(written, expires) for ws, key, written, expires in rows}
        self._unsaved: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def alive(self, workspace: str, key: str, moment: float) -> bool:
        entry = self._entries.get((workspace, key))
        return entry is not None and entry.expires_at > moment

    def alive_since(self, workspace: str, key: str, moment: float) -> bool:
        """Whether the entry was written by `moment` and still alive then. An entry's lifetime
        only grows while it lives, and one written again after expiring starts a new life, so
        this holds even when it has since been read, or has expired."""
        entry = self._entries.get((workspace, key))
        return entry is not None and entry.written_at <= moment < entry.expires_at

    def use(self, workspace: str, key: str, moment: float, ttl_seconds: float, *, read: bool) -> None:
        """A request at `moment` wrote the entry, or read it (`read`): it now lives `ttl_seconds`
        from then. A read keeps the entry's life even when it expired in the meantime (the batch
        was created while it lived); a write of an expired entry starts a new one."""
        with self._lock:
            entry = self._entries.get((workspace, key))
            if entry is None or (entry.expires_at <= moment and not read):
                entry = _Entry(moment, moment + ttl_seconds)
            else:
                entry = _Entry(entry.written_at, max(entry.expires_at, moment + ttl_seconds))
            self._entries[(workspace, key)] = entry
            self._unsaved[(workspace, key)] = entry

    def take_unsaved(self) -> list[CacheRow]:
        with self._lock:
            rows = [(ws, key, e.written_at, e.expires_at) for (ws, key), e in self._unsaved.items()]
            self._unsaved.clear()
        return rows

    def forget_expired(self, before: float) -> None:
        """Drop entries that expired before `before`: no open batch can still read them."""
        with self._lock:
            stale = [k for k, e in self._entries.items() if e.expires_at < before]
            for k in stale:
                del self._entries[k]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._unsaved.clear()


class SynchronousView:
    """The cache as one synchronous request sees it: what is alive now, written at once."""

    def __init__(self, table: PromptCacheTable, workspace: str, moment: float, ttl_seconds: dict[str, float]) -> None:
        self._table = table
        self._workspace = workspace
        self._moment = moment
        self._ttl_seconds = ttl_seconds
        self._read: set[str] = set()

    def __contains__(self, key: str) -> bool:
        hit = self._table.alive(self._workspace, key, self._moment)
        if hit:
            self._read.add(key)
        return hit

    def add(self, key: str, ttl: str) -> None:
        seconds = self._ttl_seconds[ttl]
        self._table.use(self._workspace, key, self._moment, seconds, read=key in self._read)


class BatchRequestView(SynchronousView):
    """The cache as one request of a batch sees it when the batch is processed at `moment`:
    entries alive at the batch's creation are read; later ones only with probability
    `visibility`, drawn from the request's own generator."""

    def __init__(
        self,
        table: PromptCacheTable,
        workspace: str,
        moment: float,
        ttl_seconds: dict[str, float],
        *,
        created_at: float,
        visibility: float,
        rng_seed: str,
    ) -> None:
        super().__init__(table, workspace, moment, ttl_seconds)
        self._created_at = created_at
        self._visibility = visibility
        self._rng_seed = rng_seed
        self._rng: random.Random | None = None  # made on the first draw: most requests never draw

    def __contains__(self, key: str) -> bool:
        table, workspace = self._table, self._workspace
        if table.alive_since(workspace, key, self._created_at):
            hit = True
        else:
            hit = table.alive(workspace, key, self._moment) and self._draw() < self._visibility
        if hit:
            self._read.add(key)
        return hit

    def _draw(self) -> float:
        if self._rng is None:
            self._rng = random.Random(self._rng_seed)
        return self._rng.random()


def request_rng_seed(seed: int, batch_seq: int, custom_id: str) -> str:
    """What seeds a request's own generator: the same seed, batch and custom_id draw the same hits."""
    return f"cache:{seed}:{batch_seq}:{custom_id}"
