"""Values shaped by a JSON Schema, for structured outputs and forced tools, and values made to
break one, for the emulator's `invalid_output` fault.

`SchemaSampler` draws a value that conforms to the structured-outputs subset of JSON Schema
(type or a list of types, enum, const, required and optional properties, additionalProperties,
items, minItems, maxItems, anyOf, local `$ref` into `$defs`), plus what tool schemas commonly
add (minimum, maximum, minLength, maxLength, oneOf, a string `format`). `violation` turns a
conforming value into one a validator refuses, naming a property where it can, as a model's
slip would.

See https://platform.claude.com/docs/en/build-with-claude/structured-outputs for the subset."""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Literal, TypeGuard

InvalidKind = Literal["not_json", "not_conforming"]

_WORDS = (
    "amber", "basil", "cedar", "delta", "ember", "fable", "glade", "harbor",
    "iris", "juniper", "kestrel", "lumen", "meadow", "nectar", "orbit", "pixel",
)  # fmt: skip
_MAX_HOPS = 64  # $ref hops while resolving one schema: a loop of $refs ends here
_SHALLOW = 4  # past this depth: no optional property, arrays at their minimum, the plainest anyOf choice
_DEEPEST = 48  # past this depth (a schema that can only recurse): null, and the answer will not conform
_INVALID_STRING = "emulated-invalid-value"
# Values to put where a schema wants something else: one of each JSON type.
_WRONG_VALUES: tuple[Any, ...] = (_INVALID_STRING, 1.5, True, None, [], {})


def output_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema `output_config.format` asks the answer to follow, or None."""
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    schema = fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    return schema if isinstance(schema, dict) else None


class SchemaSampler:
    """Draws values for the schemas of one root (where `$ref`s point), from one random stream."""

    def __init__(self, root: Any, rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self, schema: Any, depth: int = 0) -> Any:
        schema = resolve(self._root, schema)
        if schema is True or schema == {}:
            return self._word()
        if not isinstance(schema, dict) or depth > _DEEPEST:
            return None
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            fitting = [option for option in schema["enum"] if _fits_type(option, schema)]
            return copy.deepcopy(self._rng.choice(fitting or schema["enum"]))
        for combinator in ("anyOf", "oneOf"):
            if isinstance(schema.get(combinator), list) and schema[combinator]:
                return self.value(self._with_choice(schema, combinator, depth), depth + 1)
        return self._typed(schema, self._kind(schema, depth), depth)

    def object(self, schema: Any, depth: int = 0) -> dict[str, Any]:
        """An object with every required property and, near the top, about half the optional ones."""
        schema = resolve(self._root, schema)
        if not isinstance(schema, dict):
            return {}
        properties = _properties(schema)
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        extra = schema.get("additionalProperties", True)
        result: dict[str, Any] = {}
        for name, sub in properties.items():
            wanted = name in required or (depth < _SHALLOW and self._rng.random() < 0.5)
            if wanted and sub is not False:
                result[name] = self.value(sub, depth + 1)
        for name in required:
            if name not in result and name not in properties and extra is not False:
                result[name] = self.value(extra, depth + 1)
        return result

    def _with_choice(self, schema: dict[str, Any], combinator: str, depth: int) -> dict[str, Any]:
        """`schema` without the combinator, joined with one of its choices."""
        choices = [resolve(self._root, choice) for choice in schema[combinator]]
        choices = [choice if isinstance(choice, dict) else {} for choice in choices if choice is not False] or [{}]
        if depth >= _SHALLOW:  # recursion ends where a choice needs no further nesting
            plain = [choice for choice in choices if not _may_nest(choice)]
            choice = (plain or choices)[0]
        else:
            choice = self._rng.choice(choices)
        return _join({key: value for key, value in schema.items() if key != combinator}, choice)

    def _kind(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list) and kind:
            scalar = [name for name in kind if name not in ("object", "array")]
            return str(scalar[0] if depth >= _SHALLOW and scalar else self._rng.choice(kind))
        if isinstance(kind, str):
            return kind
        if any(key in schema for key in ("properties", "required", "additionalProperties")):
            return "object"
        return "array" if any(key in schema for key in ("items", "minItems", "maxItems")) else "string"

    def _typed(self, schema: dict[str, Any], kind: str, depth: int) -> Any:
        match kind:
            case "object":
                return self.object(schema, depth)
            case "array":
                return self._array(schema, depth)
            case "integer" | "number":
                return self._number(schema, integer=kind == "integer")
            case "boolean":
                return self._rng.random() < 0.5
            case "null":
                return None
            case _:
                return self._string(schema)

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items", True)
        low = _count(schema.get("minItems"), 0)
        high = max(low, _count(schema.get("maxItems"), low + 3))
        if items is False:
            return []
        count = low if depth >= _SHALLOW else self._rng.randint(low, high)
        return [self.value(items, depth + 1) for _ in range(count)]

    def _number(self, schema: dict[str, Any], *, integer: bool) -> int | float:
        given_low, given_high = schema.get("minimum"), schema.get("maximum")
        high: float | None = float(given_high) if _is_number(given_high) else None
        low: float = float(given_low) if _is_number(given_low) else min(0.0, high if high is not None else 0.0)
        high = high if high is not None else low + 100
        if integer:
            start, stop = math.ceil(low), math.floor(high)
            return self._rng.randint(start, stop) if start <= stop else start
        drawn = round(self._rng.uniform(low, high), 2)
        return float(min(max(drawn, low), high))

    def _string(self, schema: dict[str, Any]) -> str:
        text = _formatted(schema.get("format"), self._rng) or self._word()
        minimum = _count(schema.get("minLength"), 0)
        text = text.ljust(minimum, "x")
        maximum = schema.get("maxLength")
        return text[:maximum] if isinstance(maximum, int) and maximum >= minimum else text

    def _word(self) -> str:
        return f"{self._rng.choice(_WORDS)} {self._rng.choice(_WORDS)}"


def violation(value: Any, schema: Any, root: Any, rng: random.Random) -> tuple[bool, Any]:
    """(True, `value` changed so that it no longer conforms to `schema`), or (False, None) when
    the schema leaves no rule to break. A property's value is broken first, then a required
    property dropped, then the whole value replaced."""
    schema = resolve(root, schema)
    if not isinstance(schema, dict):
        return False, None
    if isinstance(value, dict):
        properties = _properties(schema)
        breakable = {
            name: wrong
            for name in value
            if name in properties and (wrong := _wrong_value(resolve(root, properties[name])))[0]
        }
        if breakable:
            name = rng.choice(sorted(breakable))
            return True, value | {name: breakable[name][1]}
        present = [name for name in schema.get("required") or [] if name in value]
        if present:
            dropped = rng.choice(present)
            return True, {key: item for key, item in value.items() if key != dropped}
    return _wrong_value(schema)


def resolve(root: Any, schema: Any) -> Any:
    """`schema` with its `$ref` (followed to the end) joined in, since a value must satisfy
    both. A `$ref` that points nowhere is dropped."""
    for _ in range(_MAX_HOPS):
        if not isinstance(schema, dict) or "$ref" not in schema:
            return schema
        target = _pointer(root, schema["$ref"])
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        if target is None or target is True:
            schema = rest
        elif target is False:
            return False
        else:
            schema = _join(target, rest) if isinstance(target, dict) else rest
    return schema


def _join(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One schema for a value that must satisfy both: their properties joined (a property both
    name, joined in turn) and their required names together; any other keyword from `second`."""
    joined = first | second
    if isinstance(first.get("properties"), dict) and isinstance(second.get("properties"), dict):
        properties = dict(first["properties"])
        for name, sub in second["properties"].items():
            both = isinstance(properties.get(name), dict) and isinstance(sub, dict)
            properties[name] = _join(properties[name], sub) if both else sub
        joined["properties"] = properties
    if isinstance(first.get("required"), list) and isinstance(second.get("required"), list):
        joined["required"] = list(dict.fromkeys([*first["required"], *second["required"]]))
    return joined


