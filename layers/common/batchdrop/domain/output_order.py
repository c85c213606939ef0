"""Records mode's outputs in input order, as pure decisions: which result parts hold the
outcomes of each shard the split made, how the rows of the requests sent merge with the
rejected records, and whether the rows written agree with the job's counts.

The split cuts shards in the file's order and keeps one rows file per shard (domain/rows.py),
so the rows files read in shard order give the sent records in input order. A shard whose
create body was refused may be halved into new shards with new indexes (services/bisect.py):
they have no rows file of their own, and their results are those of their parent's custom_ids,
so a shard's results are read from its own parts and those of every half made from it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from batchdrop.domain.records import ShardRecord
from batchdrop.domain.rows import RowRef


class OutputOrderError(ValueError):
    """The job's rows, rejected records or results do not give each record one row in
    order; the message names the file or shard and the reason."""


def shard_families(shards: Sequence[ShardRecord]) -> list[tuple[int, tuple[str, ...]]]:
    """(index, result keys) of each shard the split made, in index order, leaving out the
    halves a bisection made: each one's result keys are its own and those of every half made
    from it, at any depth."""
    by_index = {shard.index: shard for shard in shards}
    children: dict[int, list[int]] = {}
    for shard in shards:
        for entry in shard.attempts_log:
            children.setdefault(shard.index, []).extend(int(index) for index in entry.get("split_into") or ())
    halves = {index for made in children.values() for index in made}
    families: list[tuple[int, tuple[str, ...]]] = []
    for index in sorted(set(by_index) - halves):
        keys: list[str] = []
        todo = [index]
        while todo:
            member = by_index.get(todo.pop(0))
            if member is None:
                raise OutputOrderError(f"shard {index}: a half made from it has no shard item")
            keys.extend(member.result_keys)
            todo.extend(children.get(member.index, ()))
        families.append((index, tuple(keys)))
    return families


def merged_by_row[T](sent: Iterable[tuple[RowRef, T]], rejected: Iterable[RowRef]) -> Iterator[tuple[RowRef, T | None]]:
    """Every record once, by row number: the rows of the requests sent, each with its result
    (`sent`, in the rows files' order), and the rejected records (None as their result).
    Raises OutputOrderError when a row number repeats or goes back in either."""
    waiting = iter(rejected)
    pending = next(waiting, None)
    last = 0
    for ref, result in sent:
        while pending is not None and pending.row < ref.row:
            last = _next_row(last, pending, "errors/ (rejected records)")
            yield pending, None
            pending = next(waiting, None)
        last = _next_row(last, ref, "the rows files")
        yield ref, result
    while pending is not None:
        last = _next_row(last, pending, "errors/ (rejected records)")
        yield pending, None
        pending = next(waiting, None)


def _next_row(last: int, ref: RowRef, where: str) -> int:
    if ref.row <= last:
        raise OutputOrderError(f"{where}: row {ref.row} comes after row {last}; rows must grow through the file")
    return ref.row


def count_problem(statuses: Mapping[str, int], counts: Mapping[str, int], rejected: int) -> str | None:
    """Why the rows' statuses disagree with the job's counts (None when they agree): every
    outcome has its rows, `succeeded` counting both the valid and the invalid_output answers,
    and every rejected record its `rejected` row."""
    expected = {
        "succeeded": counts.get("succeeded", 0),
        "errored": counts.get("errored", 0),
        "expired": counts.get("expired", 0),
        "canceled": counts.get("canceled", 0),
        "rejected": rejected,
    }
    found = dict(statuses)
    found["succeeded"] = found.get("succeeded", 0) + found.pop("invalid_output", 0)
    wrong = [
        f"{status}: {found.get(status, 0)} rows for {number}"
        for status, number in expected.items()
        if found.get(status, 0) != number
    ]
    wrong += [f"{status}: {found[status]} rows, not a status" for status in found if status not in expected]
    return "; ".join(wrong) or None
