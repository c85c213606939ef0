"""Records mode's pipeline: what turns one record into one Message Batches request. A pipeline
is read from the JSON of `pipelines/<name>.json` (or the YAML of `pipelines/<name>.yaml`, read
to the same values: domain/pipeline_yaml.py) and validated as a whole: every problem is named
at once, as "field: reason", in one PipelineError.

Rendering is plain substitution: each `{{field}}` in the prompt is replaced by the record's
value for that field, inserted as text and never read again, so a value holding `{{other}}`
or JSON stays literally what it is, and no value can change the request's structure. The
request's JSON is laid out once, when the pipeline is read, by json.dumps of the request with a
marker in each place a record fills (the custom_id, each text template): per record only the
id and the filled texts are written, each text escaped as json.dumps escapes a string, so a
line is byte for byte what json.dumps of the whole request would give, at a fraction of the
cost."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Final, Literal

from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.requests import CUSTOM_ID_PATTERN, holds_cache_control
from batchdrop.domain.schemas import schema_problems
from batchdrop.domain.strict_json import STRICT_DECODER, DuplicateKeyError, NotANumberError

# The columns every outputs file has, whatever the pipeline: no keep_field or answer column may take their names.
FIXED_COLUMNS: Final = (
    "id",
    "status",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "error",
)
TEXT_COLUMN: Final = "text"
RAW_COLUMN: Final = "raw"  # a structured answer's text, kept when it is invalid_output
_KEYS: Final = frozenset(
    {
        "model",
        "max_tokens",
        "params",
        "system",
        "prompt",
        "id_field",
        "output",
        "keep_fields",
        "on_bad_record",
        "prime_cache",
        "budget_usd",
    }
)
_OPTIONAL_NOTE_KEYS: Final = frozenset({"description"})
_SET_BY_PIPELINE: Final = ("messages", "system", "model", "max_tokens", "stream")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s](?:[^{}]*[^{}\s])?)\s*\}\}")
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SYSTEM_BLOCK_KEYS: Final = frozenset({"type", "text", "cache_control"})

OutputKind = Literal["text", "schema", "tool"]
Syntax = Literal["json", "yaml"]
# A pipeline file's suffixes, and the syntax each says. In the bucket a YAML pipeline's key ends
# in .yaml (`batchdrop pipeline put` stores a .yml file under it).
PIPELINE_SUFFIXES: Final[Mapping[str, Syntax]] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
# A pipeline's name: the folder under inbox/ it renders, so one path segment, safe in an S3 key
# and a shell; no leading dot (so never "." or "..").
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class PipelineError(ValueError):
    """A pipeline that cannot be used; `problems` holds each one as "field: reason"; `source`,
    when given, is the file or key it was read from, named first in the message."""

    def __init__(self, name: str, problems: Sequence[str], source: str | None = None) -> None:
        self.name = name
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}pipeline {name} is not valid: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Template:
    """A text split at its placeholders: literal, field, literal, field, ..., literal."""

    pieces: tuple[str, ...]
    # The literals as a str.format pattern with a positional field where each placeholder is:
    # format inserts its arguments as they are, never reading them as patterns.
    _pattern: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        literals = (piece.replace("{", "{{").replace("}", "}}") for piece in self.pieces[::2])
        object.__setattr__(self, "_pattern", "{}".join(literals))

    @classmethod
    def of(cls, text: str) -> Template:
        return cls(tuple(_PLACEHOLDER.split(text)))

    @property
    def fields(self) -> tuple[str, ...]:
        return self.pieces[1::2]

    def fill(self, record: Mapping[str, str]) -> str:
        return self._pattern.format(*[record[name] for name in self.pieces[1::2]])


@dataclass(frozen=True, slots=True, eq=False)
class Pipeline:
    name: str
    model: str
    max_tokens: int
    fixed_params: Mapping[str, Any]  # everything sent but the messages, in the order sent
    prompt: str | tuple[Mapping[str, Any], ...]  # the user message's content as written
    id_field: str | None = None
    output: OutputKind = "text"
    answer_schema: Mapping[str, Any] | None = None  # the output schema, or the forced tool's input_schema
    tool_name: str | None = None
    keep_fields: tuple[str, ...] = ()
    on_bad_record: Literal["skip", "fail"] = "skip"
    # Whether a job warms the prompt cache before its first batch (services/priming.py); None:
    # not written, so the upload's metadata or the stack's default decides.
    prime_cache: bool | None = None
    # A job of this pipeline whose upper-bound estimate is over this waits for approval; None:
    # the stack's JobBudgetUsd decides (domain/budget.py).
    budget_usd: Decimal | None = None
    _templates: tuple[Template, ...] = field(default=(), repr=False)
    # The request line around what a record fills (domain docstring), UTF-8: the text before
    # the custom_id, the text after it, then after each template's filled text what follows.
    _layout: tuple[bytes, ...] = field(init=False, repr=False)
    _unicode: bool = field(init=False, repr=False)  # False: the layout holds an unpaired surrogate
    _placeholders: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layout = _layout_of(self.fixed_params, self.prompt, len(self._templates))
        try:
            encoded, unicode = tuple(text.encode() for text in layout), True
        except UnicodeEncodeError:  # every record is refused for it: what is laid out is never sent
            encoded, unicode = tuple(text.encode(errors="surrogatepass") for text in layout), False
        object.__setattr__(self, "_layout", encoded)
        object.__setattr__(self, "_unicode", unicode)
        names = dict.fromkeys(name for template in self._templates for name in template.fields)
        object.__setattr__(self, "_placeholders", tuple(names))

    @property
    def marks_cache(self) -> bool:
        """Whether its requests hold a cache_control key (a prompt cache breakpoint): the same
        for every record, whose values fill strings only."""
        return holds_cache_control((self.fixed_params, self.prompt))

    def placeholders(self) -> tuple[str, ...]:
        """The field names the prompt's templates use, each once, in order of first use."""
        return self._placeholders

    def needed_fields(self) -> tuple[str, ...]:
        """Every field the pipeline reads from a record: placeholders, id_field, keep_fields."""
        own_id = (self.id_field,) if self.id_field else ()
        return tuple(dict.fromkeys((*self.placeholders(), *own_id, *self.keep_fields)))

    def check_fields(self, header: Iterable[str]) -> list[str]:
        """The fields the pipeline needs that `header` does not have (empty when all are there)."""
        present = set(header)
        return [name for name in self.needed_fields() if name not in present]

    def answer_columns(self) -> tuple[str, ...]:
        if self.answer_schema is None:
            return (TEXT_COLUMN,)
        return (*self.answer_schema.get("properties", {}), RAW_COLUMN)

    def custom_id(self, record: Mapping[str, str], row_number: int) -> str | Rejection:
        if self.id_field is None:
            return f"row-{row_number:06d}"
        value = record.get(self.id_field)
        if value is None:
            return Rejection(f"the record has no field {_shown(self.id_field)} (the pipeline's id_field)")
        if not _CUSTOM_ID.fullmatch(value):
            reason = f"id_field {_shown(self.id_field)}: {_shown(value)} is not a usable id ({CUSTOM_ID_PATTERN})"
            return Rejection(reason)
        return value

    def render(self, record: Mapping[str, str], row_number: int) -> bytes | Rejection:
        """One record -> one request line (compact JSON, UTF-8, no line ending) or why not."""
        custom_id = self.custom_id(record, row_number)
        if isinstance(custom_id, Rejection):
            return custom_id
        missing = [name for name in self._placeholders if name not in record]
        if missing:
            names = ", ".join(_shown(name) for name in missing)
            return Rejection(f"the record has no field {names}, which the prompt uses", custom_id)
        layout = self._layout
        parts = [layout[0], custom_id.encode(), layout[1]]  # an id is only letters, digits, _ and -
        unicode = self._unicode  # the pipeline's own text is valid Unicode
        for template, after in zip(self._templates, layout[2:], strict=True):
            text = template.fill(record)
            if not text.strip():
                return Rejection(self._empty(template).reason, custom_id)
            try:
                parts += (json_string_body(text), after)
            except UnicodeEncodeError:
                unicode = False  # an empty text further on is named first, as ever
        if not unicode:
            return Rejection("a field holds text that is not valid Unicode (an unpaired surrogate)", custom_id)
        return b"".join(parts)

    @staticmethod
    def _empty(template: Template) -> Rejection:
        names = ", ".join(_shown(name) for name in dict.fromkeys(template.fields)) or "none"
        return Rejection(f"the prompt is empty once filled in (from the record's empty fields: {names})")


