"""Simulated process death for the crash-point tests: a Lambda killed at any line runs no cleanup.

A `CrashPoint` wraps one method of the layer so that one call, the nth that counts, raises
`Crash`: a BaseException, so no `except Exception` in the pipeline can swallow it, as
nothing in a Lambda process survives it being killed. `survive` wraps a handler the way
Lambda's runtime sees a dying process: the invocation fails (the runner retries the event
as Lambda does, and the schedule ticks again), and what a new execution environment would
not have is dropped: the cached adapters and their clients. While a crash unwinds, no
multipart upload is aborted: a killed process runs no `finally` and no `__exit__`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from batchdrop import wiring
from batchdrop.adapters.objects import MultipartWriter

Handler = Callable[[dict[str, Any], Any], Any]


def writing_results(writer: MultipartWriter, _data: bytes) -> bool:
    """A `counts` for MultipartWriter.write: the calls that write a results part."""
    return writer.key.startswith("results/")


class Crash(BaseException):
    """The process dies here."""


class RuntimeExited(Exception):
    """What the runner sees of an invocation whose process died ("Runtime exited")."""


@dataclass
class CrashPoint:
    """Crash on the `nth` call of `owner.method` that `counts` (all calls by default), once:
    `before` the call runs, or `after` it has returned."""

    owner: type
    method: str
    when: Literal["before", "after"]
    nth: int = 1
    counts: Callable[..., bool] | None = None
    calls: int = field(default=0, init=False)  # calls that counted, up to the crash
    fired: int = field(default=0, init=False)
    dying: bool = field(default=False, init=False)  # between the crash and its invocation's end

    @property
    def name(self) -> str:
        return f"{self.when} {self.owner.__name__}.{self.method} (call {self.nth})"

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CrashPoint:
        original = getattr(self.owner, self.method)
        point = self

        @functools.wraps(original)
        def crashing(obj: Any, *args: Any, **kwargs: Any) -> Any:
            due = False
            if point.fired == 0 and (point.counts is None or point.counts(obj, *args, **kwargs)):
                point.calls += 1
                due = point.calls == point.nth
            if due and point.when == "before":
                point._die()
            result = original(obj, *args, **kwargs)
            if due:
                point._die()
            return result

        abort = MultipartWriter.abort

        @functools.wraps(abort)
        def abort_unless_dying(writer: MultipartWriter) -> None:
            if not point.dying:
                abort(writer)

        monkeypatch.setattr(self.owner, self.method, crashing)
        monkeypatch.setattr(MultipartWriter, "abort", abort_unless_dying)
        return self

    def _die(self) -> None:
        self.fired += 1
        self.dying = True
        raise Crash(self.name)

    def survive(self, handler: Handler) -> Handler:
        """The handler as Lambda runs it: a crash inside fails the invocation, and the next
        one starts in a fresh environment."""

        @functools.wraps(handler)
        def invoke(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            except Crash as crash:
                self.dying = False
                forget_environment()
                raise RuntimeExited(f"Runtime exited: simulated crash {crash}") from None

        return invoke


def forget_environment() -> None:
    """Drop what a new Lambda execution environment would not have: the adapters (clients,
    the secret) that `batchdrop.wiring` caches per process."""
    for value in vars(wiring).values():
        clear = getattr(value, "cache_clear", None)
        if callable(clear):
            clear()
