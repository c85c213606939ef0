"""The cost of running batchdrop: the pipeline's own AWS bill per million requests,
computed from what a whole run on the local stack counted, beside the Anthropic batch bill
for the same work (and the synchronous Messages API bill for the same tokens).

The workload is a nightly job: FILES files of REQUESTS_FULL requests (--quick:
REQUESTS_QUICK) of about REQUEST_BYTES each, dropped into inbox/ and run to the end (every
job's manifest written, no batch open). The emulator's batches stay in progress until the
benchmark ends them, so the run is measured in phases:

- run: the submit invocations, the first checker tick, and the ticks that collect the
  results, write the manifests and close the jobs;
- poll: checker ticks while every batch is still in progress;
- idle: checker ticks with nothing open (the fixed cost: the schedule never stops);
- sweep: the inbox/ sweeper's scheduled run (also fixed), over the night's files.

Every AWS call a handler makes is counted, by phase, function, service and operation, at
`botocore.client.BaseClient._make_api_call`: that sees every client, including the one
Powertools' SecretsProvider builds from a boto3 session of its own (which the default-session
hook of `batchdrop_local.calls.CallCounter` cannot see). Calls the harness makes (uploads,
listings, the runner's polling) are not counted: only calls made inside an invocation are.
DynamoDB request units are computed from each call's parameters and answer (item sizes),
S3 requests are classed as AWS bills them, the handlers' stdout (Powertools logs and EMF
metrics) is measured as CloudWatch Logs ingestion, and Lambda GB-seconds are each
invocation's duration (as the local runner measures it, cold start included) rounded up to
the ms, times the function's MemorySize from template.yaml. Local durations against moto on
loopback stand in for durations against AWS.

The price table is bench/prices.py (list prices, no free tier). Storage is prorated by how
long template.yaml's lifecycle rules keep each prefix; what no rule expires (inbox/,
results/, errors/, and the table's items) is priced for UNRULED_KEPT_MONTHS month(s). The
checker ticks while a run's batches are in progress are priced as BATCH_WAIT_MINUTES of
ticks at the measured cost of a polling tick less that of an idle tick (the idle part is in
the fixed cost already).

    .venv/bin/python -m bench --only cost [--quick]
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from bench.prices import (
    AWS,
    BATCH_DISCOUNT,
    CACHE_READ,
    CACHE_WRITE_1H,
    CACHE_WRITE_5M,
    GB,
    MILLION,
    PRICES_AS_OF,
    AwsPrices,
    model_price,
)
from bench.table import Figure

AREA = "cost"
FILES = 10
REQUESTS_FULL = 10_000
REQUESTS_QUICK = 1_000
REQUEST_BYTES = 1_500
POLL_TICKS = 3
IDLE_TICKS = 5
SWEEPS = 2
# Most batches end within an hour (Anthropic's docs): the ticks of that hour, priced.
BATCH_WAIT_MINUTES = 60.0
# Prefixes no lifecycle rule expires (inbox/, results/, errors/) and the table's items:
# priced for this many months (after that, the same again each month until deleted).
UNRULED_KEPT_MONTHS = 1.0
# The hours in which a run publishes the metrics only a run publishes (billed by the hour).
RUN_METRIC_HOURS = 1.0
# Lambda's own START, END and REPORT lines per invocation (an estimate: not measured locally).
PLATFORM_LOG_BYTES = 300
# AWS's month: 730 hours.
MONTH_HOURS = 730.0
MONTH_DAYS = MONTH_HOURS / 24
GOAL_SHARE = 0.01  # the AWS bill under 1 % of the Anthropic batch bill

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------- Lambda


def billed_gb_seconds(duration_seconds: float, memory_mb: int) -> float:
    """One invocation's GB-seconds: its duration rounded up to the ms, times its memory."""
    billed_ms = max(1, math.ceil(duration_seconds * 1000 - 1e-9))
    return billed_ms / 1000 * memory_mb / 1024


# ---------------------------------------------------------------- S3

