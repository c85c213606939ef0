"""What `make deploy`, `make api-key` and `make destroy` need from a deployed stack.

    python mk/stack_config.py setting samconfig.toml KEY        a value `sam deploy --guided` saved
    python mk/stack_config.py put-key samconfig.toml [--if-unset] asks for the API key, puts it into the secret
    python mk/stack_config.py retained OUTPUTS.json [REGION]     what `sam delete` leaves, and how to remove it

`put-key` runs in SAM CLI's venv (.tools/sam), which has boto3: the key is read at a prompt that
does not echo it, so it never enters a command line, the shell's history or a file, and goes
straight into the secret the stack's `AnthropicSecretArn` output names. With `--if-unset` it
asks only when that secret has no value yet (the first deploy, when the stack made it).

The bucket, the table, the log groups and the layer's versions are kept when the stack is
deleted (DeletionPolicy and RetentionPolicy Retain in template.yaml): the bucket and table hold
the results and the job records, the log groups the record of what happened to them. `retained`
reads the stack's outputs, saved before the delete (`sam list stack-outputs --output json`),
and prints each of them with the aws CLI commands that remove it."""

from __future__ import annotations

import getpass
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

USAGE = (
    "usage: stack_config.py setting SAMCONFIG KEY | stack_config.py put-key SAMCONFIG [--if-unset]"
    " | stack_config.py retained OUTPUTS.json [REGION]"
)
SECRET_OUTPUT = "AnthropicSecretArn"  # noqa: S105 - an output's name, not a secret
# What an Anthropic key looks like: no whitespace (a pasted line break), not empty.
KEY_SHAPE = re.compile(r"\S+")


def setting(samconfig: Path, key: str) -> str:
    """A value of samconfig.toml's [default.deploy.parameters], where `sam deploy --guided` saves them."""
    try:
        config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{samconfig}: no such file; `make deploy` writes it on the first deploy") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"{samconfig}: not TOML: {exc}") from None
    value = config.get("default", {}).get("deploy", {}).get("parameters", {}).get(key)
    if not value:
        raise SystemExit(f"{samconfig}: no {key} under [default.deploy.parameters]")
    return str(value)


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """OutputKey -> OutputValue of a deployed stack."""
    (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    return {item["OutputKey"]: item["OutputValue"] for item in described.get("Outputs", [])}


def has_value(secrets: Any, secret_arn: str) -> bool:
    """Whether the secret has a current value, without reading it (its policy lets only the
    functions read it): a secret made without a value has no version staged AWSCURRENT."""
    versions = secrets.list_secret_version_ids(SecretId=secret_arn)["Versions"]
    return any("AWSCURRENT" in version.get("VersionStages", []) for version in versions)


def put_key(secrets: Any, secret_arn: str, key: str) -> None:
    """Put `key` as the secret's new value, after checking its shape."""
    if not KEY_SHAPE.fullmatch(key):
        raise SystemExit("the key is empty or holds spaces or line breaks: nothing was put; paste the key alone")
    secrets.put_secret_value(SecretId=secret_arn, SecretString=key)


def ask_and_put_key(samconfig: Path, *, if_unset: bool) -> None:
    # Imported here: SAM CLI's venv has boto3, and `setting` and `retained` need none.
    import boto3

    stack, region = setting(samconfig, "stack_name"), setting(samconfig, "region")
    session = boto3.session.Session(region_name=region)
    secret_arn = stack_outputs(session.client("cloudformation"), stack).get(SECRET_OUTPUT)
    if secret_arn is None:
        raise SystemExit(f"stack {stack} has no {SECRET_OUTPUT} output: is it deployed, from this template?")
    secrets = session.client("secretsmanager")
    if if_unset and has_value(secrets, secret_arn):
        say(f"the secret {secret_arn} already holds a key; `make api-key` puts a new one")
        return
    key = getpass.getpass(f"Anthropic API key for stack {stack} (not shown; Enter when pasted): ").strip()
    put_key(secrets, secret_arn, key)
    say(f"key put into {secret_arn}; the functions use it from their next call (within 5 minutes when warm)")


def outputs(path: Path) -> dict[str, str]:
    """OutputKey -> OutputValue, from `sam list stack-outputs --output json` (a list of outputs)."""
    try:
        listed: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read the stack's outputs: {exc}") from None
    if isinstance(listed, dict):
        listed = listed.get("Outputs", [])
    return {item["OutputKey"]: item["OutputValue"] for item in listed}


def retained(found: dict[str, str], region: str = "") -> str:
    """The resources a deleted stack leaves, each with the commands that remove it."""
    at = f" --region {region}" if region else ""
    bucket, table = found["BucketName"], found["TableName"]
    layer = found["CommonLayerArn"].rsplit(":", 1)[0].rsplit(":", 1)[1]
    groups = [f"/aws/lambda/{found[name]}" for name in ("SubmitFunctionName", "CheckerFunctionName")]
    versions = "'{Objects: [Versions, DeleteMarkers][].{Key: Key, VersionId: VersionId}, Quiet: `true`}'"
    lines = [
        "The stack is deleted. Kept on purpose (template.yaml: DeletionPolicy / RetentionPolicy Retain):",
        f"  bucket     {bucket}  (inbox/, results/, errors/: every version of every object)",
        f"  table      {table}  (every job's record; deletion protection on)",
        *(f"  log group  {group}" for group in groups),
        f"  layer      {layer}  (every version published)",
        "",
        "To remove them for good (nothing of them can be recovered after):",
        "",
        "# the bucket: every object version and delete marker, 1,000 a call, then the bucket",
        "while :; do",
        f"  aws s3api list-object-versions --bucket {bucket}{at} --max-keys 1000 --no-paginate \\",
        f"    --query {versions} --output json > batchdrop-versions.json",
        "  grep -q '\"Key\"' batchdrop-versions.json || break",
        f"  aws s3api delete-objects --bucket {bucket}{at} --delete file://batchdrop-versions.json",
        "done",
        "rm batchdrop-versions.json",
        f"aws s3api delete-bucket --bucket {bucket}{at}",
        "",
        "# the table: deletion protection off, then the table",
        f"aws dynamodb update-table --table-name {table}{at} --no-deletion-protection-enabled",
        f"aws dynamodb delete-table --table-name {table}{at}",
        "",
        "# the log groups",
        *(f"aws logs delete-log-group --log-group-name {group}{at}" for group in groups),
        "",
        "# the layer's versions",
        f"for v in $(aws lambda list-layer-versions --layer-name {layer}{at} \\",
        "    --query 'LayerVersions[].Version' --output text); do",
        f"  aws lambda delete-layer-version --layer-name {layer}{at} --version-number $v",
        "done",
    ]
    return "\n".join(lines)


def say(text: str, stream: Any = None) -> None:
    (stream or sys.stdout).write(text + "\n")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "setting":
        say(setting(Path(argv[1]), argv[2]))
        return 0
    if len(argv) in (2, 3) and argv[0] == "put-key" and argv[2:] in ([], ["--if-unset"]):
        ask_and_put_key(Path(argv[1]), if_unset=argv[2:] == ["--if-unset"])
        return 0
    if len(argv) in (2, 3) and argv[0] == "retained":
        say(retained(outputs(Path(argv[1])), argv[2] if len(argv) == 3 else ""))
        return 0
    say(USAGE, sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
