"""`batchdrop local up --state-dir DIR`: the local stack's AWS state kept across a stop and
a start.

moto keeps everything in memory and has no persistence of its own, but the local stack runs
it in this process, so its service backends are ordinary Python objects: `StateDir.save`
pickles the backends of the services batchdrop uses into one file, `DIR/moto.snapshot`, and
`StateDir.restore` puts them back before the stack creates its resources. Every object
version keeps its version id (a job id is derived from it), every item, message, rule and
secret is the one saved.

The file is a zip archive: `header.json` (format and moto version), `backends.pickle`, and
one `blobs/N` entry per stored S3 object version. The bytes of an object are not pickled:
they are copied from moto's buffer (a temporary file above about 5 MB) to their entry in
1 MB pieces, so a large object is never held in memory at once, let alone twice. The
archive is written under a temporary name and renamed over the last one: DIR holds one
snapshot, and a stop cut short leaves the previous one whole.

The emulator keeps its own state in `DIR/emulator.sqlite3` (its `db` setting), written as it
goes. `DIR/lock` keeps a second stack from using the same directory at the same time."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# The services whose state the local stack and the functions use.
SERVICES = ("s3", "dynamodb", "sqs", "events", "secretsmanager")
# State a service keeps beside its backends, on its BackendDict: S3's bucket name → account
# (without it a restored bucket is unknown, and creating it again makes a new empty one).
_SHARED_STATE = {"s3": ("bucket_accounts",)}
SNAPSHOT_NAME = "moto.snapshot"
EMULATOR_DB_NAME = "emulator.sqlite3"
LOCK_NAME = "lock"
FORMAT = 1
_CHUNK = 1024 * 1024
_HEADER = "header.json"
_BACKENDS = "backends.pickle"
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_log = logging.getLogger(__name__)


class SnapshotError(ValueError):
    """The state directory cannot be used: in use, unreadable, or from another moto."""


@dataclass(frozen=True)
class SaveReport:
    path: Path
    backends: int
    objects: int
    bytes: int


class StateDir:
    """One `--state-dir`: the moto snapshot, the emulator's database and the lock that keeps
    it to one stack at a time. `open()` takes the lock; `close()` gives it back."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self.autosaver: Autosaver | None = None
        self._lock_file: IO[str] | None = None

    @property
    def snapshot_path(self) -> Path:
        return self.path / SNAPSHOT_NAME

    @property
    def emulator_db(self) -> Path:
        return self.path / EMULATOR_DB_NAME

    def open(self) -> StateDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock_file = (self.path / LOCK_NAME).open("a+", encoding="utf-8")
        except OSError as exc:
            raise SnapshotError(f"--state-dir {self.path}: cannot use it: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "another process"
            lock_file.close()
            raise SnapshotError(
                f"--state-dir {self.path} is in use by another `batchdrop local up` ({holder}); stop it first"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file
        return self

    def autosave(self, moto_server: Any, seconds: float) -> Autosaver:
        """Save every `seconds` while the calls `moto_server` (a running ThreadedMotoServer)
        takes may change its state, until `close()` or `save_at_stop()`."""
        self.autosaver = Autosaver(self, seconds)
        server = moto_server._server  # its werkzeug server, which reads .app on each request
        server.app = self.autosaver.watch(server.app)
        return self.autosaver.start()

    def save_at_stop(self) -> SaveReport | None:
        """The last save, with the outcome logged (a stop goes on if it fails)."""
        self._stop_autosave()
        try:
            report = self.save()
        except (OSError, ValueError) as exc:
            _log.error("the local stack's state was not saved to %s: %s", self.path, exc)
            return None
        _log.info(
            "local stack state saved to %s: %d object versions, %d bytes", report.path, report.objects, report.bytes
        )
        return report

    def _stop_autosave(self) -> None:
        if self.autosaver is not None:
            self.autosaver.stop()
            self.autosaver = None

    def close(self) -> None:
        self._stop_autosave()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def save(self) -> SaveReport:
        """Write moto's state of SERVICES to the snapshot (a temporary file renamed over it)."""
        return save(self.snapshot_path)

    def restore(self) -> SaveReport | None:
        """Put the saved state back into moto; None when there is no snapshot yet."""
        if not self.snapshot_path.exists():
            return None
        return restore(self.snapshot_path)


# ---------------------------------------------------------------- saving


def save(path: Path, attempts: int = 3) -> SaveReport:
    """Snapshot moto's backends of SERVICES to `path`. moto may be serving requests: a
    backend that changes while it is pickled is pickled again (up to `attempts` times)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        for attempt in range(1, attempts + 1):
            try:
                report = _write(partial, path)
                break
            except RuntimeError as exc:  # "dictionary changed size during iteration"
                if attempt == attempts:
                    raise SnapshotError(f"cannot snapshot moto to {path}: its state kept changing ({exc})") from exc
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return report


def _write(partial: Path, path: Path) -> SaveReport:
    import moto

    backends = dict(_backends())
    shared = {
        (service, name): getattr(_backend_dict(service), name)
        for service, names in _SHARED_STATE.items()
        for name in names
    }
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        header = {"format": FORMAT, "moto": moto.__version__, "saved_at": datetime.now(UTC).isoformat()}
        archive.writestr(_HEADER, json.dumps(header))
        with archive.open(_BACKENDS, "w", force_zip64=True) as entry:
            pickler = _Pickler(entry)
            pickler.dump({"backends": backends, "shared": shared})
        size = 0
        for index, key in enumerate(pickler.keys):
            with archive.open(f"blobs/{index}", "w", force_zip64=True) as blob:
                size += _copy_value(key, blob)
    return SaveReport(path, len(backends), len(pickler.keys), size)


def _backends() -> Iterator[tuple[tuple[str, str, str], Any]]:
    """((service, account, region), backend) of every backend moto has made for SERVICES."""
    for service in SERVICES:
        by_account = _backend_dict(service)
        for account in list(dict.keys(by_account)):
            by_region = dict.__getitem__(by_account, account)
            for region, backend in list(dict.items(by_region)):
                yield (service, account, region), backend


def _backend_dict(service: str) -> Any:
    from moto.backends import get_backend

    return get_backend(service)  # type: ignore[call-overload]


def _copy_value(key: Any, out: IO[bytes]) -> int:
    """Copy one FakeKey's bytes to `out` a piece at a time. A key that moto disposed of
    (deleted) after it was pickled fails the save, to be taken again: its pickled state would
    otherwise come back with no bytes."""
    if key is None:  # disposed before it was pickled: moto has no bytes for it either
        return 0
    copied = 0
    with key.lock:
        buffer = key._value_buffer
        if buffer.closed:
            raise RuntimeError(f"{key.name} was deleted while it was saved")
        buffer.seek(0)
        while chunk := buffer.read(_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    return copied


class _Blob:
    """Stands for an object version's bytes in the pickle; the bytes are `blobs/<index>`."""

    def __init__(self, index: int, max_size: int) -> None:
        self.index = index
        self.max_size = max_size


class _Pickler(pickle.Pickler):
    """Pickles moto's backends with each S3 object version's bytes left out (`keys` lists
    the versions, in blob order) and every lock and condition as a new one."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.keys: list[Any] = []

    def reducer_override(self, obj: Any) -> Any:
        from moto.s3.models import FakeKey
        from moto.s3.utils import _VersionedKeyStore

        if isinstance(obj, FakeKey):
            state = {name: value for name, value in obj.__dict__.items() if name not in ("lock", "_value_buffer")}
            state["_value_buffer"] = _Blob(len(self.keys), obj._max_buffer_size)
            self.keys.append(None if obj._value_buffer.closed else obj)
            return (_new_model, (type(obj),), state, None, None, _set_key_state)
        if isinstance(obj, _VersionedKeyStore):
            # a dict of key → every version; pickle's own way of saving a dict goes through
            # its items(), which gives the latest version of each key only
            return (_new_model, (type(obj),), (dict(dict.items(obj)), dict(obj.__dict__)), None, None, _set_store)
        if isinstance(obj, threading.Condition):
            return (threading.Condition, ())
        if isinstance(obj, _LOCK_TYPES):
            return (threading.RLock if isinstance(obj, _LOCK_TYPES[1]) else threading.Lock, ())
        return NotImplemented

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Blob):
            return ("blob", obj.index, obj.max_size)
        return None


def _new_model(cls: Any) -> Any:
    # for a FakeKey, moto's BaseModel.__new__ registers it, so that a reset disposes of it
    return cls.__new__(cls)


def _set_store(store: Any, state: tuple[dict[str, list[Any]], dict[str, Any]]) -> None:
    versions, attributes = state
    dict.update(store, versions)
    store.__dict__.update(attributes)


def _set_key_state(key: Any, state: dict[str, Any]) -> None:
    key.__dict__.update(state)
    key.lock = threading.Lock()


# ---------------------------------------------------------------- restoring


def restore(path: Path) -> SaveReport:
    """Replace moto's backends of SERVICES with those saved in `path`."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_header(path, archive)
            with archive.open(_BACKENDS) as entry:
                unpickler = _Unpickler(entry, archive)
                saved: dict[str, Any] = unpickler.load()
    except SnapshotError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, AttributeError) as exc:
        raise SnapshotError(f"cannot read the saved state {path}: {exc}") from exc
    backends: dict[tuple[str, str, str], Any] = saved["backends"]
    for (service, account, region), backend in backends.items():
        _backend_dict(service)[account][region] = backend
    for (service, name), value in saved["shared"].items():
        getattr(_backend_dict(service), name).update(value)
    return SaveReport(path, len(backends), unpickler.objects, unpickler.bytes)


def _check_header(path: Path, archive: zipfile.ZipFile) -> None:
    import moto

    try:
        header = json.loads(archive.read(_HEADER))
    except (KeyError, ValueError) as exc:
        raise SnapshotError(f"{path} is not a local stack snapshot ({exc})") from exc
    if header.get("format") != FORMAT:
        raise SnapshotError(f"{path} has snapshot format {header.get('format')}, this batchdrop reads {FORMAT}")
    if header.get("moto") != moto.__version__:
        raise SnapshotError(
            f"{path} was saved by moto {header.get('moto')} and this is moto {moto.__version__}: its objects"
            " may not load; move it away to start empty"
        )


class _Unpickler(pickle.Unpickler):
    """Reads `backends.pickle`, each object version's bytes from its blob entry into a buffer
    of moto's kind (spooled to disk above the key's buffer size)."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile) -> None:
        super().__init__(file)
        self._archive = archive
        self.objects = 0
        self.bytes = 0

    def persistent_load(self, pid: Any) -> Any:
        kind, index, max_size = pid
        if kind != "blob":
            raise pickle.UnpicklingError(f"unknown reference {kind!r}")
        buffer = tempfile.SpooledTemporaryFile(max_size=max_size)  # noqa: SIM115 - the key owns it
        with self._archive.open(f"blobs/{index}") as blob:
            shutil.copyfileobj(blob, buffer, _CHUNK)
        self.objects += 1
        self.bytes += buffer.tell()
        return buffer


# ---------------------------------------------------------------- saving as it goes

# Calls that only read, by the name in X-Amz-Target or the query's Action (DynamoDB, Events,
# Secrets Manager, SQS). A receive only hides a message for its visibility timeout.
_READS = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "ReceiveMessage", "Head")


class Autosaver:
    """Saves the state every `seconds` while moto has taken a call that may change it since
    the last save, so that a stack killed without a stop loses at most that much.

    `watch(app)` wraps moto's WSGI application to count those calls: a request with any
    method but GET and HEAD whose action, when it names one, is not a read."""

    def __init__(self, state: StateDir, seconds: float) -> None:
        self.state = state
        self.seconds = seconds
        self.changes = 0
        self.saves = 0
        self._saved_at_change = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-stack-autosave", daemon=True)

    def watch(self, app: Any) -> Any:
        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            if _may_change(environ):
                self.changes += 1  # one writer at a time is not needed: a lost count only delays a save
            return app(environ, start_response)

        return counting

    def start(self) -> Autosaver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def save_if_changed(self) -> bool:
        changes = self.changes
        if changes == self._saved_at_change:
            return False
        try:
            self.state.save()
        except (OSError, ValueError) as exc:
            _log.error("the local stack's state was not saved to %s: %s", self.state.path, exc)
            return False
        self._saved_at_change = changes
        self.saves += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            self.save_if_changed()


def _may_change(environ: dict[str, Any]) -> bool:
    if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD"):
        return False
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    action = target.rpartition(".")[2] if target else _query_action(environ.get("QUERY_STRING", ""))
    return not action.startswith(_READS)


def _query_action(query: str) -> str:
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "Action":
            return value
    return ""
