"""Specification of native-mode line validation: which lines pass, which are rejected and why."""

from __future__ import annotations

import json
import re
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain import requests
from batchdrop.domain.lines import OverlongLine
from batchdrop.domain.requests import PARSER_DEPTH, RejectedLine, ValidLine, check_lines, nesting_depth


def params(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Classify: great product"}],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not ...}


def request_line(custom_id: Any = "req-1", **param_overrides: Any) -> bytes:
    return json.dumps({"custom_id": custom_id, "params": params(**param_overrides)}).encode() + b"\n"


def only_result(lines: list[bytes], **kwargs: Any) -> ValidLine | RejectedLine:
    results = list(check_lines(lines, **kwargs))
    assert len(results) == 1
    return results[0]


def test_a_well_formed_line_is_valid_with_its_line_number_and_custom_id() -> None:
    # Given one well-formed request line
    # When it is checked
    result = only_result([request_line("review-1")])
    # Then it is valid, line 1, with its custom_id
    assert isinstance(result, ValidLine)
    assert (result.line, result.custom_id) == (1, "review-1")


def test_valid_body_is_the_line_as_written() -> None:
    # Given a request written with spaces, \u escapes and an escaped emoji, custom_id after params
    request = {"params": params(messages=[{"role": "user", "content": "Très bien — 很好 😀"}]), "custom_id": "r1"}
    line = json.dumps(request, indent=None, separators=(", ", ": ")).encode()
    assert b"\\ud83d\\ude00" in line  # json.dumps escapes the emoji as a surrogate pair
    # When it is checked (with surrounding whitespace and a CRLF ending)
    result = only_result([b"  " + line + b" \r\n"])
    # Then the body is the line itself, byte for byte, meaning the same request
    assert isinstance(result, ValidLine)
    assert result.body == line
    assert json.loads(result.body) == request


def test_unknown_params_keys_pass_through_untouched() -> None:
    # Given a request using features the validator knows nothing about
    extra = {
        "system": [{"type": "text", "text": "You classify reviews.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "label", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "some_future_param": {"nested": [1, 2.5, None, True]},
        "stream": False,
    }
    # When it is checked
    result = only_result([request_line("r1", **extra)])
    # Then it is valid and every one of them is in the body as written
    assert isinstance(result, ValidLine)
    sent = json.loads(result.body)["params"]
    for key, value in extra.items():
        assert sent[key] == value


def test_blank_lines_are_skipped_and_line_numbers_count_them() -> None:
    # Given good lines separated by blank and whitespace-only lines
    lines = [b"\n", request_line("a"), b"   \t\r\n", b"", request_line("b"), b"\r\n"]
    # When they are checked
    results = list(check_lines(lines))
    # Then only the two requests yield results, numbered as in the file
    assert [(r.line, r.custom_id) for r in results] == [(2, "a"), (5, "b")]


def test_crlf_line_endings_and_a_bom_on_the_first_line_are_tolerated() -> None:
    # Given a file saved on Windows with a UTF-8 BOM
    lines = [b"\xef\xbb\xbf" + request_line("a").rstrip(b"\n") + b"\r\n", request_line("b").rstrip(b"\n") + b"\r\n"]
    # When it is checked
    results = list(check_lines(lines))
    # Then both lines are valid and the bodies carry neither BOM nor CR
    valid = [r for r in results if isinstance(r, ValidLine)]
    assert len(valid) == 2
    assert all(not r.body.startswith(b"\xef\xbb\xbf") and not r.body.endswith(b"\r") for r in valid)


def test_a_bom_after_the_first_line_is_rejected() -> None:
    # Given a BOM in the middle of a file (two files concatenated)
    lines = [request_line("a"), b"\xef\xbb\xbf" + request_line("b")]
    # When it is checked
    results = list(check_lines(lines))
    # Then the second line is rejected, naming the BOM for what it is
    assert isinstance(results[1], RejectedLine)
    assert results[1].reason.startswith("a byte order mark (BOM) begins this line")


def test_a_duplicate_custom_id_is_rejected_naming_the_first_line() -> None:
    # Given the same custom_id on lines 1 and 3
    lines = [request_line("same"), request_line("other"), request_line("same")]
    # When they are checked
    results = list(check_lines(lines))
    # Then the first use is valid and the second is rejected, pointing at line 1
    assert isinstance(results[0], ValidLine)
    rejected = results[2]
    assert isinstance(rejected, RejectedLine)
    assert (rejected.line, rejected.custom_id) == (3, "same")
    assert "already used on line 1" in rejected.reason


def test_a_custom_id_used_by_a_rejected_line_is_still_taken() -> None:
    # Given a bad line, then a good line reusing its custom_id
    lines = [request_line("same", max_tokens=0), request_line("same")]
    # When they are checked
    results = list(check_lines(lines))
    # Then both are rejected: uniqueness holds over the whole file, not only over what is sent
    assert all(isinstance(r, RejectedLine) for r in results)
    assert isinstance(results[1], RejectedLine)
    assert "already used on line 1" in results[1].reason


def test_a_line_longer_than_the_limit_is_rejected_without_parsing() -> None:
    # Given a limit smaller than a line, and a line that is not even JSON
    good = request_line("a")
    # When they are checked with a limit below both
    results = list(check_lines([good, b"x" * 100], max_line_bytes=99))
    # Then both are rejected for their size, not for their content
    assert all(isinstance(r, RejectedLine) and "bytes; a request may be at most" in r.reason for r in results)


def test_a_line_exactly_at_the_limit_is_valid() -> None:
    # Given a compact line exactly max_line_bytes long
    line = json.dumps({"custom_id": "a", "params": params()}, separators=(",", ":")).encode()
    # When it is checked with that exact limit
    result = only_result([line], max_line_bytes=len(line))
    # Then it is valid
    assert isinstance(result, ValidLine)


def test_numbers_are_sent_as_written() -> None:
    # Given a line whose numbers a re-encoding would rewrite (1e5 would become 100000.0)
    line = b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"t":1e5}}'
    # When it is checked with a limit equal to its written size
    result = only_result([line], max_line_bytes=len(line))
    # Then it fits, and its body is what was written
    assert isinstance(result, ValidLine)
    assert result.body == line


REJECTIONS: list[tuple[str, bytes, str]] = [
    ("invalid utf-8", b'{"custom_id":"a\xff"}', "not valid UTF-8: byte 0xff"),
    ("not json", b"{custom_id: a}", "not valid JSON"),
    ("truncated json", request_line("a")[:-10], "not valid JSON"),
    ("nan is not json", b'{"custom_id":"a","params":NaN}', "NaN is not a JSON number"),
    ("duplicate key", b'{"custom_id":"a","custom_id":"b","params":{}}', 'key "custom_id" appears twice'),
    ("nested duplicate key", request_line("a", metadata={}).replace(b"{}", b'{"k":1,"k":2}'), 'key "k" appears twice'),
    ("not an object", b'["custom_id", "params"]', "must be a JSON object"),
    ("a string", b'"hello"', "must be a JSON object"),
    ("unknown top-level key", b'{"custom_id":"a","params":{},"method":"POST"}', 'unknown key "method"'),
    ("custom_id missing", json.dumps({"params": params()}).encode(), "custom_id: missing"),
    ("custom_id a number", request_line(42), "custom_id: must be a string, got 42"),
    ("custom_id null", request_line(None), "custom_id: must be a string, got null"),
    ("custom_id empty", request_line(""), "custom_id: must not be empty"),
    ("custom_id too long", request_line("x" * 65), "custom_id: must be at most 64 characters, got 65"),
    ("custom_id with a space", request_line("a b"), "custom_id: may hold only letters, digits"),
    ("custom_id with a dot", request_line("a.b"), "custom_id: may hold only letters, digits"),
    ("custom_id with a newline", request_line("ab\n"), "custom_id: may hold only letters, digits"),
    ("custom_id non-ascii", request_line("café"), "custom_id: may hold only letters, digits"),
    ("params missing", b'{"custom_id":"a"}', "params: missing"),
    ("params not an object", b'{"custom_id":"a","params":[]}', "params: must be an object, got an empty array"),
    ("model missing", request_line(model=...), "params.model: missing"),
    ("model not a string", request_line(model=3), "params.model: must be a non-empty string, got 3"),
    ("model empty", request_line(model=""), 'params.model: must be a non-empty string, got ""'),
    ("model blank", request_line(model="  "), "params.model: must be a non-empty string"),
    ("max_tokens missing", request_line(max_tokens=...), "params.max_tokens: missing"),
    ("max_tokens zero", request_line(max_tokens=0), "params.max_tokens: must be an integer >= 1, got 0"),
    ("max_tokens negative", request_line(max_tokens=-5), "params.max_tokens: must be an integer >= 1, got -5"),
    ("max_tokens a bool", request_line(max_tokens=True), "params.max_tokens: must be an integer >= 1, got true"),
    ("max_tokens a float", request_line(max_tokens=16.0), "params.max_tokens: must be an integer >= 1, got 16.0"),
    ("max_tokens a string", request_line(max_tokens="16"), 'params.max_tokens: must be an integer >= 1, got "16"'),
    ("messages missing", request_line(messages=...), "params.messages: missing"),
    ("messages empty", request_line(messages=[]), "params.messages: must be a non-empty array"),
    ("messages an object", request_line(messages={"role": "user"}), "params.messages: must be a non-empty array"),
    ("message not an object", request_line(messages=["hi"]), "params.messages[0]: must be an object"),
    ("role missing", request_line(messages=[{"content": "hi"}]), "params.messages[0].role: missing"),
    (
        "role system",
        request_line(messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]),
        'params.messages[1].role: must be "user" or "assistant", got "system"',
    ),
    ("content missing", request_line(messages=[{"role": "user"}]), "params.messages[0].content: missing"),
    (
        "content empty string",
        request_line(messages=[{"role": "user", "content": ""}]),
        "params.messages[0].content: must be a non-empty string or a non-empty array",
    ),
    (
        "content empty list",
        request_line(messages=[{"role": "user", "content": []}]),
        "params.messages[0].content: must be a non-empty string or a non-empty array",
    ),
    (
        "content a number",
        request_line(messages=[{"role": "user", "content": 7}]),
        "params.messages[0].content: must be a non-empty string or a non-empty array",
    ),
    ("stream true", request_line(stream=True), "params.stream: batch requests cannot be streamed"),
    ("stream null", request_line(stream=None), "params.stream: batch requests cannot be streamed"),
    ("number overflows", request_line(temperature=0.5).replace(b"0.5", b"1e400"), "a number is too large"),
    ("lone surrogate", request_line("a", system="\ud800"), "unpaired surrogate"),
    (
        "integer of 5,000 digits",
        request_line(max_tokens=1).replace(b'"max_tokens": 1', b'"max_tokens": ' + b"9" * 5000),
        "a number is too large to be sent (" + "9" * 39 + "… (5000 digits) is beyond the 64-bit integer range",
    ),
    ("max_tokens 10**30", request_line(max_tokens=10**30), f"too large to be sent ({10**30} is beyond the 64-bit"),
    ("metadata 2**63", request_line(metadata={"user_id": 2**63}), f"({2**63} is beyond the 64-bit integer range"),
    ("metadata -2**63-1", request_line(metadata={"n": -(2**63) - 1}), "is beyond the 64-bit integer range"),
    (
        "nested 10,000 deep",
        b'{"custom_id":"a","params":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "objects and arrays nest 10001 deep in this line, deeper than a request can be read",
    ),
]


