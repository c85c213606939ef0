"""JSON parsed fast where a line is parsed per result: collecting a batch parses each result
line, and the outputs parse three documents per record (its rows line, its result line and
the answer inside it). jiter, the Rust parser the Anthropic SDK already brings into the
layer, parses them two to four times faster than Python's json, and Python's json stays the
referee. A document jiter refuses is parsed again by the caller's json decoder, which either
accepts it (a lone surrogate escape such as "\\ud800", which jiter cannot hold in a Rust
string; NaN, which json.loads takes) or raises the error the caller has always reported, so
the values and the errors are the ones json gives, only sooner.

A request line, which must not repeat a key, is parsed by `parse_unique_keys`: jiter alone,
also refusing a key repeated in one object, its caller's strict decoder the referee.

jiter gives what json gives for every document both accept: objects (the last of a repeated
key kept), exact integers of any size, floats rounded alike (1e400 is inf in both), strings
with their escapes. It is asked to refuse NaN and Infinity, which are json's extensions, so
that whether they are accepted stays the decoder's choice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jiter


def parse(data: bytes | str, referee: Callable[[str], Any]) -> Any:
    """The JSON value of `data` (text, or its UTF-8 bytes); where jiter refuses it,
    `referee(text)`'s (bytes that are not UTF-8 raise UnicodeDecodeError on the way)."""
    try:
        return jiter.from_json(
            data if isinstance(data, bytes) else data.encode(), allow_inf_nan=False, cache_mode="keys"
        )
    except ValueError:  # UnicodeEncodeError too: text holding a lone surrogate
        return referee(data.decode() if isinstance(data, bytes) else data)


def parse_unique_keys(data: bytes) -> Any:
    """The JSON value of `data`, as jiter reads it, refusing besides a key repeated in one
    object (after its escapes are read: "a" and "\\u0061" are one key), NaN and Infinity,
    and a lone surrogate escape; ValueError where it refuses."""
    return jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
