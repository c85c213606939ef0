"""A small JSON Schema validator for exactly the subset structured outputs accept: type (one
or a list), enum, const, required, properties, additionalProperties, items, minItems,
maxItems, anyOf, and local $ref into $defs (or definitions); format and the annotation
keywords are read and ignored. A schema using anything else is refused when the pipeline is
checked (`schema_problems`), so a schema this module accepts is validated in full.

Written here rather than taken from a library: the general validators either depend on
compiled extensions or take far longer to import than the whole layer, and the subset is
small. Semantics follow JSON Schema 2020-12 (1.0 is an integer; true is not a number; $ref
applies beside its sibling keywords)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

SUPPORTED_KEYWORDS: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "format",
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
    }
)
TYPES: Final = ("object", "array", "string", "number", "integer", "boolean", "null")
_MAX_DEPTH: Final = 64  # $ref hops and nesting together: a loop of $refs ends here
_SHOWN_CHARS: Final = 40


def validate(instance: Any, schema: Any) -> str | None:
    """None when `instance` conforms to `schema`, else the first problem found: "path: reason"."""
    return _Validator(schema).check(instance, schema, "$", 0)


class _Validator:
    def __init__(self, root: Any) -> None:
        self._root = root

    def check(self, value: Any, schema: Any, path: str, depth: int) -> str | None:
        if depth > _MAX_DEPTH:
            return f"{path}: the schema nests too deeply to check (a $ref loop?)"
        if schema is True:
            return None
        if schema is False:
            return f"{path}: no value is allowed here"
        if not isinstance(schema, dict):
            return f"{path}: the schema here is not an object"
        for check in (self._ref, _type, _enum_const, self._any_of, self._object, self._array):
            problem = check(value, schema, path, depth)
            if problem is not None:
                return problem
        return None

    def _ref(self, value: Any, schema: Mapping[str, Any], path: str, depth: int) -> str | None:
        if "$ref" not in schema:
            return None
        target = resolve_ref(self._root, schema["$ref"])
        if target is None:
            return f"{path}: the schema's $ref {schema['$ref']!r} points nowhere"
        return self.check(value, target, path, depth + 1)

    def _any_of(self, value: Any, schema: Mapping[str, Any], path: str, depth: int) -> str | None:
        if "anyOf" not in schema:
            return None
        problems = [self.check(value, choice, path, depth + 1) for choice in schema["anyOf"]]
        if all(problem is not None for problem in problems):
            return f"{path}: matches none of the anyOf choices (the first: {problems[0]})"
        return None

    def _object(self, value: Any, schema: Mapping[str, Any], path: str, depth: int) -> str | None:
        if not isinstance(value, dict):
            return None
        for name in schema.get("required", ()):
            if name not in value:
                return f"{path}: the required property {_shown(name)} is missing"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            where = f"{path}.{name}" if name.isidentifier() else f"{path}[{_shown(name)}]"
            if name in properties:
                problem = self.check(item, properties[name], where, depth + 1)
            elif extra is False:
                problem = f"{path}: property {_shown(name)} is not allowed"
            else:
                problem = self.check(item, extra, where, depth + 1)
            if problem is not None:
                return problem
        return None

    def _array(self, value: Any, schema: Mapping[str, Any], path: str, depth: int) -> str | None:
        if not isinstance(value, list):
            return None
        if "minItems" in schema and len(value) < schema["minItems"]:
            return f"{path}: must have at least {schema['minItems']} items, got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path}: must have at most {schema['maxItems']} items, got {len(value)}"
        if "items" in schema:
            for index, item in enumerate(value):
                problem = self.check(item, schema["items"], f"{path}[{index}]", depth + 1)
                if problem is not None:
                    return problem
        return None


def _type(value: Any, schema: Mapping[str, Any], path: str, _depth: int) -> str | None:
    if "type" not in schema:
        return None
    wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(is_type(value, name) for name in wanted):
        return None
    return f"{path}: must be {' or '.join(wanted)}, got {_kind(value)}"


def _enum_const(value: Any, schema: Mapping[str, Any], path: str, _depth: int) -> str | None:
    if "const" in schema and not json_equal(value, schema["const"]):
        return f"{path}: must be {_shown(schema['const'])}, got {_shown(value)}"
    if "enum" in schema and not any(json_equal(value, option) for option in schema["enum"]):
        options = ", ".join(_shown(option) for option in schema["enum"])
        return f"{path}: must be one of {options}; got {_shown(value)}"
    return None


def is_type(value: Any, name: str) -> bool:
    match name:
        case "null":
            return value is None
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return _is_number(value) and (isinstance(value, int) or float(value).is_integer())
        case "number":
            return _is_number(value)
        case "string":
            return isinstance(value, str)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(left: Any, right: Any) -> bool:
    """Equality as JSON means it: 1 == 1.0, but true is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(json_equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[key], right[key]) for key in left)
    return type(left) is type(right) and bool(left == right)