_S3_PUT_CLASS = frozenset(
    {"CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "RestoreObject"}
)


def s3_request_class(operation: str) -> str:
    """How S3 bills a request: "put" (PUT, COPY, POST, LIST), "get" (GET and the rest), or
    "free" (DELETE and aborting a multipart upload)."""
    if operation.startswith("Delete") or operation == "AbortMultipartUpload":
        return "free"
    if operation in _S3_PUT_CLASS or operation.startswith(("Put", "List")):
        return "put"
    return "get"


def lifecycle_expiry_days(rules: Sequence[Mapping[str, Any]], key: str, *, current: bool = True) -> float | None:
    """Days an object at `key` is kept before an enabled rule of the bucket's
    LifecycleConfiguration (CloudFormation's shape, intrinsics resolved) expires it: the
    current version (ExpirationInDays) or a noncurrent one (NoncurrentVersionExpiration).
    The earliest matching rule wins; None when no rule expires it."""
    found: list[float] = []
    for rule in rules:
        if rule.get("Status") != "Enabled":
            continue
        prefix = str(rule.get("Prefix") or rule.get("Filter", {}).get("Prefix") or "")
        if not key.startswith(prefix):
            continue
        if current and "ExpirationInDays" in rule:
            found.append(float(rule["ExpirationInDays"]))
        if not current:
            noncurrent = rule.get("NoncurrentVersionExpiration") or {}
            days = noncurrent.get("NoncurrentDays", rule.get("NoncurrentVersionExpirationInDays"))
            if days is not None:
                found.append(float(days))
    return min(found) if found else None


def gb_months(size_bytes: float, days: float) -> float:
    return size_bytes / GB * days / MONTH_DAYS


# ---------------------------------------------------------------- DynamoDB

_DYNAMO_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


def _typed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _DYNAMO_TYPES


def _number_bytes(number: Any) -> int:
    digits = str(number).lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def attribute_bytes(value: Any) -> int:
    """DynamoDB's size of one attribute value (the documented rules: strings and binaries by
    length, numbers about half their digits plus one, 1 byte for booleans and null, 3 bytes
    plus one per element for maps and lists). Takes the low-level typed form
    ({"S": "x"}) or the resource's plain values alike."""
    if _typed(value):
        kind, inner = next(iter(value.items()))
        if kind == "S":
            return len(inner.encode())
        if kind == "N":
            return _number_bytes(inner)
        if kind == "B":
            return len(inner)
        if kind in ("NULL", "BOOL"):
            return 1
        if kind == "M":
            return 3 + sum(len(name.encode()) + attribute_bytes(v) + 1 for name, v in inner.items())
        if kind == "L":
            return 3 + sum(attribute_bytes(v) + 1 for v in inner)
        if kind == "NS":
            return sum(_number_bytes(v) for v in inner)
        return sum(len(v.encode()) if isinstance(v, str) else len(v) for v in inner)  # SS, BS
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        return _number_bytes(value)
    if isinstance(value, Mapping):
        return 3 + sum(len(str(name).encode()) + attribute_bytes(v) + 1 for name, v in value.items())
    if isinstance(value, set | frozenset):
        return sum(attribute_bytes(v) for v in value)
    if isinstance(value, list | tuple):
        return 3 + sum(attribute_bytes(v) + 1 for v in value)
    return len(getattr(value, "value", b"")) if hasattr(value, "value") else len(str(value).encode())


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values."""
    return sum(len(name.encode()) + attribute_bytes(value) for name, value in item.items())


def _scalar(value: Any) -> str:
    return str(next(iter(value.values()))) if _typed(value) else str(value)


def key_of(item_or_key: Mapping[str, Any], key_names: Sequence[str] = ("PK", "SK")) -> tuple[str, ...] | None:
    if not all(name in item_or_key for name in key_names):
        return None
    return tuple(_scalar(item_or_key[name]) for name in key_names)


@dataclass(frozen=True)
class WriteItem:
    """One item a write request writes: its key, the bytes the request itself carries (a
    put's item; 0 when only the table knows the size, as for an update) and whether it was
    part of a transaction (2 units per KB instead of 1)."""

    key: tuple[str, ...] | None
    size: int
    transactional: bool = False


def write_items(operation: str, params: Mapping[str, Any], key_names: Sequence[str] = ("PK", "SK")) -> list[WriteItem]:
    """The items a DynamoDB write request writes (ConditionCheck items of a transaction
    included: they are billed as transactional writes)."""
    if operation == "PutItem":
        return [WriteItem(key_of(params["Item"], key_names), item_bytes(params["Item"]))]
    if operation in ("UpdateItem", "DeleteItem"):
        return [WriteItem(key_of(params["Key"], key_names), 0)]
    items: list[WriteItem] = []
    if operation == "BatchWriteItem":
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                if "PutRequest" in request:
                    put = request["PutRequest"]["Item"]
                    items.append(WriteItem(key_of(put, key_names), item_bytes(put)))
                else:
                    items.append(WriteItem(key_of(request["DeleteRequest"]["Key"], key_names), 0))
    if operation == "TransactWriteItems":
        for action in params.get("TransactItems", []):
            ((kind, body),) = action.items()
            if kind == "Put":
                items.append(WriteItem(key_of(body["Item"], key_names), item_bytes(body["Item"]), True))
            else:  # Update, Delete, ConditionCheck
                items.append(WriteItem(key_of(body["Key"], key_names), 0, True))
    return items


def write_units(items: Sequence[WriteItem], known_sizes: Mapping[tuple[str, ...], int]) -> float:
    """Write request units: per item, 1 per KB (at least 1) of the larger of what the request
    carries and the item's size in the table (an update is billed on the item's size), twice
    that in a transaction."""
    units = 0.0
    for item in items:
        size = max(item.size, known_sizes.get(item.key, 0) if item.key else 0)
        units += (2 if item.transactional else 1) * max(1, math.ceil(size / 1024))
    return units


def _read_units_of(sizes: Sequence[int]) -> int:
    return max(1, math.ceil(sum(sizes) / 4096))


def read_units(operation: str, params: Mapping[str, Any], response: Mapping[str, Any] | None) -> float:
    """Read request units of one DynamoDB read, from the items it returned: 1 per 4 KB
    strongly consistent, half that eventually consistent (every index query), twice that in
    a transaction; a GetItem or Query that finds nothing still costs the minimum. Query and
    Scan round the total; GetItem and each BatchGetItem key round per item."""
    consistent = 1.0 if params.get("ConsistentRead") else 0.5
    answer = response or {}
    if operation == "GetItem":
        item = answer.get("Item")
        return consistent * _read_units_of([item_bytes(item)] if item else [])
    if operation in ("Query", "Scan"):
        return consistent * _read_units_of([item_bytes(item) for item in answer.get("Items", [])])
    if operation == "BatchGetItem":
        units = 0.0
        for table, request in params.get("RequestItems", {}).items():
            factor = 1.0 if request.get("ConsistentRead") else 0.5
            found = answer.get("Responses", {}).get(table, [])
            missing = max(0, len(request.get("Keys", [])) - len(found))
            units += factor * (sum(_read_units_of([item_bytes(item)]) for item in found) + missing)
        return units
    if operation == "TransactGetItems":
        found = [entry.get("Item") or {} for entry in answer.get("Responses", [])]
        if not found:
            found = [{} for _ in params.get("TransactItems", [])]
        return 2.0 * sum(_read_units_of([item_bytes(item)] if item else []) for item in found)
    return 0.0


# ---------------------------------------------------------------- schedules


def runs_per_month(expression: str) -> float:
    """How many times a `rate(N unit)` schedule fires in AWS's 730-hour month."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise ValueError(f"cannot count the runs of {expression!r}: only rate(N unit) is supported")
    minutes = int(match[1]) * {"minute": 1, "hour": 60, "day": 1440}[match[2].rstrip("s")]
    return MONTH_HOURS * 60 / minutes


def alarm_metrics(template_resources: Mapping[str, Mapping[str, Any]]) -> int:
    """Alarm metrics CloudWatch bills for: one per single-metric alarm, one per MetricStat of
    a metric-math alarm (the expression itself is free)."""
    count = 0
    for resource in template_resources.values():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        metrics = resource.get("Properties", {}).get("Metrics")
        count += sum(1 for metric in metrics if "MetricStat" in metric) if metrics else 1
    return count


# ---------------------------------------------------------------- Anthropic


@dataclass(frozen=True)
class Tokens:
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any]) -> Tokens:
        """A manifest's usage figures: cache writes not attributed to a lifetime are 5-minute."""
        write_1h = int(usage.get("cache_creation_1h", 0))
        written = int(usage.get("cache_creation_input_tokens", 0))
        return cls(
            input=int(usage.get("input_tokens", 0)),
            output=int(usage.get("output_tokens", 0)),
            cache_write_5m=max(written - write_1h, int(usage.get("cache_creation_5m", 0))),
            cache_write_1h=write_1h,
            cache_read=int(usage.get("cache_read_input_tokens", 0)),
        )

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def anthropic_bill(usage_by_model: Mapping[str, Tokens], *, batch: bool = True) -> float:
    """USD for these tokens at the Message Batches price (50 % of standard) or the standard
    (synchronous Messages API) price; cache writes 1.25x/2x and reads 0.1x the input price."""
    total = 0.0
    for model, tokens in usage_by_model.items():
        price = model_price(model)
        input_equivalent = (
            tokens.input
            + tokens.cache_write_5m * CACHE_WRITE_5M
            + tokens.cache_write_1h * CACHE_WRITE_1H
            + tokens.cache_read * CACHE_READ
        )
        total += (input_equivalent * price.input + tokens.output * price.output) / MILLION
    return total * BATCH_DISCOUNT if batch else total


