"""JSON read strictly: a key repeated in one object, or NaN/Infinity (which Python's json
accepts and JSON does not have), is an error rather than a value silently kept or made up.
What the user wrote is then what is sent, or the reader says why not. Each reader words the
errors for its own input (a request line, a record, a pipeline)."""

from __future__ import annotations

import json
from typing import Any, Final, NoReturn


class DuplicateKeyError(ValueError):
    """A key appears twice in one object; args[0] is the key."""


class NotANumberError(ValueError):
    """NaN, Infinity or -Infinity where a number was expected; args[0] is the word as written."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object_pairs_hook: the object, unless a key repeats (json would keep its last value)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return obj


def refuse_constant(name: str) -> NoReturn:
    """A parse_constant hook: NaN, Infinity and -Infinity are not JSON numbers."""
    raise NotANumberError(name)


STRICT_DECODER: Final = json.JSONDecoder(object_pairs_hook=unique_keys, parse_constant=refuse_constant)