@pytest.mark.parametrize(
    ("line", "expected_reason"),
    [pytest.param(line, reason, id=name) for name, line, reason in REJECTIONS],
)
def test_a_bad_line_is_rejected_with_a_reason_naming_the_problem(line: bytes, expected_reason: str) -> None:
    # Given a line with one problem
    # When it is checked
    result = only_result([line])
    # Then it is rejected, on its own line number, with a reason that names the field
    assert isinstance(result, RejectedLine)
    assert result.line == 1
    assert expected_reason in result.reason


def test_a_rejected_line_keeps_its_custom_id_when_it_could_be_read() -> None:
    # Given a line whose custom_id is fine but whose params are not, and one that is not JSON
    results = list(check_lines([request_line("r-7", max_tokens=0), b"{oops"]))
    # When / Then the first names its custom_id and the second has none
    assert [r.custom_id for r in results] == ["r-7", None]


def test_every_problem_of_a_line_is_reported_together() -> None:
    # Given a line with three independent problems
    line = request_line("a b", max_tokens=0, stream=True)
    # When it is checked
    result = only_result([line])
    # Then all three are named, so the user can fix them in one go
    assert isinstance(result, RejectedLine)
    for field in ("custom_id:", "params.max_tokens:", "params.stream:"):
        assert field in result.reason


