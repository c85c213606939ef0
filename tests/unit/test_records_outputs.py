"""A records-mode job's outputs (services/outputs.py, written by services/finish.py): one row
per input record, in input order, from results that come back shuffled across shards, retries
and the halves of a refused body, against in-memory fakes driven by the real checker."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from batchdrop.domain.job_events import JobEvent
from batchdrop.domain.jobs import manifest_key
from batchdrop.domain.outputs import csv_line, header, row
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.rows import outputs_keys
from batchdrop.domain.states import JobStatus
from batchdrop.errors import CheckerItemsFailedError, ResultsMismatchError
from batchdrop.services.cancel import Canceler
from batchdrop.services.tick import Checker
from tests.records_jobs import (
    RecordsJob,
    message,
    pipeline_document,
    records,
    result_line,
    seed_collected,
    seed_records_job,
    text_answer,
)
from tests.unit.fakes import Fakes, FakeWriter, errored

pytestmark = pytest.mark.unit

Answer = Callable[[str, int], Mapping[str, Any]]


@pytest.fixture
def world() -> Fakes:
    return Fakes()


def number(custom_id: str) -> int:
    return int(custom_id.rpartition("-")[2])


def classified(custom_id: str, attempt: int) -> Mapping[str, Any]:
    """What the model answers for a review: mostly valid, some not, some transient failures."""
    n = number(custom_id)
    if n % 9 == 0 and attempt == 1:
        return errored("overloaded_error")  # sent again: its answer is in results-<i>-a2
    if n % 13 == 0:
        return errored("invalid_request_error")
    if n % 11 == 0:
        return text_answer('{"sentiment": "meh", "confidence": 0.5, "reason": "unsure"}')
    if n % 17 == 0:
        return text_answer('{"sentiment": "positive", "confid', stop_reason="max_tokens")
    reason = 'naïve, "quoted"\nsecond line' if n % 5 == 0 else f"reason {n}"
    answer = {"sentiment": ["positive", "negative", "mixed"][n % 3], "confidence": n / 100, "reason": reason}
    return text_answer(json.dumps(answer, ensure_ascii=False))


def run_to_end(world: Fakes, job: RecordsJob, answer: Answer, *, cancel_after: int | None = None) -> None:
    """Tick the checker, ending each batch it makes with `answer`'s results, shuffled, until
    the job is finished; with `cancel_after`, cancel the job once that many batches exist."""
    attempts: Counter[str] = Counter()
    for _ in range(200):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
        if world.state.jobs[job.job_id].status not in (JobStatus.SUBMITTING, JobStatus.RUNNING):
            return
        if cancel_after is not None and len(world.batches.batches) >= cancel_after:
            Canceler(world.wiring()).cancel(job.job_id)
            cancel_after = None
        for batch_id, batch in world.batches.batches.items():
            if batch["processing_status"] == "in_progress":
                attempts.update(world.batches.requests[batch_id])
                ids = world.batches.requests[batch_id]
                lines = [result_line(cid, answer(cid, attempts[cid])) for cid in ids]
                random.Random(batch_id).shuffle(lines)
                world.batches.end(batch_id, lines=lines)
            elif batch["processing_status"] == "canceling":
                world.batches.end(batch_id)  # every request canceled
    raise AssertionError("the job never finished")


def outputs_of(world: Fakes, job_id: str) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    keys = outputs_keys(job_id)
    table = list(csv.DictReader(io.StringIO(world.store.get(keys["csv"]).decode(), newline="")))
    lines = [json.loads(line) for line in world.store.get(keys["jsonl"]).splitlines()]
    return table, lines


def expected_csv(job: RecordsJob, final: Callable[[str], Mapping[str, Any]]) -> bytes:
    """The outputs.csv the job must have, built record by record from each one's final result."""
    out = bytearray(csv_line(header(job.pipeline)))
    for ref in job.refs:
        if ref.reason is not None:
            result: Any = Rejection(ref.reason, ref.custom_id)
            out += csv_line(row(job.pipeline, ref.fields, result, record_id=f"row-{ref.row:06d}"))
        else:
            out += csv_line(row(job.pipeline, ref.fields, result_line(str(ref.custom_id), final(str(ref.custom_id)))))
    return bytes(out)


def assert_rows_agree_with_manifest(world: Fakes, job_id: str, table: list[dict[str, str]]) -> None:
    counts = world.store.get_json(manifest_key(job_id))["counts"]
    statuses = Counter(line["status"] for line in table)
    assert statuses["succeeded"] + statuses["invalid_output"] == counts["succeeded"]
    for status in ("errored", "expired", "canceled", "rejected"):
        assert statuses[status] == counts[status], status
    assert len(table) == counts["requests"] + counts["rejected"]


