"""Records-mode jobs made by hand, through the ports only, for the tests of the outputs side.

The records intake (pipelines read from the bucket, records rendered, rows files written) is
being built alongside the outputs; until it lands, these helpers write what it writes, as
domain/rows.py states it: the pipeline object, the job recording its version, one shard body
and one rows file per shard in the file's order, and errors/<job_id>/rejected.jsonl with each
rejected record's row. They work on any Wiring: the unit fakes or the adapters on moto."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchdrop.domain.jobs import IdsDigest, job_id_for, rejected_key, results_part_key
from batchdrop.domain.pipelines import Pipeline, pipeline_from
from batchdrop.domain.record_readers import Rejection
from batchdrop.domain.records import Outcome, PipelineRef, ShardPlan, SourceRef
from batchdrop.domain.rows import RowRef, rejected_row_record, row_line, rows_key
from batchdrop.domain.shards import SHARD_CONTENT_TYPE, create_body_bytes, shard_key
from batchdrop.domain.states import ShardState
from batchdrop.ports import Wiring

MODEL = "claude-haiku-4-5"
SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "mixed"]},
        "confidence": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "confidence", "reason"],
    "additionalProperties": False,
}


def pipeline_document(**changes: Any) -> dict[str, Any]:
    """A review-classifying pipeline with an output schema and a kept field; `changes` replace fields."""
    document: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "prompt": "Review of {{product}}:\n{{review}}",
        "output": {"schema": SENTIMENT},
        "keep_fields": ["product"],
    }
    document.update(changes)
    return {name: value for name, value in document.items() if value is not None}


@dataclass
class RecordsJob:
    job_id: str
    pipeline: Pipeline
    refs: list[RowRef]  # every record, in input order (a rejected one has its reason)
    shards: list[list[RowRef]] = field(default_factory=list)  # the sent records of each shard

    @property
    def sent(self) -> list[RowRef]:
        return [ref for ref in self.refs if ref.reason is None]

    @property
    def rejected(self) -> list[RowRef]:
        return [ref for ref in self.refs if ref.reason is not None]


def _put(wired: Wiring, key: str, data: bytes, content_type: str) -> str:
    with wired.store.writer(key, content_type) as writer:
        writer.write(data)
    return writer.version_id or wired.store.version_of(key)


def seed_records_job(
    wired: Wiring,
    records: Sequence[Mapping[str, str]],
    *,
    document: Mapping[str, Any],
    per_shard: int,
    name: str = "reviews",
    source_key: str = "inbox/reviews/export.csv",
    pipeline_text: bytes | None = None,
) -> RecordsJob:
    """A records-mode job of `records` (row numbers 1, 2, ...) through the pipeline
    `document`, recorded as the intake records it: SUBMITTING, its shards PENDING. A record
    the pipeline rejects goes to rejected.jsonl with its row; the others are cut into shards
    of `per_shard` requests. With `pipeline_text` (YAML giving `document`), the pipeline is
    pipelines/<name>.yaml holding that text."""
    pipeline_key = f"pipelines/{name}.{'yaml' if pipeline_text else 'json'}"
    body = pipeline_text or json.dumps(document).encode()
    pipeline_version = _put(wired, pipeline_key, body, "application/yaml" if pipeline_text else "application/json")
    pipeline = pipeline_from(name, document)
    source_version = _put(wired, source_key, b"(the records file)", "text/csv")
    job_id = job_id_for(wired.store.bucket, source_key, source_version)
    source = SourceRef(wired.store.bucket, source_key, source_version)
    assert wired.state.create_job(job_id, source, wired.stamp(), PipelineRef(pipeline_key, pipeline_version))
    refs: list[RowRef] = []
    lines: list[bytes] = []
    rejected = bytearray()
    for row, record in enumerate(records, start=1):
        kept = {name: record[name] for name in pipeline.keep_fields if name in record}
        rendered = pipeline.render(record, row)
        if isinstance(rendered, Rejection):
            refs.append(RowRef(row, rendered.custom_id, kept, rendered.reason))
            rejected += rejected_row_record(refs[-1], row + 1, source_key)
            continue
        refs.append(RowRef(row, json.loads(rendered)["custom_id"], kept))
        lines.append(rendered)
    job = RecordsJob(job_id, pipeline, refs)
    sent = job.sent
    plans = [
        _shard(wired, job_id, index, lines[start : start + per_shard], sent[start : start + per_shard])
        for index, start in enumerate(range(0, len(lines), per_shard))
    ]
    job.shards = [sent[start : start + per_shard] for start in range(0, len(lines), per_shard)]
    if rejected:
        _put(wired, rejected_key(job_id), bytes(rejected), "application/x-jsonl")
    assert wired.state.record_shards(
        job_id, plans, requested=len(lines), rejected=len(job.rejected), max_attempts=wired.max_attempts
    )
    return job


def _shard(wired: Wiring, job_id: str, index: int, lines: list[bytes], refs: list[RowRef]) -> ShardPlan:
    digest = IdsDigest()
    for ref in refs:
        digest.add(str(ref.custom_id))
    key = shard_key(job_id, index)
    version = _put(wired, key, b"".join(line + b"\n" for line in lines), SHARD_CONTENT_TYPE)
    _put(wired, rows_key(job_id, index), b"".join(row_line(ref) for ref in refs), "application/x-jsonl")
    size = create_body_bytes(len(lines), sum(len(line) for line in lines))
    return ShardPlan(index, key, len(lines), size, digest.hex, version)


# --- answers ------------------------------------------------------------------------------


def message(content: list[dict[str, Any]], *, stop_reason: str = "end_turn", tokens: int = 12) -> dict[str, Any]:
    usage = {
        "input_tokens": 40,
        "output_tokens": tokens,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 0,
    }
    return {
        "type": "succeeded",
        "message": {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "usage": usage,
        },
    }


def text_answer(text: str, **options: Any) -> dict[str, Any]:
    return message([{"type": "text", "text": text}], **options)


def result_line(custom_id: str, result: Mapping[str, Any]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}, ensure_ascii=False).encode()


def seed_collected(
    wired: Wiring, job: RecordsJob, answer: Callable[[str], Mapping[str, Any]], order: Callable[[list[bytes]], None]
) -> None:
    """Every shard of `job` COLLECTED with one results part of `answer(custom_id)` for each
    of its requests, put in the order `order` leaves them (shuffled, say). The shards move
    PENDING -> CANCELING -> COLLECTED, the shortest way the state machine has to COLLECTED."""
    for index, refs in enumerate(job.shards):
        lines = [result_line(str(ref.custom_id), answer(str(ref.custom_id))) for ref in refs]
        order(lines)
        key = results_part_key(job.job_id, index)
        _put(wired, key, b"".join(line + b"\n" for line in lines), "application/x-jsonl")
        counts: dict[str, int] = {}
        for line in lines:
            kind = json.loads(line)["result"]["type"]
            counts[kind] = counts.get(kind, 0) + 1
        shard = wired.state.get_shard(job.job_id, index)
        assert shard is not None
        assert shard.state is ShardState.PENDING
        assert wired.state.cancel_unsent(shard, "seeded as collected")
        shard = wired.state.get_shard(job.job_id, index)
        assert shard is not None
        entry = {"attempt": 1, "batch_id": f"msgbatch_seed{index}", "requests": len(lines), "counts": counts}
        assert wired.state.mark_collected(shard, Outcome(counts, (key,), (entry,)))


def records(count: int, review: Callable[[int], str] | None = None) -> Iterable[dict[str, str]]:
    for number in range(1, count + 1):
        yield {"product": f"product {number % 7}", "review": review(number) if review else f"review {number}"}
