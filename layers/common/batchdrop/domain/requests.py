"""Validating native-mode input: each non-blank line becomes a ValidLine (the request as
written, which is what will be sent) or a RejectedLine (its line number and the reason),
streaming. A valid line's bytes are sent as they are, never re-encoded: the checks make sure
they mean exactly what they say (no duplicate key, NaN, overflowing number or unpaired
surrogate), and not re-encoding halves the work of a 256 MB file."""

from __future__ import annotations

import json
import math
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from batchdrop.domain import quick_json
from batchdrop.domain.lines import MAX_LINE_BYTES, OverlongLine
from batchdrop.domain.strict_json import DuplicateKeyError, NotANumberError, refuse_constant, unique_keys

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024  # the API's limit on a create body
CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)
_CUSTOM_ID_MAX_CHARS = 64
_UTF8_BOM = b"\xef\xbb\xbf"
_BOM_INSIDE = "a byte order mark (BOM) begins this line: one may begin only the file's first line"
# What the API reads its integers into: a larger one is refused for the whole batch.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = 20  # "-9223372036854775808"
# Objects and arrays a line may hold (counted as "{" and "[" bytes, strings included): what
# its parse holds in memory stays a few times its size.
_MAX_CONTAINERS = 1_000_000
# How deep objects and arrays may nest in a line: as deep as the JSON parser reads, which
# stops (RecursionError, before it has built much) somewhere past 1,000 levels; the depth
# is then found by a scan of the line, for the reason. No request needs a tenth of that (its
# content blocks nest some 8 levels, a tool's input schema 2 per level), and a shallower
# limit judged before parsing would cost every line a scan: two counts of its brackets
# took a fifth of the line check's time. Anything the parser reads, the API judges.
PARSER_DEPTH = 1_000
_REQUEST_KEYS = frozenset({"custom_id", "params"})
_ROLES = ("user", "assistant")
# A line with many problems names the first few: enough to fix it, short enough to read.
_MAX_PROBLEMS_SHOWN = 5
_SHOWN_VALUE_CHARS = 40


# Not frozen: one is made for every line read, and a frozen dataclass's __init__ (a
# object.__setattr__ per field) costs four times as much. Nothing changes one once made.
@dataclass(slots=True)
class ValidLine:
    line: int  # 1-based line number in the input file
    custom_id: str
    body: bytes  # the line as written (less a BOM and surrounding whitespace): what will be sent
    # What the cost estimate needs of params, read as the line was checked (None and 0 for a
    # line that was not parsed: a rendered line whose pipeline gives them).
    # Derived from body, so equal lines are equal whether they were read or not.
    model: str | None = field(default=None, compare=False)
    max_tokens: int = field(default=0, compare=False)
    # Whether an object in it holds a "cache_control" key, a prompt cache breakpoint, as the
    # check found while reading it (None: not known, the line was not parsed).
    cache_marked: bool | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    custom_id: str | None  # when it could be read
    reason: str  # human-readable, names the field


def check_lines(
    lines: Iterable[bytes],
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    first_seen: dict[str, int] | None = None,
    first_line: int = 1,
) -> Iterator[ValidLine | RejectedLine]:
    """Each non-blank input line -> ValidLine or RejectedLine, in order, streaming (never a list).

    Blank/whitespace-only lines are skipped (not rejected). Lines may end in \\n or \\r\\n; a UTF-8 BOM on the
    first line is tolerated. custom_ids must be unique within the whole file (the second use is rejected with a
    reason naming the first line). Uniqueness is kept in a map of each id to its first line: memory grows with the
    number of requests (at most 64 characters each), never with their size.

    A split resumed part-way (services/segments.py) passes the map its earlier segments
    filled (`first_seen`, filled further in place) and the number of its first line.
    """
    first_seen = {} if first_seen is None else first_seen
    for number, raw in enumerate(lines, start=first_line):
        if isinstance(raw, OverlongLine):  # not held by the reader: only its length is known
            yield RejectedLine(number, None, _too_large(raw.length, max_line_bytes))
            continue
        line = raw.rstrip(b"\r\n")
        if line.startswith(_UTF8_BOM):
            if number > 1:
                yield RejectedLine(number, None, _BOM_INSIDE)
                continue
            line = line[len(_UTF8_BOM) :]
        if not line or line.isspace():
            continue
        yield _check_line(number, line, first_seen, max_line_bytes)