# --- the request's layout ------------------------------------------------------------------


# The control characters json.dumps writes as \b, \f or \u00XX: rare in records, so a text
# holding one is left to json's own encoder.
_RARE_CONTROLS: Final = bytes(code for code in range(0x20) if code not in b"\t\n\r")


def json_string_body(text: str) -> bytes:
    """`text` as json.dumps(ensure_ascii=False) writes it inside a string's quotes, in UTF-8:
    backslashes, quotes, line feeds, carriage returns and tabs escaped, the rest as it is (and
    any other control character by json's own encoder). UnicodeEncodeError for text holding
    an unpaired surrogate, as encoding json.dumps' output raises."""
    data = text.encode()
    if len(data.translate(None, _RARE_CONTROLS)) != len(data):
        return encode_basestring(text)[1:-1].encode()
    escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return escaped.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")


def _layout_of(fixed: Mapping[str, Any], prompt: str | Sequence[Mapping[str, Any]], texts: int) -> tuple[str, ...]:
    """The request's compact JSON split where a record fills it: inside the quotes of the
    custom_id, then inside the quotes of each text template's string, in the prompt's
    order. Found by json.dumps of the request with a marker in each place: a marker that also
    occurs in the pipeline's own text is passed over for another (the text is finite, the
    markers are not)."""
    attempt = 0
    while True:
        markers = [f"\ue000{attempt}:{slot}\ue001" for slot in range(texts + 1)]
        filled = iter(markers[1:])
        content: str | list[dict[str, Any]] = (
            next(filled)
            if isinstance(prompt, str)
            else [{**block, "text": next(filled)} if _is_text_block(block) else dict(block) for block in prompt]
        )
        params = {**fixed, "messages": [{"role": "user", "content": content}]}
        text = json.dumps({"custom_id": markers[0], "params": params}, ensure_ascii=False, separators=(",", ":"))
        if all(text.count(marker) == 1 for marker in markers):
            layout = []
            for marker in markers:
                before, text = text.split(marker)
                layout.append(before)
            return (*layout, text)
        attempt += 1


