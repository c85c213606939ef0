"""The Message Batches API through the official SDK. Create streams a shard's body as it
is in S3 (never parsed into a list) with the SDK's retries off, because the API has no
idempotency key: a retried create can make a second batch. Results stream as raw lines.
The SDK is imported on first use: it is the heaviest import of the functions."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from batchdrop.errors import ProviderOutcomeUnknownError, ProviderRejectedError, ProviderUnavailableError
from batchdrop.ports import RecentBatches

READ_RETRIES = 3
# The most batches one reconciliation lists (newest first) before giving up on its window.
LIST_MAX_BATCHES = 5000
LIST_PAGE = 100
# The most batches one list call returns (the API's own maximum).
LIST_PAGE_MAX = 1000


class BatchesApi:
    def __init__(self, api_key: Callable[[], str], base_url: str | None = None, client: Any = None) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import anthropic

            self._client = anthropic.Anthropic(
                api_key=self._api_key(), base_url=self._base_url, max_retries=READ_RETRIES
            )
        return self._client

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
            if exc.status_code < 500:
                queue_full = exc.status_code == 429
                raise ProviderRejectedError(exc.status_code, _message(exc), queue_full=queue_full) from exc
            raise ProviderOutcomeUnknownError(f"create answered {exc.status_code}: {_message(exc)}") from exc
        except anthropic.APIConnectionError as exc:  # includes timeouts
            raise ProviderOutcomeUnknownError(f"create got no answer: {type(exc).__name__}") from exc
        return _as_dict(batch)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        import anthropic

        try:
            return _as_dict(self.client.messages.batches.retrieve(batch_id))
        except (anthropic.APIConnectionError, anthropic.APIStatusError) as exc:
            # Any status (a 404 or 401 too) leaves the batch to the next tick, with the reason logged.
            raise ProviderUnavailableError(f"retrieve {batch_id}: {type(exc).__name__}: {exc}") from exc

    def list_recent(self, not_before: datetime) -> RecentBatches:
        """The workspace's batches, newest first, back to the first one created before
        `not_before` (excluded). Incomplete when the listing stopped at LIST_MAX_BATCHES."""
        import anthropic

        batches: list[dict[str, Any]] = []
        try:
            for batch in self.client.messages.batches.list(limit=LIST_PAGE):
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
            page = self.client.messages.batches.list(limit=page_size)
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
            return _as_dict(self.client.messages.batches.cancel(batch_id))
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
        try:
            response = self.client.get(
                url, cast_to=httpx2.Response, stream=True, options={"headers": {"Accept": "application/binary"}}
            )
        except (anthropic.APIConnectionError, anthropic.InternalServerError, anthropic.RateLimitError) as exc:
            raise ProviderUnavailableError(f"results of {batch['id']}: {type(exc).__name__}") from exc
        try:
            for line in response.iter_lines():
                if line.strip():
                    yield line.encode()
        except httpx2.HTTPError as exc:
            raise ProviderUnavailableError(f"results of {batch['id']} cut off: {type(exc).__name__}") from exc
        finally:
            response.close()


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
