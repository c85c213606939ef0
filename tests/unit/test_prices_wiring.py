"""The checker prices a job's manifest with the wiring's price table (BATCHDROP_PRICES_JSON
applied), the shipped one when none is given."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.prices import price_table
from batchdrop.services.intake import Intake
from batchdrop.services.tick import Checker
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit


def finished_cost(prices_json: str | None) -> dict[str, str]:
    world = Fakes()
    prices = price_table(prices_json) if prices_json else None
    source = world.upload("inbox/file.jsonl", [request("a"), request("b")])
    job_id = Intake(world.wiring(prices=prices)).submit(source).job_id
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.batch_id is not None
    world.batches.end(shard.batch_id)
    Checker(world.wiring(prices=prices), seconds_left=lambda: 900.0).tick()
    cost: dict[str, str] = world.store.get_json(manifest_key(job_id))["cost"]
    return cost


def test_the_manifest_is_priced_with_the_wirings_table() -> None:
    shipped = finished_cost(None)
    doubled = finished_cost(
        '{"families": {"haiku-4.5": {"input": 2, "output": 10, "cache_write_5m": 2.5, "cache_write_1h": 4, '
        '"cache_read": 0.2}}}'
    )
    assert Decimal(shipped["standard_usd"]) > 0
    # Twice every price of the family the fakes' model is priced as: twice the cost
    assert Decimal(doubled["standard_usd"]) == 2 * Decimal(shipped["standard_usd"])


def test_the_wiring_carries_the_override_of_its_environment() -> None:
    from batchdrop import wiring
    from batchdrop.config import ENV_PRICES_JSON, invocation_environment

    env = {
        "BATCHDROP_BUCKET": "b",
        "BATCHDROP_TABLE": "t",
        "BATCHDROP_EVENT_BUS": "e",
        "ANTHROPIC_SECRET_ARN": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:k-AbCdEf",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    override = '{"families": {"haiku-4.5": {"input": 7}}}'
    wiring._build.cache_clear()
    try:
        with invocation_environment(env):
            assert wiring.from_env().prices is None
        with invocation_environment({**env, ENV_PRICES_JSON: override}):
            prices = wiring.from_env().prices
    finally:
        wiring._build.cache_clear()
    assert prices is not None
    assert prices.by_name("haiku-4.5").input == Decimal(7)
