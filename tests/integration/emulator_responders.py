"""Responders plugged into the emulator by tests (`responder="tests.integration.emulator_responders:…"`
or `--responder` on the command line), as a user would plug in their own."""

from __future__ import annotations

from typing import Any


def echo(params: dict[str, Any], custom_id: str) -> str | dict[str, Any]:
    """Echo the custom_id; `overloaded-…` ids come back errored, `crash-…` ids make it raise."""
    if custom_id.startswith("overloaded"):
        return {"type": "errored", "error": {"type": "overloaded_error", "message": "the responder is overloaded"}}
    if custom_id.startswith("crash"):
        raise RuntimeError("the responder crashed")
    return f"echo {custom_id} from {params['model']}"


def by_question(params: dict[str, Any], custom_id: str) -> str | dict[str, Any]:
    """For synchronous requests, which carry no custom_id of their own: a question holding
    `overloaded` comes back errored, one holding `crash` makes it raise, others are echoed."""
    question = str(params["messages"][-1]["content"])
    if "overloaded" in question:
        return {"type": "errored", "error": {"type": "overloaded_error", "message": "the responder is overloaded"}}
    if "crash" in question:
        raise RuntimeError("the responder crashed")
    return f"you asked: {question}"
