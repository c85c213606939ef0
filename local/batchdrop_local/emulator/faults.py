"""Fault injection for the emulator: seeded, reproducible HTTP errors, stalls, lost
responses and per-request errored/expired outcomes (docs/local.md, "Faults")."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batchdrop_local.emulator.structured import InvalidKind

Endpoint = Literal["create", "retrieve", "list", "cancel", "delete", "results", "count_tokens", "messages", "*"]
ENDPOINTS: tuple[str, ...] = (
    "create", "retrieve", "list", "cancel", "delete", "results", "count_tokens", "messages", "*",
)  # fmt: skip
TransientError = Literal["api_error", "overloaded_error"]

# The error type the real API pairs with each status it sends.
ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(ge=0, le=1)
    times: int | None = Field(default=None, ge=0)


class HttpErrorRule(_Rule):
    endpoint: Endpoint
    status: int = Field(ge=400, le=599)


class StallRule(_Rule):
    endpoint: Endpoint
    seconds: float = Field(ge=0)


class FaultSettings(BaseModel):
    """Everything that can go wrong, as the JSON of `PUT /_emulator/faults`."""

    model_config = ConfigDict(extra="forbid")
    http_errors: list[HttpErrorRule] = []
    stalls: list[StallRule] = []
    retry_after: float = Field(default=1.0, ge=0)
    errored: dict[TransientError, float] = {}
    expired: float = Field(default=0.0, ge=0, le=1)
    queue_limit: int | None = Field(default=None, ge=0)
    lose_create_response: _Rule | None = None
    drop_results: _Rule | None = None
    # A create holding a request whose params contain this text anywhere (a key or a string)
    # is refused, 400 `invalid_request_error` naming that request: as the API refuses a body
    # it will never take, such as one holding an integer beyond 64 bits.
    poison: str | None = Field(default=None, min_length=1)
    # Share of structured answers (output_config.format json_schema, or a forced tool) that come
    # back spoilt: half of them not JSON (no tool call, for a tool), half not conforming.
    invalid_output: float = Field(default=0.0, ge=0, le=1)


class _Draw:
    """One rule's own random stream and its remaining budget of `times`."""

    def __init__(self, seed: int, name: str, rule: _Rule) -> None:
        self.rule = rule
        self.rng = random.Random(f"{seed}:{name}")
        self.left = rule.times

    def fires(self) -> bool:
        if self.left == 0 or self.rng.random() >= self.rule.rate:
            return False
        if self.left is not None:
            self.left -= 1
        return True


