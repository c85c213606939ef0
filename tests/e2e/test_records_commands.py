"""Records mode's commands against the local stack, as a user types them after loading its env
file: `batchdrop pipeline put/list/show`, and `batchdrop results JOB --csv/--jsonl/--show`,
with the Python client they are built on.

The functions that render records and write a job's outputs.csv and outputs.jsonl are being
built beside these commands, so the records-mode job here is made by hand: a native job runs
through the stack to COMPLETED, then the test puts an outputs.csv and an outputs.jsonl (written
with the layer's own outputs functions) and a manifest naming them under "outputs" in the
stack's bucket, as the finished function will. Another native job keeps its manifest as the
stack wrote it, and a third job is recorded but never run, so it stays RECEIVED."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchdrop.adapters.state import StateTable
from batchdrop.domain.outputs import csv_line, header, jsonl_line
from batchdrop.domain.pipelines import parse_pipeline
from batchdrop.domain.records import SourceRef
from batchdrop_client import Batchdrop, NoOutputs, NotFinished, PipelineConflict, PipelineInvalid
from batchdrop_local.cli import main
from batchdrop_local.runner import LocalRunner
from batchdrop_local.stack import LocalStack
from tests.e2e.support import read_manifest, run_to_the_end, source_env_file, upload

pytestmark = pytest.mark.e2e

# This module's stack (tests/e2e/conftest.py), and the runner its jobs fixture drives
STACK = {"latency": 0.2, "parameters": {"LogLevel": "WARNING"}}
RUNNER = {"tick_seconds": 0.2, "poll_seconds": 0.05}

PIPELINE_YAML = """\
# Sentiment of product reviews
model: claude-haiku-4-5
max_tokens: 200
prompt: "Review of {{product}}: {{review}}"
id_field: review_id
keep_fields: [product]
output:
  schema:
    type: object
    properties:
      sentiment: {type: string, enum: [positive, negative, mixed]}
      reason: {type: string}
    required: [sentiment, reason]
"""
# Long, and holding a line separator (U+2028) a CSV leaves unquoted, which must not split its row
LONG_REASON = "The reviewer praises the motor\u2028but complains at length about the noise. " * 3
ROWS: list[dict[str, Any]] = [
    {
        "id": "r1",
        "product": "blender",
        "status": "succeeded",
        "sentiment": "mixed",
        "reason": LONG_REASON,
        "raw": None,
        "stop_reason": "end_turn",
        "input_tokens": 120,
        "output_tokens": 31,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "error": None,
    },
    {
        "id": "r2",
        "product": "toaster, 2-slot",
        "status": "rejected",
        "sentiment": None,
        "reason": None,
        "raw": None,
        "stop_reason": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None,
        "error": 'the record has no field "review", which the prompt uses',
    },
]
UNRUN_JOB = "j" + "b" * 24


@pytest.fixture(scope="module")
def jobs(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Three jobs in the stack: `native` and `records` COMPLETED (the latter given outputs by
    hand, see the module's docstring), and `unrun`, recorded and left RECEIVED."""
    tmp = tmp_path_factory.mktemp("records-jobs")
    env_file = stack.write_env_file(tmp / "local.env")
    with pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
        runner = LocalRunner(stack, **RUNNER)
        ids = {"native": upload(stack, tmp, "inbox/native.jsonl", 3), "records": upload(stack, tmp, "inbox/r.jsonl", 2)}
        for job_id in ids.values():
            run_to_the_end(stack, runner, job_id)
        _give_outputs(stack, ids["records"])
        source = SourceRef(stack.bucket_name, "inbox/reviews/later.csv", "v-unrun")
        assert StateTable(stack.table_name).create_job(UNRUN_JOB, source, datetime.now(UTC).isoformat())
        ids["unrun"] = UNRUN_JOB
        yield ids


