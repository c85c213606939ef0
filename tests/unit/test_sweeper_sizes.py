"""The sweeper hands the submit function each version's size, as an S3 event would: a lost
event's large clean file is copied early too (the split's early copy reads the size)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchdrop.adapters.objects import ObjectStore
from batchdrop.domain.records import SourceRef
from batchdrop.domain.timings import Timings
from batchdrop.ports import Wiring
from batchdrop.services.sweeper import Sweeper


class _NoJobs:
    def existing_jobs(self, job_ids: Any) -> set[str]:
        return set()


class _Recorder:
    def __init__(self) -> None:
        self.sources: list[tuple[SourceRef, int | None]] = []

    def submit(self, source: SourceRef, size: int | None = None) -> None:
        self.sources.append((source, size))


class _Later:
    """A clock past both versions' minimum age."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=Timings().sweep_min_age + 60)


def test_a_swept_version_is_submitted_with_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto's in-process mock answers AWS's own endpoints only: an endpoint another test set
    # in the environment (the local stack's) would send these calls to the network.
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="swept")
        client.put_bucket_versioning(Bucket="swept", VersioningConfiguration={"Status": "Enabled"})
        # Given two versions under inbox/ whose events were lost
        first = client.put_object(Bucket="swept", Key="inbox/a.jsonl", Body=b"x" * 123)["VersionId"]
        second = client.put_object(Bucket="swept", Key="inbox/a.jsonl", Body=b"y" * 45)["VersionId"]
        intake = _Recorder()
        wired = Wiring(ObjectStore("swept", client), _NoJobs(), None, None, clock=_Later())  # type: ignore[arg-type]

        # When the sweeper runs past their minimum age
        Sweeper(wired, intake, seconds_left=lambda: 900.0).sweep()  # type: ignore[arg-type]

    # Then each is submitted with the size S3 lists for it
    assert sorted(intake.sources, key=lambda submitted: submitted[0].version_id) == sorted(
        [
            (SourceRef("swept", "inbox/a.jsonl", first), 123),
            (SourceRef("swept", "inbox/a.jsonl", second), 45),
        ],
        key=lambda submitted: submitted[0].version_id,
    )