def _check_line(number: int, line: bytes, first_seen: dict[str, int], max_line_bytes: int) -> ValidLine | RejectedLine:
    if len(line) > max_line_bytes:
        # Checked before parsing: a line this large is not worth holding as objects.
        return RejectedLine(number, None, _too_large(len(line), max_line_bytes))
    if len(line) > _MAX_CONTAINERS and (containers := line.count(b"{") + line.count(b"[")) > _MAX_CONTAINERS:
        # Also before parsing: each empty {} costs some 70 bytes parsed, 20 times its text.
        reason = f"the line holds {containers} JSON objects and arrays; a request may hold at most {_MAX_CONTAINERS}"
        return RejectedLine(number, None, reason)
    try:
        parsed, marks = _parse(line)
    except _UnreadableError as exc:
        return RejectedLine(number, None, str(exc))
    if not isinstance(parsed, dict):
        return RejectedLine(
            number, None, f'must be a JSON object {{"custom_id": ..., "params": ...}}, got {_shown(parsed)}'
        )

    custom_id = parsed.get("custom_id")
    readable_id = custom_id if isinstance(custom_id, str) else None
    problems: list[str] = []
    _unknown_key_problems(parsed, problems)
    _custom_id_problems(parsed, number, first_seen, problems)
    _params_problems(parsed, problems)
    if problems:
        return RejectedLine(number, readable_id, _joined(problems))
    assert readable_id is not None  # no problem found: _custom_id_problems rejects a custom_id that isn't a str

    if marks & _SURROGATES_UNCHECKED and _SURROGATE_ESCAPE.search(line) and not _surrogates_pair_up(parsed):
        # Rare (an escaped emoji, say): only such a line is worth encoding, to find out
        # whether its escapes pair up into real characters.
        reason = r"a string holds an unpaired surrogate escape (\ud800-\udfff), which is not valid Unicode"
        return RejectedLine(number, readable_id, reason)
    if line[:1].isspace() or line[-1:].isspace():
        line = line.strip()
    params = parsed["params"]
    cache_marked = bool(marks & _CACHE_CONTROL)
    return ValidLine(number, readable_id, line, params["model"], params["max_tokens"], cache_marked)


# --- parsing and encoding -------------------------------------------------------------


class _UnreadableError(ValueError):
    """A line that cannot be read as, or sent as, a JSON request; the message is the reason."""


class _OverflowingNumberError(ValueError):
    pass


class _OverflowingIntegerError(ValueError):
    pass


def _int64(text: str) -> int:
    # The API reads integers as 64-bit: a larger one is refused, and the whole batch with it.
    # (Checked by length first: Python will not convert an integer of over 4,300 digits.)
    value = int(text) if len(text) <= _INT64_DIGITS else None
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        raise _OverflowingIntegerError(text)
    return value


def _finite_float(text: str) -> float:
    # 1e999 parses as infinity, which JSON cannot carry: the API would read something else.
    value = float(text)
    if math.isinf(value):
        raise _OverflowingNumberError(text)
    return value


_DECODER = json.JSONDecoder(
    # A repeated key would silently keep only its last value: the request sent would not be the one written.
    object_pairs_hook=unique_keys,
    parse_constant=refuse_constant,
    parse_float=_finite_float,
    parse_int=_int64,
)
# A \uD800-\uDFFF escape: half of a surrogate pair, which must have its other half.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


# What reading a line finds of note beside its value (_parse): flags.
_UNSENDABLE_NUMBER = 1  # an integer beyond the 64-bit range, or a float that overflows
_CACHE_CONTROL = 2  # an object holding a "cache_control" key
_SURROGATES_UNCHECKED = 4  # read by json, its strings may hold an unpaired surrogate escape


