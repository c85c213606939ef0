"""Finished and failed job items carry the `ttl` the table's TTL reads, JobRetentionDays on
from the moment they end; with no retention set, nothing expires. Against moto's in-process
DynamoDB (test_state_moves' table, declared as template.yaml declares it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from batchdrop.adapters.state import TTL_ATTRIBUTE, StateTable
from batchdrop.config import ENV_JOB_RETENTION_DAYS, Settings
from batchdrop.domain.records import SourceRef
from batchdrop.domain.states import JobStatus
from batchdrop.errors import ConfigurationError
from tests.unit.test_state_moves import dynamodb  # noqa: F401 - the module-scoped table fixture

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
DAY = 86_400
AT = "2027-01-15T08:00:00.000Z"


def _job(table: StateTable, raw: Any, job_id: str, status: JobStatus) -> None:
    assert table.create_job(job_id, SourceRef("b", f"inbox/{job_id}.jsonl", "v1"), AT)
    raw.update_item(
        Key={"PK": f"JOB#{job_id}", "SK": "JOB"},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": str(status)},
    )


def _item(raw: Any, job_id: str) -> Mapping[str, Any]:
    item: Mapping[str, Any] = raw.get_item(Key={"PK": f"JOB#{job_id}", "SK": "JOB"}, ConsistentRead=True)["Item"]
    return item


@pytest.mark.parametrize("days", [0, 30])
@pytest.mark.parametrize("ending", ["finished", "canceled", "failed"])
def test_an_ended_job_expires_after_the_retention(dynamodb: Any, days: int, ending: str) -> None:  # noqa: F811
    table = StateTable("state", dynamodb, job_retention_days=days, clock=lambda: NOW)
    raw, job_id = dynamodb.Table("state"), f"ttl-{ending}-{days}"
    _job(table, raw, job_id, JobStatus.SUBMITTING if ending == "failed" else JobStatus.RUNNING)

    if ending == "failed":
        assert table.fail_job(job_id, "empty file", requested=0, rejected=0, manifest_key="results/m.json")
    else:
        status = JobStatus.COMPLETED if ending == "finished" else JobStatus.CANCELED
        assert table.finish_job(job_id, status, "results/m.json", AT)

    item = _item(raw, job_id)
    if days:
        assert item[TTL_ATTRIBUTE] == int(NOW) + days * DAY
    else:
        assert TTL_ATTRIBUTE not in item


def test_an_open_job_never_carries_a_ttl(dynamodb: Any) -> None:  # noqa: F811
    table = StateTable("state", dynamodb, job_retention_days=30, clock=lambda: NOW)
    raw = dynamodb.Table("state")
    _job(table, raw, "ttl-open", JobStatus.SUBMITTING)

    assert table.mark_job_running("ttl-open")
    assert TTL_ATTRIBUTE not in _item(raw, "ttl-open")


BASE_ENV = {
    "BATCHDROP_BUCKET": "b",
    "BATCHDROP_TABLE": "t",
    "BATCHDROP_EVENT_BUS": "e",
    "ANTHROPIC_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf",
}


@pytest.mark.parametrize(("value", "days"), [(None, 0), ("0", 0), ("10", 10), ("365", 365)])
def test_the_retention_is_read_from_the_environment(value: str | None, days: int) -> None:
    env = BASE_ENV if value is None else {**BASE_ENV, ENV_JOB_RETENTION_DAYS: value}
    assert Settings.from_env(env).job_retention_days == days


@pytest.mark.parametrize("value", ["1", "9", "-5", "ten"])
def test_a_retention_shorter_than_the_sweeper_look_back_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match=ENV_JOB_RETENTION_DAYS):
        Settings.from_env({**BASE_ENV, ENV_JOB_RETENTION_DAYS: value})
