"""Records mode's intake (services/records_intake.py through services/intake.py), against the
in-memory fakes: which uploads are records, the pipeline version pinned with the job, each
way a file fails before any spend, and the shards, rows files and rejected records a records
file becomes."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from typing import Any

import pytest

from batchdrop.domain.job_events import FAILED
from batchdrop.domain.jobs import job_id_for, manifest_key, rejected_key
from batchdrop.domain.record_files import RecordFile, record_file
from batchdrop.domain.records import PipelineRef, SourceRef
from batchdrop.domain.rows import RowRef, parse_row, rows_key
from batchdrop.domain.shards import ShardLimits
from batchdrop.domain.states import JobStatus
from batchdrop.services.intake import Intake, SubmitOutcome
from batchdrop.services.records_intake import MAX_PIPELINE_BYTES, RecordsMode, choose_mode, split_records
from tests.unit.fakes import MODEL, FakeObjectStore, Fakes, FakeWriter, request

pytestmark = pytest.mark.unit

PIPELINE: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 50,
    "prompt": "Review of {{product}}: {{review}}",
    "keep_fields": ["product"],
}
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def put_pipeline(world: Fakes, name: str, document: Any = None, suffix: str = ".json") -> PipelineRef:
    key = f"pipelines/{name}{suffix}"
    body = document if isinstance(document, bytes) else json.dumps(document or PIPELINE).encode()
    return PipelineRef(key, world.store.put(key, body))


def drop(world: Fakes, key: str, body: bytes, **settings: Any) -> tuple[SourceRef, SubmitOutcome]:
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))
    return source, Intake(world.wiring(**settings)).submit(source)


def sent(world: Fakes) -> list[dict[str, Any]]:
    """Every request sent, in the order of the batches and their lines."""
    return [json.loads(line) for batch in world.batches.batches for line in world.batches.bodies[batch]]


def prompts(world: Fakes) -> dict[str, str]:
    return {request["custom_id"]: request["params"]["messages"][0]["content"] for request in sent(world)}


def rows_of(world: Fakes, job_id: str, shards: int) -> list[list[RowRef]]:
    return [[parse_row(line) for line in world.store.get(rows_key(job_id, i)).splitlines()] for i in range(shards)]


def rejected_of(world: Fakes, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in world.store.get(rejected_key(job_id)).splitlines()]


def failure(world: Fakes, outcome: SubmitOutcome) -> str:
    """The reason of a job that failed before any spend, checked to be where a user finds it."""
    assert outcome.status is JobStatus.FAILED
    assert world.batches.creates == 0
    assert world.state.shards(outcome.job_id) == []
    manifest = world.store.get_json(manifest_key(outcome.job_id))
    assert manifest["status"] == "FAILED"
    assert world.store.get_json(f"errors/{outcome.job_id}/failure.json")["reason"] == manifest["reason"]
    assert world.events.ends() == [(FAILED, outcome.job_id, "FAILED")]
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert (job.status, job.reason) == (JobStatus.FAILED, manifest["reason"])
    return str(manifest["reason"])


# --- which files are records ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("inbox/reviews/a.csv", RecordFile("reviews", "csv")),
        ("inbox/reviews/deep/er/a.csv.gz", RecordFile("reviews", "csv")),
        ("inbox/reviews/EXPORT.CSV", RecordFile("reviews", "csv")),
        ("inbox/reviews/a.jsonl", RecordFile("reviews", "jsonl")),
        ("inbox/reviews/a.Jsonl.GZ", RecordFile("reviews", "jsonl")),
        ("inbox/a.csv", None),  # directly under inbox/: native mode
        ("inbox/a.jsonl", None),
        ("inbox/reviews/a.json", None),  # not a records suffix
        ("inbox/reviews/a.csv.txt", None),
        ("inbox/reviews/", None),
        ("inbox//a.csv", None),
        ("cancel/reviews/a.csv", None),
    ],
)
def test_which_keys_are_read_as_records(key: str, expected: RecordFile | None) -> None:
    assert record_file(key) == expected


def test_a_file_directly_under_inbox_looks_for_no_pipeline(world: Fakes) -> None:
    put_pipeline(world, "a")
    _, outcome = drop(world, "inbox/a.jsonl", request("x") + b"\n")
    assert outcome.status is JobStatus.RUNNING
    assert [key for key, _ in world.store.small_reads if key.startswith("pipelines/")] == []
    assert [r["custom_id"] for r in sent(world)] == ["x"]


def test_a_jsonl_in_a_folder_without_pipeline_is_native_and_its_job_has_no_pipeline(world: Fakes) -> None:
    put_pipeline(world, "other")
    _, outcome = drop(world, "inbox/nightly/a.jsonl", request("x") + b"\n" + request("y") + b"\n")
    assert outcome.status is JobStatus.RUNNING
    assert [r["custom_id"] for r in sent(world)] == ["x", "y"]
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert job.pipeline is None
    assert not world.store.exists(rows_key(outcome.job_id, 0))
    assert [key for key, _ in world.store.small_reads if not key.startswith(("results/", "work/"))] == [
        "pipelines/nightly.json",
        "pipelines/nightly.yaml",
    ]


def test_a_native_file_in_a_folder_whose_every_line_is_rejected_names_the_pipeline_looked_for(world: Fakes) -> None:
    _, outcome = drop(world, "inbox/tickets/a.jsonl", b'{"id": 1, "text": "a record, not a request"}\n')
    assert outcome.status is JobStatus.FAILED
    reason = world.store.get_json(manifest_key(outcome.job_id))["reason"]
    assert "all 1 lines were rejected" in reason
    assert "pipelines/tickets.json" in reason


def test_a_native_file_directly_under_inbox_whose_every_line_is_rejected_has_no_pipeline_hint(world: Fakes) -> None:
    _, outcome = drop(world, "inbox/a.jsonl", b"not json\n")
    manifest = world.store.get_json(manifest_key(outcome.job_id))
    assert "pipeline" not in manifest["reason"]
    assert "pipeline" not in manifest


@pytest.mark.parametrize("key", ["inbox/tickets/a.csv", "inbox/tickets/a.CSV.gz"])
def test_a_csv_in_a_folder_without_pipeline_fails_naming_the_pipeline_looked_for(world: Fakes, key: str) -> None:
    _, outcome = drop(world, key, b"id,text\n1,hello\n")
    reason = failure(world, outcome)
    assert "pipelines/tickets.json" in reason
    assert key in reason


# --- the pipeline, pinned ---------------------------------------------------------------------


def test_the_pipeline_version_read_is_recorded_with_the_job(world: Fakes) -> None:
    ref = put_pipeline(world, "reviews")
    _, outcome = drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert job.pipeline == ref
    assert prompts(world) == {"row-000001": "Review of kettle: Great"}


def test_a_resumed_job_renders_through_its_recorded_version_not_the_current_one(world: Fakes) -> None:
    # Given a job made (and interrupted) while the pipeline was at its first version
    first = put_pipeline(world, "reviews")
    key = "inbox/reviews/a.csv"
    source = SourceRef(world.store.bucket, key, world.store.put(key, b"product,review\nkettle,Great\n"))
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    assert world.state.create_job(job_id, source, world.wiring().stamp(), pipeline=first)
    # ...and the pipeline changed since
    put_pipeline(world, "reviews", {**PIPELINE, "prompt": "CHANGED {{review}}"})

    # When the job is taken up again
    outcome = Intake(world.wiring()).submit(source)

    # Then it renders through the version it recorded, read by its version id
    assert outcome.status is JobStatus.RUNNING
    assert prompts(world) == {"row-000001": "Review of kettle: Great"}
    assert (first.key, first.version_id) in world.store.small_reads
    job = world.state.get_job(job_id)
    assert job is not None
    assert job.pipeline == first


def test_a_resumed_job_whose_pipeline_appeared_later_stays_without_it(world: Fakes) -> None:
    key = "inbox/nightly/a.jsonl"
    source = SourceRef(world.store.bucket, key, world.store.put(key, request("x") + b"\n"))
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    assert world.state.create_job(job_id, source, world.wiring().stamp())
    put_pipeline(world, "nightly")

    outcome = Intake(world.wiring()).submit(source)

    assert outcome.status is JobStatus.RUNNING
    assert [r["custom_id"] for r in sent(world)] == ["x"]  # the request line, not a rendered record


def test_a_resumed_job_whose_recorded_pipeline_version_is_gone_fails(world: Fakes) -> None:
    key = "inbox/reviews/a.csv"
    source = SourceRef(world.store.bucket, key, world.store.put(key, b"product,review\nkettle,Great\n"))
    job_id = job_id_for(source.bucket, source.key, source.version_id)
    assert world.state.create_job(job_id, source, "t", pipeline=PipelineRef("pipelines/reviews.json", "v-gone"))
    put_pipeline(world, "reviews")

    reason = failure(world, Intake(world.wiring()).submit(source))
    assert "pipelines/reviews.json version v-gone" in reason


# --- failures before any spend ------------------------------------------------------------------


def test_an_invalid_pipeline_fails_the_file_with_each_problem(world: Fakes) -> None:
    ref = put_pipeline(world, "reviews", {"max_tokens": 0, "prompt": "{{review}}", "on_bad_record": "maybe"})
    _, outcome = drop(world, "inbox/reviews/a.csv", b"review\nfine\n")
    reason = failure(world, outcome)
    assert "pipelines/reviews.json is not valid" in reason
    for problem in ("model: missing", "max_tokens: must be an integer >= 1, got 0", "on_bad_record: must be"):
        assert problem in reason
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert job.pipeline == ref
    assert world.store.get_json(manifest_key(outcome.job_id))["pipeline"] == ref.as_dict()


def test_a_pipeline_that_is_not_json_fails_the_file(world: Fakes) -> None:
    put_pipeline(world, "reviews", b"{not json")
    reason = failure(world, drop(world, "inbox/reviews/a.jsonl", b'{"review": "x"}\n')[1])
    assert "(file): not valid JSON" in reason


def test_a_pipeline_over_the_size_taken_is_refused_unread(world: Fakes) -> None:
    put_pipeline(world, "reviews", b" " * (MAX_PIPELINE_BYTES + 1))
    reason = failure(world, drop(world, "inbox/reviews/a.csv", b"review\nfine\n")[1])
    assert f"over the {MAX_PIPELINE_BYTES}" in reason


def test_both_a_json_and_a_yaml_pipeline_make_the_folder_ambiguous(world: Fakes) -> None:
    put_pipeline(world, "reviews")
    put_pipeline(world, "reviews", b"model: x\n", suffix=".yaml")
    reason = failure(world, drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")[1])
    assert "ambiguous" in reason
    assert "pipelines/reviews.json and pipelines/reviews.yaml" in reason


def test_a_yaml_pipeline_renders_as_its_json_form(world: Fakes) -> None:
    yaml = f"model: {MODEL}\nmax_tokens: 50\nprompt: 'Review of {{{{product}}}}: {{{{review}}}}'\n"
    ref = put_pipeline(world, "reviews", (yaml + "keep_fields: [product]\n").encode(), suffix=".yaml")
    _source, outcome = drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert job.pipeline == ref
    assert prompts(world) == {"row-000001": "Review of kettle: Great"}


def test_a_yaml_pipeline_with_a_problem_fails_its_files_naming_the_line(world: Fakes) -> None:
    put_pipeline(world, "reviews", f"model: {MODEL}\nmax_tokens: 0\nprompt: hi\n".encode(), suffix=".yaml")
    reason = failure(world, drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")[1])
    assert "pipelines/reviews.yaml" in reason
    assert "max_tokens" in reason
    assert "line 2" in reason


def test_a_header_without_the_fields_the_pipeline_names_fails_the_file(world: Fakes) -> None:
    put_pipeline(world, "reviews", {**PIPELINE, "id_field": "ticket", "keep_fields": ["product", "store"]})
    reason = failure(world, drop(world, "inbox/reviews/a.csv", b"product,text\nkettle,Great\n")[1])
    assert 'prompt: "review" is not a column of the header' in reason
    assert 'id_field: "ticket" is not a column of the header' in reason
    assert 'keep_fields: "store" is not a column of the header' in reason
    assert "product" not in reason.split("(the header")[0]
    assert '(the header: "product", "text")' in reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "the file is empty"),
        (b"a,a\n1,2\n", 'the header names "a" more than once'),
    ],
)
def test_a_csv_that_cannot_be_read_as_records_fails_with_its_reason(world: Fakes, body: bytes, expected: str) -> None:
    put_pipeline(world, "reviews", {**PIPELINE, "keep_fields": []})
    reason = failure(world, drop(world, "inbox/reviews/a.csv", body)[1])
    assert reason.startswith("the file cannot be read as records: ")
    assert expected in reason


def test_on_bad_record_fail_fails_the_file_at_its_first_bad_record_and_sends_nothing(world: Fakes) -> None:
    put_pipeline(world, "reviews", {**PIPELINE, "on_bad_record": "fail"})
    body = b"product,review\nkettle,Great\nmixer\ntoaster,Fine\n"
    _, outcome = drop(world, "inbox/reviews/a.csv", body, limits=ShardLimits(max_requests=1))
    reason = failure(world, outcome)
    assert reason.startswith("line 3 (record 2) is rejected: too few fields")
    assert world.store.get_json(manifest_key(outcome.job_id))["pipeline"]["key"] == "pipelines/reviews.json"
    assert "on_bad_record is fail" in reason
    assert not world.store.exists(rejected_key(outcome.job_id))


def test_on_bad_record_fail_with_only_good_records_goes_on(world: Fakes) -> None:
    put_pipeline(world, "reviews", {**PIPELINE, "on_bad_record": "fail"})
    _, outcome = drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")
    assert outcome.status is JobStatus.RUNNING


# --- shards, rows files and rejected records -------------------------------------------------------


def test_csv_records_become_rendered_requests_with_their_rows_and_rejected_records(world: Fakes) -> None:
    # Given a CSV as spreadsheets export it: BOM, CRLF, a quoted field holding a comma, quotes
    # and a line break, an empty field, and records with too few or too many fields
    put_pipeline(world, "reviews", {**PIPELINE, "id_field": "id", "keep_fields": ["product"]})
    body = BOM + (
        b"id,product,review\r\n"
        b'r1,"kettle, blue","Said ""wow""\r\nthen {{product}}"\r\n'
        b"r2,mixer\r\n"
        b"r3,toaster,\r\n"
        b"r4,lamp,Fine,extra\r\n"
        b"r1,fan,Again\r\n"
        b"bad id,fan,Nice\r\n"
        b"r5,fan,Cool"
    )

    # When it is dropped in the folder, with shards of two requests
    _, outcome = drop(world, "inbox/reviews/export.csv", body, limits=ShardLimits(max_requests=2))

    # Then the valid records are sent, rendered, their values never read as templates
    assert outcome.status is JobStatus.RUNNING
    assert prompts(world) == {
        "r1": 'Review of kettle, blue: Said "wow"\r\nthen {{product}}',
        "r3": "Review of toaster: ",
        "r5": "Review of fan: Cool",
    }
    assert sent(world)[0]["params"]["model"] == MODEL
    # ...one rows file per shard, in the shard's order, with the records' numbers and kept fields
    assert rows_of(world, outcome.job_id, 2) == [
        [RowRef(1, "r1", {"product": "kettle, blue"}), RowRef(3, "r3", {"product": "toaster"})],
        [RowRef(7, "r5", {"product": "fan"})],
    ]
    # ...and every other record rejected with its line, record number, id, kept fields and reason
    rejected = rejected_of(world, outcome.job_id)
    assert [(r["line"], r["row"], r["custom_id"], r["fields"]) for r in rejected] == [
        (4, 2, None, {}),
        (6, 4, None, {}),
        (7, 5, "r1", {"product": "fan"}),
        (8, 6, None, {"product": "fan"}),
    ]
    reasons = [r["reason"] for r in rejected]
    assert reasons[0] == "too few fields: 2, the header has 3"
    assert reasons[1] == "too many fields: 4, the header has 3"
    assert reasons[2] == 'custom_id: "r1" is already used on line 2; it must be unique'
    assert "not a usable id" in reasons[3]
    assert all(r["source"] == "inbox/reviews/export.csv" for r in rejected)
    job = world.state.get_job(outcome.job_id)
    assert job is not None
    assert (job.requested, job.rejected, job.shard_count) == (3, 4, 2)


def test_jsonl_records_insert_non_string_values_as_json_and_reject_by_record(world: Fakes) -> None:
    put_pipeline(world, "docs", {**PIPELINE, "keep_fields": ["product"]})
    body = b"\n".join(
        [
            b'{"product": 3, "review": {"stars": [5, 4]}}',
            b"",
            b'{"product": true}',
            b"[1, 2]",
            b'{"product": null, "review": "ok", "extra": 1.5}',
            BOM + b'{"product": "bom", "review": "inside"}',
        ]
    )
    _, outcome = drop(world, "inbox/docs/batch.jsonl", BOM + body)

    assert prompts(world) == {"row-000001": 'Review of 3: {"stars":[5,4]}', "row-000004": "Review of null: ok"}
    assert rows_of(world, outcome.job_id, 1) == [
        [RowRef(1, "row-000001", {"product": "3"}), RowRef(4, "row-000004", {"product": "null"})]
    ]
    rejected = rejected_of(world, outcome.job_id)
    assert [(r["line"], r["row"], r["custom_id"], r["fields"]) for r in rejected] == [
        (3, 2, "row-000002", {"product": "true"}),
        (4, 3, "row-000003", {}),
        (6, 5, "row-000005", {}),
    ]
    assert rejected[0]["reason"] == 'the record has no field "review", which the prompt uses'
    assert rejected[1]["reason"] == "a record must be a JSON object, got an array"
    assert rejected[2]["reason"].startswith("a byte order mark (BOM) begins this line")


@pytest.mark.parametrize(
    "key",
    [
        "inbox/reviews/a.csv.gz",
        "inbox/reviews/a.csv",  # gzip known by its first bytes, whatever the name
        "inbox/reviews/a.jsonl.gz",
    ],
)
def test_gzip_records_are_read_inflated(world: Fakes, key: str) -> None:
    put_pipeline(world, "reviews")
    rows = [{"product": f"p{i}", "review": f"text {i}"} for i in range(1, 4)]
    if ".csv" in key:
        plain = b"product,review\r\n" + b"".join(f"{r['product']},{r['review']}\r\n".encode() for r in rows)
    else:
        plain = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    _, outcome = drop(world, key, gzip.compress(plain))

    assert prompts(world) == {f"row-{i:06d}": f"Review of p{i}: text {i}" for i in range(1, 4)}
    assert [ref.row for ref in rows_of(world, outcome.job_id, 1)[0]] == [1, 2, 3]


def test_a_csv_named_gz_that_is_not_gzip_fails_as_a_native_one_does(world: Fakes) -> None:
    put_pipeline(world, "reviews")
    reason = failure(world, drop(world, "inbox/reviews/a.csv.gz", b"product,review\nkettle,Great\n")[1])
    assert reason.startswith("the file cannot be read: the file is named .gz but is not gzip")


def test_a_records_file_whose_every_record_is_rejected_fails_with_its_rejected_records(world: Fakes) -> None:
    put_pipeline(world, "reviews")
    _, outcome = drop(world, "inbox/reviews/a.csv", b"product,review\nkettle\nmixer\n")
    assert outcome.status is JobStatus.FAILED
    assert world.batches.creates == 0
    assert "all 2 lines were rejected" in world.store.get_json(manifest_key(outcome.job_id))["reason"]
    assert [r["row"] for r in rejected_of(world, outcome.job_id)] == [1, 2]


def test_a_records_file_submitted_twice_writes_and_sends_once(world: Fakes) -> None:
    put_pipeline(world, "reviews")
    source, first = drop(world, "inbox/reviews/a.csv", b"product,review\nkettle,Great\n")
    again = Intake(world.wiring()).submit(source)
    assert again.duplicate
    assert world.batches.creates == 1
    assert len(list(world.store.versions(rows_key(first.job_id, 0)))) == 1


class _DiscardingWriter(FakeWriter):
    """Counts what it is given and keeps none of it: a streamed upload's memory, not a test's."""

    def write(self, data: bytes) -> None:
        self.size += len(data)


class _DiscardingStore(FakeObjectStore):
    def writer(self, key: str, content_type: str, *, if_absent: bool = False) -> FakeWriter:
        return _DiscardingWriter(self, key, content_type, if_absent=if_absent)


def test_a_records_file_is_split_in_memory_that_does_not_grow_with_it() -> None:
    # Given a 6 MB CSV of 6,000 records of 1 KB, held by the store before measuring
    world = Fakes()
    world.store = _DiscardingStore("bucket", world.clock)
    put_pipeline(world, "reviews")
    review = "word " * 200
    body = b"product,review\n" + b"".join(f"p{i},{review}{i}\n".encode() for i in range(6_000))
    key = "inbox/reviews/big.csv"
    source = SourceRef(world.store.bucket, key, world.store.put(key, body))
    mode = choose_mode(world.store, key)
    assert isinstance(mode, RecordsMode)

    # When it is split
    tracemalloc.start()
    try:
        split = split_records(world.wiring(), "job", source, mode)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then every record was rendered, holding less than the file's size at any time (some 2.6 MB measured)
    assert (split.requested, split.rejected) == (6_000, 0)
    assert peak < 4 * 1024 * 1024, peak
