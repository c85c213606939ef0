"""template.yaml as a specification: the storage, trigger, failure-handling and IAM properties
the pipeline's guarantees rely on, read from the template itself, never restated."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# Lambda runs these triggers asynchronously: a failure must land somewhere.
ASYNC_EVENT_TYPES = {"S3", "SNS", "ScheduleV2", "Schedule", "EventBridgeRule", "CloudWatchEvent"}
# Prefixes whose new objects trigger work (a new job, a cancel request); everything the
# functions write lies elsewhere.
TRIGGER_PREFIXES = {"inbox/", "cancel/", "approve/"}
WRITTEN_PREFIXES = ("work/", "errors/", "results/")
# The secret the functions read: the one given, or the one the stack makes when none is.
SECRET_PARAMETER = {"Fn::If": ["CreateSecret", {"Ref": "AnthropicSecret"}, {"Ref": "AnthropicSecretArn"}]}
OPERATOR_OUTPUTS = {
    "BucketName",
    "TableName",
    "EventBusName",
    "SubmitFunctionName",
    "CheckerFunctionName",
    "CheckerScheduleName",
    "SweeperScheduleName",
    "SubmitFailureQueueUrl",
    "CheckerFailureQueueUrl",
    "CheckerScheduleDeadLetterQueueUrl",
    "SweeperScheduleDeadLetterQueueUrl",
    "MetricsNamespace",
}
FOURTEEN_DAYS = 14 * 24 * 3600
# What the sweeper's schedule sends SubmitFunction (the handler's contract).
SWEEP_PAYLOAD = {
    "source": "batchdrop.sweeper",
    "scheduled_time": "<aws.scheduler.scheduled-time>",
    "execution_id": "<aws.scheduler.execution-id>",
}
# AlarmTopicArn when given, and the topic the stack makes for AlarmEmail when that is given.
ALARM_TOPIC_ACTIONS = [
    {"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AWS::NoValue"}]},
    {"Fn::If": ["HasAlarmEmail", {"Ref": "AlarmEmailTopic"}, {"Ref": "AWS::NoValue"}]},
]


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not errors, errors
    return decoded


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: resource for name, resource in template["Resources"].items() if resource["Type"] == resource_type}


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


def props(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Resources"][name]["Properties"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_documents(function: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The function's inline policy documents, both branches of a conditional one included."""
    for policy in as_list(function["Properties"].get("Policies", [])):
        if isinstance(policy, dict) and "Fn::If" in policy:
            yield from (branch for branch in policy["Fn::If"][1:] if isinstance(branch, dict) and "Statement" in branch)
        elif isinstance(policy, dict) and "Statement" in policy:
            yield policy


def statements(function: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in policy_documents(function):
        yield from as_list(policy["Statement"])


def actions(statement: dict[str, Any]) -> list[str]:
    return as_list(statement["Action"])


def resource_text(resource: Any) -> str:
    """A resource as comparable text: the pattern of an Fn::Sub, or its JSON otherwise."""
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return resource if isinstance(resource, str) else json.dumps(resource, sort_keys=True)


def s3_object_patterns(function: dict[str, Any], action: str) -> set[str]:
    """The object-key patterns (after the bucket name) on which `function` may do `action`."""
    patterns = set()
    for statement in statements(function):
        if statement["Effect"] == "Allow" and action in actions(statement):
            for resource in as_list(statement["Resource"]):
                _, _, key = resource_text(resource).partition("}/")
                patterns.add(key)
    return patterns


def listable_prefixes(function: dict[str, Any], action: str) -> set[str]:
    """The `s3:prefix` patterns under which `function` may do a bucket-level list `action`;
    "<any>" when a grant has no prefix condition."""
    prefixes = set()
    for statement in statements(function):
        if statement["Effect"] == "Allow" and action in actions(statement):
            condition = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
            prefixes |= set(as_list(condition)) if condition else {"<any>"}
    return prefixes


def may_list(function: dict[str, Any], action: str, prefix: str) -> bool:
    """Whether a list request with `Prefix=prefix` matches one of the grants' StringLike patterns."""
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in listable_prefixes(function, action))


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: alarm["Properties"] for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items()}


def metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or each MetricStat of its metric math."""
    if "MetricName" in alarm:
        return [{key: alarm.get(key) for key in ("Namespace", "MetricName", "Dimensions")}]
    return [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]


def service_name(template: dict[str, Any], function_name: str) -> str:
    return str(environment(template, template["Resources"][function_name])["POWERTOOLS_SERVICE_NAME"])


def environment(template: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    variables.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    return variables


def failure_queues(template: dict[str, Any]) -> set[str]:
    """Logical ids of every queue that receives failed async invocations or schedule ticks."""
    queues = set()
    for function in functions(template).values():
        config = function["Properties"].get("EventInvokeConfig", {})
        on_failure = config.get("DestinationConfig", {}).get("OnFailure")
        if on_failure:
            queues.add(on_failure["Destination"]["Fn::GetAtt"][0])
        for event in function["Properties"].get("Events", {}).values():
            dead_letter = event["Properties"].get("DeadLetterConfig")
            if dead_letter:
                queues.add(dead_letter["Arn"]["Fn::GetAtt"][0])
    return queues


def references(node: Any) -> Iterator[str]:
    """Every logical id that `node` points at through Ref, GetAtt or ${...} in a Sub."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                yield value
            elif key == "Fn::GetAtt":
                yield value[0] if isinstance(value, list) else value.split(".")[0]
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                yield from (name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text))
                if not isinstance(value, str):
                    yield from references(value[1])
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


# ---------------------------------------------------------------- bucket


