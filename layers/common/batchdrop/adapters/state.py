"""The state table: one item per job and one per shard (the provider batch that carries
it), under the job's partition key. Every transition is a conditional write, so a replayed
event or a second checker can never move an item twice. Shards with an open batch, and
only those, carry the keys of the sparse `open-batches` index; so do unfinished jobs (sort
key `JOB#…`, beside `SHARD#…`), so one query per tick finds all the checker has to do."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from batchdrop.observability import logger

OPEN_INDEX = "open-batches"
OPEN = "OPEN"


def _job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def _shard_sk(index: int) -> str:
    return f"SHARD#{index:05d}"


def _guard_pk(batch_id: str) -> str:
    return f"PBATCH#{batch_id}"


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


@dataclass(frozen=True)
class ShardPlan:
    index: int
    key: str
    requests: int
    size: int
    ids_digest: str = ""  # IdsDigest of the shard's custom_ids


class StateTable:
    def __init__(self, table_name: str, resource: Any = None) -> None:
        self._name = table_name
        self._resource = resource
        self._table: Any = None

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
        try:
            if "UpdateExpression" in kwargs:
                self.table.update_item(**kwargs)
            else:
                self.table.put_item(**kwargs)
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- jobs -------------------------------------------------------------------------

    def create_job(self, job_id: str, source: Mapping[str, str], created_at: str) -> bool:
        """Record a new job; False when the job exists already (a duplicate event)."""
        item = {
            "PK": _job_pk(job_id),
            "SK": "JOB",
            "job_id": job_id,
            "status": "RECEIVED",
            "bucket": source["bucket"],
            "key": source["key"],
            "version_id": source["version_id"],
            "created_at": created_at,
        }
        return self._conditional(Item=item, ConditionExpression="attribute_not_exists(PK)")

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"PK": _job_pk(job_id), "SK": "JOB"}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def job_items(self, job_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The job and its shards, read consistently."""
        job, shards = None, []
        for item in self._query(KeyConditionExpression="PK = :pk", ExpressionAttributeValues={":pk": _job_pk(job_id)}):
            if item["SK"] == "JOB":
                job = item
            else:
                shards.append(item)
        return job, sorted(shards, key=lambda s: s["index"])

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        consistent = "IndexName" not in kwargs
        while True:
            page = self.table.query(ConsistentRead=consistent, **kwargs)
            yield from (_plain(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def existing_jobs(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these jobs exist: BatchGetItem, 100 keys a request."""
        wanted = list(dict.fromkeys(job_ids))
        found: set[str] = set()
        resource = self.table.meta.client
        for start in range(0, len(wanted), 100):
            keys = [{"PK": _job_pk(job_id), "SK": "JOB"} for job_id in wanted[start : start + 100]]
            request: dict[str, Any] = {self._name: {"Keys": keys, "ProjectionExpression": "job_id"}}
            while request:
                answer = resource.batch_get_item(RequestItems=request)
                found.update(str(item["job_id"]) for item in answer["Responses"].get(self._name, []))
                request = answer.get("UnprocessedKeys") or {}
        return found

    def list_jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": "SK = :job", "ExpressionAttributeValues": {":job": "JOB"}}
        while True:
            page = self.table.scan(**kwargs)
            items.extend(_plain(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return sorted(items, key=lambda job: job["created_at"], reverse=True)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record_shards(
        self, job_id: str, shards: Sequence[ShardPlan], *, requested: int, rejected: int, max_attempts: int = 3
    ) -> bool:
        """RECEIVED → SUBMITTING, with the job's shards as PENDING items, all at once.
        (The resource's client serialises plain values itself, as the table does.)"""
        client = self.table.meta.client
        job_update = {
            "Update": {
                "TableName": self._name,
                "Key": {"PK": _job_pk(job_id), "SK": "JOB"},
                "UpdateExpression": "SET #s = :submitting, requested = :requested, rejected = :rejected, shards = :n,"
                " GSI1PK = :open, GSI1SK = :order",
                "ConditionExpression": "#s = :received",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":submitting": "SUBMITTING",
                    ":received": "RECEIVED",
                    ":requested": requested,
                    ":rejected": rejected,
                    ":n": len(shards),
                    ":open": OPEN,
                    ":order": f"JOB#{job_id}",
                },
            }
        }
        puts = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": self._shard_item(job_id, shard, max_attempts),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
            for shard in shards
        ]
        try:
            # One transaction holds 100 actions: the job update and up to 99 shards (9.9M requests).
            client.transact_write_items(TransactItems=[job_update, *puts[:99]])
            for start in range(99, len(puts), 100):
                client.transact_write_items(TransactItems=puts[start : start + 100])
        except client.exceptions.TransactionCanceledException as exc:
            _raise_unless_condition_lost(exc)
            logger.info("shards not recorded", extra={"reasons": exc.response.get("CancellationReasons")})
            return False
        return True

    @staticmethod
    def _shard_item(job_id: str, shard: ShardPlan, max_attempts: int) -> dict[str, Any]:
        return {
            "PK": _job_pk(job_id),
            "SK": _shard_sk(shard.index),
            "job_id": job_id,
            "index": shard.index,
            "state": "PENDING",
            "key": shard.key,
            "requests": shard.requests,  # of the current attempt's batch
            "shard_requests": shard.requests,  # of the whole shard, whatever the attempt
            "size": shard.size,
            "ids_digest": shard.ids_digest,
            "attempt": 0,  # creates sent for the current attempt's batch
            "round": 1,  # the attempt: 1, then 2.. for the retries of transient failures
            "max_attempts": max_attempts,  # fixed per shard, so re-running a collection decides alike
        }

    def add_missing_shard(self, job_id: str, shard: ShardPlan, max_attempts: int) -> bool:
        """Record one shard a crash left out of a recording that spanned several
        transactions (more than 99 shards); False if it is there already."""
        item = self._shard_item(job_id, shard, max_attempts)
        return self._conditional(Item=item, ConditionExpression="attribute_not_exists(PK)")

    def fail_job(self, job_id: str, reason: str, *, requested: int, rejected: int, manifest_key: str) -> bool:
        return self._conditional(
            Key={"PK": _job_pk(job_id), "SK": "JOB"},
            UpdateExpression="SET #s = :failed, reason = :reason, requested = :requested, rejected = :rejected,"
            " manifest_key = :manifest REMOVE GSI1PK, GSI1SK",
            ConditionExpression="#s IN (:received, :submitting)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":failed": "FAILED",
                ":reason": reason,
                ":requested": requested,
                ":rejected": rejected,
                ":manifest": manifest_key,
                ":received": "RECEIVED",
                ":submitting": "SUBMITTING",
            },
        )

    def mark_job_running(self, job_id: str) -> bool:
        return self._set_job_status(job_id, "SUBMITTING", "RUNNING")

    def finish_job(self, job_id: str, status: str, manifest_key: str, completed_at: str) -> bool:
        return self._conditional(
            Key={"PK": _job_pk(job_id), "SK": "JOB"},
            UpdateExpression="SET #s = :status, manifest_key = :manifest, completed_at = :at REMOVE GSI1PK, GSI1SK",
            ConditionExpression="#s IN (:submitting, :running)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":status": status,
                ":manifest": manifest_key,
                ":at": completed_at,
                ":submitting": "SUBMITTING",
                ":running": "RUNNING",
            },
        )

    def request_cancel(self, job_id: str, requested_at: str) -> dict[str, Any] | None:
        """Mark an unfinished job as to be canceled (once: a repeated request keeps the first
        time); the job as it is now, or None when there is no such job."""
        client = self.table.meta.client
        try:
            item = self.table.update_item(
                Key={"PK": _job_pk(job_id), "SK": "JOB"},
                UpdateExpression="SET cancel_requested_at = if_not_exists(cancel_requested_at, :at)",
                ConditionExpression="attribute_exists(PK) AND #s IN (:received, :submitting, :running)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":at": requested_at,
                    ":received": "RECEIVED",
                    ":submitting": "SUBMITTING",
                    ":running": "RUNNING",
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except client.exceptions.ConditionalCheckFailedException:
            return self.get_job(job_id)
        return _plain(item)

    def _set_job_status(self, job_id: str, expected: str, status: str) -> bool:
        return self._conditional(
            Key={"PK": _job_pk(job_id), "SK": "JOB"},
            UpdateExpression="SET #s = :status",
            ConditionExpression="#s = :expected",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":status": status, ":expected": expected},
        )

    # --- shards -----------------------------------------------------------------------

    def acquire_create_lease(self, owner: str, now: str, until: str) -> bool:
        """Take the workspace's one create lease if it is free: at most one create is
        unresolved at a time, so an unknown outcome matches one listed batch without
        ambiguity. A lease never lapses on time alone: it is released by its holder, by the
        checker once it has settled the holder's create, or freed as stale once the holder's
        shard shows it died (ShardCreator.free_stale_lease). `until` is informative."""
        return self._conditional(
            Item={"PK": "CTRL", "SK": "CREATE_LEASE", "owner": owner, "until": until, "taken_at": now},
            ConditionExpression="attribute_not_exists(PK) OR #owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":owner": owner},
        )

    def get_create_lease(self) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"PK": "CTRL", "SK": "CREATE_LEASE"}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def release_create_lease(self, owner: str) -> bool:
        """Give the lease back, if this owner still holds it."""
        return self._release_lease("#owner = :owner", owner)

    def _release_lease(self, condition: str, owner: str) -> bool:
        client = self.table.meta.client
        try:
            self.table.delete_item(
                Key={"PK": "CTRL", "SK": "CREATE_LEASE"},
                ConditionExpression=condition,
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": owner},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def begin_submit(self, job_id: str, index: int, sent_at: str, lease_owner: str) -> bool:
        """PENDING → SUBMITTING: the intent, recorded before the create is sent, in one
        transaction with two checks: the job has no cancel request, and `lease_owner` still
        holds the create lease. False when any of the three does not hold."""
        client = self.table.meta.client
        shard = {
            "Update": {
                "TableName": self._name,
                "Key": {"PK": _job_pk(job_id), "SK": _shard_sk(index)},
                "UpdateExpression": "SET #s = :new, sent_at = :at, attempt = attempt + :one, lease_owner = :owner",
                "ConditionExpression": "#s = :pending",
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": {
                    ":new": "SUBMITTING",
                    ":pending": "PENDING",
                    ":at": sent_at,
                    ":one": 1,
                    ":owner": lease_owner,
                },
            }
        }
        not_canceled = {
            "ConditionCheck": {
                "TableName": self._name,
                "Key": {"PK": _job_pk(job_id), "SK": "JOB"},
                "ConditionExpression": "attribute_not_exists(cancel_requested_at)",
            }
        }
        lease_held = {
            "ConditionCheck": {
                "TableName": self._name,
                "Key": {"PK": "CTRL", "SK": "CREATE_LEASE"},
                "ConditionExpression": "#owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {":owner": lease_owner},
            }
        }
        try:
            client.transact_write_items(TransactItems=[shard, not_canceled, lease_held])
        except client.exceptions.TransactionCanceledException as exc:
            _raise_unless_condition_lost(exc)
            logger.info("intent not recorded", extra={"reasons": exc.response.get("CancellationReasons")})
            return False
        return True

    def mark_submitted(self, job_id: str, index: int, batch_id: str, sent_at: str | None = None) -> bool:
        """SUBMITTING → SUBMITTED with the provider's batch id; the shard joins the open index.
        One transaction also writes the batch's `PBATCH#<id>` owner guard, so a batch can
        never belong to two shards. `sent_at` fences the write to the intent that sent it."""
        return self._attach(job_id, index, batch_id, expected=("SUBMITTING",), sent_at=sent_at)

    def adopt_batch(self, job_id: str, index: int, batch_id: str, sent_at: str) -> bool:
        """UNKNOWN or SUBMITTING → SUBMITTED with a batch found by reconciliation, for the
        intent recorded at `sent_at` only; False if the shard moved or the batch is owned."""
        return self._attach(job_id, index, batch_id, expected=("UNKNOWN", "SUBMITTING"), sent_at=sent_at)

    def _attach(self, job_id: str, index: int, batch_id: str, *, expected: Sequence[str], sent_at: str | None) -> bool:
        client = self.table.meta.client
        states = {f":st{i}": state for i, state in enumerate(expected)}
        condition = f"#s IN ({', '.join(states)})"
        values: dict[str, Any] = {
            ":new": "SUBMITTED",
            ":batch": batch_id,
            ":open": OPEN,
            ":order": f"SHARD#{job_id}#{index:05d}",
            **states,
        }
        if sent_at is not None:
            condition += " AND sent_at = :sent"
            values[":sent"] = sent_at
        shard_update = {
            "Update": {
                "TableName": self._name,
                "Key": {"PK": _job_pk(job_id), "SK": _shard_sk(index)},
                "UpdateExpression": "SET #s = :new, batch_id = :batch, GSI1PK = :open, GSI1SK = :order",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#s": "state"},
                "ExpressionAttributeValues": values,
            }
        }
        guard = {
            "Put": {
                "TableName": self._name,
                "Item": {"PK": _guard_pk(batch_id), "SK": "OWNER", "job_id": job_id, "index": index},
                "ConditionExpression": "attribute_not_exists(PK)",
            }
        }
        try:
            client.transact_write_items(TransactItems=[shard_update, guard])
        except client.exceptions.TransactionCanceledException as exc:
            _raise_unless_condition_lost(exc)
            logger.info("batch not attached", extra={"reasons": exc.response.get("CancellationReasons")})
            return False
        return True

    def get_shard(self, job_id: str, index: int) -> dict[str, Any] | None:
        item = self.table.get_item(Key={"PK": _job_pk(job_id), "SK": _shard_sk(index)}, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def owned_batches(self, batch_ids: Iterable[str]) -> set[str]:
        """Which of these provider batches already belong to a shard (have a guard)."""
        owned = set()
        for batch_id in batch_ids:
            key = {"PK": _guard_pk(batch_id), "SK": "OWNER"}
            if "Item" in self.table.get_item(Key=key, ConsistentRead=True):
                owned.add(batch_id)
        return owned

    def resubmit_unsettled(self, job_id: str, index: int, expected: str, sent_at: str, reason: str) -> bool:
        """UNKNOWN (or a SUBMITTING whose lease ran out) → PENDING once reconciliation showed
        its create made no batch; the attempt count is kept. Fenced to that intent."""
        return self._conditional(
            Key={"PK": _job_pk(job_id), "SK": _shard_sk(index)},
            UpdateExpression="SET #s = :new, reason = :reason",
            ConditionExpression="#s = :expected AND sent_at = :sent",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":new": "PENDING", ":expected": expected, ":sent": sent_at, ":reason": reason},
        )

    def mark_unknown(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        """SUBMITTING → UNKNOWN: the create may have created a batch; never resend blindly.
        Fenced to the intent recorded at `sent_at`."""
        fence = {"sent_at": sent_at}
        return self._settle(job_id, index, "SUBMITTING", "UNKNOWN", fence, {"reason": reason}, remove="overdue_at")

    def release_submit(self, job_id: str, index: int, reason: str, sent_at: str) -> bool:
        """SUBMITTING → PENDING after a create the provider refused (no batch exists)."""
        fence = {"sent_at": sent_at}
        return self._settle(job_id, index, "SUBMITTING", "PENDING", fence, {"reason": reason}, remove="overdue_at")

    def claim_unsent(
        self, job_id: str, index: int, expected: str, new: str, fence: Mapping[str, Any], reason: str
    ) -> bool:
        """A shard whose requests will never be sent (a canceled job: PENDING → CANCELING; a
        body refused for good: SUBMITTING → REFUSED) is claimed before its results are
        written, so no create can take it any more; `fence` pins the intent or attempt."""
        return self._settle(job_id, index, expected, new, fence, {"reason": reason}, remove="overdue_at")

    def reopen_job(self, job_id: str) -> bool:
        """RUNNING → SUBMITTING for a job that has a shard without its batch again."""
        return self._set_job_status(job_id, "RUNNING", "SUBMITTING")

    def open_items(self) -> Iterator[dict[str, Any]]:
        """Unfinished jobs and shards whose batch is open: one query when idle, then one
        item per open job or batch, never per request."""
        return self._query(
            IndexName=OPEN_INDEX,
            KeyConditionExpression="GSI1PK = :open",
            ExpressionAttributeValues={":open": OPEN},
        )

    def mark_collected(
        self,
        job_id: str,
        index: int,
        *,
        expected: str = "SUBMITTED",
        fence: Mapping[str, Any],
        outcome: Mapping[str, Any],
    ) -> bool:
        """`expected` → COLLECTED with the shard's final counts, usage, result parts and
        attempt log (`outcome`); the shard leaves the open index. `fence` holds attribute
        values the item must still have (the batch id, the attempt), so a second checker, or a
        stale one, can never record an attempt twice."""
        return self._settle(job_id, index, expected, "COLLECTED", fence, outcome, remove="GSI1PK, GSI1SK")

    def flag_overdue(self, job_id: str, index: int, batch_id: str, at: str) -> bool:
        """Note on a shard that its batch ran past its expiry and was canceled by us."""
        return self._conditional(
            Key={"PK": _job_pk(job_id), "SK": _shard_sk(index)},
            UpdateExpression="SET overdue_at = if_not_exists(overdue_at, :at)",
            ConditionExpression="#s = :submitted AND batch_id = :batch",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":at": at, ":submitted": "SUBMITTED", ":batch": batch_id},
        )

    def schedule_retry(
        self,
        job_id: str,
        index: int,
        *,
        fence: Mapping[str, Any],
        outcome: Mapping[str, Any],
        next_round: Mapping[str, Any],
    ) -> bool:
        """SUBMITTED → PENDING for the shard's next attempt (`next_round`: its round, body key
        and request count), with the finals so far (`outcome`); the job goes back to
        SUBMITTING so the checker creates the retry's batch. One transaction."""
        client = self.table.meta.client
        shard = self._settle_update(
            job_id,
            index,
            "SUBMITTED",
            "PENDING",
            fence,
            {**outcome, **next_round, "attempt": 0},
            remove="GSI1PK, GSI1SK, batch_id, sent_at, overdue_at",
        )
        job = {
            "Update": {
                "TableName": self._name,
                "Key": {"PK": _job_pk(job_id), "SK": "JOB"},
                "UpdateExpression": "SET #s = :submitting",
                "ConditionExpression": "#s IN (:submitting, :running)",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":submitting": "SUBMITTING", ":running": "RUNNING"},
            }
        }
        try:
            client.transact_write_items(TransactItems=[{"Update": {"TableName": self._name, **shard}}, job])
        except client.exceptions.TransactionCanceledException as exc:
            _raise_unless_condition_lost(exc)
            return False
        return True

    def _settle(
        self,
        job_id: str,
        index: int,
        expected: str,
        new: str,
        fence: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        remove: str,
    ) -> bool:
        return self._conditional(**self._settle_update(job_id, index, expected, new, fence, values, remove=remove))

    def _settle_update(
        self,
        job_id: str,
        index: int,
        expected: str,
        new: str,
        fence: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        remove: str,
    ) -> dict[str, Any]:
        """The UpdateItem arguments of a fenced shard transition that sets `values`."""
        names = {"#s": "state", **{f"#f{i}": name for i, name in enumerate(fence)}}
        names.update({f"#v{i}": name for i, name in enumerate(values)})
        condition = " AND ".join(["#s = :expected", *(f"#f{i} = :f{i}" for i in range(len(fence)))])
        assign = ", ".join(["#s = :new", *(f"#v{i} = :v{i}" for i in range(len(values)))])
        return {
            "Key": {"PK": _job_pk(job_id), "SK": _shard_sk(index)},
            "UpdateExpression": f"SET {assign} REMOVE {remove}",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {
                ":new": new,
                ":expected": expected,
                **{f":f{i}": value for i, value in enumerate(fence.values())},
                **{f":v{i}": value for i, value in enumerate(values.values())},
            },
        }