# ---------------------------------------------------------------- what AWS bills for


@dataclass(frozen=True)
class Consumption:
    """Billable quantities, before prices."""

    lambda_gb_seconds: float = 0.0
    lambda_invocations: float = 0.0
    dynamodb_write_units: float = 0.0
    dynamodb_read_units: float = 0.0
    dynamodb_gb_months: float = 0.0
    s3_put_class: float = 0.0
    s3_get_class: float = 0.0
    s3_gb_months: float = 0.0
    transfer_out_gb: float = 0.0
    logs_gb: float = 0.0
    traces: float = 0.0
    events: float = 0.0
    scheduler_invocations: float = 0.0
    metric_months: float = 0.0
    alarm_metric_months: float = 0.0
    secrets_calls: float = 0.0
    secret_months: float = 0.0

    def __add__(self, other: Consumption) -> Consumption:
        return Consumption(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, factor: float) -> Consumption:
        return Consumption(*(getattr(self, f.name) * factor for f in fields(self)))

    def above(self, other: Consumption) -> Consumption:
        """What this has beyond `other`, field by field (never below zero)."""
        return Consumption(*(max(0.0, getattr(self, f.name) - getattr(other, f.name)) for f in fields(self)))


# The components a bill is shown in; "other" gathers the rest.
COMPONENTS = (
    "Lambda GB-seconds",
    "Lambda invocations",
    "DynamoDB requests",
    "S3 requests",
    "S3 storage",
    "data transfer out",
)


