"""The emulator's stand-in for Claude: turns one request's `params` into its `MessageBatchResult`.

The built-in answer is deterministic (a digest of the params and the seed drives every choice,
with the custom_id for a schema's values) and its `usage` is faithful in shape: tokens are
estimated at ~4 characters each, and prompt caching is emulated through the cache the caller
gives (caching.py: per workspace, with ttls, as a batch's parallel requests see it). A
request asking for structured outputs (`output_config.format`) or forcing a tool
gets JSON or a tool input that conforms to its schema (structured.py draws the values). A user
responder (`--responder MODULE:CALLABLE`) may supply the content or the whole result instead;
usage is computed the same way.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from batchdrop_local.emulator.caching import minimum_cacheable_tokens
from batchdrop_local.emulator.structured import InvalidKind, SchemaSampler, output_schema, violation
from batchdrop_local.emulator.wire import derived_id

CHARS_PER_TOKEN = 4
MEDIA_TOKENS = 1600  # an image or a document, whatever its size: what a large image costs
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")

_FILLER = (
    "batch", "token", "result", "request", "model", "answer", "cache", "prompt",
    "stable", "sample", "output", "emulated", "local", "reply", "message", "content",
)  # fmt: skip
_SNIPPET_CHARS = 40


class PromptCache(Protocol):
    """The cached prefixes (`model:prefix_hash`) as one request sees them: whether it reads
    `key`, and `add`, called for every breakpoint the request read or wrote, with its ttl."""

    def __contains__(self, key: str) -> bool: ...
    def add(self, key: str, ttl: str) -> None: ...


class _NoCache:
    """Nothing cached and nothing kept: every breakpoint is written."""

    def __contains__(self, key: str) -> bool:
        return False

    def add(self, key: str, ttl: str) -> None:
        pass


UserResponder = Callable[[dict[str, Any], str], str | list[dict[str, Any]] | dict[str, Any]]


def load_responder(spec: str) -> UserResponder:
    """`package.module:callable` -> the callable; a ValueError naming `spec` when it is not one."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"responder {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # a syntax error in the user's module is as fatal as a missing one
        raise ValueError(f"responder {spec!r}: cannot import {module_name!r}: {exc}") from exc
    target = getattr(module, attribute, None)
    if target is None:
        raise ValueError(f"responder {spec!r}: module {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ValueError(f"responder {spec!r}: {attribute!r} is not callable")
    return target


@dataclass(frozen=True)
class _Answer:
    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None = None


@dataclass(frozen=True)
class _Billing:
    """What a request's usage depends on beyond its params: the cache it sees, its tier."""

    cache: PromptCache
    service_tier: str


class Responder:
    """Answers one request at a time; usage depends on the cache the caller gives for it (or
    the one given here), so on what came before."""

    def __init__(self, *, cache: PromptCache | None = None, seed: int = 0, user: UserResponder | None = None) -> None:
        self._cache = cache or _NoCache()
        self._seed = seed
        self._user = user

    def result(
        self,
        params: dict[str, Any],
        *,
        custom_id: str,
        message_id: str,
        invalid_output: InvalidKind | None = None,
        cache: PromptCache | None = None,
        service_tier: str = "batch",
    ) -> dict[str, Any]:
        """The MessageBatchResult for one request, as a JSON-ready dict; `invalid_output` spoils a
        structured answer of the built-in responder (not JSON, or not conforming). `cache` is
        the cache as this request sees it; `service_tier` goes into its usage."""
        billing = _Billing(cache if cache is not None else self._cache, service_tier)
        if self._user is None:
            return self._succeeded(params, message_id, self._generate(params, custom_id, invalid_output), billing)
        answer = self._user(params, custom_id)
        if isinstance(answer, str):
            answer = [{"type": "text", "text": answer}]
        if isinstance(answer, list):
            return self._succeeded(params, message_id, _user_answer(answer), billing)
        if isinstance(answer, dict) and answer.get("type") in RESULT_TYPES:
            return self._custom_result(params, custom_id, message_id, answer, billing)
        raise TypeError(
            "a responder must return a str, a list of content blocks or a result dict whose "
            f"type is one of {', '.join(RESULT_TYPES)}; got {answer!r:.200}"
        )

    def _custom_result(
        self, params: dict[str, Any], custom_id: str, message_id: str, result: dict[str, Any], billing: _Billing
    ) -> dict[str, Any]:
        kind = result["type"]
        if kind == "errored":
            return {"type": "errored", "error": _error_envelope(result.get("error"))}
        if kind != "succeeded":
            return {"type": kind}
        given = result.get("message") or {}
        answer = _user_answer(given["content"]) if "content" in given else self._generate(params, custom_id)
        message = self._succeeded(params, message_id, answer, billing)["message"]
        usage = message["usage"] | (given.get("usage") or {})
        return {"type": "succeeded", "message": message | given | {"usage": usage}}

    def _succeeded(self, params: dict[str, Any], message_id: str, answer: _Answer, billing: _Billing) -> dict[str, Any]:
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": answer.content,
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": _usage(params, answer.content, billing),
            "container": None,
        }
        return {"type": "succeeded", "message": message}

    def structured(self, params: dict[str, Any]) -> bool:
        """Whether the built-in responder answers `params` in a shape a schema sets (structured
        outputs or a forced tool): the answers the `invalid_output` fault can spoil."""
        return self._user is None and (_forced_tool(params) is not None or output_schema(params) is not None)

    def _generate(self, params: dict[str, Any], custom_id: str, invalid: InvalidKind | None = None) -> _Answer:
        digest = _digest(params, self._seed)
        rng = random.Random(digest)
        snippet = _snippet(_last_user_text(params["messages"]))
        planned: list[dict[str, Any]] = []
        if (params.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
            signature = base64.b64encode(hashlib.sha512(b"signature:" + digest).digest())
            thought = _prose(f"Emulated thinking about '{snippet}':", rng)
            planned.append({"type": "thinking", "thinking": thought, "signature": signature.decode()})
        tool = _forced_tool(params)
        schema = output_schema(params)
        block = None
        if tool is not None or schema is not None:
            # A schema's values vary with the custom_id too: records rendered alike still differ.
            values = random.Random(digest + b":" + custom_id.encode())
            if tool is not None:
                block = _tool_use(tool, digest, values, invalid)
            elif schema is not None:
                block = _structured_text(schema, values, invalid)
        planned.append(block or {"type": "text", "text": _prose(f"Emulated reply to: '{snippet}'.", rng)})
        return _within_limits(planned, params["max_tokens"], params.get("stop_sequences"))


def _usage(params: dict[str, Any], content: list[dict[str, Any]], billing: _Billing) -> dict[str, Any]:
    total, read, created = _cache_input_tokens(params, billing.cache)
    creation = created["5m"] + created["1h"]
    return {
        "input_tokens": total - read - creation,
        "output_tokens": sum(_block_tokens(block) for block in content),
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": created["5m"],
            "ephemeral_1h_input_tokens": created["1h"],
        },
        "server_tool_use": None,
        "service_tier": billing.service_tier,
    }


def _cache_input_tokens(params: dict[str, Any], cache: PromptCache) -> tuple[int, int, dict[str, int]]:
    """(all input tokens, tokens read from the cache, tokens written to it by ttl). A breakpoint
    whose prefix is shorter than the model's minimum is no breakpoint: its tokens are input."""
    model = params["model"]
    minimum = minimum_cacheable_tokens(model)
    blocks = list(_prompt_blocks(params))
    prefix = hashlib.sha256()
    total = 0
    breakpoints: list[tuple[str, int, str]] = []  # (cache key, tokens up to here, ttl)
    for index, (role, block) in enumerate(blocks):
        control = block.get("cache_control") if isinstance(block, dict) else None
        if control is None and index == len(blocks) - 1:
            control = params.get("cache_control")
        bare = _without_cache_control(block)
        # The role is part of the prefix: the same words from someone else are another prompt.
        prefix.update(_canonical([role, bare]).encode() + b"\n")
        total += _block_tokens(bare)
        if isinstance(control, dict) and total >= minimum:
            ttl = "1h" if control.get("ttl") == "1h" else "5m"
            breakpoints.append((f"{model}:{prefix.hexdigest()}", total, ttl))

    hits = [i for i, (key, _, _) in enumerate(breakpoints) if key in cache]
    first_miss = hits[-1] + 1 if hits else 0
    read = breakpoints[first_miss - 1][1] if hits else 0
    created = {"5m": 0, "1h": 0}
    # Each segment between two breakpoints is written with the ttl of the breakpoint ending it.
    previous = read
    for _, tokens, ttl in breakpoints[first_miss:]:
        created[ttl] += tokens - previous
        previous = tokens
    for key, _, ttl in breakpoints:
        cache.add(key, ttl)
    return total, read, created


def prompt_tokens(params: dict[str, Any]) -> int:
    """Every input token of `params` (what `count_tokens` answers): the sum of a result's
    `input_tokens`, `cache_creation_input_tokens` and `cache_read_input_tokens`."""
    return sum(_block_tokens(_without_cache_control(block)) for _, block in _prompt_blocks(params))


def _user_answer(content: list[dict[str, Any]]) -> _Answer:
    """A user's content is kept whole: no cut at max_tokens, no stop sequences."""
    uses_tool = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content)
    return _Answer(content, "tool_use" if uses_tool else "end_turn")


