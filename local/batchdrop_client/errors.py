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
