"""Specification of job identity, status and the keys of a job's outputs."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from batchdrop.domain.jobs import (
    JobStatus,
    final_status,
    job_id_for,
    manifest_key,
    rejected_key,
    rejected_record,
    results_part_key,
)
from batchdrop.domain.requests import RejectedLine


def test_the_same_object_version_always_maps_to_the_same_job() -> None:
    # Given one object version / When its id is derived twice / Then it is the same, and well-formed
    first = job_id_for("bucket", "inbox/reviews.jsonl", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert first == job_id_for("bucket", "inbox/reviews.jsonl", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert re.fullmatch(r"j[0-9a-f]{24}", first)


def test_the_job_id_derivation_is_pinned() -> None:
    # A change to the derivation would orphan every job in flight: it must be deliberate
    expected = "j" + hashlib.sha256(b"1:b" + b"13:inbox/k.jsonl" + b"2:v1").hexdigest()[:24]
    assert job_id_for("b", "inbox/k.jsonl", "v1") == expected


def test_lengths_are_counted_in_utf8_bytes() -> None:
    expected = "j" + hashlib.sha256(b"1:b" + "10:inbox/é.j".encode() + b"2:v1").hexdigest()[:24]
    assert job_id_for("b", "inbox/é.j", "v1") == expected


@pytest.mark.parametrize(
    "other",
    [
        ("bucket", "inbox/a.jsonl", "v2"),  # a new version of the same key: a new job
        ("bucket", "inbox/b.jsonl", "v1"),
        ("other-bucket", "inbox/a.jsonl", "v1"),
    ],
    ids=["version", "key", "bucket"],
)
def test_a_different_version_key_or_bucket_is_a_different_job(other: tuple[str, str, str]) -> None:
    assert job_id_for("bucket", "inbox/a.jsonl", "v1") != job_id_for(*other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a/b", "c", "v"), ("a", "b/c", "v")),
        (("a", "bc", "v"), ("ab", "c", "v")),
        (("a", "b", "cv"), ("a", "bc", "v")),
        (("a", "b\x00c", "v"), ("a", "b", "c\x00v")),
        (("a", "1:b", "v"), ("a1:", "b", "v")),
    ],
)
def test_moving_characters_between_parts_never_collides(one: tuple[str, str, str], other: tuple[str, str, str]) -> None:
    # Given two identities whose parts concatenate to the same text
    # When their ids are derived / Then they differ: each part is length-prefixed
    assert job_id_for(*one) != job_id_for(*other)


@pytest.mark.parametrize("version_id", [None, "", "null"])
def test_an_object_without_a_version_id_fails_closed(version_id: str | None) -> None:
    # Given an event without a usable version id (missing, or S3's "null" for unversioned writes)
    # When a job id is asked for / Then it is refused, saying why
    with pytest.raises(ValueError, match="versioning"):
        job_id_for("bucket", "inbox/a.jsonl", version_id)


@pytest.mark.parametrize(("bucket", "key"), [("", "k"), ("b", "")])
def test_an_object_without_bucket_or_key_is_refused(bucket: str, key: str) -> None:
    with pytest.raises(ValueError, match="bucket and key"):
        job_id_for(bucket, key, "v1")


def test_every_status_is_its_own_name() -> None:
    assert [str(status) for status in JobStatus] == [
        "RECEIVED",
        "AWAITING_APPROVAL",
        "SUBMITTING",
        "RUNNING",
        "COMPLETED",
        "COMPLETED_WITH_ERRORS",
        "FAILED",
        "CANCELED",
    ]


@pytest.mark.parametrize(
    ("counts", "rejected", "expected"),
    [
        ({"succeeded": 10}, 0, JobStatus.COMPLETED),
        ({"succeeded": 10, "errored": 0, "canceled": 0, "expired": 0}, 0, JobStatus.COMPLETED),
        ({"succeeded": 10}, 1, JobStatus.COMPLETED_WITH_ERRORS),
        ({"succeeded": 9, "errored": 1}, 0, JobStatus.COMPLETED_WITH_ERRORS),
        ({"succeeded": 9, "canceled": 1}, 0, JobStatus.COMPLETED_WITH_ERRORS),
        ({"succeeded": 9, "expired": 1}, 0, JobStatus.COMPLETED_WITH_ERRORS),
        ({"errored": 3}, 0, JobStatus.COMPLETED_WITH_ERRORS),
    ],
)
def test_a_job_is_completed_only_when_everything_succeeded_and_nothing_was_rejected(
    counts: dict[str, int], rejected: int, expected: JobStatus
) -> None:
    assert final_status(counts, rejected) is expected


def test_output_keys_follow_the_bucket_layout() -> None:
    assert results_part_key("jabc", 0) == "results/jabc/results-00000.jsonl"
    assert results_part_key("jabc", 2) == "results/jabc/results-00002.jsonl"
    assert manifest_key("jabc") == "results/jabc/manifest.json"
    assert rejected_key("jabc") == "errors/jabc/rejected.jsonl"


def test_a_rejected_record_is_one_jsonl_line_with_line_id_reason_and_source() -> None:
    # Given a rejected line
    rejected = RejectedLine(7, "r-7", "params.max_tokens: must be an integer >= 1, got 0")
    # When its record is written
    record = rejected_record(rejected, "inbox/reviews.jsonl")
    # Then it is one newline-terminated JSON object with all four fields
    assert record.endswith(b"\n")
    assert record.count(b"\n") == 1
    assert json.loads(record) == {
        "line": 7,
        "custom_id": "r-7",
        "reason": "params.max_tokens: must be an integer >= 1, got 0",
        "source": "inbox/reviews.jsonl",
    }


def test_a_rejected_record_without_custom_id_has_null() -> None:
    assert json.loads(rejected_record(RejectedLine(1, None, "not valid JSON"), "inbox/x.jsonl"))["custom_id"] is None


def test_a_rejected_record_survives_text_that_is_not_valid_unicode() -> None:
    # Given a custom_id read from a lone surrogate escape, and a non-ASCII reason
    rejected = RejectedLine(2, "\ud800", 'custom_id: may hold only letters, got "é"')
    # When its record is written / Then it is still one valid JSON line carrying both
    record = rejected_record(rejected, "inbox/x.jsonl")
    assert json.loads(record)["custom_id"] == "\ud800"
    assert json.loads(record)["reason"].endswith('"é"')