def price(usage: Consumption, prices: AwsPrices = AWS) -> dict[str, float]:
    """USD by line of the AWS bill."""
    return {
        "Lambda GB-seconds": usage.lambda_gb_seconds * prices.lambda_gb_second,
        "Lambda invocations": usage.lambda_invocations * prices.lambda_request,
        "DynamoDB requests": usage.dynamodb_write_units * prices.dynamodb_write_unit
        + usage.dynamodb_read_units * prices.dynamodb_read_unit,
        "DynamoDB storage and PITR": usage.dynamodb_gb_months
        * (prices.dynamodb_gb_month + prices.dynamodb_pitr_gb_month),
        "S3 requests": usage.s3_put_class * prices.s3_put_class_request
        + usage.s3_get_class * prices.s3_get_class_request,
        "S3 storage": usage.s3_gb_months * prices.s3_gb_month,
        "data transfer out": usage.transfer_out_gb * prices.transfer_out_gb,
        "CloudWatch Logs ingestion": usage.logs_gb * prices.logs_ingested_gb,
        "CloudWatch metrics and alarms": usage.metric_months * prices.custom_metric_month
        + usage.alarm_metric_months * prices.alarm_metric_month,
        "X-Ray traces": usage.traces * prices.xray_trace,
        "EventBridge events and Scheduler": usage.events * prices.eventbridge_event
        + usage.scheduler_invocations * prices.scheduler_invocation,
        "Secrets Manager": usage.secrets_calls * prices.secrets_api_call + usage.secret_months * prices.secret_month,
    }


def grouped(bill: Mapping[str, float]) -> dict[str, float]:
    """The bill in COMPONENTS plus "other" (everything else)."""
    out = {name: bill.get(name, 0.0) for name in COMPONENTS}
    out["other"] = sum(value for name, value in bill.items() if name not in COMPONENTS)
    return out


# ---------------------------------------------------------------- one phase of a run


@dataclass
class PhaseCounts:
    """What the handlers did in one phase: invocations, AWS calls, log bytes, metrics."""

    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (function, service, operation)
    write_items: list[WriteItem] = field(default_factory=list)
    read_units: float = 0.0
    events: int = 0
    log_bytes: int = 0
    metrics: set[tuple[str, str]] = field(default_factory=set)  # (function, metric name)

    @property
    def invocations(self) -> int:
        return sum(len(durations) for durations in self.durations.values())

    def calls_of(self, service: str, operation: str | None = None) -> int:
        return sum(
            n for (_f, svc, op), n in self.calls.items() if svc == service and (operation is None or op == operation)
        )

    def consumption(self, memory_mb: Mapping[str, int], known_sizes: Mapping[tuple[str, ...], int]) -> Consumption:
        s3 = Counter()
        for (_function, service, operation), n in self.calls.items():
            if service == "s3":
                s3[s3_request_class(operation)] += n
        return Consumption(
            lambda_gb_seconds=sum(
                billed_gb_seconds(d, memory_mb[function]) for function, ds in self.durations.items() for d in ds
            ),
            lambda_invocations=self.invocations,
            dynamodb_write_units=write_units(self.write_items, known_sizes),
            dynamodb_read_units=self.read_units,
            s3_put_class=s3["put"],
            s3_get_class=s3["get"],
            logs_gb=(self.log_bytes + PLATFORM_LOG_BYTES * self.invocations) / GB,
            traces=self.invocations,
            events=self.events,
            secrets_calls=self.calls_of("secretsmanager", "GetSecretValue"),
        )


# ---------------------------------------------------------------- recording a run


class _LogSink(io.TextIOBase):
    """The handlers' stdout: counted (and dropped) during an invocation, passed on outside."""

    def __init__(self, recorder: _Recorder, forward: TextIO) -> None:
        super().__init__()
        self._recorder = recorder
        self._forward = forward
        self._line = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        phase = self._recorder.current()
        if phase is None:
            return self._forward.write(text)
        counts, function = phase
        counts.log_bytes += len(text.encode("utf-8", "replace"))
        self._line += text
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            if '"_aws"' in line:
                counts.metrics.update((function, name) for name in _emf_metric_names(line))
        return len(text)

    def flush(self) -> None:
        if self._recorder.current() is None:
            self._forward.flush()


def _emf_metric_names(line: str) -> list[str]:
    try:
        document = json.loads(line)
        directives = document["_aws"]["CloudWatchMetrics"]
        return [metric["Name"] for directive in directives for metric in directive["Metrics"]]
    except (ValueError, KeyError, TypeError):
        return []


def _stream_handlers() -> Iterator[logging.StreamHandler[Any]]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                yield handler


