"""The local runner: the wiring AWS does and moto does not. It turns every new object version
under a function's S3 trigger prefixes (inbox/, cancel/) into the S3 notification Lambda would
receive, ticks the checker and runs the S3-triggered function's sweep with EventBridge
Scheduler's payloads, and calls both handlers exactly as Lambda does: `handler(event, context)`,
asynchronously, with Lambda's async retries and the template's on-failure destination.

Events are files too: `load_event("s3-put-inbox")` reads `events/s3-put-inbox.json`, the same
payloads `sam local invoke -e` uses.

**How new versions are found.** The bucket notifies the runner, and the runner looks up only
the key it was told about. On creation the runner makes an SQS queue of its own on the same
moto server and adds to the bucket's notification configuration one queue configuration per
S3 trigger of template.yaml (its prefix and suffix filter and its event types, as SAM merges
them). moto sends those notifications synchronously, inside the PutObject, CopyObject or
CompleteMultipartUpload call that created the object, so the message is in the queue when
the upload returns. The watcher thread long-polls the queue; `discover()` (and so
`deliver_pending()`) drains it without waiting.

moto's notifications carry no versionId and no sequencer, so for each message the runner lists
the versions of that one key (`list_object_versions(Prefix=key)`, kept to the exact key) and
turns each version it has not seen into one `ObjectCreated` event, oldest first, with the
version id, size and eTag S3 reports and a sequencer that grows with each event. The message's
event name goes to the version whose eTag it names (Put, Copy, CompleteMultipartUpload);
another new version found on the way gets Put, or CompleteMultipartUpload for a multipart eTag
(moto notifies a completed multipart upload twice, as Put and then CompleteMultipartUpload: the
version is delivered once, as CompleteMultipartUpload).

Why not poll: listing every version under inbox/ on a timer re-reads the whole prefix, and
moto 5.2 deep-copied every version of the bucket on each ListObjectVersions and kept the
copies (temporary files, for objects over about 5 MB) until the server stopped, so a large
file left in inbox/ filled the disk at a few hundred MB a second. `LocalStack` now has moto
share the stored bytes with its listings instead; and a notification costs one small message
and one listing of one key, so an idle runner does no S3 call at all. Nothing in the runner
lists a whole prefix on a timer: `drain()`'s default idle check heads the manifests it waits
for instead of listing results/.

Versions present when the runner is created predate its "notification configuration" and are
never delivered: it lists the trigger prefixes once, after subscribing, and counts what it
finds as seen. A version is delivered once; `redeliver()` sends a duplicate on purpose, and
`lose_event()` (or the `lose_events` predicate) drops one, as S3 or Lambda's async queue may:
only a sweep finds that object.

**An object the runner cannot handle is skipped, not retried.** A key whose versions cannot be
listed (moto answers 500 to a ListObjectVersions that would return a key with a control
character, as XML 1.0 cannot carry it), or whose notification cannot be read, is reported once
(a warning, and `skipped[key]` gives the reason) and its notifications are dropped; every other
key still gets its events. The startup listing falls back to one key at a time when a whole
prefix cannot be listed, so a bad key already in inbox/ does not stop the runner either.

A runner's queue and queue configurations live as long as the runner: a new runner on the same
stack removes those of runners of this process that no longer exist (tests make one per test).
Runners alive at once each get every notification, as each polled on its own before.

**The scheduled event.** SAM's `ScheduleV2` creates an EventBridge Scheduler schedule whose
Lambda target receives the schedule's `Input` verbatim, after Scheduler substitutes its
context attributes (`<aws.scheduler.schedule-arn>`, `<aws.scheduler.scheduled-time>`,
`<aws.scheduler.execution-id>`, `<aws.scheduler.attempt-number>`); template.yaml sets an
Input, so the checker gets that plain object, not an EventBridge envelope. Without an Input
the runner sends `{}`. For a v1 `Schedule` event (an EventBridge rule) it sends the
"Scheduled Event" envelope (or the rule's Input). Two functions have a schedule: the one
without an S3 event is the checker (`tick()`); the S3-triggered one's schedule is the inbox/
sweep (`sweep()`), run in the background only when `sweep_seconds` is given.

**Environment.** Both handlers run in this process, and each gets its own environment
without os.environ changing: the runner calls a handler inside
`batchdrop.config.invocation_environment(LocalStack.function_env(...))`, a context variable
of the invoking thread that `Settings.from_env()` reads (and os.environ is what it reads on
Lambda or under `sam local invoke`). The adapters take endpoint, region and credentials from
those Settings, and each log line's `service` is its own function's. So submit and checker
invocations overlap, as on AWS (the checker still one at a time: its reserved concurrency
is 1), and a test may change os.environ while one is under way. What Powertools reads from
os.environ once per process (metrics namespace, tracing off, log level; the same for both
functions) is set by `LocalRunner` as process defaults, before its first invocation.
"""

from __future__ import annotations

import contextvars
import fnmatch
import importlib.util
import json
import logging
import os
import secrets
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import quote_plus, unquote_plus