def _parse(line: bytes) -> tuple[Any, int]:
    """The request a line holds, and what _scan found in it (with _SURROGATES_UNCHECKED when
    json read it). jiter reads a usual line three times faster than json, and refuses what
    json is told to refuse here (a repeated key, NaN, a lone surrogate, bytes that are not
    UTF-8); its numbers are then checked as json's hooks check them. A line it refuses, or
    whose numbers fail that check, is read by json, which accepts it (a lone surrogate,
    checked after; a line nested deeper than jiter reads) or names the reason."""
    try:
        parsed = quick_json.parse_unique_keys(line)
    except ValueError:
        pass
    else:
        marks = _scan(parsed)
        if not marks & _UNSENDABLE_NUMBER:
            return parsed, marks
    parsed = _decode(line)  # its hooks checked the numbers; it may nest deeper than _scan recurses
    return parsed, (_CACHE_CONTROL if holds_cache_control(parsed) else 0) | _SURROGATES_UNCHECKED


def _scan(value: Any) -> int:
    """The flags a value jiter read earns: _UNSENDABLE_NUMBER for a number json's hooks here
    would refuse, _CACHE_CONTROL for a cache breakpoint. Strings, the bulk of a line, are
    passed over; loops, as all() costs twice as much. It recurses once a level: jiter reads
    no deeper than some 200."""
    kind = type(value)
    if kind is dict:
        marks = _CACHE_CONTROL if "cache_control" in value else 0
        for item in value.values():
            if type(item) is not str:
                marks |= _scan(item)
        return marks
    if kind is list:
        marks = 0
        for item in value:
            if type(item) is not str:
                marks |= _scan(item)
        return marks
    if kind is int:
        return 0 if _INT64_MIN <= value <= _INT64_MAX else _UNSENDABLE_NUMBER
    if kind is float:
        return _UNSENDABLE_NUMBER if math.isinf(value) else 0  # NaN is refused by the parse
    return 0