class _Recorder:
    """Counts what the handlers do, phase by phase (see the module's docstring)."""

    def __init__(self, key_names: Sequence[str]) -> None:
        self.key_names = tuple(key_names)
        self.phases: dict[str, PhaseCounts] = defaultdict(PhaseCounts)
        self.phase = "setup"
        self.invocation_phases: list[str] = []
        self._function: str | None = None
        self._original: Any = None
        self._sink = _LogSink(self, sys.stdout)

    def current(self) -> tuple[PhaseCounts, str] | None:
        return None if self._function is None else (self.phases[self.phase], self._function)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Recorder]:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        recorder = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            current = recorder.current()
            if current is None:
                return original(client, operation, params)
            return recorder._call(current, original, client, operation, params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

    def _call(
        self,
        current: tuple[PhaseCounts, str],
        original: Callable[..., Any],
        client: Any,
        operation: str,
        params: dict[str, Any],
    ) -> Any:
        counts, function = current
        service = client.meta.service_model.service_name
        counts.calls[(function, service, operation)] += 1
        if service == "events" and operation == "PutEvents":
            counts.events += len(params.get("Entries", []))
        if service != "dynamodb":
            return original(client, operation, params)
        # Before the call: boto3's resource layer rewrites the parameters in place.
        counts.write_items.extend(write_items(operation, params, self.key_names))
        response = None
        try:
            response = original(client, operation, params)
            return response
        finally:
            counts.read_units += read_units(operation, params, response)

    def handler_for(self, function: Any, root: Path) -> Callable[[dict[str, Any], Any], Any]:
        """The function's handler, imported on its first invocation (inside the runner's
        timing, as a cold start is), with its calls and output counted."""
        from batchdrop_local.runner import load_handler

        loaded: list[Callable[[dict[str, Any], Any], Any]] = []

        def invoke(event: dict[str, Any], context: Any) -> Any:
            self.invocation_phases.append(self.phase)
            with self._capturing(function.logical_id):
                if not loaded:
                    loaded.append(load_handler(function, root))
                return loaded[0](event, context)

        return invoke

    @contextlib.contextmanager
    def _capturing(self, function: str) -> Iterator[None]:
        saved_stdout = sys.stdout
        swapped = [
            (handler, handler.stream)
            for handler in _stream_handlers()
            if handler.stream in (saved_stdout, sys.__stdout__)
        ]
        for handler, _ in swapped:
            handler.setStream(self._sink)
        sys.stdout = self._sink
        self._function = function
        try:
            yield
        finally:
            self._function = None
            sys.stdout = saved_stdout
            for handler, stream in swapped:
                handler.setStream(stream)


# ---------------------------------------------------------------- the run


@dataclass
class Measured:
    """Everything a run counted, before prices."""

    files: int
    requests_per_file: int
    requests: int
    input_bytes: int
    batches: int
    statuses: Counter[str]
    memory_mb: dict[str, int]
    checker: str
    phases: dict[str, PhaseCounts]
    table_items: int
    table_bytes: int
    item_sizes: dict[tuple[str, ...], int]
    storage: dict[str, dict[str, int]]  # prefix -> current_bytes, noncurrent_bytes, objects
    expiry_days: dict[str, float | None]  # prefix -> days its current objects are kept
    noncurrent_days: float | None
    transfer_out_bytes: int
    usage_by_model: dict[str, Tokens]
    manifest_batch_usd: float
    checker_rate: str
    sweeper_rate: str
    alarm_metrics: int
    anthropic_calls: dict[str, int]
    seconds: float


def _upload(stack: Any, tmp: Path, files: int, per_file: int) -> int:
    from batchdrop_local.synth import write_requests

    total = 0
    s3 = stack.client("s3")
    for index in range(files):
        path = tmp / f"part-{index:02d}.jsonl"
        total += write_requests(path, per_file, per_file * REQUEST_BYTES)
        with path.open("rb") as body:
            s3.put_object(Bucket=stack.bucket_name, Key=f"inbox/nightly/part-{index:02d}.jsonl", Body=body)
        path.unlink()
    return total


def _storage(stack: Any) -> dict[str, dict[str, int]]:
    s3 = stack.client("s3")
    storage: dict[str, dict[str, int]] = defaultdict(Counter)  # type: ignore[arg-type]
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=stack.bucket_name):
        for version in page.get("Versions", []):
            prefix = version["Key"].split("/", 1)[0] + "/"
            kind = "current_bytes" if version["IsLatest"] else "noncurrent_bytes"
            storage[prefix][kind] += int(version["Size"])
            storage[prefix]["objects" if version["IsLatest"] else "noncurrent_objects"] += 1
    return {prefix: dict(figures) for prefix, figures in sorted(storage.items())}


def _table_sizes(stack: Any, key_names: Sequence[str]) -> dict[tuple[str, ...], int]:
    sizes: dict[tuple[str, ...], int] = {}
    for page in stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table_name):
        for item in page["Items"]:
            key = key_of(item, key_names)
            if key is not None:
                sizes[key] = item_bytes(item)
    return sizes


def _manifests(stack: Any) -> list[dict[str, Any]]:
    s3 = stack.client("s3")
    manifests = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket_name, Prefix="results/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/manifest.json"):
                body = s3.get_object(Bucket=stack.bucket_name, Key=item["Key"])["Body"].read()
                manifests.append(json.loads(body))
    return manifests


def _schedule_expression(stack: Any, function: Any) -> str:
    ((_, event),) = function.events_of_type("ScheduleV2", "Schedule").items()
    return str(stack.resolver.resolve_str(event["Properties"]["ScheduleExpression"]))


