"""BatchesApi.find_recent: where reading the workspace's list stops. Every batch it does not
return is retrieved on its own by the checker, so stopping early costs calls, never a batch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from anthropic import APIConnectionError

from batchdrop.adapters.batches import BatchesApi
from batchdrop.errors import ProviderUnavailableError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@dataclass
class _Batch:
    id: str
    created_at: datetime

    def model_dump(self, mode: str) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at.isoformat(), "mode": mode}


class _Workspace:
    """The list endpoint over `count` batches b0 (newest) … b<count-1>, a minute apart;
    pages fail from `fail_from` (counted from 1)."""

    def __init__(self, count: int, fail_from: int | None = None) -> None:
        self.batches = [_Batch(f"b{i}", NOW - timedelta(minutes=i)) for i in range(count)]
        self.fail_from = fail_from
        self.calls: list[int] = []  # the limit of each list call

    def list(self, limit: int) -> _Page:
        return self._page(0, limit)

    def _page(self, start: int, limit: int) -> _Page:
        self.calls.append(limit)
        if self.fail_from is not None and len(self.calls) >= self.fail_from:
            raise APIConnectionError(request=httpx2.Request("GET", "https://api.example/v1/messages/batches"))
        return _Page(self, start, limit)


@dataclass
class _Page:
    workspace: _Workspace
    start: int
    limit: int

    @property
    def data(self) -> list[_Batch]:
        return self.workspace.batches[self.start : self.start + self.limit]

    def has_next_page(self) -> bool:
        return self.start + self.limit < len(self.workspace.batches)

    def get_next_page(self) -> _Page:
        return self.workspace._page(self.start + self.limit, self.limit)


def _api(workspace: _Workspace) -> BatchesApi:
    class Client:
        class messages:  # the SDK's attribute: client.messages.batches
            batches = workspace

    return BatchesApi(lambda: "key", client=Client())


def test_it_stops_as_soon_as_every_batch_is_found() -> None:
    workspace = _Workspace(1000)
    found = _api(workspace).find_recent(["b3", "b150"], not_before=None, max_calls=10)

    assert sorted(found) == ["b150", "b3"]
    assert workspace.calls == [100, 100]  # pages of 100 (twice the ids, at least 100)


def test_it_stops_at_batches_older_than_the_oldest_wanted() -> None:
    # b9999 is not in the list (deleted, say): the pages stop once they pass 250 minutes ago
    workspace = _Workspace(1000)
    found = _api(workspace).find_recent(["b5", "b9999"], NOW - timedelta(minutes=250), max_calls=50)

    assert list(found) == ["b5"]
    assert len(workspace.calls) == 3  # the third page holds b200-b299, older than not_before


def test_it_stops_after_its_calls_are_spent() -> None:
    workspace = _Workspace(1000)
    found = _api(workspace).find_recent(["b1", "b700"], not_before=None, max_calls=2)

    assert list(found) == ["b1"]
    assert len(workspace.calls) == 2


def test_pages_are_as_large_as_twice_the_batches_wanted_up_to_the_api_maximum() -> None:
    workspace = _Workspace(3000)
    _api(workspace).find_recent([f"b{i}" for i in range(700)], not_before=None, max_calls=1)

    assert workspace.calls == [1000]


def test_a_first_page_that_fails_raises_and_a_later_one_keeps_what_was_found() -> None:
    with pytest.raises(ProviderUnavailableError, match="list batches"):
        _api(_Workspace(500, fail_from=1)).find_recent(["b1"], not_before=None, max_calls=5)

    found = _api(_Workspace(500, fail_from=2)).find_recent(["b1", "b400"], not_before=None, max_calls=5)
    assert list(found) == ["b1"]
