"""The local stack: moto (server mode) and the Message Batches emulator on loopback, with the
AWS resources of template.yaml created from the template itself, so the two cannot drift.

`LocalStack` reads template.yaml with cfn-lint's decoder, resolves the intrinsics it needs
(`SamTemplate`, `IntrinsicResolver`), creates the bucket, table, event bus and queues in moto
with the template's own properties, stores the emulator's API key in a Secrets Manager secret
(the template's `AnthropicSecretArn` parameter) and exposes the environment a handler or a
client needs (`env`, `function_env`, `handler_process_env`, `write_env_file`). Lambda
functions, IAM, logs, alarms and layers are not created: `batchdrop_local.runner.LocalRunner`
plays Lambda's part.

moto runs in this process (`ThreadedMotoServer`), so its state is moto's global state: run
one LocalStack at a time per process, and no `mock_aws()` while it runs; `stop()` resets it.
Before it starts, its ListObjectVersions is made to share the stored bytes instead of keeping
a copy of the whole bucket per call (`_list_versions_without_copies`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfnlint.decode import decode_str

if TYPE_CHECKING:
    from batchdrop_local.emulator.server import Emulator
    from batchdrop_local.emulator.settings import EmulatorSettings
    from batchdrop_local.snapshot import StateDir

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

LOCAL_STACK_NAME = "batchdrop-local"
LOCAL_REGION = "us-east-1"
# moto's default account: ARNs moto returns (queues, secrets, buses) carry it too.
LOCAL_ACCOUNT_ID = "123456789012"
# The last segment of a CloudFormation stack id is a UUID that the template turns into the
# bucket name (`batchdrop-<uuid>`); locally it is "local", so the same expression yields
# `batchdrop-local` both for the bucket and for the functions' BATCHDROP_BUCKET.
LOCAL_STACK_ID_SUFFIX = "local"
LOCAL_API_KEY = "batchdrop-local-key"
# With a state directory, how often moto's state is saved while it changes (besides at stop).
AUTOSAVE_SECONDS = 30.0
DUMMY_AWS_KEY = "testing"
# The template parameter that carries the Anthropic key's secret ARN (the key never enters it).
SECRET_ARN_PARAMETER = "AnthropicSecretArn"  # noqa: S105 - a parameter name, not a secret

# Resource types the local stack creates in moto, and those it leaves out on purpose.
CREATED_TYPES = frozenset({"AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::Events::EventBus", "AWS::SQS::Queue"})
SKIPPED_TYPES: Mapping[str, str] = {
    "AWS::Serverless::Function": "the local runner calls the handlers in-process",
    "AWS::Lambda::Function": "the local runner calls the handlers in-process",
    "AWS::Serverless::LayerVersion": "layers/common is installed in the venv",
    "AWS::Lambda::LayerVersion": "layers/common is installed in the venv",
    "AWS::Lambda::Permission": "moto never invokes a Lambda",
    "AWS::Lambda::EventInvokeConfig": "the local runner applies the functions' EventInvokeConfig",
    "AWS::IAM::Role": "moto does not enforce IAM",
    "AWS::IAM::Policy": "moto does not enforce IAM",
    "AWS::IAM::ManagedPolicy": "moto does not enforce IAM",
    "AWS::Events::EventBusPolicy": "moto does not enforce an event bus's resource policy",
    "AWS::Logs::LogGroup": "handlers log to the local process",
    "AWS::CloudWatch::Alarm": "nothing evaluates alarms locally",
    "AWS::CloudWatch::Dashboard": "nothing draws a dashboard locally",
    # Only with AlarmEmail, and no alarm fires locally.
    "AWS::SNS::Topic": "nothing evaluates alarms locally, so nothing notifies",
    "AWS::SNS::Subscription": "nothing evaluates alarms locally, so nothing notifies",
    # The policy denies plain HTTP (aws:SecureTransport false), and the local endpoint is HTTP.
    "AWS::S3::BucketPolicy": "it denies non-TLS access and the local endpoint is plain HTTP",
    "AWS::Scheduler::Schedule": "the local runner ticks the checker itself",
    "AWS::Events::Rule": "moto never fires a schedule, and a Lambda target breaks put_events",
    # Only when AnthropicSecretArn is empty, and the local stack always passes its own secret.
    "AWS::SecretsManager::Secret": "the local stack makes its own secret and passes its ARN",
    "AWS::SecretsManager::ResourcePolicy": "moto does not enforce resource policies",
}

# What Powertools reads from the process environment once, at import, not per invocation.
PROCESS_WIDE_VARIABLES = (
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_TRACE_DISABLED",
    "LOG_LEVEL",
    "POWERTOOLS_LOG_LEVEL",
)

# Intrinsics this resolver understands; anything else fails loudly with the path to it.
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_NO_VALUE = object()
_log = logging.getLogger(__name__)


class TemplateError(ValueError):
    """template.yaml cannot be read, or asks for something the local stack cannot resolve."""


# ---------------------------------------------------------------- the template


@dataclass(frozen=True)
class FunctionSpec:
    """One `AWS::Serverless::Function`, with Globals.Function merged in (as SAM does)."""

    logical_id: str
    properties: dict[str, Any]

    @property
    def code_uri(self) -> str:
        return str(self.properties["CodeUri"])

    @property
    def handler(self) -> str:
        return str(self.properties["Handler"])

    @property
    def timeout_seconds(self) -> int:
        return int(self.properties.get("Timeout", 3))

    @property
    def memory_mb(self) -> int:
        return int(self.properties.get("MemorySize", 128))

    @property
    def environment(self) -> dict[str, Any]:
        return dict(self.properties.get("Environment", {}).get("Variables", {}))

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        return dict(self.properties.get("Events", {}))

    @property
    def event_invoke_config(self) -> dict[str, Any]:
        return dict(self.properties.get("EventInvokeConfig", {}))

    def events_of_type(self, *event_types: str) -> dict[str, dict[str, Any]]:
        return {name: event for name, event in self.events.items() if event.get("Type") in event_types}


class SamTemplate:
    """template.yaml decoded by cfn-lint (which understands the short intrinsic forms)."""

    def __init__(self, body: dict[str, Any], path: Path | None = None) -> None:
        self.body = body
        self.path = path

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> SamTemplate:
        decoded, errors = decode_str(path.read_text(encoding="utf-8"))
        if errors or decoded is None:
            raise TemplateError(f"cannot decode {path}: {errors}")
        return cls(_plain(decoded), path)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return dict(self.body.get("Resources", {}))

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.body.get("Parameters", {}))

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res.get("Type") == resource_type}

    def properties(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties", {}))

    @property
    def function_globals(self) -> dict[str, Any]:
        return dict(self.body.get("Globals", {}).get("Function", {}))

    def functions(self) -> dict[str, FunctionSpec]:
        return {
            name: FunctionSpec(name, _merge_globals(self.function_globals, resource.get("Properties", {})))
            for name, resource in self.resources_of_type("AWS::Serverless::Function").items()
        }

    def function(self, logical_id: str) -> FunctionSpec:
        return self.functions()[logical_id]

    def parameter_values(self, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Every parameter's value (defaults, then overrides), validated as CloudFormation does."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(self.parameters)
        if unknown:
            raise TemplateError(f"unknown template parameters: {sorted(unknown)}")
        values: dict[str, str] = {}
        for name, spec in self.parameters.items():
            if name in overrides:
                value = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateError(f"template parameter {name} has no default: pass it in parameters")
            values[name] = _validate_parameter(name, spec, str(value))
        return values


def _merge_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals semantics: maps merge (the function wins), lists and scalars are replaced."""
    merged = dict(globals_)
    for key, value in properties.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_globals(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate_parameter(name: str, spec: Mapping[str, Any], value: str) -> str:
    pattern = spec.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise TemplateError(f"parameter {name}={value!r} does not match {pattern}")
    allowed = spec.get("AllowedValues")
    if allowed is not None and value not in {str(v) for v in allowed}:
        raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
    if spec.get("Type") == "Number":
        number = float(value)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}={value} is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}={value} is above {spec['MaxValue']}")
    return value


