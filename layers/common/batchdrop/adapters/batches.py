"""The Message Batches API through the official SDK. Create streams a shard's body as it
is in S3 (never parsed into a list) with the SDK's retries off, because the API has no
idempotency key: a retried create can make a second batch. Results stream as raw lines.
The SDK is imported on first use: it is the heaviest import of the functions.

The key is asked for on every call (its source caches it for the secret's max age), and the
client is made again whenever the key differs from the one it holds: a warm function picks up
a rotated key without a restart. A call the API answers 401 or 403 fetches the key anew and
is made once more (a create's caller does that: its body is read only once here); refused
again, it raises ApiKeyRefusedError and counts one ApiKeyRefused metric."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from batchdrop.errors import (
    ApiKeyRefusedError,
    ProviderOutcomeUnknownError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from batchdrop.observability import count_key_refused, logger, quiet_libraries
from batchdrop.ports import RecentBatches

READ_RETRIES = 3
# The most batches one reconciliation lists (newest first) before giving up on its window.
LIST_MAX_BATCHES = 5000
LIST_PAGE = 100
# The most batches one list call returns (the API's own maximum).
LIST_PAGE_MAX = 1000
RESULTS_CHUNK_BYTES = 1024 * 1024  # read from a results download at a time, then cut into lines
# The SDK's own default, made explicit: results are fetched only from this host (or the one configured).
DEFAULT_BASE_URL = "https://api.anthropic.com"
COUNT_RETRIES = 2  # a count is worth a short wait, never a job's: the estimate falls back without it
COUNT_TIMEOUT = 10.0
# A priming request is worth a short wait, never a job's: a job whose priming fails goes on unprimed.
PRIME_RETRIES = 2
PRIME_TIMEOUT = 60.0
# authentication_error and permission_error: the key is wrong, revoked or not allowed.
KEY_REFUSED_STATUSES = frozenset({401, 403})

T = TypeVar("T")


class BatchesApi:
    """`api_key` gives the key (cached by its source); `refetch_key` fetches it anew, past any
    cache (default: `api_key`). A `client` handed in is used as it is, whatever the key
    (tests and local tools); otherwise `make_client(key, base_url)` makes one (default: the SDK's)."""

    def __init__(
        self,
        api_key: Callable[[], str],
        base_url: str | None = None,
        client: Any = None,
        *,
        refetch_key: Callable[[], str] | None = None,
        make_client: Callable[[str, str], Any] | None = None,
    ) -> None:
        self._api_key = api_key
        self._refetch_key = refetch_key or api_key
        self._base_url = base_url or DEFAULT_BASE_URL
        self._fixed_client = client
        self._make_client = make_client or _sdk_client
        self._lock = threading.Lock()
        self._client: Any = None
        self._client_key: str | None = None

    @property
    def client(self) -> Any:
        """The client for the key in force now (made again when the key changed)."""
        return self._client_for(self._api_key)

    def _client_for(self, key_source: Callable[[], str]) -> Any:
        if self._fixed_client is not None:
            return self._fixed_client
        key = key_source()
        with self._lock:
            if self._client is None or key != self._client_key:
                self._client = self._make_client(key, self._base_url)
                self._client_key = key
            return self._client

    def _call(self, what: str, call: Callable[[Any], T]) -> T:
        """`call(client)`; on a refused key, once more with the key fetched anew."""
        import anthropic

        try:
            return call(self.client)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            logger.warning("API key refused: fetching it again", extra={"call": what, "status": exc.status_code})
        try:
            return call(self.refreshed_client())
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise key_refused(what, exc.status_code, _message(exc)) from exc

    def warm(self) -> None:
        """Make the client now, reading the key: the submit function does it while a large
        file is split, so the estimate's first count finds both ready."""
        try:
            self._client_for(self._api_key)
        except Exception:  # noqa: BLE001 - the first call meets the same failure, and reports it
            logger.debug("the API client could not be made ahead of its first call", exc_info=True)

    def refreshed_client(self) -> Any:
        """The client for the key fetched anew from its source, past any cache."""
        return self._client_for(self._refetch_key)

    def create(self, body: Iterable[bytes], size: int, timeout: float) -> dict[str, Any]:
        """Send one create body of `size` bytes; the new batch. Raises ProviderRejectedError
        (4xx: no batch was created) or ProviderOutcomeUnknownError (a batch may exist).
        `timeout` bounds each phase of the call (connect, each write, the read)."""
        import anthropic
        from anthropic.types.messages import MessageBatch

        try:
            batch = self.client.with_options(max_retries=0, timeout=timeout).post(
                "/v1/messages/batches",
                cast_to=MessageBatch,
                content=iter(body),
                options={"headers": {"Content-Length": str(size), "Content-Type": "application/json"}},
            )
        except anthropic.APIStatusError as exc:
            if exc.status_code in KEY_REFUSED_STATUSES:
                # No batch was made. The key is fetched anew for the caller's one more try.
                self.refreshed_client()
                raise ApiKeyRefusedError(exc.status_code, f"create: the API refused the key: {_message(exc)}") from exc
            if exc.status_code < 500:
                queue_full = exc.status_code == 429
                raise ProviderRejectedError(exc.status_code, _message(exc), queue_full=queue_full) from exc
            raise ProviderOutcomeUnknownError(f"create answered {exc.status_code}: {_message(exc)}") from exc
        except anthropic.APIConnectionError as exc:  # includes timeouts
            raise ProviderOutcomeUnknownError(f"create got no answer: {type(exc).__name__}") from exc
        return _as_dict(batch)

    def count_tokens(self, body: Mapping[str, Any]) -> int:
        """The input tokens of one request (`body`: what count_tokens takes of its params), with
        the SDK's retries (a 429 waits as its retry-after says) within COUNT_TIMEOUT a try."""
        return int(
            self._call(
                "count_tokens",
                lambda client: (
                    client.with_options(max_retries=COUNT_RETRIES, timeout=COUNT_TIMEOUT)
                    .messages.count_tokens(**body)
                    .input_tokens
                ),
            )
        )

    def prime(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request's `params` through `messages.create` (the SDK's retries, within
        PRIME_TIMEOUT a try); the answer's `usage`. The fields `create` names go as arguments,
        any other as they are in the body (`extra_body`), so nothing of the prefix changes.
        Raises ProviderUnavailableError when the API refused it or gave no answer."""
        import anthropic

        known, extra = _create_arguments(params)
        try:
            message = self._call(
                "prime",
                lambda client: client.with_options(max_retries=PRIME_RETRIES, timeout=PRIME_TIMEOUT).messages.create(
                    **known, extra_body=extra or None
                ),
            )
        except (anthropic.APIConnectionError, anthropic.APIStatusError) as exc:
            raise ProviderUnavailableError(f"prime: {type(exc).__name__}: {_message(exc)}") from exc
        usage: dict[str, Any] = message.usage.model_dump(mode="json", exclude_none=True)
        return usage

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        import anthropic

        try:
            return _as_dict(self._call("retrieve", lambda client: client.messages.batches.retrieve(batch_id)))
        except (anthropic.APIConnectionError, anthropic.APIStatusError) as exc:
            # Any other status (a 404, say) leaves the batch to the next tick, with the reason logged;
            # a key refused again raises ApiKeyRefusedError, which is not an SDK error.
            raise ProviderUnavailableError(f"retrieve {batch_id}: {type(exc).__name__}: {exc}") from exc

    def list_recent(self, not_before: datetime) -> RecentBatches:
        """The workspace's batches, newest first, back to the first one created before
        `not_before` (excluded). Incomplete when the listing stopped at LIST_MAX_BATCHES."""
        import anthropic

        batches: list[dict[str, Any]] = []
        try:
            for batch in self._call("list", lambda client: client.messages.batches.list(limit=LIST_PAGE)):
                if batch.created_at < not_before:
                    return RecentBatches(batches, complete=True)
                if len(batches) >= LIST_MAX_BATCHES:
                    return RecentBatches(batches, complete=False)
                batches.append(batch.model_dump(mode="json"))
        except (anthropic.APIConnectionError, anthropic.InternalServerError, anthropic.RateLimitError) as exc:
            raise ProviderUnavailableError(f"list batches: {type(exc).__name__}") from exc
        return RecentBatches(batches, complete=True)

    def find_recent(
        self, ids: Collection[str], not_before: datetime | None, max_calls: int
    ) -> dict[str, dict[str, Any]]:
        """Those of the batches `ids` that the workspace's list shows, by id, from at most
        `max_calls` pages, newest first. It stops as soon as every id is found, or once a page
        reaches batches created before `not_before`: a batch it does not return is to be
        retrieved on its own. Raises ProviderUnavailableError if the first page fails."""
        import anthropic

        wanted, found = set(ids), {}
        page_size = min(LIST_PAGE_MAX, max(LIST_PAGE, 2 * len(wanted)))
        calls = 0
        try:
            page = self._call("list", lambda client: client.messages.batches.list(limit=page_size))
            while True:
                calls += 1
                oldest = None
                for batch in page.data:
                    if batch.id in wanted:
                        found[batch.id] = batch.model_dump(mode="json")
                    oldest = batch.created_at
                past = not_before is not None and oldest is not None and oldest < not_before
                if len(found) == len(wanted) or past or calls >= max_calls or not page.has_next_page():
                    return found
                page = page.get_next_page()
        except (anthropic.APIConnectionError, anthropic.APIStatusError) as exc:
            if not calls:
                raise ProviderUnavailableError(f"list batches: {type(exc).__name__}: {exc}") from exc
            return found  # the pages read so far stand; the rest is retrieved one by one

    def cancel(self, batch_id: str) -> dict[str, Any] | None:
        """Ask the provider to cancel a batch; None when it refuses (e.g. it has ended)."""
        import anthropic

        try:
            return _as_dict(self._call("cancel", lambda client: client.messages.batches.cancel(batch_id)))
        except (anthropic.APIConnectionError, anthropic.InternalServerError, anthropic.RateLimitError) as exc:
            raise ProviderUnavailableError(f"cancel {batch_id}: {type(exc).__name__}") from exc
        except anthropic.APIStatusError:
            return None

    def result_lines(self, batch: Mapping[str, Any]) -> Iterator[bytes]:
        """The raw JSONL lines of an ended batch, as the API sends them."""
        import anthropic
        import httpx2

        url = batch.get("results_url")
        if not url:
            raise ProviderUnavailableError(f"batch {batch['id']} has no results_url yet")
        self._check_results_host(str(batch["id"]), str(url))
        try:
            response = self._call(
                "results",
                lambda client: client.get(
                    url, cast_to=httpx2.Response, stream=True, options={"headers": {"Accept": "application/binary"}}
                ),
            )
        except (anthropic.APIConnectionError, anthropic.InternalServerError, anthropic.RateLimitError) as exc:
            raise ProviderUnavailableError(f"results of {batch['id']}: {type(exc).__name__}") from exc
        try:
            yield from _lines_of(response.iter_bytes(RESULTS_CHUNK_BYTES))
        except httpx2.HTTPError as exc:
            raise ProviderUnavailableError(f"results of {batch['id']} cut off: {type(exc).__name__}") from exc
        finally:
            response.close()

    def _check_results_host(self, batch_id: str, url: str) -> None:
        """A results_url elsewhere than the API's own host (scheme, host and port) is not
        fetched: the request would carry the key there. A relative URL goes to the API."""
        found, expected = urlsplit(url), urlsplit(self._base_url)
        if not found.netloc and not found.scheme:
            return
        try:
            same = (found.scheme.lower(), found.hostname, _port(found.scheme, found.port)) == (
                expected.scheme.lower(),
                expected.hostname,
                _port(expected.scheme, expected.port),
            )
        except ValueError:  # a port that is not a number
            same = False
        if not same:
            logger.error("results_url refused: not the API's host", extra={"batch_id": batch_id, "url": url})
            host, api = found.netloc, expected.netloc
            raise ProviderUnavailableError(f"results of {batch_id}: results_url host {host!r} is not the API's {api!r}")


def key_refused(what: str, status: int, message: str) -> ApiKeyRefusedError:
    """The error for a key refused again after a fresh fetch, counted in the ApiKeyRefused metric."""
    logger.error("API key refused after fetching it again", extra={"call": what, "status": status})
    count_key_refused()
    return ApiKeyRefusedError(status, f"{what}: the API refused the key: {message}")


def _sdk_client(key: str, base_url: str) -> Any:
    import anthropic

    quiet_libraries()  # the SDK sets its loggers' levels from ANTHROPIC_LOG at import
    return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=READ_RETRIES)


def _create_arguments(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`params` split into the keyword arguments the SDK's `messages.create` names and the rest."""
    import inspect

    import anthropic

    named = inspect.signature(anthropic.resources.messages.Messages.create).parameters
    taken = {name for name in named if name not in ("self", "extra_headers", "extra_query", "extra_body", "timeout")}
    known = {name: value for name, value in params.items() if name in taken}
    return known, {name: value for name, value in params.items() if name not in taken}


def _port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme.lower())


def _as_dict(model: Any) -> dict[str, Any]:
    """One of the SDK's models as the JSON-ready dict the services keep. The client is Any
    (tests hand in their own), so what it returns is too: this says what model_dump gives."""
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return str(exc)


def _lines_of(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a stream of bytes, without their line ends (LF, or CRLF). As
    bytes: decoding each line to text and back cost a fifth of collecting a batch. JSON Lines
    cannot hold a raw CR or LF inside a line, so splitting on LF alone loses nothing."""
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.strip():
                yield line[:-1] if line.endswith(b"\r") else line
    if pending.strip():
        yield pending[:-1] if pending.endswith(b"\r") else pending