def test_a_line_with_many_problems_names_the_first_few() -> None:
    # Given a line with 50 bad messages
    result = only_result([request_line(messages=[{"role": "x", "content": ""}] * 25)])
    # When / Then the reason stays short and says how many more there are
    assert isinstance(result, RejectedLine)
    assert result.reason.endswith("; and 45 more")


def test_check_lines_is_lazy() -> None:
    # Given an endless source of lines
    def endless() -> Any:
        number = 0
        while True:
            number += 1
            yield request_line(f"r{number}")

    # When the first three results are taken
    results = check_lines(endless())
    taken = [next(results) for _ in range(3)]
    # Then they come without the source being exhausted
    assert [r.line for r in taken] == [1, 2, 3]


# --- property: one result per non-blank line, in order --------------------------------

BAD_LINES = [line for _, line, _ in REJECTIONS]
BLANKS = [b"", b"\n", b"  \r\n", b"\t"]


@st.composite
def mixed_files(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    kinds = draw(st.lists(st.sampled_from(["good", "bad", "blank", "noise"]), max_size=60))
    lines: list[bytes] = []
    expected: list[int] = []
    for number, kind in enumerate(kinds, start=1):
        if kind == "good":
            lines.append(request_line(f"id-{draw(st.integers(0, 20))}"))  # duplicates happen, on purpose
        elif kind == "bad":
            lines.append(draw(st.sampled_from(BAD_LINES)))
        elif kind == "blank":
            lines.append(draw(st.sampled_from(BLANKS)))
        else:
            noise = draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b))
            lines.append(noise)
            if not noise.strip() or (number == 1 and not noise.removeprefix(b"\xef\xbb\xbf").strip()):
                continue
        if kind != "blank":
            expected.append(number)
    return lines, expected


