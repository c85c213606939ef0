"""What `batchdrop local up` prints: one line per event a person cares about.

The events come from two places. The runner tells the narrator what it does itself (an object
version handed to the submit function, an invocation that failed, an event sent to a failure
queue: `Narrator` is its observer), and a logging handler (`ErrorLines`) turns the functions'
ERROR records into a line each. Everything else is read from the state table: after each
invocation (and once a second) the narrator reads the unfinished jobs and their shards and
`Narration` compares each with what it last saw. A line is derived from what changed in a
record's fields (a new batch id, a higher attempt, a collected shard, a final job status), not
from the sequence of states, so a state passed through between two reads is still told once.

`Narration` is plain: records in, lines out (the unit tests drive it with fakes). `Narrator`
runs it on a thread of its own, so handlers never wait for the terminal, and lines of
concurrent jobs never interleave."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote_plus

from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.records import JobRecord, ShardRecord
from batchdrop.domain.states import OPEN_JOB_STATUSES, JobStatus, ShardState

OUTCOMES = ("succeeded", "errored", "expired", "canceled")
Clock = Callable[[], datetime]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _outcomes(counts: Mapping[str, int]) -> str:
    parts = [f"{counts[name]} {name}" for name in OUTCOMES if counts.get(name)]
    return ", ".join(parts) or "no outcome"


def _why_retried(shard: ShardRecord) -> str:
    """The ended attempt's outcomes, from the shard's log of attempts (or its reason)."""
    if shard.attempts_log:
        last = shard.attempts_log[-1]
        return f"batch {last.get('batch_id')} ended with {_outcomes(last.get('counts') or {})}"
    return shard.reason or "its requests ended transiently"


@dataclass
class _ShardSeen:
    attempt: int = 1
    batch_id: str | None = None
    collected: bool = False
    progress: tuple[int, int] | None = None


@dataclass
class _JobSeen:
    read: bool = False
    done: int = 0
    shards: dict[int, _ShardSeen] | None = None


class Narration:
    """Turns what happened into lines: each method returns the lines to print, time stamped
    with `clock`, and remembers enough that the same event never gives a second line."""

    def __init__(self, clock: Clock = datetime.now) -> None:
        self._clock = clock
        self._announced: set[str] = set()
        self._jobs: dict[str, _JobSeen] = {}
        self._finished: set[str] = set()

    def _line(self, text: str) -> str:
        return f"{self._clock().strftime('%H:%M:%S')} {text}"

    def received(self, key: str, version_id: str, job_id: str, *, by: str = "") -> list[str]:
        """An object version reached the submit function (or the sweep found it)."""
        if job_id in self._announced:
            return []
        self._announced.add(job_id)
        found = f" (found by {by})" if by else ""
        return [self._line(f"{key} (version {version_id}) → job {job_id}{found}")]

    def finished(self, job_id: str) -> bool:
        return job_id in self._finished

    def job(
        self,
        job: JobRecord,
        shards: Sequence[ShardRecord],
        manifest: Mapping[str, Any] | None,
        *,
        found_by: str = "the sweep",
    ) -> list[str]:
        """The lines for whatever changed in `job` and its `shards` since the last call. A job
        not announced yet is announced first, as found by `found_by` ("" for an S3 event)."""
        if job.job_id in self._finished:
            return []
        lines = self.received(job.source.key, job.source.version_id, job.job_id, by=found_by)
        seen = self._jobs.setdefault(job.job_id, _JobSeen(shards={}))
        if job.status is JobStatus.FAILED:
            self._finished.add(job.job_id)
            rejected = f"; {_plural(job.rejected, 'line')} rejected" if job.rejected else ""
            where = f" ({job.manifest_key})" if job.manifest_key else ""
            return [*lines, self._line(f"job {job.job_id} FAILED: {job.reason or 'no reason given'}{rejected}{where}")]
        if not seen.read and (job.shard_count or job.status is not JobStatus.RECEIVED):
            seen.read = True
            rejected = f", {_plural(job.rejected, 'line')} rejected" if job.rejected else ""
            shard_count = job.shard_count or len(shards)
            text = f"job {job.job_id}: {_plural(job.requested, 'request')} in {_plural(shard_count, 'shard')}{rejected}"
            lines.append(self._line(text))
        for shard in shards:
            lines.extend(self._shard(job, shard, seen))
        if job.status not in OPEN_JOB_STATUSES and manifest is not None:
            self._finished.add(job.job_id)
            self._jobs.pop(job.job_id, None)
            lines.append(self._line(self._summary(job, manifest)))
        return lines

    def _shard(self, job: JobRecord, shard: ShardRecord, job_seen: _JobSeen) -> list[str]:
        assert job_seen.shards is not None
        seen = job_seen.shards.setdefault(shard.index, _ShardSeen())
        name = f"job {job.job_id} shard {shard.index}"
        lines = []
        if shard.attempt > seen.attempt:
            seen.attempt = shard.attempt
            because = f": {_why_retried(shard)}"
            retried = _plural(shard.attempt_requests, "request")
            attempt = f"attempt {shard.attempt} of {shard.max_attempts}"
            lines.append(self._line(f"{name}: {retried} retried, {attempt}{because}"))
        if shard.batch_id and shard.batch_id != seen.batch_id:
            seen.batch_id, seen.progress = shard.batch_id, None
            attempt = f", attempt {shard.attempt}" if shard.attempt > 1 else ""
            requests = _plural(shard.attempt_requests, "request")
            lines.append(self._line(f"{name}: batch {shard.batch_id} created ({requests}{attempt})"))
        if shard.state is ShardState.SUBMITTED:
            lines.extend(self._progress(name, shard, seen))
        if shard.state is ShardState.COLLECTED and not seen.collected:
            seen.collected = True
            job_seen.done += sum(shard.counts.get(outcome, 0) for outcome in OUTCOMES)
            outcomes = _outcomes(shard.counts)
            total = f"{job_seen.done}/{job.requested}"
            lines.append(self._line(f"{name}: results written ({outcomes}); job {total} requests done"))
        return lines

    def _progress(self, name: str, shard: ShardRecord, seen: _ShardSeen) -> list[str]:
        """Done/total of an open batch, from the request counts the checker last saw."""
        progress = shard.progress
        if not progress:
            return []
        done = sum(int(progress.get(outcome, 0)) for outcome in OUTCOMES)
        total = shard.attempt_requests
        if seen.progress == (done, total):
            return []
        seen.progress = (done, total)
        until = f", expires {_to_the_second(shard.expires_at)}" if shard.expires_at else ""
        return [self._line(f"{name}: batch {shard.batch_id} {done}/{total} done{until}")]

    def _summary(self, job: JobRecord, manifest: Mapping[str, Any]) -> str:
        counts = dict(manifest.get("counts") or {})
        parts = [_plural(int(counts.get("requests", job.requested)), "request")]
        parts += [f"{counts[name]} {name}" for name in (*OUTCOMES, "rejected") if counts.get(name)]
        cost = (manifest.get("cost") or {}).get("batch_usd")
        price = f"; cost ${cost}" if cost is not None else ""
        status = manifest.get("status", job.status.value)
        return f"job {job.job_id} {status}: {', '.join(parts)}{price} ({job.manifest_key})"

    def error(self, text: str) -> list[str]:
        return [self._line(f"ERROR {' '.join(text.split())}")]


class StateReader(Protocol):
    """The state table reads the narrator makes (batchdrop.adapters.state.StateTable's)."""

    def open_work(self) -> Any: ...

    def job_and_shards(self, job_id: str) -> tuple[JobRecord | None, list[ShardRecord]]: ...


class Narrator:
    """`Narration` on a thread of its own, fed by the runner (as its observer), by
    `ErrorLines` and by reading the state table; `write` gets each line."""

    def __init__(
        self,
        state: StateReader,
        read_manifest: Callable[[str], Mapping[str, Any] | None],
        write: Callable[[str], None],
        *,
        bucket: str,
        clock: Clock = datetime.now,
        interval: float = 1.0,
    ) -> None:
        self.narration = Narration(clock)
        self._state = state
        self._read_manifest = read_manifest
        self._write = write
        self._bucket = bucket
        self._interval = interval
        self._events: deque[Callable[[], list[str]]] = deque()
        self._tracked: dict[str, None] = {}
        self._delivered: set[str] = set()  # jobs of the S3 events delivered: not found by the sweep
        self._wake = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._narrate_lock = threading.Lock()

    @classmethod
    def for_stack(cls, stack: Any, write: Callable[[str], None], **options: Any) -> Narrator:
        """A narrator of a running LocalStack's table and bucket."""
        import boto3

        from batchdrop.adapters.state import StateTable
        from batchdrop_local.stack import DUMMY_AWS_KEY

        resource = boto3.resource(
            "dynamodb",
            endpoint_url=stack.moto_url,
            region_name=stack.region,
            aws_access_key_id=DUMMY_AWS_KEY,
            aws_secret_access_key=DUMMY_AWS_KEY,
        )
        s3 = stack.client("s3")

        def read_manifest(key: str) -> Mapping[str, Any] | None:
            try:
                body = s3.get_object(Bucket=stack.bucket_name, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                return None
            return dict(json.loads(body))

        state = StateTable(stack.table_name, resource=resource)
        return cls(state, read_manifest, write, bucket=stack.bucket_name, **options)

    # -- the runner's observer

    def delivering(self, event: Mapping[str, Any]) -> None:
        """An S3 event is about to reach the submit function."""
        for record in event.get("Records", []):
            s3 = record.get("s3", {})
            key = unquote_plus(s3.get("object", {}).get("key", ""))
            version = s3.get("object", {}).get("versionId", "null")
            job_id = job_id_for(s3.get("bucket", {}).get("name", self._bucket), key, version)
            with self._wake:
                self._delivered.add(job_id)
            self._push(functools.partial(self._track_and_announce, key, version, job_id))

    def invoked(self, function: str, attempt: int, error: str | None, result: Any = None) -> None:
        """An invocation ended; `error` is set when it failed (Lambda will retry it). The jobs a
        sweep started are followed from here: one whose file fails as it is read is finished
        within that invocation, and never shows in the table's index of open jobs."""
        if error is not None:
            self._push(lambda: self.narration.error(f"{function} invocation {attempt} failed: {error}"))
            return
        started = result.get("started") if isinstance(result, Mapping) else None
        jobs = [job_id for job_id in started or () if isinstance(job_id, str)]
        self._push(functools.partial(self._track, jobs))

    def event_failed(self, function: str, attempts: int, error: str, destination: str | None) -> None:
        """Every attempt at an event failed: it went to the function's failure queue."""
        where = f"sent to {destination}" if destination else "dropped (no failure destination)"
        self._push(lambda: self.narration.error(f"{function} event failed all {attempts} attempts, {where}: {error}"))

    def logged_error(self, text: str) -> None:
        self._push(lambda: self.narration.error(text))

    # -- the thread

    def start(self) -> Narrator:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="local-narrator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Tell what is left, then stop."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _push(self, event: Callable[[], list[str]]) -> None:
        with self._wake:
            self._events.append(event)
            self._dirty = True
            self._wake.notify_all()

    def _run(self) -> None:
        failure = ""  # the last round's, told once until a round succeeds
        while True:
            with self._wake:
                if not self._dirty and not self._stopping:
                    self._wake.wait(self._interval)
                self._dirty = False
                stopping = self._stopping
            try:
                self.narrate()
                failure = ""
            except Exception as exc:  # noqa: BLE001 - a failed read is told, and the next round retries
                if str(exc) != failure:
                    self._emit(self.narration.error(f"the narrator cannot read the state table: {exc}"))
                failure = str(exc)
            if stopping:
                return

    def narrate(self) -> None:
        """Print the queued events' lines, then what changed in the state table."""
        with self._narrate_lock:
            while True:
                with self._wake:
                    if not self._events:
                        break
                    event = self._events.popleft()
                self._emit(event())
            work = self._state.open_work()
            for job in work.jobs:
                self._tracked.setdefault(job.job_id)
            for job_id in list(self._tracked):
                self._emit(self._job_lines(job_id))

    def _job_lines(self, job_id: str) -> list[str]:
        job, shards = self._state.job_and_shards(job_id)
        if job is None:
            return []
        manifest = None
        if job.status not in OPEN_JOB_STATUSES and job.manifest_key:
            manifest = self._read_manifest(job.manifest_key)
        with self._wake:
            found_by = "" if job_id in self._delivered else "the sweep"
        lines = self.narration.job(job, shards, manifest, found_by=found_by)
        if self.narration.finished(job_id):
            self._tracked.pop(job_id, None)
        return lines

    def _track(self, job_ids: list[str]) -> list[str]:
        for job_id in job_ids:
            if not self.narration.finished(job_id):
                self._tracked.setdefault(job_id)
        return []

    def _track_and_announce(self, key: str, version_id: str, job_id: str) -> list[str]:
        if not self.narration.finished(job_id):
            self._tracked.setdefault(job_id)
        return self.narration.received(key, version_id, job_id)

    def _emit(self, lines: Iterable[str]) -> None:
        for line in lines:
            self._write(line)


class ErrorLines(logging.Handler):
    """The functions' ERROR records as one narrated line each: the function, the message, the
    job and batch it names (its `job_id` and `batch_id` extras), and the exception, if any."""

    def __init__(self, narrator: Narrator) -> None:
        super().__init__(level=logging.ERROR)
        self._narrator = narrator

    def emit(self, record: logging.LogRecord) -> None:
        try:
            service = getattr(record, "service", None) or record.name
            named = [(what, getattr(record, f"{what}_id", None)) for what in ("job", "batch")]
            about = ", ".join(f"{what} {value}" for what, value in named if value)
            about = f" ({about})" if about else ""
            reason = ""
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                reason = f": {type(exc).__name__}: {exc}"
            self._narrator.logged_error(f"{service}: {record.getMessage()}{about}{reason}")
        except Exception:  # noqa: BLE001 - logging must never raise into a handler
            self.handleError(record)


def _to_the_second(stamp: str) -> str:
    """An API time stamp (`2026-12-06T20:09:38.518282Z`) in UTC to the second, as people read it."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
