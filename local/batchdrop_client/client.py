"""`Batchdrop`: submit a file of requests, follow its job, read its results, in Python, against
the local stack or a deployed one. The `batchdrop` command is built on it."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from batchdrop_client import environment
from batchdrop_client.errors import (
    AlreadyEnded,
    AwaitingApproval,
    BatchdropError,
    InputFileError,
    InvalidJobId,
    JobNotFound,
    ManifestMissing,
    NoOutputs,
    NoReport,
    NotAwaitingApproval,
    NotConfigured,
    NotFinished,
    PipelineConflict,
    PipelineInvalid,
    PipelineNotFound,
    ReportNotReady,
    StackNotFound,
    StackNotRunning,
    WaitTimeout,
)
from batchdrop_client.views import FINAL, JobView, Progress, job_view, parse_since, parse_time

if TYPE_CHECKING:
    from anthropic.types.messages import MessageBatchIndividualResponse

    from batchdrop.adapters.state import StateTable
    from batchdrop.domain.records import JobRecord

INBOX = "inbox/"
CANCEL_PREFIX = "cancel/"
JOB_ID = re.compile(r"j[0-9a-f]{24}")
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class Job:
    """A submitted file: the object version its job is made from, and the job's id."""

    job_id: str
    bucket: str
    key: str
    version_id: str


@dataclass(frozen=True)
class CancelRequest:
    """What `cancel` wrote: the job (as it was), and the cancel object's key and version."""

    job: JobView
    key: str
    version_id: str | None


@dataclass(frozen=True)
class PutPipeline:
    """What `put_pipeline` wrote: the pipeline's name, its key and version, and the inbox/
    folder whose files it renders."""

    name: str
    key: str
    version_id: str | None
    inbox: str


@dataclass(frozen=True)
class PipelineObject:
    """A pipeline in the bucket, as listed."""

    name: str
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class Outputs:
    """A records-mode job's outputs: the keys of its outputs.csv and outputs.jsonl."""

    job_id: str
    status: str
    csv: str
    jsonl: str

    def key(self, kind: str) -> str:
        if kind not in ("csv", "jsonl"):
            raise BatchdropError(f"outputs are csv or jsonl, not {kind!r}")
        return self.csv if kind == "csv" else self.jsonl


class JobList(list[JobView]):
    """The jobs `jobs` lists, newest first; `more`: how many passed the filters beyond the
    limit; `seen`: how many jobs the table holds at all."""

    def __init__(self, views: Iterable[JobView], more: int, seen: int) -> None:
        super().__init__(views)
        self.more = more
        self.seen = seen


def job_id_of(job: Job | JobView | str) -> str:
    """The id of a job given as a Job, a JobView or its id; InvalidJobId when it is not one."""
    job_id = job if isinstance(job, str) else job.job_id
    if not JOB_ID.fullmatch(job_id):
        raise InvalidJobId(job_id)
    return job_id