def _pointer(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        return None
    target = root
    for token in ref[2:].split("/") if ref != "#" else ():
        key = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or key not in target:
            return None
        target = target[key]
    return target


def _wrong_value(schema: Any) -> tuple[bool, Any]:
    """(True, a value that breaks `schema`'s own const, enum or type, whatever else it says),
    or (False, None) when it has none of them."""
    if not isinstance(schema, dict):
        return False, None
    if "const" in schema:
        candidates = [wrong for wrong in _WRONG_VALUES if not _json_equal(wrong, schema["const"])]
    elif isinstance(schema.get("enum"), list):
        candidates = [wrong for wrong in _WRONG_VALUES if not any(_json_equal(wrong, o) for o in schema["enum"])]
    elif "type" in schema:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        candidates = [wrong for wrong in _WRONG_VALUES if not any(_is_type(wrong, name) for name in wanted)]
    else:
        candidates = []
    return (True, copy.deepcopy(candidates[0])) if candidates else (False, None)


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    return properties if isinstance(properties, dict) else {}


def _fits_type(value: Any, schema: dict[str, Any]) -> bool:
    if "type" not in schema:
        return True
    wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return any(_is_type(value, name) for name in wanted)


def _is_type(value: Any, name: Any) -> bool:
    """JSON Schema's types: true is no number, and 1.0 is an integer."""
    match name:
        case "null":
            return value is None
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return _is_number(value) and float(value).is_integer()
        case "number":
            return _is_number(value)
        case "string":
            return isinstance(value, str)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    return False


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[key], right[key]) for key in left)
    return type(left) is type(right) and bool(left == right)


def _may_nest(schema: dict[str, Any]) -> bool:
    """Whether a value for `schema` may hold further values (or follow a `$ref`)."""
    if "$ref" in schema:
        return True
    if "const" in schema or "enum" in schema:
        return False
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    return any(name in ("object", "array", None) for name in kinds)


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _formatted(fmt: Any, rng: random.Random) -> str | None:
    """A plausible string for the common `format`s; None for the others."""
    day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    match fmt:
        case "date-time":
            return f"{day}T{clock}Z"
        case "date":
            return day
        case "time":
            return clock
        case "email":
            return f"{rng.choice(_WORDS)}@example.com"
        case "uri":
            return f"https://example.com/{rng.choice(_WORDS)}"
        case "uuid":
            return "-".join(f"{rng.getrandbits(bits):0{bits // 4}x}" for bits in (32, 16, 16, 16, 48))
    return None
