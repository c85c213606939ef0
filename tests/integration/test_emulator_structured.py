"""Structured answers over HTTP, read through the SDK: `output_config.format` answers that the
layer's validator accepts, forced tools, a malformed output_config refused per request, and the
`invalid_output` fault spoiling its share both ways, set by settings or the control endpoint."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlock, ToolUseBlock

from batchdrop.domain.schemas import validate
from batchdrop_local.emulator.control import EmulatorControl
from batchdrop_local.emulator.faults import FaultSettings
from tests.integration.emulator_support import MakeClient, StartEmulator, params

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "score": {"type": "number"},
        "aspects": {"type": "array", "items": {"$ref": "#/$defs/aspect"}, "maxItems": 3},
        "summary": {"type": ["string", "null"]},
    },
    "required": ["sentiment", "score", "aspects"],
    "additionalProperties": False,
    "$defs": {
        "aspect": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "good": {"type": "boolean"}},
            "required": ["name", "good"],
            "additionalProperties": False,
        }
    },
}
OUTPUT_CONFIG = {"format": {"type": "json_schema", "schema": SCHEMA}}
TOOL = {"name": "record", "description": "Record the review.", "input_schema": SCHEMA}


def structured(custom_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": params(f"Review {custom_id}: sturdy but slow.", max_tokens=2048, output_config=OUTPUT_CONFIG)
        | overrides,
    }


def forced_tool(custom_id: str) -> dict[str, Any]:
    tool_params = {"tools": [TOOL], "tool_choice": {"type": "tool", "name": "record"}, "output_config": None}
    request = structured(custom_id, **tool_params)
    request["params"] = {key: value for key, value in request["params"].items() if value is not None}
    return request


def ended_results(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> dict[str, Any]:
    batch = client.messages.batches.create(requests=requests)
    EmulatorControl(str(client.base_url), timeout=30).end([batch.id])
    return {row.custom_id: row.result for row in client.messages.batches.results(batch.id)}


def test_structured_answers_and_forced_tools_conform_through_the_sdk(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a batch of records asking for structured outputs, and records forcing a tool
    client = make_client(start_emulator())
    requests = [structured(f"so-{i}") for i in range(8)] + [forced_tool(f"tool-{i}") for i in range(4)]

    # When the batch ends and its results are read through the SDK
    results = ended_results(client, requests)

    # Then each structured answer is one text block of JSON the layer's validator accepts
    for i in range(8):
        message = results[f"so-{i}"].message
        (block,) = message.content
        assert isinstance(block, TextBlock)
        assert validate(json.loads(block.text), SCHEMA) is None
        assert message.stop_reason == "end_turn"
    # And each forced tool is one tool_use block whose input conforms
    for i in range(4):
        message = results[f"tool-{i}"].message
        (block,) = message.content
        assert isinstance(block, ToolUseBlock)
        assert block.name == "record"
        assert validate(block.input, SCHEMA) is None
        assert message.stop_reason == "tool_use"
    # And the records' answers differ
    assert len({results[f"so-{i}"].message.content[0].text for i in range(8)}) > 4


def test_a_malformed_output_config_ends_that_request_errored_naming_the_field(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given a batch with one good request and one whose format is not json_schema
    client = make_client(start_emulator())
    bad = structured("bad", output_config={"format": {"type": "json_object", "schema": SCHEMA}})

    # When the batch ends
    results = ended_results(client, [structured("good"), bad])

    # Then only the bad one errored, with invalid_request_error naming output_config.format.type
    assert results["good"].type == "succeeded"
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"
    assert results["bad"].error.error.message == "output_config.format.type: Input should be 'json_schema'"


def spoilt(results: dict[str, Any]) -> dict[str, str]:
    """custom_id -> how its answer fails: "not_json", "not_conforming" (absent when it conforms)."""
    verdicts = {}
    for custom_id, result in results.items():
        (block,) = result.message.content
        if isinstance(block, ToolUseBlock):
            if validate(block.input, SCHEMA) is not None:
                verdicts[custom_id] = "not_conforming"
            continue
        if custom_id.startswith("tool-"):  # a tool forced but not called
            verdicts[custom_id] = "not_json"
            continue
        try:
            document = json.loads(block.text)
        except json.JSONDecodeError:
            verdicts[custom_id] = "not_json"
            continue
        if validate(document, SCHEMA) is not None:
            verdicts[custom_id] = "not_conforming"
    return verdicts


def test_the_invalid_output_fault_spoils_its_share_both_ways_and_replays(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator spoiling half the structured answers, and a batch of 40 records
    emulator = start_emulator(faults=FaultSettings(invalid_output=0.5))
    client = make_client(emulator)
    requests = [structured(f"so-{i:02d}") for i in range(30)] + [forced_tool(f"tool-{i}") for i in range(10)]

    # When the batch ends, and the same records are sent again to a fresh emulator
    results = ended_results(client, requests)
    verdicts = spoilt(results)
    replay = spoilt(ended_results(make_client(start_emulator(faults=FaultSettings(invalid_output=0.5))), requests))

    # Then every request still succeeded, about half are spoilt, both ways, the counters agree,
    # and the same seed spoils the same records the same way
    assert all(result.type == "succeeded" for result in results.values())
    assert 10 <= len(verdicts) <= 30
    assert set(verdicts.values()) == {"not_json", "not_conforming"}
    injected = EmulatorControl(emulator.url).counters()["faults_injected"]
    assert injected["invalid_output_not_json"] + injected["invalid_output_not_conforming"] == len(verdicts)
    assert replay == verdicts


def test_the_fault_is_set_through_the_control_endpoint_and_leaves_plain_requests_alone(
    start_emulator: StartEmulator, make_client: MakeClient
) -> None:
    # Given an emulator whose faults are set to spoil every structured answer
    emulator = start_emulator()
    control = EmulatorControl(emulator.url)
    assert control.set_faults({"invalid_output": 1})["invalid_output"] == 1
    client = make_client(emulator)

    # When structured and plain requests are answered
    plain = {"custom_id": "plain", "params": params("Just say hi")}
    results = ended_results(client, [*(structured(f"so-{i}") for i in range(6)), plain])

    # Then every structured answer is spoilt and the plain one is prose as ever
    assert set(spoilt({k: v for k, v in results.items() if k != "plain"})) == {f"so-{i}" for i in range(6)}
    assert results["plain"].message.content[0].text.startswith("Emulated reply")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_an_invalid_output_rate_outside_0_and_1_is_refused(start_emulator: StartEmulator, rate: float) -> None:
    control = EmulatorControl(start_emulator().url)
    with pytest.raises(urllib.error.HTTPError, match="400"):
        control.set_faults({"invalid_output": rate})
    assert control.faults()["invalid_output"] == 0
