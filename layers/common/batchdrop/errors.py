"""batchdrop's typed errors: adapters translate AWS and SDK errors into these."""


class BatchdropError(Exception):
    """Base of every error batchdrop raises on purpose."""


class ConfigurationError(BatchdropError):
    """The function's environment is incomplete or wrong."""


class BadEventError(BatchdropError):
    """An event that cannot be acted on (e.g. an S3 record without a version id)."""


class ProviderRejectedError(BatchdropError):
    """The provider answered 4xx to a create: no batch was created."""

    def __init__(self, status: int, message: str, *, queue_full: bool = False) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.queue_full = queue_full


class ApiKeyRefusedError(ProviderRejectedError):
    """The API refused the key (401 or 403) again after it was fetched anew from Secrets
    Manager: the call was not made (a create made no batch). A key problem, not a body one."""


class ProviderOutcomeUnknownError(BatchdropError):
    """A create that may or may not have created a batch (5xx, timeout, dropped connection)."""


class ProviderUnavailableError(BatchdropError):
    """A read (retrieve, results) failed after the SDK's bounded retries; try again later."""


class ResultsMismatchError(BatchdropError):
    """An ended batch's results do not account for each of its requests exactly once."""


class CheckerItemsFailedError(BatchdropError):
    """Some jobs or batches failed in a tick; the others went on. Raised at the end of the
    tick so the failure reaches Lambda's failure destination and the alarm."""


class EventNotPublishedError(BatchdropError):
    """EventBridge did not accept a job event (domain/job_events.py)."""


class ShardBodyError(BatchdropError):
    """A shard in work/ does not hold what was recorded of it: it is not sent."""