@given(mixed_files())
def test_every_non_blank_line_yields_exactly_one_result_in_order(file: tuple[list[bytes], list[int]]) -> None:
    # Given any mix of good, bad, blank and random lines
    lines, expected_numbers = file
    # When they are checked
    results = list(check_lines(lines))
    # Then each non-blank line has exactly one result, with its own number, in file order
    assert [r.line for r in results] == expected_numbers
    # And every valid custom_id is unique, every valid body parses
    valid = [r for r in results if isinstance(r, ValidLine)]
    assert len({r.custom_id for r in valid}) == len(valid)
    assert all(json.loads(r.body)["custom_id"] == r.custom_id for r in valid)


def test_integers_at_the_edges_of_64_bits_are_valid() -> None:
    # Given the largest and smallest 64-bit integers, and a long float
    line = request_line(metadata={"hi": 2**63 - 1, "lo": -(2**63), "f": 0.1234567890123456789012})
    # When it is checked
    # Then it is valid: only a number beyond 64 bits is refused
    assert isinstance(only_result([line]), ValidLine)


def test_no_reason_gives_python_advice() -> None:
    # Given a line with an integer too long for Python to convert
    line = request_line(max_tokens=1).replace(b'"max_tokens": 1', b'"max_tokens": ' + b"9" * 5000)
    # When it is checked
    result = only_result([line])
    # Then the reason speaks of the request, not of the interpreter's settings
    assert isinstance(result, RejectedLine)
    assert "sys." not in result.reason
    assert "int_max_str_digits" not in result.reason


def test_a_line_the_reader_did_not_hold_is_rejected_with_its_length() -> None:
    # Given a line the bounded reader dropped for its length, between two good ones
    lines = [request_line("a"), OverlongLine(40_000_002, 40_000_001), request_line("b")]
    # When they are checked
    results = list(check_lines(lines))
    # Then it is rejected on its own line number, naming its size, and its neighbours are valid
    assert [type(r) for r in results] == [ValidLine, RejectedLine, ValidLine]
    assert results[1].line == 2
    assert isinstance(results[1], RejectedLine)
    assert results[1].reason.startswith("line is 40000001 bytes; a request may be at most 33554432 bytes")


def test_a_line_of_millions_of_empty_objects_is_rejected_before_it_is_parsed() -> None:
    # Given a 6 MiB line of two million empty objects (some 150 MB once parsed)
    line = b'{"custom_id":"a","params":{"m":[' + b"{}," * 2_000_000 + b"{}]}}"
    # When it is checked, its memory measured
    tracemalloc.start()
    try:
        result = only_result([line])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Then it is rejected with the count, and never held as objects
    assert isinstance(result, RejectedLine)
    assert result.reason == "the line holds 2000004 JSON objects and arrays; a request may hold at most 1000000"
    assert peak < 2 * len(line)


