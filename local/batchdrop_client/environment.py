"""Where a client's names and endpoints come from: the process environment when it names a
bucket and table (a shell that loaded the env file, or a deployed stack's names), else the
local stack's env file ($BATCHDROP_ENV_FILE, or its one default place). The environment
found is returned as a value; os.environ is never changed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchdrop_local import envfile

BUCKET_VARIABLE = "BATCHDROP_BUCKET"
TABLE_VARIABLE = "BATCHDROP_TABLE"


@dataclass(frozen=True)
class Resolved:
    """The environment a client is built from, and the env file it was read from (None: the
    process environment)."""

    env: Mapping[str, str]
    env_file: Path | None

    @property
    def names_local_stack(self) -> bool:
        """Whether it was written by `batchdrop local up` (and so can be told stale)."""
        return envfile.PID_VARIABLE in self.env or envfile.FILE_VARIABLE in self.env


def env_file_path(environ: Mapping[str, str]) -> Path:
    """The env file a client reads when the environment names no stack."""
    given = environ.get(envfile.FILE_VARIABLE)
    return Path(given).expanduser() if given else envfile.default_path(environ)


def resolve(environ: Mapping[str, str] | None = None) -> Resolved:
    """The process environment if it names a bucket and a table; else the env file's, when
    there is one; else the process environment as it is (which names no stack)."""
    environ = os.environ if environ is None else environ
    if environ.get(BUCKET_VARIABLE) and environ.get(TABLE_VARIABLE):
        return Resolved(dict(environ), None)
    path = env_file_path(environ)
    if path.is_file():
        return Resolved(envfile.read(path), path)
    return Resolved(dict(environ), None)


def stale_reason(resolved: Resolved) -> str | None:
    """Why the local stack the environment names is not running, or None (also when it names
    no local stack: a deployed stack is not probed)."""
    if not resolved.names_local_stack:
        return None
    return envfile.stale_reason(resolved.env)


def session(resolved: Resolved) -> Any:
    """A boto3 Session for the resolved environment: the default chain (profiles, roles, the
    process environment) for the process environment; the env file's own region and keys for
    an env file, passed explicitly so that nothing is put into os.environ."""
    import boto3

    if resolved.env_file is None:
        return boto3.Session()
    env = resolved.env
    return boto3.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
    )