def reviews(count: int, *, missing: tuple[int, ...] = (), poison: int | None = None) -> list[dict[str, str]]:
    """`count` review records; those numbered in `missing` lack their review (rejected), and
    the `poison` one holds text the fake API refuses a whole create body for."""
    out = []
    for n, record in enumerate(records(count), start=1):
        if n in missing:
            del record["review"]
        if n == poison:
            record["review"] = "POISON"
        out.append(record)
    return out


def test_rows_come_out_in_input_order_from_shuffled_results_across_shards_retries_and_halves(world: Fakes) -> None:
    # Given a records job of 60 reviews, 4 rejected, cut into shards of 8, one of whose bodies
    # the API refuses (so it is halved into new shards), with results shuffled, transient
    # failures sent again, invalid answers and errors among them
    world.batches.poison = "POISON"
    job = seed_records_job(
        world.wiring(), reviews(60, missing=(1, 20, 21, 60), poison=34), document=pipeline_document(), per_shard=8
    )

    # When the checker runs it to the end
    run_to_end(world, job, classified)

    # Then it is finished, and its outputs hold one row per record, in input order
    assert world.state.jobs[job.job_id].status is JobStatus.COMPLETED_WITH_ERRORS
    shards = world.state.shards(job.job_id)
    assert any(shard.state.value == "SPLIT" for shard in shards)  # a body was refused and halved
    assert any(key.endswith("-a2.jsonl") for shard in shards for key in shard.result_keys)  # retries
    table, lines = outputs_of(world, job.job_id)
    assert [line["id"] for line in table] == [f"row-{n:06d}" for n in range(1, 61)]
    assert [line["product"] for line in table] == [f"product {n % 7}" for n in range(1, 61)]

    def final(custom_id: str) -> Mapping[str, Any]:
        if custom_id == "row-000034":  # alone in its body at last, refused on its own
            return {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error"}}}
        return classified(custom_id, 2)

    by_id = {line["id"]: line for line in table}
    assert by_id["row-000001"]["status"] == "rejected"
    assert "review" in by_id["row-000001"]["error"]
    assert by_id["row-000018"]["status"] == "succeeded"  # failed once, answered on its retry
    assert by_id["row-000022"]["status"] == "invalid_output"
    assert by_id["row-000022"]["error"].startswith("the answer does not match the schema: $.sentiment")
    assert by_id["row-000022"]["raw"] == '{"sentiment": "meh", "confidence": 0.5, "reason": "unsure"}'
    assert "cut off" in by_id["row-000017"]["error"]
    assert by_id["row-000026"]["status"] == "errored"
    assert by_id["row-000034"]["status"] == "errored"
    assert by_id["row-000034"]["error"].startswith("invalid_request_error: batchdrop: the batch was refused")
    assert by_id["row-000010"]["reason"] == 'naïve, "quoted"\nsecond line'
    assert (by_id["row-000002"]["sentiment"], by_id["row-000002"]["confidence"]) == ("mixed", "0.02")
    # every cell is what the record's final result gives (the refused one aside, whose
    # message batchdrop wrote itself), and the JSONL holds the same rows
    expected = expected_csv(job, final).split(b"\r\n")
    written = world.store.get(outputs_keys(job.job_id)["csv"]).split(b"\r\n")
    assert [line for n, line in enumerate(written) if n != 34] == [line for n, line in enumerate(expected) if n != 34]
    assert [line["id"] for line in lines] == [line["id"] for line in table]
    assert lines[21]["confidence"] is None
    assert lines[1]["confidence"] == 0.02
    assert_rows_agree_with_manifest(world, job.job_id, table)
    manifest = world.store.get_json(manifest_key(job.job_id))
    assert manifest["outputs"] == outputs_keys(job.job_id)


def test_a_canceled_jobs_unsent_records_are_canceled_rows_matching_the_manifest(world: Fakes) -> None:
    # Given a records job of 30 reviews in shards of 10, canceled once its first batch exists
    job = seed_records_job(world.wiring(), reviews(30, missing=(5,)), document=pipeline_document(), per_shard=10)

    # When the checker runs it to the end
    run_to_end(world, job, classified, cancel_after=1)

    # Then every record has its row: the canceled ones say so, and the counts agree
    assert world.state.jobs[job.job_id].status is JobStatus.CANCELED
    table, _ = outputs_of(world, job.job_id)
    assert [line["id"] for line in table] == [f"row-{n:06d}" for n in range(1, 31)]
    statuses = Counter(line["status"] for line in table)
    assert statuses["canceled"] >= 10  # the shards never sent at least
    assert statuses["rejected"] == 1
    assert_rows_agree_with_manifest(world, job.job_id, table)


def test_a_forced_tools_input_is_the_answer_and_a_missing_call_is_invalid_output(world: Fakes) -> None:
    # Given a pipeline forcing a tool, and answers that call it, but one
    tool = {"name": "record_sentiment", "input_schema": pipeline_document()["output"]["schema"]}
    document = pipeline_document(output={"tool": tool}, id_field="ticket", keep_fields=["product", "ticket"])
    rows = [{**record, "ticket": f"T-{n}"} for n, record in enumerate(records(6), start=1)]
    job = seed_records_job(world.wiring(), rows, document=document, per_shard=4)

    def answer(custom_id: str) -> Mapping[str, Any]:
        if custom_id == "T-3":
            return text_answer("I would rather not.")
        call = {"sentiment": "positive", "confidence": 1, "reason": f"{custom_id} is fine"}
        return message([{"type": "tool_use", "id": "toolu_1", "name": "record_sentiment", "input": call}])

    seed_collected(world.wiring(), job, answer, lambda lines: lines.reverse())

    # When the checker ticks
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then each row holds the tool's input, in input order; the one that did not call it is invalid_output
    table, _ = outputs_of(world, job.job_id)
    assert [line["id"] for line in table] == ["T-1", "T-2", "T-3", "T-4", "T-5", "T-6"]
    assert [line["ticket"] for line in table] == ["T-1", "T-2", "T-3", "T-4", "T-5", "T-6"]
    assert table[0]["reason"] == "T-1 is fine"
    assert table[0]["confidence"] == "1"
    assert table[2]["status"] == "invalid_output"
    assert table[2]["raw"] == "I would rather not."
    assert "record_sentiment" in table[2]["error"]
    assert table[0]["input_tokens"] == "40"
    assert table[0]["cache_read_input_tokens"] == "30"


def test_cells_that_look_like_formulas_are_written_verbatim(world: Fakes) -> None:
    # Given a text pipeline whose records and answers begin with =, +, - and @
    document = pipeline_document(output=None, keep_fields=["product"])
    values = ['=HYPERLINK("http://x")', "+1", "-0.5", "@SUM(A1)"]
    rows = [{"product": value, "review": "r"} for value in values]
    job = seed_records_job(world.wiring(), rows, document=document, per_shard=10)
    seed_collected(world.wiring(), job, lambda cid: text_answer(values[number(cid) - 1]), lambda lines: None)

    # When the checker finishes the job
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then the cells hold the values as they are (no quote or prefix added): see docs/decisions.md
    table, _ = outputs_of(world, job.job_id)
    assert [line["product"] for line in table] == values
    assert [line["text"] for line in table] == values
    assert b"\r\n=HYPERLINK" not in world.store.get(outputs_keys(job.job_id)["csv"])  # quoted, as it holds quotes
    assert b",'" not in world.store.get(outputs_keys(job.job_id)["csv"])


def test_outputs_read_the_pipeline_version_the_job_recorded(world: Fakes) -> None:
    # Given a finished records job whose pipeline object was replaced since it started
    job = seed_records_job(world.wiring(), reviews(3), document=pipeline_document(), per_shard=10)
    changed = pipeline_document(output=None, keep_fields=["review"])
    world.store.put("pipelines/reviews.json", json.dumps(changed).encode())
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), lambda lines: None)

    # When the checker finishes it
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then its columns are the recorded version's
    table, _ = outputs_of(world, job.job_id)
    assert list(table[0]) == header(job.pipeline)
    assert "sentiment" in table[0]
    assert "text" not in table[0]


