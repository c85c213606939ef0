"""The functions' configuration: read from the environment of the invocation under way,
validated, failing fast with a message that names what is missing. No other module reads
os.environ.

The environment is `os.environ` (Lambda, `sam local invoke`), unless the caller runs the
handler inside `invocation_environment(env)`: the local runner calls both functions' handlers
in one process, at the same time, each with its own variables, and never changes os.environ
to do it. The variable is a ContextVar, so it belongs to the thread (and asyncio task) that
set it: two invocations in two threads each see their own. A thread the handler starts begins
with an empty context and sees os.environ: read the Settings before handing work to one."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from batchdrop.domain.budget import parse_budget
from batchdrop.domain.lines import MAX_FILE_BYTES
from batchdrop.domain.requests import MAX_BATCH_REQUESTS
from batchdrop.domain.timings import Timings
from batchdrop.errors import ConfigurationError

# Every environment variable batchdrop reads, in one place.
ENV_BUCKET = "BATCHDROP_BUCKET"
ENV_TABLE = "BATCHDROP_TABLE"
ENV_EVENT_BUS = "BATCHDROP_EVENT_BUS"
ENV_MAX_ATTEMPTS = "BATCHDROP_MAX_ATTEMPTS"
# Optional. Fewer requests per batch than the API's 100,000 (smaller batches end sooner).
ENV_SHARD_MAX_REQUESTS = "BATCHDROP_SHARD_MAX_REQUESTS"
# Optional. The largest file taken (its size as its event reports it); a larger one is
# refused unread, its job FAILED. By default domain.lines.MAX_FILE_BYTES.
ENV_MAX_FILE_BYTES = "BATCHDROP_MAX_FILE_BYTES"
# Optional, for the local stack and its tests only: a JSON object of Timings fields to change
# (seconds), e.g. {"create_timeout": 2, "grace": 2}. Unset in AWS: the production timings.
ENV_TIMINGS = "BATCHDROP_TIMINGS"
ENV_SECRET_ARN = "ANTHROPIC_SECRET_ARN"  # noqa: S105 - the name of a variable, not a secret
ENV_BASE_URL = "ANTHROPIC_BASE_URL"  # unset in AWS: the SDK's default, the real API
ENV_AWS_ENDPOINT = "AWS_ENDPOINT_URL"  # unset in AWS; the local stack's moto server
ENV_REGION = "AWS_DEFAULT_REGION"
ENV_LAMBDA_REGION = "AWS_REGION"  # Lambda sets both; either will do
ENV_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - the name of a variable, not a secret
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_CHECKSUM = "AWS_REQUEST_CHECKSUM_CALCULATION"
ENV_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"
ENV_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
ENV_SECRET_MAX_AGE = "POWERTOOLS_PARAMETERS_MAX_AGE"  # noqa: S105 - seconds the secret is cached
# Optional. Days a finished or failed job's item is kept before the table's TTL deletes it; 0
# or unset keeps it. At least MIN_JOB_RETENTION_DAYS: a job item must outlive the sweeper's
# 7-day look-back and Lambda's 6 h of event retries, or a late event would start the upload again.
ENV_JOB_RETENTION_DAYS = "BATCHDROP_JOB_RETENTION_DAYS"
MIN_JOB_RETENTION_DAYS = 10
# Optional. A JSON object that changes the shipped price table (batchdrop/prices.json) without a
# code change: families replaced field by field or added (domain/prices.py, docs/cost.md).
ENV_PRICES_JSON = "BATCHDROP_PRICES_JSON"
# A job whose upper-bound estimate is over this many dollars waits for approval (0: no budget),
# for at most ENV_APPROVAL_HOURS before it is dropped (domain/budget.py).
ENV_JOB_BUDGET_USD = "BATCHDROP_JOB_BUDGET_USD"
ENV_APPROVAL_HOURS = "BATCHDROP_APPROVAL_HOURS"
# A budget across jobs for a UTC day (the stack's DailyBudgetUsd): a job that would take the
# day's spend past it waits for approval as well.
ENV_DAILY_BUDGET_USD = "BATCHDROP_DAILY_BUDGET_USD"
DEFAULT_APPROVAL_HOURS = 72.0
MAX_APPROVAL_HOURS = 24 * 6.0  # within the sweep's 7-day window, which expires them, and WorkRetentionDays
# Optional. "true": a job warms the prompt cache before its first batch unless its upload or
# pipeline says otherwise (services/priming.py, the stack parameter PrimeCache); "false" or unset: not.
ENV_PRIME_CACHE = "BATCHDROP_PRIME_CACHE"

_environment: ContextVar[Mapping[str, str] | None] = ContextVar("batchdrop_environment", default=None)


def environment() -> Mapping[str, str]:
    """The environment of the invocation under way in this thread: os.environ unless the
    caller set one with `invocation_environment`."""
    current = _environment.get()
    return os.environ if current is None else current


@contextlib.contextmanager
def invocation_environment(env: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """Run the block (a handler call) with `env` as its whole environment, in this thread
    only: os.environ is neither read nor changed. The block sees a read-only copy."""
    frozen = MappingProxyType(dict(env))
    token = _environment.set(frozen)
    try:
        yield frozen
    finally:
        _environment.reset(token)


def service_name() -> str | None:
    """POWERTOOLS_SERVICE_NAME of the invocation under way (what its log lines carry)."""
    return environment().get(ENV_SERVICE_NAME) or None


@dataclass(frozen=True)
class Settings:
    bucket: str
    table: str
    event_bus: str
    secret_arn: str
    base_url: str | None
    max_attempts: int
    shard_max_requests: int = MAX_BATCH_REQUESTS
    timings: Timings = field(default_factory=Timings)
    # Where and as whom boto3 talks: part of the settings, and passed to every client, so
    # that adapters built for one environment are never reused in another (a new local
    # stack, say) and no client falls back on a process-wide variable another function,
    # or a test, may have set differently.
    aws_endpoint: str | None = None
    region: str | None = None
    # None: boto3's own chain (on Lambda the same variables, or the container's provider).
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    checksum_calculation: str | None = None
    # The function these settings are for: each function has adapters (clients, caches) of
    # its own, as in its own execution environment, even when two share a process.
    function_name: str | None = None
    secret_max_age: int | None = None  # None: Powertools' default
    job_retention_days: int = 0  # 0: job items are kept
    max_file_bytes: int = MAX_FILE_BYTES
    prices_json: str | None = None  # None: the shipped price table as it is
    job_budget_usd: Decimal | None = None  # None: no budget
    daily_budget_usd: Decimal | None = None  # None: no budget
    approval_hours: float = DEFAULT_APPROVAL_HOURS
    prime_cache: bool = False  # the stack's default for priming (services/priming.py)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of `env`, by default the environment of the invocation under way."""
        env = environment() if env is None else env
        missing = [name for name in (ENV_BUCKET, ENV_TABLE, ENV_EVENT_BUS, ENV_SECRET_ARN) if not env.get(name)]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        max_attempts = _whole_number(ENV_MAX_ATTEMPTS, env.get(ENV_MAX_ATTEMPTS, "3"))
        if max_attempts < 1:
            raise ConfigurationError(f"{ENV_MAX_ATTEMPTS} must be at least 1")
        max_age = env.get(ENV_SECRET_MAX_AGE) or None
        secret_max_age = None if max_age is None else _whole_number(ENV_SECRET_MAX_AGE, max_age)
        if secret_max_age is not None and secret_max_age < 0:
            raise ConfigurationError(f"{ENV_SECRET_MAX_AGE} must not be negative")
        key_id, secret_key = env.get(ENV_ACCESS_KEY_ID) or None, env.get(ENV_SECRET_ACCESS_KEY) or None
        has_keys = key_id is not None and secret_key is not None
        shard_max_requests = _whole_number(
            ENV_SHARD_MAX_REQUESTS, env.get(ENV_SHARD_MAX_REQUESTS, str(MAX_BATCH_REQUESTS))
        )
        if not 1 <= shard_max_requests <= MAX_BATCH_REQUESTS:
            raise ConfigurationError(f"{ENV_SHARD_MAX_REQUESTS} must be from 1 to {MAX_BATCH_REQUESTS}")
        timings = _timings(env.get(ENV_TIMINGS))
        return cls(
            bucket=env[ENV_BUCKET],
            table=env[ENV_TABLE],
            event_bus=env[ENV_EVENT_BUS],
            secret_arn=env[ENV_SECRET_ARN],
            base_url=env.get(ENV_BASE_URL) or None,
            max_attempts=max_attempts,
            shard_max_requests=shard_max_requests,
            timings=timings,
            aws_endpoint=env.get(ENV_AWS_ENDPOINT) or None,
            region=env.get(ENV_REGION) or env.get(ENV_LAMBDA_REGION) or None,
            aws_access_key_id=key_id if has_keys else None,
            aws_secret_access_key=secret_key if has_keys else None,
            aws_session_token=(env.get(ENV_SESSION_TOKEN) or None) if has_keys else None,
            checksum_calculation=env.get(ENV_CHECKSUM) or None,
            function_name=env.get(ENV_FUNCTION_NAME) or None,
            secret_max_age=secret_max_age,
            job_retention_days=_job_retention_days(env.get(ENV_JOB_RETENTION_DAYS) or "0"),
            max_file_bytes=_whole_number(ENV_MAX_FILE_BYTES, env.get(ENV_MAX_FILE_BYTES) or str(MAX_FILE_BYTES)),
            prices_json=_prices_json(env.get(ENV_PRICES_JSON) or None),
            job_budget_usd=_budget(ENV_JOB_BUDGET_USD, env.get(ENV_JOB_BUDGET_USD)),
            daily_budget_usd=_budget(ENV_DAILY_BUDGET_USD, env.get(ENV_DAILY_BUDGET_USD)),
            approval_hours=_approval_hours(env.get(ENV_APPROVAL_HOURS) or str(DEFAULT_APPROVAL_HOURS)),
            prime_cache=_flag(ENV_PRIME_CACHE, env.get(ENV_PRIME_CACHE) or "false"),
        )


