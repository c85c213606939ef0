"""template.yaml as an operator meets it: the dashboard draws only metrics the code emits and
covers every function and failure queue; AlarmEmail's topic is notified by every alarm beside
AlarmTopicArn; EventConsumerAccounts may manage their own rules on the bus; the daily budget
reaches the submit function; `make deploy` asks for the API key once and puts it into the
stack's secret, and `make destroy` says what the stack leaves; and the docs name every
parameter, function and event file they should."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode_str
from moto import mock_aws

from tests.unit.test_template import ROOT, TEMPLATE_PATH, alarms, environment, resources_of_type

pytestmark = pytest.mark.unit

CODE_DIRS = (ROOT / "layers" / "common" / "batchdrop", ROOT / "functions")
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
NAMESPACE = "batchdrop/${AWS::StackName}"
# Every alarm the stack had before AlarmEmail; each must reach the e-mail topic too.
KNOWN_ALARMS = {
    "SubmitFailureAlarm",
    "CheckerFailureAlarm",
    "CheckerScheduleDeadLetterAlarm",
    "SweeperScheduleDeadLetterAlarm",
    "SubmitErrorsAlarm",
    "CheckerErrorsAlarm",
    "DuplicateBatchAlarm",
    "ApiKeyRefusedAlarm",
    "BatchPastExpiryAlarm",
    "StuckJobsFailedAlarm",
    "DailyCostAlarm",
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not errors, errors
    return decoded


def python_sources() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from folder.rglob("*.py")


def emitted_metrics() -> dict[str, set[str]]:
    """Metric name -> the files that emit it, read from the code: every string literal inside an
    add_metric(...) call before its unit, and observability.py's *_METRIC constants."""
    found: dict[str, set[str]] = {}
    for path in python_sources():
        text = path.read_text(encoding="utf-8")
        names = set(re.findall(r'^[A-Z_]+_METRIC = "(\w+)"', text, re.MULTILINE))
        for call in re.findall(r"add_metric\(\s*(.*?)MetricUnit", text, re.DOTALL):
            names |= set(re.findall(r'"(\w+)"', call))
        for name in names:
            found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return found


def logged_messages() -> set[str]:
    """Every string literal that is the first argument of a logger call."""
    messages = set()
    for path in python_sources():
        text = path.read_text(encoding="utf-8")
        messages |= set(re.findall(r'logger\.(?:info|warning|error|exception)\(\s*"([^"]+)"', text))
    return messages


def condition_holds(template: dict[str, Any], name: str, parameters: dict[str, Any]) -> bool:
    return bool(evaluate(template["Conditions"][name], template, parameters))


def evaluate(node: Any, template: dict[str, Any], parameters: dict[str, Any]) -> Any:
    """The value of a condition or a property under `parameters` (the rest at their defaults):
    Ref, Fn::If, Fn::Equals, Fn::Not, Fn::And, Fn::Join and Condition. A resource's Ref stays
    {"Ref": name}; an Fn::If branch that is AWS::NoValue drops out of a list, as in CloudFormation."""
    if isinstance(node, list):
        values = [evaluate(item, template, parameters) for item in node]
        return [value for value in values if value != {"Ref": "AWS::NoValue"}]
    if not isinstance(node, dict) or len(node) != 1:
        return node
    ((key, value),) = node.items()
    if key == "Ref":
        if value in template["Parameters"]:
            default = template["Parameters"][value].get("Default", "")
            found = parameters.get(value, default)
            if template["Parameters"][value]["Type"] == "CommaDelimitedList" and isinstance(found, str):
                return found.split(",") if found else [""]
            return found
        return node
    if key == "Fn::If":
        name, when_true, when_false = value
        return evaluate(when_true if condition_holds(template, name, parameters) else when_false, template, parameters)
    if key == "Condition":
        return condition_holds(template, value, parameters)
    if key == "Fn::Equals":
        left, right = (evaluate(side, template, parameters) for side in value)
        return str(left) == str(right)
    if key == "Fn::Not":
        return not evaluate(value[0], template, parameters)
    if key == "Fn::And":
        return all(evaluate(item, template, parameters) for item in value)
    if key == "Fn::Join":
        return value[0].join(str(item) for item in evaluate(value[1], template, parameters))
    return node