def measure(files: int, per_file: int) -> Measured:
    """One whole run of `files` files of `per_file` requests on the local stack, counted."""
    from batchdrop_local.runner import LocalRunner
    from batchdrop_local.stack import LocalStack

    started = time.monotonic()
    with contextlib.ExitStack() as exits:
        # Batches stay in progress until they are ended below (an hour of latency).
        stack = exits.enter_context(LocalStack(latency=3600))
        table = stack.template.properties(next(iter(stack.template.resources_of_type("AWS::DynamoDB::Table"))))
        key_names = [key["AttributeName"] for key in table["KeySchema"]]
        recorder = exits.enter_context(_Recorder(key_names).installed())
        functions = stack.template.functions()
        runner = LocalRunner(
            stack,
            handlers={name: recorder.handler_for(spec, stack.template_root) for name, spec in functions.items()},
            poll_seconds=0.05,
            retry_delay_seconds=0.1,
        )
        tmp = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="bench-cost-")))
        input_bytes = _upload(stack, tmp, files, per_file)
        print(
            f"cost: {files} files x {per_file:,} requests ({input_bytes / 1024**2:.0f} MB) uploaded;"
            " submitting and collecting",
            flush=True,
        )

        recorder.phase = "run"
        delivered = runner.deliver_pending()
        if delivered != files or runner.failures:
            raise RuntimeError(f"{delivered} of {files} uploads submitted; failures: {runner.failures}")
        runner.tick()  # the first tick (the checker's cold start): every batch still in progress
        recorder.phase = "poll"
        for _ in range(POLL_TICKS):
            runner.tick()
        recorder.phase = "run"
        ended = stack.emulator_control().end()
        if not runner.drain(timeout=1200):
            raise RuntimeError("the run did not finish within 20 minutes")
        recorder.phase = "idle"
        for _ in range(IDLE_TICKS):
            runner.tick()
        recorder.phase = "sweep"
        with _sweep_every_version(stack):
            sweeps = [runner.sweep() for _ in range(SWEEPS)]
        recorder.phase = "done"
        if any(sweep.result.get("started") for sweep in sweeps):
            raise RuntimeError(f"a sweep started a job that already had one: {[s.result for s in sweeps]}")
        failed = [invocation for invocation in runner.invocations if invocation.error]
        if failed or runner.failures:
            raise RuntimeError(f"invocations failed: {[(i.function_logical_id, i.error) for i in failed]}")
        for phase, invocation in zip(recorder.invocation_phases, runner.invocations, strict=True):
            recorder.phases[phase].durations[invocation.function_logical_id].append(invocation.duration_seconds)
        counted = recorder.phases["run"]
        missed = [svc for svc in ("s3", "dynamodb", "events", "secretsmanager") if not counted.calls_of(svc)]
        if missed:
            raise RuntimeError(f"no {', '.join(missed)} call was counted in the run: the recorder missed a client")

        manifests = _manifests(stack)
        usage: dict[str, Tokens] = {}
        for manifest in manifests:
            for model, figures in manifest["usage"]["by_model"].items():
                usage[model] = usage.get(model, Tokens()) + Tokens.from_usage(figures)
        storage = _storage(stack)
        item_sizes = _table_sizes(stack, key_names)
        bucket_id = next(iter(stack.template.resources_of_type("AWS::S3::Bucket")))
        bucket = stack.resolver.resolve(stack.template.properties(bucket_id))
        rules = bucket.get("LifecycleConfiguration", {}).get("Rules", [])
        checker = runner.scheduled_function
        return Measured(
            files=files,
            requests_per_file=per_file,
            requests=sum(int(m["counts"]["requests"]) for m in manifests),
            input_bytes=input_bytes,
            batches=len(ended),
            statuses=Counter(m["status"] for m in manifests),
            memory_mb={name: spec.memory_mb for name, spec in functions.items()},
            checker=checker.logical_id,
            phases=dict(recorder.phases),
            table_items=len(item_sizes),
            table_bytes=sum(item_sizes.values()),
            item_sizes=item_sizes,
            storage=storage,
            expiry_days={prefix: lifecycle_expiry_days(rules, prefix) for prefix in storage},
            noncurrent_days=lifecycle_expiry_days(rules, "", current=False),
            transfer_out_bytes=storage.get("work/", {}).get("current_bytes", 0),
            usage_by_model=usage,
            manifest_batch_usd=sum(float(m["cost"]["batch_usd"]) for m in manifests),
            checker_rate=_schedule_expression(stack, checker),
            sweeper_rate=_schedule_expression(stack, runner.submit_function),
            alarm_metrics=alarm_metrics(stack.template.resources),
            anthropic_calls=dict(stack.emulator_control().counters().get("http_requests", {})),
            seconds=time.monotonic() - started,
        )


def _sweep_every_version(stack: Any) -> contextlib.AbstractContextManager[None]:
    """The sweep leaves versions younger than ten minutes to their events: let it see the
    night's files, as the sweeps of the following days do."""
    from batchdrop.domain.timings import Timings
    from batchdrop_local.pipeline_settings import pipeline_settings

    return pipeline_settings(stack, timings=Timings(sweep_min_age=0.0))


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class Model:
    """The run's consumption turned into what a month and a million requests cost."""

    run: Consumption  # the whole run, storage and transfer included, waiting ticks excluded
    waiting: Consumption  # the ticks while the run's batches are in progress (beyond idle)
    per_million: Consumption  # (run + waiting) per million requests
    idle_tick: Consumption
    sweep: Consumption
    fixed_month: Consumption
    ticks_per_month: float
    sweeps_per_month: float
    fixed_metrics: int
    storage_detail: dict[str, tuple[int, float]]  # prefix -> bytes, days kept