def test_outputs_read_a_yaml_pipeline(world: Fakes) -> None:
    # Given a finished records job whose pipeline is YAML, without an output schema
    document = pipeline_document(output=None)
    text = (
        f"model: {document['model']}\nmax_tokens: {document['max_tokens']}\n"
        f"prompt: {json.dumps(document['prompt'])}\nkeep_fields: {json.dumps(document['keep_fields'])}\n"
    )
    job = seed_records_job(world.wiring(), reviews(3), document=document, per_shard=10, pipeline_text=text.encode())
    seed_collected(world.wiring(), job, lambda cid: text_answer(f"answer {cid}"), lambda lines: None)

    # When the checker finishes it
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then the outputs have the YAML pipeline's columns and every record's answer
    table, _ = outputs_of(world, job.job_id)
    assert list(table[0]) == header(job.pipeline)
    assert [line["text"] for line in table] == [f"answer {ref.custom_id}" for ref in job.refs]


def test_a_rerun_after_a_crash_writes_the_same_bytes(world: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a finished records job, and every object write recorded, kept or not
    job = seed_records_job(world.wiring(), reviews(25, missing=(3,)), document=pipeline_document(), per_shard=6)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), random.Random(7).shuffle)
    written: list[tuple[str, bytes]] = []
    close = FakeWriter.close

    def recording(writer: FakeWriter) -> bool:
        written.append((writer.key, bytes(writer._buffer)))
        return close(writer)

    monkeypatch.setattr(FakeWriter, "close", recording)

    # When the first finish dies at its event (after outputs and manifest), and the next tick finishes it
    def unpublished(event: JobEvent) -> None:
        raise RuntimeError("EventBridge is away")

    monkeypatch.setattr(world.events, "publish", unpublished)
    with pytest.raises(CheckerItemsFailedError):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()
    assert world.store.exists(manifest_key(job.job_id))
    monkeypatch.undo()
    monkeypatch.setattr(FakeWriter, "close", recording)
    Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then both runs wrote the same bytes, and the job is finished
    keys = outputs_keys(job.job_id)
    for key in keys.values():
        runs = [data for name, data in written if name == key]
        assert len(runs) == 2
        assert runs[0] == runs[1] == world.store.get(key)
    assert world.state.jobs[job.job_id].status is JobStatus.COMPLETED_WITH_ERRORS


