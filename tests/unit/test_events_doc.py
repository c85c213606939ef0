"""docs/events.md says what the code sends: each example event parses and has exactly the
fields (and the same `counts` and `cost` fields) as the event of its detail-type that jobs run
through the in-memory fakes send, the field tables name every field, every JSON block in it
parses, and its consumer stack parses with a rule on real detail-types and a handler that compiles."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchdrop.domain import job_events
from batchdrop.services.cancel import Canceler
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, errored, request

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)
TABLE_FIELD = re.compile(r"^\| `(\w+)`", re.MULTILINE)


def doc_blocks() -> list[Any]:
    return [json.loads(block) for block in JSON_BLOCK.findall(DOC.read_text())]


def doc_examples() -> dict[str, dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = {}
    for block in doc_blocks():
        if isinstance(block, dict) and isinstance(block.get("detail-type"), str):
            assert block["detail-type"] not in examples, f"docs/events.md: two examples of {block['detail-type']}"
            examples[block["detail-type"]] = block
    return examples


def sent_by_the_code() -> dict[str, dict[str, Any]]:
    """One detail of each detail-type, as jobs run through the fakes send them: one that
    completes with an errored request, one held for its budget then canceled, one refused."""
    world = Fakes()
    budget = Decimal("0.000001")
    Intake(world.wiring()).submit(world.upload("inbox/runs.jsonl", [request("a"), request("b")]))
    for batch_id in list(world.batches.batches):
        world.batches.end(batch_id, {"b": errored("invalid_request_error")})
    held = Intake(world.wiring(job_budget_usd=budget)).submit(world.upload("inbox/held.jsonl", [request("c")]))
    Canceler(world.wiring()).cancel(held.job_id)
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    Intake(world.wiring()).submit(world.upload("inbox/bad.jsonl", [b"not json"]))
    details: dict[str, dict[str, Any]] = {}
    for event in world.events.sent:
        details.setdefault(event.detail_type, event.detail)
    assert set(details) == set(job_events.DETAIL_TYPES)
    return details


def test_every_json_block_parses_and_there_is_one_example_of_each_event() -> None:
    assert doc_blocks()
    assert sorted(doc_examples()) == sorted(job_events.DETAIL_TYPES)


@pytest.mark.parametrize("detail_type", job_events.DETAIL_TYPES)
def test_each_example_has_exactly_the_fields_the_code_sends(detail_type: str) -> None:
    example = doc_examples()[detail_type]
    built = sent_by_the_code()[detail_type]
    assert example["source"] == job_events.SOURCE
    documented = example["detail"]
    assert sorted(documented) == sorted(built), f"docs/events.md's {detail_type} example"
    assert documented["schema_version"] == job_events.SCHEMA_VERSION
    for nested in ("counts", "cost", "outputs"):
        if documented[nested] is not None and built[nested] is not None:
            assert sorted(documented[nested]) == sorted(built[nested]), f"{detail_type}: {nested}"
        else:
            assert nested == "outputs" or documented[nested] == built[nested], f"{detail_type}: {nested}"


def test_the_field_tables_name_every_field_the_code_sends() -> None:
    documented = set(TABLE_FIELD.findall(DOC.read_text()))
    for table_row in re.findall(r"^\| (?:Failed|Awaiting Approval) \| (.*?) \|", DOC.read_text(), re.MULTILINE):
        documented |= set(re.findall(r"`(\w+)`", table_row))
    sent = {name for detail in sent_by_the_code().values() for name in detail}
    assert sent <= documented, f"docs/events.md does not describe {sorted(sent - documented)}"


def test_the_consumer_stack_parses_its_rule_names_real_events_and_its_handler_compiles() -> None:
    class CloudFormationLoader(yaml.SafeLoader):
        """YAML with CloudFormation's short tags (!Ref, !GetAtt) read as plain values."""

    CloudFormationLoader.add_multi_constructor("!", lambda loader, tag, node: f"{tag} {node.value}")
    [block] = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    resources = yaml.load(block, Loader=CloudFormationLoader)["Resources"]
    pattern = resources["JobEndedRule"]["Properties"]["EventPattern"]
    assert pattern["source"] == [job_events.SOURCE]
    assert set(pattern["detail-type"]) <= set(job_events.DETAIL_TYPES)
    compile(resources["OnJobEnded"]["Properties"]["InlineCode"], "docs/events.md's handler", "exec")