def test_a_line_of_a_million_containers_is_parsed() -> None:
    # Given a line of exactly a million objects and arrays (strings holding none)
    line = b'{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]'
    filler = b',"metadata":{"l":[' + b"{}," * (1_000_000 - 7) + b"{}]}}}"
    result = only_result([line + filler])
    # Then the count alone does not reject it: it is read, and found valid
    assert isinstance(result, ValidLine)


def test_no_reason_doubles_a_word() -> None:
    # Given every rejection this module knows, and a line with several problems at once
    lines = [line for _, line, _ in REJECTIONS] + [request_line("a b", max_tokens=0, stream=True)]
    # When they are checked
    reasons = [result.reason for result in check_lines(lines) if isinstance(result, RejectedLine)]
    # Then each reason reads well: no word twice in a row ("the the", "is is")
    assert len(reasons) == len(lines)
    doubled = [reason for reason in reasons if re.search(r"\b(\w+)\s+\1\b", reason, re.IGNORECASE)]
    assert doubled == []


# --- nesting: as deep as the parser reads ------------------------------------------------


def nested(depth: int, inner: str = "1") -> bytes:
    """A valid request whose deepest value sits `depth` objects and arrays deep: the line's
    own object, params, then a passed-through parameter of arrays."""
    line = request_line("deep", some_future_param=1).rstrip(b"\n")
    arrays = depth - 2
    return line.replace(
        b'"some_future_param": 1', b'"some_future_param": ' + (b"[" * arrays + inner.encode() + b"]" * arrays)
    )


def test_a_line_the_parser_reads_passes_and_one_past_it_is_rejected_with_its_depth_and_line_number() -> None:
    # Given a good line, one nested deeper than any request needs, and one past the parser
    lines = [request_line("first"), nested(PARSER_DEPTH // 2) + b"\n", nested(5 * PARSER_DEPTH) + b"\n"]

    # When they are checked
    first, deep, beyond = check_lines(lines)

    # Then the one past the parser alone is rejected, on its own line, with its depth
    assert isinstance(first, ValidLine)
    assert isinstance(deep, ValidLine)
    assert isinstance(beyond, RejectedLine)
    expected = f"objects and arrays nest {5 * PARSER_DEPTH} deep in this line, deeper than a request can be read"
    assert (beyond.line, beyond.reason) == (3, expected)


def test_a_line_100000_deep_is_rejected_in_bounded_memory() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        result = only_result([b"[" * 100_000 + b"]" * 100_000])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert isinstance(result, RejectedLine)
    assert "nest 100000 deep" in result.reason
    assert peak < 8 * 1024 * 1024, f"{peak / 1024 / 1024:.1f} MB at peak"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        pytest.param("[" * 500, 3, id="brackets in a string"),
        pytest.param('\\"' + "{" * 500, 3, id="brackets after an escaped quote"),
        pytest.param("\\\\", 3, id="an escaped backslash before the closing quote"),
        pytest.param("]" * 300 + "[" * 300, 3, id="closing brackets first"),
    ],
)
def test_brackets_inside_strings_are_text_not_nesting(text: str, depth: int) -> None:
    # Given a line [[["<text>", ...]]] whose strings hold brackets, and real nesting after them
    string = json.dumps(text).encode() if "\\" not in text else b'"' + text.encode() + b'"'
    line = b"[[[" + string + b"," + b"[" * 200 + b"]" * 200 + b"]]]"
    assert json.loads(line)  # JSON as written

    # When its depth is measured, it counts only the brackets outside strings
    assert nesting_depth(line, limit=100) == depth + 200
    assert nesting_depth(b"[[[" + string + b"]]]", limit=1) == depth


def test_depth_is_measured_exactly_whatever_the_shape() -> None:
    # Balanced, unbalanced (not JSON: the parser rejects those), and under the limit
    assert nesting_depth(b"[" * 300, limit=10) == 300
    assert nesting_depth(b"]" * 300 + b"[" * 20, limit=10) == 0
    assert nesting_depth(b"[[]" * 50 + b"]" * 50, limit=10) == 51
    assert nesting_depth(b'{"a":[{"b":[1]}]}' * 40, limit=10) == 4
    assert nesting_depth(b'["', limit=0) == 1


# --- reading a line: jiter first, json the referee ------------------------------------