from batchdrop import config
from batchdrop_local.lambda_context import LocalLambdaContext
from batchdrop_local.stack import REPO_ROOT, FunctionSpec, LocalStack

EVENTS_DIR = REPO_ROOT / "events"

Handler = Callable[[dict[str, Any], Any], Any]

SCHEDULE_EVENT_TYPES = ("ScheduleV2", "Schedule")
# Lambda's defaults for asynchronous invocation when a function has no EventInvokeConfig.
DEFAULT_ASYNC_RETRIES = 2
# Variables a Lambda function never has, even if the shell that started the runner does.
HIDDEN_FROM_HANDLERS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
# What the fixtures and generated events show for the caller and the bucket owner.
LOCAL_PRINCIPAL_ID = "AWS:AIDALOCALBATCHDROPUSER"
LOCAL_OWNER_ID = "A1LOCALBATCHDROPOWNER"
SOURCE_IP = "127.0.0.1"
# How long the watcher's ReceiveMessage waits for a notification (SQS long polling); also the
# longest `stop()` waits for the watcher.
WATCH_WAIT_SECONDS = 1
# Characters XML 1.0 cannot carry: moto cannot list a key that has one (it answers 500).

# Queue ARN → the live runner it belongs to; a runner's queue outlives it only until the next
# runner on the same stack subscribes (see `_subscribe`).
_live_queues: weakref.WeakValueDictionary[str, LocalRunner] = weakref.WeakValueDictionary()
_subscribe_lock = threading.Lock()  # the bucket's notification configuration is read, then written

_log = logging.getLogger(__name__)


def load_event(name: str) -> dict[str, Any]:
    """`events/<name>.json` as a dict: the payloads `sam local invoke -e` and the tests share."""
    path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
    return dict(json.loads(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class ObjectVersion:
    """One object version as `list_object_versions` reports it."""

    bucket: str
    key: str
    version_id: str
    size: int
    etag: str
    last_modified: datetime

    @property
    def multipart(self) -> bool:
        return "-" in self.etag


def build_s3_event(
    version: ObjectVersion,
    *,
    region: str,
    sequencer: str,
    configuration_id: str,
    event_name: str = "ObjectCreated:Put",
    request_id: str | None = None,
) -> dict[str, Any]:
    """The notification S3 sends to Lambda for one created object version (event 2.1).

    The key is URL-encoded as S3 encodes it (form encoding: a space is `+`, a `+` is `%2B`;
    the `/` separators stay), so handlers must `unquote_plus` it, as on AWS."""
    request_id = request_id or secrets.token_hex(8).upper()
    s3_object: dict[str, Any] = {
        "key": quote_plus(version.key, safe="/"),
        "size": version.size,
        "eTag": version.etag,
    }
    if version.version_id != "null":  # an unversioned bucket's events carry no versionId
        s3_object["versionId"] = version.version_id
    s3_object["sequencer"] = sequencer
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": _iso_millis(version.last_modified),
                "eventName": event_name,
                "userIdentity": {"principalId": LOCAL_PRINCIPAL_ID},
                "requestParameters": {"sourceIPAddress": SOURCE_IP},
                "responseElements": {
                    "x-amz-request-id": request_id,
                    "x-amz-id-2": secrets.token_urlsafe(48),
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": version.bucket,
                        "ownerIdentity": {"principalId": LOCAL_OWNER_ID},
                        "arn": f"arn:aws:s3:::{version.bucket}",
                    },
                    "object": s3_object,
                },
            }
        ]
    }


