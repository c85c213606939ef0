"""The object store adapter's whole-object read (records mode's pipelines): one GET gives the
bytes and the version they are, an absent key or version is None, and an object over the
size asked for is left unread. Checked against moto's in-process S3 with versioning on."""

from __future__ import annotations

from typing import Any

import pytest

from batchdrop.adapters.objects import ObjectStore
from batchdrop.ports import SmallObject
from tests.unit.test_object_versions import BUCKET, s3

pytestmark = pytest.mark.unit
__all__ = ["s3"]  # the fixture, shared


def test_a_read_names_the_version_it_returned(s3: Any) -> None:
    store = ObjectStore(BUCKET, client=s3)
    first = s3.put_object(Bucket=BUCKET, Key="pipelines/a.json", Body=b'{"v": 1}')["VersionId"]
    second = s3.put_object(Bucket=BUCKET, Key="pipelines/a.json", Body=b'{"v": 22}')["VersionId"]

    assert store.read_small("pipelines/a.json", max_bytes=100) == SmallObject(second, 9, b'{"v": 22}')
    assert store.read_small("pipelines/a.json", first, max_bytes=100) == SmallObject(first, 8, b'{"v": 1}')


def test_an_absent_key_or_version_or_a_deleted_object_reads_as_none(s3: Any) -> None:
    store = ObjectStore(BUCKET, client=s3)
    assert store.read_small("pipelines/none.json", max_bytes=100) is None
    version = s3.put_object(Bucket=BUCKET, Key="pipelines/b.json", Body=b"{}")["VersionId"]
    s3.delete_object(Bucket=BUCKET, Key="pipelines/b.json", VersionId=version)
    assert store.read_small("pipelines/b.json", version, max_bytes=100) is None
    s3.put_object(Bucket=BUCKET, Key="pipelines/c.json", Body=b"{}")
    s3.delete_object(Bucket=BUCKET, Key="pipelines/c.json")  # a delete marker is now current
    assert store.read_small("pipelines/c.json", max_bytes=100) is None


def test_an_object_over_the_size_asked_is_left_unread(s3: Any) -> None:
    store = ObjectStore(BUCKET, client=s3)
    version = s3.put_object(Bucket=BUCKET, Key="pipelines/big.json", Body=b"x" * 101)["VersionId"]
    assert store.read_small("pipelines/big.json", max_bytes=100) == SmallObject(version, 101, None)
