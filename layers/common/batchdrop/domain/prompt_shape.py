"""What the estimate needs of one request's prompt, read without any API: a local
approximation of its input tokens, and its cacheable prefix (everything up to its last
`cache_control` breakpoint, in the order the API caches: tools, system, messages).

The approximation, stated: one token per 4 characters of every string in `tools`, `system`
and `messages` (keys and JSON punctuation not counted), rounded up, at least 1; a base64
`source` (an image or a document) counts a flat 1,600 tokens instead of its characters (about
what an image costs at the size the API scales it to). It is what the estimate falls back on
when the API cannot count, and the auxiliary figure of its ratio estimator when it can."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
BASE64_SOURCE_TOKENS = 1_600


@dataclass(frozen=True, slots=True)
class PromptShape:
    approx_tokens: int
    # The cacheable prefix: a digest of its content (model included), its approximate tokens
    # and the lifetime its last breakpoint asks for. None: no breakpoint.
    prefix_digest: bytes | None = None
    prefix_tokens: int = 0
    prefix_ttl: str = "5m"


def prompt_shape(params: Mapping[str, Any]) -> PromptShape:
    """The approximate tokens and the cacheable prefix of a request's `params`."""
    blocks = list(_blocks(params))
    sizes = [_size(block) for _, block in blocks]
    approx = _tokens(sum(c for c, _ in sizes), sum(f for _, f in sizes))
    controls = [block.get("cache_control") if isinstance(block, dict) else None for _, block in blocks]
    if blocks and controls[-1] is None:
        controls[-1] = params.get("cache_control")  # a top-level breakpoint: the prompt's last block
    last = max((i for i, control in enumerate(controls) if isinstance(control, dict)), default=None)
    if last is None:
        return PromptShape(approx)
    digest = hashlib.sha256(str(params.get("model", "")).encode())
    for role, block in blocks[: last + 1]:
        bare = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        # The role is part of the prefix: the same words from someone else are another prompt.
        digest.update(json.dumps([role, bare], sort_keys=True, ensure_ascii=False).encode() + b"\n")
    chars, flat = sum(c for c, _ in sizes[: last + 1]), sum(f for _, f in sizes[: last + 1])
    control = controls[last]
    ttl = "1h" if isinstance(control, dict) and control.get("ttl") == "1h" else "5m"
    return PromptShape(approx, prefix_digest=digest.digest()[:16], prefix_tokens=_tokens(chars, flat), prefix_ttl=ttl)


def _tokens(chars: int, flat: int) -> int:
    return max(1, -(-chars // CHARS_PER_TOKEN) + flat)


def _blocks(params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The prompt's blocks in cache order, each with who it is from."""
    for tool in params.get("tools") or []:
        yield "tools", tool
    system = params.get("system")
    if isinstance(system, str) and system:
        yield "system", {"type": "text", "text": system}
    elif isinstance(system, list):
        for block in system:
            yield "system", block
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, content = str(message.get("role")), message.get("content")
        if isinstance(content, str):
            yield role, {"type": "text", "text": content}
        elif isinstance(content, list):
            for block in content:
                yield role, block


def _size(value: Any) -> tuple[int, int]:
    """(characters of every string in `value`, flat tokens of its base64 sources)."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, dict):
        if value.get("type") == "base64" and isinstance(value.get("data"), str):
            return 0, BASE64_SOURCE_TOKENS
        chars, flat = 0, 0
        for key, item in value.items():
            if key == "cache_control":
                continue
            item_chars, item_flat = _size(item)
            chars, flat = chars + item_chars, flat + item_flat
        return chars, flat
    if isinstance(value, list):
        sizes = [_size(item) for item in value]
        return sum(c for c, _ in sizes), sum(f for _, f in sizes)
    return 0, 0