def _error_envelope(error: Any) -> dict[str, Any]:
    """The nested `{"type": "error", "error": {...}, "request_id": null}`, from either form."""
    if not isinstance(error, dict):
        error = {}
    if error.get("type") == "error":
        error = error.get("error") or {}
    inner = {"type": "api_error", "message": "error from the emulator's responder"} | error
    return {"type": "error", "error": inner, "request_id": None}


def _within_limits(planned: list[dict[str, Any]], max_tokens: int, stop_sequences: Any) -> _Answer:
    """Cut the planned blocks where a model would stop: a stop sequence, then max_tokens."""
    last = planned[-1]
    stop_reason = "tool_use" if last["type"] == "tool_use" else "end_turn"
    stop_sequence = None
    if last["type"] == "text":
        hits = [
            (last["text"].find(s), s) for s in stop_sequences or [] if isinstance(s, str) and s and s in last["text"]
        ]
        if hits:
            position, stop_sequence = min(hits)
            planned = [*planned[:-1], {**last, "text": last["text"][:position]}]
            stop_reason = "stop_sequence"

    content: list[dict[str, Any]] = []
    budget = max_tokens
    for block in planned:
        cost = _block_tokens(block)
        if cost <= budget:
            content.append(block)
            budget -= cost
            continue
        # Prose can stop mid-sentence; a tool call cut short would be unusable, so it is dropped.
        field = {"text": "text", "thinking": "thinking"}.get(block["type"])
        if field is not None and budget > 0:
            content.append({**block, field: block[field][: budget * CHARS_PER_TOKEN]})
        return _Answer(content, "max_tokens")
    return _Answer(content, stop_reason, stop_sequence)