@pytest.mark.parametrize("damage", ["lost", "changed"])
def test_rows_that_do_not_account_for_the_results_leave_the_job_open_and_nothing_written(
    world: Fakes, damage: str
) -> None:
    # Given a finished records job one of whose results parts lost a line, or holds a line
    # whose outcome is not the one counted
    job = seed_records_job(world.wiring(), reviews(12), document=pipeline_document(), per_shard=6)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), lambda lines: None)
    part = world.state.shards(job.job_id)[1].result_keys[0]
    lines = world.store.get(part).splitlines()
    if damage == "lost":
        lines.pop()
    else:
        lines[0] = result_line(json.loads(lines[0])["custom_id"], {"type": "expired"})
    world.store.put(part, b"".join(line + b"\n" for line in lines))

    # When the checker ticks
    with pytest.raises(CheckerItemsFailedError):
        Checker(world.wiring(), seconds_left=lambda: 900.0).tick()

    # Then no outputs, no manifest: the job stays open
    assert not world.store.exists(outputs_keys(job.job_id)["csv"])
    assert not world.store.exists(outputs_keys(job.job_id)["jsonl"])
    assert not world.store.exists(manifest_key(job.job_id))
    assert world.state.jobs[job.job_id].status is JobStatus.RUNNING


def test_the_rows_check_names_what_disagrees(world: Fakes) -> None:
    from batchdrop.services.outputs import OutputsWriter

    # Given a finished records job whose counts say one more error than its results hold
    job = seed_records_job(world.wiring(), reviews(5, missing=(2,)), document=pipeline_document(), per_shard=6)
    seed_collected(world.wiring(), job, lambda cid: text_answer('{"sentiment": "mixed"}'), lambda lines: None)
    found, shards = world.state.job_and_shards(job.job_id)
    assert found is not None

    # When its outputs are written against those counts, then it is refused, naming the status
    with pytest.raises(ResultsMismatchError, match=r"errored: 0 rows for 1"):
        OutputsWriter(world.wiring()).write(found, shards, {"succeeded": 3, "errored": 1})
    # ...and against the right ones, written: every answer lacks required properties
    OutputsWriter(world.wiring()).write(found, shards, {"succeeded": 4})
    table, _ = outputs_of(world, job.job_id)
    assert [line["status"] for line in table] == ["invalid_output", "rejected", *["invalid_output"] * 3]


def test_a_result_for_no_row_is_refused(world: Fakes) -> None:
    from batchdrop.services.outputs import OutputsWriter

    # Given a finished records job one of whose parts holds a result no rows file names
    job = seed_records_job(world.wiring(), reviews(4), document=pipeline_document(), per_shard=4)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), lambda lines: None)
    part = world.state.shards(job.job_id)[0].result_keys[0]
    world.store.put(part, world.store.get(part) + result_line("row-000099", classified("row-000099", 2)) + b"\n")

    # When its outputs are written, then it is refused, naming the shard and the id
    finished = world.state.job_and_shards(job.job_id)
    assert finished[0] is not None
    with pytest.raises(ResultsMismatchError, match=r"shard 0: 1 result\(s\) for ids its rows file lacks"):
        OutputsWriter(world.wiring()).write(finished[0], finished[1], {"succeeded": 5})