def model(measured: Measured) -> Model:
    phases, memory, sizes = measured.phases, measured.memory_mb, measured.item_sizes

    def of(phase: str) -> Consumption:
        return phases[phase].consumption(memory, sizes) if phase in phases else Consumption()

    idle_tick = of("idle").scaled(1 / IDLE_TICKS)
    poll_tick = of("poll").scaled(1 / POLL_TICKS)
    sweep = of("sweep").scaled(1 / SWEEPS)
    ticks_per_month = runs_per_month(measured.checker_rate)
    sweeps_per_month = runs_per_month(measured.sweeper_rate)
    waiting_ticks = BATCH_WAIT_MINUTES / (MONTH_HOURS * 60 / ticks_per_month)
    waiting = poll_tick.above(idle_tick).scaled(waiting_ticks)

    storage_detail: dict[str, tuple[int, float]] = {}
    s3_gb_months = 0.0
    for prefix, figures in measured.storage.items():
        days = measured.expiry_days.get(prefix)
        kept = days if days is not None else UNRULED_KEPT_MONTHS * MONTH_DAYS
        storage_detail[prefix] = (figures.get("current_bytes", 0), kept)
        s3_gb_months += gb_months(figures.get("current_bytes", 0), kept)
        noncurrent = figures.get("noncurrent_bytes", 0)
        if noncurrent:
            days_noncurrent = measured.noncurrent_days if measured.noncurrent_days is not None else MONTH_DAYS
            storage_detail[f"{prefix} (noncurrent)"] = (noncurrent, days_noncurrent)
            s3_gb_months += gb_months(noncurrent, days_noncurrent)
    fixed_names = set().union(*(phases[p].metrics for p in ("idle", "sweep") if p in phases))
    run_only = set().union(*(phases[p].metrics for p in ("run", "poll") if p in phases)) - fixed_names
    # The poll phase's ticks are the benchmark's own sample of a waiting tick: the run's
    # waiting is priced from them (`waiting`), so they stay out of `run`.
    run = of("run") + Consumption(
        s3_gb_months=s3_gb_months,
        dynamodb_gb_months=gb_months(measured.table_bytes, UNRULED_KEPT_MONTHS * MONTH_DAYS),
        transfer_out_gb=measured.transfer_out_bytes / GB,
        metric_months=len(run_only) * RUN_METRIC_HOURS / MONTH_HOURS,
    )
    fixed_month = (
        idle_tick.scaled(ticks_per_month)
        + sweep.scaled(sweeps_per_month)
        + Consumption(
            scheduler_invocations=ticks_per_month + sweeps_per_month,
            metric_months=len(fixed_names),
            alarm_metric_months=measured.alarm_metrics,
            secret_months=1,
        )
    )
    return Model(
        run=run,
        waiting=waiting,
        per_million=(run + waiting).scaled(MILLION / measured.requests),
        idle_tick=idle_tick,
        sweep=sweep,
        fixed_month=fixed_month,
        ticks_per_month=ticks_per_month,
        sweeps_per_month=sweeps_per_month,
        fixed_metrics=len(fixed_names),
        storage_detail=storage_detail,
    )


# ---------------------------------------------------------------- figures


