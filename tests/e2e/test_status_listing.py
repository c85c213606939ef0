"""`batchdrop status` as a user lists jobs: the columns, newest first, --limit, the filters, and
the `--json` schema of one job and of the list, against one local stack holding three jobs:
two finished and one that stays open (the provider's queue is kept full)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchdrop.adapters.state import StateTable
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import source_env_file

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "reviews.jsonl"
SAMPLE_REQUESTS = 12

# This module's stack (tests/e2e/conftest.py), and its runner, left running in the background
# for the whole module as `batchdrop local up` runs it
STACK = {"latency": 0.5, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.5, "poll_seconds": 0.1}

CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
AGE = re.compile(r"\d+[smhd]")
COST = re.compile(r"\$\d+\.\d{6}")


def _wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def jobs(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The shell of a user who sourced .batchdrop/local.env, after three submissions, oldest
    first: `a` and `b` finished COMPLETED, `open` left SUBMITTING (its create is refused while
    the provider's queue is full, which it stays until the module ends)."""
    env_file = tmp_path_factory.mktemp("env") / "local.env"
    stack.write_env_file(env_file)
    control = stack.emulator_control()
    with LocalRunner(stack, **RUNNER), pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
        ids = {}
        for name, key in (("a", "inbox/listing/a.jsonl"), ("b", "inbox/listing/b.jsonl")):
            args = ["submit", str(SAMPLE), "--key", key, "--wait", "--timeout", "60"]
            ids[name] = _job_id_of(args)
        control.set_faults({"queue_limit": 0})
        try:
            ids["open"] = _job_id_of(["submit", str(SAMPLE), "--key", "inbox/open/c.jsonl"])
            state = StateTable(stack.table_name)
            _wait_for(lambda: getattr(state.get_job(ids["open"]), "status", None) == "SUBMITTING")
            yield ids
        finally:
            control.set_faults({})


