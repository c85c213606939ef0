"""The narrator of `batchdrop local up`: what the runner reports and what the state table holds
in, one line per event out, never twice, whatever was skipped between two reads."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.records import JobRecord, ShardRecord, SourceRef
from batchdrop.domain.states import JobStatus, ShardState
from batchdrop_local.narrator import ErrorLines, Narrator
from tests.unit.fakes import FakeStateStore

BUCKET = "batchdrop-local"
KEY = "inbox/a.jsonl"
VERSION = "v1"
JOB = job_id_for(BUCKET, KEY, VERSION)
MANIFEST_KEY = f"results/{JOB}/manifest.json"
T = "10:00:00"


def s3_event(key: str, version: str) -> dict[str, Any]:
    return {"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "versionId": version}}}]}


def job(status: JobStatus, **changes: Any) -> JobRecord:
    record = JobRecord(JOB, status, SourceRef(BUCKET, KEY, VERSION), "2026-12-06T10:00:00Z")
    return replace(record, **changes)


def shard(state: ShardState, **changes: Any) -> ShardRecord:
    record = ShardRecord(
        job_id=JOB,
        index=0,
        state=state,
        key=f"work/{JOB}/0.jsonl",
        requests=3,
        attempt_requests=3,
        size=100,
        ids_digest="",
        attempt=1,
        creates_sent=0,
        max_attempts=3,
    )
    return replace(record, **changes)


class Scene:
    """A narrator over an in-memory state table, writing into `lines`."""

    def __init__(self) -> None:
        self.state = FakeStateStore()
        self.manifests: dict[str, dict[str, Any]] = {}
        self.lines: list[str] = []
        self.narrator = Narrator(
            self.state,
            self.manifests.get,
            self.lines.append,
            bucket=BUCKET,
            clock=lambda: datetime(2026, 12, 6, 10, 0, 0),
            interval=0.01,
        )

    def told(self) -> list[str]:
        """The lines written since the last call, after one round of narration."""
        self.narrator.narrate()
        lines, self.lines[:] = list(self.lines), []
        return lines


def test_a_job_from_upload_to_manifest_is_told_once_per_event() -> None:
    scene = Scene()
    # When the runner hands the upload to the submit function, which records the job
    scene.narrator.delivering(s3_event(KEY, VERSION))
    scene.state.put_job(job(JobStatus.RECEIVED))
    assert scene.told() == [f"{T} {KEY} (version {VERSION}) → job {JOB}"]

    # When its lines are read: one shard, a rejected line
    scene.state.put_job(job(JobStatus.SUBMITTING, requested=3, rejected=1, shard_count=1))
    scene.state.put_shard(shard(ShardState.PENDING))
    assert scene.told() == [f"{T} job {JOB}: 3 requests in 1 shard, 1 line rejected"]

    # When its batch is created, then makes progress (said once per change)
    scene.state.put_shard(shard(ShardState.SUBMITTED, batch_id="msgbatch_1"))
    assert scene.told() == [f"{T} job {JOB} shard 0: batch msgbatch_1 created (3 requests)"]
    assert scene.told() == []
    progress = {"processing": 1, "succeeded": 1, "errored": 1}
    expires = "2026-12-07T10:00:01.518282Z"
    scene.state.put_shard(
        replace(shard(ShardState.SUBMITTED, batch_id="msgbatch_1"), progress=progress, expires_at=expires)
    )
    assert scene.told() == [f"{T} job {JOB} shard 0: batch msgbatch_1 2/3 done, expires 2026-12-07T10:00:01Z"]
    assert scene.told() == []

    # When one errored request goes out again and its new batch is made, both between two reads
    ended = ({"attempt": 1, "batch_id": "msgbatch_1", "counts": {"succeeded": 2, "errored": 1}},)
    scene.state.put_shard(
        shard(ShardState.SUBMITTED, attempt=2, attempt_requests=1, batch_id="msgbatch_2", attempts_log=ended)
    )
    assert scene.told() == [
        f"{T} job {JOB} shard 0: 1 request retried, attempt 2 of 3: batch msgbatch_1 ended with 2 succeeded, 1 errored",
        f"{T} job {JOB} shard 0: batch msgbatch_2 created (1 request, attempt 2)",
    ]

    # When its results are written and the job ends with its manifest
    counts = {"succeeded": 3}
    scene.state.put_shard(shard(ShardState.COLLECTED, attempt=2, batch_id="msgbatch_2", counts=counts))
    assert scene.told() == [f"{T} job {JOB} shard 0: results written (3 succeeded); job 3/3 requests done"]
    scene.manifests[MANIFEST_KEY] = {
        "status": "COMPLETED_WITH_ERRORS",
        "counts": {"requests": 3, "succeeded": 3, "errored": 0, "expired": 0, "rejected": 1},
        "cost": {"batch_usd": "0.000103"},
    }
    scene.state.put_job(job(JobStatus.COMPLETED_WITH_ERRORS, requested=3, rejected=1, manifest_key=MANIFEST_KEY))
    assert scene.told() == [
        f"{T} job {JOB} COMPLETED_WITH_ERRORS: 3 requests, 3 succeeded, 1 rejected; cost $0.000103 ({MANIFEST_KEY})"
    ]
    # Then nothing more is said of it, even if the event comes again
    scene.narrator.delivering(s3_event(KEY, VERSION))
    assert scene.told() == []


def test_a_job_that_failed_within_one_invocation_is_told_with_its_reason() -> None:
    scene = Scene()
    scene.narrator.delivering(s3_event(KEY, VERSION))
    scene.state.put_job(job(JobStatus.FAILED, rejected=2, reason="every line was rejected", manifest_key=MANIFEST_KEY))
    assert scene.told() == [
        f"{T} {KEY} (version {VERSION}) → job {JOB}",
        f"{T} job {JOB} FAILED: every line was rejected; 2 lines rejected ({MANIFEST_KEY})",
    ]
    assert scene.told() == []


def test_a_job_the_sweep_started_is_found_in_the_open_index() -> None:
    scene = Scene()
    scene.state.put_job(job(JobStatus.SUBMITTING, requested=3, shard_count=1))
    assert scene.told() == [
        f"{T} {KEY} (version {VERSION}) → job {JOB} (found by the sweep)",
        f"{T} job {JOB}: 3 requests in 1 shard",
    ]


def test_a_job_the_sweep_started_and_that_failed_at_once_is_told_from_the_sweep_s_report() -> None:
    # Given a file the sweep found, whose job failed as it was read: never in the open index
    scene = Scene()
    failed = job(JobStatus.FAILED, reason="line 1: not JSON", rejected=1, manifest_key=MANIFEST_KEY)
    scene.state.put_job(failed)
    assert scene.told() == []

    # When the sweep's invocation ends, reporting the job it started
    scene.narrator.invoked("SubmitFunction", 1, None, {"seen": 1, "started": [JOB], "left": 0})

    # Then the job is told, once
    assert scene.told() == [
        f"{T} {KEY} (version {VERSION}) → job {JOB} (found by the sweep)",
        f"{T} job {JOB} FAILED: line 1: not JSON; 1 line rejected ({MANIFEST_KEY})",
    ]
    assert scene.told() == []


def test_failures_are_one_line_each() -> None:
    scene = Scene()
    scene.narrator.invoked("SubmitFunction", 1, "ValueError: boom\nsecond line")
    scene.narrator.invoked("CheckerFunction", 1, None)
    scene.narrator.event_failed("SubmitFunction", 3, "ValueError: boom", "batchdrop-local-SubmitFailures")
    logger = logging.getLogger("test-narrator-errors")
    logger.propagate = False
    handler = ErrorLines(scene.narrator)
    logger.addHandler(handler)
    try:
        logger.info("not an error")
        logger.error("cannot read the file", extra={"service": "submit", "job_id": JOB})
    finally:
        logger.removeHandler(handler)
    assert scene.told() == [
        f"{T} ERROR SubmitFunction invocation 1 failed: ValueError: boom second line",
        f"{T} ERROR SubmitFunction event failed all 3 attempts, sent to batchdrop-local-SubmitFailures: "
        "ValueError: boom",
        f"{T} ERROR submit: cannot read the file (job {JOB})",
    ]


def test_many_jobs_at_once_each_told_once() -> None:
    scene = Scene()
    scene.narrator.start()
    keys = [f"inbox/{n}.jsonl" for n in range(40)]

    def deliver(key: str) -> None:
        scene.narrator.delivering(s3_event(key, VERSION))
        scene.narrator.delivering(s3_event(key, VERSION))  # a duplicate event

    threads = [threading.Thread(target=deliver, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scene.narrator.stop()
    assert sorted(scene.lines) == sorted(
        f"{T} {key} (version {VERSION}) → job {job_id_for(BUCKET, key, VERSION)}" for key in keys
    )


def test_a_job_delivered_while_the_table_is_read_is_not_said_to_be_the_sweeps() -> None:
    # Given a narration round that has taken the queued events, and reads the open jobs just
    # as the runner delivers an upload and the submit function records its job
    scene = Scene()
    read_open_work = scene.state.open_work

    def open_work_as_the_upload_arrives() -> Any:
        scene.narrator.delivering(s3_event(KEY, VERSION))
        scene.state.put_job(job(JobStatus.SUBMITTING, requested=3, shard_count=1))
        return read_open_work()

    scene.state.open_work = open_work_as_the_upload_arrives  # type: ignore[method-assign]
    told = scene.told()
    scene.state.open_work = read_open_work  # type: ignore[method-assign]

    # Then the job is announced once, as delivered, not as found by the sweep
    assert told == [f"{T} {KEY} (version {VERSION}) → job {JOB}", f"{T} job {JOB}: 3 requests in 1 shard"]
    assert scene.told() == []


def test_a_table_it_cannot_read_is_told_once_until_it_can() -> None:
    scene = Scene()

    def unreadable() -> Any:
        raise ConnectionError("nothing listens at http://127.0.0.1:1")

    scene.state.open_work = unreadable  # type: ignore[method-assign]
    scene.narrator.start()
    for attempt in range(1, 4):
        scene.narrator.invoked("CheckerFunction", attempt, None)
        time.sleep(0.05)
    scene.narrator.stop()
    assert scene.lines == [f"{T} ERROR the narrator cannot read the state table: nothing listens at http://127.0.0.1:1"]