class Batchdrop:
    """One stack's bucket and table, reached through `session` (a boto3.Session; the default
    one if None) at `endpoint_url` (AWS's if None)."""

    def __init__(
        self,
        bucket: str,
        table: str,
        session: Any = None,
        endpoint_url: str | None = None,
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        import boto3

        self.bucket, self.table = bucket, table
        self.endpoint_url = endpoint_url
        self.poll_seconds = poll_seconds
        self._session = session or boto3.Session()
        self._s3_client: Any = None
        self._state_table: StateTable | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, bucket: str | None = None, table: str | None = None
    ) -> Batchdrop:
        """From BATCHDROP_BUCKET, BATCHDROP_TABLE and the AWS_* variables of the environment or,
        when it names no stack, of the local stack's env file. StackNotRunning when they name a
        local stack that has stopped; NotConfigured when nothing names a bucket and table."""

        resolved = environment.resolve(environ)
        env = resolved.env
        bucket = bucket or env.get(environment.BUCKET_VARIABLE)
        table = table or env.get(environment.TABLE_VARIABLE)
        if not bucket or not table:
            where = environment.env_file_path(environ if environ is not None else _os_environ())
            raise NotConfigured(
                "no bucket or table: set BATCHDROP_BUCKET and BATCHDROP_TABLE, name a deployed stack, "
                f"or start the local stack with `batchdrop local up` (its env file, {where}, is then found)"
            )
        reason = environment.stale_reason(resolved)
        if reason:
            raise StackNotRunning(f"{reason}; start it again with `batchdrop local up`")
        return cls(bucket, table, environment.session(resolved), env.get("AWS_ENDPOINT_URL") or None)

    @classmethod
    def from_stack(
        cls, name: str, session: Any = None, *, bucket: str | None = None, table: str | None = None
    ) -> Batchdrop:
        """From a deployed stack's Outputs (BucketName, TableName); StackNotFound if the region
        has no such stack."""
        import boto3

        session = session or boto3.Session()
        outputs = _stack_outputs(session, name)
        bucket, table = bucket or outputs.get("BucketName"), table or outputs.get("TableName")
        if not bucket or not table:
            raise NotConfigured(f"stack {name} has no BucketName or TableName output: is it a batchdrop stack?")
        return cls(bucket, table, session)

    # --- clients ------------------------------------------------------------------------

    @property
    def _s3(self) -> Any:
        if self._s3_client is None:
            self._s3_client = self._session.client("s3", endpoint_url=self.endpoint_url)
        return self._s3_client

    @property
    def _state(self) -> StateTable:
        if self._state_table is None:
            from batchdrop.adapters.state import StateTable

            resource = self._session.resource("dynamodb", endpoint_url=self.endpoint_url)
            self._state_table = StateTable(self.table, resource=resource)
        return self._state_table

    # --- submit -------------------------------------------------------------------------

    def submit(
        self, path: str | Path, key: str | None = None, *, pipeline: str | None = None, prime_cache: bool | None = None
    ) -> Job:
        """Upload a .jsonl (or .jsonl.gz) file to `key` (default inbox/<file name>): the upload
        starts its job. With `pipeline` (records mode), a file of records goes to
        inbox/<pipeline>/<file name>, once the bucket is seen to hold that pipeline. With
        `prime_cache` True or False, the upload's metadata turns cache priming on or off for its
        job, whatever the pipeline or the stack's PrimeCache say (None: they decide)."""
        from batchdrop.domain.jobs import job_id_for

        path = Path(path)
        if pipeline is not None:
            key = self._records_key(path, pipeline, key)
        key = key or f"{INBOX}{path.name}"
        if not key.startswith(INBOX):
            raise InputFileError(f"key {key!r}: only keys under inbox/ start a job")
        if path.is_dir():
            raise InputFileError(f"{path} is a directory: give a .jsonl or .jsonl.gz file of requests")
        if not path.exists():
            raise InputFileError(f"{path}: no such file")
        with path.open("rb") as body:  # an unreadable file fails here, before any upload
            metadata = {} if prime_cache is None else {"Metadata": {"prime-cache": str(prime_cache).lower()}}
            version_id = str(self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **metadata)["VersionId"])
        return Job(job_id_for(self.bucket, key, version_id), self.bucket, key, version_id)

    # --- status -------------------------------------------------------------------------

    def status(self, job: Job | JobView | str) -> JobView:
        """One job and its batches; JobNotFound if the table does not have it."""
        job_id = job_id_of(job)
        record, shards = self._state.job_and_shards(job_id)
        if record is None:
            raise JobNotFound(job_id, self.table)
        return job_view(record, shards, self._manifest(record), with_batches=True)

    def jobs(
        self,
        status: str | Iterable[str] | None = None,
        key_prefix: str | None = None,
        since: datetime | str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> JobList:
        """The jobs, newest first, that are in one of `status`, have a source key starting with
        `key_prefix` and were created at `since` or later (a datetime, or `2h`, `3d`, an ISO
        time); at most `limit` of them (0: all). A table scan: for people, not for pipelines."""
        wanted = _statuses(status)
        if isinstance(since, str):
            try:
                since = parse_since(since, datetime.now(UTC))
            except ValueError as exc:
                raise BatchdropError(f"since {since!r}: {exc}") from None
        every = self._state.list_jobs()
        passed = [
            record
            for record in every
            if (wanted is None or str(record.status) in wanted)
            and (key_prefix is None or record.source.key.startswith(key_prefix))
            and (since is None or parse_time(record.created_at) >= since)
        ]
        shown = passed if limit == 0 else passed[:limit]
        return JobList((self._listed(record) for record in shown), len(passed) - len(shown), len(every))

    def _listed(self, record: JobRecord) -> JobView:
        """A listed job: a finished one's figures from its manifest, an open one's from its
        shards (read only for the jobs shown)."""
        manifest = self._manifest(record)
        shards = self._state.shards(record.job_id) if manifest is None else []
        return job_view(record, shards, manifest)

    def _manifest(self, record: JobRecord) -> dict[str, Any] | None:
        """A finished job's manifest; None for an open one (and for a finished one whose
        manifest is missing: its counts then come from the shards, its cost unknown)."""
        if str(record.status) not in FINAL or not record.manifest_key:
            return None
        try:
            return dict(json.loads(self._s3.get_object(Bucket=self.bucket, Key=record.manifest_key)["Body"].read()))
        except self._s3.exceptions.NoSuchKey:
            return None

    # --- wait ---------------------------------------------------------------------------

    def wait(
        self,
        job: Job | JobView | str,
        timeout: float = 3600,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        through_approval: bool = False,
    ) -> JobView:
        """The job's view once it has ended; WaitTimeout after `timeout` seconds. `on_progress`
        gets a Progress at each poll (status WAITING until the submit function records the job).
        A job held over a budget raises AwaitingApproval, with the reason, unless
        `through_approval`: then it waits on for someone to approve or cancel it."""
        job_id = job_id_of(job)
        started = time.monotonic()
        deadline = started + timeout
        while True:
            record, shards = self._state.job_and_shards(job_id)
            elapsed = time.monotonic() - started
            view = None if record is None else job_view(record, shards, self._manifest(record), with_batches=True)
            if view is not None and view.finished:
                if on_progress:
                    on_progress(view.progress(elapsed))
                return view
            if on_progress:
                on_progress(view.progress(elapsed) if view else Progress("WAITING", 0, None, 0, None, elapsed))
            if view is not None and view.status == "AWAITING_APPROVAL" and not through_approval:
                held = self.budget(job_id)
                raise AwaitingApproval(job_id, None if held is None else held.get("reason"))
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job_id, timeout)
            time.sleep(min(self.poll_seconds, left))

    # --- results ------------------------------------------------------------------------

    def manifest(self, job: Job | JobView | str) -> dict[str, Any]:
        """A finished job's manifest; JobNotFound, NotFinished or ManifestMissing otherwise."""
        from batchdrop.domain.jobs import manifest_key

        job_id = job_id_of(job)
        record = self._ended(job_id, NotFinished)
        key = manifest_key(job_id)
        try:
            return dict(json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))
        except self._s3.exceptions.NoSuchKey:
            raise ManifestMissing(job_id, str(record.status), f"s3://{self.bucket}/{key}") from None

    def _ended(self, job_id: str, not_ended: Callable[[str, str], BatchdropError]) -> JobRecord:
        """The job's record once it has ended; JobNotFound, or `not_ended`(job_id, status)."""
        record = self._state.get_job(job_id)
        if record is None:
            raise JobNotFound(job_id, self.table)
        if str(record.status) not in FINAL:
            raise not_ended(job_id, str(record.status))
        return record

    def results(self, job: Job | JobView | str) -> Iterator[MessageBatchIndividualResponse]:
        """Each result line of every results part of a finished job, as the SDK's type, streamed."""
        from anthropic.types.messages import MessageBatchIndividualResponse

        for key in self.manifest(job).get("results", []):
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                for line in body.iter_lines():
                    if line.strip():
                        yield MessageBatchIndividualResponse.model_validate_json(line)
            finally:
                body.close()

    def download(self, job: Job | JobView | str, out_dir: str | Path) -> list[Path]:
        """The manifest, every results part and the rejected lines into out_dir/JOB_ID/; the files."""
        from batchdrop.domain.jobs import manifest_key

        job_id = job_id_of(job)
        manifest = self.manifest(job_id)
        out = Path(out_dir) / job_id
        out.mkdir(parents=True, exist_ok=True)
        keys = [*manifest.get("results", []), manifest_key(job_id)]
        if manifest.get("errors"):
            keys.append(manifest["errors"])
        paths = []
        for key in keys:
            path = out / Path(key).name
            self._s3.download_file(self.bucket, key, str(path))
            paths.append(path)
        return paths

    def report(self, job: Job | JobView | str, path: str | Path | None = None) -> Path:
        """A finished job's report (results/JOB_ID/report.html, docs/report.md) downloaded to
        `path` (default ./JOB_ID-report.html; a directory, or a path ending in /, gets that name
        inside it); the file.
        JobNotFound, ReportNotReady for a job that has not ended, NoReport for one without."""
        from batchdrop.domain.jobs import report_key

        job_id = job_id_of(job)
        record = self._ended(job_id, ReportNotReady)
        key = report_key(job_id)
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self._s3.exceptions.NoSuchKey:
            raise NoReport(job_id, str(record.status), f"s3://{self.bucket}/{key}") from None
        name = f"{job_id}-report.html"
        target = Path(path) if path is not None else Path(name)
        if target.is_dir() or str(path).endswith(("/", os.sep)):  # a directory, made if need be
            target = target / name
        with closing(body):
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for chunk in body.iter_chunks(64 * 1024):
                    out.write(chunk)
        return target

    # --- records mode: pipelines and outputs -----------------------------------------------

    def put_pipeline(self, path: str | Path, name: str | None = None) -> PutPipeline:
        """Validate a pipeline file (JSON or YAML by its suffix) with the layer's parser and put
        it at pipelines/<name>.json or .yaml (name: the file's stem unless given). PipelineInvalid
        (nothing put) when it is not valid; PipelineConflict when the name already has a
        pipeline in the other syntax, which would leave its inbox/ folder two pipelines."""
        from batchdrop_client.pipelines import load_pipeline_file

        loaded = load_pipeline_file(path, name)
        if self._exists(loaded.other_key):
            raise PipelineConflict(
                f"{loaded.path}: s3://{self.bucket}/{loaded.other_key} already holds pipeline {loaded.name}; "
                f"one name has one pipeline: put it as {Path(loaded.other_key).name}, or delete that object first"
            )
        content_type = "application/json" if loaded.syntax == "json" else "application/yaml"
        answer = self._s3.put_object(Bucket=self.bucket, Key=loaded.key, Body=loaded.text, ContentType=content_type)
        return PutPipeline(loaded.name, loaded.key, answer.get("VersionId"), loaded.inbox)

    def pipelines(self) -> list[PipelineObject]:
        """The pipeline objects in the bucket (pipelines/<name>.json or .yaml), by name."""
        from batchdrop_client.pipelines import KEY_SUFFIX, PIPELINES

        found = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PIPELINES):
            for item in page.get("Contents", []):
                name, dot, suffix = item["Key"].removeprefix(PIPELINES).rpartition(".")
                if dot and "/" not in name and f".{suffix}" in KEY_SUFFIX.values():
                    found.append(PipelineObject(name, item["Key"], item["Size"], item["LastModified"]))
        return sorted(found, key=lambda found_one: (found_one.name, found_one.key))

    def pipeline_text(self, name: str) -> list[tuple[str, bytes]]:
        """Each key the pipeline `name` is stored under (one, unless someone wrote both syntaxes)
        and its text; PipelineNotFound when there is none."""
        from batchdrop_client.pipelines import KEY_SUFFIX, pipeline_key

        texts = []
        for syntax in KEY_SUFFIX:
            key = pipeline_key(name, syntax)
            try:
                texts.append((key, self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))
            except self._s3.exceptions.NoSuchKey:
                continue
        if not texts:
            raise PipelineNotFound(name, self.bucket)
        return texts

    def outputs(self, job: Job | JobView | str) -> Outputs:
        """A finished records-mode job's outputs files; NoOutputs for a native-mode job (which
        has result parts instead), NotFinished for a job that has not ended."""
        job_id = job_id_of(job)
        manifest = self.manifest(job_id)
        keys = manifest.get("outputs")
        if not isinstance(keys, dict) or not keys.get("csv") or not keys.get("jsonl"):
            raise NoOutputs(job_id, str(manifest.get("status", "?")))
        return Outputs(job_id, str(manifest.get("status", "?")), str(keys["csv"]), str(keys["jsonl"]))

    def download_outputs(self, job: Job | JobView | str, path: str | Path, kind: str = "csv") -> Path:
        """A finished records-mode job's outputs.csv (or `kind` "jsonl": outputs.jsonl) to `path`."""
        outputs = self.outputs(job)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._s3.download_file(self.bucket, outputs.key(kind), str(path))
        return path

    def copy_outputs(self, job: Job | JobView | str, stream: BinaryIO, kind: str = "csv") -> Outputs:
        """Write a finished records-mode job's outputs.csv (or outputs.jsonl) to `stream`, as it comes."""
        outputs = self.outputs(job)
        body = self._s3.get_object(Bucket=self.bucket, Key=outputs.key(kind))["Body"]
        try:
            for chunk in body.iter_chunks(64 * 1024):
                stream.write(chunk)
        finally:
            body.close()
        return outputs

    def output_rows(self, job: Job | JobView | str, limit: int) -> tuple[list[str], list[list[str]]]:
        """The header and the first `limit` rows of a finished records-mode job's outputs.csv,
        read as a stream (the rest is never downloaded)."""
        import csv

        outputs = self.outputs(job)
        body = self._s3.get_object(Bucket=self.bucket, Key=outputs.csv)["Body"]
        try:
            # Split at CR and LF only (bytes' lines), never at a text's U+2028 or form feed,
            # which a CSV leaves unquoted inside a cell.
            lines = (line.decode("utf-8", "replace") for line in body.iter_lines(keepends=True))
            reader = csv.reader(lines)
            header = next(reader, [])
            rows = [row for _, row in zip(range(limit), reader, strict=False)]
        finally:
            body.close()
        return header, rows

    def _records_key(self, path: Path, pipeline: str, key: str | None) -> str:
        """Where a file of records for `pipeline` goes; PipelineNotFound before any upload when
        the bucket has no such pipeline (the file would fail)."""
        from batchdrop.domain.pipelines import pipeline_name_problem
        from batchdrop_client.pipelines import KEY_SUFFIX, pipeline_key

        if key is not None:
            raise InputFileError("give a key or a pipeline, not both: a pipeline's files go to inbox/<pipeline>/")
        problem = pipeline_name_problem(pipeline)
        if problem:
            raise PipelineInvalid(problem)
        if not path.name.lower().removesuffix(".gz").endswith((".csv", ".jsonl")):
            raise InputFileError(f"{path}: a file of records is .csv or .jsonl (or .gz of them)")
        if not any(self._exists(pipeline_key(pipeline, syntax)) for syntax in KEY_SUFFIX):
            raise PipelineNotFound(pipeline, self.bucket)
        return f"{INBOX}{pipeline}/{path.name}"

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    # --- cancel -------------------------------------------------------------------------

    def cancel(self, job: Job | JobView | str) -> CancelRequest:
        """Ask for the job to end CANCELED with its results so far (an empty object at
        cancel/JOB_ID); JobNotFound, or AlreadyEnded for a job that has ended."""
        job_id = job_id_of(job)
        view = self.status(job_id)
        if view.finished:
            raise AlreadyEnded(job_id, view.status)
        key = f"{CANCEL_PREFIX}{job_id}"
        version_id = self._s3.put_object(Bucket=self.bucket, Key=key, Body=b"").get("VersionId")
        return CancelRequest(view, key, version_id)

    def approve(self, job: Job | JobView | str) -> CancelRequest:
        """Send a job that waits over its budget (an empty object at approve/JOB_ID); with the
        reason it waited (`budget`); JobNotFound, or NotAwaitingApproval for any other job."""
        from batchdrop.domain.budget import approve_key

        job_id = job_id_of(job)
        view = self.status(job_id)
        if view.status != "AWAITING_APPROVAL":
            raise NotAwaitingApproval(job_id, view.status)
        key = approve_key(job_id)
        version_id = self._s3.put_object(Bucket=self.bucket, Key=key, Body=b"").get("VersionId")
        return CancelRequest(view, key, version_id)

    def day_spend(self, day: str | None = None) -> Decimal:
        """A UTC day's spend (default today's): the upper-bound estimates of the open jobs sent
        that day plus the actual cost of those that ended, the figure DailyBudgetUsd bounds."""
        from batchdrop.domain.budget import spend_day

        return self._state.spent_on(day or spend_day(datetime.now(UTC)))

    def budget(self, job: Job | JobView | str) -> dict[str, Any] | None:
        """Why a job waits for approval: its errors/<job_id>/budget.json (None: it has none)."""
        from batchdrop.domain.budget import budget_key

        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=budget_key(job_id_of(job)))["Body"]
        except self._s3.exceptions.NoSuchKey:
            return None
        with closing(body):
            return dict(json.loads(body.read()))


def _statuses(status: str | Iterable[str] | None) -> set[str] | None:
    from batchdrop.domain.states import JobStatus

    if status is None:
        return None
    values = [status] if isinstance(status, str) else list(status)
    wanted = {part.strip().upper() for value in values for part in value.split(",") if part.strip()}
    known = [s.value for s in JobStatus]
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        shown = ", ".join(unknown) or repr(",".join(values))
        raise BatchdropError(f"status {shown}: a status is one of {', '.join(known)}")
    return wanted


def _stack_outputs(session: Any, name: str) -> dict[str, str]:
    """A deployed stack's Outputs; StackNotFound if the session's region has no such stack."""
    cloudformation = session.client("cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except cloudformation.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ValidationError":
            raise
        endpoint = cloudformation.meta.endpoint_url
        where = f" at {endpoint}" if "amazonaws.com" not in endpoint else ""
        raise StackNotFound(
            f"no stack {name} in region {session.region_name}{where}: check the name and AWS_DEFAULT_REGION"
        ) from None
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def _os_environ() -> Mapping[str, str]:
    import os

    return os.environ