def resolve_ref(root: Any, ref: Any) -> Any:
    """The schema a local $ref ("#", "#/$defs/name", any JSON pointer into the root) names, or None."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        return None
    target = root
    for token in ref[2:].split("/") if ref != "#" else ():
        key = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or key not in target:
            return None
        target = target[key]
    return target


# --- compiled once, run per answer ---------------------------------------------------------

# A compiled schema node: whether a value conforms to it at a nesting depth.
_Conforms = Callable[[Any, int], bool]


def compile_schema(schema: Any) -> Callable[[Any], str | None]:
    """`validate` with the schema walked once: the returned function gives, for any value,
    what validate(value, schema) gives. A conforming value is decided by closures built here
    (no keyword is looked up per value, no path is built); a value that does not conform,
    rare in a job, is passed to validate for its first problem, so the message is the same."""
    conforms = conforms_to(schema)

    def problem(value: Any) -> str | None:
        return None if conforms(value) else validate(value, schema)

    return problem


def conforms_to(schema: Any) -> Callable[[Any], bool]:
    """The schema compiled into one yes/no check: whether validate(value, schema) is None."""
    conforms = _Compiler(schema).node(schema)
    return _flat_object(schema, conforms) or (lambda value: conforms(value, 0))


# A property's schema that a flat object's check decides by itself: one scalar type, and
# maybe an enum of strings. Anything else in it, the compiled node decides.
_SCALAR_TYPES: Final[dict[str, frozenset[type]]] = {
    "string": frozenset({str}),
    "number": frozenset({int, float}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
}
_DECIDING: Final = frozenset({"$ref", "anyOf", "enum", "const", "properties", "required", "items"})


def _flat_object(schema: Any, conforms: _Conforms) -> Callable[[Any], bool] | None:
    """For the usual output schema (an object whose properties are scalars, maybe enums of
    strings), a check that passes a value with one look at each property by its exact type
    and hands any other value to `conforms`, which decides; None for other schemas."""
    if (
        not isinstance(schema, dict)
        or schema.get("type") != "object"
        or {"$ref", "anyOf", "enum", "const"} & schema.keys()
    ):
        return None
    properties = schema.get("properties")
    required = schema.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    plain: dict[str, tuple[frozenset[type], frozenset[str] | None]] = {}
    for name, sub in properties.items():
        named = sub.get("type") if isinstance(sub, dict) else None
        kinds = _SCALAR_TYPES.get(named) if isinstance(named, str) else None
        if kinds is None or _DECIDING & (sub.keys() - {"enum"}):
            continue
        options = sub.get("enum")
        if options is None:
            plain[name] = (kinds, None)
        elif isinstance(options, list) and kinds == _SCALAR_TYPES["string"] and all(type(o) is str for o in options):
            plain[name] = (kinds, frozenset(options))
    if not plain:
        return None
    needed = tuple(required)

    def check(value: Any) -> bool:
        if type(value) is dict:
            for name in needed:
                if name not in value:
                    return conforms(value, 0)
            for name, item in value.items():
                known = plain.get(name)
                if known is None or type(item) not in known[0] or (known[1] is not None and item not in known[1]):
                    return conforms(value, 0)
            return True
        return conforms(value, 0)

    return check


class _Compiler:
    """Each schema node as a _Conforms, with validate's semantics (and its depth bound, so a
    $ref loop fails as it does there). Nodes are compiled once each, by identity; a $ref
    that loops back reaches its target through a forwarder set before the target is built."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._built: dict[int, _Conforms] = {}

    def node(self, schema: Any) -> _Conforms:
        key = id(schema)
        if key not in self._built:
            later: list[_Conforms] = []
            self._built[key] = lambda value, depth: later[0](value, depth)
            later.append(self._build(schema))
            self._built[key] = later[0]
        return self._built[key]

    def _build(self, schema: Any) -> _Conforms:
        if schema is True:
            return lambda _value, depth: depth <= _MAX_DEPTH
        if not isinstance(schema, dict):  # false, or not a schema: nothing conforms
            return lambda _value, _depth: False
        # A type that rules out objects (or arrays) makes their keywords moot: the type check
        # already fails such a value, and every other value passes them.
        wanted = _wanted(schema)
        made = [self._ref(schema), _type_check(schema), _enum_const_check(schema), self._any_of(schema)]
        if wanted is None or "object" in wanted:
            made.append(self._object(schema))
        if wanted is None or "array" in wanted:
            made.append(self._array(schema))
        return _all_of([check for check in made if check is not None])

    def _ref(self, schema: Mapping[str, Any]) -> _Conforms | None:
        if "$ref" not in schema:
            return None
        target = resolve_ref(self._root, schema["$ref"])
        if target is None:
            return lambda _value, _depth: False
        follow = self.node(target)
        return lambda value, depth: follow(value, depth + 1)

    def _any_of(self, schema: Mapping[str, Any]) -> _Conforms | None:
        if "anyOf" not in schema:
            return None
        choices = [self.node(choice) for choice in schema["anyOf"]]
        return lambda value, depth: any(choice(value, depth + 1) for choice in choices)

    def _object(self, schema: Mapping[str, Any]) -> _Conforms | None:
        required = tuple(schema.get("required", ()))
        properties = {name: self.node(sub) for name, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties", True)
        other = None if extra is False else self.node(extra)

        def conforms(value: Any, depth: int) -> bool:
            if not isinstance(value, dict):
                return True
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                check = properties.get(name, other)
                if check is None or not check(item, depth + 1):
                    return False
            return True

        return conforms

    def _array(self, schema: Mapping[str, Any]) -> _Conforms | None:
        low, high = schema.get("minItems"), schema.get("maxItems")
        items = self.node(schema["items"]) if "items" in schema else None

        def conforms(value: Any, depth: int) -> bool:
            if not isinstance(value, list):
                return True
            if (low is not None and len(value) < low) or (high is not None and len(value) > high):
                return False
            return items is None or all(items(item, depth + 1) for item in value)

        return conforms


def _all_of(checks: list[_Conforms]) -> _Conforms:
    """A node's checks joined, within the depth bound; unrolled for the usual one or two."""
    if not checks:
        return lambda _value, depth: depth <= _MAX_DEPTH
    if len(checks) == 1:
        (only,) = checks
        return lambda value, depth: depth <= _MAX_DEPTH and only(value, depth)
    if len(checks) == 2:
        first, second = checks
        return lambda value, depth: depth <= _MAX_DEPTH and first(value, depth) and second(value, depth)
    return lambda value, depth: depth <= _MAX_DEPTH and all(check(value, depth) for check in checks)


_CLASSES: Final[dict[str, type | tuple[type, ...]]] = {"string": str, "array": list, "object": dict, "boolean": bool}


def _wanted(schema: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The type names a schema allows (None: it has no type keyword)."""
    if "type" not in schema:
        return None
    return tuple(schema["type"] if isinstance(schema["type"], list) else [schema["type"]])


def _type_check(schema: Mapping[str, Any]) -> _Conforms | None:
    wanted = _wanted(schema)
    if wanted is None:
        return None
    if len(wanted) == 1 and wanted[0] in _CLASSES:
        exact = _CLASSES[wanted[0]]
        return lambda value, _depth: isinstance(value, exact)
    # The other single types, the usual JSON values decided by their exact type first.
    if wanted == ("number",):
        return lambda value, _depth: type(value) is float or type(value) is int or _is_number(value)
    if wanted == ("integer",):
        return lambda value, _depth: type(value) is int or is_type(value, "integer")
    if wanted == ("null",):
        return lambda value, _depth: value is None
    return lambda value, _depth: any(is_type(value, name) for name in wanted)


def _enum_const_check(schema: Mapping[str, Any]) -> _Conforms | None:
    """const and enum as json_equal decides them; a string is equal to the strings among the
    options that are equal to it and to no other option, so it is looked up in a set."""
    options: list[Any] = []
    if "const" in schema:
        options.append([schema["const"]])
    if "enum" in schema:
        options.append(schema["enum"])
    if not options:
        return None
    lookups = [
        ({option for option in choices if type(option) is str}, [other for other in choices if type(other) is not str])
        for choices in options
    ]

    def conforms(value: Any, _depth: int) -> bool:
        for strings, others in lookups:
            if type(value) is str:
                if value not in strings:
                    return False
            elif not any(json_equal(value, option) for option in others):
                return False
        return True

    return conforms


# --- checking a schema itself -----------------------------------------------------------


def schema_problems(schema: Any, path: str, root: Any = None) -> Iterator[str]:
    """Each way `schema` (found at `path`) leaves the subset: an unsupported keyword, a keyword
    of the wrong shape, a $ref that points nowhere."""
    root = schema if root is None else root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield f"{path}: must be a schema (an object), got {_kind(schema)}"
        return
    for keyword in schema:
        if keyword not in SUPPORTED_KEYWORDS:
            yield f"{path}: the keyword {_shown(keyword)} is not supported in output schemas"
    yield from _keyword_problems(schema, path, root)
    for keyword in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(keyword), dict):
            for name, sub in schema[keyword].items():
                yield from schema_problems(sub, f"{path}.{keyword}.{name}", root)
    for keyword in ("items", "additionalProperties"):
        if keyword in schema:
            yield from schema_problems(schema[keyword], f"{path}.{keyword}", root)
    if isinstance(schema.get("anyOf"), list):
        for index, sub in enumerate(schema["anyOf"]):
            yield from schema_problems(sub, f"{path}.anyOf[{index}]", root)


def _keyword_problems(schema: Mapping[str, Any], path: str, root: Any) -> Iterator[str]:
    if "type" in schema:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not wanted or any(name not in TYPES for name in wanted):
            yield f"{path}.type: must be one of {', '.join(TYPES)} (or a list of them), got {_shown(schema['type'])}"
    if "required" in schema and not _strings(schema["required"]):
        yield f"{path}.required: must be a list of property names"
    for keyword in ("properties", "$defs", "definitions"):
        if keyword in schema and not isinstance(schema[keyword], dict):
            yield f"{path}.{keyword}: must be an object of schemas"
    for keyword in ("minItems", "maxItems"):
        value = schema.get(keyword, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            yield f"{path}.{keyword}: must be an integer >= 0, got {_shown(value)}"
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        yield f"{path}.enum: must be a non-empty list"
    if "anyOf" in schema and (not isinstance(schema["anyOf"], list) or not schema["anyOf"]):
        yield f"{path}.anyOf: must be a non-empty list of schemas"
    if "$ref" in schema and resolve_ref(root, schema["$ref"]) is None:
        yield f"{path}.$ref: {_shown(schema['$ref'])} does not name a schema in this one (use #/$defs/NAME)"


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if is_type(value, name):
            return name
    return type(value).__name__


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
