"""The direction of imports docs/architecture.md states, read from the source: the domain
imports no adapter, service, port or outside system; services never import an adapter; and
nothing shipped to Lambda imports the local tooling or the client library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "common" / "batchdrop"
SHIPPED = [*LAYER.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
OUTSIDE_SYSTEMS = ("boto3", "botocore", "anthropic", "httpx", "aws_lambda_powertools")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offending(paths: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> dict[str, list[str]]:
    bad = {}
    for path in paths:
        names = sorted(name for name in imports(path) if name.split(".")[0] in forbidden or name.startswith(forbidden))
        if names:
            bad[str(path.relative_to(root))] = names
    return bad


def test_the_files_are_there() -> None:
    assert len(SHIPPED) > 30
    assert (LAYER / "domain").is_dir()


def test_nothing_shipped_imports_the_local_tooling_or_the_client_library() -> None:
    assert offending(SHIPPED, ("batchdrop_local", "batchdrop_client")) == {}


def test_the_domain_imports_no_adapter_service_port_or_outside_system() -> None:
    domain = list((LAYER / "domain").rglob("*.py"))
    forbidden = ("batchdrop.adapters", "batchdrop.services", "batchdrop.ports", "batchdrop.wiring", *OUTSIDE_SYSTEMS)
    assert offending(domain, forbidden) == {}


def test_services_never_import_an_adapter_or_the_wiring() -> None:
    services = list((LAYER / "services").rglob("*.py"))
    assert offending(services, ("batchdrop.adapters", "batchdrop.wiring", "boto3", "botocore")) == {}


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from batchdrop_local.stack import LocalStack\n    import boto3.session\n")
    assert imports(module) == {"batchdrop_local.stack", "boto3.session"}
    assert offending([module], ("batchdrop_local",), root=tmp_path) == {"m.py": ["batchdrop_local.stack"]}
    assert offending([module], ("boto3",), root=tmp_path) == {"m.py": ["boto3.session"]}
    assert offending([module], ("batchdrop.adapters",), root=tmp_path) == {}