def _digest(params: dict[str, Any], seed: int) -> bytes:
    # max_tokens and stop_sequences only decide where the answer is cut, as they would for a real
    # model, so they stay out of the digest: a shorter budget gives a prefix of the same answer.
    drawn_from = {k: v for k, v in params.items() if k not in ("max_tokens", "stop_sequences")}
    return hashlib.sha256(f"{seed}:{_canonical(drawn_from)}".encode()).digest()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> str:
    return _CANONICAL.encode(value)


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _block_tokens(block: Any) -> int:
    match block:
        case str():
            return _text_tokens(block)
        case {"type": "text", "text": str(text)}:
            return _text_tokens(text)
        case {"type": "thinking", "thinking": str(thinking)}:
            return _text_tokens(thinking)
        case {"type": "image" | "document"}:
            return MEDIA_TOKENS
        case _:
            return _text_tokens(_canonical(block))


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict):
        return {key: value for key, value in block.items() if key != "cache_control"}
    return block


def _prompt_blocks(params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(role, block) in the order the API reads a prompt: tools, the output format, system,
    then messages. The format's schema counts as input, as the API turns it into a prompt."""
    for tool in params.get("tools") or []:
        yield "tools", tool
    if output_schema(params) is not None:
        yield "output_config", params["output_config"]["format"]
    system = params.get("system")
    if isinstance(system, list):
        for block in system:
            yield "system", block
    elif system:
        yield "system", system
    for message in params["messages"]:
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):
            for block in content:
                yield str(role), block
        else:
            yield str(role), content


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        for block in reversed(content if isinstance(content, list) else []):
            match block:
                case {"type": "text", "text": str(text)}:
                    return text
    return ""


