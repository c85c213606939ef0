"""`batchdrop pipeline check FILE [--sample DATA] [--rows N]`: a pipeline validated by the
layer's own parser, and tried on the first records of a local sample, with no stack running
(these are unit tests: any network connection fails them) and nothing sent."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from batchdrop_client import InputFileError, PipelineInvalid
from batchdrop_client.pipelines import check_sample, load_pipeline_file
from batchdrop_local.cli import main

pytestmark = pytest.mark.unit

PIPELINE_YAML = """\
model: claude-haiku-4-5
max_tokens: 50
prompt: "Review of {{product}}: {{review}}"
id_field: review_id
keep_fields: [product]
"""
CSV = (
    'review_id,product,review\nr1,blender,"Loud, ""really"""\nbad id,toaster,fine\nr3,kettle,"two\nlines"\nr4,mug,ok\n'
)


@pytest.fixture(autouse=True)
def no_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell that names no stack, and no env file where batchdrop looks for one."""
    monkeypatch.setenv("BATCHDROP_HOME", str(tmp_path / "nothing-here"))
    for name in ("BATCHDROP_BUCKET", "BATCHDROP_TABLE", "BATCHDROP_ENV_FILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_a_valid_pipeline_is_reported_with_what_it_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    assert main(["pipeline", "check", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{pipeline}: pipeline reviews is valid: model claude-haiku-4-5, answer text, "
        "reads product, review, review_id\n"
    )


def test_an_invalid_pipeline_is_one_line_naming_the_file_and_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = write(tmp_path, "bad.json", json.dumps({"model": "", "max_tokens": 0, "prompt": "x"}))
    assert main(["pipeline", "check", str(pipeline)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f'batchdrop: {pipeline}: pipeline bad is not valid: model: must be a non-empty string, got ""; '
        "max_tokens: must be an integer >= 1, got 0\n"
    )


def test_a_yaml_problem_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write(tmp_path, "dup.yml", PIPELINE_YAML + "model: other\n")
    assert main(["pipeline", "check", str(pipeline)]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: {pipeline}: pipeline dup is not valid: model: appears twice in one object (line 6)\n"
    )


@pytest.mark.parametrize(
    ("name", "file", "error"),
    [
        ("x", "notes.txt", "a pipeline file is .json, .yaml or .yml"),
        ("x", "missing.json", "no such file"),
        ("a/b", "reviews.yaml", "holds a '/'"),
        ("", "reviews.yaml", "must not be empty"),
        ("semi;colon", "reviews.yaml", "is not a usable pipeline name"),
    ],
)
def test_a_file_or_name_that_cannot_be_a_pipeline_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, file: str, error: str
) -> None:
    write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    write(tmp_path, "notes.txt", PIPELINE_YAML)
    assert main(["pipeline", "check", str(tmp_path / file), "--name", name]) == 2
    err = capsys.readouterr().err
    assert error in err
    assert err.count("\n") == 1


def test_a_yml_file_goes_to_the_yaml_key_and_its_stem_is_its_name(tmp_path: Path) -> None:
    loaded = load_pipeline_file(write(tmp_path, "nightly.v2.yml", PIPELINE_YAML))
    assert (loaded.name, loaded.key, loaded.other_key, loaded.inbox) == (
        "nightly.v2",
        "pipelines/nightly.v2.yaml",
        "pipelines/nightly.v2.json",
        "inbox/nightly.v2/",
    )
    with pytest.raises(PipelineInvalid):
        load_pipeline_file(write(tmp_path, ".hidden.json", "{}"))


def test_a_csv_sample_renders_its_first_records_and_names_each_rejection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a pipeline and a CSV whose second record has an id that cannot be a custom_id
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    sample = write(tmp_path, "reviews.csv", CSV)
    # When it is checked against the sample's first three records
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    # Then the header's fields, each rendered request as indented JSON and the rejection are printed
    assert f"{sample}: fields (header): review_id, product, review\n" in out
    assert 'line 3: rejected: id_field "review_id": "bad id" is not a usable id' in out
    first = out.split("line 2: request\n", 1)[1].split("\nline 3:", 1)[0]
    assert json.loads(first) == {
        "custom_id": "r1",
        "params": {
            "model": "claude-haiku-4-5",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": 'Review of blender: Loud, "really"'}],
        },
    }
    assert "line 4: request" in out  # a record starting on line 4 spans two lines
    assert '"content": "Review of kettle: two\\nlines"' in out
    assert "r4" not in out  # only the first 3
    assert out.endswith("(3 records rendered; nothing sent)\n")


def test_rows_chooses_how_many_records_are_rendered(tmp_path: Path) -> None:
    loaded = load_pipeline_file(write(tmp_path, "reviews.yaml", PIPELINE_YAML))
    sample = write(tmp_path, "reviews.csv", CSV)
    assert [trial.line for trial in check_sample(loaded.pipeline, sample, 1).trials] == [2]
    assert [trial.line for trial in check_sample(loaded.pipeline, sample, 10).trials] == [2, 3, 4, 6]


def test_a_csv_header_without_a_needed_field_fails_as_the_file_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    sample = write(tmp_path, "short.csv", "review_id,product\nr1,blender\n")
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 2
    captured = capsys.readouterr()
    assert "request" not in captured.out
    assert captured.err == (
        f"batchdrop: {sample}: its header lacks review, which pipeline reviews needs: "
        "the file would fail before anything is sent\n"
    )
    # And the client's check renders no record of a file that would fail as a whole
    check = check_sample(load_pipeline_file(pipeline).pipeline, sample)
    assert (check.missing, check.trials) == (("review",), ())


def test_a_gzipped_jsonl_sample_is_read_and_its_records_fields_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a gzipped JSONL sample (named without .gz: gzip is known by its first bytes) where
    # a record lacks a field the prompt uses and another holds a number
    lines = [
        {"review_id": "r1", "product": "blender", "review": 5},
        {"review_id": "r2", "product": "toaster"},
        "not json",
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    sample = write(tmp_path, "sample.jsonl", gzip.compress(body.encode()))
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    # When it is checked
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    # Then the fields are those of its first records, and each record's outcome is shown
    assert f"{sample}: fields (first records): review_id, product, review\n" in out
    assert '"content": "Review of blender: 5"' in out
    assert 'line 2: rejected: the record has no field "review", which the prompt uses' in out
    assert "line 3: rejected: not valid JSON" in out


def test_a_field_no_jsonl_record_has_is_warned_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    sample = write(tmp_path, "s.jsonl", json.dumps({"review_id": "r1", "product": "p"}) + "\n")
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 0
    assert "warning: no record read has review; records without them are rejected" in capsys.readouterr().out


def test_on_bad_record_fail_with_a_rejected_record_fails_as_the_file_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = write(tmp_path, "strict.yaml", PIPELINE_YAML + "on_bad_record: fail\n")
    sample = write(tmp_path, "reviews.csv", CSV)
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 2
    assert capsys.readouterr().err == (
        f"batchdrop: {sample}: line 3 is rejected, and on_bad_record is fail: the file would fail\n"
    )


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        ("data.txt", b"a,b\n", "a sample is a .csv, .jsonl, .csv.gz or .jsonl.gz file"),
        ("data.csv.gz", b"\x1f\x8b\x08\x00broken", "not a readable gzip file"),
        ("empty.csv", b"", "the file is empty: a CSV needs a header row"),
        ("dup.csv", b"a,a\n1,2\n", 'line 1: the header names "a" more than once'),
    ],
)
def test_a_sample_that_cannot_be_read_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, body: bytes, error: str
) -> None:
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML)
    sample = write(tmp_path, name, body)
    assert main(["pipeline", "check", str(pipeline), "--sample", str(sample)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchdrop: {sample}: ")
    assert error in err
    assert err.count("\n") == 1


def test_a_missing_sample_is_an_input_error(tmp_path: Path) -> None:
    loaded = load_pipeline_file(write(tmp_path, "reviews.yaml", PIPELINE_YAML))
    with pytest.raises(InputFileError, match="no such file"):
        check_sample(loaded.pipeline, tmp_path / "absent.csv")


def test_a_structured_answer_is_reported_with_its_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = "output:\n  schema:\n    type: object\n    properties: {sentiment: {type: string}}\n"
    pipeline = write(tmp_path, "reviews.yaml", PIPELINE_YAML + schema)
    assert main(["pipeline", "check", str(pipeline)]) == 0
    assert "answer by schema (columns sentiment, raw)" in capsys.readouterr().out
