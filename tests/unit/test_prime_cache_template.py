"""template.yaml's PrimeCache: the stack's default for cache priming, off unless set to "true",
reaches the submit function (the one that primes) as the variable the configuration reads,
and that function may read what priming reads (the upload's metadata, the shard, the
pipeline) and write work/<job_id>/priming.json."""

from __future__ import annotations

from typing import Any

import pytest
from cfnlint.decode import decode_str

from batchdrop.config import ENV_PRIME_CACHE
from tests.unit.test_template import TEMPLATE_PATH, environment, functions, s3_object_patterns

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, errors = decode_str(TEMPLATE_PATH.read_text(encoding="utf-8"))
    assert not errors, errors
    return decoded


def test_prime_cache_is_off_by_default_and_takes_only_true_or_false(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["PrimeCache"]

    assert parameter["Type"] == "String"
    assert parameter["Default"] == "false"
    assert sorted(parameter["AllowedValues"]) == ["false", "true"]


def test_the_submit_function_gets_it_as_the_variable_the_configuration_reads(template: dict[str, Any]) -> None:
    by_name = functions(template)
    submit = environment(template, by_name["SubmitFunction"])
    checker = environment(template, by_name["CheckerFunction"])

    assert submit[ENV_PRIME_CACHE] == {"Ref": "PrimeCache"}
    assert ENV_PRIME_CACHE not in checker  # only the submit function primes
    assert ENV_PRIME_CACHE not in template["Globals"]["Function"]["Environment"]["Variables"]


def test_the_submit_function_may_read_what_priming_reads_and_write_its_record(template: dict[str, Any]) -> None:
    submit = functions(template)["SubmitFunction"]
    readable = s3_object_patterns(submit, "s3:GetObject")  # HeadObject (the metadata) needs GetObject too
    writable = s3_object_patterns(submit, "s3:PutObject")

    for prefix in ("inbox/*", "work/*", "pipelines/*"):
        assert prefix in readable, prefix
    assert "work/*" in writable