def holds_cache_control(value: Any) -> bool:
    """Whether an object anywhere in `value` (parsed JSON, or a pipeline's own values) holds
    a "cache_control" key: a prompt cache breakpoint. Walked with a stack of its own, so a
    value nested as deep as json reads does not reach Python's recursion limit."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if "cache_control" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _decode(line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _UnreadableError(f"not valid UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start}") from exc
    try:
        return _DECODER.decode(text)
    except DuplicateKeyError as exc:
        reason = f"not valid JSON for a request: key {_shown(exc.args[0])} appears twice in one object"
        raise _UnreadableError(reason) from exc
    except NotANumberError as exc:
        raise _UnreadableError(f"not valid JSON: {exc.args[0]} is not a JSON number") from exc
    except _OverflowingNumberError as exc:
        raise _UnreadableError(f"a number is too large to be sent ({exc.args[0]} overflows)") from exc
    except _OverflowingIntegerError as exc:
        shown = _shown_number(exc.args[0])
        raise _UnreadableError(f"a number is too large to be sent ({shown} is {_INT64_RANGE})") from exc
    except json.JSONDecodeError as exc:
        # "Unterminated string starting at" names its place with ours: not "at at column 7".
        raise _UnreadableError(f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}") from exc
    except ValueError as exc:  # none expected: the hooks above raise their own
        raise _UnreadableError("not valid JSON for a request") from exc
    except RecursionError as exc:
        depth = nesting_depth(line, PARSER_DEPTH)
        reason = f"objects and arrays nest {depth} deep in this line, deeper than a request can be read"
        raise _UnreadableError(reason) from exc


_INT64_RANGE = "beyond the 64-bit integer range the API reads"

# A JSON string, escapes included; its closing quote optional, so that an unterminated one
# runs to the end of the line instead of being tried again from each later quote.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
# Each opening bracket as +1, each closing one as -1 (0xff, as a signed byte); quotes kept
# or not; the rest dropped.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_NOT_BRACKETS_NOR_QUOTES = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_INNERMOST = b"\x01\xff"


def nesting_depth(line: bytes, limit: int) -> int:
    """How deep objects and arrays nest in `line` outside its strings, found without parsing
    and exactly only when it exceeds `limit` (otherwise a number not above it): a line with
    no more opening brackets than `limit` costs two counts. Linear in the line."""
    openers = line.count(b"[") + line.count(b"{")
    if openers <= limit:
        return openers
    if b"\\" in line and b'\\"' in line:  # a quote may be escaped: strings found by their grammar
        steps = _JSON_STRING.sub(b"", line).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    else:  # every quote opens or closes a string: the brackets between them are text
        steps = line.translate(_DEPTH_STEPS, _NOT_BRACKETS_NOR_QUOTES).replace(b'""', b"")
        if b'"' in steps:  # what is left of the quotes is strings holding brackets
            steps = b"".join(steps.split(b'"')[::2])
    return _depth(steps, limit)


def _depth(steps: bytes, limit: int) -> int:
    """The deepest running sum of `steps`. Balanced, each round of dropping the innermost
    pairs takes one level off: up to `limit` deep, the rounds are the depth. Deeper, or
    unbalanced (not JSON, the parser's to reject), the sum is run byte by byte."""
    remaining = steps
    for rounds in range(limit + 1):
        if not remaining:
            return rounds
        shorter = remaining.replace(_INNERMOST, b"")
        if len(shorter) == len(remaining):
            break
        remaining = shorter
    return max(accumulate(array("b", steps), initial=0))


def _surrogates_pair_up(request: Any) -> bool:
    """Whether every string of a parsed line is valid Unicode: an unpaired surrogate escape
    decodes to a lone surrogate, which no UTF-8 encoder (nor the API) accepts."""
    try:
        json.dumps(request, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


# --- field checks ---------------------------------------------------------------------


# Each adds what it finds wrong to `problems`: on the usual, valid line they find nothing,
# and plain calls cost half what a chain of generators did.


def _unknown_key_problems(request: Mapping[str, Any], problems: list[str]) -> None:
    if len(request) == 2 and "custom_id" in request and "params" in request:
        return
    unknown = [key for key in request if key not in _REQUEST_KEYS]
    if unknown:
        names = ", ".join(_shown(key) for key in unknown)
        problems.append(f"unknown key {names}: a request line holds only custom_id and params")


def _custom_id_problems(
    request: Mapping[str, Any], number: int, first_seen: dict[str, int], problems: list[str]
) -> None:
    if "custom_id" not in request:
        problems.append("custom_id: missing")
        return
    custom_id = request["custom_id"]
    if not isinstance(custom_id, str):
        problems.append(f"custom_id: must be a string, got {_shown(custom_id)}")
    elif not custom_id:
        problems.append("custom_id: must not be empty")
    elif len(custom_id) > _CUSTOM_ID_MAX_CHARS:
        problems.append(f"custom_id: must be at most {_CUSTOM_ID_MAX_CHARS} characters, got {len(custom_id)}")
    elif not _CUSTOM_ID.fullmatch(custom_id):
        shown = _shown(custom_id)
        problems.append(f"custom_id: may hold only letters, digits, '_' and '-' ({CUSTOM_ID_PATTERN}), got {shown}")
    elif custom_id in first_seen:
        problems.append(
            f"custom_id: {_shown(custom_id)} is already used on line {first_seen[custom_id]}; it must be unique"
        )
    else:
        first_seen[custom_id] = number


def _params_problems(request: Mapping[str, Any], problems: list[str]) -> None:
    if "params" not in request:
        problems.append("params: missing")
        return
    params = request["params"]
    if not isinstance(params, dict):
        problems.append(f"params: must be an object, got {_shown(params)}")
        return

    if "model" not in params:
        problems.append("params.model: missing")
    elif not isinstance(params["model"], str) or not params["model"].strip():
        problems.append(f"params.model: must be a non-empty string, got {_shown(params['model'])}")

    if "max_tokens" not in params:
        problems.append("params.max_tokens: missing")
    elif not _is_int(params["max_tokens"]) or params["max_tokens"] < 1:
        problems.append(f"params.max_tokens: must be an integer >= 1, got {_shown(params['max_tokens'])}")

    if "messages" not in params:
        problems.append("params.messages: missing")
    elif not isinstance(params["messages"], list) or not params["messages"]:
        problems.append(f"params.messages: must be a non-empty array of messages, got {_shown(params['messages'])}")
    else:
        for index, message in enumerate(params["messages"]):
            _message_problems(index, message, problems)

    if "stream" in params and params["stream"] is not False:
        stream = _shown(params["stream"])
        problems.append(f"params.stream: batch requests cannot be streamed (omit it or set it to false), got {stream}")


def _message_problems(index: int, message: Any, problems: list[str]) -> None:
    if not isinstance(message, dict):
        problems.append(f"params.messages[{index}]: must be an object with role and content, got {_shown(message)}")
        return
    if "role" not in message:
        problems.append(f"params.messages[{index}].role: missing")
    elif message["role"] not in _ROLES:
        problems.append(f'params.messages[{index}].role: must be "user" or "assistant", got {_shown(message["role"])}')
    content = message.get("content")
    if "content" not in message:
        problems.append(f"params.messages[{index}].content: missing")
    elif not content or not isinstance(content, str | list):
        problems.append(
            f"params.messages[{index}].content: must be a non-empty string or a non-empty array of blocks,"
            f" got {_shown(content)}"
        )


# --- wording --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a token count


def _too_large(size: int, limit: int) -> str:
    return f"line is {size} bytes; a request may be at most {limit} bytes (the Messages API's limit on a request)"


def _shown(value: Any) -> str:
    """A short, JSON-looking rendering of a user's value for a reason string."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an empty array" if not value else "an array"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[: _SHOWN_VALUE_CHARS - 1] + "…"
    return text


def _shown_number(text: str) -> str:
    """A number as written, or its first digits and how many there are when it is long."""
    if len(text) <= _SHOWN_VALUE_CHARS:
        return text
    return f"{text[: _SHOWN_VALUE_CHARS - 1]}… ({len(text)} digits)"


def _joined(problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
    hidden = len(problems) - _MAX_PROBLEMS_SHOWN
    return f"{shown}; and {hidden} more" if hidden > 0 else shown


# --- rendered lines (records mode) ----------------------------------------------------

# How a rendered line begins (domain/pipelines.py): its custom_id first, a usable one written
# as it is (nothing in it to escape), then its params.
_RENDERED_HEAD = re.compile(rb'\{"custom_id":"([a-zA-Z0-9_-]{1,64})","params":\{')


def check_rendered(
    lines: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[ValidLine | RejectedLine]:
    """check_lines for the lines of one pipeline's renderer: the same verdicts, with the same
    reasons, at a fraction of the cost. Such lines are one request but for the custom_id and
    the text of the strings a record filled in, each escaped by the JSON encoder, so what is
    read as JSON (keys, numbers, nesting, the params' fields) is the same in every line. Once
    one line has passed the whole check, a later one can differ from it only in its size, its
    id and whether that id was used before: those are checked, nothing is parsed. A line that
    is large (where the size and container checks apply), reuses an id, or does not begin as
    a rendered line takes the whole check, as every line does until one has passed it."""
    first_seen: dict[str, int] = {}
    sound = False  # a line has passed the whole check: what the lines share is a sound request
    simple = min(max_line_bytes, _MAX_CONTAINERS)  # a line this long or less meets both limits
    for number, raw in enumerate(lines, start=1):
        if sound and len(raw) <= simple and raw[-1:] == b"}" and (head := _RENDERED_HEAD.match(raw)) is not None:
            custom_id = head[1].decode("ascii")
            if custom_id not in first_seen:
                first_seen[custom_id] = number
                yield ValidLine(number, custom_id, raw)
                continue
        checked = _checked_alone(number, raw, first_seen, max_line_bytes)
        if checked is not None:
            sound = sound or isinstance(checked, ValidLine)
            yield checked


def _checked_alone(
    number: int, raw: bytes, first_seen: dict[str, int], max_line_bytes: int
) -> ValidLine | RejectedLine | None:
    """One line as check_lines checks it (None: a blank line, skipped), for check_rendered."""
    if isinstance(raw, OverlongLine):
        return RejectedLine(number, None, _too_large(raw.length, max_line_bytes))
    line = raw.rstrip(b"\r\n")
    if line.startswith(_UTF8_BOM):
        if number > 1:
            return RejectedLine(number, None, _BOM_INSIDE)
        line = line[len(_UTF8_BOM) :]
    if not line or line.isspace():
        return None
    return _check_line(number, line, first_seen, max_line_bytes)
