"""The functions' configuration: read once from the environment at cold start, validated,
failing fast with a message that names what is missing. No other module reads os.environ."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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
# Optional, for the local stack and its tests only: a JSON object of Timings fields to change
# (seconds), e.g. {"create_timeout": 2, "grace": 2}. Unset in AWS: the production timings.
ENV_TIMINGS = "BATCHDROP_TIMINGS"
ENV_SECRET_ARN = "ANTHROPIC_SECRET_ARN"  # noqa: S105 - the name of a variable, not a secret
ENV_BASE_URL = "ANTHROPIC_BASE_URL"  # unset in AWS: the SDK's default, the real API
ENV_AWS_ENDPOINT = "AWS_ENDPOINT_URL"  # unset in AWS; the local stack's moto server
ENV_REGION = "AWS_DEFAULT_REGION"


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
    # Where boto3 talks to: part of the settings so that adapters built for one
    # environment are never reused in another (a new local stack, say).
    aws_endpoint: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        missing = [name for name in (ENV_BUCKET, ENV_TABLE, ENV_EVENT_BUS, ENV_SECRET_ARN) if not env.get(name)]
        if missing:
            raise ConfigurationError(f"missing environment variables: {', '.join(missing)}")
        try:
            max_attempts = int(env.get(ENV_MAX_ATTEMPTS, "3"))
        except ValueError:
            raise ConfigurationError(f"{ENV_MAX_ATTEMPTS} must be a whole number") from None
        if max_attempts < 1:
            raise ConfigurationError(f"{ENV_MAX_ATTEMPTS} must be at least 1")
        shard_max_requests = _whole_number(env, ENV_SHARD_MAX_REQUESTS, MAX_BATCH_REQUESTS, 1, MAX_BATCH_REQUESTS)
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
            region=env.get(ENV_REGION) or None,
        )


def _whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(env.get(name, str(default)))
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be from {low} to {high}, got {value}")
    return value


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