# --- parsing ----------------------------------------------------------------------------


def parse_pipeline(name: str, text: bytes | str, *, syntax: Syntax = "json", source: str | None = None) -> Pipeline:
    """The pipeline named `name` from the text of its file, JSON or YAML (`syntax`; the key's
    suffix says which: syntax_of); PipelineError naming every problem, and `source` if given."""
    if syntax == "yaml":
        return _parse_yaml(name, text, source)
    try:
        return _parse_json(name, text)
    except PipelineError as exc:
        raise PipelineError(name, exc.problems, source) from None


def _parse_json(name: str, text: bytes | str) -> Pipeline:
    try:
        # As json.loads reads bytes: the encoding from the first bytes (UTF-8, with or without a BOM, or UTF-16/32).
        decoded = text if isinstance(text, str) else text.decode(json.detect_encoding(text), "surrogatepass")
        document = STRICT_DECODER.decode(decoded)
    except NotANumberError as exc:
        raise PipelineError(name, [f"(file): {exc.args[0]} is not a JSON number"]) from exc
    except DuplicateKeyError as exc:
        raise PipelineError(name, [f"{exc.args[0]}: appears twice in one object"]) from exc
    except UnicodeDecodeError as exc:
        raise PipelineError(name, [f"(file): not valid UTF-8 at byte {exc.start}"]) from exc
    except json.JSONDecodeError as exc:
        raise PipelineError(
            name, [f"(file): not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from exc
    return pipeline_from(name, document)


def _parse_yaml(name: str, text: bytes | str, source: str | None) -> Pipeline:
    """A YAML pipeline: the same values, fields and problems as its JSON form, each problem with
    the line of the field it names."""
    from batchdrop.domain.pipeline_yaml import YamlProblem, read_yaml

    try:
        document = read_yaml(text)
    except YamlProblem as exc:
        raise PipelineError(name, [str(exc)], source) from None
    try:
        return pipeline_from(name, document.value)
    except PipelineError as exc:
        problems = [_with_line(problem, document.line_of(problem)) for problem in exc.problems]
        raise PipelineError(name, problems, source) from None


def _with_line(problem: str, line: int | None) -> str:
    return problem if line is None else f"{problem} (line {line})"


def syntax_of(filename: str) -> Syntax | None:
    """The syntax a pipeline file's name says (`.json`; `.yaml` or `.yml`), or None."""
    lowered = filename.lower()
    for suffix, syntax in PIPELINE_SUFFIXES.items():
        if lowered.endswith(suffix):
            return syntax
    return None


def pipeline_name_problem(name: str) -> str | None:
    """Why `name` cannot name a pipeline, or None. A pipeline's name is the folder under inbox/
    whose files it renders (inbox/<name>/...), so it is one path segment of safe characters."""
    if not name:
        return "a pipeline's name must not be empty"
    if "/" in name:
        return f"{_shown(name)} holds a '/': a pipeline's name is one folder under inbox/"
    if not PIPELINE_NAME.fullmatch(name):
        return (
            f"{_shown(name)} is not a usable pipeline name: letters, digits, '-', '_' and '.', "
            "starting with a letter or digit, at most 100 characters"
        )
    return None


def pipeline_from(name: str, document: Any) -> Pipeline:
    """The pipeline a parsed document describes; PipelineError naming every problem."""
    if not isinstance(document, dict):
        raise PipelineError(name, [f"(file): must be a JSON object, got {_kind(document)}"])
    problems = [
        f"{key}: not a pipeline field (fields: {', '.join(sorted(_KEYS))})"
        for key in document
        if key not in _KEYS | _OPTIONAL_NOTE_KEYS
    ]
    problems += _model_problems(document)
    problems += _params_problems(document.get("params", {}))
    problems += _system_problems(document.get("system"))
    problems += _prompt_problems(document.get("prompt"))
    problems += _small_field_problems(document)
    problems += _output_problems(document.get("output"), document.get("params", {}))
    if not problems:
        pipeline = _built(name, document)
        problems += _column_problems(pipeline)
        if not problems:
            return pipeline
    raise PipelineError(name, problems)


def _built(name: str, document: Mapping[str, Any]) -> Pipeline:
    fixed: dict[str, Any] = {"model": document["model"], "max_tokens": document["max_tokens"]}
    if document.get("system") is not None:
        fixed["system"] = document["system"]
    fixed.update(document.get("params", {}))
    output = document.get("output")
    kind: OutputKind = "text"
    schema: Mapping[str, Any] | None = None
    tool_name: str | None = None
    if output and "schema" in output:
        kind, schema = "schema", output["schema"]
        config = dict(fixed.get("output_config", {}))
        config["format"] = {"type": "json_schema", "schema": schema}
        fixed["output_config"] = config
    elif output:
        kind, schema, tool_name = "tool", output["tool"]["input_schema"], output["tool"]["name"]
        fixed["tools"] = [*fixed.get("tools", []), output["tool"]]
        fixed["tool_choice"] = {"type": "tool", "name": tool_name}
    prompt = document["prompt"]
    texts = [prompt] if isinstance(prompt, str) else [block["text"] for block in prompt if _is_text_block(block)]
    return Pipeline(
        name=name,
        model=document["model"],
        max_tokens=document["max_tokens"],
        fixed_params=fixed,
        prompt=prompt if isinstance(prompt, str) else tuple(prompt),
        id_field=document.get("id_field"),
        output=kind,
        answer_schema=schema,
        tool_name=tool_name,
        keep_fields=tuple(document.get("keep_fields", ())),
        on_bad_record=document.get("on_bad_record", "skip"),
        prime_cache=document.get("prime_cache"),
        budget_usd=_budget(document.get("budget_usd")),
        _templates=tuple(Template.of(text) for text in texts),
    )


def _model_problems(document: Mapping[str, Any]) -> Iterator[str]:
    if "model" not in document:
        yield "model: missing"
    elif not isinstance(document["model"], str) or not document["model"].strip():
        yield f"model: must be a non-empty string, got {_shown(document['model'])}"
    if "max_tokens" not in document:
        yield "max_tokens: missing"
    elif not _is_int(document["max_tokens"]) or document["max_tokens"] < 1:
        yield f"max_tokens: must be an integer >= 1, got {_shown(document['max_tokens'])}"


def _params_problems(params: Any) -> Iterator[str]:
    if not isinstance(params, dict):
        yield f"params: must be an object of Messages parameters, got {_kind(params)}"
        return
    for key in _SET_BY_PIPELINE:
        if key in params:
            yield f"params.{key}: set by the pipeline itself, not under params ({_where_instead(key)})"


def _where_instead(key: str) -> str:
    if key == "messages":
        return "the user message is the prompt"
    if key == "stream":
        return "batch requests are never streamed"
    return f"write it as the pipeline's top-level {key}"


def _system_problems(system: Any) -> Iterator[str]:
    if system is None or (isinstance(system, str) and system.strip()):
        return
    if isinstance(system, str):
        yield "system: must not be empty (leave it out instead)"
        return
    if not isinstance(system, list) or not system:
        yield f"system: must be a string or a non-empty list of text blocks, got {_kind(system)}"
        return
    for index, block in enumerate(system):
        path = f"system[{index}]"
        if not _is_text_block(block) or not block["text"].strip():
            yield f'{path}: must be a text block {{"type": "text", "text": "..."}} with some text'
            continue
        unknown = [key for key in block if key not in _SYSTEM_BLOCK_KEYS]
        if unknown:
            names = ", ".join(map(_shown, unknown))
            yield f"{path}: unknown key {names} (a system block holds type, text, cache_control)"
        if "cache_control" in block and not isinstance(block["cache_control"], dict):
            yield f'{path}.cache_control: must be an object such as {{"type": "ephemeral"}}'


def _prompt_problems(prompt: Any) -> Iterator[str]:
    if prompt is None:
        yield "prompt: missing"
    elif isinstance(prompt, str):
        if not prompt.strip():
            yield "prompt: must not be empty"
    elif not isinstance(prompt, list) or not prompt:
        yield f"prompt: must be a template string or a non-empty list of content blocks, got {_kind(prompt)}"
    else:
        for index, block in enumerate(prompt):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                yield f'prompt[{index}]: must be a content block, an object with a "type"'
            elif block["type"] == "text" and not isinstance(block.get("text"), str):
                yield f"prompt[{index}].text: a text block's text must be a string (a template)"
            elif block["type"] == "text" and not block["text"].strip():
                yield f"prompt[{index}].text: must not be empty"


def _small_field_problems(document: Mapping[str, Any]) -> Iterator[str]:
    id_field = document.get("id_field")
    if "id_field" in document and (not isinstance(id_field, str) or not id_field):
        yield f"id_field: must be the name of a record field, got {_shown(id_field)}"
    keep = document.get("keep_fields", [])
    if not isinstance(keep, list) or not all(isinstance(name, str) and name for name in keep):
        yield "keep_fields: must be a list of field names"
    elif len(set(keep)) != len(keep):
        yield "keep_fields: names a field more than once"
    if document.get("on_bad_record", "skip") not in ("skip", "fail"):
        yield f'on_bad_record: must be "skip" or "fail", got {_shown(document["on_bad_record"])}'
    if "prime_cache" in document and not isinstance(document["prime_cache"], bool):
        yield f"prime_cache: must be true or false, got {_shown(document['prime_cache'])}"
    budget = document.get("budget_usd")
    if "budget_usd" in document and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0
    ):
        yield f"budget_usd: must be a positive amount in US dollars, such as 25 or 2.5, got {_shown(budget)}"


def _output_problems(output: Any, params: Any) -> Iterator[str]:
    if output is None:
        return
    if not isinstance(output, dict) or len(output) != 1 or not ({"schema", "tool"} & output.keys()):
        yield 'output: must be {"schema": <JSON Schema>} or {"tool": <tool definition>}, exactly one of them'
        return
    params = params if isinstance(params, dict) else {}
    if "schema" in output:
        yield from _object_schema_problems(output["schema"], "output.schema")
        config = params.get("output_config", {})
        if not isinstance(config, dict) or "format" in config:
            yield "params.output_config: must be an object without format when output.schema sets it"
        return
    tool = output["tool"]
    if not isinstance(tool, dict):
        yield f"output.tool: must be a tool definition (an object), got {_kind(tool)}"
        return
    if not isinstance(tool.get("name"), str) or not _TOOL_NAME.fullmatch(tool["name"]):
        yield f"output.tool.name: must match ^[a-zA-Z0-9_-]{{1,64}}$, got {_shown(tool.get('name'))}"
    yield from _object_schema_problems(tool.get("input_schema"), "output.tool.input_schema")
    if "tool_choice" in params:
        yield "params.tool_choice: output.tool forces its tool; leave tool_choice out"
    tools = params.get("tools", [])
    if not isinstance(tools, list):
        yield f"params.tools: must be a list of tools, got {_kind(tools)}"
    elif any(isinstance(other, dict) and other.get("name") == tool.get("name") for other in tools):
        yield f"params.tools: already has a tool named {_shown(tool.get('name'))}, the one output.tool adds"


def _object_schema_problems(schema: Any, path: str) -> Iterator[str]:
    if schema is None:
        yield f"{path}: missing"
        return
    if not isinstance(schema, dict) or schema.get("type") != "object":
        yield f'{path}: must be an object schema ({{"type": "object", "properties": ...}})'
        return
    if not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        yield f"{path}.properties: must name at least one property (each becomes a column)"
    yield from schema_problems(schema, path)


def _column_problems(pipeline: Pipeline) -> Iterator[str]:
    """No two columns of the outputs may share a name: kept fields, answer columns and the fixed ones."""
    own = ", ".join(FIXED_COLUMNS)
    for name in pipeline.keep_fields:
        if name in FIXED_COLUMNS:
            yield f"keep_fields: {_shown(name)} is one of the outputs' own columns ({own})"
        elif name in (TEXT_COLUMN if pipeline.output == "text" else RAW_COLUMN,):
            yield f"keep_fields: {_shown(name)} is the answer's column; rename or drop it"
    if pipeline.answer_schema is None:
        return
    taken = {*FIXED_COLUMNS, *pipeline.keep_fields, RAW_COLUMN}
    where = "output.schema" if pipeline.output == "schema" else "output.tool.input_schema"
    for name in pipeline.answer_schema["properties"]:
        if name in taken:
            yield f"{where}.properties: {_shown(name)} would be a second column of that name (rename it)"


# --- wording ----------------------------------------------------------------------------


def _is_text_block(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return json.dumps(value)


def _budget(value: Any) -> Decimal | None:
    """budget_usd as checked (a positive number), exactly as written: 2.5 is Decimal("2.5")."""
    return None if value is None else Decimal(str(value))


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"
