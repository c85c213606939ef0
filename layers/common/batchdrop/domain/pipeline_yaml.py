"""A YAML pipeline's document, read to exactly the values its JSON form would hold.

YAML can say more than JSON, and some of it silently changes what a pipeline means, so a
pipeline's YAML is read strictly, with every problem named by its line:

- only JSON's values: mappings with text keys, lists, text, integers, finite numbers, true,
  false and null. A key that is not text (`1:`, `true:`, `null:`, a list), an explicit tag other
  than `!!str` (`!!binary`, `!!set`, `!!python/...`) and a merge key (`<<`) are refused;
- a key twice in one mapping is refused (YAML loaders keep the last one without a word);
- aliases (`*name`) are refused: nothing in a pipeline needs them, and a few lines of nested
  aliases expand to billions of nodes. The document is also at most MAX_YAML_BYTES;
- a plain (unquoted) scalar whose meaning differs between YAML 1.1 (PyYAML's) and YAML 1.2 is
  refused rather than guessed: `yes`/`no`/`on`/`off`, `012`, `0x1F`, `1_000`, `1:30`, `1e3`.
  Quote it for text, or write it as JSON would (`true`, `12`, `31`, `1000`, `1000.0`);
- `.nan` and `.inf` are refused, as JSON has no NaN or Infinity;
- a date or time (`2024-01-01`) is kept as the text written: JSON has no dates.

It is read as a stream of parser events (PyYAML's safe parser, with libyaml's C parser when it
is there), so no Python object is ever built from a tag, and nested aliases are never expanded.
PyYAML is imported only when a YAML pipeline is read: the functions' cold start does not pay for
it. This is the one domain module that uses a library beyond the standard library: PyYAML is a
pure parser, with no I/O. (YAML's specification: https://yaml.org/spec/1.2.2/)"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

MAX_YAML_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 100  # mappings and lists inside each other; a JSON Schema rarely needs 10
_STR: Final = "tag:yaml.org,2002:str"
_JSON_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")  # YAML 1.2 reads 012 as 12, YAML 1.1 as 10: refused
_YAML12_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")  # 1.2's core schema
_TRUE: Final = frozenset({"true", "True", "TRUE"})
_FALSE: Final = frozenset({"false", "False", "FALSE"})


class YamlProblem(ValueError):
    """Why a YAML text is not a pipeline's document: "field: reason (line N)" or "(file): reason"."""


@dataclass
class YamlDocument:
    """The document's value, and the line (from 1) of each field's key, by its path as the
    pipeline's problems name it (`system[0].cache_control`)."""

    value: Any = None
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, problem: str) -> int | None:
        """The line of the field a "field: reason" problem names, or of its nearest parent."""
        path = problem.split(": ", 1)[0]
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return None
            path = path[:cut]
        return None