def figures(measured: Measured, prices: AwsPrices = AWS) -> list[Figure]:
    result = model(measured)
    per_million = price(result.per_million, prices)
    aws = sum(per_million.values())
    scale = MILLION / measured.requests
    batch_bill = anthropic_bill(measured.usage_by_model, batch=True) * scale
    standard_bill = anthropic_bill(measured.usage_by_model, batch=False) * scale
    fixed = price(result.fixed_month, prices)
    fixed_total = sum(fixed.values())
    models = ", ".join(sorted(measured.usage_by_model))
    workload = (
        f"{measured.files} files x {measured.requests_per_file:,} requests of ~{REQUEST_BYTES / 1000:.1f} KB, {models}"
    )
    run_phase = measured.phases["run"]
    per_1k = 1000 / measured.requests
    idle = measured.phases.get("idle", PhaseCounts())
    idle_ms = 1000 * sum(sum(d) for d in idle.durations.values()) / max(1, idle.invocations)
    out = [
        Figure(
            AREA,
            f"AWS cost of the pipeline per million requests ({workload})",
            aws,
            "$",
            baseline="Anthropic batch bill for the same work",
            baseline_value=batch_bill,
            ratio=batch_bill / aws if aws else None,
            goal=f"AWS under {GOAL_SHARE:.0%} of the batch bill",
            met=aws < GOAL_SHARE * batch_bill,
        ),
        Figure(
            AREA,
            "batch bill + AWS per million requests",
            batch_bill + aws,
            "$",
            baseline="synchronous Messages API bill for the same tokens",
            baseline_value=standard_bill,
            ratio=standard_bill / (batch_bill + aws),
        ),
    ]
    for component, dollars in grouped(per_million).items():
        detail = {
            "Lambda GB-seconds": " (local durations against moto x MemorySize)",
            "data transfer out": " (create bodies to api.anthropic.com)",
            "S3 storage": " (work/ until it expires, the rest 1 month)",
            "other": " (Logs, X-Ray, EventBridge, Secrets Manager, metrics, table storage)",
        }.get(component, "")
        out.append(Figure(AREA, f"per million requests: {component}{detail}", dollars, "$"))
    waiting = sum(price(result.waiting.scaled(scale), prices).values())
    out.append(
        Figure(
            AREA,
            f"of which checker ticks while batches run ({BATCH_WAIT_MINUTES:.0f} min modeled, beyond idle)",
            waiting,
            "$",
        )
    )
    out += [
        Figure(
            AREA,
            f"fixed cost per month, idle: {result.ticks_per_month:,.0f} ticks ({measured.checker_rate}),"
            f" {result.sweeps_per_month:,.0f} sweeps ({measured.sweeper_rate}), {result.fixed_metrics} custom metrics,"
            f" {measured.alarm_metrics} alarm metrics, 1 secret",
            fixed_total,
            "$",
        ),
        Figure(
            AREA,
            "of which Lambda (ticks and sweeps: GB-s and invocations)",
            fixed["Lambda GB-seconds"] + fixed["Lambda invocations"],
            "$",
        ),
        Figure(AREA, "of which CloudWatch custom metrics and alarms", fixed["CloudWatch metrics and alarms"], "$"),
        Figure(AREA, "idle checker tick: duration (local)", idle_ms, "ms"),
        Figure(AREA, "idle checker tick: DynamoDB calls", idle.calls_of("dynamodb") / IDLE_TICKS, "calls"),
        Figure(AREA, "DynamoDB write units per 1,000 requests", result.run.dynamodb_write_units * per_1k, "units"),
        Figure(AREA, "DynamoDB read units per 1,000 requests", result.run.dynamodb_read_units * per_1k, "units"),
        Figure(AREA, "DynamoDB calls per batch (run)", run_phase.calls_of("dynamodb") / measured.batches, "calls"),
        Figure(AREA, "S3 PUT/COPY/POST/LIST requests per 1,000 requests", result.run.s3_put_class * per_1k, "requests"),
        Figure(AREA, "S3 GET and other requests per 1,000 requests", result.run.s3_get_class * per_1k, "requests"),
        Figure(AREA, "Lambda GB-seconds per 1,000 requests", result.run.lambda_gb_seconds * per_1k, "GB-s"),
        Figure(
            AREA,
            "bytes kept in S3 per request (all prefixes)",
            sum(bytes_ for bytes_, _ in result.storage_detail.values()) / measured.requests,
            "B",
        ),
    ]
    _print_details(measured, result, per_million, fixed, batch_bill)
    return out


def _print_details(
    measured: Measured, result: Model, per_million: Mapping[str, float], fixed: Mapping[str, float], batch_bill: float
) -> None:
    """What the figures are made of, in a few lines."""
    print(
        f"cost: {measured.requests:,} requests in {measured.batches} batches, {dict(measured.statuses)},"
        f" run in {measured.seconds:.0f} s; prices: {PRICES_AS_OF}",
        flush=True,
    )
    for phase_name in ("run", "poll", "idle", "sweep"):
        phase = measured.phases.get(phase_name)
        if phase is None:
            continue
        by_function: dict[tuple[str, str], list[str]] = defaultdict(list)
        for (function, service, operation), n in sorted(phase.calls.items()):
            by_function[(function, service)].append(f"{operation} {n}")
        invocations = ", ".join(f"{f} {len(d)} ({sum(d):.2f} s)" for f, d in sorted(phase.durations.items()))
        print(f"  {phase_name}: invocations {invocations}; log {phase.log_bytes:,} B", flush=True)
        for (function, service), operations in by_function.items():
            print(f"    {function} {service}: {', '.join(operations)}", flush=True)
    storage = ", ".join(
        f"{prefix} {size / 1024**2:.1f} MB x {days:.0f} d" for prefix, (size, days) in result.storage_detail.items()
    )
    print(f"  storage: {storage}; table {measured.table_items} items, {measured.table_bytes:,} B", flush=True)
    print(f"  Anthropic API calls: {measured.anthropic_calls}", flush=True)
    print(
        "  per million requests: "
        + ", ".join(f"{name} ${value:.4f}" for name, value in sorted(per_million.items(), key=lambda kv: -kv[1])),
        flush=True,
    )
    print(
        "  fixed per month: "
        + ", ".join(f"{name} ${value:.4f}" for name, value in sorted(fixed.items(), key=lambda kv: -kv[1]) if value),
        flush=True,
    )
    manifest_bill = measured.manifest_batch_usd * MILLION / measured.requests
    if abs(manifest_bill - batch_bill) > 0.01 * batch_bill:
        print(f"  note: the manifests price the batch bill at ${manifest_bill:.2f} per million", flush=True)


def run(quick: bool) -> list[Figure]:
    measured = measure(FILES, REQUESTS_QUICK if quick else REQUESTS_FULL)
    return figures(measured)


__all__ = [
    "Consumption",
    "Measured",
    "PhaseCounts",
    "Tokens",
    "WriteItem",
    "alarm_metrics",
    "anthropic_bill",
    "attribute_bytes",
    "billed_gb_seconds",
    "figures",
    "gb_months",
    "item_bytes",
    "lifecycle_expiry_days",
    "measure",
    "model",
    "price",
    "read_units",
    "run",
    "runs_per_month",
    "s3_request_class",
    "write_items",
    "write_units",
]