def _plain(node: Any) -> Any:
    """cfn-lint's str_node/dict_node/list_node → plain str/dict/list (they pickle and print oddly)."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(value) for value in node]
    if isinstance(node, str):
        return str(node)
    return node


# ---------------------------------------------------------------- intrinsics


@dataclass
class LocalResource:
    """What `Ref` and `Fn::GetAtt` return for one resource of the local stack."""

    ref: str
    attributes: dict[str, str] = field(default_factory=dict)


class IntrinsicResolver:
    """Resolves the intrinsics template.yaml uses, as far as names and values need: Ref,
    Fn::Sub, Fn::GetAtt, Fn::Join, Fn::Select, Fn::Split, Fn::If (with Conditions),
    Fn::FindInMap and the pseudo parameters. `resource` answers Ref/GetAtt of a logical id."""

    def __init__(
        self,
        template: SamTemplate,
        parameters: Mapping[str, str],
        resource: Callable[[str], LocalResource],
        *,
        stack_name: str = LOCAL_STACK_NAME,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> None:
        self._template = template
        self._parameters = dict(parameters)
        self._resource = resource
        self.pseudo = {
            "AWS::StackName": stack_name,
            "AWS::StackId": (
                f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{LOCAL_STACK_ID_SUFFIX}"
            ),
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }

    def resolve(self, value: Any) -> Any:
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def resolve_str(self, value: Any) -> str:
        resolved = self.resolve(value)
        if isinstance(resolved, bool):
            return "true" if resolved else "false"
        if isinstance(resolved, dict | list):
            return json.dumps(resolved)
        return str(resolved)

    def condition(self, name: str) -> bool:
        conditions = self._template.body.get("Conditions", {})
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        return bool(self._resolve(conditions[name]))

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self._resolve(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument)
        return {k: v for k, v in ((k, self._resolve(v)) for k, v in value.items()) if v is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self._parameters:
            return self._parameters[name]
        if name in self._template.resources:
            return self._resource(name).ref
        raise TemplateError(f"Ref to unknown name {name}")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        if logical_id not in self._template.resources:
            raise TemplateError(f"Fn::GetAtt of unknown resource {logical_id}")
        attributes = self._resource(logical_id).attributes
        if attribute not in attributes:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} is not known locally")
        return attributes[attribute]

    def _function(self, name: str, argument: Any) -> Any:
        if name == "Fn::GetAtt":
            logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
            return self._get_att(logical_id, self._resolve(attribute))
        if name == "Fn::Sub":
            return self._sub(argument)
        if name == "Fn::Join":
            delimiter, items = argument
            return str(delimiter).join(str(item) for item in self._resolve(items))
        if name == "Fn::Select":
            index, items = argument
            return self._resolve(items)[int(self._resolve(index))]
        if name == "Fn::Split":
            delimiter, source = argument
            return str(self._resolve(source)).split(str(delimiter))
        if name == "Fn::If":
            condition, when_true, when_false = argument
            return self._resolve(when_true if self.condition(condition) else when_false)
        if name == "Fn::Equals":
            left, right = (self._resolve(v) for v in argument)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not self._resolve(argument[0])
        if name == "Fn::And":
            return all(self._resolve(v) for v in argument)
        if name == "Fn::Or":
            return any(self._resolve(v) for v in argument)
        if name == "Fn::FindInMap":
            map_name, top, second = (self._resolve(v) for v in argument)
            return self._template.body["Mappings"][map_name][top][second]
        raise TemplateError(f"{name} is not supported by the local stack's resolver")

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {k: self._resolve(v) for k, v in argument[1].items()}
        else:
            text, variables = argument, {}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self._template.resources:
                return self._get_att(*name.split(".", 1))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(substitute, str(text))


# ---------------------------------------------------------------- the stack


class LocalStack:
    """moto and the emulator on 127.0.0.1, with template.yaml's resources created in moto.

    `with LocalStack() as stack:` starts both servers and creates the resources; `stack.env`
    is what a client needs, `stack.function_env(logical_id)` what a handler sees; on exit
    every client and server it started is closed."""

    def __init__(
        self,
        *,
        template_path: Path = TEMPLATE_PATH,
        moto_port: int = 0,
        emulator_port: int = 0,
        latency: float = 2.0,
        cancel_latency: float | None = None,
        responder: str | None = None,
        emulator_settings: EmulatorSettings | None = None,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = LOCAL_STACK_NAME,
        api_key: str = LOCAL_API_KEY,
        use_emulator: bool = True,
        anthropic_base_url: str | None = None,
        state_dir: Path | None = None,
        autosave_seconds: float | None = AUTOSAVE_SECONDS,
    ) -> None:
        self.template = SamTemplate.load(template_path)
        # CodeUri and ContentUri are relative to the template's directory.
        self.template_root = template_path.resolve().parent
        self.stack_name = stack_name
        self.region = LOCAL_REGION
        self.account_id = LOCAL_ACCOUNT_ID
        self.api_key = api_key
        self._moto_port = moto_port
        self._emulator_settings = emulator_settings
        self._emulator_port = emulator_port
        self._latency = latency
        self._cancel_latency = cancel_latency
        self._responder = responder
        # Without the emulator the functions call the real API (the SDK's default URL), or
        # `anthropic_base_url` when given (tests put an emulator of their own there).
        self.use_emulator = use_emulator
        self._anthropic_base_url = anthropic_base_url
        self._parameter_overrides = dict(parameters or {})
        # Variables every function gets on top of the template's (the pipeline's settings
        # for a local run: batchdrop_local.pipeline_settings).
        self.function_variables: dict[str, str] = {}
        self._resources: dict[str, LocalResource] = {}
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._moto: Any = None
        self.emulator: Emulator | None = None
        self.parameters: dict[str, str] = {}
        self.secret_arn = ""
        self.skipped_resources: dict[str, str] = {}
        self._resolver: IntrinsicResolver | None = None
        # --state-dir (batchdrop_local.snapshot): moto's state is restored from it at start,
        # saved to it every `autosave_seconds` after a change (None: never) and at stop;
        # `restored` says whether there was a snapshot to restore.
        self.state_dir = state_dir
        self.autosave_seconds = autosave_seconds
        self.state: StateDir | None = None
        self.restored = False
        if state_dir is not None and emulator_settings is not None and emulator_settings.db is None:
            from batchdrop_local.snapshot import EMULATOR_DB_NAME

            self._emulator_settings = replace(emulator_settings, db=state_dir.expanduser() / EMULATOR_DB_NAME)

    # -- lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        try:
            if self.state_dir is not None:
                from batchdrop_local.snapshot import StateDir

                self.state = StateDir(self.state_dir).open()
            self._start_moto()
            if self.state is not None:
                self.restored = self.state.restore() is not None
            if self.use_emulator:
                self._start_emulator()
            self._create_secret()
            self.parameters = self.template.parameter_values(
                {SECRET_ARN_PARAMETER: self.secret_arn, **self._parameter_overrides}
            )
            self._resolver = IntrinsicResolver(
                self.template, self.parameters, self._resource, stack_name=self.stack_name
            )
            self._create_resources()
            self._check_names()
            if self.state is not None and self.autosave_seconds is not None:
                self.state.autosave(self._moto, self.autosave_seconds)
        except BaseException:
            self.stop()
            raise
        _log.info("local stack ready", extra={"moto": self.moto_url, "anthropic": self.anthropic_base_url})
        return self

    def stop(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self._moto is not None:
            # a start that failed before its state was restored must not overwrite the snapshot
            if self.state is not None and self._resolver is not None:
                self.state.save_at_stop()
            # moto's state is process-global (ThreadedMotoServer): the stack's resources must
            # go with it, or the next LocalStack in this process finds them already there.
            with contextlib.suppress(OSError):  # a moto that no longer answers has nothing to reset
                self._reset_moto()
            self._moto.stop()
            self._moto = None
        if self.state is not None:
            self.state.close()
            self.state = None

    def _reset_moto(self) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - moto on 127.0.0.1
            pass

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        from batchdrop_local import moto_fidelity

        moto_fidelity.apply()
        _list_versions_without_copies()
        # One werkzeug access-log line per AWS call drowns everything else out.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        if self._moto_port:
            _ensure_port_free("127.0.0.1", self._moto_port)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self._moto_port, verbose=False)
        self._moto.start()

    def _start_emulator(self) -> None:
        from batchdrop_local.emulator.server import Emulator
        from batchdrop_local.emulator.settings import EmulatorSettings

        settings = self._emulator_settings or EmulatorSettings(
            host="127.0.0.1",
            port=self._emulator_port,
            latency=self._latency,
            cancel_latency=self._cancel_latency,
            responder=self._responder,
            api_key=self.api_key,
            db=self.state.emulator_db if self.state is not None else None,
        )
        if settings.api_key is not None:
            self.api_key = settings.api_key
        self.emulator = Emulator(settings).start()

    # -- endpoints and clients

    @property
    def moto_url(self) -> str:
        if self._moto is None:
            raise RuntimeError("the local stack is not running")
        host, port = self._moto.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def emulator_url(self) -> str:
        if self.emulator is None:
            raise RuntimeError("the local stack is not running")
        return self.emulator.url

    @property
    def anthropic_base_url(self) -> str | None:
        """Where the functions send API calls: the emulator's URL, or without the emulator the
        URL given (None: the SDK's default, Anthropic's API)."""
        return self.emulator_url if self.use_emulator else self._anthropic_base_url

    def _anthropic_env(self, *, with_key: bool) -> dict[str, str]:
        """ANTHROPIC_BASE_URL when there is one; the key only for the emulator's, never a real one."""
        url = self.anthropic_base_url
        env = {"ANTHROPIC_BASE_URL": url} if url else {}
        return {**env, "ANTHROPIC_API_KEY": self.api_key} if with_key and self.use_emulator else env

    def client(self, service: str) -> Any:
        """A boto3 client on moto, created on first use and closed by `stop()`."""
        with self._clients_lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                self._clients[service] = boto3.client(
                    service,
                    endpoint_url=self.moto_url,
                    region_name=self.region,
                    aws_access_key_id=DUMMY_AWS_KEY,
                    aws_secret_access_key=DUMMY_AWS_KEY,
                    config=Config(request_checksum_calculation="when_required"),
                )
            return self._clients[service]

    def emulator_control(self) -> Any:
        from batchdrop_local.emulator.control import EmulatorControl

        return EmulatorControl(self.emulator_url)

    # -- names

    @property
    def resolver(self) -> IntrinsicResolver:
        if self._resolver is None:
            raise RuntimeError("the local stack is not running")
        return self._resolver

    def resource(self, logical_id: str) -> LocalResource:
        """Ref and GetAtt values of a created resource (or a skipped one that has a name)."""
        return self._resource(logical_id)

    @property
    def bucket_name(self) -> str:
        return self._only_of_type("AWS::S3::Bucket").ref

    @property
    def table_name(self) -> str:
        return self._only_of_type("AWS::DynamoDB::Table").ref

    @property
    def event_bus_name(self) -> str:
        return self._only_of_type("AWS::Events::EventBus").ref

    @property
    def queue_urls(self) -> dict[str, str]:
        return {name: self._resource(name).ref for name in self.template.resources_of_type("AWS::SQS::Queue")}

    def queue_url_for_arn(self, arn: str) -> str | None:
        for name in self.template.resources_of_type("AWS::SQS::Queue"):
            if self._resource(name).attributes.get("Arn") == arn:
                return self._resource(name).ref
        return None

    def _only_of_type(self, resource_type: str) -> LocalResource:
        names = list(self.template.resources_of_type(resource_type))
        if len(names) != 1:
            raise TemplateError(f"expected one {resource_type} in template.yaml, found {names}")
        return self._resource(names[0])

    def function_name(self, logical_id: str) -> str:
        return self._resource(logical_id).ref

    def _resource(self, logical_id: str) -> LocalResource:
        if logical_id in self._resources:
            return self._resources[logical_id]
        resource_type = self.template.resources[logical_id]["Type"]
        if resource_type in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            # CloudFormation names an unnamed function <stack>-<LogicalId>-<random>.
            name = f"{self.stack_name}-{logical_id}"
            arn = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
            return LocalResource(ref=name, attributes={"Arn": arn})
        if resource_type in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            arn = f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{self.stack_name}-{logical_id}:1"
            return LocalResource(ref=arn)
        raise TemplateError(f"{logical_id} ({resource_type}) is not created by the local stack")

    # -- environment

    @property
    def env(self) -> dict[str, str]:
        """Every variable a client or handler needs: endpoints, dummy credentials, the
        emulator's key (never a real key: that one is only in the secret), and the functions'
        Globals environment from template.yaml, resolved."""
        return {
            **self._aws_env(),
            **self._anthropic_env(with_key=True),
            **self._resolved_variables(self.template.function_globals.get("Environment", {}).get("Variables", {})),
        }

    def function_env(self, logical_id: str) -> dict[str, str]:
        """What Lambda gives this function: its merged Environment.Variables, the runtime's own
        variables, and the local endpoints. No ANTHROPIC_API_KEY: on AWS the handler reads the
        key from the secret, so locally it must too."""
        function = self.template.function(logical_id)
        name = self.function_name(logical_id)
        return {
            **self._aws_env(),
            **self._anthropic_env(with_key=False),
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            **self._resolved_variables(function.environment),
            **self.function_variables,
        }

    def handler_process_env(self) -> dict[str, str]:
        """The functions' values of PROCESS_WIDE_VARIABLES: what Powertools reads from
        os.environ once, when Logger, Metrics and Tracer are made at import, not per
        invocation. Both handlers share one process, and so one Logger, Metrics and Tracer:
        the runner sets these as process defaults before its first invocation. Raises
        TemplateError if two functions disagree, as one process can hold only one value."""
        values: dict[str, str] = {}
        for logical_id in self.template.functions():
            env = self.function_env(logical_id)
            for name in PROCESS_WIDE_VARIABLES:
                if name not in env:
                    continue
                if values.setdefault(name, env[name]) != env[name]:
                    raise TemplateError(
                        f"{name} differs between functions ({values[name]!r}, {env[name]!r}),"
                        " and the local runner runs them all in one process"
                    )
        return values

    def _aws_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_AWS_KEY,
            # Without it botocore checksums every put in Python: 10x slower on large objects.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            # Tracing: Active needs an X-Ray daemon, which does not run locally.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

    def _resolved_variables(self, variables: Mapping[str, Any]) -> dict[str, str]:
        return {name: self.resolver.resolve_str(value) for name, value in variables.items()}

    def write_env_file(self, path: Path) -> Path:
        """`NAME=value` lines (shell-quoted where needed) of `env`, for `set -a; . FILE`, with
        this process named in them so a client can tell a stale file (batchdrop_local.envfile)."""
        from batchdrop_local import envfile

        started = datetime.now(UTC).isoformat(timespec="seconds")
        return envfile.write(path, self.env, pid=os.getpid(), started_at=started)

    # -- state

    def open_batch_count(self, index_name: str = "open-batches") -> int:
        """Items in the table's sparse index of open batches (0 when the index does not exist)."""
        table = self.template.properties(next(iter(self.template.resources_of_type("AWS::DynamoDB::Table"))))
        if index_name not in {gsi["IndexName"] for gsi in table.get("GlobalSecondaryIndexes", [])}:
            return 0
        dynamodb = self.client("dynamodb")
        pages = dynamodb.get_paginator("scan").paginate(TableName=self.table_name, IndexName=index_name, Select="COUNT")
        return sum(page["Count"] for page in pages)

    # -- creation

    def _create_secret(self) -> None:
        secrets = self.client("secretsmanager")
        name = f"{self.stack_name}/anthropic-api-key"
        with _unless_restored(self.restored, "ResourceExistsException"):
            whose = "The emulator's" if self.use_emulator else "Anthropic's"
            response = secrets.create_secret(
                Name=name, Description=f"{whose} API key (local stack).", SecretString=self.api_key
            )
            self.secret_arn = response["ARN"]
            return
        self.secret_arn = secrets.describe_secret(SecretId=name)["ARN"]
        if secrets.get_secret_value(SecretId=name)["SecretString"] != self.api_key:
            secrets.put_secret_value(SecretId=name, SecretString=self.api_key)

    def _create_resources(self) -> None:
        creators: dict[str, Callable[[str, dict[str, Any]], LocalResource]] = {
            "AWS::SQS::Queue": self._create_queue,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::Events::EventBus": self._create_event_bus,
            "AWS::S3::Bucket": self._create_bucket,
        }
        for resource_type, create in creators.items():
            for logical_id in self.template.resources_of_type(resource_type):
                resource = self.template.resources[logical_id]
                if "Condition" in resource and not self.resolver.condition(resource["Condition"]):
                    continue
                properties = self.resolver.resolve(resource.get("Properties", {}))
                self._resources[logical_id] = create(logical_id, properties)
        for logical_id, resource in self.template.resources.items():
            resource_type = resource["Type"]
            if resource_type in CREATED_TYPES:
                continue
            reason = SKIPPED_TYPES.get(resource_type)
            if reason is None:
                reason = "the local stack does not know this type yet"
                _log.warning("resource not created locally", extra={"logical_id": logical_id, "type": resource_type})
            self.skipped_resources[logical_id] = reason

    def _create_queue(self, logical_id: str, properties: dict[str, Any]) -> LocalResource:
        name = properties.pop("QueueName", None) or f"{self.stack_name}-{logical_id}"
        tags = {tag["Key"]: tag["Value"] for tag in properties.pop("Tags", [])}
        attributes = {key: _attribute_value(value) for key, value in properties.items()}
        sqs = self.client("sqs")
        with _unless_restored(self.restored, "QueueAlreadyExists", "QueueNameExists"):
            url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        if self.restored:  # a queue kept from the last run takes the template's attributes of this one
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return LocalResource(ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _create_table(self, logical_id: str, properties: dict[str, Any]) -> LocalResource:
        name = properties.get("TableName") or f"{self.stack_name}-{logical_id}"
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PROVISIONED"),
        }
        if "GlobalSecondaryIndexes" in properties:
            request["GlobalSecondaryIndexes"] = [_index(gsi) for gsi in properties["GlobalSecondaryIndexes"]]
        if "LocalSecondaryIndexes" in properties:
            request["LocalSecondaryIndexes"] = [_index(lsi) for lsi in properties["LocalSecondaryIndexes"]]
        if "ProvisionedThroughput" in properties:
            request["ProvisionedThroughput"] = _ints(properties["ProvisionedThroughput"])
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
        if "SSESpecification" in properties:
            sse = dict(properties["SSESpecification"])
            request["SSESpecification"] = {"Enabled": bool(sse.pop("SSEEnabled", False)), **sse}
        for passthrough in ("TableClass", "DeletionProtectionEnabled", "Tags"):
            if passthrough in properties:
                request[passthrough] = properties[passthrough]
        dynamodb = self.client("dynamodb")
        if self.restored and name in dynamodb.list_tables()["TableNames"]:
            table = dynamodb.describe_table(TableName=name)["Table"]
            return LocalResource(ref=name, attributes=_table_attributes(table))
        table = dynamodb.create_table(**request)["TableDescription"]
        if "TimeToLiveSpecification" in properties:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=properties["TimeToLiveSpecification"])
        if "PointInTimeRecoverySpecification" in properties:
            dynamodb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification=properties["PointInTimeRecoverySpecification"]
            )
        return LocalResource(ref=name, attributes=_table_attributes(table))

    def _create_event_bus(self, _logical_id: str, properties: dict[str, Any]) -> LocalResource:
        request: dict[str, Any] = {"Name": properties["Name"]}
        if "Description" in properties:
            request["Description"] = properties["Description"]
        if "Tags" in properties:
            request["Tags"] = properties["Tags"]
        events = self.client("events")
        with _unless_restored(self.restored, "ResourceAlreadyExistsException"):
            arn = events.create_event_bus(**request)["EventBusArn"]
        if self.restored:
            arn = events.describe_event_bus(Name=properties["Name"])["Arn"]
        return LocalResource(ref=properties["Name"], attributes={"Arn": arn, "Name": properties["Name"]})

    def _create_bucket(self, logical_id: str, properties: dict[str, Any]) -> LocalResource:
        name = properties.get("BucketName") or f"{self.stack_name}-{logical_id.lower()}"
        s3 = self.client("s3")
        with _unless_restored(self.restored, "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            s3.create_bucket(Bucket=name)
        for key, value in properties.items():
            if key in ("BucketName", "NotificationConfiguration"):
                continue  # the name is used above; the local runner delivers the notifications
            apply = _BUCKET_SETTINGS.get(key)
            if apply is None:
                _log.warning("bucket property not applied locally", extra={"property": key})
                continue
            apply(s3, name, value)
        attributes = {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
        }
        return LocalResource(ref=name, attributes=attributes)

    def _check_names(self) -> None:
        """The functions compute the bucket name rather than Ref it; they must agree locally."""
        variables = self.env
        if variables.get("BATCHDROP_BUCKET", self.bucket_name) != self.bucket_name:
            raise TemplateError(
                f"BATCHDROP_BUCKET resolves to {variables['BATCHDROP_BUCKET']!r} but the bucket is {self.bucket_name!r}"
            )


@contextlib.contextmanager
def _unless_restored(restored: bool, *codes: str) -> Iterator[None]:
    """Run the block that creates a resource; when the state was restored and the resource is
    already there (a ClientError with one of `codes`), go on after the block instead."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if not restored or exc.response.get("Error", {}).get("Code") not in codes:
            raise


def _list_versions_without_copies() -> None:
    """Stop moto's ListObjectVersions from keeping a copy of the whole bucket per call.

    moto 5.2 deep-copies every version of the bucket (every prefix, not only the one listed)
    to mark IsLatest on the copies. Each copy is a new model instance, which moto keeps in
    its instance registry until the server is reset, with its own SpooledTemporaryFile of the
    object's bytes, on disk above about 5 MB: every listing keeps the size of the bucket in
    deleted temporary files until the stack stops. The sweeper lists inbox/ versions on every
    sweep, and so can any client of the local endpoint.

    Here a "deep copy" of a key or a delete marker is a view instead: an object of its own
    (the listing sets IsLatest on it, not on the stored version) that shares the stored
    version's bytes, is not registered with moto, and never closes the bytes it shares.
    Nothing but that listing deep-copies these models. Idempotent."""
    from moto.s3.models import FakeDeleteMarker, FakeKey

    if getattr(FakeKey.__dict__.get("__deepcopy__"), _LISTING_VIEWS, False):
        return

    class ListedKey(FakeKey):
        """A stored version as one listing sees it; the bytes stay the stored version's."""

        def dispose(self, garbage: bool = False) -> None:
            pass

        def __del__(self) -> None:
            pass

    def key_view(self: Any, memo: dict[int, Any]) -> Any:
        view = object.__new__(ListedKey)  # not FakeKey.__new__: moto would keep it
        view.__dict__.update(self.__dict__)
        memo[id(self)] = view
        return view

    def marker_view(self: Any, memo: dict[int, Any]) -> Any:
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        memo[id(self)] = view
        return view

    setattr(key_view, _LISTING_VIEWS, True)
    FakeKey.__deepcopy__ = key_view  # type: ignore[attr-defined]
    FakeDeleteMarker.__deepcopy__ = marker_view  # type: ignore[attr-defined]


_LISTING_VIEWS = "_batchdrop_listing_views"


def _ensure_port_free(host: str, port: int) -> None:
    """ThreadedMotoServer waits forever when its port is taken (werkzeug exits its thread):
    fail first, with the reason."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"moto cannot listen on {host}:{port}: {exc.strerror}") from exc


# ---------------------------------------------------------------- CloudFormation → API shapes


def _table_attributes(table: Mapping[str, Any]) -> dict[str, str]:
    attributes = {"Arn": table["TableArn"]}
    if "LatestStreamArn" in table:
        attributes["StreamArn"] = table["LatestStreamArn"]
    return attributes


def _attribute_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _ints(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {key: int(value) for key, value in mapping.items()}


def _index(index: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudFormation GSI/LSI minus the keys the DynamoDB API does not take."""
    api_index = {key: value for key, value in index.items() if key != "ContributorInsightsSpecification"}
    if "ProvisionedThroughput" in api_index:
        api_index["ProvisionedThroughput"] = _ints(api_index["ProvisionedThroughput"])
    return api_index


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """AWS::S3::Bucket Rule → the S3 API's LifecycleRule (the two shapes differ)."""
    api_rule: dict[str, Any] = {"ID": rule.get("Id", ""), "Status": rule["Status"]}
    conditions: dict[str, Any] = {}
    if "Prefix" in rule:
        conditions["Prefix"] = rule["Prefix"]
    for size_key in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if size_key in rule:
            conditions[size_key] = int(rule[size_key])
    tags = list(rule.get("TagFilters", []))
    if len(conditions) + len(tags) > 1:
        filter_: dict[str, Any] = {"And": {**conditions, **({"Tags": tags} if tags else {})}}
    elif tags:
        filter_ = {"Tag": tags[0]}
    else:
        filter_ = conditions
    api_rule["Filter"] = filter_
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = bool(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        api_rule["Expiration"] = expiration
    noncurrent = dict(rule.get("NoncurrentVersionExpiration", {}))
    if "NoncurrentVersionExpirationInDays" in rule:
        noncurrent["NoncurrentDays"] = rule["NoncurrentVersionExpirationInDays"]
    if noncurrent:
        api_rule["NoncurrentVersionExpiration"] = _ints(noncurrent)
    if "AbortIncompleteMultipartUpload" in rule:
        api_rule["AbortIncompleteMultipartUpload"] = _ints(rule["AbortIncompleteMultipartUpload"])
    if "Transitions" in rule:
        api_rule["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]} for t in rule["Transitions"]
        ]
    if "NoncurrentVersionTransitions" in rule:
        api_rule["NoncurrentVersionTransitions"] = [
            {"NoncurrentDays": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in rule["NoncurrentVersionTransitions"]
        ]
    return api_rule


def _put_versioning(s3: Any, bucket: str, value: Mapping[str, Any]) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": value["Status"]})


def _put_encryption(s3: Any, bucket: str, value: Mapping[str, Any]) -> None:
    rules = []
    for rule in value["ServerSideEncryptionConfiguration"]:
        api_rule: dict[str, Any] = {}
        if "ServerSideEncryptionByDefault" in rule:
            api_rule["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
        if "BucketKeyEnabled" in rule:
            api_rule["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
        rules.append(api_rule)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})


def _put_public_access_block(s3: Any, bucket: str, value: Mapping[str, Any]) -> None:
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={k: bool(v) for k, v in value.items()})


def _put_ownership_controls(s3: Any, bucket: str, value: Mapping[str, Any]) -> None:
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": value["Rules"]})


def _put_lifecycle(s3: Any, bucket: str, value: Mapping[str, Any]) -> None:
    rules = [_lifecycle_rule(rule) for rule in value["Rules"]]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


def _put_tags(s3: Any, bucket: str, value: list[dict[str, str]]) -> None:
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": value})


_BUCKET_SETTINGS: dict[str, Callable[[Any, str, Any], None]] = {
    "VersioningConfiguration": _put_versioning,
    "BucketEncryption": _put_encryption,
    "PublicAccessBlockConfiguration": _put_public_access_block,
    "OwnershipControls": _put_ownership_controls,
    "LifecycleConfiguration": _put_lifecycle,
    "Tags": _put_tags,
}


def iter_env_lines(env: Mapping[str, str]) -> Iterator[str]:
    """The `NAME=value` lines of an environment, as `write_env_file` writes them."""
    from batchdrop_local import envfile

    return envfile.lines(env)
