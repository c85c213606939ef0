"""The local stack's env file: where `batchdrop local up` writes the names and endpoints a
client needs, and how a client finds it and tells whether the stack that wrote it still runs.

One place, whatever the current directory: `$BATCHDROP_HOME/local.env`, where BATCHDROP_HOME
defaults to `$XDG_STATE_HOME/batchdrop` and XDG_STATE_HOME to `~/.local/state`. Besides the
variables a shell sources, the file names the process that wrote it (`BATCHDROP_LOCAL_PID`,
`BATCHDROP_LOCAL_STARTED_AT`), so that a file left by a stack that has since stopped is told
apart from a running one in one line instead of a connection error."""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit

HOME_VARIABLE = "BATCHDROP_HOME"
FILE_NAME = "local.env"
PID_VARIABLE = "BATCHDROP_LOCAL_PID"
STARTED_VARIABLE = "BATCHDROP_LOCAL_STARTED_AT"
FILE_VARIABLE = "BATCHDROP_ENV_FILE"  # written into the file itself: a loaded shell knows its source


def state_home(environ: Mapping[str, str] | None = None) -> Path:
    """batchdrop's own directory for local state: $BATCHDROP_HOME, else
    $XDG_STATE_HOME/batchdrop, else ~/.local/state/batchdrop."""
    environ = os.environ if environ is None else environ
    if environ.get(HOME_VARIABLE):
        return Path(environ[HOME_VARIABLE]).expanduser()
    xdg = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg).expanduser() / "batchdrop"


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where `batchdrop local up` writes the env file unless told otherwise."""
    return state_home(environ) / FILE_NAME


def lines(env: Mapping[str, str]) -> Iterator[str]:
    """`NAME=value` lines, shell-quoted where needed, for `set -a; . FILE; set +a`."""
    for name, value in env.items():
        yield f"{name}={shlex.quote(value)}"


def write(path: Path, env: Mapping[str, str], *, pid: int, started_at: str) -> Path:
    """Write `env` and the writer's identity to `path` (its directory made if need be), in
    one rename, so a reader never sees half a file."""
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {**env, PID_VARIABLE: str(pid), STARTED_VARIABLE: started_at, FILE_VARIABLE: str(path)}
    partial = path.with_name(f".{path.name}.{pid}.tmp")
    partial.write_text("".join(f"{line}\n" for line in lines(full)), encoding="utf-8")
    partial.replace(path)
    return path


def read(path: Path) -> dict[str, str]:
    """The variables of an env file as `write` wrote it (comments and blank lines skipped).
    OSError if it cannot be read; ValueError naming the line if a line is not NAME=value."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.isidentifier():
            raise ValueError(f"{path}, line {number}: not NAME=value")
        parts = shlex.split(value)
        env[name] = parts[0] if parts else ""
    return env


def stale_reason(env: Mapping[str, str]) -> str | None:
    """Why the stack this environment names is not running, or None if it looks alive: the
    process that wrote the file has ended, or nothing listens at its AWS endpoint."""
    where = env.get(FILE_VARIABLE, "the env file")
    started = env.get(STARTED_VARIABLE, "an earlier run")
    pid_text = env.get(PID_VARIABLE, "")
    if pid_text.isdigit() and not _alive(int(pid_text)):
        return f"{where} is stale: the local stack that wrote it (pid {pid_text}, started {started}) has stopped"
    endpoint = env.get("AWS_ENDPOINT_URL", "")
    if endpoint and not _listening(endpoint):
        return f"{where} is stale: nothing listens at {endpoint}, the local stack it names (started {started})"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid: not our stack
        return False
    return True


def _listening(url: str, timeout: float = 0.5) -> bool:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        return True  # not a local endpoint we can probe: assume it answers
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False
