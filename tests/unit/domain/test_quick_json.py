"""The outputs' fast JSON (domain/quick_json.py) gives the value, or the error, that
Python's json gives, for any text: jiter parses, json referees what jiter refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchdrop.domain import quick_json
from batchdrop.domain.strict_json import NotANumberError, refuse_constant

pytestmark = pytest.mark.unit

STRICT = json.JSONDecoder(parse_constant=refuse_constant)  # strict as an answer is read

# JSON values, then texts around them: both what json accepts and what it does not.
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(alphabet=st.characters(codec=None, exclude_categories=["Cs"]) | st.sampled_from('\ud800\udfff"\\')),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
EDITS = st.sampled_from(["", "x", ",", "]", "}", " ", "\x00", "\ud800", "NaN", "1e400", "\\", '"', "01"])


def outcome(parse: Any, text: str) -> tuple[str, Any]:
    """("ok", value) or ("error", the exception's class), NaN made comparable."""
    try:
        value = parse(text)
    except ValueError as exc:
        return "error", type(exc)
    return "ok", json.dumps(value, allow_nan=True, sort_keys=False)  # nan != nan; its text is equal


@settings(max_examples=400, deadline=None)
@given(value=VALUES, at=st.integers(min_value=0, max_value=200), edit=EDITS, ensure_ascii=st.booleans())
def test_any_text_gives_what_json_gives(value: Any, at: int, edit: str, ensure_ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True)
    for candidate in (text, text[:at] + edit + text[at:]):
        for referee in (json.loads, STRICT.decode):
            expected = outcome(referee, candidate)
            assert outcome(lambda t, judge=referee: quick_json.parse(t, judge), candidate) == expected
            try:
                data = candidate.encode()
            except UnicodeEncodeError:
                continue
            assert outcome(lambda _t, raw=data, judge=referee: quick_json.parse(raw, judge), candidate) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456789012345678901234567890", 123456789012345678901234567890),  # exact, not a float
        ('{"a": 1, "a": 2}', {"a": 2}),  # the last of a repeated key, as json keeps it
        ('"\\ud800"', "\ud800"),  # a lone surrogate escape: jiter refuses it, json reads it
        ("1e400", math.inf),
        ("-0.0", -0.0),
    ],
)
def test_values_json_gives_where_parsers_often_differ(text: str, expected: Any) -> None:
    value = quick_json.parse(text.encode(), json.loads)
    assert value == expected
    assert type(value) is type(expected)


def test_bytes_that_are_not_utf8_raise_as_decoding_them_does() -> None:
    with pytest.raises(UnicodeDecodeError):
        quick_json.parse(b'"\xff"', json.loads)


def test_nan_is_the_referees_choice() -> None:
    assert math.isnan(quick_json.parse(b"NaN", json.loads))
    with pytest.raises(NotANumberError):
        quick_json.parse(b"NaN", STRICT.decode)
