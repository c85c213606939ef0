"""What the real API checks, and when: the request envelope synchronously at create (400),
each request's `params` asynchronously (an `errored` result with `invalid_request_error`).
Messages follow the API's pydantic style, `loc: msg`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)

# Parameters the batch path refuses (the batch-processing guide's table).
_REFUSED_IN_BATCHES = {
    "speed": "fast mode does not apply to batch processing",
    "store": "threads are not available in batches",
    "previous_thread_event_id": "threads are not available in batches",
    "cache_hint": "routing hints apply to synchronous requests only",
    "context_hint": "routing hints apply to synchronous requests only",
    "research_preview_2026_02": "research preview mode is not available on the batch path",
}


def envelope_error(index: int, item: Any) -> str | None:
    """The create-time problem with `requests[index]`, or None."""
    loc = f"requests.{index}"
    if not isinstance(item, dict):
        return f"{loc}: Input should be a valid dictionary"
    for key in item:
        if key not in ("custom_id", "params"):
            return f"{loc}.{key}: Extra inputs are not permitted"
    if "custom_id" not in item:
        return f"{loc}.custom_id: Field required"
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str):
        return f"{loc}.custom_id: Input should be a valid string"
    if not custom_id:
        return f"{loc}.custom_id: String should have at least 1 character"
    if len(custom_id) > 64:
        return f"{loc}.custom_id: String should have at most 64 characters"
    if not _CUSTOM_ID.match(custom_id):
        return f"{loc}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
    if "params" not in item:
        return f"{loc}.params: Field required"
    if not isinstance(item["params"], dict):
        return f"{loc}.params: Input should be a valid dictionary"
    return None


def poison_error(index: int, item: dict[str, Any], marker: str | None) -> str | None:
    """The emulator's poison fault: `requests[index]` refused when its params hold `marker`."""
    if marker is None or marker not in json.dumps(item["params"], ensure_ascii=False, default=str):
        return None
    return f"requests.{index}.params: integer overflow (the value marked {marker!r} cannot be read)"


def body_error(events: Iterable[tuple[str, str, Any]]) -> str | None:
    """Why a create body that carried no request is not `{"requests": [...]}`, or None when
    it is one with an empty list. `events` are the body's ijson parse events."""
    events = iter(events)
    _, first, _ = next(events, ("", None, None))
    if first != "start_map":
        return "Input should be a valid dictionary or object to extract fields from"
    for prefix, event, _ in events:
        if prefix == "requests":  # the first event under the key is its value's
            return None if event == "start_array" else "requests: Input should be a valid list"
    return "requests: Field required"


def count_error(count: int, max_requests: int) -> str | None:
    if count < 1:
        return f"requests: List should have at least 1 item after validation, not {count}"
    if count > max_requests:
        return f"requests: List should have at most {max_requests} items after validation, not {count}"
    return None


def params_error(params: dict[str, Any], max_output_tokens: int, *, in_batch: bool = True) -> str | None:
    """The asynchronous validation of one request's params, or None when it may run; with
    `in_batch` False, a synchronous request's (the batch-only refusals left out)."""
    problem = _model_error(params)
    if problem is not None:
        return problem
    model = params["model"]
    if "max_tokens" not in params:
        return "max_tokens: Field required"
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if max_tokens > max_output_tokens:
        return (
            f"max_tokens: {max_tokens} > {max_output_tokens}, which is the maximum allowed "
            f"number of output tokens for {model}"
        )
    if in_batch and params.get("stream") is True:
        return "stream: batch requests cannot be streamed; results come back as a single file"
    for key, reason in _REFUSED_IN_BATCHES.items() if in_batch else ():
        if key in params:
            return f"{key}: not supported in batch requests ({reason})"
    return _messages_error(params.get("messages", _MISSING)) or output_config_error(params)


def count_tokens_error(body: Any) -> str | None:
    """Why a `POST /v1/messages/count_tokens` body is refused (400), or None: a Messages body
    with no max_tokens needed."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary or object to extract fields from"
    return _model_error(body) or _messages_error(body.get("messages", _MISSING)) or output_config_error(body)


_EFFORTS = ("low", "medium", "high", "xhigh", "max")


def output_config_error(params: dict[str, Any]) -> str | None:
    """The problem with `output_config` (effort, and a `format` of type json_schema with an
    object `schema`), or None. Whether a schema stays inside the structured-outputs subset is
    not checked: the emulator answers any schema it can."""
    if params.get("output_config") is None:
        return None
    config = params["output_config"]
    if not isinstance(config, dict):
        return "output_config: Input should be a valid dictionary"
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        return f"output_config.effort: Input should be {', '.join(map(repr, _EFFORTS[:-1]))} or 'max'"
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return "output_config.format: Input should be a valid dictionary"
    if "type" not in fmt:
        return "output_config.format.type: Field required"
    if fmt["type"] != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    if "schema" not in fmt:
        return "output_config.format.schema: Field required"
    if not isinstance(fmt["schema"], dict):
        return "output_config.format.schema: Input should be a valid dictionary"
    return None


_MISSING = object()


def _model_error(params: dict[str, Any]) -> str | None:
    model = params.get("model")
    if "model" not in params:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid string"
    if not model.startswith("claude-"):
        return f"model: unknown model '{model}'"
    return None


def _messages_error(messages: Any) -> str | None:
    if messages is _MISSING:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: List should have at least 1 item after validation, not 0"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
        content = message["content"]
        if isinstance(content, str):
            final_assistant = i == len(messages) - 1 and message["role"] == "assistant"
            if not content and not final_assistant:
                return f"messages.{i}: all messages must have non-empty content except the final assistant message"
        elif isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    return f"messages.{i}.content.{j}: Input should be a valid content block"
        else:
            return f"messages.{i}.content: Input should be a valid string or list of content blocks"
    return None
