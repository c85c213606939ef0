"""The client's errors: one base class, and a str() that is the one line a person reads.
`exit_code` is what the `batchdrop` command exits with for each (docs/local.md)."""

from __future__ import annotations


class BatchdropError(Exception):
    """Anything the client cannot do, told in one line."""

    exit_code = 2


class NotConfigured(BatchdropError):
    """No bucket or table: nothing names a stack to talk to."""


class StackNotRunning(BatchdropError):
    """The local stack the environment or its env file names is not running."""

    exit_code = 3


class StackNotFound(BatchdropError):
    """`from_stack` of a stack the region does not have."""

    exit_code = 3


class InvalidJobId(BatchdropError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"{job_id!r} is not a job id: a job id is 'j' and 24 lowercase hex characters")


class JobNotFound(BatchdropError):
    """The same answer from status, results, wait and cancel."""

    def __init__(self, job_id: str, table: str) -> None:
        super().__init__(f"no job {job_id} in table {table} (`batchdrop status` lists the jobs)")
        self.job_id = job_id


class NotFinished(BatchdropError):
    """Results of a job that has not ended."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job {job_id} is {status}: it has no results until it ends; follow it with `batchdrop status {job_id}`"
        )
        self.job_id, self.status = job_id, status


class AlreadyEnded(BatchdropError):
    """Cancel of a job that has ended."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} already ended {status}: nothing to cancel")
        self.job_id, self.status = job_id, status


class NotAwaitingApproval(BatchdropError):
    """Approval of a job that is not waiting for one."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is {status}, not AWAITING_APPROVAL: nothing to approve")
        self.job_id, self.status = job_id, status


class AwaitingApproval(BatchdropError):
    """`wait` stopped at a job that waits for approval, over a budget: nothing of it runs until
    someone approves it (or cancels it, or it expires), so waiting on would only wait."""

    exit_code = 5

    def __init__(self, job_id: str, reason: str | None) -> None:
        why = f": {reason}" if reason else ""
        super().__init__(
            f"job {job_id} waits for approval{why}; `batchdrop approve {job_id}` sends it, "
            f"`batchdrop cancel {job_id}` drops it"
        )
        self.job_id, self.reason = job_id, reason


class ReportNotReady(BatchdropError):
    """The report of a job that has not ended: it is written when the job ends."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job {job_id} is {status}: its report is written when it ends; follow it with `batchdrop status {job_id}`"
        )
        self.job_id, self.status = job_id, status


class NoReport(BatchdropError):
    """A job that ended without a report: failed at intake, or finished before reports were
    written (or its report could not be rendered; the checker's log says why)."""

    def __init__(self, job_id: str, status: str, uri: str) -> None:
        why = (
            "a job that failed at intake sent nothing and has no report; `batchdrop status` shows its reason"
            if status == "FAILED"
            else f"`batchdrop results {job_id}` downloads its manifest and results instead"
        )
        super().__init__(f"job {job_id} ended {status} without a report ({uri} is missing): {why}")
        self.job_id, self.status = job_id, status


class ManifestMissing(BatchdropError):
    def __init__(self, job_id: str, status: str, uri: str) -> None:
        super().__init__(f"job {job_id} ended {status} but {uri} is missing")


class InputFileError(BatchdropError):
    """A file to submit that is missing, a directory or not under inbox/."""


class WaitTimeout(BatchdropError):
    """`wait` gave up; the job goes on."""

    exit_code = 4

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(
            f"gave up waiting after {timeout:g} s; job {job_id} goes on; follow it with `batchdrop status {job_id}`"
        )
        self.job_id, self.timeout = job_id, timeout


# --- records mode -------------------------------------------------------------------------


class PipelineInvalid(BatchdropError):
    """A pipeline file that the layer's parser refuses, or a name that cannot name a pipeline;
    the message names the file and every problem."""


class PipelineConflict(BatchdropError):
    """A pipeline put under one suffix when the same name has one under the other: the bucket
    would hold two pipelines for one inbox/ folder."""


class PipelineNotFound(BatchdropError):
    def __init__(self, name: str, bucket: str) -> None:
        super().__init__(
            f"no pipeline {name} in bucket {bucket} (pipelines/{name}.json or .yaml); "
            "`batchdrop pipeline list` lists them"
        )
        self.name = name


class NoOutputs(BatchdropError):
    """Outputs asked of a native-mode job, which has result parts instead."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(
            f"job {job_id} ({status}) is a native-mode job: it has no outputs.csv or outputs.jsonl, only result "
            f"parts; `batchdrop results {job_id} --out DIR` downloads them"
        )
        self.job_id = job_id