def test_template_decodes_with_the_serverless_transform(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


def test_bucket_is_versioned_so_each_upload_is_its_own_job(template: dict[str, Any]) -> None:
    assert props(template, "Bucket")["VersioningConfiguration"] == {"Status": "Enabled"}


def test_bucket_blocks_every_kind_of_public_access(template: dict[str, Any]) -> None:
    bucket = props(template, "Bucket")

    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


def test_bucket_encrypts_at_rest(template: dict[str, Any]) -> None:
    rules = props(template, "Bucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]

    # SSE-S3, or SSE-KMS when KmsKeyArn is set: both branches of the condition.
    algorithms = {
        algorithm
        for rule in rules
        for choice in [rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]]
        for algorithm in (choice["Fn::If"][1:] if isinstance(choice, dict) else [choice])
    }
    assert algorithms <= {"AES256", "aws:kms", "aws:kms:dsse"}
    assert algorithms


def test_bucket_policy_denies_requests_without_tls_1_2(template: dict[str, Any]) -> None:
    (policy,) = (
        p["Properties"]
        for p in resources_of_type(template, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": "Bucket"}
    )
    denies = [s for s in policy["PolicyDocument"]["Statement"] if s.get("Effect") == "Deny"]

    def denied_when(operator: str, key: str) -> list[dict[str, Any]]:
        return [s for s in denies if key in s.get("Condition", {}).get(operator, {})]

    insecure = denied_when("Bool", "aws:SecureTransport")
    old_tls = denied_when("NumericLessThan", "s3:TlsVersion")
    assert insecure
    assert old_tls
    for statement in insecure + old_tls:
        assert statement["Principal"] == "*"
        assert statement["Action"] == "s3:*"
        assert {resource_text(r) for r in statement["Resource"]} == {
            resource_text({"Fn::GetAtt": ["Bucket", "Arn"]}),
            "${Bucket.Arn}/*",
        }
    assert str(insecure[0]["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
    assert str(old_tls[0]["Condition"]["NumericLessThan"]["s3:TlsVersion"]) == "1.2"


# --- the bucket's writers ------------------------------------------------------------------

PIPELINE_PREFIXES = ("work/", "results/", "errors/", "pipelines/", "history/")


def bucket_policy_statements(template: dict[str, Any]) -> list[Any]:
    (policy,) = resources_of_type(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "Bucket"}
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def statement_by_sid(template: dict[str, Any], sid: str) -> tuple[str | None, dict[str, Any]]:
    """A bucket policy statement and the condition it is included under (None: always)."""
    found = []
    for statement in bucket_policy_statements(template):
        if "Fn::If" in statement:
            condition, included, excluded = statement["Fn::If"]
            assert excluded == {"Ref": "AWS::NoValue"}
            found.append((condition, included))
        else:
            found.append((None, statement))
    (match,) = [(condition, statement) for condition, statement in found if statement.get("Sid") == sid]
    return match


def test_bucket_policy_lets_only_our_functions_and_the_admin_role_write_the_pipeline_prefixes(
    template: dict[str, Any],
) -> None:
    condition, deny = statement_by_sid(template, "DenyPipelineWritesButOurFunctions")

    # Denied, always: writing and deleting (any version) under every prefix the pipeline keeps
    assert condition is None
    assert (deny["Effect"], deny["Principal"]) == ("Deny", "*")
    assert set(actions(deny)) == {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"}
    assert {resource_text(r) for r in deny["Resource"]} == {f"${{Bucket.Arn}}/{p}*" for p in PIPELINE_PREFIXES}
    # ...to every principal but the functions' roles, and the admin role when one is given
    assert list(deny["Condition"]) == ["ArnNotEquals"]
    assert list(deny["Condition"]["ArnNotEquals"]) == ["aws:PrincipalArn"]
    if_admin, with_admin, without_admin = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]["Fn::If"]
    roles = [{"Fn::GetAtt": [f"{name}Role", "Arn"]} for name in functions(template)]
    assert sorted(map(json.dumps, without_admin)) == sorted(map(json.dumps, roles))
    assert sorted(map(json.dumps, with_admin)) == sorted(map(json.dumps, [*roles, {"Ref": "AdminRoleArn"}]))
    assert template["Conditions"][if_admin] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AdminRoleArn"}, ""]}]}
    admin = template["Parameters"]["AdminRoleArn"]
    assert admin["Default"] == ""
    assert re.fullmatch(admin["AllowedPattern"], "arn:aws:iam::123456789012:role/ops/batchdrop-admin")
    assert not re.fullmatch(admin["AllowedPattern"], "arn:aws:iam::123456789012:user/someone")
    assert not re.fullmatch(admin["AllowedPattern"], "*")
    # Every object prefix a function writes, outside the triggers, is one the deny covers
    for function in functions(template).values():
        for pattern in s3_object_patterns(function, "s3:PutObject"):
            assert pattern.startswith(PIPELINE_PREFIXES), pattern


def test_upstream_writers_may_put_inbox_and_cancel_and_get_results_and_errors_only(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["UpstreamWriterPrincipals"]
    assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", "")
    empty = {"Fn::Equals": [{"Fn::Join": [",", {"Ref": "UpstreamWriterPrincipals"}]}, ""]}
    assert template["Conditions"]["HasUpstreamWriters"] == {"Fn::Not": [empty]}

    put_condition, put = statement_by_sid(template, "UpstreamWritersPutInboxAndCancel")
    get_condition, get = statement_by_sid(template, "UpstreamWritersGetResultsAndErrors")

    # Both only when principals are given, both naming exactly them
    assert put_condition == get_condition == "HasUpstreamWriters"
    for statement in (put, get):
        assert statement["Effect"] == "Allow"
        assert statement["Principal"] == {"AWS": {"Ref": "UpstreamWriterPrincipals"}}
        assert "Condition" not in statement
    assert actions(put) == ["s3:PutObject"]
    assert {resource_text(r) for r in put["Resource"]} == {"${Bucket.Arn}/inbox/*", "${Bucket.Arn}/cancel/*"}
    assert actions(get) == ["s3:GetObject"]
    assert {resource_text(r) for r in get["Resource"]} == {"${Bucket.Arn}/results/*", "${Bucket.Arn}/errors/*"}
    # ...and no other statement of the bucket policy names them or allows anything
    others = [s for s in bucket_policy_statements(template) if "Fn::If" not in s]
    assert "UpstreamWriterPrincipals" not in json.dumps(others)
    assert {s["Effect"] for s in others} == {"Deny"}


def test_lifecycle_cleans_up_uploads_versions_and_shards(template: dict[str, Any]) -> None:
    rules = props(template, "Bucket")["LifecycleConfiguration"]["Rules"]
    enabled = [rule for rule in rules if rule["Status"] == "Enabled"]

    assert any("AbortIncompleteMultipartUpload" in rule for rule in enabled)
    assert any("NoncurrentVersionExpiration" in rule for rule in enabled)
    (work,) = (rule for rule in enabled if rule.get("Prefix") == "work/")
    assert work["ExpirationInDays"] == {"Ref": "WorkRetentionDays"}
    (cancel,) = (rule for rule in enabled if rule.get("Prefix") == "cancel/")
    assert cancel["ExpirationInDays"] >= 1


def test_only_inbox_cancel_and_approve_objects_trigger_work(template: dict[str, Any]) -> None:
    s3_events = {
        (function_name, event_name): event["Properties"]
        for function_name, function in functions(template).items()
        for event_name, event in function["Properties"].get("Events", {}).items()
        if event["Type"] == "S3"
    }

    prefixes = []
    for event in s3_events.values():
        assert event["Bucket"] == {"Ref": "Bucket"}
        assert all(e.startswith("s3:ObjectCreated:") for e in as_list(event["Events"]))
        rules = event["Filter"]["S3Key"]["Rules"]
        assert [rule["Name"] for rule in rules] == ["prefix"]
        prefixes.append(rules[0]["Value"])
    assert set(prefixes) == TRIGGER_PREFIXES
    assert len(prefixes) == len(set(prefixes)), "one event per prefix"
    # S3 rejects overlapping filters for one event type on one bucket.
    assert not any(a != b and a.startswith(b) for a in prefixes for b in prefixes)
    assert not any(p.startswith(WRITTEN_PREFIXES) for p in prefixes)
    assert {function_name for function_name, _ in s3_events} == {"SubmitFunction"}
    # SAM writes the notification from the events above; nothing else may add one.
    assert "NotificationConfiguration" not in props(template, "Bucket")


def test_functions_name_the_bucket_without_depending_on_it(template: dict[str, Any]) -> None:
    # SubmitFunction's S3 event makes the bucket depend on the function; a function that
    # referenced the bucket would close a cycle (aws/serverless-application-model#1109).
    bucket_name = props(template, "Bucket")["BucketName"]
    stack_uuid = bucket_name["Fn::Join"][1][1]

    for function in functions(template).values():
        body = {k: v for k, v in function["Properties"].items() if k != "Events"}
        assert "Bucket" not in set(references(body))
        assert "Bucket" not in set(references(environment(template, function)))
        assert environment(template, function)["BATCHDROP_BUCKET"] == bucket_name
        for statement in statements(function):
            for resource in as_list(statement["Resource"]):
                if resource_text(resource).startswith("arn:${AWS::Partition}:s3:::"):
                    assert resource["Fn::Sub"][1] == {"StackUuid": stack_uuid}


# ---------------------------------------------------------------- table


def test_table_keys_and_sparse_open_batches_index(template: dict[str, Any]) -> None:
    table = props(template, "Table")

    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types == {"PK": "S", "SK": "S", "GSI1PK": "S", "GSI1SK": "S"}
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "open-batches"
    assert index["KeySchema"] == [
        {"AttributeName": "GSI1PK", "KeyType": "HASH"},
        {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
    ]


def test_table_has_pitr_encryption_and_ttl(template: dict[str, Any]) -> None:
    table = props(template, "Table")

    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["TimeToLiveSpecification"]["Enabled"] is True
    assert table["TimeToLiveSpecification"]["AttributeName"]


def test_stateful_resources_survive_stack_deletion_and_replacement(
    template: dict[str, Any],
) -> None:
    stateful = resources_of_type(template, "AWS::S3::Bucket") | resources_of_type(template, "AWS::DynamoDB::Table")

    assert set(stateful) == {"Bucket", "Table"}
    for resource in stateful.values():
        assert resource["DeletionPolicy"] == "Retain"
        assert resource["UpdateReplacePolicy"] == "Retain"


# ---------------------------------------------------------------- failures go somewhere


def test_every_async_trigger_has_an_on_failure_destination(template: dict[str, Any]) -> None:
    queues = resources_of_type(template, "AWS::SQS::Queue")
    triggered = {
        name: function
        for name, function in functions(template).items()
        if any(e["Type"] in ASYNC_EVENT_TYPES for e in function["Properties"]["Events"].values())
    }

    assert set(triggered) == {"SubmitFunction", "CheckerFunction"}
    for function in triggered.values():
        config = function["Properties"]["EventInvokeConfig"]
        on_failure = config["DestinationConfig"]["OnFailure"]
        assert on_failure["Type"] == "SQS"
        assert on_failure["Destination"]["Fn::GetAtt"][0] in queues
        assert 0 <= config["MaximumRetryAttempts"] <= 2


def test_every_schedule_has_a_retry_policy_and_a_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    queues = resources_of_type(template, "AWS::SQS::Queue")
    schedules = [
        event["Properties"]
        for function in functions(template).values()
        for event in function["Properties"]["Events"].values()
        if event["Type"] in {"ScheduleV2", "Schedule"}
    ]

    assert schedules
    for schedule in schedules:
        assert schedule["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] in queues
        assert {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(schedule["RetryPolicy"])


def test_failure_queues_are_encrypted_and_keep_messages_14_days(
    template: dict[str, Any],
) -> None:
    queues = resources_of_type(template, "AWS::SQS::Queue")

    assert failure_queues(template) == set(queues)
    for queue in queues.values():
        properties = queue["Properties"]
        assert properties.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in properties
        assert properties["MessageRetentionPeriod"] == FOURTEEN_DAYS
        assert "FifoQueue" not in properties  # Lambda destinations reject FIFO queues


def test_every_failure_queue_and_function_has_an_alarm(template: dict[str, Any]) -> None:
    aws_alarms = [alarm for alarm in alarms(template).values() if alarm.get("Namespace") in ("AWS/SQS", "AWS/Lambda")]

    def watched(namespace: str) -> set[str]:
        return {
            next(references(dimension["Value"]))
            for alarm in aws_alarms
            if alarm["Namespace"] == namespace
            for dimension in alarm["Dimensions"]
        }

    assert watched("AWS/SQS") == failure_queues(template)
    assert watched("AWS/Lambda") == set(functions(template))
    for alarm in aws_alarms:
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Threshold"] == 0


def test_every_alarm_notifies_the_optional_topic_and_ignores_missing_data(template: dict[str, Any]) -> None:
    for name, alarm in alarms(template).items():
        assert alarm["AlarmActions"] == ALARM_TOPIC_ACTIONS, name
        assert alarm["OKActions"] == ALARM_TOPIC_ACTIONS, name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["AlarmDescription"].strip(), name


def test_the_sweeper_schedule_has_its_own_dead_letter_queue_and_alarm(template: dict[str, Any]) -> None:
    def dead_letter_queue(function_name: str, event_name: str) -> str:
        event = props(template, function_name)["Events"][event_name]
        return str(event["Properties"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0])

    sweep = dead_letter_queue("SubmitFunction", "Sweep")
    tick = dead_letter_queue("CheckerFunction", "Tick")
    watched_queues = {
        next(references(dimension["Value"])): name
        for name, alarm in alarms(template).items()
        if alarm.get("Namespace") == "AWS/SQS"
        for dimension in alarm["Dimensions"]
    }

    assert sweep == "SweeperScheduleDeadLetterQueue"
    assert sweep != tick
    assert template["Resources"][sweep]["Type"] == "AWS::SQS::Queue"
    assert props(template, sweep)["SqsManagedSseEnabled"] is True
    alarm = alarms(template)[watched_queues[sweep]]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Period"] <= 300
    assert alarm["EvaluationPeriods"] == 1


# ---------------------------------------------------------------- batchdrop's own metrics


def test_duplicate_batch_alarm_sums_both_functions_duplicates_over_five_minutes(template: dict[str, Any]) -> None:
    alarm = alarms(template)["DuplicateBatchAlarm"]
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]

    stats = {query["Id"]: query["MetricStat"] for query in alarm["Metrics"] if "MetricStat" in query}
    (expression,) = (query for query in alarm["Metrics"] if "Expression" in query)
    assert {stat["Metric"]["MetricName"] for stat in stats.values()} == {"DuplicateBatches"}
    assert all(stat["Metric"]["Namespace"] == namespace for stat in stats.values())
    services = sorted(
        dimension["Value"]
        for stat in stats.values()
        for dimension in stat["Metric"]["Dimensions"]
        if dimension["Name"] == "service"
    )
    assert services == sorted([service_name(template, "SubmitFunction"), service_name(template, "CheckerFunction")])
    assert all(stat["Stat"] == "Sum" and stat["Period"] == 300 for stat in stats.values())
    assert [q["Id"] for q in alarm["Metrics"] if q.get("ReturnData", True)] == [expression["Id"]]
    assert set(re.findall(r"[a-z_][a-zA-Z0-9_]*", expression["Expression"])) >= set(stats)
    assert "+" in expression["Expression"] or expression["Expression"].startswith("SUM(")
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_a_refused_key_alarms_within_two_minutes_from_either_function(template: dict[str, Any]) -> None:
    alarm = alarms(template)["ApiKeyRefusedAlarm"]

    stats = {query["Id"]: query["MetricStat"] for query in alarm["Metrics"] if "MetricStat" in query}
    (expression,) = (query for query in alarm["Metrics"] if "Expression" in query)
    assert {stat["Metric"]["MetricName"] for stat in stats.values()} == {"ApiKeyRefused"}
    services = sorted(stat["Metric"]["Dimensions"][0]["Value"] for stat in stats.values())
    assert services == sorted([service_name(template, "SubmitFunction"), service_name(template, "CheckerFunction")])
    assert all(stat["Stat"] == "Sum" for stat in stats.values())
    # One refusal in one period of a minute: the alarm is raised within about two minutes.
    assert all(stat["Period"] == 60 for stat in stats.values())
    assert [q["Id"] for q in alarm["Metrics"] if q.get("ReturnData", True)] == [expression["Id"]]
    assert expression["Expression"] == "FILL(submit, 0) + FILL(checker, 0)"
    assert set(stats) == {"submit", "checker"}
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_the_secret_the_stack_makes_is_readable_by_the_two_functions_only(template: dict[str, Any]) -> None:
    secret = template["Resources"]["AnthropicSecret"]
    guard = template["Resources"]["AnthropicSecretPolicy"]
    assert template["Conditions"]["CreateSecret"] == {"Fn::Equals": [{"Ref": "AnthropicSecretArn"}, ""]}
    assert secret["Condition"] == guard["Condition"] == "CreateSecret"
    assert "SecretString" not in secret["Properties"]  # the key never enters the template
    assert "GenerateSecretString" not in secret["Properties"]

    policy = guard["Properties"]
    assert policy["SecretId"] == {"Ref": "AnthropicSecret"}
    assert policy["BlockPublicPolicy"] is True
    (statement,) = policy["ResourcePolicy"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == "*"
    (operator,) = statement["Condition"]
    assert operator == "StringNotEquals"
    (key, allowed) = next(iter(statement["Condition"][operator].items()))
    assert key == "aws:PrincipalArn"
    roles = [{"Fn::GetAtt": [f"{name}Role", "Arn"]} for name in sorted(functions(template))]
    assert sorted(allowed, key=json.dumps) == roles
    # The implicit roles SAM makes for the functions are those the functions run as.
    assert all("Role" not in function["Properties"] for function in functions(template).values())
    output = template["Outputs"]["AnthropicSecretArn"]["Value"]
    assert output == SECRET_PARAMETER


def test_batch_past_expiry_alarm_fires_on_one_batch_reported_by_the_checker(template: dict[str, Any]) -> None:
    alarm = alarms(template)["BatchPastExpiryAlarm"]
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]

    assert alarm["Namespace"] == namespace
    assert alarm["MetricName"] == "BatchesPastExpiry"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service_name(template, "CheckerFunction")}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["Period"] == 300
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_a_job_the_sweep_gives_up_on_raises_an_alarm(template: dict[str, Any]) -> None:
    alarm = alarms(template)["StuckJobsFailedAlarm"]

    assert alarm["MetricName"] == "StuckJobsFailed"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": service_name(template, "SubmitFunction")}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # The sweep that emits it runs every 15 minutes by default: one period holds one sweep.
    assert alarm["Period"] == 900
    # The handler emits the metric under this name.
    assert 'add_metric("StuckJobsFailed"' in (ROOT / "functions" / "submit" / "app.py").read_text()


def test_own_metric_alarms_read_the_namespace_and_service_the_functions_emit(template: dict[str, Any]) -> None:
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    services = {service_name(template, name) for name in functions(template)}

    own = [metric for alarm in alarms(template).values() for metric in metric_stats(alarm)]
    own = [metric for metric in own if not str(metric["Namespace"]).startswith("AWS/")]

    assert {metric["MetricName"] for metric in own} == {
        "DuplicateBatches",
        "BatchesPastExpiry",
        "ApiKeyRefused",
        "StuckJobsFailed",
        "JobCostUsd",
    }
    for metric in own:
        assert metric["Namespace"] == namespace
        # Powertools adds exactly one dimension, `service`; an alarm must name the same set.
        assert [dimension["Name"] for dimension in metric["Dimensions"]] == ["service"]
        assert metric["Dimensions"][0]["Value"] in services


# ---------------------------------------------------------------- checker


def test_checker_runs_one_tick_at_a_time_and_drops_stale_ticks(
    template: dict[str, Any],
) -> None:
    checker = props(template, "CheckerFunction")

    assert checker["ReservedConcurrentExecutions"] == 1
    assert checker["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    assert 60 <= checker["EventInvokeConfig"]["MaximumEventAgeInSeconds"] <= 300


def test_checker_is_scheduled_by_eventbridge_scheduler_at_the_rate_parameter(
    template: dict[str, Any],
) -> None:
    (tick,) = props(template, "CheckerFunction")["Events"].values()
    rate = template["Parameters"]["CheckerRate"]

    assert tick["Type"] == "ScheduleV2"
    assert tick["Properties"]["ScheduleExpression"] == {"Ref": "CheckerRate"}
    assert re.fullmatch(rate["AllowedPattern"], rate["Default"])
    assert json.loads(tick["Properties"]["Input"])["source"] == "batchdrop.scheduler"


# ---------------------------------------------------------------- sweeper


def test_sweeper_runs_submit_on_its_own_rate_with_the_sweep_payload(template: dict[str, Any]) -> None:
    events = props(template, "SubmitFunction")["Events"]
    sweep = events["Sweep"]
    (tick,) = props(template, "CheckerFunction")["Events"].values()
    rate = template["Parameters"]["SweeperRate"]

    assert sweep["Type"] == "ScheduleV2"
    assert [name for name, event in events.items() if event["Type"] in {"ScheduleV2", "Schedule"}] == ["Sweep"]
    assert sweep["Properties"]["ScheduleExpression"] == {"Ref": "SweeperRate"}
    assert rate["Default"] == "rate(15 minutes)"
    assert re.fullmatch(rate["AllowedPattern"], rate["Default"])
    assert re.fullmatch(rate["AllowedPattern"], "rate(1 day)")
    assert not re.fullmatch(rate["AllowedPattern"], "every 15 minutes")
    assert json.loads(sweep["Properties"]["Input"]) == SWEEP_PAYLOAD
    # One switch pauses both schedules; names never collide across stacks.
    assert sweep["Properties"]["State"] == tick["Properties"]["State"] == {"Ref": "CheckerScheduleState"}
    assert sweep["Properties"]["OmitName"] is True
    retry = sweep["Properties"]["RetryPolicy"]
    assert 0 <= retry["MaximumRetryAttempts"] <= 2
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 900


def test_a_failed_sweep_goes_where_a_failed_upload_goes(template: dict[str, Any]) -> None:
    # SubmitFunction's one EventInvokeConfig covers S3 events and sweeps alike.
    config = props(template, "SubmitFunction")["EventInvokeConfig"]

    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["SubmitFailureQueue", "Arn"]}


# ---------------------------------------------------------------- secret and IAM


def test_no_environment_variable_carries_an_api_key(template: dict[str, Any]) -> None:
    for function in functions(template).values():
        variables = environment(template, function)
        for name, value in variables.items():
            text = json.dumps(value)
            assert "API_KEY" not in name.upper()
            assert "API_KEY" not in text.upper()
            assert "{{resolve:" not in text  # a dynamic reference would put the key in config
        assert variables["ANTHROPIC_SECRET_ARN"] == SECRET_PARAMETER


def test_secret_parameter_accepts_only_a_secret_arn(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["AnthropicSecretArn"]
    pattern = parameter["AllowedPattern"]

    assert "Default" not in parameter
    assert re.fullmatch(pattern, "arn:aws:secretsmanager:us-east-1:123456789012:secret:batchdrop/anthropic-AbCdEf")
    assert re.fullmatch(pattern, "")  # the stack makes the secret
    assert not re.fullmatch(pattern, "sk-ant-api03-not-a-secret-arn")


def test_secret_access_is_scoped_to_the_parameter(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        grants = [
            statement
            for statement in statements(function)
            if any(a.startswith("secretsmanager:") for a in actions(statement))
        ]

        assert grants, name
        for statement in grants:
            assert actions(statement) == ["secretsmanager:GetSecretValue"]
            assert as_list(statement["Resource"]) == [SECRET_PARAMETER]
        policy_templates = [
            p for p in as_list(function["Properties"]["Policies"]) if "Statement" not in p and "Fn::If" not in p
        ]
        assert not policy_templates, f"{name}: use scoped statements, not SAM policy templates"


def test_policies_grant_no_wildcard_actions_scans_or_acl_writes(template: dict[str, Any]) -> None:
    forbidden = {"s3:PutObjectAcl", "s3:DeleteObject", "dynamodb:Scan", "s3:PutLifecycleConfiguration"}
    for function in functions(template).values():
        for statement in statements(function):
            assert statement["Effect"] == "Allow"
            for action in actions(statement):
                assert "*" not in action
                assert action not in forbidden
            assert "*" not in as_list(statement["Resource"])


def test_s3_object_access_is_scoped_to_each_functions_prefixes(template: dict[str, Any]) -> None:
    submit = template["Resources"]["SubmitFunction"]
    checker = template["Resources"]["CheckerFunction"]

    # pipelines/: records mode's pipelines, read by version; history/: the output a pipeline's
    # last job used, which a job's estimate expects
    assert s3_object_patterns(submit, "s3:GetObject") == {"inbox/*", "work/*", "pipelines/*", "history/*"}
    assert s3_object_patterns(submit, "s3:GetObjectVersion") == {"inbox/*", "work/*", "pipelines/*"}
    assert s3_object_patterns(submit, "s3:PutObject") == {
        "work/*",
        "errors/*",
        "results/*/manifest.json",
    }
    # errors/ and pipelines/: a records-mode job's rejected records and its pipeline version, for its outputs.
    assert s3_object_patterns(checker, "s3:GetObject") == {"work/*", "results/*", "errors/*", "pipelines/*"}
    # Retry bodies go to work/<job_id>/..., result parts and manifests to results/, a
    # pipeline's output history to history/.
    assert s3_object_patterns(checker, "s3:PutObject") == {"work/*", "results/*", "history/*"}
    for function in (submit, checker):
        # A Lambda killed mid-upload must be able to abort what it started.
        assert s3_object_patterns(function, "s3:AbortMultipartUpload") == s3_object_patterns(function, "s3:PutObject")


def test_submit_may_list_inbox_versions_for_the_sweeper_and_nothing_else(template: dict[str, Any]) -> None:
    submit = template["Resources"]["SubmitFunction"]

    assert listable_prefixes(submit, "s3:ListBucketVersions") == {"inbox/*"}
    # The sweeper's ListObjectVersions(Prefix="inbox/") matches the grant.
    assert may_list(submit, "s3:ListBucketVersions", "inbox/")
    assert may_list(submit, "s3:ListBucket", "inbox/")
    assert not may_list(submit, "s3:ListBucketVersions", "results/")
    # history/: a pipeline with no finished job yet has no history, which must read as 404
    assert listable_prefixes(submit, "s3:ListBucket") == {"inbox/*", "work/*", "errors/*", "pipelines/*", "history/*"}
    # A cancel request is its key: nothing under cancel/ is read or listed.
    for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"):
        assert not any(p.startswith("cancel/") for p in s3_object_patterns(submit, action))
    assert not may_list(submit, "s3:ListBucket", "cancel/")


def test_checker_can_neither_list_nor_read_inbox(template: dict[str, Any]) -> None:
    checker = template["Resources"]["CheckerFunction"]

    assert listable_prefixes(checker, "s3:ListBucketVersions") == set()
    assert listable_prefixes(checker, "s3:ListBucket") == {"work/*", "results/*"}
    assert not may_list(checker, "s3:ListBucket", "inbox/")
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        assert not any(p.startswith(("inbox/", "cancel/")) for p in s3_object_patterns(checker, action))


def test_only_the_checker_queries_the_open_batches_index(template: dict[str, Any]) -> None:
    def table_resources(name: str) -> set[str]:
        return {
            resource_text(resource)
            for statement in statements(template["Resources"][name])
            if any(a.startswith("dynamodb:") for a in actions(statement))
            for resource in as_list(statement["Resource"])
        }

    table_arn = resource_text({"Fn::GetAtt": ["Table", "Arn"]})
    assert table_resources("SubmitFunction") == {table_arn}
    assert table_resources("CheckerFunction") == {table_arn, "${Table.Arn}/index/open-batches"}


# ---------------------------------------------------------------- functions, layer, logs


def test_submit_function_has_a_full_vcpu_for_validating_shards(template: dict[str, Any]) -> None:
    # Lambda gives one vCPU at 1,769 MB; below, the CPU-bound validation runs on a fraction of one.
    assert props(template, "SubmitFunction")["MemorySize"] >= 1769


def test_globals_set_runtime_tracing_and_shared_configuration(template: dict[str, Any]) -> None:
    globals_ = template["Globals"]["Function"]
    variables = globals_["Environment"]["Variables"]

    assert globals_["Runtime"] == "python3.12"
    assert globals_["Architectures"] in (["arm64"], ["x86_64"])
    assert globals_["Tracing"] == "Active"
    assert globals_["Timeout"] <= 900
    assert globals_["MemorySize"] >= 128
    assert {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        "LOG_LEVEL",
        "BATCHDROP_BUCKET",
        "BATCHDROP_TABLE",
        "BATCHDROP_EVENT_BUS",
        "ANTHROPIC_SECRET_ARN",
    } <= set(variables)


def test_functions_use_their_code_dirs_and_the_common_layer(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CommonLayer"]

    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == "layers/common"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    for name, code in (("SubmitFunction", "functions/submit"), ("CheckerFunction", "functions/checker")):
        function = props(template, name)
        assert function["CodeUri"] == code
        assert function["Handler"] == "app.lambda_handler"
        assert function["Layers"] == [{"Ref": "CommonLayer"}]


def test_layer_pins_the_versions_the_tests_run(template: dict[str, Any]) -> None:
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            requirement = line.split("#", 1)[0].strip()
            if requirement:
                name, _, version = requirement.partition("==")
                found[re.sub(r"\[.*\]", "", name).lower()] = version
        return found

    layer = pins(ROOT / template["Resources"]["CommonLayer"]["Properties"]["ContentUri"] / "requirements.in")
    dev = pins(ROOT / "requirements" / "dev.in")

    assert {"anthropic", "aws-lambda-powertools"} <= set(layer)
    assert all(layer.values()), "every layer requirement is pinned with =="
    assert {name: dev.get(name) for name in layer} == layer


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    groups = {
        resource_text(group["Properties"]["LogGroupName"]): group["Properties"]
        for group in resources_of_type(template, "AWS::Logs::LogGroup").values()
    }

    for name in functions(template):
        group = groups[f"/aws/lambda/${{{name}}}"]
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_outputs_name_everything_an_operator_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    # SAM names each schedule it generates <function><event>; Subs may use pseudo parameters.
    schedules = {"CheckerFunctionTick", "SubmitFunctionSweep"}
    known = set(template["Resources"]) | set(template["Parameters"]) | schedules | {"AWS::StackName", "AWS::Region"}

    assert set(outputs) >= OPERATOR_OUTPUTS
    for output in outputs.values():
        assert output["Description"].strip()
        assert set(references(output["Value"])) <= known


def test_functions_that_write_if_absent_may_list_the_uploads_a_killed_run_left(template: dict[str, Any]) -> None:
    # Shards (submit), retry bodies, result parts and manifests (checker) are written if
    # absent: the run that takes over lists the key's open uploads and aborts them first
    # (MultipartWriter.abort_unfinished). moto enforces no IAM, so only this test sees a gap.
    for name in ("SubmitFunction", "CheckerFunction"):
        granted = {
            resource_text(resource)
            for statement in statements(template["Resources"][name])
            if "s3:ListBucketMultipartUploads" in actions(statement)
            for resource in as_list(statement["Resource"])
        }
        assert len(granted) == 1, name
        assert next(iter(granted)).endswith(":s3:::batchdrop-${StackUuid}"), (name, granted)


# ---------------------------------------------------------------- hardening: the template


def locked_versions(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a uv lock (names normalized)."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_the_layer_lock_is_hashed_and_holds_the_tested_versions(template: dict[str, Any]) -> None:
    lock_path = ROOT / template["Resources"]["CommonLayer"]["Properties"]["ContentUri"] / "requirements.txt"
    lock, tested = locked_versions(lock_path), locked_versions(ROOT / "requirements" / "dev.txt")
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock_path.read_text(encoding="utf-8"))

    assert {"anthropic", "aws-lambda-powertools", "boto3", "botocore", "pydantic-core"} <= set(lock)
    assert {name: tested.get(name) for name in lock} == lock
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry.split("\n")[0])
    assert "--python-platform aarch64-manylinux2014" in lock_path.read_text(encoding="utf-8")
    assert template["Resources"]["CommonLayer"]["Metadata"]["BuildArchitecture"] == "arm64"


def test_submit_concurrency_is_reserved_by_a_parameter(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["SubmitConcurrency"]

    assert props(template, "SubmitFunction")["ReservedConcurrentExecutions"] == {"Ref": "SubmitConcurrency"}
    assert parameter["MinValue"] >= 1  # 0 would stop every upload
    assert "create lease" in parameter["Description"]


def test_state_and_logs_outlive_the_stack(template: dict[str, Any]) -> None:
    assert props(template, "Table")["DeletionProtectionEnabled"] is True
    for name in ("Bucket", "Table", *resources_of_type(template, "AWS::Logs::LogGroup")):
        resource = template["Resources"][name]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain"), name


def test_schedules_run_as_our_own_roles_trusted_only_from_this_account(template: dict[str, Any]) -> None:
    for function, event, queue in (
        ("CheckerFunction", "Tick", "CheckerScheduleDeadLetterQueue"),
        ("SubmitFunction", "Sweep", "SweeperScheduleDeadLetterQueue"),
    ):
        schedule = props(template, function)["Events"][event]["Properties"]
        (role_name,) = references(schedule["RoleArn"])
        role = template["Resources"][role_name]
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        granted = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]

        assert role["Type"] == "AWS::IAM::Role"
        assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
        assert {(tuple(actions(s)), json.dumps(s["Resource"])) for s in granted} == {
            (("lambda:InvokeFunction",), json.dumps({"Fn::GetAtt": [function, "Arn"]})),
            (("sqs:SendMessage",), json.dumps({"Fn::GetAtt": [queue, "Arn"]})),
        }


def test_only_our_function_roles_may_put_events_on_the_bus(template: dict[str, Any]) -> None:
    # The bus's other statement (EventConsumerAccounts) allows rules only: test_template_ops.py.
    policy = template["Resources"]["EventBusPolicy"]
    statement = policy["Properties"]["Statement"]

    assert policy["Properties"]["EventBusName"] == {"Ref": "EventBus"}
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "events:PutEvents")
    assert statement["Condition"] == {
        "ArnNotEquals": {
            "aws:PrincipalArn": [
                {"Fn::GetAtt": ["SubmitFunctionRole", "Arn"]},
                {"Fn::GetAtt": ["CheckerFunctionRole", "Arn"]},
            ]
        }
    }


@pytest.mark.parametrize(
    ("parameter", "prefixes"), [("InboxRetentionDays", {"inbox/"}), ("ResultsRetentionDays", {"results/", "errors/"})]
)
def test_prompt_and_output_retention_is_a_parameter_off_by_default(
    template: dict[str, Any], parameter: str, prefixes: set[str]
) -> None:
    rules = props(template, "Bucket")["LifecycleConfiguration"]["Rules"]
    expiring = [rule for rule in rules if isinstance(rule.get("ExpirationInDays"), dict)]
    ruled = [rule for rule in expiring if {"Ref": parameter} in rule["ExpirationInDays"].get("Fn::If", [])]
    (condition,) = {rule["Status"]["Fn::If"][0] for rule in ruled}

    assert template["Parameters"][parameter]["Default"] == 0
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, "0"]}]}
    assert {rule["Prefix"] for rule in ruled} == prefixes
    assert all(rule["Status"]["Fn::If"][1:] == ["Enabled", "Disabled"] for rule in ruled)


def test_job_items_expire_through_the_attribute_the_table_ttl_reads(template: dict[str, Any]) -> None:
    from batchdrop.adapters.state import TTL_ATTRIBUTE
    from batchdrop.config import ENV_JOB_RETENTION_DAYS, MIN_JOB_RETENTION_DAYS

    ttl = props(template, "Table")["TimeToLiveSpecification"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    parameter = template["Parameters"]["JobRetentionDays"]

    assert ttl == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert variables[ENV_JOB_RETENTION_DAYS] == {"Ref": "JobRetentionDays"}
    assert parameter["Default"] == "0"
    pattern = re.compile(parameter["AllowedPattern"])
    allowed = [days for days in range(10_001) if pattern.fullmatch(str(days))]
    assert allowed == [0, *range(MIN_JOB_RETENTION_DAYS, 10_000)]


def test_a_kms_key_is_optional_and_used_through_s3_only(template: dict[str, Any]) -> None:
    default = props(template, "Bucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert default["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == {"Fn::If": ["HasKmsKey", "aws:kms", "AES256"]}
    for name in functions(template):
        grants = [s for s in statements(template["Resources"][name]) if any(a.startswith("kms:") for a in actions(s))]
        (grant,) = grants
        conditional = [p for p in props(template, name)["Policies"] if "Fn::If" in p]

        assert [p["Fn::If"][0] for p in conditional] == ["HasKmsKey"]
        assert sorted(actions(grant)) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert grant["Resource"] == {"Ref": "KmsKeyArn"}
        assert grant["Condition"] == {
            "StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}
        }


def test_every_linter_suppression_gives_its_reason(template: dict[str, Any]) -> None:
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "").strip()) >= 30, (name, skip)
    # cfn-lint's ignore_checks has no reason field: each entry carries an inline comment.
    lines = TEMPLATE_PATH.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.strip() == "ignore_checks:":
            entries = [e for e in lines[number + 1 :] if e.strip().startswith("- ")][:1]
            assert entries, f"template.yaml:{number + 1}: ignore_checks without an entry"
            assert re.search(r"- \S+ +# .{20,}", entries[0]), f"template.yaml:{number + 2}: no reason"


def iam_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Allow statement of the functions' and roles' identity policies."""
    for name, function in functions(template).items():
        yield from ((name, s) for s in statements(function))
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            yield from ((name, s) for s in as_list(policy["PolicyDocument"]["Statement"]))


def test_every_grant_names_its_actions_and_scoped_resources(template: dict[str, Any]) -> None:
    for name, statement in iam_statements(template):
        assert statement["Effect"] == "Allow", name
        assert "NotAction" not in statement, name
        assert "NotResource" not in statement, name
        assert all("*" not in action for action in actions(statement)), (name, statement)
        for resource in as_list(statement["Resource"]):
            text = resource_text(resource)
            assert text != "*", name
            assert not text.endswith(":*"), (name, text)
            assert not re.search(r":::[^/]*\*", text), f"{name}: a bucket name pattern, {text}"


def test_every_alarm_notifies_the_topic(template: dict[str, Any]) -> None:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")

    assert alarms
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == ALARM_TOPIC_ACTIONS, name
        assert alarm["Properties"]["OKActions"] == ALARM_TOPIC_ACTIONS, name
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", name


# ---------------------------------------------------------------- records mode's outputs


def test_checker_has_the_ephemeral_storage_records_outputs_spill_into(template: dict[str, Any]) -> None:
    # services/outputs.py spills the tails of a shard's rows into /tmp; docs/records.md#size
    # states the bound this size gives (Lambda's default is 512 MB).
    assert props(template, "CheckerFunction")["EphemeralStorage"] == {"Size": 4096}


def test_the_price_table_override_reaches_the_functions_and_defaults_to_none(template: dict[str, Any]) -> None:
    from batchdrop.config import ENV_PRICES_JSON

    parameter = template["Parameters"]["PricesJson"]

    for name in ("SubmitFunction", "CheckerFunction"):
        assert props(template, name)["Environment"]["Variables"][ENV_PRICES_JSON] == {"Ref": "PricesJson"}
    assert parameter["Default"] == ""
    # Lambda's environment holds 4 KB in all: the override leaves room for the other variables.
    assert parameter["MaxLength"] <= 2048
