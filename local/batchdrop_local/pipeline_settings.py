"""The pipeline's settings for a local run: the timings and shard size the functions run
with, passed as the environment variables their configuration reads (never by patching the
layer's modules). The soak and the end-to-end tests compress minutes into seconds this way."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from batchdrop.config import ENV_SHARD_MAX_REQUESTS, ENV_TIMINGS
from batchdrop.domain.timings import Timings


def variables(*, timings: Timings | None = None, shard_max_requests: int | None = None) -> dict[str, str]:
    """The functions' environment variables for these settings (none for the defaults)."""
    found = {}
    if timings is not None:
        found[ENV_TIMINGS] = json.dumps(timings.as_dict())
    if shard_max_requests is not None:
        found[ENV_SHARD_MAX_REQUESTS] = str(shard_max_requests)
    return found


@contextlib.contextmanager
def pipeline_settings(
    stack: Any, *, timings: Timings | None = None, shard_max_requests: int | None = None
) -> Iterator[None]:
    """The functions of the local `stack` run with these settings until the block ends."""
    saved = dict(stack.function_variables)
    stack.function_variables.update(variables(timings=timings, shard_max_requests=shard_max_requests))
    try:
        yield
    finally:
        stack.function_variables.clear()
        stack.function_variables.update(saved)
