"""The emulator's settings: one validated object built from flags (or by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batchdrop_local.emulator.caching import REAL_TTL_SECONDS
from batchdrop_local.emulator.faults import FaultSettings

DAY = 86400.0
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
MAX_COUNT_TOKENS_BYTES = 32 * 1024 * 1024  # the token-counting endpoint's own request size limit


@dataclass
class EmulatorSettings:
    host: str = "127.0.0.1"
    port: int = 8765
    latency: float = 2.0
    expiry: float | None = None
    retention: float | None = None
    cancel_latency: float | None = None
    db: Path | None = None
    api_key: str | None = None
    seed: int = 0
    max_requests: int = MAX_BATCH_REQUESTS
    max_body_bytes: int = MAX_BATCH_BYTES
    max_count_tokens_bytes: int = MAX_COUNT_TOKENS_BYTES
    allow_duplicate_custom_ids: bool = False
    results_url: Literal["absolute", "relative"] = "absolute"
    max_output_tokens: int = 64_000
    responder: str | None = None
    cache_visibility: float = 0.1
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        for name in ("latency", "expiry", "retention", "cancel_latency"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.max_requests < 1 or self.max_body_bytes < 1:
            raise ValueError("--max-requests and --max-body-bytes must be positive")
        if self.max_count_tokens_bytes < 1:
            raise ValueError(f"max_count_tokens_bytes must be positive, got {self.max_count_tokens_bytes}")
        if not 0.0 <= self.cache_visibility <= 1.0:
            raise ValueError(f"--cache-visibility must be between 0 and 1, got {self.cache_visibility}")

    # Real batches mostly end within an hour and expire after 24 h, with results kept 29
    # days: the defaults keep those ratios to the latency, or the real spans at latency 0.
    @property
    def expiry_seconds(self) -> float:
        if self.expiry is not None:
            return self.expiry
        return 24 * self.latency if self.latency else DAY

    @property
    def retention_seconds(self) -> float:
        if self.retention is not None:
            return self.retention
        return 29 * 24 * self.latency if self.latency else 29 * DAY

    @property
    def cancel_seconds(self) -> float:
        return self.cancel_latency if self.cancel_latency is not None else min(1.0, self.latency)

    # A batch's latency stands for the hour real batches mostly take (as in expiry_seconds), so
    # a prompt cache entry's ttl shrinks with it: "1h" lives `latency`, "5m" a twelfth of it.
    @property
    def cache_ttl_seconds(self) -> dict[str, float]:
        scale = self.latency / 3600 if self.latency else 1.0
        return {ttl: seconds * scale for ttl, seconds in REAL_TTL_SECONDS.items()}