def _budget(name: str, value: str | None) -> Decimal | None:
    try:
        return parse_budget(name, value)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _approval_hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise ConfigurationError(f"{ENV_APPROVAL_HOURS} must be a number of hours") from None
    if not 0 < hours <= MAX_APPROVAL_HOURS:
        raise ConfigurationError(f"{ENV_APPROVAL_HOURS} must be more than 0 and at most {MAX_APPROVAL_HOURS}")
    return hours


def _whole_number(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number") from None


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() not in ("true", "false"):
        raise ConfigurationError(f"{name} must be true or false, got {value!r}")
    return value.strip().lower() == "true"


def _job_retention_days(value: str) -> int:
    days = _whole_number(ENV_JOB_RETENTION_DAYS, value)
    if days != 0 and days < MIN_JOB_RETENTION_DAYS:
        raise ConfigurationError(f"{ENV_JOB_RETENTION_DAYS} must be 0 (keep) or at least {MIN_JOB_RETENTION_DAYS} days")
    return days


def _timings(text: str | None) -> Timings:
    if not text:
        return Timings()
    try:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        return Timings.from_mapping(values)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{ENV_TIMINGS}: {exc}") from None


def _prices_json(text: str | None) -> str | None:
    """The price override as given, once it is known to apply to the shipped table."""
    if text is None or not text.strip():
        return None
    from batchdrop.domain.prices import PriceTableError, price_table

    try:
        price_table(text)
    except PriceTableError as exc:
        raise ConfigurationError(str(exc)) from None
    return text