def _give_outputs(stack: LocalStack, job_id: str) -> None:
    """What the records-mode functions will write for a job: its two outputs files, and its
    manifest naming them."""
    s3, bucket = stack.client("s3"), stack.bucket_name
    columns = header(parse_pipeline("reviews", PIPELINE_YAML, syntax="yaml"))
    assert columns == list(ROWS[0])
    csv_body = csv_line(columns) + b"".join(csv_line(row) for row in ROWS)
    jsonl_body = b"".join(jsonl_line(row) for row in ROWS)
    keys = {"csv": f"results/{job_id}/outputs.csv", "jsonl": f"results/{job_id}/outputs.jsonl"}
    s3.put_object(Bucket=bucket, Key=keys["csv"], Body=csv_body)
    s3.put_object(Bucket=bucket, Key=keys["jsonl"], Body=jsonl_body)
    manifest = {**read_manifest(stack, job_id), "outputs": keys}
    s3.put_object(Bucket=bucket, Key=f"results/{job_id}/manifest.json", Body=json.dumps(manifest).encode())


@pytest.fixture
def user_env(stack: LocalStack, jobs: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The shell of a user who loaded the env file, in a directory of this test's own."""
    env_file = stack.write_env_file(tmp_path / "local.env")
    with pytest.MonkeyPatch.context() as env:
        source_env_file(env, env_file)
        env.chdir(tmp_path)
        yield jobs


def _pipeline_keys(stack: LocalStack) -> list[str]:
    listed = stack.client("s3").list_objects_v2(Bucket=stack.bucket_name, Prefix="pipelines/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _remove_pipelines(stack: LocalStack) -> None:
    s3 = stack.client("s3")
    for key in _pipeline_keys(stack):
        s3.delete_object(Bucket=stack.bucket_name, Key=key)


@pytest.fixture
def no_pipelines(stack: LocalStack) -> Iterator[None]:
    _remove_pipelines(stack)
    yield
    _remove_pipelines(stack)


# --- pipeline put, list, show ---------------------------------------------------------------


def test_put_validates_and_puts_a_yaml_pipeline_then_list_and_show_it(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a YAML pipeline file
    path = tmp_path / "reviews.yaml"
    path.write_text(PIPELINE_YAML)
    # When the user puts it
    assert main(["pipeline", "put", str(path)]) == 0
    out = capsys.readouterr().out
    # Then it is in the bucket, as written, at pipelines/reviews.yaml, and the command says where to drop files
    s3, bucket = stack.client("s3"), stack.bucket_name
    stored = s3.get_object(Bucket=bucket, Key="pipelines/reviews.yaml")
    assert stored["Body"].read() == path.read_bytes()
    assert out == (
        f"put pipeline reviews at s3://{bucket}/pipelines/reviews.yaml (version {stored['VersionId']})\n"
        f"drop .csv or .jsonl files (or their .gz) into s3://{bucket}/inbox/reviews/ to run it\n"
    )
    # And list and show find it
    assert main(["pipeline", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["name", "size", "modified", "key"]
    assert listing[1].split()[0] == "reviews"
    assert listing[1].endswith("pipelines/reviews.yaml")
    assert main(["pipeline", "show", "reviews"]) == 0
    shown = capsys.readouterr()
    assert shown.out == PIPELINE_YAML
    assert shown.err == f"# s3://{bucket}/pipelines/reviews.yaml\n"


def test_put_refuses_an_invalid_pipeline_and_puts_nothing(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: m\nmax_tokens: 0\nprompt: p\nparams:\n  stream: true\n")
    assert main(["pipeline", "put", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: {path}: pipeline broken is not valid: max_tokens: must be an integer >= 1, got 0 (line 2); "
        "params.stream: set by the pipeline itself, not under params (batch requests are never streamed) (line 5)\n"
    )
    assert _pipeline_keys(stack) == []


def test_one_name_never_has_a_json_and_a_yaml_pipeline(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pipeline put as JSON
    as_json = tmp_path / "reviews.json"
    as_json.write_text(json.dumps({"model": "m", "max_tokens": 5, "prompt": "{{review}}"}))
    assert main(["pipeline", "put", str(as_json)]) == 0
    # When the same name is put as YAML (from a .yml file)
    as_yaml = tmp_path / "other.yml"
    as_yaml.write_text(PIPELINE_YAML)
    assert main(["pipeline", "put", str(as_yaml), "--name", "reviews"]) == 2
    # Then it is refused, naming the object that holds the name, and the bucket keeps one pipeline
    bucket = stack.bucket_name
    assert capsys.readouterr().err == (
        f"batchdrop: {as_yaml}: s3://{bucket}/pipelines/reviews.json already holds pipeline reviews; one name "
        "has one pipeline: put it as reviews.json, or delete that object first\n"
    )
    assert _pipeline_keys(stack) == ["pipelines/reviews.json"]
    # And putting the JSON again replaces it (a new version), while the .yml goes to .yaml under its own name
    assert main(["pipeline", "put", str(as_json)]) == 0
    assert main(["pipeline", "put", str(as_yaml)]) == 0
    assert _pipeline_keys(stack) == ["pipelines/other.yaml", "pipelines/reviews.json"]


def test_the_client_puts_refuses_and_lists_as_the_command_does(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, tmp_path: Path
) -> None:
    client = Batchdrop.from_env()
    path = tmp_path / "reviews.yaml"
    path.write_text(PIPELINE_YAML)
    put = client.put_pipeline(path, name="nightly")
    assert (put.name, put.key, put.inbox) == ("nightly", "pipelines/nightly.yaml", "inbox/nightly/")
    assert put.version_id
    with pytest.raises(PipelineInvalid, match="holds a '/'"):
        client.put_pipeline(path, name="a/b")
    json_path = tmp_path / "nightly.json"
    json_path.write_text(json.dumps({"model": "m", "max_tokens": 5, "prompt": "x"}))
    with pytest.raises(PipelineConflict):
        client.put_pipeline(json_path)
    assert [(found.name, found.key) for found in client.pipelines()] == [("nightly", "pipelines/nightly.yaml")]
    assert client.pipeline_text("nightly") == [("pipelines/nightly.yaml", PIPELINE_YAML.encode())]


def test_show_and_list_without_pipelines(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pipeline", "list"]) == 0
    assert capsys.readouterr().out == (
        f"no pipelines in s3://{stack.bucket_name}/pipelines/ (`batchdrop pipeline put FILE` adds one)\n"
    )
    assert main(["pipeline", "show", "absent"]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: no pipeline absent in bucket {stack.bucket_name} (pipelines/absent.json or .yaml); "
        "`batchdrop pipeline list` lists them\n"
    )


# --- results --csv, --jsonl, --show ---------------------------------------------------------


def test_results_csv_and_jsonl_download_the_outputs(
    stack: LocalStack, user_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id, bucket = user_env["records"], stack.bucket_name
    stored_csv = stack.client("s3").get_object(Bucket=bucket, Key=f"results/{job_id}/outputs.csv")["Body"].read()
    # By default into results/JOB_ID/, beside what plain `results` downloads
    assert main(["results", job_id, "--csv"]) == 0
    assert capsys.readouterr().out == (
        f"job {job_id}: COMPLETED; wrote results/{job_id}/outputs.csv (s3://{bucket}/results/{job_id}/outputs.csv)\n"
    )
    assert (tmp_path / "results" / job_id / "outputs.csv").read_bytes() == stored_csv
    # To a file --out names
    assert main(["results", job_id, "--jsonl", "--out", "rows.jsonl"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_bytes().splitlines()]
    assert rows == ROWS
    # Into a directory --out names, as JOB_ID/outputs.csv
    (tmp_path / "elsewhere").mkdir()
    assert main(["results", job_id, "--csv", "--out", "elsewhere"]) == 0
    capsys.readouterr()
    assert (tmp_path / "elsewhere" / job_id / "outputs.csv").read_bytes() == stored_csv


def test_results_csv_to_standard_output(
    user_env: dict[str, str], capfdbinary: pytest.CaptureFixture[bytes], stack: LocalStack
) -> None:
    job_id = user_env["records"]
    stored = stack.client("s3").get_object(Bucket=stack.bucket_name, Key=f"results/{job_id}/outputs.csv")
    assert main(["results", job_id, "--csv", "--out", "-"]) == 0
    assert capfdbinary.readouterr().out == stored["Body"].read()


def test_results_show_prints_the_first_rows_fitted_to_the_terminal(
    stack: LocalStack, user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = user_env["records"]
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["results", job_id, "--show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # A header, its rule, both rows, then where the whole file is
    assert lines[0].split()[:4] == ["id", "product", "status", "sentiment"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith("r1")
    assert "…" in lines[2]  # the long reason is cut
    assert lines[3].startswith("r2  toaster, 2-slot  rejected")
    assert all(len(line) <= 160 for line in lines[:4])
    assert lines[4] == (
        f"(the first 2 rows of s3://{stack.bucket_name}/results/{job_id}/outputs.csv, job {job_id} COMPLETED; "
        f"`batchdrop results {job_id} --csv` downloads it all)"
    )
    # And --rows chooses how many
    assert main(["results", job_id, "--show", "--rows", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[3].startswith("(the first 1 row of ")


def test_the_client_reads_the_outputs_rows_as_a_stream(user_env: dict[str, str]) -> None:
    client = Batchdrop.from_env()
    outputs = client.outputs(user_env["records"])
    assert outputs.csv.endswith("/outputs.csv")
    column_names, rows = client.output_rows(user_env["records"], 1)
    assert column_names == list(ROWS[0])
    assert rows == [["r1", "blender", "succeeded", "mixed", LONG_REASON, "", "end_turn", "120", "31", "0", "0", ""]]


@pytest.mark.parametrize("flag", ["--csv", "--jsonl", "--show"])
def test_a_native_job_has_no_outputs_and_is_told_how_to_get_its_results(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    job_id = user_env["native"]
    assert main(["results", job_id, flag]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: job {job_id} (COMPLETED) is a native-mode job: it has no outputs.csv or outputs.jsonl, "
        f"only result parts; `batchdrop results {job_id} --out DIR` downloads them\n"
    )
    with pytest.raises(NoOutputs):
        Batchdrop.from_env().outputs(job_id)


def test_a_job_not_finished_yet_is_one_line_with_its_status(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["results", UNRUN_JOB, "--show"]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: job {UNRUN_JOB} is RECEIVED: it has no results until it ends; "
        f"follow it with `batchdrop status {UNRUN_JOB}`\n"
    )
    with pytest.raises(NotFinished):
        Batchdrop.from_env().output_rows(UNRUN_JOB, 3)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--rows", "3"], "--rows is how many rows --show prints: add --show"),
        (["--show", "--out", "x"], "--show prints to the terminal; --out goes with --csv, --jsonl or no flag"),
        (["--out", "-"], "--out - (standard output) goes with --csv or --jsonl"),
        (["--csv", "--show"], "argument --show: not allowed with argument --csv"),
    ],
)
def test_results_flags_that_do_not_go_together_are_usage_errors(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["results", user_env["records"], *args])
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


# --- submit --pipeline ----------------------------------------------------------------------


def test_submit_with_a_pipeline_uploads_records_into_its_inbox_folder(
    stack: LocalStack, user_env: dict[str, str], no_pipelines: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "monday.csv"
    records.write_text("review_id,product,review\nr1,blender,Loud\n")
    s3, bucket = stack.client("s3"), stack.bucket_name
    # Given no pipeline named reviews: nothing is uploaded, as the file would fail
    assert main(["submit", str(records), "--pipeline", "reviews"]) == 2
    assert "no pipeline reviews in bucket" in capsys.readouterr().err
    assert s3.list_objects_v2(Bucket=bucket, Prefix="inbox/reviews/").get("KeyCount") == 0
    # When the pipeline is put, the file goes to inbox/reviews/<its name>
    pipeline = tmp_path / "reviews.yaml"
    pipeline.write_text(PIPELINE_YAML)
    assert main(["pipeline", "put", str(pipeline)]) == 0
    capsys.readouterr()
    assert main(["submit", str(records), "--pipeline", "reviews"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"uploaded s3://{bucket}/inbox/reviews/monday.csv (version ")
    stored = s3.get_object(Bucket=bucket, Key="inbox/reviews/monday.csv")["Body"].read()
    assert stored == records.read_bytes()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["notes.txt", "--pipeline", "reviews"], "a file of records is .csv or .jsonl (or .gz of them)"),
        (["monday.csv", "--pipeline", "a/b"], "holds a '/'"),
    ],
)
def test_submit_with_a_pipeline_refuses_what_cannot_be_its_records(
    user_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    for name in ("notes.txt", "monday.csv"):
        (tmp_path / name).write_text("review_id\nr1\n")
    assert main(["submit", *args]) == 2
    assert error in capsys.readouterr().err


def test_submit_takes_a_key_or_a_pipeline_not_both(
    user_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["submit", "x.csv", "--pipeline", "reviews", "--key", "inbox/x.csv"])
    assert exited.value.code == 2
    assert "--key or --pipeline, not both" in capsys.readouterr().err