def _snippet(text: str) -> str:
    flat = " ".join(text[: 4 * _SNIPPET_CHARS].split())
    return flat if len(flat) <= _SNIPPET_CHARS else flat[:_SNIPPET_CHARS] + "..."


def _prose(lead: str, rng: random.Random) -> str:
    """`lead` plus filler words up to 8 to 60 tokens in all, so that answers vary in length."""
    words = [lead]
    length = len(lead)  # that of " ".join(words)
    target = rng.randint(8, 60)
    # ceil(length / CHARS_PER_TOKEN) < target, in integers: one comparison a word
    most = CHARS_PER_TOKEN * (target - 1)
    choice = rng.choice
    while length <= most:
        word = choice(_FILLER)
        words.append(word)
        length += 1 + len(word)
    return " ".join(words)


def _forced_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    """The tool `tool_choice` forces, or None when the model may answer in text."""
    choice = params.get("tool_choice")
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    if not isinstance(choice, dict) or not tools:
        return None
    if choice.get("type") == "any":
        return tools[0]
    if choice.get("type") == "tool":
        return next((tool for tool in tools if tool["name"] == choice.get("name")), None)
    return None


def _tool_use(
    tool: dict[str, Any], digest: bytes, rng: random.Random, invalid: InvalidKind | None
) -> dict[str, Any] | None:
    """The forced tool's call, its input drawn from the input_schema; None (the model answers in
    text instead) when the fault says so, or asks for a broken input the schema cannot give."""
    schema = tool.get("input_schema") or {}
    tool_input = SchemaSampler(schema, rng).object(schema)
    if invalid == "not_json":
        return None
    if invalid == "not_conforming":
        broken, tool_input = violation(tool_input, schema, schema, rng)
        if not broken or not isinstance(tool_input, dict):
            return None
    tool_id = derived_id("toolu_", digest.hex(), tool["name"])
    return {"type": "tool_use", "id": tool_id, "name": tool["name"], "input": tool_input}


def _structured_text(schema: dict[str, Any], rng: random.Random, invalid: InvalidKind | None) -> dict[str, Any]:
    """A text block holding a JSON document that conforms to `schema`, or, spoilt by the fault,
    one that does not (a schema with no rule to break gets the not-JSON kind instead)."""
    value = SchemaSampler(schema, rng).value(schema)
    if invalid == "not_conforming":
        broken, value = violation(value, schema, schema, rng)
        invalid = None if broken else "not_json"
    text = json.dumps(value, ensure_ascii=False)
    if invalid == "not_json":  # wrapped as for a reader, as models sometimes do
        text = f"```json\n{text}\n```"
    return {"type": "text", "text": text}
