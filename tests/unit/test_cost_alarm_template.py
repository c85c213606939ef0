"""template.yaml's daily cost alarm as a specification: made only when a daily budget is set,
it sums the checker's JobCostUsd over a day and is raised at DailyCostAlarmShare of the budget,
notifying the same topic as every other alarm."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from cfnlint.decode import decode_str

from batchdrop.observability import JOB_COST_METRIC
from tests.unit.test_template import ALARM_TOPIC_ACTIONS, TEMPLATE_PATH, alarms, service_name

pytestmark = pytest.mark.unit

ONE_DAY = 86400
SEVEN_DAYS = 7 * ONE_DAY  # the longest an alarm's periods may span, when its period is an hour or more


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not errors, errors
    return decoded


@pytest.fixture(scope="module")
def alarm(template: dict[str, Any]) -> dict[str, Any]:
    return alarms(template)["DailyCostAlarm"]


def raised(alarm: dict[str, Any], *, day_cost: str, budget: str, share: str) -> bool:
    """Whether the alarm is raised for a day whose jobs cost `day_cost`, worked out from the
    template's own expression, threshold and comparison with the parameters given."""
    (expression,) = (query["Expression"] for query in alarm["Metrics"] if query.get("ReturnData"))
    text = expression["Fn::Sub"] if isinstance(expression, dict) else expression
    match = re.fullmatch(r"cost / \$\{DailyCostAlarmShare\}", text)
    assert match, f"an expression this test does not know how to evaluate: {text!r}"
    value = Decimal(day_cost) / Decimal(share)
    assert alarm["Threshold"] == {"Ref": "DailyBudgetUsd"}
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    return value >= Decimal(budget)


def test_the_budget_is_off_by_default_and_takes_only_zero_or_a_positive_amount(template: dict[str, Any]) -> None:
    budget = template["Parameters"]["DailyBudgetUsd"]
    pattern = re.compile(budget["AllowedPattern"])

    assert budget["Default"] == "0"
    for accepted in ("0", "25", "12.50", "0.5", "1000000"):
        assert pattern.fullmatch(accepted), accepted
    # "0.0" would pass the condition's test for "0" and set a budget of nothing: refused.
    for refused in ("0.0", "00", "-1", "1.", ".5", "1e3", "12 USD", ""):
        assert not pattern.fullmatch(refused), refused
    # It both gates jobs (the submit function reads it) and drives the alarm.
    assert "waits as AWAITING_APPROVAL" in " ".join(budget["Description"].split())


def test_the_share_defaults_to_four_fifths_and_lies_above_zero_up_to_the_whole_budget(
    template: dict[str, Any],
) -> None:
    share = template["Parameters"]["DailyCostAlarmShare"]

    assert share["Type"] == "Number"
    assert Decimal(str(share["Default"])) == Decimal("0.8")
    assert 0 < Decimal(str(share["MinValue"])) <= Decimal(str(share["Default"])) <= Decimal(str(share["MaxValue"]))
    assert Decimal(str(share["MaxValue"])) == 1


def test_the_alarm_exists_only_when_a_budget_is_set(template: dict[str, Any]) -> None:
    resource = template["Resources"]["DailyCostAlarm"]

    assert resource["Condition"] == "HasDailyBudget"
    assert template["Conditions"]["HasDailyBudget"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DailyBudgetUsd"}, "0"]}]}


def test_the_alarm_sums_the_checkers_job_cost_over_one_day(template: dict[str, Any], alarm: dict[str, Any]) -> None:
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    stats = [query for query in alarm["Metrics"] if "MetricStat" in query]

    (cost,) = stats
    assert cost["Id"] == "cost"
    assert cost["ReturnData"] is False
    stat = cost["MetricStat"]
    assert stat["Metric"]["MetricName"] == JOB_COST_METRIC
    assert stat["Metric"]["Namespace"] == namespace
    assert stat["Metric"]["Dimensions"] == [{"Name": "service", "Value": service_name(template, "CheckerFunction")}]
    assert stat["Stat"] == "Sum"
    assert stat["Period"] == ONE_DAY
    # CloudWatch takes a period of a day for a standard-resolution metric; the periods an
    # alarm evaluates may span seven days at most.
    assert alarm["EvaluationPeriods"] == 1
    assert stat["Period"] * alarm["EvaluationPeriods"] <= SEVEN_DAYS
    assert [query["Id"] for query in alarm["Metrics"] if query.get("ReturnData", True)] == ["share_of_budget"]


@pytest.mark.parametrize(
    ("day_cost", "budget", "share", "expected"),
    [
        ("79.99", "100", "0.8", False),
        ("80", "100", "0.8", True),
        ("80.01", "100", "0.8", True),
        ("4.99", "10", "0.5", False),
        ("5", "10", "0.5", True),
        ("12.49", "12.50", "1", False),
        ("12.50", "12.50", "1", True),
        ("0", "100", "0.8", False),
    ],
)
def test_the_alarm_is_raised_once_the_days_cost_reaches_the_share_of_the_budget(
    alarm: dict[str, Any], day_cost: str, budget: str, share: str, expected: bool
) -> None:
    assert raised(alarm, day_cost=day_cost, budget=budget, share=share) is expected


def test_the_alarm_notifies_like_the_others_and_a_quiet_day_is_fine(alarm: dict[str, Any]) -> None:
    assert alarm["AlarmActions"] == ALARM_TOPIC_ACTIONS
    assert alarm["OKActions"] == ALARM_TOPIC_ACTIONS
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "DailyBudgetUsd" in alarm["AlarmDescription"]