def test_a_full_tmp_is_named_with_the_job_the_shard_and_what_to_change(
    world: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import tempfile

    from batchdrop.services.outputs import OutputsWriter, SpillSpaceError

    # Given a finished records job, and a /tmp that holds 1,000 bytes
    job = seed_records_job(world.wiring(), reviews(8), document=pipeline_document(), per_shard=4)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), lambda lines: None)
    opened = tempfile.TemporaryFile

    class Small(io.BytesIO):
        def write(self, data: Any) -> int:
            if self.tell() + len(data) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def small(**options: Any) -> Any:
        opened(**options).close()
        return Small()

    monkeypatch.setattr(tempfile, "TemporaryFile", small)
    found, shards = world.state.job_and_shards(job.job_id)
    assert found is not None

    # When its outputs are written, then the error says where and what to do, and nothing is written
    with pytest.raises(SpillSpaceError, match=rf"job {job.job_id}, shard 0: /tmp filled up after [0-9,]+ bytes"):
        OutputsWriter(world.wiring()).write(found, shards, {"succeeded": 8})
    assert not world.store.exists(outputs_keys(job.job_id)["csv"])


def test_a_missing_rows_file_is_named(world: Fakes) -> None:
    from batchdrop.domain.output_order import OutputOrderError
    from batchdrop.domain.rows import rows_key
    from batchdrop.services.outputs import OutputsWriter

    # Given a finished records job whose second shard has no rows file
    job = seed_records_job(world.wiring(), reviews(8), document=pipeline_document(), per_shard=4)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), lambda lines: None)
    del world.store._objects[rows_key(job.job_id, 1)]
    found, shards = world.state.job_and_shards(job.job_id)
    assert found is not None

    # When its outputs are written, then the error names the file
    with pytest.raises(OutputOrderError, match=rf"^work/{job.job_id}/rows-00001.jsonl: cannot be read \(KeyError"):
        OutputsWriter(world.wiring()).write(found, shards, {"succeeded": 8})


@pytest.mark.parametrize(("bucket_bytes", "pending_bytes"), [(1, 1), (1, 1 << 30), (1 << 30, 1)])
def test_results_spilled_a_bucket_per_row_or_written_at_each_line_give_the_same_bytes(
    world: Fakes, monkeypatch: pytest.MonkeyPatch, bucket_bytes: int, pending_bytes: int
) -> None:

    from batchdrop.services import outputs
    from batchdrop.services.outputs import OutputsWriter

    # Given a finished records job of shuffled results, and its outputs written as shipped
    job = seed_records_job(world.wiring(), reviews(40, missing=(7,)), document=pipeline_document(), per_shard=9)
    seed_collected(world.wiring(), job, lambda cid: classified(cid, 2), random.Random(11).shuffle)
    found, shards = world.state.job_and_shards(job.job_id)
    assert found is not None
    counts: Counter[str] = Counter()
    for shard in shards:
        counts.update(shard.counts)
    keys = OutputsWriter(world.wiring()).write(found, shards, counts)
    shipped = {key: world.store.get(key) for key in keys.values()}
    for key in keys.values():
        del world.store._objects[key]  # as if never written: the writes are if-absent

    # When they are written again with each row in a bucket of its own, or each line written
    # to its bucket as it comes
    files = count_spill_files(monkeypatch)
    monkeypatch.setattr(outputs, "_BUCKET_BYTES", bucket_bytes)
    monkeypatch.setattr(outputs, "_PENDING_BYTES", pending_bytes)
    OutputsWriter(world.wiring()).write(found, shards, counts)

    # Then the bytes are the same, a file was made per bucket (per row sent, or per shard), and every one was closed
    assert {key: world.store.get(key) for key in keys.values()} == shipped
    assert len(files) == (39 if bucket_bytes == 1 else len(shards))
    assert all(file.closed for file in files)


def count_spill_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The spill files made from now on, each as it was made."""
    import tempfile

    files: list[Any] = []
    made = tempfile.TemporaryFile

    def counted(**options: Any) -> Any:
        file = made(**options)
        files.append(file)
        return file

    monkeypatch.setattr(tempfile, "TemporaryFile", counted)
    return files
