"""The state table: one item per job and one per shard (the provider batch that carries
it), under the job's partition key. Every move is a conditional write whose expected
states come from the state machines (domain/states.py), so a replayed event or a second
checker can never move an item twice. Shards with an open batch, and only those, carry the
keys of the sparse `open-batches` index; so do unfinished jobs, so one query per tick finds
all the checker has to do. Only this module knows the items' shape: the rest of batchdrop
reads JobRecord and ShardRecord values."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from batchdrop.domain.budget import DailyBudgetTaken, DaySpend
from batchdrop.domain.records import (
    CreateLease,
    JobRecord,
    NextAttempt,
    OpenWork,
    Outcome,
    PipelineRef,
    ShardPlan,
    ShardRecord,
    SourceRef,
    SplitCheckpoint,
)
from batchdrop.domain.states import (
    OPEN_JOB_STATUSES,
    UNSETTLED_SHARD_STATES,
    JobStatus,
    ShardState,
    check_job_move,
    check_shard_move,
)
from batchdrop.observability import logger

OPEN_INDEX = "open-batches"
OPEN = "OPEN"
_JOB_SK = "JOB"
_SHARD_SK = "SHARD#"
_LEASE_KEY = {"PK": "CTRL", "SK": "CREATE_LEASE"}
_FINAL_JOB = (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.CANCELED)
_OPEN_KEYS = ("GSI1PK", "GSI1SK")  # the open index's keys: an item without them is not in it
# The attribute the table's TimeToLiveSpecification names (template.yaml): epoch seconds.
TTL_ATTRIBUTE = "ttl"
_DAY = 86_400
# One transaction holds 100 actions.
_TRANSACTION_ITEMS = 100


def _job_key(job_id: str) -> dict[str, str]:
    return {"PK": f"JOB#{job_id}", "SK": _JOB_SK}


def _shard_key(job_id: str, index: int) -> dict[str, str]:
    return {"PK": f"JOB#{job_id}", "SK": f"{_SHARD_SK}{index:05d}"}


def _spend_key(day: str) -> dict[str, str]:
    return {"PK": f"DAY#{day}", "SK": "SPEND"}


def _guard_key(batch_id: str) -> dict[str, str]:
    return {"PK": f"PBATCH#{batch_id}", "SK": "OWNER"}


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals back to ints, recursively."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _raise_unless_condition_lost(exc: Exception) -> None:
    """A transaction canceled because a condition did not hold is an answer ("someone else
    got there"); one canceled for throttling or a conflict is an error to retry."""
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    if not reasons or any(r.get("Code") not in (None, "None", "ConditionalCheckFailed") for r in reasons):
        raise exc


# --- items and records ------------------------------------------------------------------


def _job_record(item: Mapping[str, Any]) -> JobRecord:
    return JobRecord(
        job_id=item["job_id"],
        status=JobStatus(item["status"]),
        source=SourceRef(item["bucket"], item["key"], item["version_id"]),
        created_at=item["created_at"],
        requested=int(item.get("requested", 0)),
        rejected=int(item.get("rejected", 0)),
        shard_count=int(item.get("shard_count", 0)),
        cancel_requested_at=item.get("cancel_requested_at"),
        manifest_key=item.get("manifest_key"),
        completed_at=item.get("completed_at"),
        reason=item.get("reason"),
        redrives=int(item.get("redrives", 0)),
        redriven_at=item.get("redriven_at"),
        redrive_error=item.get("redrive_error"),
        pipeline=PipelineRef(item["pipeline_key"], item["pipeline_version_id"]) if "pipeline_key" in item else None,
        checkpoint=_checkpoint_record(item.get("split")),
        split_lease=item.get("split_lease"),
        spend_day=item.get("spend_day"),
        spend_usd=Decimal(item["spend_usd"]) if "spend_usd" in item else None,
    )


def _checkpoint_record(item: Mapping[str, Any] | None) -> SplitCheckpoint | None:
    if not item:
        return None
    return SplitCheckpoint(
        offset=int(item["offset"]),
        line=int(item["line"]),
        requested=int(item["requested"]),
        rejected=int(item["rejected"]),
        next_shard=int(item["next_shard"]),
        compressed=bool(item["compressed"]),
        ids_keys=tuple(item.get("ids_keys") or ()),
        rejected_version=item.get("rejected_version"),
        rejected_bytes=int(item.get("rejected_bytes", 0)),
    )


def _checkpoint_item(checkpoint: SplitCheckpoint) -> dict[str, Any]:
    item: dict[str, Any] = {
        "offset": checkpoint.offset,
        "line": checkpoint.line,
        "requested": checkpoint.requested,
        "rejected": checkpoint.rejected,
        "next_shard": checkpoint.next_shard,
        "compressed": checkpoint.compressed,
        "ids_keys": list(checkpoint.ids_keys),
        "rejected_bytes": checkpoint.rejected_bytes,
    }
    if checkpoint.rejected_version is not None:
        item["rejected_version"] = checkpoint.rejected_version
    return item


def _shard_record(item: Mapping[str, Any]) -> ShardRecord:
    return ShardRecord(
        job_id=item["job_id"],
        index=int(item["index"]),
        state=ShardState(item["state"]),
        key=item["key"],
        requests=int(item["requests"]),
        attempt_requests=int(item["attempt_requests"]),
        size=int(item["size"]),
        ids_digest=item.get("ids_digest", ""),
        attempt=int(item["attempt"]),
        creates_sent=int(item["creates_sent"]),
        max_attempts=int(item["max_attempts"]),
        batch_id=item.get("batch_id"),
        sent_at=item.get("sent_at"),
        lease_owner=item.get("lease_owner"),
        reason=item.get("reason"),
        overdue_at=item.get("overdue_at"),
        counts=dict(item.get("counts") or {}),
        usage=dict(item.get("usage") or {}),
        result_keys=tuple(item.get("result_keys") or ()),
        attempts_log=tuple(item.get("attempts_log") or ()),
        ended_at=item.get("ended_at"),
        progress=dict(item.get("progress") or {}),
        expires_at=item.get("expires_at"),
        version_id=item.get("version_id"),
    )


def _shard_item(job_id: str, shard: ShardPlan, max_attempts: int) -> dict[str, Any]:
    return {
        **_shard_key(job_id, shard.index),
        "job_id": job_id,
        "index": shard.index,
        "state": ShardState.PENDING.value,
        "key": shard.key,
        "requests": shard.requests,
        "attempt_requests": shard.requests,
        "size": shard.size,
        "ids_digest": shard.ids_digest,
        "attempt": 1,
        "creates_sent": 0,
        "max_attempts": max_attempts,
        **({"version_id": shard.version_id} if shard.version_id is not None else {}),
    }


def _outcome_values(outcome: Outcome) -> dict[str, Any]:
    values: dict[str, Any] = {
        "counts": dict(outcome.counts),
        "result_keys": list(outcome.result_keys),
        "attempts_log": [dict(entry) for entry in outcome.attempts_log],
    }
    if outcome.usage is not None:
        values["usage"] = {model: dict(figures) for model, figures in outcome.usage.items()}
    if outcome.ended_at is not None:
        values["ended_at"] = outcome.ended_at
    return values


def _update(
    table: str,
    key: Mapping[str, str],
    attribute: str,
    expected: Mapping[str, str],
    new: str,
    *,
    fence: Mapping[str, Any],
    set_values: Mapping[str, Any],
    remove: Sequence[str],
    add: str | None = None,
) -> dict[str, Any]:
    """UpdateItem arguments: `attribute` from one of the `expected` values (named :stN) to
    `new`, with the `fence` values still held; sets `set_values`, adds one to `add`, removes
    `remove`. Usable alone or inside a transaction."""
    names = {"#s": attribute, **{f"#f{i}": name for i, name in enumerate(fence)}}
    names.update({f"#v{i}": name for i, name in enumerate(set_values)})
    condition = " AND ".join([f"#s IN ({', '.join(expected)})", *(f"#f{i} = :f{i}" for i in range(len(fence)))])
    assign = ["#s = :new", *(f"#v{i} = :v{i}" for i in range(len(set_values)))]
    values: dict[str, Any] = {
        ":new": str(new),
        **expected,
        **{f":f{i}": value for i, value in enumerate(fence.values())},
        **{f":v{i}": value for i, value in enumerate(set_values.values())},
    }
    if add is not None:
        names["#add"] = add
        assign.append("#add = #add + :one")
        values[":one"] = 1
    return {
        "TableName": table,
        "Key": dict(key),
        "UpdateExpression": f"SET {', '.join(assign)}" + (f" REMOVE {', '.join(remove)}" if remove else ""),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _checkpoint_held(update: dict[str, Any], previous: int | None) -> dict[str, Any]:
    """`update` (UpdateItem arguments of a job), conditioned further on its split checkpoint
    being at offset `previous` (None: the job has none)."""
    values = update["ExpressionAttributeValues"]
    if previous is None:
        held = "attribute_not_exists(split_offset)"
    else:
        held = "split_offset = :previous"
        values = {**values, ":previous": previous}
    return {
        **update,
        "ConditionExpression": f"({update['ConditionExpression']}) AND {held}",
        "ExpressionAttributeValues": values,
    }


class _Table:
    """The table and the writes every item shares: conditional, transactional, fenced moves."""

    def __init__(
        self,
        table_name: str,
        resource: Any = None,
        *,
        job_retention_days: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = table_name
        self._resource = resource
        self._table: Any = None
        # A finished or failed job's item gets a TTL this many days on (0: kept).
        self._job_retention_days = job_retention_days
        self._clock = clock

    @property
    def table(self) -> Any:
        if self._table is None:
            if self._resource is None:
                import boto3

                self._resource = boto3.resource("dynamodb")
            self._table = self._resource.Table(self._name)
        return self._table

    def _conditional(self, **kwargs: Any) -> bool:
        """An UpdateItem/PutItem that may lose its condition: True when it was applied."""
        client = self.table.meta.client
        kwargs.pop("TableName", None)  # the table resource names itself
        try:
            if "UpdateExpression" in kwargs:
                self.table.update_item(**kwargs)
            else:
                self.table.put_item(**kwargs)
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _transact(
        self, items: Sequence[Mapping[str, Any]], what: str, *, first_lost: type[Exception] | None = None
    ) -> bool:
        """One transaction; False when one of its conditions did not hold (`first_lost` raised
        instead when the first item's did: the caller decides something else then)."""
        client = self.table.meta.client
        try:
            client.transact_write_items(TransactItems=list(items))
        except client.exceptions.TransactionCanceledException as exc:
            _raise_unless_condition_lost(exc)
            reasons = exc.response.get("CancellationReasons")
            if first_lost is not None and reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise first_lost() from None
            logger.info("a transaction's condition did not hold", extra={"write": what, "reasons": reasons})
            return False
        return True

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        consistent = "IndexName" not in kwargs
        while True:
            page = self.table.query(ConsistentRead=consistent, **kwargs)
            yield from (_plain(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _spend_update(self, spend: DaySpend, *, sent: bool) -> dict[str, Any]:
        """The UpdateItem arguments that add `spend` to its day's spend (and, for a job `sent`,
        one to the day's jobs), within its cap if it has one."""
        update: dict[str, Any] = {
            "TableName": self._name,
            "Key": _spend_key(spend.day),
            "UpdateExpression": "ADD spent_usd :usd" + (", jobs :one" if sent else ""),
            "ExpressionAttributeValues": {":usd": spend.usd, **({":one": 1} if sent else {})},
        }
        if spend.cap is not None:
            update["ConditionExpression"] = "attribute_not_exists(spent_usd) OR spent_usd <= :room"
            update["ExpressionAttributeValues"][":room"] = spend.cap - spend.usd
        return update

    def spent_on(self, day: str) -> Decimal:
        """A UTC day's spend: the upper-bound estimates of the open jobs sent that day plus the
        actual cost of those that finished (domain/budget.py)."""
        item = self.table.get_item(Key=_spend_key(day), ConsistentRead=True).get("Item")
        return Decimal(item["spent_usd"]) if item and "spent_usd" in item else Decimal(0)

    def _job_move(
        self,
        job_id: str,
        expected: JobStatus | Iterable[JobStatus],
        new: JobStatus,
        set_values: Mapping[str, Any] | None = None,
        *,
        remove: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The UpdateItem arguments that move a job from `expected` to `new` (checked
        against the state machine), setting `set_values` and removing `remove`."""
        states = {f":st{i}": str(state) for i, state in enumerate(sorted(check_job_move(expected, new)))}
        return _update(
            self._name, _job_key(job_id), "status", states, new, fence={}, set_values=set_values or {}, remove=remove
        )

    @staticmethod
    def _attempt_fence(shard: ShardRecord) -> dict[str, Any]:
        if shard.state is ShardState.SUBMITTED:
            return {"batch_id": shard.batch_id, "attempt": shard.attempt}
        return {"attempt": shard.attempt, "key": shard.key}

    def _shard_move(
        self,
        job_id: str,
        index: int,
        expected: ShardState | Iterable[ShardState],
        new: ShardState,
        *,
        fence: Mapping[str, Any] | None = None,
        set_values: Mapping[str, Any] | None = None,
        add: str | None = None,
        remove: Sequence[str] = (),
    ) -> dict[str, Any]:
        """The UpdateItem arguments of a shard's move from `expected` to `new` (checked
        against the state machine): the item must still hold the `fence` values; the move
        sets `set_values`, adds one to the `add` counter and removes `remove`."""
        states = {f":st{i}": str(state) for i, state in enumerate(sorted(check_shard_move(expected, new)))}
        return _update(
            self._name,
            _shard_key(job_id, index),
            "state",
            states,
            new,
            fence=fence or {},
            set_values=set_values or {},
            remove=remove,
            add=add,
        )


class _Jobs(_Table):
    """Job items."""

    def create_job(self, job_id: str, source: SourceRef, created_at: str, pipeline: PipelineRef | None = None) -> bool:
        """Record a new job (with its pipeline in records mode); False when the job exists
        already (a duplicate event): the pipeline recorded first stays the job's."""
        item = {
            **_job_key(job_id),
            "job_id": job_id,
            "status": JobStatus.RECEIVED.value,
            **source.as_dict(),
            "created_at": created_at,
        }
        if pipeline is not None:
            item |= {"pipeline_key": pipeline.key, "pipeline_version_id": pipeline.version_id}
        return self._conditional(Item=item, ConditionExpression="attribute_not_exists(PK)")

    def get_job(self, job_id: str) -> JobRecord | None:
        item = self.table.get_item(Key=_job_key(job_id), ConsistentRead=True).get("Item")
        return _job_record(_plain(item)) if item else None

    def job_and_shards(self, job_id: str) -> tuple[JobRecord | None, list[ShardRecord]]:
        """The job and its shards in index order, read consistently."""
        job, shards = None, []
        for item in self._query(KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": f"JOB#{job_id}"}):
            if item["SK"] == _JOB_SK:
                job = _job_record(item)
            elif item["SK"].startswith(_SHARD_SK):
                shards.append(_shard_record(item))
        return job, sorted(shards, key=lambda shard: shard.index)

    def shards(self, job_id: str) -> list[ShardRecord]:
        return self.job_and_shards(job_id)[1]

    def list_jobs(self) -> list[JobRecord]:
        """Every job, newest first (a scan: for the command line, not for the functions)."""
        jobs: list[JobRecord] = []
        kwargs: dict[str, Any] = {"FilterExpression": "SK = :job", "ExpressionAttributeValues": {":job": _JOB_SK}}
        while True:
            page = self.table.scan(**kwargs)
            jobs.extend(_job_record(_plain(item)) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return sorted(jobs, key=lambda job: job.created_at, reverse=True)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record_shards(
        self,
        job_id: str,
        shards: Sequence[ShardPlan],
        *,
        requested: int,
        rejected: int,
        max_attempts: int,
        shard_count: int | None = None,
        resumed_from: int | None = None,
        hold: bool = False,
        spend: DaySpend | None = None,
    ) -> bool:
        """RECEIVED → SUBMITTING (with `hold`, AWAITING_APPROVAL: a job over its budget),
        adding `spend` to its day's spend (DailyBudgetTaken when that day has no room for it),
        with the job's shards as PENDING items, all at once (the
        first transaction holds the job and up to 99 shards: 9.9M requests; more spill into
        further transactions, which a resumed run completes with add_missing_shard). A split
        in segments records here its last segment's shards, with the job's `shard_count`
        and only while its checkpoint is still at `resumed_from` (None: it has none)."""
        values = {
            "requested": requested,
            "rejected": rejected,
            "shard_count": len(shards) if shard_count is None else shard_count,
            "GSI1PK": OPEN,
            "GSI1SK": f"JOB#{job_id}",
        }
        if spend is not None:
            values |= {"spend_day": spend.day, "spend_usd": str(spend.usd)}
        job_update = {
            "Update": _checkpoint_held(
                self._job_move(job_id, JobStatus.RECEIVED, _recorded_status(hold), values), resumed_from
            )
        }
        puts = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": _shard_item(job_id, shard, max_attempts),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
            for shard in shards
        ]
        head = [job_update] if spend is None else [{"Update": self._spend_update(spend, sent=True)}, job_update]
        first = _TRANSACTION_ITEMS - len(head)
        capped = spend is not None and spend.cap is not None
        lost = DailyBudgetTaken if capped else None
        if not self._transact([*head, *puts[:first]], "shards not recorded", first_lost=lost):
            return False
        for start in range(first, len(puts), _TRANSACTION_ITEMS):
            if not self._transact(puts[start : start + _TRANSACTION_ITEMS], "shards not recorded"):
                return False
        return True

    def add_missing_shard(self, job_id: str, shard: ShardPlan, max_attempts: int) -> bool:
        """Record one shard a crash left out of a recording that spanned several
        transactions; False if it is there already."""
        item = _shard_item(job_id, shard, max_attempts)
        return self._conditional(Item=item, ConditionExpression="attribute_not_exists(PK)")

    def _expiry(self) -> dict[str, int]:
        """The `ttl` a job item gets as it ends: none unless a retention is set. Only the job
        item: its shards hold no open-index keys once it ends and cost nothing to keep."""
        if not self._job_retention_days:
            return {}
        return {TTL_ATTRIBUTE: int(self._clock()) + self._job_retention_days * _DAY}

    def fail_job(self, job_id: str, reason: str, *, requested: int, rejected: int, manifest_key: str) -> bool:
        values = {"reason": reason, "requested": requested, "rejected": rejected, "manifest_key": manifest_key}
        values |= self._expiry()
        expected = (JobStatus.RECEIVED, JobStatus.SUBMITTING)
        return self._conditional(**self._job_move(job_id, expected, JobStatus.FAILED, values, remove=_OPEN_KEYS))

    def mark_job_running(self, job_id: str) -> bool:
        return self._conditional(**self._job_move(job_id, JobStatus.SUBMITTING, JobStatus.RUNNING))

    def release_job(self, job_id: str, spend: DaySpend | None = None) -> bool:
        """AWAITING_APPROVAL → SUBMITTING: approved (its shards go out, `spend` added to its
        day's spend, over the day's budget or not: someone chose to pay it), or canceled or
        expired (its cancel recorded first: the checker closes its shards unsent)."""
        if spend is None:
            return self._conditional(**self._job_move(job_id, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING))
        values = {"spend_day": spend.day, "spend_usd": str(spend.usd)}
        move = self._job_move(job_id, JobStatus.AWAITING_APPROVAL, JobStatus.SUBMITTING, values)
        return self._transact([{"Update": move}, {"Update": self._spend_update(spend, sent=True)}], "job not released")

    def reopen_job(self, job_id: str) -> bool:
        """RUNNING → SUBMITTING for a job that has a shard without its batch again."""
        return self._conditional(**self._job_move(job_id, JobStatus.RUNNING, JobStatus.SUBMITTING))

    def finish_job(
        self, job_id: str, status: JobStatus, manifest_key: str, completed_at: str, settle: DaySpend | None = None
    ) -> bool:
        """Close the job, and with `settle` swap its estimate in its day's spend for its actual
        cost, in the same transaction: once, by the call that closes it."""
        if status not in _FINAL_JOB:
            raise ValueError(f"a job finishes as one of {[str(s) for s in _FINAL_JOB]}, not {status}")
        values: dict[str, Any] = {"manifest_key": manifest_key, "completed_at": completed_at, **self._expiry()}
        expected = (JobStatus.SUBMITTING, JobStatus.RUNNING)
        move = self._job_move(job_id, expected, status, values, remove=_OPEN_KEYS)
        if settle is None:
            return self._conditional(**move)
        settled = self._spend_update(settle, sent=False)
        return self._transact([{"Update": move}, {"Update": settled}], "job not finished")

    def request_cancel(self, job_id: str, requested_at: str) -> JobRecord | None:
        """Mark an unfinished job as to be canceled (once: a repeated request keeps the first
        time); the job as it is now, or None when there is no such job."""
        client = self.table.meta.client
        unfinished = {f":st{i}": str(status) for i, status in enumerate(sorted(OPEN_JOB_STATUSES))}
        try:
            item = self.table.update_item(
                Key=_job_key(job_id),
                UpdateExpression="SET cancel_requested_at = if_not_exists(cancel_requested_at, :at)",
                ConditionExpression=f"attribute_exists(PK) AND #s IN ({', '.join(unfinished)})",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":at": requested_at, **unfinished},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except client.exceptions.ConditionalCheckFailedException:
            return self.get_job(job_id)
        return _job_record(_plain(item))


class _Redrives(_Jobs):
    """What the sweeper reads and counts of jobs left RECEIVED (services/sweeper.py)."""

    def get_jobs(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """These jobs, those that exist, by id: BatchGetItem, 100 keys a request (eventually
        consistent: the counter below is the write that decides)."""
        wanted = list(dict.fromkeys(job_ids))
        found: dict[str, JobRecord] = {}
        client = self.table.meta.client
        for start in range(0, len(wanted), 100):
            keys = [_job_key(job_id) for job_id in wanted[start : start + 100]]
            request: dict[str, Any] = {self._name: {"Keys": keys}}
            while request:
                answer = client.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._name, []):
                    job = _job_record(_plain(item))
                    found[job.job_id] = job
                request = answer.get("UnprocessedKeys") or {}
        return found

    def count_redrive(self, job_id: str, seen: int, at: str, *, lease: str | None = None) -> bool:
        """Count one re-drive of a job still RECEIVED or SUBMITTING, if its count is still
        `seen`: of two drivers that read the same count, one counts the try, the other gets
        False. `lease`: the deadline of the invocation that runs the try, kept as the job's
        split lease (no sweep goes on with its split before then)."""
        counted = "(redrives = :seen)" if seen else "(attribute_not_exists(redrives) OR redrives = :zero)"
        leased = ", split_lease = :lease" if lease is not None else ""
        return self._conditional(
            Key=_job_key(job_id),
            UpdateExpression=f"SET redrives = :next, redriven_at = :at{leased}",
            ConditionExpression=f"#s IN (:received, :submitting) AND {counted}",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":next": seen + 1,
                ":at": at,
                ":received": str(JobStatus.RECEIVED),
                ":submitting": str(JobStatus.SUBMITTING),
                **({":seen": seen} if seen else {":zero": 0}),
                **({":lease": lease} if lease is not None else {}),
            },
        )

    def save_checkpoint(self, job_id: str, checkpoint: SplitCheckpoint, *, previous: int | None, lease: str) -> bool:
        """The split checkpoint of a job still RECEIVED, moved only from the one at offset
        `previous` (None: none yet) to one further on: two runs of one segment save it
        once, and a run of an earlier segment never takes it back. The segment made
        progress, so the job's re-drive count starts over."""
        if previous is not None and checkpoint.offset <= previous:
            raise ValueError(
                f"job {job_id}: a checkpoint moves forward only, not from {previous} to {checkpoint.offset}"
            )
        update = _checkpoint_held(
            {
                "Key": _job_key(job_id),
                "UpdateExpression": "SET #split = :split, split_offset = :offset, split_lease = :lease,"
                " redrives = :zero REMOVE redrive_error",
                "ConditionExpression": "#s = :received",
                "ExpressionAttributeNames": {"#s": "status", "#split": "split"},
                "ExpressionAttributeValues": {
                    ":split": _checkpoint_item(checkpoint),
                    ":offset": checkpoint.offset,
                    ":lease": lease,
                    ":zero": 0,
                    ":received": str(JobStatus.RECEIVED),
                },
            },
            previous,
        )
        return self._conditional(**update)

    def note_redrive_error(self, job_id: str, error: str) -> bool:
        """Keep the error a re-drive raised on a job still RECEIVED: the reason it fails with."""
        return self._conditional(
            Key=_job_key(job_id),
            UpdateExpression="SET redrive_error = :error",
            ConditionExpression="#s = :received",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":error": error, ":received": str(JobStatus.RECEIVED)},
        )


class _ShardNotes(_Redrives):
    """What is written on a shard without moving it: the checker's overdue flag and the
    progress of its open batch."""

    def flag_overdue(self, shard: ShardRecord, at: str) -> bool:
        """Note on a shard that its batch ran past its expiry and was canceled by us."""
        return self._conditional(
            TableName=self._name,
            Key=_shard_key(shard.job_id, shard.index),
            UpdateExpression="SET overdue_at = if_not_exists(overdue_at, :at)",
            ConditionExpression="#s = :submitted AND batch_id = :batch",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":at": at, ":submitted": str(ShardState.SUBMITTED), ":batch": shard.batch_id},
        )

    def note_progress(self, shard: ShardRecord, counts: Mapping[str, int], expires_at: str | None) -> bool:
        """Record an open batch's request counts and expiry on its shard, for clients to show
        progress: not a move, and only while the shard is still SUBMITTED with `shard`'s batch
        (False, and nothing written, once it has moved on)."""
        values: dict[str, Any] = {
            ":progress": {name: int(n) for name, n in counts.items()},
            ":submitted": str(ShardState.SUBMITTED),
            ":batch": shard.batch_id,
        }
        assign = "progress = :progress"
        if expires_at is not None:
            assign += ", expires_at = :expires"
            values[":expires"] = expires_at
        return self._conditional(
            TableName=self._name,
            Key=_shard_key(shard.job_id, shard.index),
            UpdateExpression=f"SET {assign}",
            ConditionExpression="#s = :submitted AND batch_id = :batch",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues=values,
        )


class _ShardSplits(_ShardNotes):
    """A refused shard halved: its requests go on as two new shards."""

    def split_refused(
        self, shard: ShardRecord, shard_count: int, halves: Sequence[ShardPlan], entry: Mapping[str, Any]
    ) -> bool:
        """REFUSED → SPLIT, with `halves` recorded as new PENDING shards and the job's
        shard_count raised from `shard_count` by their number, in one transaction: fenced to
        the attempt `shard` was read at and to the shard count read, so a second checker
        splitting the same shard (or another one at the same time) records nothing. The
        shard keeps the final outcomes of its earlier attempts; its `requests` become
        theirs, and `entry` closes the refused attempt in its log. The job goes back to
        SUBMITTING so the checker sends the halves."""
        values = {
            "requests": shard.requests - shard.attempt_requests,
            "attempts_log": [*(dict(item) for item in shard.attempts_log), dict(entry)],
        }
        update = self._shard_move(
            shard.job_id,
            shard.index,
            ShardState.REFUSED,
            ShardState.SPLIT,
            fence=self._attempt_fence(shard),
            set_values=values,
            remove=_OPEN_KEYS,
        )
        statuses = check_job_move((JobStatus.SUBMITTING, JobStatus.RUNNING), JobStatus.SUBMITTING)
        job = _update(
            self._name,
            _job_key(shard.job_id),
            "status",
            {f":st{i}": str(status) for i, status in enumerate(sorted(statuses))},
            JobStatus.SUBMITTING,
            fence={"shard_count": shard_count},
            set_values={"shard_count": shard_count + len(halves)},
            remove=(),
        )
        max_attempts = max(shard.max_attempts - shard.attempt + 1, 1)
        puts = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": _shard_item(shard.job_id, half, max_attempts),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
            for half in halves
        ]
        return self._transact([{"Update": update}, {"Update": job}, *puts], "refused shard not split")


class StateTable(_ShardSplits):
    """The state table: job items, the create lease, shard items."""

    # --- the create lease -------------------------------------------------------------

    def acquire_create_lease(self, owner: str, now: str, until: str) -> bool:
        """Take the workspace's one create lease if it is free: at most one create is
        unresolved at a time, so an unknown outcome matches one listed batch without
        ambiguity. A lease never lapses on time alone: it is released by its holder, by the
        checker once it has settled the holder's create, or freed as stale once the holder's
        shard shows it died. `until` is informative."""
        return self._conditional(
            Item={**_LEASE_KEY, "owner": owner, "until": until, "taken_at": now},
            ConditionExpression="attribute_not_exists(PK) OR #owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": owner},
        )

    def get_create_lease(self) -> CreateLease | None:
        item = self.table.get_item(Key=_LEASE_KEY, ConsistentRead=True).get("Item")
        return CreateLease(str(item["owner"]), str(item["taken_at"]), str(item["until"])) if item else None

    def release_create_lease(self, owner: str) -> bool:
        """Give the lease back, if this owner still holds it."""
        client = self.table.meta.client
        try:
            self.table.delete_item(
                Key=_LEASE_KEY,
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": owner},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- shards -----------------------------------------------------------------------

    def get_shard(self, job_id: str, index: int) -> ShardRecord | None:
        item = self.table.get_item(Key=_shard_key(job_id, index), ConsistentRead=True).get("Item")
        return _shard_record(_plain(item)) if item else None

    def open_work(self) -> OpenWork:
        """Unfinished jobs and shards whose batch is open: one query when idle, then one
        item per open job or batch, never per request. (The index is eventually
        consistent: read a shard itself before acting on what it says.)"""
        work = OpenWork(jobs=[], batches=[])
        items = self._query(
            IndexName=OPEN_INDEX,
            KeyConditionExpression="GSI1PK = :open",
            ExpressionAttributeValues={":open": OPEN},
        )
        for item in items:
            if item["SK"] == _JOB_SK:
                work.jobs.append(_job_record(item))
            elif item["SK"].startswith(_SHARD_SK):
                work.batches.append(_shard_record(item))
        return work

    def owned_batches(self, batch_ids: Iterable[str]) -> set[str]:
        """Which of these provider batches already belong to a shard (have a guard)."""
        return {
            batch_id
            for batch_id in batch_ids
            if "Item" in self.table.get_item(Key=_guard_key(batch_id), ConsistentRead=True)
        }

    def begin_submit(self, shard: ShardRecord, sent_at: str, lease_owner: str) -> bool:
        """PENDING → SUBMITTING: the intent, recorded before the create is sent, for the
        attempt and body `shard` was read with (the body about to be sent), in one transaction
        with two checks: the job has no cancel request, and `lease_owner` still holds the
        create lease. False when any of them does not hold."""
        job_id = shard.job_id
        update = self._shard_move(
            job_id,
            shard.index,
            ShardState.PENDING,
            ShardState.SUBMITTING,
            fence={"attempt": shard.attempt, "key": shard.key},
            set_values={"sent_at": sent_at, "lease_owner": lease_owner},
            add="creates_sent",
        )
        not_canceled = {
            "ConditionCheck": {
                "TableName": self._name,
                "Key": _job_key(job_id),
                "ConditionExpression": "attribute_not_exists(cancel_requested_at)",
            }
        }
        lease_held = {
            "ConditionCheck": {
                "TableName": self._name,
                "Key": _LEASE_KEY,
                "ConditionExpression": "#owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":owner": lease_owner},
            }
        }
        return self._transact([{"Update": update}, not_canceled, lease_held], "intent not recorded")

    def mark_submitted(self, job_id: str, index: int, batch_id: str, sent_at: str) -> bool:
        """SUBMITTING → SUBMITTED with the provider's batch id; the shard joins the open index.
        One transaction also writes the batch's owner guard, so a batch can never belong to
        two shards. `sent_at` fences the write to the intent that sent it."""
        return self._attach(job_id, index, batch_id, ShardState.SUBMITTING, sent_at)

    def adopt_batch(self, shard: ShardRecord, batch_id: str) -> bool:
        """UNKNOWN or SUBMITTING → SUBMITTED with a batch found by listing, for the intent
        `shard` was read with only; False if the shard moved or the batch is owned."""
        if shard.sent_at is None:
            raise ValueError(f"shard {shard.index} of {shard.job_id} has no intent to adopt a batch for")
        return self._attach(shard.job_id, shard.index, batch_id, UNSETTLED_SHARD_STATES, shard.sent_at)

    def _attach(
        self, job_id: str, index: int, batch_id: str, expected: ShardState | Iterable[ShardState], sent_at: str
    ) -> bool:
        shard = self._shard_move(
            job_id,
            index,
            expected,
            ShardState.SUBMITTED,
            fence={"sent_at": sent_at},
            set_values={"batch_id": batch_id, "GSI1PK": OPEN, "GSI1SK": f"SHARD#{job_id}#{index:05d}"},
        )
        guard = {
            "Put": {
                "TableName": self._name,
                "Item": {**_guard_key(batch_id), "job_id": job_id, "index": index},
                "ConditionExpression": "attribute_not_exists(PK)",
            }
        }
        return self._transact([{"Update": shard}, guard], "batch not attached")

    def resubmit_unsettled(self, shard: ShardRecord, reason: str) -> bool:
        """UNKNOWN (or a SUBMITTING left behind) → PENDING once listing showed its create made
        no batch; the creates sent are kept. Fenced to the intent `shard` was read with."""
        return self._conditional(
            **self._shard_move(
                shard.job_id,
                shard.index,
                shard.state,
                ShardState.PENDING,
                fence={"sent_at": shard.sent_at},
                set_values={"reason": reason},
            )
        )

    def mark_unknown(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        """SUBMITTING → UNKNOWN: the create may have made a batch; never resend blindly."""
        return self._end_intent(job_id, index, ShardState.UNKNOWN, reason, sent_at)

    def release_submit(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        """SUBMITTING → PENDING after a create the provider refused (no batch exists)."""
        return self._end_intent(job_id, index, ShardState.PENDING, reason, sent_at)

    def refuse(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        """SUBMITTING → REFUSED: the provider refused the body for good. Claimed before its
        errored results are written, so no create can take the shard any more."""
        return self._end_intent(job_id, index, ShardState.REFUSED, reason, sent_at)

    def _end_intent(self, job_id: str, index: int, new: ShardState, reason: str, sent_at: str) -> bool:
        return self._conditional(
            **self._shard_move(
                job_id,
                index,
                ShardState.SUBMITTING,
                new,
                fence={"sent_at": sent_at},
                set_values={"reason": reason},
                remove=("overdue_at",),
            )
        )

    def cancel_unsent(self, shard: ShardRecord, reason: str) -> bool:
        """PENDING → CANCELING for a shard of a canceled job, claimed before its canceled
        results are written; fenced to the attempt `shard` was read at."""
        return self._conditional(
            **self._shard_move(
                shard.job_id,
                shard.index,
                ShardState.PENDING,
                ShardState.CANCELING,
                fence={"attempt": shard.attempt, "key": shard.key},
                set_values={"reason": reason},
                remove=("overdue_at",),
            )
        )

    def mark_collected(self, shard: ShardRecord, outcome: Outcome) -> bool:
        """SUBMITTED, CANCELING or REFUSED → COLLECTED with the shard's final counts, usage,
        result parts and attempt log; the shard leaves the open index. Fenced to the batch
        and attempt (or the attempt and body) `shard` was read with, so a second checker, or
        a stale one, can never record an attempt twice."""
        return self._conditional(
            **self._shard_move(
                shard.job_id,
                shard.index,
                shard.state,
                ShardState.COLLECTED,
                fence=self._attempt_fence(shard),
                set_values=_outcome_values(outcome),
                remove=_OPEN_KEYS,
            )
        )

    def schedule_retry(self, shard: ShardRecord, outcome: Outcome, next_attempt: NextAttempt) -> bool:
        """SUBMITTED → PENDING for the shard's next attempt, with the finals so far; the job
        goes back to SUBMITTING so the checker creates the retry's batch. One transaction."""
        values = {
            **_outcome_values(outcome),
            "attempt": next_attempt.attempt,
            "key": next_attempt.key,
            "attempt_requests": next_attempt.requests,
            "size": next_attempt.size,
            "ids_digest": next_attempt.ids_digest,
            "creates_sent": 0,
        }
        # The retry body's own version; none known: the previous attempt's must not stay.
        stale: tuple[str, ...] = ("version_id",)
        if next_attempt.version_id is not None:
            values["version_id"] = next_attempt.version_id
            stale = ()
        update = self._shard_move(
            shard.job_id,
            shard.index,
            ShardState.SUBMITTED,
            ShardState.PENDING,
            fence=self._attempt_fence(shard),
            set_values=values,
            remove=(*_OPEN_KEYS, "batch_id", "sent_at", "overdue_at", "progress", "expires_at", *stale),
        )
        job = self._job_move(shard.job_id, (JobStatus.SUBMITTING, JobStatus.RUNNING), JobStatus.SUBMITTING)
        return self._transact([{"Update": update}, {"Update": job}], "retry not scheduled")


def _recorded_status(hold: bool) -> JobStatus:
    """The status a job takes as its shards are recorded."""
    return JobStatus.AWAITING_APPROVAL if hold else JobStatus.SUBMITTING