def dashboard_body(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON as CloudFormation would make it: the Sub's own variables resolved
    under `parameters`, pseudo parameters and parameters by value, resources as placeholders."""
    (dashboard,) = resources_of_type(template, "AWS::CloudWatch::Dashboard").values()
    text, variables = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    values: dict[str, str] = {}
    for name, value in variables.items():
        resolved = evaluate(value, template, parameters)
        if isinstance(resolved, dict) and "Fn::Sub" in resolved:
            resolved = re.sub(
                r"\$\{(\w+)\}", lambda m: str(evaluate({"Ref": m.group(1)}, template, parameters)), resolved["Fn::Sub"]
            )
        values[name] = resolved

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if name in template["Parameters"]:
            return str(evaluate({"Ref": name}, template, parameters))
        return {"AWS::StackName": "stack", "AWS::Region": "eu-west-1"}.get(name, f"<{name}>")

    return dict(json.loads(re.sub(r"\$\{([^}]+)\}", substitute, text)))


def widgets_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [widget["properties"] for widget in body["widgets"] if widget["type"] == kind]


def metric_rows(body: dict[str, Any]) -> list[list[Any]]:
    return [row for widget in widgets_of(body, "metric") for row in widget["metrics"] if isinstance(row[0], str)]


def load_stack_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stack_config", ROOT / "mk" / "stack_config.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_dry_run(target: str, *variables: str) -> str:
    done = subprocess.run(
        ["make", "-n", target, *variables], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


# ---------------------------------------------------------------- the dashboard


@pytest.mark.parametrize("budget", ["0", "12.50"])
def test_the_dashboard_is_valid_json_with_the_budget_line_only_when_a_budget_is_set(
    template: dict[str, Any], budget: str
) -> None:
    body = dashboard_body(template, {"DailyBudgetUsd": budget})

    (cost,) = [widget for widget in widgets_of(body, "metric") if widget["title"].startswith("Cost per day")]
    assert cost["period"] == 86400
    lines = cost["annotations"]["horizontal"]
    assert lines == ([] if budget == "0" else [{"label": "DailyBudgetUsd", "value": 12.5}])


def test_every_metric_the_dashboard_draws_is_one_the_code_emits_from_that_service(template: dict[str, Any]) -> None:
    emitted = emitted_metrics()
    own = [row for row in metric_rows(dashboard_body(template, {})) if row[0] == "batchdrop/stack"]

    assert len(own) >= 20
    for row in own:
        name, dimension, service = row[1:4]
        assert name in emitted, f"the dashboard draws {name}, which no code emits"
        assert dimension == "service"
        handlers = {path for path in emitted[name] if path.startswith("functions/")}
        if handlers == emitted[name]:  # emitted by a handler only: that function's service
            assert handlers == {f"functions/{service}/app.py"}, (name, service)
    # The graphs the operator looks for are there.
    names = {row[1] for row in own}
    for wanted in ("ObjectsReceived", "JobsFinished", "OpenBatches", "OldestOpenBatchAge", "JobCostUsd"):
        assert wanted in names


def test_the_dashboard_draws_every_functions_errors_throttles_and_durations_and_every_queues_depth(
    template: dict[str, Any],
) -> None:
    rows = metric_rows(dashboard_body(template, {}))
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))
    queues = set(resources_of_type(template, "AWS::SQS::Queue"))

    for metric in ("Errors", "Throttles", "Duration"):
        drawn = {row[3] for row in rows if row[:3] == ["AWS/Lambda", metric, "FunctionName"]}
        assert drawn == {f"<{name}>" for name in functions}, metric
    depth = {row[3] for row in rows if row[:3] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"]}
    assert depth == {f"<{name}.QueueName>" for name in queues}


def test_the_dashboards_log_widgets_read_the_functions_log_groups_for_lines_the_code_logs(
    template: dict[str, Any],
) -> None:
    logs = widgets_of(dashboard_body(template, {}), "log")
    groups = {f"<{name}>" for name in resources_of_type(template, "AWS::Logs::LogGroup")}
    messages = logged_messages()

    assert len(logs) == 2
    for widget in logs:
        sources = re.findall(r"SOURCE '([^']+)'", widget["query"])
        assert sources
        assert set(sources) <= groups
        quoted = re.findall(r'message = "([^"]+)"', widget["query"])
        assert quoted
        for message in quoted:
            assert message in messages, f"no code logs {message!r}"


def test_the_dashboards_alarm_widget_lists_every_alarm_the_stack_always_makes(template: dict[str, Any]) -> None:
    (widget,) = widgets_of(dashboard_body(template, {}), "alarm")
    unconditional = {
        name
        for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
        if "Condition" not in alarm
    }

    assert set(widget["alarms"]) == {f"<{name}.Arn>" for name in unconditional}


# ---------------------------------------------------------------- alarm e-mail


@pytest.mark.parametrize(
    ("topic", "email"), list(product(["", "arn:aws:sns:eu-west-1:123456789012:ops"], ["", "ops@example.com"]))
)
def test_every_alarm_notifies_the_email_topic_and_the_given_topic_when_each_is_set(
    template: dict[str, Any], topic: str, email: str
) -> None:
    parameters = {"AlarmTopicArn": topic, "AlarmEmail": email, "DailyBudgetUsd": "10"}
    expected = [value for value in (topic, {"Ref": "AlarmEmailTopic"} if email else "") if value]

    assert set(alarms(template)) >= KNOWN_ALARMS
    for name, alarm in alarms(template).items():
        assert evaluate(alarm["AlarmActions"], template, parameters) == expected, name
        assert evaluate(alarm["OKActions"], template, parameters) == expected, name
    for resource in ("AlarmEmailTopic", "AlarmEmailSubscription"):
        assert template["Resources"][resource]["Condition"] == "HasAlarmEmail"
        assert condition_holds(template, "HasAlarmEmail", parameters) == bool(email)


def test_the_email_subscription_sends_to_the_address_given(template: dict[str, Any]) -> None:
    subscription = template["Resources"]["AlarmEmailSubscription"]["Properties"]
    pattern = re.compile(template["Parameters"]["AlarmEmail"]["AllowedPattern"])

    assert subscription == {
        "TopicArn": {"Ref": "AlarmEmailTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    for accepted in ("", "ops@example.com", "a.b+c@x.co.uk"):
        assert pattern.fullmatch(accepted), accepted
    for refused in ("ops", "ops@example", "a@b.c, d@e.f", "a b@c.d"):
        assert not pattern.fullmatch(refused), refused


# ---------------------------------------------------------------- events in other accounts


def test_consumer_accounts_may_manage_only_their_own_rules_on_the_bus_and_never_send(template: dict[str, Any]) -> None:
    policy = template["Resources"]["EventConsumerRulesPolicy"]
    statement = policy["Properties"]["Statement"]

    assert policy["Condition"] == "HasEventConsumers"
    assert not condition_holds(template, "HasEventConsumers", {})
    assert condition_holds(template, "HasEventConsumers", {"EventConsumerAccounts": "111122223333"})
    assert policy["Properties"]["EventBusName"] == {"Ref": "EventBus"}
    assert statement["Effect"] == "Allow"
    assert {"events:PutRule", "events:PutTargets", "events:DeleteRule", "events:RemoveTargets"} <= set(
        statement["Action"]
    )
    assert not any(action.startswith("events:PutEvents") for action in statement["Action"])
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/${EventBus}/*"
    }
    assert statement["Condition"] == {
        "StringEquals": {"aws:PrincipalAccount": {"Ref": "EventConsumerAccounts"}},
        "StringEqualsIfExists": {"events:creatorAccount": "${aws:PrincipalAccount}"},
    }


# ---------------------------------------------------------------- the budget and the key


def test_the_submit_function_reads_the_daily_budget(template: dict[str, Any]) -> None:
    submit = template["Resources"]["SubmitFunction"]

    assert environment(template, submit)["BATCHDROP_DAILY_BUDGET_USD"] == {"Ref": "DailyBudgetUsd"}


def test_make_deploy_asks_for_the_key_and_puts_it_into_the_secret_the_stack_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a deployed stack whose secret was made without a value, as the template makes it
    stack_config = load_stack_config()
    config = tmp_path / "samconfig.toml"
    config.write_text('[default.deploy.parameters]\nstack_name = "bd"\nregion = "eu-west-1"\n', encoding="utf-8")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    # moto's in-process mock answers AWS's own endpoints only: an endpoint another test left in
    # the environment (the local stack's) would send these calls to the network.
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    typed = iter(["  sk-ant-api03-first\n", "sk-ant second"])
    monkeypatch.setattr(stack_config.getpass, "getpass", lambda prompt: next(typed))
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name="eu-west-1")
        arn = secrets.create_secret(Name="bd-key")["ARN"]
        stack = {
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {"AnthropicSecretArn": {"Value": arn}},
        }
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="bd", TemplateBody=json.dumps(stack)
        )
        assert not stack_config.has_value(secrets, arn)

        # When the first deploy asks for the key (--if-unset), it is put, trimmed
        stack_config.main(["put-key", str(config), "--if-unset"])
        assert secrets.get_secret_value(SecretId=arn)["SecretString"] == "sk-ant-api03-first"
        assert stack_config.has_value(secrets, arn)

        # And a later deploy asks nothing while the secret holds a key
        stack_config.main(["put-key", str(config), "--if-unset"])
        assert "already holds a key" in capsys.readouterr().out

        # And `make api-key` refuses a key with a space in it, putting nothing
        with pytest.raises(SystemExit, match="spaces or line breaks"):
            stack_config.main(["put-key", str(config)])
        assert secrets.get_secret_value(SecretId=arn)["SecretString"] == "sk-ant-api03-first"


# ---------------------------------------------------------------- deploy and destroy


def test_make_deploy_is_guided_without_a_samconfig_and_plain_with_one(tmp_path: Path) -> None:
    missing = tmp_path / "samconfig.toml"
    guided = make_dry_run("deploy", f"SAMCONFIG={missing}")
    missing.write_text('[default.deploy.parameters]\nstack_name = "bd"\n', encoding="utf-8")
    plain = make_dry_run("deploy", f"SAMCONFIG={missing}")

    assert "sam build --template-file template.yaml" in guided  # the artifact, bytecode and all
    assert f".tools/sam/bin/sam deploy --guided --config-file {missing}" in guided
    assert f".tools/sam/bin/python mk/stack_config.py put-key {missing} --if-unset" in guided
    assert f".tools/sam/bin/sam deploy --config-file {missing}" in plain
    assert "--guided" not in plain
    assert "put-key" not in plain
    assert f".tools/sam/bin/python mk/stack_config.py put-key {missing}" in make_dry_run(
        "api-key", f"SAMCONFIG={missing}"
    )


def test_make_destroy_reads_the_outputs_then_deletes_then_prints_what_stays(tmp_path: Path) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text('[default.deploy.parameters]\nstack_name = "bd"\nregion = "eu-west-1"\n', encoding="utf-8")
    commands = make_dry_run("destroy", f"SAMCONFIG={config}")

    outputs = commands.index("sam list stack-outputs")
    delete = commands.index("sam delete")
    retained = commands.index("mk/stack_config.py retained")
    assert outputs < delete < retained
    stack_config = load_stack_config()
    assert stack_config.setting(config, "stack_name") == "bd"
    with pytest.raises(SystemExit, match="no capabilities under"):
        stack_config.setting(config, "capabilities")


def test_what_destroy_prints_covers_every_resource_the_template_retains(template: dict[str, Any]) -> None:
    outputs = {
        "BucketName": "batchdrop-uuid",
        "TableName": "bd-Table-1",
        "SubmitFunctionName": "bd-SubmitFunction-2",
        "CheckerFunctionName": "bd-CheckerFunction-3",
        "CommonLayerArn": "arn:aws:lambda:eu-west-1:123456789012:layer:CommonLayer9:4",
    }
    printed = load_stack_config().retained(outputs, "eu-west-1")
    retained = {
        name: resource["Type"]
        for name, resource in template["Resources"].items()
        if resource.get("DeletionPolicy") == "Retain"
        or resource.get("Properties", {}).get("RetentionPolicy") == "Retain"
    }

    assert set(retained.values()) == {
        "AWS::S3::Bucket",
        "AWS::DynamoDB::Table",
        "AWS::Logs::LogGroup",
        "AWS::Serverless::LayerVersion",
    }
    assert "aws s3api delete-bucket --bucket batchdrop-uuid --region eu-west-1" in printed
    assert "--no-deletion-protection-enabled" in printed
    assert "aws dynamodb delete-table --table-name bd-Table-1 --region eu-west-1" in printed
    for function in ("bd-SubmitFunction-2", "bd-CheckerFunction-3"):
        assert f"aws logs delete-log-group --log-group-name /aws/lambda/{function} --region eu-west-1" in printed
    assert "aws lambda delete-layer-version --layer-name CommonLayer9" in printed
    # Every output it reads is one the template declares.
    assert set(outputs) <= set(template["Outputs"])


# ---------------------------------------------------------------- the docs


def test_deploy_md_documents_every_parameter_with_its_default(template: dict[str, Any]) -> None:
    section = DEPLOY_DOC.read_text(encoding="utf-8").split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        match.group(1): match.group(2) for match in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    }

    for name, parameter in template["Parameters"].items():
        assert name in rows, f"docs/deploy.md has no row for {name}"
        default = str(parameter.get("Default", ""))
        if default not in ("", "0"):
            assert f"`{default}`" in rows[name], (name, rows[name])


def test_sam_local_invoke_instructions_name_real_functions_and_event_files(template: dict[str, Any]) -> None:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    invocations = re.findall(r"sam local invoke (\w+) (?:--event|-e) (events/[\w.-]+\.json)", text)
    functions = set(resources_of_type(template, "AWS::Serverless::Function"))

    assert {name for name, _ in invocations} == functions
    for _, event in invocations:
        assert (ROOT / event).is_file(), event
    for event in set(re.findall(r"events/[\w.-]+\.json", text)):
        assert (ROOT / event).is_file(), event


def test_the_runbook_names_only_metrics_the_code_emits_and_commands_the_cli_has() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    emitted = emitted_metrics()
    messages = logged_messages()
    cli = (ROOT / "local" / "batchdrop_local" / "commands.py").read_text(encoding="utf-8")
    cli += (ROOT / "local" / "batchdrop_local" / "cli.py").read_text(encoding="utf-8")

    metrics = set(re.findall(r"metric `(\w+)`|`(\w+)` metric", text))
    named = {name for pair in metrics for name in pair if name}
    assert named, "the runbook names no metric"
    for name in named:
        assert name in emitted, f"the runbook names {name}, which no code emits"
    quoted = [" ".join(message.split()) for message in re.findall(r'log lines? "([^"]+)"', text)]
    assert len(quoted) >= 5
    for message in quoted:
        assert message in messages, f"the runbook quotes {message!r}, which no code logs"
    for command in set(re.findall(r"^batchdrop ([a-z-]+)", text, re.MULTILINE)):
        assert f'"{command}"' in cli, f"batchdrop has no command {command!r}"
