"""The sweeper hands the submit function each version's size, as an S3 event would: a lost
event's large clean file is copied early too (the split's early copy reads the size)."""

from __future__ import annotations

import pytest

from batchdrop.domain.jobs import job_id_for
from batchdrop.domain.records import SourceRef
from batchdrop.domain.shards import whole_copy_key
from batchdrop.domain.timings import Timings
from batchdrop.ports import Wiring
from batchdrop.services.intake import Intake, SubmitOutcome
from batchdrop.services.sweeper import Sweeper
from tests.unit.fakes import Fakes, request

pytestmark = pytest.mark.unit


class _Recording(Intake):
    """The submit function, noting what each call was given."""

    def __init__(self, wired: Wiring) -> None:
        super().__init__(wired)
        self.sources: list[tuple[SourceRef, int | None]] = []

    def submit(self, source: SourceRef, size: int | None = None) -> SubmitOutcome:
        self.sources.append((source, size))
        return super().submit(source, size)


def test_a_swept_version_is_submitted_with_its_size() -> None:
    # Given two versions under inbox/ whose events were lost, each one clean shard
    world = Fakes()
    first = world.upload("inbox/a.jsonl", [request("a")])
    second = world.upload("inbox/a.jsonl", [request("b"), request("c")])
    sizes = {first.version_id: len(request("a")) + 1, second.version_id: len(request("b") + request("c")) + 2}
    # A file of any size is copied early here, so that the copy shows the size reached the split.
    wired = world.wiring(early_copy_bytes=1)
    intake = _Recording(wired)

    # When the sweeper runs past their minimum age
    world.clock.advance(Timings().sweep_min_age + 60)
    report = Sweeper(wired, intake, seconds_left=lambda: 900.0).sweep()

    # Then each is submitted with the size S3 lists for it...
    assert sorted(report.started) == sorted(job_id_for(s.bucket, s.key, s.version_id) for s in (first, second))
    assert sorted(intake.sources, key=lambda submitted: submitted[0].version_id) == [
        (first, sizes[first.version_id]),
        (second, sizes[second.version_id]),
    ]
    # ...which let the split take S3's early whole copy as each job's shard
    for source in (first, second):
        job_id = job_id_for(source.bucket, source.key, source.version_id)
        assert [shard.key for shard in world.state.shards(job_id)] == [whole_copy_key(job_id)]


def test_versions_younger_than_the_minimum_age_or_with_a_job_are_left_alone() -> None:
    # Given one version already submitted, and one too young for the sweep
    world = Fakes()
    done = world.upload("inbox/done.jsonl", [request("a")])
    wired = world.wiring()
    Intake(wired).submit(done)
    world.clock.advance(Timings().sweep_min_age + 60)
    world.upload("inbox/young.jsonl", [request("b")])

    # When the sweeper runs
    report = Sweeper(wired, Intake(wired), seconds_left=lambda: 900.0).sweep()

    # Then it starts nothing
    assert (report.seen, report.started) == (1, [])
    assert world.batches.creates == 1


def test_a_folder_marker_is_never_swept_into_a_job() -> None:
    # Given a folder marker under inbox/ (an empty object whose key ends in "/"), past the minimum age
    world = Fakes()
    world.store.put("inbox/sub/", b"")
    wired = world.wiring()
    world.clock.advance(Timings().sweep_min_age + 60)

    # When the sweeper runs
    report = Sweeper(wired, Intake(wired), seconds_left=lambda: 900.0).sweep()

    # Then it starts no job, nor counts the marker as an object without one
    assert (report.seen, report.started) == (0, [])
    assert world.events.published == []