def _job_id_of(args: list[str]) -> str:
    """Runs `batchdrop submit …` and returns the job id it prints (capsys is not available to a
    module fixture, so its output goes to a buffer of its own)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue().split("job ", 1)[1].split(":", 1)[0]


def _rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[list[str]]:
    """`batchdrop status ARGS`' rows below the header, split into columns; asserts exit 0."""
    capsys.readouterr()
    assert main(["status", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["job", "created", "age", "status", "requests", "cost", "source"]
    return [line.split() for line in lines[1:] if " more job" not in line and not line.startswith("spend of ")]


def _ids(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    return [row[0] for row in _rows(capsys, *args)]


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(["status", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- the listing


def test_lists_jobs_newest_first_with_their_columns(jobs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    rows = {row[0]: row for row in _rows(capsys)}

    assert list(rows) == [jobs["open"], jobs["b"], jobs["a"]]
    for row in rows.values():
        assert len(row) == 7
        assert CREATED.fullmatch(row[1]), row
        assert AGE.fullmatch(row[2]), row
    # A finished job: every request done, its cost from the manifest
    _, _, _, status, requests, cost, source = rows[jobs["a"]]
    assert (status, requests, source) == ("COMPLETED", f"{SAMPLE_REQUESTS}/{SAMPLE_REQUESTS}", "inbox/listing/a.jsonl")
    assert COST.fullmatch(cost)
    assert cost != "$0.000000"
    # An open job: nothing done yet, no cost yet
    assert rows[jobs["open"]][3:] == ["SUBMITTING", f"0/{SAMPLE_REQUESTS}", "-", "inbox/open/c.jsonl"]


def test_the_list_ends_with_the_days_spend_its_open_jobs_at_most_its_ended_ones_at_cost(
    jobs: dict[str, str], stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = stack.client("s3")

    def read(key: str) -> Any:
        return json.loads(s3.get_object(Bucket=stack.bucket_name, Key=key)["Body"].read())

    ended = sum(Decimal(read(f"results/{jobs[name]}/manifest.json")["cost"]["batch_usd"]) for name in ("a", "b"))
    most = Decimal(read(f"work/{jobs['open']}/estimate.json")["cost_usd"]["batch_max"])
    capsys.readouterr()
    assert main(["status"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert last == (
        f"spend of {today} (UTC): ${ended + most} (open jobs at their estimate's most, ended ones at their cost)"
    )


def test_limit_shows_the_newest_and_says_how_many_more(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == [jobs["open"], jobs["b"]]
    assert lines[3] == "1 more job (add `--limit 0` to list them all)"
    assert lines[4].startswith("spend of ")

    assert main(["status", "--limit", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert "more" not in lines[-2]


def test_the_default_limit_is_20(jobs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 3 + 1  # the header, the jobs, the day's spend
    assert not any("more" in line for line in lines)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--status", "COMPLETED"], ["b", "a"]),
        (["--status", "submitting"], ["open"]),
        (["--status", "running,submitting"], ["open"]),
        (["--status", "FAILED", "--status", "COMPLETED"], ["b", "a"]),
        (["--key", "inbox/listing/"], ["b", "a"]),
        (["--key", "inbox/open/"], ["open"]),
        (["--key", "inbox/listing/a"], ["a"]),
        (["--since", "1h"], ["open", "b", "a"]),
        (["--status", "COMPLETED", "--key", "inbox/listing/b"], ["b"]),
    ],
)
def test_filters(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str], filters: list[str], expected: list[str]
) -> None:
    assert _ids(capsys, *filters) == [jobs[name] for name in expected]


def test_since_an_iso_time_keeps_the_jobs_created_then_or_later(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    created_b = _json(capsys, jobs["b"])["timings"]["created_at"]

    assert _ids(capsys, "--since", created_b) == [jobs["open"], jobs["b"]]


def test_a_filter_that_matches_nothing_says_so(jobs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == "no jobs match these filters\n"
    assert _json(capsys, "--key", "inbox/nothing-here/") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "DONE"], "--status DONE: a status is one of"),
        (["--status", "COMPLETED,nope"], "--status NOPE: a status is one of"),
        (["--since", "yesterday"], "--since 'yesterday': give a duration"),
        (["--limit", "-1"], "--limit"),
    ],
)
def test_a_bad_filter_is_a_usage_error(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", *args])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_no_jobs_yet(jobs: dict[str, str], stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a table of the stack's shape that holds no job
    dynamodb = stack.client("dynamodb")
    shape = dynamodb.describe_table(TableName=stack.table_name)["Table"]
    empty = f"{stack.table_name}-empty"
    dynamodb.create_table(
        TableName=empty,
        KeySchema=shape["KeySchema"],
        AttributeDefinitions=[a for a in shape["AttributeDefinitions"] if a["AttributeName"] in ("PK", "SK")],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        assert main(["status", "--table", empty]) == 0
        assert capsys.readouterr().out == "no jobs yet\n"
        assert main(["status", "--table", empty, "--status", "RUNNING"]) == 0
        assert capsys.readouterr().out == "no jobs yet\n"
        assert _json(capsys, "--table", empty) == []
    finally:
        dynamodb.delete_table(TableName=empty)


def test_unknown_job_is_still_exit_2_with_the_same_message(
    jobs: dict[str, str], stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = "j" + "0" * 24
    assert main(["status", unknown, "--json"]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: no job {unknown} in table {stack.table_name} (`batchdrop status` lists the jobs)\n"
    )


# ---------------------------------------------------------------- the JSON schema

JOB_SCHEMA: dict[str, Any] = {
    "schema": int,
    "job_id": str,
    "status": str,
    "source": {"bucket": str, "key": str, "version_id": str},
    "requests": {"total": (int, None), "done": int, "rejected": (int, None)},
    "counts": {"succeeded": int, "errored": int, "canceled": int, "expired": int},
    "timings": {"created_at": str, "completed_at": (str, None)},
    "reason": (str, None),
    "manifest_key": (str, None),
    "result_keys": list,
    "cost": (
        {
            "batch_usd": str,
            "standard_usd": str,
            "saved_by_caching_usd": str,
            "estimated_usd": str,
            "estimated_max_usd": str,
        },
        None,
    ),
    # added in schema 1: what the open batches have processed, how many are open, the nearest expiry
    "progress": {"in_flight": int, "batches_open": int, "expires_at": (str, None)},
}
BATCH_SCHEMA: dict[str, Any] = {
    "shard": int,
    "state": str,
    "batch_id": (str, None),
    "attempt": int,
    "requests": int,
    "counts": {"succeeded": int, "errored": int, "canceled": int, "expired": int},
    # added in schema 1: an open batch's request counts as the checker last saw them, and its expiry
    "progress": ({"processing": int, "succeeded": int, "errored": int, "canceled": int, "expired": int}, None),
    "expires_at": (str, None),
}


def _check(value: Any, schema: Any, where: str = "$") -> None:
    """`value` has exactly the keys and types `schema` gives: a dict is an object with those keys,
    a tuple lists the allowed shapes (None: null), a type is the value's type."""
    if isinstance(schema, tuple):
        if value is None and None in schema:
            return
        schema = next(shape for shape in schema if shape is not None)
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) == set(schema), f"{where}: keys {sorted(value)} != {sorted(schema)}"
        for name, shape in schema.items():
            _check(value[name], shape, f"{where}.{name}")
    else:
        assert isinstance(value, schema), f"{where}: {value!r} is not {schema}"
        assert not isinstance(value, bool), f"{where}: {value!r} is a boolean"


def test_json_of_an_open_job_and_a_finished_one_share_one_schema(
    jobs: dict[str, str], stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    finished = _json(capsys, jobs["a"])
    open_job = _json(capsys, jobs["open"])

    for view in (finished, open_job):
        batches = view.pop("batches")
        _check(view, JOB_SCHEMA)
        assert view["schema"] == 1
        assert batches
        for batch in batches:
            _check(batch, BATCH_SCHEMA)

    assert finished["status"] == "COMPLETED"
    assert finished["source"] == {
        "bucket": stack.bucket_name,
        "key": "inbox/listing/a.jsonl",
        "version_id": finished["source"]["version_id"],
    }
    assert finished["requests"] == {"total": SAMPLE_REQUESTS, "done": SAMPLE_REQUESTS, "rejected": 0}
    assert finished["counts"] == {"succeeded": SAMPLE_REQUESTS, "errored": 0, "canceled": 0, "expired": 0}
    assert finished["timings"]["completed_at"] >= finished["timings"]["created_at"]
    assert finished["manifest_key"] == f"results/{jobs['a']}/manifest.json"
    assert finished["result_keys"] == [f"results/{jobs['a']}/results-00000.jsonl"]
    assert finished["cost"] is not None
    assert float(finished["cost"]["batch_usd"]) > 0
    manifest = json.loads(
        stack.client("s3").get_object(Bucket=stack.bucket_name, Key=finished["manifest_key"])["Body"].read()
    )
    assert finished["cost"] == {
        **{name: manifest["cost"][name] for name in ("batch_usd", "standard_usd", "saved_by_caching_usd")},
        "estimated_usd": manifest["estimate"]["cost_usd"]["batch_cached_expected"],
        "estimated_max_usd": manifest["estimate"]["cost_usd"]["batch_max"],
    }

    assert open_job["status"] == "SUBMITTING"
    assert open_job["requests"] == {"total": SAMPLE_REQUESTS, "done": 0, "rejected": 0}
    assert open_job["timings"]["completed_at"] is None
    assert (open_job["manifest_key"], open_job["result_keys"], open_job["cost"]) == (None, [], None)


def test_status_of_a_finished_job_shows_its_cost_what_caching_saved_and_its_estimate(
    jobs: dict[str, str], stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_key = f"results/{jobs['a']}/manifest.json"
    manifest = json.loads(stack.client("s3").get_object(Bucket=stack.bucket_name, Key=manifest_key)["Body"].read())
    cost, estimated = manifest["cost"], manifest["estimate"]["cost_usd"]
    capsys.readouterr()

    assert main(["status", jobs["a"]]) == 0

    lines = capsys.readouterr().out.splitlines()
    # The emulator's requests use no cache: caching saved exactly nothing
    assert cost["saved_by_caching_usd"] == "0.000000"
    # ...and the estimate made before the job was sent, expected and at most
    assert (
        f"  cost ${cost['batch_usd']} at the batch price (${cost['standard_usd']} standard; caching saved $0.000000;"
        f" estimated ${estimated['batch_cached_expected']}, at most ${estimated['batch_max']})"
    ) in lines


def test_json_of_one_job_lists_its_batches(jobs: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    finished = _json(capsys, jobs["a"])["batches"]
    open_batches = _json(capsys, jobs["open"])["batches"]

    assert [(b["shard"], b["state"], b["attempt"], b["requests"]) for b in finished] == [
        (0, "COLLECTED", 1, SAMPLE_REQUESTS)
    ]
    assert finished[0]["batch_id"].startswith("msgbatch_")
    assert finished[0]["counts"]["succeeded"] == SAMPLE_REQUESTS
    # Its one create refused while the queue is full: back to PENDING, or being sent again
    assert [b["batch_id"] for b in open_batches] == [None]
    assert open_batches[0]["state"] in ("PENDING", "SUBMITTING")


def test_json_of_the_list_is_the_same_objects_without_batches(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    listing = _json(capsys)

    assert [view["job_id"] for view in listing] == [jobs["open"], jobs["b"], jobs["a"]]
    for view in listing:
        _check(view, JOB_SCHEMA)
    detail = _json(capsys, jobs["a"])
    del detail["batches"]
    assert listing[2] == detail


def test_json_of_the_list_keeps_the_limit_and_says_so_on_stderr(
    jobs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["status", "--json", "--limit", "1"]) == 0
    captured = capsys.readouterr()

    assert [view["job_id"] for view in json.loads(captured.out)] == [jobs["open"]]
    assert captured.err == "batchdrop: 2 more jobs (add `--limit 0` to list them all)\n"