# JSON texts built as text, so that keys repeat, escape their letters and numbers overflow.
_SCALARS = st.one_of(
    st.sampled_from(["null", "true", "false", "-0", "1.0", "0.5e-400", "1E308", "2e308", "1e400", "-1e400"]),
    st.sampled_from([str(2**63 - 1), str(2**63), str(-(2**63)), str(-(2**63) - 1), "1" + "0" * 30]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=6).map(lambda text: json.dumps(text, ensure_ascii=False)),
    st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"cache_control"', '"\\u0000"']),
)
_KEYS = st.sampled_from(["a", "b", "\\u0061", "cache_control", "cache\\u005fcontrol", "custom_id"])
_TEXTS = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(_KEYS, inner), max_size=3).map(
            lambda pairs: "{" + ",".join(f'"{key}":{value}' for key, value in pairs) + "}"
        )
    ),
    max_leaves=10,
)
_BYTE_EDITS = st.sampled_from([b"", b"x", b",", b"]", b"}", b" ", b"\x00", b"\xff", b"\xed\xa0\x80", b"NaN", b'"'])


def _read(parse: Any, line: bytes) -> tuple[str, Any]:
    """("read", the value as JSON text) or ("refused", the reason)."""
    try:
        value = parse(line)
    except requests._UnreadableError as exc:
        return "refused", str(exc)
    return "read", json.dumps(value)


def _holds_cache_key(value: Any) -> bool:
    if isinstance(value, dict):
        return "cache_control" in value or any(_holds_cache_key(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_cache_key(item) for item in value)
    return False


@settings(max_examples=500, deadline=None)
@given(text=_TEXTS, at=st.integers(min_value=0, max_value=300), edit=_BYTE_EDITS)
def test_a_line_is_read_as_json_reads_it_or_refused_with_jsons_reason(text: str, at: int, edit: bytes) -> None:
    data = text.encode()
    for line in (data, data[:at] + edit + data[at:]):
        # The fast read gives json's value, or json's reason: json is asked wherever jiter refuses.
        expected = _read(requests._decode, line)
        assert _read(lambda raw: requests._parse(raw)[0], line) == expected
        if expected[0] == "read":
            _, marks = requests._parse(line)
            assert bool(marks & requests._CACHE_CONTROL) == _holds_cache_key(json.loads(line))


def test_a_line_nested_deeper_than_jiter_reads_is_read_by_json() -> None:
    # jiter stops some 200 levels down; json reads on to PARSER_DEPTH
    deep = b'{"custom_id":"deep","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"q"}],'
    deep += b'"metadata":' + b"[" * 300 + b'{"cache_control":1}' + b"]" * 300 + b"}}"
    [checked] = check_lines([deep])
    assert isinstance(checked, ValidLine)
    assert checked.cache_marked is True
    _, marks = requests._parse(deep)
    assert marks & requests._SURROGATES_UNCHECKED  # json read it


@pytest.mark.parametrize(
    ("params_extra", "marked"),
    [
        ('"system":[{"type":"text","text":"rules","cache_control":{"type":"ephemeral"}}]', True),
        ('"system":"mention \\"cache_control\\" in text only"', False),  # a string, not a key
        ('"system":[{"type":"text","text":"rules","cache\\u005fcontrol":{"type":"ephemeral"}}]', True),  # escaped
        ('"metadata":{"user_id":"u"}', False),
    ],
)
def test_a_valid_line_says_whether_an_object_in_it_marks_a_cache_breakpoint(params_extra: str, marked: bool) -> None:
    line = (
        '{"custom_id":"c","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"q"}],'
        + params_extra
        + "}}"
    ).encode()
    [checked] = check_lines([line])
    assert isinstance(checked, ValidLine)
    assert checked.cache_marked is marked


def test_a_lone_surrogate_json_reads_is_still_refused_with_the_custom_id() -> None:
    line = b'{"custom_id":"s","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"\\ud800"}]}}'
    [checked] = check_lines([line])
    assert isinstance(checked, RejectedLine)
    assert (checked.custom_id, checked.reason) == (
        "s",
        r"a string holds an unpaired surrogate escape (\ud800-\udfff), which is not valid Unicode",
    )


@pytest.mark.parametrize("depth", [990, 1_200])
def test_a_line_nested_as_deep_as_json_reads_gets_its_verdict_without_a_recursion_error(depth: int) -> None:
    # Read by json (jiter stops far sooner): its cache key is found by a walk of its own
    head = b'{"custom_id":"deep","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"q"}],'
    line = head + b'"metadata":' + b"[" * depth + b'{"cache_control":1}' + b"]" * depth + b"}}"
    [checked] = check_lines([line])
    assert isinstance(checked, ValidLine)
    assert checked.cache_marked is True