class FaultInjector:
    """Decides, thread-safely and reproducibly, which faults a call meets."""

    def __init__(self, settings: FaultSettings, seed: int = 0) -> None:
        self.settings = settings
        self.seed = seed
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._http = [_Draw(seed, f"http:{i}", r) for i, r in enumerate(settings.http_errors)]
        self._stalls = [_Draw(seed, f"stall:{i}", r) for i, r in enumerate(settings.stalls)]
        self._lose = _Draw(seed, "lose", settings.lose_create_response or _Rule(rate=0))
        self._drop = _Draw(seed, "drop", settings.drop_results or _Rule(rate=0))

    def http_error(self, endpoint: str) -> HttpErrorRule | None:
        with self._lock:
            for draw in self._http:
                rule: HttpErrorRule = draw.rule  # type: ignore[assignment]
                if rule.endpoint in (endpoint, "*") and draw.fires():
                    self.injected[f"http_{rule.status}"] += 1
                    return rule
        return None

    def stall(self, endpoint: str) -> float:
        with self._lock:
            for draw in self._stalls:
                rule: StallRule = draw.rule  # type: ignore[assignment]
                if rule.endpoint in (endpoint, "*") and draw.fires():
                    self.injected["stall"] += 1
                    return rule.seconds
        return 0.0

    def lose_create_response(self) -> bool:
        return self._once(self._lose, "lost_create_response")

    def drop_results(self) -> bool:
        return self._once(self._drop, "dropped_results")

    def queue_full(self, pending: int, incoming: int) -> bool:
        limit = self.settings.queue_limit
        if limit is None or pending + incoming <= limit:
            return False
        with self._lock:
            self.injected["queue_full"] += 1
        return True

    def request_outcome(self, custom_id: str, attempt: int) -> tuple[str, str | None] | None:
        """The fault a request meets, if any: ("errored", error type) or ("expired", None).

        Drawn from the seed, the custom_id and how often it was submitted before, so the
        same run replays the same outcomes and a resubmitted request gets a fresh draw."""
        digest = hashlib.sha256(f"{self.seed}:{custom_id}:{attempt}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for error_type, rate in sorted(self.settings.errored.items()):
            edge += rate
            if point < edge:
                self._count(f"errored_{error_type}")
                return ("errored", error_type)
        if point < edge + self.settings.expired:
            self._count("expired")
            return ("expired", None)
        return None

    def invalid_output(self, custom_id: str, attempt: int) -> InvalidKind | None:
        """How a structured answer is spoilt, if it is: drawn like `request_outcome` (seed,
        custom_id, attempt) but from a stream of its own, so the two rates do not interact."""
        rate = self.settings.invalid_output
        digest = hashlib.sha256(f"{self.seed}:invalid_output:{custom_id}:{attempt}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        if point >= rate:
            return None
        kind: InvalidKind = "not_json" if point < rate / 2 else "not_conforming"
        self._count(f"invalid_output_{kind}")
        return kind

    def _once(self, draw: _Draw, kind: str) -> bool:
        with self._lock:
            if draw.fires():
                self.injected[kind] += 1
                return True
        return False

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1


# --- command-line forms -------------------------------------------------------------


def _endpoint(text: str, flag: str) -> str:
    if text not in ENDPOINTS:
        raise ValueError(f"{flag}: unknown endpoint {text!r}; use one of {', '.join(ENDPOINTS)}")
    return text


def _rate_and_times(parts: list[str], flag: str) -> tuple[float, int | None]:
    try:
        rate = float(parts[0])
        times = int(parts[1]) if len(parts) > 1 else None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{flag}: expected RATE[:TIMES], got {':'.join(parts)!r}") from exc
    return rate, times


def parse_fault_flag(text: str) -> dict[str, object]:
    """`ENDPOINT:STATUS:RATE[:TIMES]`, e.g. `create:429:0.2` or `*:500:1:3`."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"--fault: expected ENDPOINT:STATUS:RATE[:TIMES], got {text!r}")
    try:
        status = int(parts[1])
    except ValueError as exc:
        raise ValueError(f"--fault: STATUS must be a number, got {parts[1]!r}") from exc
    rate, times = _rate_and_times(parts[2:], "--fault")
    return {
        "endpoint": _endpoint(parts[0], "--fault"),
        "status": status,
        "rate": rate,
        "times": times,
    }


def parse_stall_flag(text: str) -> dict[str, object]:
    """`ENDPOINT:SECONDS:RATE[:TIMES]`, e.g. `create:5:1:1`."""
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"--stall: expected ENDPOINT:SECONDS:RATE[:TIMES], got {text!r}")
    try:
        seconds = float(parts[1])
    except ValueError as exc:
        raise ValueError(f"--stall: SECONDS must be a number, got {parts[1]!r}") from exc
    rate, times = _rate_and_times(parts[2:], "--stall")
    return {
        "endpoint": _endpoint(parts[0], "--stall"),
        "seconds": seconds,
        "rate": rate,
        "times": times,
    }


def parse_rate_flag(text: str, flag: str) -> dict[str, object]:
    """`RATE[:TIMES]`."""
    rate, times = _rate_and_times(text.split(":"), flag)
    return {"rate": rate, "times": times}


def parse_errored_flag(text: str) -> tuple[str, float]:
    """`TYPE:RATE`, TYPE being api_error or overloaded_error."""
    error_type, _, rate = text.partition(":")
    if error_type not in ("api_error", "overloaded_error"):
        raise ValueError(f"--errored-rate: TYPE must be api_error or overloaded_error, got {text!r}")
    try:
        return error_type, float(rate)
    except ValueError as exc:
        raise ValueError(f"--errored-rate: expected TYPE:RATE, got {text!r}") from exc