def read_yaml(text: bytes | str) -> YamlDocument:
    """The JSON value a YAML pipeline's text holds, with the line of each field; YamlProblem
    naming the first thing refused and its line."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_YAML_BYTES:
        raise YamlProblem(f"(file): {size:,} bytes; a YAML pipeline is at most {MAX_YAML_BYTES:,} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlProblem(f"(file): not valid UTF-8 at byte {exc.start}") from None
    yaml: Any = importlib.import_module("yaml")
    loader: Any = None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text.removeprefix("\ufeff"))
        return _Builder(yaml, loader).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise YamlProblem(f"(file): not valid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:  # the reader's: a character YAML does not allow
        position = getattr(exc, "position", 0)
        line = text.count("\n", 0, position) + 1
        raise YamlProblem(f"(file): not valid YAML: {getattr(exc, 'reason', exc)} at line {line}") from None
    finally:
        if loader is not None:
            loader.dispose()


@dataclass
class _Open:
    """A mapping or list being built: its value, its path, and (for a mapping) the key read."""

    value: dict[str, Any] | list[Any]
    path: str
    key: str | None = None


class _Builder:
    """One document from the parser's events, without recursion (so depth is only bounded by
    MAX_DEPTH, never by Python's stack)."""

    def __init__(self, yaml: Any, loader: Any) -> None:
        self._yaml, self._loader = yaml, loader
        self._open: list[_Open] = []
        self._lines: dict[str, int] = {}

    def document(self) -> YamlDocument:
        yaml, loader = self._yaml, self._loader
        loader.get_event()  # the stream's start
        if loader.check_event(yaml.StreamEndEvent):
            return YamlDocument(None, {})  # an empty file: no document
        loader.get_event()  # the document's start
        value = self._node()
        loader.get_event()  # the document's end
        if not loader.check_event(yaml.StreamEndEvent):
            line = loader.peek_event().start_mark.line + 1
            raise YamlProblem(f"(file): a second YAML document starts at line {line}; a pipeline is one document")
        return YamlDocument(value, self._lines)

    def _node(self) -> Any:
        """The value of the node that starts at the next event (all of it, nested nodes included)."""
        yaml, loader = self._yaml, self._loader
        while True:
            event = loader.get_event()
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                done = self._open.pop().value
                if not self._open:
                    return done
                self._add(done)
                continue
            if not self._open and not isinstance(event, yaml.CollectionStartEvent):
                return self._scalar(event, "(file)")  # a document that is one scalar
            if self._open and isinstance(self._open[-1].value, dict) and self._open[-1].key is None:
                self._key(event)
                continue
            self._value_event(event)

    def _value_event(self, event: Any) -> None:
        """An event where a value starts: a scalar is added, a mapping or a list opened."""
        yaml = self._yaml
        path = self._child_path()
        if path:
            self._lines.setdefault(path, _line(event))
        if isinstance(event, yaml.CollectionStartEvent):
            self._refuse_tag(event, path, "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
            if len(self._open) >= MAX_DEPTH:
                raise YamlProblem(f"(file): nested deeper than {MAX_DEPTH} levels (line {_line(event)})")
            empty: dict[str, Any] | list[Any] = {} if isinstance(event, yaml.MappingStartEvent) else []
            self._open.append(_Open(empty, path))
            return
        self._add(self._scalar(event, path))

    def _add(self, value: Any) -> None:
        top = self._open[-1]
        if isinstance(top.value, dict):
            assert top.key is not None
            top.value[top.key] = value
            top.key = None
        else:
            top.value.append(value)

    def _child_path(self) -> str:
        if not self._open:
            return ""
        top = self._open[-1]
        if isinstance(top.value, list):
            return f"{top.path}[{len(top.value)}]"
        return f"{top.path}.{top.key}" if top.path else str(top.key)

    def _key(self, event: Any) -> None:
        yaml, top = self._yaml, self._open[-1]
        where = top.path or "(file)"
        if isinstance(event, yaml.AliasEvent):
            raise _alias(event, where)
        if not isinstance(event, yaml.ScalarEvent):
            shape = "a mapping" if isinstance(event, yaml.MappingStartEvent) else "a list"
            raise YamlProblem(f"{where}: a key must be text, not {shape} (line {_line(event)})")
        kind = self._plain_kind(event)
        if kind == "merge":
            raise YamlProblem(f"{where}: merge keys (<<) are not accepted (line {_line(event)}); write the fields out")
        if kind not in (None, "str", "timestamp"):
            raise YamlProblem(
                f"{where}: the key {event.value} is not text (line {_line(event)}); quote it: {_quoted(event.value)}"
            )
        key = str(self._scalar(event, where))
        assert isinstance(top.value, dict)
        path = f"{top.path}.{key}" if top.path else key
        if key in top.value:
            raise YamlProblem(f"{path}: appears twice in one object (line {_line(event)})")
        top.key = key
        self._lines.setdefault(path, _line(event))

    def _plain_kind(self, event: Any) -> str | None:
        """What YAML 1.1 reads a plain scalar as (str, int, float, bool, null, timestamp, merge,
        ...); None for text written as text: quoted, a block (| or >), or tagged !!str or !."""
        if event.tag is not None or not event.implicit[0]:
            return None
        tag = self._loader.resolve(self._yaml.ScalarNode, event.value, (True, False))
        return str(tag).rsplit(":", 1)[-1]

    def _scalar(self, event: Any, path: str) -> Any:
        if isinstance(event, self._yaml.AliasEvent):
            raise _alias(event, path)
        self._refuse_tag(event, path, _STR)
        kind = self._plain_kind(event)
        if kind is None:
            return event.value
        try:
            return _plain(event.value, kind)
        except _Refused as exc:
            raise YamlProblem(f"{path}: {exc} (line {_line(event)})") from None

    @staticmethod
    def _refuse_tag(event: Any, path: str, *allowed: str) -> None:
        if event.tag not in (None, "!", *allowed):
            raise YamlProblem(
                f"{path or '(file)'}: the YAML tag {_short(event.tag)} is not accepted (line {_line(event)}); "
                "a pipeline holds only JSON's values"
            )


def _plain(value: str, kind: str) -> Any:
    """A plain scalar's JSON value, from the kind YAML 1.1 resolves it to; _Refused where that
    has no JSON meaning or YAML 1.2 reads it otherwise."""
    ambiguous = f"{value} is ambiguous in YAML"
    if kind == "null":
        return None
    if kind == "bool":
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        raise _Refused(f"{ambiguous} (a boolean in YAML 1.1, text in 1.2): quote it, or write true or false")
    if kind == "int":
        if _JSON_INT.fullmatch(value):
            return int(value)
        raise _Refused(f"{ambiguous} (octal, hex, binary, 1_000 or 1:30): quote it, or write a plain decimal")
    if kind == "float":
        if value.lstrip("+-").lower() in (".nan", ".inf"):
            raise _Refused(f"{value} is not a JSON number")
        if not _YAML12_FLOAT.fullmatch(value):
            raise _Refused(f"{ambiguous} (1_000.5 or 1:30.5): quote it, or write a plain decimal")
        number = float(value)
        if not math.isfinite(number):
            raise _Refused(f"{value} is beyond a JSON number's range")
        return number
    if kind == "timestamp":
        return value  # JSON has no dates: the text as written
    if kind == "str":
        if _YAML12_FLOAT.fullmatch(value):
            raise _Refused(
                f"{ambiguous} (text in YAML 1.1, a number in 1.2): quote it for text, or write the number "
                "with a decimal point and a signed exponent (1.0e+3)"
            )
        return value
    raise _Refused(f"{value} has no JSON meaning (YAML reads it as {kind}); quote it")


class _Refused(ValueError):
    """A plain scalar refused; the caller names its field and line."""


def _alias(event: Any, path: str) -> YamlProblem:
    return YamlProblem(
        f"{path or '(file)'}: the alias *{event.anchor} is not accepted (line {_line(event)}); write the value out"
    )


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
