"""The emulator's HTTP server: the Message Batches API on the real paths, synchronous
`POST /v1/messages` (answered whole, never streamed), token counting, plus the
`/_emulator/` control endpoint. Standard library only, so the emulator owns its sockets
and can drop a connection exactly where a real network would."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ijson
from pydantic import ValidationError

from batchdrop_local.emulator.caching import workspace_of
from batchdrop_local.emulator.faults import ERROR_TYPE_BY_STATUS, FaultInjector, FaultSettings
from batchdrop_local.emulator.responder import Responder, load_responder, prompt_tokens
from batchdrop_local.emulator.settings import EmulatorSettings
from batchdrop_local.emulator.store import ApiError, Store
from batchdrop_local.emulator.validation import (
    body_error,
    count_error,
    count_tokens_error,
    envelope_error,
    params_error,
    poison_error,
)
from batchdrop_local.emulator.wire import compact, derived_id, error_body, new_request_id

_BATCHES = re.compile(r"^/v1/messages/batches/?$")
_BATCH = re.compile(r"^/v1/messages/batches/(?P<id>[^/]+)(?P<action>/cancel|/results)?/?$")
_COUNT_TOKENS = re.compile(r"^/v1/messages/count_tokens/?$")
_MESSAGES = re.compile(r"^/v1/messages/?$")
_CONTROL_PREFIX = "/_emulator/"
_READ_SIZE = 1 << 20
_log = logging.getLogger(__name__)
# The first status the API pairs with each error type: api_error is a 500, timeout_error a 408.
_STATUS_BY_ERROR_TYPE = {error_type: status for status, error_type in reversed(ERROR_TYPE_BY_STATUS.items())}


class _BodyTooLarge(Exception):
    pass


class _Body:
    """A request body as a file-like stream (sized or chunked), capped at `limit` bytes."""

    def __init__(self, rfile: Any, headers: Any, limit: int) -> None:
        self._rfile = rfile
        self._limit = limit
        self.read_bytes = 0
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._left = 0 if self._chunked else int(headers.get("Content-Length") or 0)
        self._done = not self._chunked and self._left == 0
        self.declared = None if self._chunked else self._left

    @property
    def finished(self) -> bool:
        return self._done

    def read(self, size: int = -1) -> bytes:
        if self._done or size == 0:  # parsers probe with read(0) for the stream's type
            return b""
        if self._chunked and self._left == 0 and not self._next_chunk():
            return b""
        want = self._left if size < 0 else min(size, self._left)
        data = self._rfile.read(want)
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._left -= len(data)
        self.read_bytes += len(data)
        if not self._chunked and self._left == 0:
            self._done = True
        if self.read_bytes > self._limit:
            raise _BodyTooLarge
        return data

    def _next_chunk(self) -> bool:
        if self.read_bytes:  # the CRLF that closes the previous chunk
            self._rfile.readline()
        size_line = self._rfile.readline(1024)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            self._done = True
            return False
        self._left = size
        return True

    def drain(self) -> None:
        self._limit = 1 << 62
        while self.read(_READ_SIZE):
            pass


class _Tee:
    """Feeds the parser while writing every byte to the spool file."""

    def __init__(self, body: _Body, out: Any) -> None:
        self._body = body
        self._out = out

    def read(self, size: int = -1) -> bytes:
        data = self._body.read(size)
        self._out.write(data)
        return data


class Emulator:
    """One emulator instance: settings, state, faults, the server and its clock-driven
    processor. `with Emulator(settings) as emu:` serves on `emu.url` until the block ends."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self._initial_faults = settings.faults
        self.faults = FaultInjector(settings.faults, settings.seed)
        self.traffic: Counter[str] = Counter()
        self.creates: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        user = load_responder(settings.responder) if settings.responder else None

        def make_answerer() -> Responder:
            return Responder(seed=settings.seed, user=user)

        self.store = Store(settings, lambda: self.faults, make_answerer, time.time)
        try:
            self._server = _Server((settings.host, settings.port), _Handler, self)
        except BaseException:  # a port in use must not leave the store's temporary directory behind
            self.store.close()
            raise
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> Emulator:
        for target in (self._serve, self._process):
            thread = threading.Thread(target=target, daemon=True, name=f"emulator-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=30)
        self.store.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        # `stop` waits for the loop to notice: the default half-second poll made every stop slow.
        self._server.serve_forever(poll_interval=0.05)

    def _process(self) -> None:
        tick = min(0.05, max(self.settings.latency / 20, 0.01))
        while not self._stop.wait(tick):
            self.store.advance()

    def count(self, counter: Counter[str], key: str) -> None:
        with self._count_lock:
            counter[key] += 1

    def set_faults(self, faults: FaultSettings) -> None:
        self.faults = FaultInjector(faults, self.settings.seed)

    def reset(self, *, clear_faults: bool = False) -> None:
        """Forget every batch and counter; the faults go back to those of the settings, or to
        none with `clear_faults`."""
        self.store.reset()
        self.traffic.clear()
        self.creates.clear()
        self.set_faults(FaultSettings() if clear_faults else self._initial_faults)

    def counters(self) -> dict[str, Any]:
        return {
            "creates_received": self.creates["received"],
            "creates_accepted": self.creates["accepted"],
            "creates_rejected": self.creates["rejected"],
            **self.store.stats(),
            "http_requests": dict(self.traffic),
            "faults_injected": dict(self.faults.injected),
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, the body waits for the
    # client's delayed ACK and every call takes 40 ms.
    disable_nagle_algorithm = True
    server: _Server
    workspace: str  # whose prompt cache a request uses: set once its key is checked

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read the emulator's behaviour, not its access log."""

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator.store.release()

    # --- dispatch ---------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        self.emu = self.server.emulator
        self.request_id = new_request_id()
        self.body = _Body(self.rfile, self.headers, self.emu.settings.max_body_bytes)
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path.startswith(_CONTROL_PREFIX):
                self._control(method, url.path[len(_CONTROL_PREFIX) :])
            else:
                self._api(method, url.path)
        except ApiError as exc:
            self._error(exc.status, exc.error_type, exc.message, exc.headers)
        except (ConnectionError, TimeoutError):
            _log.debug("connection lost on %s %s", method, self.path, exc_info=True)
            self.close_connection = True
        except Exception as exc:  # a bug here must still answer in the API's envelope  # noqa: BLE001
            _log.exception("emulator error on %s %s", method, self.path)
            self.close_connection = True
            self._error(500, "api_error", f"emulator internal error: {type(exc).__name__}: {exc}")

    def _api(self, method: str, path: str) -> None:
        endpoint, batch_id = self._route(method, path)
        self.emu.count(self.emu.traffic, endpoint)
        self._authenticate()
        if endpoint == "create":
            self._create()
            return
        if endpoint == "count_tokens":
            self._count_tokens()
            return
        if endpoint == "messages":
            self._message()
            return
        self.body.drain()
        self._maybe_inject(endpoint)
        time.sleep(self.emu.faults.stall(endpoint))
        store = self.emu.store
        if endpoint == "list":
            self._list()
        elif endpoint == "retrieve":
            self._json(store.get(batch_id).to_api(self._results_base(), store.now()))
        elif endpoint == "cancel":
            self._json(store.cancel(batch_id).to_api(self._results_base(), store.now()))
        elif endpoint == "delete":
            store.delete(batch_id)
            self._json({"id": batch_id, "type": "message_batch_deleted"})
        else:
            self._results(batch_id)

    def _route(self, method: str, path: str) -> tuple[str, str]:
        if _BATCHES.match(path):
            allowed = {"GET": "list", "POST": "create"}
            batch_id = ""
        elif _COUNT_TOKENS.match(path):
            allowed = {"POST": "count_tokens"}
            batch_id = ""
        elif _MESSAGES.match(path):
            allowed = {"POST": "messages"}
            batch_id = ""
        elif match := _BATCH.match(path):
            batch_id = match["id"]
            action = match["action"]
            if action == "/cancel":
                allowed = {"POST": "cancel"}
            elif action == "/results":
                allowed = {"GET": "results"}
            else:
                allowed = {"GET": "retrieve", "DELETE": "delete"}
        else:
            self.body.drain()
            raise ApiError(404, "not_found_error", f"Not found: {path}")
        if method not in allowed:
            self.body.drain()
            raise ApiError(405, "invalid_request_error", f"Method {method} not allowed on {path}")
        return allowed[method], batch_id

    def _authenticate(self) -> None:
        key = self.headers.get("x-api-key")
        bearer = self.headers.get("Authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:].strip()
        expected = self.emu.settings.api_key
        if not key or (expected is not None and key != expected):
            self.body.drain()
            message = "invalid x-api-key" if key else "x-api-key header is required"
            raise ApiError(401, "authentication_error", message)
        self.workspace = workspace_of(key)

    # --- endpoints --------------------------------------------------------------------

    def _create(self) -> None:
        emu = self.emu
        emu.count(emu.creates, "received")
        try:
            spool, custom_ids = self._receive_batch()
        except ApiError:
            emu.count(emu.creates, "rejected")
            raise
        try:
            if emu.faults.queue_full(emu.store.pending_requests(), len(custom_ids)):
                raise ApiError(
                    429,
                    "rate_limit_error",
                    "Number of requests in the processing queue would exceed your organization's limit "
                    f"of {emu.faults.settings.queue_limit}",
                )
            batch = emu.store.add_batch(spool, custom_ids, self.workspace)
        except ApiError:
            emu.count(emu.creates, "rejected")
            raise
        finally:
            spool.unlink(missing_ok=True)
        emu.count(emu.creates, "accepted")
        if emu.faults.lose_create_response():
            self._drop_connection()
            return
        time.sleep(emu.faults.stall("create"))
        self._json(batch.to_api(self._results_base(), emu.store.now()))

    def _receive_batch(self) -> tuple[Path, list[str]]:
        """Stream the create body to a spool file while validating it; the batch's
        custom_ids in order. On any problem the body is drained and the spool removed."""
        settings = self.emu.settings
        body = self.body
        if body.declared is not None and body.declared > settings.max_body_bytes:
            body.drain()
            self._reject_too_large()
        try:
            self._maybe_inject("create")
        except ApiError:
            body.drain()
            raise
        spool = self.emu.store.new_spool()
        custom_ids: list[str] = []
        try:
            with spool.open("wb") as out:
                problem = self._validate_stream(_Tee(body, out), custom_ids)
            if problem is None and not custom_ids:
                with spool.open("rb") as spooled:
                    problem = body_error(ijson.parse(spooled, use_float=True))
            if problem is None:
                problem = count_error(len(custom_ids), settings.max_requests)
        except _BodyTooLarge:
            spool.unlink(missing_ok=True)
            body.drain()
            self._reject_too_large()
        except BaseException:
            spool.unlink(missing_ok=True)
            raise
        if problem is not None:
            spool.unlink(missing_ok=True)
            body.drain()
            raise ApiError(400, "invalid_request_error", problem)
        return spool, custom_ids

    def _validate_stream(self, stream: _Tee, custom_ids: list[str]) -> str | None:
        allow_duplicates = self.emu.settings.allow_duplicate_custom_ids
        poison = self.emu.faults.settings.poison
        seen: dict[str, int] = {}
        try:
            for index, item in enumerate(ijson.items(stream, "requests.item", use_float=True, buf_size=_READ_SIZE)):
                problem = envelope_error(index, item) or poison_error(index, item, poison)
                if problem is not None:
                    return problem
                custom_id = item["custom_id"]
                if not allow_duplicates:
                    first = seen.setdefault(custom_id, index)
                    if first != index:
                        return (
                            f"requests.{index}.custom_id: custom_id '{custom_id}' is already used by "
                            f"requests.{first}; custom_ids must be unique within a batch"
                        )
                custom_ids.append(custom_id)
            # The parser stops at the end of the document: consume (and spool) the rest of
            # the body so the connection can serve the next request.
            while stream.read(_READ_SIZE):
                pass
        except ijson.JSONError as exc:
            return f"There was an error parsing the body of your request: {exc}"
        return None

    def _count_tokens(self) -> None:
        """`{"input_tokens": N}` for a Messages body, as the responder would count its prompt."""
        body = self._small_json_body("count_tokens")
        problem = count_tokens_error(body)
        if problem is not None:
            raise ApiError(400, "invalid_request_error", problem)
        self._json({"input_tokens": prompt_tokens(body)})

    def _message(self) -> None:
        """A synchronous Message: the params checked as a batch request's are (a problem is a
        400 here, not an errored result), answered by the same responder from the key's prompt
        cache, with `service_tier` "standard"; what it caches is there for the next batch."""
        body = self._small_json_body("messages")
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request_error", "Input should be a valid dictionary")
        if body.get("stream") is True:
            raise ApiError(400, "invalid_request_error", "stream: the emulator does not stream; send stream=false")
        problem = params_error(body, self.emu.settings.max_output_tokens, in_batch=False)
        if problem is not None:
            raise ApiError(400, "invalid_request_error", problem)
        message_id = derived_id("msg_", self.emu.settings.seed, self.request_id)
        try:
            result = self.emu.store.message(body, self.workspace, message_id)
        except Exception as exc:  # a user's responder failing answers as the API would  # noqa: BLE001
            raise ApiError(500, "api_error", f"emulator responder failed: {type(exc).__name__}: {exc}") from None
        if result["type"] == "succeeded":
            self._json(result["message"])
            return
        if result["type"] == "errored":
            error = result["error"]["error"]
            status = _STATUS_BY_ERROR_TYPE.get(error["type"], 500)
            raise ApiError(status, error["type"], error["message"])
        raise ApiError(
            500, "api_error", f"the responder answered {result['type']!r}, which only a batch request can be"
        )

    def _small_json_body(self, endpoint: str) -> Any:
        """The whole body of a token-counting or synchronous Messages request (both limited to
        `max_count_tokens_bytes`), parsed, after any fault set for `endpoint`."""
        limit = self.emu.settings.max_count_tokens_bytes
        if self.body.declared is not None and self.body.declared > limit:
            self.body.drain()
            self._reject_too_large()
        chunks: list[bytes] = []
        received = 0
        while chunk := self.body.read(_READ_SIZE):
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                self.body.drain()
                self._reject_too_large()
        self._maybe_inject(endpoint)
        time.sleep(self.emu.faults.stall(endpoint))
        try:
            return json.loads(b"".join(chunks))
        except ValueError as exc:
            message = f"There was an error parsing the body of your request: {exc}"
            raise ApiError(400, "invalid_request_error", message) from None

    def _reject_too_large(self) -> None:
        raise ApiError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")

    def _list(self) -> None:
        limit_text = self.query.get("limit", "20")
        try:
            limit = int(limit_text)
        except ValueError:
            raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            bound = "greater than or equal to 1" if limit < 1 else "less than or equal to 1000"
            raise ApiError(400, "invalid_request_error", f"limit: Input should be {bound}")
        after_id, before_id = self.query.get("after_id"), self.query.get("before_id")
        if after_id and before_id:
            raise ApiError(400, "invalid_request_error", "Only one of after_id and before_id may be given")
        rows, has_more = self.emu.store.page(limit, after_id or None, before_id or None)
        base = self._results_base()
        now = self.emu.store.now()
        data = [row.to_api(base, now) for row in rows]
        self._json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _results(self, batch_id: str) -> None:
        size, lines = self.emu.store.results_of(batch_id)
        cut_at = size // 2 if self.emu.faults.drop_results() else None
        self.send_response(200)
        self.send_header("Content-Type", "application/x-jsonl")
        self.send_header("Content-Length", str(size))
        self.send_header("request-id", self.request_id)
        self.end_headers()
        self._stream(lines, cut_at)

    def _stream(self, lines: Iterator[bytes], cut_at: int | None) -> None:
        sent = 0
        buffer: list[bytes] = []
        buffered = 0
        for line in lines:
            if cut_at is not None and sent + buffered + len(line) > cut_at:
                buffer.append(line[: cut_at - sent - buffered])
                self.wfile.write(b"".join(buffer))
                self.wfile.flush()
                self._drop_connection()
                return
            buffer.append(line)
            buffered += len(line)
            if buffered >= 256 * 1024:
                self.wfile.write(b"".join(buffer))
                sent += buffered
                buffer, buffered = [], 0
        self.wfile.write(b"".join(buffer))

    # --- control ----------------------------------------------------------------------

    def _control(self, method: str, action: str) -> None:
        payload = self._control_payload()
        emu = self.emu
        ids = payload.get("batch_ids")
        if (method, action) == ("GET", "health"):
            self._json({"ok": True})
        elif (method, action) == ("POST", "end"):
            self._json({"ended": emu.store.end_now(ids, "complete")})
        elif (method, action) == ("POST", "expire"):
            self._json({"ended": emu.store.end_now(ids, "expired")})
        elif (method, action) == ("POST", "archive"):
            self._json({"archived": emu.store.archive_now(ids)})
        elif (method, action) == ("GET", "counters"):
            self._json(emu.counters())
        elif (method, action) == ("GET", "custom-ids"):
            self._json(emu.store.custom_id_counts(int(self.query.get("min", "1"))))
        elif (method, action) == ("GET", "faults"):
            self._json(emu.faults.settings.model_dump())
        elif (method, action) == ("PUT", "faults"):
            try:
                faults = FaultSettings.model_validate(payload)
            except ValidationError as exc:
                raise ApiError(400, "invalid_request_error", f"fault settings: {exc}") from None
            emu.set_faults(faults)
            self._json(faults.model_dump())
        elif (method, action) == ("POST", "reset"):
            emu.reset(clear_faults=payload.get("faults") is True)
            self._json({"reset": True})
        else:
            raise ApiError(404, "not_found_error", f"Unknown control call: {method} {_CONTROL_PREFIX}{action}")

    def _control_payload(self) -> dict[str, Any]:
        raw = b"".join(iter(lambda: self.body.read(_READ_SIZE), b""))
        if not raw.strip():
            return {}
        try:
            payload = json.loads(raw)
        except ValueError:
            raise ApiError(400, "invalid_request_error", "control payload is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_request_error", "control payload must be a JSON object")
        return payload

    # --- responses --------------------------------------------------------------------

    def _results_base(self) -> str:
        if self.emu.settings.results_url == "relative":
            return ""
        host = self.headers.get("Host") or f"{self.emu.settings.host}:{self.emu.port}"
        return f"http://{host}"

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, compact(obj), {})

    def _error(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, error_body(error_type, message, self.request_id), headers or {})

    def _maybe_inject(self, endpoint: str) -> None:
        rule = self.emu.faults.http_error(endpoint)
        if rule is None:
            return
        headers = {}
        if rule.status == 429:
            headers["retry-after"] = f"{self.emu.faults.settings.retry_after:g}"
        error_type = ERROR_TYPE_BY_STATUS.get(rule.status, "api_error")
        raise ApiError(rule.status, error_type, f"emulated {rule.status} ({error_type})", headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if not self.body.finished:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", self.request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _drop_connection(self) -> None:
        """Close the socket with no (further) response, as a network failure would."""
        self.close_connection = True
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