def build_scheduler_event(
    schedule_input: str | None,
    *,
    schedule_arn: str,
    scheduled_time: datetime,
    execution_id: str | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """What EventBridge Scheduler invokes a Lambda target with: the schedule's Input with its
    context attributes substituted, or `{}` when the schedule has no Input."""
    if not schedule_input:
        return {}
    substitutions = {
        "<aws.scheduler.schedule-arn>": schedule_arn,
        "<aws.scheduler.scheduled-time>": scheduled_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "<aws.scheduler.execution-id>": execution_id or secrets.token_hex(8),
        "<aws.scheduler.attempt-number>": str(attempt),
    }
    payload = schedule_input
    for placeholder, value in substitutions.items():
        payload = payload.replace(placeholder, value)
    return dict(json.loads(payload))


def build_rule_schedule_event(
    rule_input: str | None, *, rule_arn: str, region: str, account_id: str, time_: datetime
) -> dict[str, Any]:
    """What an EventBridge rule (SAM's v1 `Schedule`) sends: its Input, or the envelope."""
    if rule_input:
        return dict(json.loads(rule_input))
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": time_.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


def _iso_millis(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------- triggers


@dataclass(frozen=True)
class S3Trigger:
    """One S3 event source of a function: the SAM event's prefix/suffix filter and event types."""

    function_logical_id: str
    event_name: str
    prefix: str
    suffix: str
    event_patterns: tuple[str, ...]

    @classmethod
    def of_function(cls, function: FunctionSpec) -> list[S3Trigger]:
        triggers = []
        for event_name, event in function.events_of_type("S3").items():
            properties = event.get("Properties", {})
            rules = properties.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            by_name = {str(rule["Name"]).lower(): str(rule["Value"]) for rule in rules}
            events = properties.get("Events", [])
            triggers.append(
                cls(
                    function_logical_id=function.logical_id,
                    event_name=event_name,
                    prefix=by_name.get("prefix", ""),
                    suffix=by_name.get("suffix", ""),
                    event_patterns=tuple([events] if isinstance(events, str) else events),
                )
            )
        return triggers

    @property
    def configuration_id(self) -> str:
        return f"{self.function_logical_id}{self.event_name}"

    def fires_for(self, key: str, s3_event_name: str) -> bool:
        return (
            key.startswith(self.prefix)
            and key.endswith(self.suffix)
            and any(fnmatch.fnmatchcase(f"s3:{s3_event_name}", pattern) for pattern in self.event_patterns)
        )


# ---------------------------------------------------------------- records


@dataclass
class Invocation:
    """One attempt at one event: what a CloudWatch log stream would show of it."""

    function_logical_id: str
    request_id: str
    attempt: int
    event: dict[str, Any]
    duration_seconds: float = 0.0
    result: Any = None
    error: str | None = None


@dataclass
class FailedEvent:
    """An event whose every attempt failed (what Lambda sends to the on-failure destination)."""

    function_logical_id: str
    event: dict[str, Any]
    attempts: int
    error: str


@dataclass
class _Pending:
    trigger: S3Trigger
    version: ObjectVersion
    event: dict[str, Any]


class RunnerObserver(Protocol):
    """What the runner tells as it works (`batchdrop_local.narrator.Narrator` is one)."""

    def delivering(self, event: Mapping[str, Any]) -> None:
        """An S3 event is about to be handed to the S3-triggered function."""

    def invoked(self, function: str, attempt: int, error: str | None, result: Any = None) -> None:
        """An invocation ended; `error` is set if it failed, `result` is what the handler returned."""

    def event_failed(self, function: str, attempts: int, error: str, destination: str | None) -> None:
        """Every attempt at an event failed; `destination` names the failure queue it went to."""


class HandlerLoadError(RuntimeError):
    """The handler file named by template.yaml is missing or does not define the handler."""


def load_handler(function: FunctionSpec, root: Path = REPO_ROOT) -> Handler:
    """Import `<CodeUri>/<module>.py` under a module name of its own (both functions' files are
    called app.py, as on Lambda) and return its handler. The code directory is on sys.path
    only while the module imports, and its sibling modules are private to it: import them at
    module level."""
    module_path, _, attribute = function.handler.rpartition(".")
    code_dir = (root / function.code_uri).resolve()
    file = code_dir / (module_path.replace(".", "/") + ".py")
    if not file.is_file():
        raise HandlerLoadError(f"{function.logical_id}: {file} does not exist (Handler: {function.handler})")
    module_name = f"_batchdrop_lambda_{function.logical_id}_{module_path.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"{function.logical_id}: cannot load {file}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    already_loaded = set(sys.modules)
    sys.path.insert(0, str(code_dir))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(code_dir))
        # Sibling modules stay bound in the handler module but leave sys.modules, so the other
        # function's same-named siblings import fresh, as in a Lambda environment of its own.
        for name in set(sys.modules) - already_loaded:
            if _is_inside(getattr(sys.modules[name], "__file__", None), code_dir):
                del sys.modules[name]
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise HandlerLoadError(f"{function.logical_id}: {file} has no callable {attribute!r}")
    return handler


# ---------------------------------------------------------------- the runner


class LocalRunner:
    """Delivers S3 notifications to the S3-triggered function and ticks the scheduled one.

    `submit_handler`/`checker_handler` (any `handler(event, context)` callables) stand in for
    the function with S3 events and the one with only a schedule in template.yaml; `handlers`
    maps any other logical id. A function without one is imported from its CodeUri on its
    first invocation.

    Tests drive it synchronously (`run_once()`, `deliver_pending()`, `tick()`, `sweep()`,
    `drain()`); `start()` (or `with`) adds the background threads `batchdrop local up` uses: a
    watcher long-polling the runner's notification queue, a worker invoking the S3-triggered
    function (it waits up to `poll_seconds` for work, as `drain()` between rounds), a ticker
    every `tick_seconds` and, if `sweep_seconds` is given, a sweeper. Failed attempts are
    retried after `retry_delay_seconds`, doubling, as many times as the function's
    EventInvokeConfig allows (2 when it has none).

    `lose_events(key, version_id)`, if given, is asked about every new version: when it
    returns True the version's notification is dropped (`lost_events` lists them). `skipped`
    maps each key whose notifications the runner cannot handle to the reason. An `observer`
    is told of each S3 event delivered, each invocation and each event that failed for good
    (it then reports the failures, and the runner logs them at DEBUG only)."""

    def __init__(
        self,
        stack: LocalStack,
        submit_handler: Handler | None = None,
        checker_handler: Handler | None = None,
        *,
        handlers: Mapping[str, Handler] | None = None,
        tick_seconds: float = 2.0,
        poll_seconds: float = 0.2,
        retry_delay_seconds: float = 1.0,
        sweep_seconds: float | None = None,
        lose_events: Callable[[str, str], bool] | None = None,
        observer: RunnerObserver | None = None,
    ) -> None:
        self.stack = stack
        self.observer = observer
        self.tick_seconds = tick_seconds
        self.poll_seconds = poll_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self.sweep_seconds = sweep_seconds
        self.lose_events = lose_events
        functions = stack.template.functions()
        self.triggers = [trigger for function in functions.values() for trigger in S3Trigger.of_function(function)]
        self.submit_function = _only(
            [functions[name] for name in dict.fromkeys(t.function_logical_id for t in self.triggers)], "an S3 event"
        )
        self.scheduled_function = _only(
            [
                f
                for f in functions.values()
                if f.events_of_type(*SCHEDULE_EVENT_TYPES) and f.logical_id != self.submit_function.logical_id
            ],
            "a schedule event and no S3 event",
        )
        if sweep_seconds and not self._has_schedule(self.submit_function):
            raise ValueError(f"sweep_seconds: template.yaml gives {self.submit_function.logical_id} no schedule event")
        self._functions = functions
        self._handlers: dict[str, Handler] = dict(handlers or {})
        if submit_handler is not None:
            self._handlers[self.submit_function.logical_id] = submit_handler
        if checker_handler is not None:
            self._handlers[self.scheduled_function.logical_id] = checker_handler

        self.invocations: list[Invocation] = []
        self.failures: list[FailedEvent] = []
        # (key, version id) of every notification the S3-triggered function made a job of, without error.
        self.accepted_versions: set[tuple[str, str]] = set()
        # (key, version id) of every notification dropped on purpose (lose_event, lose_events).
        self.lost_events: list[tuple[str, str]] = []
        # Key → why the runner skips its notifications (reported once, when first skipped).
        self.skipped: dict[str, str] = {}
        self._records_lock = threading.Lock()
        self._load_lock = threading.Lock()  # imports change sys.path and sys.modules
        self._tick_lock = threading.Lock()  # ReservedConcurrentExecutions: 1 for the checker
        self._pending: deque[_Pending] = deque()
        self._pending_ready = threading.Condition()
        self._in_flight = 0
        self._seen: set[tuple[str, str, str, str]] = set()
        self._seen_lock = threading.Lock()
        self._dispatched: set[tuple[str, str]] = set()  # taken off the queue for delivery
        self._last_sequencer = 0
        self._manifests_found: set[str] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        for name, value in stack.handler_process_env().items():
            os.environ.setdefault(name, value)
        # The notification configuration starts now: what is already there never triggers.
        self._queue_url, self._configurations = self._subscribe()
        self._remember_existing_versions()

    # -- lifecycle

    def __enter__(self) -> LocalRunner:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> LocalRunner:
        self._stopping.clear()
        targets: list[tuple[str, Callable[[], None]]] = [("watcher", self._watch), ("worker", self._work)]
        if self._schedule_enabled(self.scheduled_function):
            targets.append(("ticker", self._tick_forever))
        if self.sweep_seconds and self._schedule_enabled(self.submit_function):
            targets.append(("sweeper", self._sweep_forever))
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"local-runner-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        with self._pending_ready:
            self._pending_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        if not any(thread.is_alive() for thread in self._threads):
            self._stopping.clear()  # stopped: the synchronous helpers work again
        self._threads.clear()

    # -- the S3 side

    def discover(self) -> int:
        """Queue one notification per object version created since the last call (every
        message in the runner's queue, without waiting); returns how many."""
        found = 0
        while (received := self._receive(wait_seconds=0)) is not None:
            found += received
        return found

    def lose_event(self, key: str, version_id: str) -> None:
        """Drop the notification of one object version, as S3 or Lambda's async queue may
        (S3 and Lambda's async queue may drop one): it is never delivered, so only a sweep can start its job.
        Call it before the version is delivered (synchronously: before `deliver_pending()` or
        `run_once()`); with the background threads running, pass `lose_events` instead. A
        notification already queued is taken off the queue; one already delivered raises
        ValueError. `redeliver()` still sends it (a late event)."""
        with self._pending_ready:
            if (key, version_id) in self._dispatched:
                raise ValueError(f"the event of {key} (version {version_id}) was already delivered")
            with self._seen_lock:
                self._seen.update(self._identity(trigger, key, version_id) for trigger in self.triggers)
            self._pending = deque(
                item for item in self._pending if (item.version.key, item.version.version_id) != (key, version_id)
            )
        self._record_lost(key, version_id)

    def _record_lost(self, key: str, version_id: str) -> None:
        with self._records_lock:
            if (key, version_id) not in self.lost_events:
                self.lost_events.append((key, version_id))
        _log.info("the event of %s (version %s) is lost on purpose", key, version_id)

    def redeliver(self, key: str, version_id: str) -> None:
        """Queue the notification of an already delivered version again (a duplicate event)."""
        head = self.stack.client("s3").head_object(Bucket=self.stack.bucket_name, Key=key, VersionId=version_id)
        version = ObjectVersion(
            bucket=self.stack.bucket_name,
            key=key,
            version_id=version_id,
            size=int(head["ContentLength"]),
            etag=head["ETag"].strip('"'),
            last_modified=head["LastModified"],
        )
        event_name = "ObjectCreated:CompleteMultipartUpload" if version.multipart else "ObjectCreated:Put"
        for trigger in self.triggers:
            if trigger.fires_for(key, event_name):
                self._enqueue(trigger, version, event_name)

    def deliver_pending(self) -> int:
        """Discover new versions, then invoke for every queued notification in this thread."""
        self.discover()
        delivered = 0
        while (item := self._pop()) is not None:
            try:
                self._deliver(item)
                delivered += 1
            finally:
                self._done()
        return delivered

    # -- the scheduled side

    def tick(self) -> Invocation:
        """One scheduled invocation of the scheduled function, with the schedule's event."""
        function = self.scheduled_function
        with self._tick_lock:
            return self._invoke_async(function.logical_id, self.scheduled_event())

    def sweep(self) -> Invocation:
        """One run of the S3-triggered function's own schedule (the inbox/ sweep), with that
        schedule's event, as an asynchronous invocation (retries, on-failure destination)."""
        return self._invoke_async(self.submit_function.logical_id, self.sweep_event())

    def sweep_event(self) -> dict[str, Any]:
        """The event the sweep schedule sends: its Input with Scheduler's attributes filled."""
        if not self._has_schedule(self.submit_function):
            raise ValueError(f"template.yaml gives {self.submit_function.logical_id} no schedule event to sweep with")
        return self.scheduled_event(self.submit_function)

    def scheduled_event(self, function: FunctionSpec | None = None) -> dict[str, Any]:
        """The event `function`'s schedule (by default the checker's) invokes it with, now."""
        function = function or self.scheduled_function
        event_name, event = _schedule_of(function)
        properties = event.get("Properties", {})
        resolved_input = self.stack.resolver.resolve(properties.get("Input"))
        name = f"{self.stack.stack_name}-{function.logical_id}{event_name}"
        now = datetime.now(UTC).replace(microsecond=0)
        if event["Type"] == "ScheduleV2":
            group = self.stack.resolver.resolve(properties.get("GroupName")) or "default"
            arn = f"arn:aws:scheduler:{self.stack.region}:{self.stack.account_id}:schedule/{group}/{name}"
            return build_scheduler_event(resolved_input, schedule_arn=arn, scheduled_time=now)
        arn = f"arn:aws:events:{self.stack.region}:{self.stack.account_id}:rule/{name}"
        return build_rule_schedule_event(
            resolved_input, rule_arn=arn, region=self.stack.region, account_id=self.stack.account_id, time_=now
        )

    # -- for tests

    def run_once(self) -> int:
        """Deliver every pending notification, then tick once; returns notifications delivered."""
        delivered = self.deliver_pending()
        self.tick()
        return delivered

    def drain(self, timeout: float = 60.0, idle: Callable[[], bool] | None = None) -> bool:
        """Deliver and tick until nothing is pending and `idle()` holds; False if `timeout`
        seconds pass first. By default idle means the pipeline's end state: the table's sparse
        index of open batches is empty and every version the submit function accepted has a
        job with a `results/<job_id>/manifest.json` (duplicates of a version are one job)."""
        is_idle = idle or self.all_jobs_finished
        deadline = time.monotonic() + timeout
        while True:
            self.deliver_pending()
            self.tick()
            if self._quiet() and is_idle():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.poll_seconds, remaining))

    def all_jobs_finished(self) -> bool:
        """No open batch, and each version accepted since this runner began has its own
        job's manifest (results/<job_id>/manifest.json)."""
        from batchdrop.domain.jobs import job_id_for, manifest_key

        with self._records_lock:
            accepted = set(self.accepted_versions)
        if self.stack.open_batch_count():
            return False
        bucket = self.stack.bucket_name
        expected = {manifest_key(job_id_for(bucket, key, version)) for key, version in accepted}
        # One HEAD per manifest still awaited, not a listing of results/ on every poll.
        for key in sorted(expected - self._manifests_found):
            if not self._exists(key):
                return False
            self._manifests_found.add(key)
        return True

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.stack.client("s3").head_object(Bucket=self.stack.bucket_name, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def invocations_of(self, logical_id: str) -> list[Invocation]:
        with self._records_lock:
            return [invocation for invocation in self.invocations if invocation.function_logical_id == logical_id]

    # -- invoking

    def _deliver(self, item: _Pending) -> None:
        if self.observer is not None:
            self.observer.delivering(item.event)
        invocation = self._invoke_async(item.trigger.function_logical_id, item.event)
        if invocation.error is None and not _made_no_job(invocation.result):
            with self._records_lock:
                self.accepted_versions.add((item.version.key, item.version.version_id))

    def _invoke_async(self, logical_id: str, event: dict[str, Any]) -> Invocation:
        """Lambda's asynchronous invocation: retries, then the on-failure destination."""
        function = self._functions[logical_id]
        config = function.event_invoke_config
        attempts = 1 + int(config.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES))
        delay = self.retry_delay_seconds
        for attempt in range(1, attempts + 1):
            invocation = self._invoke(function, event, attempt)
            if invocation.error is None or attempt == attempts or self._stopping.is_set():
                break
            if self._stopping.wait(delay):
                break
            delay *= 2
        if invocation.error is not None:
            self._record_failure(function, event, invocation)
        return invocation

    def _invoke(self, function: FunctionSpec, event: dict[str, Any], attempt: int) -> Invocation:
        context = LocalLambdaContext(
            function_name=self.stack.function_name(function.logical_id),
            memory_limit_in_mb=function.memory_mb,
            timeout_seconds=function.timeout_seconds,
            invoked_function_arn=self.stack.resource(function.logical_id).attributes["Arn"],
        )
        invocation = Invocation(function.logical_id, context.aws_request_id, attempt, event)
        environment = self.function_environment(function.logical_id)
        started = time.monotonic()
        try:
            # A context of its own: what one invocation sets in context variables (its
            # environment, Powertools' thread-safe log keys) ends with it.
            invocation.result = contextvars.copy_context().run(self._call, function, environment, event, context)
            if context.timed_out:
                invocation.error = f"Task timed out after {function.timeout_seconds}.00 seconds"
        except Exception as exc:  # noqa: BLE001 - Lambda reports any handler error and retries
            invocation.error = "".join(traceback.format_exception_only(exc)).strip()
            invocation.result = _error_payload(exc, context.aws_request_id)
        invocation.duration_seconds = time.monotonic() - started
        with self._records_lock:
            self.invocations.append(invocation)
        if self.observer is not None:
            self.observer.invoked(function.logical_id, attempt, invocation.error, invocation.result)
        if invocation.error is not None:
            _log.log(
                logging.DEBUG if self.observer is not None else logging.WARNING,
                "%s attempt %d failed: %s",
                function.logical_id,
                attempt,
                invocation.error,
                extra={"function": function.logical_id, "attempt": attempt, "request_id": invocation.request_id},
            )
        return invocation

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """The environment a handler of `logical_id` runs with: what Lambda gives the function
        (`LocalStack.function_env`), never a variable in HIDDEN_FROM_HANDLERS."""
        environment = self.stack.function_env(logical_id)
        for name in HIDDEN_FROM_HANDLERS:
            environment.pop(name, None)
        return environment

    def _call(self, function: FunctionSpec, environment: dict[str, str], event: dict[str, Any], context: Any) -> Any:
        with config.invocation_environment(environment):
            return self._handler(function)(event, context)

    def _handler(self, function: FunctionSpec) -> Handler:
        with self._load_lock:
            if function.logical_id not in self._handlers:
                # Lambda imports the module on the cold start, inside the function's environment
                # (here: the one batchdrop.config gives; what Powertools reads is process-wide).
                self._handlers[function.logical_id] = load_handler(function, self.stack.template_root)
            return self._handlers[function.logical_id]

    def _record_failure(self, function: FunctionSpec, event: dict[str, Any], last: Invocation) -> None:
        failure = FailedEvent(function.logical_id, event, last.attempt, last.error or "")
        with self._records_lock:
            self.failures.append(failure)
        destination = function.event_invoke_config.get("DestinationConfig", {}).get("OnFailure", {})
        queue_url = None
        if destination.get("Type") == "SQS":
            queue_url = self.stack.queue_url_for_arn(self.stack.resolver.resolve_str(destination["Destination"]))
        if self.observer is not None:
            queue_name = queue_url.rpartition("/")[2] if queue_url else None
            self.observer.event_failed(function.logical_id, last.attempt, last.error or "", queue_name)
        _log.log(
            logging.DEBUG if self.observer is not None else logging.ERROR,
            "%s event failed all %d attempts; recorded as failed",
            function.logical_id,
            last.attempt,
            extra={"function": function.logical_id, "attempts": last.attempt},
        )
        if queue_url is None:
            return
        record = {
            "version": "1.0",
            "timestamp": _iso_millis(datetime.now(UTC)),
            "requestContext": {
                "requestId": last.request_id,
                "functionArn": self.stack.resource(function.logical_id).attributes["Arn"] + ":$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": last.attempt,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": last.result if isinstance(last.result, dict) else {"errorMessage": last.error},
        }
        self.stack.client("sqs").send_message(QueueUrl=queue_url, MessageBody=json.dumps(record, default=str))

    # -- queue and threads

    def _subscribe(self) -> tuple[str, dict[str, S3Trigger]]:
        """Create this runner's queue and point the bucket's notifications of every S3 trigger
        at it; drop the queue configurations (and queues) of this process's runners that no
        longer exist. Returns the queue URL and the configuration ids → trigger."""
        sqs, s3 = self.stack.client("sqs"), self.stack.client("s3")
        bucket = self.stack.bucket_name
        token = secrets.token_hex(6)
        queue_prefix = f"{self.stack.stack_name}-runner-"
        queue_url = sqs.create_queue(QueueName=f"{queue_prefix}{token}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        configurations = {f"{trigger.configuration_id}-{token}": trigger for trigger in self.triggers}
        with _subscribe_lock:
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
            current.pop("ResponseMetadata", None)
            kept, stale = [], []
            for configuration in current.get("QueueConfigurations", []):
                arn = configuration["QueueArn"]
                owned = arn.rpartition(":")[2].startswith(queue_prefix)
                (stale if owned and arn not in _live_queues else kept).append(configuration)
            current["QueueConfigurations"] = kept + [
                {
                    "Id": configuration_id,
                    "QueueArn": queue_arn,
                    "Events": list(trigger.event_patterns),
                    "Filter": {"Key": {"FilterRules": _filter_rules(trigger)}},
                }
                for configuration_id, trigger in configurations.items()
            ]
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
            _live_queues[queue_arn] = self
        for arn in dict.fromkeys(configuration["QueueArn"] for configuration in stale):
            try:
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=arn.rpartition(":")[2])["QueueUrl"])
            except Exception:  # noqa: BLE001 - a queue already gone is what was wanted
                _log.debug("queue %s of a former runner is already gone", arn)
        return queue_url, configurations

    def _remember_existing_versions(self) -> None:
        """Count every version under the trigger prefixes as seen: one listing per prefix, at
        creation only. A prefix that cannot be listed whole is listed key by key."""
        for prefix in dict.fromkeys(trigger.prefix for trigger in self.triggers):
            triggers = [trigger for trigger in self.triggers if trigger.prefix == prefix]
            try:
                versions = self._versions(prefix)
            except Exception as exc:  # noqa: BLE001 - fall back to one key at a time
                _log.warning("cannot list the versions under %s (%s); listing its keys one by one", prefix, exc)
                versions = list(self._versions_key_by_key(prefix))
            with self._seen_lock:
                for version in versions:
                    self._seen.update(self._identity(trigger, version.key, version.version_id) for trigger in triggers)

    def _versions_key_by_key(self, prefix: str) -> Iterator[ObjectVersion]:
        pages = (
            self.stack.client("s3")
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.stack.bucket_name, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                try:
                    yield from self._versions_of(item["Key"])
                except Exception as exc:  # noqa: BLE001 - one bad key never stops the others
                    self._skip(item["Key"], f"its versions cannot be listed: {_one_line(exc)}")

    def _versions(self, prefix: str) -> list[ObjectVersion]:
        """Every version under `prefix`, oldest first."""
        s3 = self.stack.client("s3")
        bucket = self.stack.bucket_name
        versions: list[ObjectVersion] = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            versions.extend(
                ObjectVersion(
                    bucket=bucket,
                    key=item["Key"],
                    version_id=item["VersionId"],
                    size=int(item["Size"]),
                    etag=item["ETag"].strip('"'),
                    last_modified=item["LastModified"],
                )
                for item in page.get("Versions", [])
            )
        # S3 lists each key's versions newest first; events go out oldest first.
        versions.reverse()
        versions.sort(key=lambda version: version.last_modified)
        return versions

    def _versions_of(self, key: str) -> list[ObjectVersion]:
        """The versions of exactly `key` (not of the keys it is a prefix of), oldest first."""
        return [version for version in self._versions(key) if version.key == key]

    def _receive(self, wait_seconds: int) -> int | None:
        """Take up to 10 notifications off the runner's queue (waiting up to `wait_seconds`
        for the first) and queue their new versions; the number queued, or None if the queue
        had nothing."""
        sqs = self.stack.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        if not messages:
            return None
        found = 0
        for message in messages:
            found += self._on_notification(message["Body"])
        sqs.delete_message_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(messages)
            ],
        )
        return found

    def _on_notification(self, body: str) -> int:
        """Queue the new versions of the key one notification names; how many."""
        try:
            records = json.loads(body).get("Records")
        except ValueError:
            _log.warning("ignoring a notification that is not JSON: %.200r", body)
            return 0
        if records is None:  # s3:TestEvent, sent when a notification configuration is set
            return 0
        found = 0
        for record in records:
            key = ""
            try:
                s3_object = record["s3"]["object"]
                key = unquote_plus(s3_object["key"])
                trigger = self._configurations.get(record["s3"]["configurationId"])
                if trigger is None or key in self.skipped:
                    continue
                found += self._queue_new_versions(trigger, key, s3_object["eTag"], record["eventName"])
            except Exception as exc:  # noqa: BLE001 - one bad object never stops the others
                self._skip(key, f"its notification cannot be handled: {_one_line(exc)}")
        return found

    def _queue_new_versions(self, trigger: S3Trigger, key: str, etag: str, notified_event: str) -> int:
        try:
            versions = self._versions_of(key)
        except Exception as exc:  # noqa: BLE001 - reported once, then skipped
            self._skip(key, f"its versions cannot be listed: {_one_line(exc)}")
            return 0
        found = 0
        for version in versions:
            # moto notifies a completed multipart upload twice, Put then CompleteMultipartUpload.
            if version.etag == etag and not (version.multipart and notified_event == "ObjectCreated:Put"):
                event_name = notified_event
            else:
                event_name = "ObjectCreated:CompleteMultipartUpload" if version.multipart else "ObjectCreated:Put"
            if not trigger.fires_for(version.key, event_name):
                continue
            identity = self._identity(trigger, version.key, version.version_id)
            with self._seen_lock:
                if identity in self._seen:
                    continue
                self._seen.add(identity)
            if self.lose_events is not None and self.lose_events(version.key, version.version_id):
                self._record_lost(version.key, version.version_id)
                continue
            self._enqueue(trigger, version, event_name)
            found += 1
        return found

    def _skip(self, key: str, reason: str) -> None:
        with self._records_lock:
            if key in self.skipped:
                return
            self.skipped[key] = reason
        _log.warning("skipping %r: %s", key, reason, extra={"key": key})

    @staticmethod
    def _identity(trigger: S3Trigger, key: str, version_id: str) -> tuple[str, str, str, str]:
        return (trigger.function_logical_id, trigger.event_name, key, version_id)

    def _enqueue(self, trigger: S3Trigger, version: ObjectVersion, event_name: str) -> None:
        event = build_s3_event(
            version,
            region=self.stack.region,
            sequencer=self._next_sequencer(),
            configuration_id=trigger.configuration_id,
            event_name=event_name,
        )
        with self._pending_ready:
            self._pending.append(_Pending(trigger, version, event))
            self._pending_ready.notify()

    def _next_sequencer(self) -> str:
        with self._seen_lock:
            self._last_sequencer = max(self._last_sequencer + 1, time.time_ns())
            return f"{self._last_sequencer:018X}"

    def _pop(self, wait: float = 0.0) -> _Pending | None:
        with self._pending_ready:
            if not self._pending and wait > 0:
                self._pending_ready.wait(wait)
            if not self._pending:
                return None
            self._in_flight += 1
            item = self._pending.popleft()
            self._dispatched.add((item.version.key, item.version.version_id))
            return item

    def _done(self) -> None:
        with self._pending_ready:
            self._in_flight -= 1

    def _quiet(self) -> bool:
        with self._pending_ready:
            return not self._pending and self._in_flight == 0

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                self._receive(wait_seconds=WATCH_WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the next receive retries; a dead watcher would stop all work
                _log.exception("receiving the bucket's notifications failed")
                self._stopping.wait(self.poll_seconds)

    def _work(self) -> None:
        while not self._stopping.is_set():
            item = self._pop(wait=self.poll_seconds)
            if item is None:
                continue
            try:
                self._deliver(item)
            finally:
                self._done()

    def _tick_forever(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            self.tick()

    def _sweep_forever(self) -> None:
        while not self._stopping.wait(self.sweep_seconds or 0):
            self.sweep()

    @staticmethod
    def _has_schedule(function: FunctionSpec) -> bool:
        return bool(function.events_of_type(*SCHEDULE_EVENT_TYPES))

    def _schedule_enabled(self, function: FunctionSpec) -> bool:
        _, event = _schedule_of(function)
        properties = event.get("Properties", {})
        if "State" in properties:
            return self.stack.resolver.resolve_str(properties["State"]) == "ENABLED"
        return bool(self.stack.resolver.resolve(properties.get("Enabled", True)))


def _only(functions: list[FunctionSpec], what: str) -> FunctionSpec:
    if len(functions) != 1:
        raise ValueError(
            f"expected one function with {what} in template.yaml, found {[f.logical_id for f in functions]}"
        )
    return functions[0]


def _schedule_of(function: FunctionSpec) -> tuple[str, dict[str, Any]]:
    schedules = function.events_of_type(*SCHEDULE_EVENT_TYPES)
    if len(schedules) != 1:
        raise ValueError(f"expected one schedule event on {function.logical_id}, found {sorted(schedules)}")
    return next(iter(schedules.items()))


def _filter_rules(trigger: S3Trigger) -> list[dict[str, str]]:
    rules = [{"Name": "prefix", "Value": trigger.prefix}] if trigger.prefix else []
    return rules + ([{"Name": "suffix", "Value": trigger.suffix}] if trigger.suffix else [])


def _made_no_job(result: Any) -> bool:
    """Whether the submit function answered that the event made no job (a folder marker):
    no manifest is then to be awaited for it."""
    jobs = result.get("jobs") if isinstance(result, dict) else None
    return bool(jobs) and all(job.get("status") is None for job in jobs)


def _one_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")


def _is_inside(file: str | None, directory: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(directory)


def _error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The response payload Lambda's Python runtime returns for an unhandled exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


__all__ = [
    "EVENTS_DIR",
    "FailedEvent",
    "Invocation",
    "LocalRunner",
    "ObjectVersion",
    "RunnerObserver",
    "S3Trigger",
    "build_s3_event",
    "build_scheduler_event",
    "load_event",
    "load_handler",
]
