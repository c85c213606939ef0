"""Specification of the JSON Schema subset validator the outputs use: examples that must pass
and fail (with the reason named at its path), schemas outside the subset refused, and, for any
schema of the subset and any value, the same verdict as the reference implementation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from batchdrop.domain.schemas import TYPES, compile_schema, conforms_to, schema_problems, validate

pytestmark = pytest.mark.unit

REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "confidence": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "source": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/source"}]},
        "version": {"const": 2},
        "count": {"type": ["integer", "null"]},
        "when": {"type": "string", "format": "date-time"},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
    "$defs": {
        "source": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
            "additionalProperties": False,
        }
    },
}


@pytest.mark.parametrize(
    "value",
    [
        {"sentiment": "positive", "confidence": 0.9},
        {"sentiment": "negative", "confidence": 1, "tags": ["a"], "source": None, "version": 2.0, "count": 3},
        {"sentiment": "negative", "confidence": 0, "source": {"url": "u"}, "count": None, "when": "not a date"},
        {"sentiment": "positive", "confidence": 1e3, "count": 4.0},
    ],
)
def test_values_that_conform_pass(value: Any) -> None:
    assert validate(value, REVIEW) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "$: must be object, got array"),
        ({"confidence": 1}, '$: the required property "sentiment" is missing'),
        ({"sentiment": "meh", "confidence": 1}, '$.sentiment: must be one of "positive", "negative"; got "meh"'),
        ({"sentiment": "positive", "confidence": True}, "$.confidence: must be number, got boolean"),
        ({"sentiment": "positive", "confidence": "0.9"}, "$.confidence: must be number, got string"),
        ({"sentiment": "positive", "confidence": 1, "mood": "x"}, '$: property "mood" is not allowed'),
        ({"sentiment": "positive", "confidence": 1, "tags": []}, "$.tags: must have at least 1 items, got 0"),
        (
            {"sentiment": "positive", "confidence": 1, "tags": ["a", "b", "c"]},
            "$.tags: must have at most 2 items, got 3",
        ),
        ({"sentiment": "positive", "confidence": 1, "tags": ["a", 2]}, "$.tags[1]: must be string, got integer"),
        (
            {"sentiment": "positive", "confidence": 1, "source": {"url": 1}},
            "$.source: matches none of the anyOf choices (the first: $.source: must be null, got object)",
        ),
        ({"sentiment": "positive", "confidence": 1, "version": 3}, "$.version: must be 2, got 3"),
        ({"sentiment": "positive", "confidence": 1, "version": True}, "$.version: must be 2, got true"),
        ({"sentiment": "positive", "confidence": 1, "count": 1.5}, "$.count: must be integer or null, got number"),
    ],
)
def test_values_that_do_not_conform_fail_with_the_path_and_reason(value: Any, problem: str) -> None:
    assert validate(value, REVIEW) == problem


def test_recursive_refs_validate_trees_and_a_ref_loop_ends() -> None:
    tree = {
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
                "required": ["name"],
            }
        },
    }
    assert validate({"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}, tree) is None
    assert validate({"name": "a", "children": [{"name": "b", "children": [{}]}]}, tree) == (
        '$.children[0].children[0]: the required property "name" is missing'
    )
    loop = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
    assert validate(1, loop) == "$: the schema nests too deeply to check (a $ref loop?)"


def test_the_subset_is_checked_in_the_schema_itself() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "strng"},
            "b": {"type": "string", "pattern": "^x"},
            "c": {"type": "array", "items": {"minItems": -1}},
            "d": {"anyOf": []},
            "e": {"enum": "x"},
        },
        "required": "a",
        "allOf": [],
    }
    assert list(schema_problems(schema, "output.schema")) == [
        'output.schema: the keyword "allOf" is not supported in output schemas',
        "output.schema.required: must be a list of property names",
        "output.schema.properties.a.type: must be one of object, array, string, number, integer, boolean, null (or a "
        'list of them), got "strng"',
        'output.schema.properties.b: the keyword "pattern" is not supported in output schemas',
        "output.schema.properties.c.items.minItems: must be an integer >= 0, got -1",
        "output.schema.properties.d.anyOf: must be a non-empty list of schemas",
        "output.schema.properties.e.enum: must be a non-empty list",
    ]
    assert list(schema_problems(REVIEW, "output.schema")) == []


# --- the same verdicts as the reference implementation --------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
SCALARS = (
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.5, 1.0, -0.0]) | st.sampled_from(["", "x"])
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3), max_leaves=8
)

LEAF_SCHEMAS = (
    st.builds(lambda name: {"type": name}, st.sampled_from(TYPES))
    | st.builds(lambda names: {"type": names}, st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True))
    | st.builds(lambda options: {"enum": options}, st.lists(VALUES, min_size=1, max_size=3))
    | st.builds(lambda value: {"const": value}, VALUES)
    | st.builds(lambda: {"type": "string", "format": "email", "description": "ignored"})
    | st.booleans()
)


def _composite(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    objects = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": required,
            **({} if extra is None else {"additionalProperties": extra}),
        },
        st.dictionaries(NAMES, inner, max_size=3),
        st.lists(NAMES, max_size=2, unique=True),
        st.none() | st.booleans() | inner,
    )
    arrays = st.builds(
        lambda items, low, high: {
            "type": "array",
            "items": items,
            "minItems": low,
            **({} if high is None else {"maxItems": high}),
        },
        inner,
        st.integers(0, 2),
        st.none() | st.integers(0, 3),
    )
    return objects | arrays | st.builds(lambda choices: {"anyOf": choices}, st.lists(inner, min_size=1, max_size=3))


SCHEMAS = st.recursive(LEAF_SCHEMAS, _composite, max_leaves=6)


@given(schema=SCHEMAS, shared=SCHEMAS, value=VALUES)
def test_verdicts_match_the_reference_validator(schema: Any, shared: Any, value: Any) -> None:
    # Given any schema of the subset, reached directly or through a $ref to $defs, and any value
    root = {"anyOf": [schema, {"$ref": "#/$defs/shared"}], "$defs": {"shared": shared}}
    for candidate in (schema, shared, root):
        if isinstance(candidate, dict):
            assert list(schema_problems(candidate, "s")) == []
        # Then this validator passes it exactly when the reference implementation does
        expected = Draft202012Validator(candidate).is_valid(value)
        assert (validate(value, candidate) is None) == expected, (candidate, value)


# --- the compiled validator gives what validate gives ------------------------------------


@given(schema=SCHEMAS, shared=SCHEMAS, value=VALUES)
def test_a_compiled_schema_gives_what_validate_gives(schema: Any, shared: Any, value: Any) -> None:
    root = {"anyOf": [schema, {"$ref": "#/$defs/shared"}], "$defs": {"shared": shared}}
    beside = {"type": "object", "properties": {"a": schema}, "additionalProperties": shared}
    for candidate in (schema, shared, root, beside):
        expected = validate(value, candidate)
        assert conforms_to(candidate)(value) is (expected is None), (candidate, value)
        assert compile_schema(candidate)(value) == expected, (candidate, value)


HOPS = st.sampled_from(["ref", "anyOf", "items", "property", "extra"])


def _chain(hops: list[str], leaf: Any, value: Any) -> tuple[Any, Any]:
    """A schema reaching `leaf` through `hops` (each one level deeper to the validator), and
    a value reaching `value` through the same hops."""
    defs: dict[str, Any] = {}
    for number, hop in enumerate(reversed(hops)):
        if hop == "ref":
            defs[f"d{number}"] = leaf
            leaf = {"$ref": f"#/$defs/d{number}"}
        elif hop == "anyOf":
            leaf = {"anyOf": [{"type": "string"}, leaf]}
        elif hop == "items":
            leaf, value = {"type": "array", "items": leaf}, [value]
        elif hop == "property":
            leaf, value = {"type": "object", "properties": {"p": leaf}}, {"p": value}
        else:
            leaf, value = {"type": "object", "additionalProperties": leaf}, {"q": value}
    return ({**leaf, "$defs": defs} if isinstance(leaf, dict) else leaf), value


@given(
    hops=st.integers(61, 67).flatmap(lambda size: st.lists(HOPS, min_size=size, max_size=size)),
    leaf=st.sampled_from([True, False, {}, {"type": "object"}, {"type": "array", "items": True}]),
    value=VALUES,
)
def test_a_compiled_schema_keeps_the_depth_bound(hops: list[str], leaf: Any, value: Any) -> None:
    # Given a schema nesting near validate's depth bound, by any mix of hops
    schema, nested = _chain(hops, leaf, value)
    # Then the bound falls where validate puts it
    assert conforms_to(schema)(nested) is (validate(nested, schema) is None), (hops, leaf, value)


@pytest.mark.parametrize("size", [63, 64, 65, 66])
@pytest.mark.parametrize("hop", ["ref", "anyOf", "items", "property", "extra"])
@pytest.mark.parametrize("leaf", [True, {}, {"type": "array", "items": True}])
def test_the_depth_bound_falls_at_the_same_hop(size: int, hop: str, leaf: Any) -> None:
    for value in (1, [1], {"a": 1}):
        schema, nested = _chain([hop] * size, leaf, value)
        assert conforms_to(schema)(nested) is (validate(nested, schema) is None), (hop, size, leaf, value)


def test_a_compiled_enum_and_const_compare_as_json_does() -> None:
    options: list[Any] = ["a", 1, 1.5, True, None, [1], {"k": "v"}]
    for schema in ({"enum": options}, *({"const": option} for option in options)):
        for value in [*options, 1.0, [1.0], "b", 2, False, "1", 0, [True], {"k": "w"}]:
            assert conforms_to(schema)(value) is (validate(value, schema) is None), (schema, value)
    assert conforms_to({"enum": options})(1.0)
    assert not conforms_to({"enum": options})(False)


def test_a_compiled_schema_names_the_first_problem_as_validate_does() -> None:
    check = compile_schema(REVIEW)
    assert check({"sentiment": "positive", "confidence": 0.9, "tags": ["a"], "source": {"url": "u"}}) is None
    problem = '$.sentiment: must be one of "positive", "negative"; got "meh"'
    assert check({"sentiment": "meh", "confidence": 1}) == problem
    assert check({"sentiment": "positive", "confidence": True}) == "$.confidence: must be number, got boolean"
    loop = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
    assert compile_schema(loop)(1) == "$: the schema nests too deeply to check (a $ref loop?)"
    assert compile_schema({"enum": ["1", 1, True]})(1.0) is None
    assert compile_schema({"enum": ["1", 1]})(True) == '$: must be one of "1", 1; got true'


# The usual output schema: an object of scalar properties, some enums of strings. Its check
# passes the common value by exact types; every other value goes to the compiled schema.
SCALAR_TYPES = ["string", "number", "integer", "boolean", "null"]
FLAT_PROPERTIES = st.dictionaries(
    NAMES,
    st.sampled_from(SCALAR_TYPES).map(lambda name: {"type": name})
    | st.builds(
        lambda options: {"type": "string", "enum": options}, st.lists(st.sampled_from(["", "x", "y"]), min_size=1)
    )
    | st.builds(lambda options: {"type": "number", "enum": options}, st.lists(st.sampled_from([1, 0.5]), min_size=1))
    | st.just({"type": "string", "const": "x"})
    | st.just({"type": "string", "description": "a note", "format": "email"})
    | LEAF_SCHEMAS,
    min_size=1,
    max_size=3,
)
FLAT_SCALARS = SCALARS | st.sampled_from([2**70, float("inf"), "y", 1.5])


@settings(max_examples=400)
@given(properties=FLAT_PROPERTIES, extra=st.none() | st.booleans() | LEAF_SCHEMAS, data=st.data())
@example(properties={"a": {"type": "number"}}, extra=None, data=None)
def test_a_flat_object_schema_gives_what_validate_gives(
    properties: dict[str, Any], extra: Any, data: st.DataObject | None
) -> None:
    names = sorted(properties)
    # Mostly required names and values among the properties' own, so that the quick look
    # decides most values, and it is seen to decide them as validate does
    required = ["a"] if data is None else data.draw(st.lists(st.sampled_from(names) | NAMES, max_size=3, unique=True))
    schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        **({} if extra is None else {"additionalProperties": extra}),
    }
    needed = [name for name in required if name in properties]
    optional = {name: FLAT_SCALARS for name in names if name not in needed}
    plain = st.fixed_dictionaries(dict.fromkeys(needed, FLAT_SCALARS), optional=optional)
    values = (
        [{"a": True}, {"a": 1.0}, {}, {"a": 1, "b": None}]
        if data is None
        else [data.draw(plain | st.dictionaries(NAMES, FLAT_SCALARS | VALUES, max_size=3) | VALUES)]
    )
    for value in values:
        expected = validate(value, schema)
        assert conforms_to(schema)(value) is (expected is None), (schema, value)
        assert compile_schema(schema)(value) == expected, (schema, value)
