"""The report written when a job finishes (services/report.py, called by services/finish.py):
the checker writes it with the job's figures and first rejected lines, reads no more of the
rejected file than it shows, and never holds a job open for it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from batchdrop.domain.jobs import manifest_key, rejected_key, report_key
from batchdrop.domain.report import REJECTED_SHOWN
from batchdrop.domain.states import JobStatus
from batchdrop.services import finish
from batchdrop.services.intake import Intake
from batchdrop.services.report import MAX_REJECTED_BYTES, REPORT_CONTENT_TYPE, read_rejected
from batchdrop.services.tick import Checker
from tests.unit.fakes import EXPIRED, FakeBody, FakeObjectStore, Fakes, errored, request, succeeded

pytestmark = pytest.mark.unit


class CountingStore(FakeObjectStore):
    """A store that counts the bytes its opened bodies hand out, and whether each was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes_read = 0
        self.bodies: list[FakeBody] = []

    def open(self, key: str, version_id: str | None = None) -> tuple[int, FakeBody]:
        size, body = super().open(key, version_id)
        store = self

        class Counted(FakeBody):
            def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
                for chunk in body.iter_chunks(chunk_size):
                    store.bytes_read += len(chunk)
                    yield chunk

        counted = Counted(b"")
        self.bodies.append(counted)
        return size, counted


def rejected_line(number: int, reason: str = "params.model: missing") -> bytes:
    record = {"line": number, "custom_id": f"id-{number}", "reason": reason, "source": "inbox/x.jsonl"}
    return json.dumps(record).encode() + b"\n"


def test_only_the_first_lines_of_a_large_rejected_file_are_read() -> None:
    # Given a rejected file of 100,000 lines (some 9 MB)
    store = CountingStore()
    store.put("errors/j/rejected.jsonl", b"".join(rejected_line(n) for n in range(1, 100_001)))
    # When the report's sample is read
    sample = read_rejected(store, "errors/j/rejected.jsonl")
    # Then it holds the first lines shown, says there are more, and read one chunk of the file
    assert [entry.line for entry in sample.entries] == list(range(1, REJECTED_SHOWN + 1))
    assert sample.more
    assert store.bytes_read <= 64 * 1024
    assert all(body.closed for body in store.bodies)


def test_a_rejected_line_longer_than_the_bound_is_left_out() -> None:
    # Given a rejected file whose first line is longer than the report reads
    store = CountingStore()
    store.put("errors/j/rejected.jsonl", rejected_line(1, "x" * (2 * MAX_REJECTED_BYTES)) + rejected_line(2))
    # When its sample is read
    sample = read_rejected(store, "errors/j/rejected.jsonl")
    # Then nothing past the bound was read, no cut line is shown, and the page will say there is more
    assert store.bytes_read <= MAX_REJECTED_BYTES + 64 * 1024
    assert sample.entries == ()
    assert sample.more


def test_a_small_rejected_file_is_shown_whole() -> None:
    # Given three rejected lines, the last without its newline
    store = CountingStore()
    store.put("errors/j/rejected.jsonl", rejected_line(1) + rejected_line(5) + rejected_line(9).rstrip(b"\n"))
    sample = read_rejected(store, "errors/j/rejected.jsonl")
    assert [entry.line for entry in sample.entries] == [1, 5, 9]
    assert not sample.more


def finish_a_job(world: Fakes) -> str:
    """A job of one rejected line (its custom_id a script) and four requests, which end
    succeeded, errored, expired and succeeded, finished by the checker; its id."""
    hostile = b'{"custom_id": "<script>alert(1)</script>", "params": {}}'
    source = world.upload("inbox/mixed.jsonl", [request("a"), hostile, *(request(cid) for cid in "bcd")])
    job_id = Intake(world.wiring(max_attempts=1)).submit(source).job_id
    shard = world.state.get_shard(job_id, 0)
    assert shard is not None
    assert shard.batch_id is not None
    world.batches.end(
        shard.batch_id,
        {"a": succeeded("a"), "b": errored("invalid_request_error"), "c": EXPIRED, "d": succeeded("d")},
    )
    Checker(world.wiring(max_attempts=1), seconds_left=lambda: 900.0).tick()
    return job_id


def test_a_finished_job_has_its_report_beside_its_manifest() -> None:
    # Given a job with every kind of line, finished by the checker
    world = Fakes()
    job_id = finish_a_job(world)
    job = world.state.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    # Then its report is in results/, as HTML, and the manifest names it
    key = report_key(job_id)
    assert world.store.exists(key)
    assert world.store._current(key).content_type == REPORT_CONTENT_TYPE
    assert world.store.get_json(manifest_key(job_id))["report"] == key
    # And it shows the job's figures and its rejected line, whose script stays text
    page = world.store.get(key).decode()
    assert job_id in page
    assert "COMPLETED_WITH_ERRORS" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert world.store.exists(rejected_key(job_id))
    assert "params.model" in page
    # And the completion event went out after it
    assert [event["job_id"] for event in world.events.published] == [job_id]


def test_a_report_that_fails_is_logged_and_the_job_finishes_all_the_same(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a report that cannot be rendered
    def broken(*_: object) -> str:
        raise RuntimeError("rendering broke")

    monkeypatch.setattr(finish, "write_report", broken)
    # When the checker finishes a job
    world = Fakes()
    job_id = finish_a_job(world)
    # Then the job is finished with its manifest and event, without a report
    job = world.state.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert world.store.exists(manifest_key(job_id))
    assert not world.store.exists(report_key(job_id))
    assert [event["job_id"] for event in world.events.published] == [job_id]
    # And the failure is in the log, with the job and the error
    [logged] = [record for record in caplog.records if record.getMessage() == "the job's report was not written"]
    assert logged.levelname == "ERROR"
    assert logged.__dict__["job_id"] == job_id
    assert logged.exc_info is not None
    assert str(logged.exc_info[1]) == "rendering broke"
