"""Synthetic request files of any size, written as a stream (tests, benchmarks, demos).

Each request is a valid Batches API request whose user text is padded so that the whole
file lands on a byte target: a 100,000-request, 256 MB batch is one call away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "judge",
    "boxing",
]


def request(index: int, text: str, *, model: str = "claude-haiku-4-5", max_tokens: int = 64) -> dict[str, Any]:
    return {
        "custom_id": f"req-{index:07d}",
        "params": {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
        },
    }


def request_lines(count: int, line_bytes: int = 0) -> Iterator[bytes]:
    """`count` compact JSON request lines (no newline), each padded to about `line_bytes`."""
    for index in range(count):
        head = f"{index} "
        base = len(json.dumps(request(index, head), separators=(",", ":")))
        pad = max(0, line_bytes - base - 1)  # 1: the comma or newline that follows the line
        words = (_WORDS[index % len(_WORDS)] + " ") * (pad // 4 + 1)
        yield json.dumps(request(index, head + words[:pad]), separators=(",", ":")).encode()


def write_requests(path: Path, count: int, total_bytes: int = 0, shape: Literal["batch", "jsonl"] = "jsonl") -> int:
    """Write `count` requests to `path`, as JSONL lines or as one create body
    (`{"requests":[...]}`), padded to about `total_bytes` in all; returns the size written."""
    overhead = len(b'{"requests":[]}') if shape == "batch" else 0
    line_bytes = (total_bytes - overhead) // count if total_bytes else 0
    with path.open("wb") as out:
        if shape == "batch":
            out.write(b'{"requests":[')
        for index, line in enumerate(request_lines(count, line_bytes)):
            if shape == "batch":
                out.write(b"," + line if index else line)
            else:
                out.write(line + b"\n")
        if shape == "batch":
            out.write(b"]}")
    return path.stat().st_size
