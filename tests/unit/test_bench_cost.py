"""The cost benchmark's arithmetic (bench/cost.py): known counts give known dollars."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from batchdrop_local.stack import IntrinsicResolver, LocalResource, SamTemplate
from bench.cost import (
    MONTH_DAYS,
    Consumption,
    Measured,
    PhaseCounts,
    Tokens,
    WriteItem,
    alarm_metrics,
    anthropic_bill,
    billed_gb_seconds,
    gb_months,
    item_bytes,
    lifecycle_expiry_days,
    model,
    price,
    read_units,
    runs_per_month,
    s3_request_class,
    write_items,
    write_units,
)
from bench.prices import AWS, model_price

pytestmark = pytest.mark.unit

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:batchdrop-abcdef"


# ---------------------------------------------------------------- Lambda


def test_lambda_is_billed_per_ms_rounded_up_times_memory() -> None:
    assert billed_gb_seconds(1.0, 1024) == pytest.approx(1.0)
    assert billed_gb_seconds(2.0, 512) == pytest.approx(1.0)
    assert billed_gb_seconds(0.0001, 1024) == pytest.approx(0.001)  # 1 ms at least
    assert billed_gb_seconds(1.0004, 1024) == pytest.approx(1.001)


def test_a_million_gb_seconds_and_invocations_cost_the_list_price() -> None:
    bill = price(Consumption(lambda_gb_seconds=1_000_000, lambda_invocations=1_000_000))
    assert bill["Lambda GB-seconds"] == pytest.approx(13.3334)
    assert bill["Lambda invocations"] == pytest.approx(0.20)
    assert sum(bill.values()) == pytest.approx(13.5334)


# ---------------------------------------------------------------- DynamoDB


def test_item_size_is_the_same_in_typed_and_plain_form() -> None:
    plain = {"PK": "JOB#abc", "n": 12345, "ok": True, "m": {"a": "bc"}, "l": ["x", "yz"], "d": Decimal("7")}
    typed = {
        "PK": {"S": "JOB#abc"},
        "n": {"N": "12345"},
        "ok": {"BOOL": True},
        "m": {"M": {"a": {"S": "bc"}}},
        "l": {"L": [{"S": "x"}, {"S": "yz"}]},
        "d": {"N": "7"},
    }
    # names 2+1+2+1+1+1 = 8; values 7 + 4 + 1 + (3+1+2+1) + (3+1+1+1+2+1) + 2 = 29
    assert item_bytes(plain) == item_bytes(typed) == 37


def test_a_transactional_write_costs_two_units_per_item() -> None:
    params = {
        "TransactItems": [
            {
                "Update": {
                    "TableName": "t",
                    "Key": {"PK": "JOB#1", "SK": "SHARD#00000"},
                    "UpdateExpression": "SET a = :a",
                }
            },
            {"ConditionCheck": {"TableName": "t", "Key": {"PK": "JOB#1", "SK": "JOB"}, "ConditionExpression": "x"}},
            {"Put": {"TableName": "t", "Item": {"PK": "PBATCH#b", "SK": "OWNER", "job_id": "1"}}},
        ]
    }
    items = write_items("TransactWriteItems", params)
    assert [item.transactional for item in items] == [True, True, True]
    assert write_units(items, {}) == 6


def test_a_write_is_billed_per_kb_of_the_larger_of_request_and_table_item() -> None:
    big = {"PK": "JOB#1", "SK": "JOB", "blob": "x" * 1500}  # 1.5 KB: 2 units
    assert write_units(write_items("PutItem", {"Item": big}), {}) == 2
    # An update carries no item: it is billed on the item's size in the table (2.5 KB: 3 units).
    update = write_items("UpdateItem", {"Key": {"PK": {"S": "JOB#2"}, "SK": {"S": "JOB"}}})
    assert update == [WriteItem(("JOB#2", "JOB"), 0)]
    assert write_units(update, {("JOB#2", "JOB"): 2560}) == 3
    assert write_units(update, {}) == 1  # a small or unknown item: 1 unit
    batch = {"RequestItems": {"t": [{"PutRequest": {"Item": {"PK": str(i), "SK": "x"}}} for i in range(3)]}}
    assert write_units(write_items("BatchWriteItem", batch), {}) == 3


def test_reads_are_billed_per_4_kb_consistent_or_half_eventually() -> None:
    item = {"PK": "JOB#1", "SK": "JOB", "blob": "x" * 5000}  # about 5 KB: 2 units consistent
    assert read_units("GetItem", {"ConsistentRead": True}, {"Item": item}) == 2
    assert read_units("GetItem", {}, {"Item": item}) == 1
    assert read_units("GetItem", {"ConsistentRead": True}, {}) == 1  # nothing found: the minimum
    # An empty query of the open-batches index (eventually consistent): half a unit.
    assert read_units("Query", {"IndexName": "open-batches"}, {"Items": []}) == 0.5
    # A query rounds its total, not each item: 20 items of ~300 B are 2 units consistent.
    small = [{"PK": "JOB#1", "SK": f"SHARD#{i:05d}", "pad": "p" * 280} for i in range(20)]
    assert read_units("Query", {"ConsistentRead": True}, {"Items": small}) == 2


def test_batch_get_rounds_per_key_found_or_not() -> None:
    keys = [{"PK": f"JOB#{i}", "SK": "JOB"} for i in range(100)]
    found = [{"job_id": str(i)} for i in range(40)]
    answer = {"Responses": {"t": found}}
    assert read_units("BatchGetItem", {"RequestItems": {"t": {"Keys": keys}}}, answer) == 50
    consistent = {"RequestItems": {"t": {"Keys": keys, "ConsistentRead": True}}}
    assert read_units("BatchGetItem", consistent, answer) == 100


def test_a_million_write_and_read_units_cost_the_on_demand_price() -> None:
    bill = price(Consumption(dynamodb_write_units=1_000_000, dynamodb_read_units=1_000_000))
    assert bill["DynamoDB requests"] == pytest.approx(0.625 + 0.125)


# ---------------------------------------------------------------- S3


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("PutObject", "put"),
        ("CreateMultipartUpload", "put"),
        ("UploadPart", "put"),
        ("CompleteMultipartUpload", "put"),
        ("ListObjectVersions", "put"),
        ("ListMultipartUploads", "put"),
        ("GetObject", "get"),
        ("HeadObject", "get"),
        ("AbortMultipartUpload", "free"),
        ("DeleteObject", "free"),
    ],
)
def test_s3_requests_are_classed_as_billed(operation: str, kind: str) -> None:
    assert s3_request_class(operation) == kind


def test_s3_requests_and_storage_cost_the_list_price() -> None:
    bill = price(Consumption(s3_put_class=1000, s3_get_class=1000, s3_gb_months=gb_months(2 * 1024**3, MONTH_DAYS)))
    assert bill["S3 requests"] == pytest.approx(0.005 + 0.0004)
    assert bill["S3 storage"] == pytest.approx(2 * 0.023)


def test_storage_is_prorated_by_the_days_it_is_kept() -> None:
    assert gb_months(1024**3, 15) == pytest.approx(15 / MONTH_DAYS)


def test_the_templates_lifecycle_rules_say_how_long_each_prefix_is_kept() -> None:
    # Given template.yaml's bucket, its parameters at their defaults
    template = SamTemplate.load()
    resolver = IntrinsicResolver(
        template, template.parameter_values({"AnthropicSecretArn": SECRET_ARN}), lambda _id: LocalResource(ref="x")
    )
    bucket = next(iter(template.resources_of_type("AWS::S3::Bucket")))
    rules = resolver.resolve(template.properties(bucket))["LifecycleConfiguration"]["Rules"]
    work_days = float(template.parameters["WorkRetentionDays"]["Default"])
    # Then work/ expires after WorkRetentionDays, inbox/ and results/ are kept, noncurrent versions expire
    assert lifecycle_expiry_days(rules, "work/job/shard-00000.jsonl") == work_days
    assert lifecycle_expiry_days(rules, "inbox/a.jsonl") is None
    assert lifecycle_expiry_days(rules, "results/job/manifest.json") is None
    assert lifecycle_expiry_days(rules, "inbox/a.jsonl", current=False) == float(
        template.parameters["NoncurrentVersionRetentionDays"]["Default"]
    )


def test_the_earliest_enabled_rule_wins() -> None:
    rules = [
        {"Status": "Enabled", "Prefix": "work/", "ExpirationInDays": 30},
        {"Status": "Enabled", "Prefix": "work/tmp/", "ExpirationInDays": 1},
        {"Status": "Disabled", "Prefix": "", "ExpirationInDays": 0},
    ]
    assert lifecycle_expiry_days(rules, "work/tmp/x") == 1
    assert lifecycle_expiry_days(rules, "work/x") == 30
    assert lifecycle_expiry_days(rules, "other") is None


# ---------------------------------------------------------------- schedules and fixed costs


def test_a_rate_schedule_fires_so_many_times_in_a_730_hour_month() -> None:
    assert runs_per_month("rate(1 minute)") == 43_800
    assert runs_per_month("rate(15 minutes)") == 2_920
    assert runs_per_month("rate(2 hours)") == 365
    assert runs_per_month("rate(1 day)") == pytest.approx(30.4167, rel=1e-4)
    with pytest.raises(ValueError, match="rate"):
        runs_per_month("cron(0 3 * * ? *)")


def test_alarms_are_billed_per_metric_and_math_expressions_are_free() -> None:
    resources = {
        "Single": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"MetricName": "Errors"}},
        "Math": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {"Metrics": [{"Id": "a", "MetricStat": {}}, {"Id": "b", "MetricStat": {}}, {"Id": "e"}]},
        },
        "Queue": {"Type": "AWS::SQS::Queue"},
    }
    assert alarm_metrics(resources) == 3
    bill = price(Consumption(alarm_metric_months=3, metric_months=7, secret_months=1, secrets_calls=10_000))
    assert bill["CloudWatch metrics and alarms"] == pytest.approx(0.30 + 2.10)
    assert bill["Secrets Manager"] == pytest.approx(0.40 + 0.05)


def test_the_model_prices_idle_ticks_per_month_and_the_run_per_million_requests() -> None:
    # Given a run of 10,000 requests: submit 10 x 1 s, and idle ticks of 10 ms with one query
    run = PhaseCounts()
    run.durations["SubmitFunction"] = [1.0] * 10
    run.calls.update({("SubmitFunction", "s3", "PutObject"): 10, ("SubmitFunction", "s3", "GetObject"): 20})
    idle = PhaseCounts()
    idle.durations["CheckerFunction"] = [0.010] * 5
    idle.calls[("CheckerFunction", "dynamodb", "Query")] = 5
    idle.read_units = 2.5
    idle.metrics = {("CheckerFunction", "OpenBatches"), ("CheckerFunction", "JobsFinished")}
    measured = _measured(phases={"run": run, "idle": idle}, requests=10_000)

    # When it is modeled
    result = model(measured)

    # Then a million requests is 100 such runs: 1,000 GB-s, 1,000 PUTs, 2,000 GETs
    assert result.per_million.lambda_gb_seconds == pytest.approx(1000)
    assert result.per_million.lambda_invocations == pytest.approx(1000)
    assert result.per_million.s3_put_class == pytest.approx(1000)
    assert result.per_million.s3_get_class == pytest.approx(2000)
    # And a month of idle ticks at rate(1 minute) is 43,800 x 0.01 GB-s and 43,800 x 0.5 read units
    assert result.fixed_month.lambda_gb_seconds == pytest.approx(438)
    assert result.fixed_month.dynamodb_read_units == pytest.approx(21_900)
    assert result.fixed_month.scheduler_invocations == pytest.approx(43_800 + 2_920)  # ticks and sweeps
    assert result.fixed_month.metric_months == 2
    assert result.fixed_month.alarm_metric_months == 9


def test_waiting_ticks_are_priced_beyond_an_idle_tick() -> None:
    poll = PhaseCounts()
    poll.durations["CheckerFunction"] = [0.110] * 3
    idle = PhaseCounts()
    idle.durations["CheckerFunction"] = [0.010] * 5
    measured = _measured(phases={"poll": poll, "idle": idle}, requests=10_000)
    # 60 ticks of (0.110 - 0.010) s at 1 GB; the poll ticks themselves stay out of the run
    result = model(measured)
    assert result.waiting.lambda_gb_seconds == pytest.approx(6.0)
    assert result.waiting.lambda_invocations == 0
    assert result.run.lambda_gb_seconds == 0


def test_consumption_above_never_goes_below_zero() -> None:
    more, less = Consumption(lambda_gb_seconds=2, traces=1), Consumption(lambda_gb_seconds=1, traces=3)
    assert more.above(less) == Consumption(lambda_gb_seconds=1)


def test_phase_counts_add_lambdas_platform_log_lines() -> None:
    phase = PhaseCounts(log_bytes=700)
    phase.durations["CheckerFunction"] = [0.5, 0.5]
    usage = phase.consumption({"CheckerFunction": 2048}, {})
    assert usage.lambda_gb_seconds == pytest.approx(2.0)
    assert usage.logs_gb == pytest.approx((700 + 2 * 300) / 1024**3)
    assert usage.traces == 2


# ---------------------------------------------------------------- Anthropic


def test_the_batch_bill_is_half_the_standard_bill() -> None:
    usage = {"claude-haiku-4-5": Tokens(input=1_000_000, output=1_000_000)}
    assert anthropic_bill(usage, batch=False) == pytest.approx(6.00)
    assert anthropic_bill(usage, batch=True) == pytest.approx(3.00)


def test_cache_writes_and_reads_are_priced_on_the_input_price() -> None:
    usage = {"claude-sonnet-4-5": Tokens(cache_write_5m=1_000_000, cache_write_1h=1_000_000, cache_read=1_000_000)}
    # $3 input: 1.25 x 3 + 2 x 3 + 0.1 x 3 = 10.05 standard
    assert anthropic_bill(usage, batch=False) == pytest.approx(10.05)
    assert anthropic_bill(usage, batch=True) == pytest.approx(5.025)


def test_manifest_usage_puts_unattributed_cache_writes_at_5_minutes() -> None:
    figures = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 7,
        "cache_creation_5m": 20,
        "cache_creation_1h": 30,
    }
    assert Tokens.from_usage(figures) == Tokens(input=10, output=5, cache_write_5m=70, cache_write_1h=30, cache_read=7)
    assert Tokens(input=1) + Tokens(output=2) == Tokens(input=1, output=2)


def test_models_are_priced_by_their_longest_known_prefix() -> None:
    assert model_price("claude-haiku-4-5-20251001").input == 1.00
    assert model_price("claude-opus-4-1").output == 75.00
    assert model_price("claude-sonnet-4-5").input == model_price("claude-sonnet-4").input == 3.00
    with pytest.raises(KeyError, match="no price"):
        model_price("gpt-4")


def test_prices_are_the_documented_list_prices() -> None:
    assert AWS.lambda_gb_second == 0.0000133334
    assert AWS.dynamodb_write_unit * 1_000_000 == pytest.approx(0.625)
    assert AWS.dynamodb_read_unit * 1_000_000 == pytest.approx(0.125)
    assert AWS.s3_put_class_request * 1000 == pytest.approx(0.005)
    assert AWS.s3_get_class_request * 1000 == pytest.approx(0.0004)


# ---------------------------------------------------------------- helpers


def _measured(*, phases: dict[str, PhaseCounts], requests: int) -> Measured:
    return Measured(
        files=10,
        requests_per_file=requests // 10,
        requests=requests,
        input_bytes=0,
        batches=10,
        statuses=Counter(COMPLETED=10),
        memory_mb={"SubmitFunction": 1024, "CheckerFunction": 1024},
        checker="CheckerFunction",
        phases=phases,
        table_items=0,
        table_bytes=0,
        item_sizes={},
        storage={},
        expiry_days={},
        noncurrent_days=30.0,
        transfer_out_bytes=0,
        usage_by_model={},
        manifest_batch_usd=0.0,
        checker_rate="rate(1 minute)",
        sweeper_rate="rate(15 minutes)",
        alarm_metrics=9,
        anthropic_calls={},
        seconds=0.0,
    )
