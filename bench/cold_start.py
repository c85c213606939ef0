"""Cold start: what each handler's `import app` costs from the built artifact, as
Lambda runs it, with the bytecode `make build` ships beside the same artifact without it.

Lambda imports /var/task/app.py, with the layer's python/ on the path, in a fresh interpreter
whose /var/task and /opt are read-only: every module without a usable .pyc is compiled from
source on every cold start. `make build` compiles the whole artifact (mk/sam.mk); this
measures what that buys, and what the handlers import at load.

The real artifact is built for arm64, and its native wheels (pydantic_core, …) do not load
here, so the timings come from `make build-native`, the same build for x86_64
(.aws-sam/native/build), rebuilt first when it is missing or a source is newer than it. The
facts the goal rests on are read from the real build (.aws-sam/build): every .py has an
unchecked-hash .pyc beside it.

Each measurement is a fresh base interpreter (not the venv's) started with -S, so that only
the stdlib and the artifact can be imported (each child checks it), with PYTHONPATH = the
function's dir then the layer's python/, cwd the function's dir, the environment Lambda gives
at init (LAMBDA_TASK_ROOT makes Powertools' Tracer active and the X-Ray SDK take its Lambda
path, as with `Tracing: Active`; the SDK touches /tmp/.aws-xray/initialized, as it does on
Lambda) and PYTHONDONTWRITEBYTECODE=1, so nothing else is written. A figure is the best of
RUNS of `-X importtime`'s cumulative time for `app`; the baseline is the same tree copied
without its __pycache__ dirs, measured interleaved with it in the same run. Lambda's runtime
has already imported a little of the stdlib (json, …) before it loads the handler, so these
figures overstate slightly; a fresh Lambda container's cold disk is not modelled.

--quick measures fewer runs and builds nothing: it imports the x86_64 build as it is, and
skips this section when there is none.

    .venv/bin/python -m bench --only cold-start [--quick]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import MB, ROOT
from bench.table import Figure

HANDLERS = {"SubmitFunction": "submit", "CheckerFunction": "checker"}  # logical id -> POWERTOOLS_SERVICE_NAME
REAL_BUILD = ROOT / ".aws-sam" / "build"
NATIVE_DIR = ROOT / ".aws-sam" / "native"
NATIVE_BUILD = NATIVE_DIR / "build"
NATIVE_STAMP = NATIVE_DIR / ".built"  # touched by `make build-native` once the copy is compiled
LAYER = Path("CommonLayer") / "python"
SOURCES = ("template.yaml", "mk/sam.mk", "functions", "layers/common")
CACHE_TAG = "cpython-312"  # the runtime's: python3.12
RUNS, RUNS_QUICK = 5, 2
LAMBDA_UNZIPPED_LIMIT_MB = 250  # a function and its layers, unzipped
# What a handler's import must not load: the SDK and its HTTP stack are paid on first use.
DEFERRED = ("anthropic", "httpx", "httpx2", "pydantic")

# The child: times `import app` (wall, beside -X importtime's own figure), then reports what
# was loaded and from where, and any module file from outside the artifact and the stdlib.
HANDLER_CHILD = """
import sys, time
started = time.perf_counter()
import app
seconds = time.perf_counter() - started
import json, os
roots = [os.path.realpath(p) for p in sys.argv[1:]]
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
outside = sorted(
    f for f in files.values() if f and not any(os.path.realpath(f).startswith(root + os.sep) for root in roots)
)
watched = ("anthropic", "httpx", "httpx2", "pydantic", "boto3", "botocore", "aws_xray_sdk")
print(json.dumps({
    "seconds": seconds,
    "loaded": {name: name in sys.modules for name in watched},
    "modules": len(sys.modules),
    "outside": outside,
    "from": {name: files.get(name) for name in ("app", "batchdrop", "aws_lambda_powertools", "botocore")},
}))
"""

# The SDK as the batches adapter uses it: the import, then the first use, which builds the
# client, sends one retrieve (to a closed loopback port, so it fails at once and nothing is
# parsed from the wire) and parses one MessageBatch (pydantic builds its validator on first use).
SDK_CHILD = """
import json, sys, time
started = time.perf_counter()
import anthropic
imported = time.perf_counter() - started
started = time.perf_counter()
client = anthropic.Anthropic(api_key="bench", base_url=sys.argv[1], max_retries=0)
try:
    client.messages.batches.retrieve("msgbatch_bench")
except anthropic.APIConnectionError:
    pass
from anthropic.types.messages import MessageBatch
MessageBatch.model_validate(json.loads(sys.argv[2]))
first_use = time.perf_counter() - started
print(json.dumps({"import_seconds": imported, "first_use_seconds": first_use, "file": anthropic.__file__}))
"""

SAMPLE_BATCH = {
    "id": "msgbatch_bench",
    "type": "message_batch",
    "processing_status": "ended",
    "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
    "created_at": "2026-11-23T10:00:00Z",
    "expires_at": "2026-11-24T10:00:00Z",
    "ended_at": "2026-11-23T10:05:00Z",
    "cancel_initiated_at": None,
    "archived_at": None,
    "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_bench/results",
}

IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


@dataclass(frozen=True)
class Imported:
    """One line of `-X importtime`: a module, its own time, its time with what it imported."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int


@dataclass(frozen=True)
class Interpreter:
    python: str  # the base interpreter the venv was made from
    stdlib: str  # its standard library: the only place, besides the artifact, a module may come from


@dataclass(frozen=True)
class Run:
    seconds: float  # `import app`: -X importtime's cumulative time
    wall_seconds: float
    subtree: list[Imported]  # app and everything its import loaded first
    report: dict[str, Any]


def run(quick: bool) -> list[Figure]:
    if not quick:
        ensure_native()
    elif not native_complete():
        # A quick run builds nothing: `make build-native` alone takes longer than it may.
        print(f"cold start: skipped (--quick builds nothing; no {NATIVE_BUILD.relative_to(ROOT)})", flush=True)
        return []
    elif newest_source() >= native_built():
        print(
            f"cold start: {NATIVE_BUILD.relative_to(ROOT)} is older than a source; --quick imports it anyway",
            flush=True,
        )
    python = base_interpreter()
    runs = RUNS_QUICK if quick else RUNS
    shipped = pyc_facts(REAL_BUILD)
    with tempfile.TemporaryDirectory(prefix="batchdrop-cold-") as tmp:
        bare = Path(tmp) / "build"
        # The baseline: the same tree as `sam build` alone leaves it, without bytecode.
        shutil.copytree(NATIVE_BUILD, bare, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
        trees = {"pyc": NATIVE_BUILD, "bare": bare}
        found: dict[tuple[str, str], list[Run]] = {}
        sdk: dict[str, list[dict[str, Any]]] = {"pyc": [], "bare": []}
        for _ in range(runs):  # interleaved, so a slow spell of the machine hits both alike
            for handler in HANDLERS:
                for variant, tree in trees.items():
                    found.setdefault((handler, variant), []).append(import_handler(python, tree, handler))
            for variant, tree in trees.items():
                sdk[variant].append(first_sdk_use(python, tree))
    figures = [handler_figure(handler, found[handler, "pyc"], found[handler, "bare"], shipped) for handler in HANDLERS]
    figures.extend(sdk_figures(sdk))
    figures.append(size_figure())
    return figures


# ---------------------------------------------------------------- the artifact


def ensure_native() -> None:
    """`make build-native` unless its stamp is newer than every source it is built from."""
    if native_complete() and newest_source() < native_built():
        print(f"cold start: {NATIVE_BUILD.relative_to(ROOT)} is up to date", flush=True)
        return
    print("cold start: make build-native (about 40 s)", flush=True)
    done = subprocess.run(["make", "build-native"], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"make build-native failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def native_complete() -> bool:
    return all((NATIVE_BUILD / handler / "__pycache__" / f"app.{CACHE_TAG}.pyc").exists() for handler in HANDLERS)


def native_built() -> float:
    return NATIVE_STAMP.stat().st_mtime if NATIVE_STAMP.exists() else 0.0


def newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = ROOT / name
        paths = [path] if path.is_file() else path.rglob("*")
        for file in paths:
            # Bytecode the tests leave beside the sources is not a source.
            if file.is_file() and "__pycache__" not in file.parts:
                newest = max(newest, file.stat().st_mtime)
    return newest


def base_interpreter() -> Interpreter:
    """The interpreter the venv was made from (no venv site-packages), if it is the runtime's version."""
    python = getattr(sys, "_base_executable", sys.executable)
    code = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_paths()['stdlib'])"
    tag, stdlib = subprocess.run(
        [python, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if tag != CACHE_TAG:
        raise RuntimeError(f"{python} is {tag}, not {CACHE_TAG}: the artifact's .pyc would not be used")
    return Interpreter(python, stdlib)


def pyc_facts(build: Path) -> dict[str, Any]:
    """How many .py of a build have an unchecked-hash .pyc for the runtime beside them."""
    sources = [path for path in build.rglob("*.py") if "__pycache__" not in path.parts] if build.exists() else []
    kinds: Counter[str] = Counter()
    for source in sources:
        kinds[pyc_kind(source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc")] += 1
    return {"exists": build.exists(), "sources": len(sources), "kinds": dict(kinds)}


def pyc_kind(pyc: Path) -> str:
    """A .pyc's invalidation mode, from the flags word of its header (PEP 552)."""
    if not pyc.exists():
        return "missing"
    with pyc.open("rb") as stream:
        flags = int.from_bytes(stream.read(8)[4:8], "little")
    return {0b00: "timestamp", 0b01: "unchecked-hash", 0b11: "checked-hash"}.get(flags, f"flags {flags}")


def tree_mb(tree: Path, *, bytecode: bool) -> float:
    files = (path for path in tree.rglob("*") if path.is_file())
    return sum(path.stat().st_size for path in files if bytecode or "__pycache__" not in path.parts) / MB


# ---------------------------------------------------------------- measuring


def lambda_env(tree: Path, handler: str) -> dict[str, str]:
    """The environment of a Lambda init, as far as an import can tell, and nothing of ours."""
    function_dir = tree / handler
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{function_dir}{os.pathsep}{tree / LAYER}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(function_dir),
        "AWS_LAMBDA_FUNCTION_NAME": handler,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": HANDLERS[handler],
        "POWERTOOLS_METRICS_NAMESPACE": "batchdrop/bench",
        "POWERTOOLS_PARAMETERS_MAX_AGE": "300",
        "LOG_LEVEL": "INFO",
    }


def import_handler(python: Interpreter, tree: Path, handler: str) -> Run:
    done = subprocess.run(
        [python.python, "-S", "-X", "importtime", "-c", HANDLER_CHILD, str(tree), python.stdlib],
        cwd=tree / handler,
        env=lambda_env(tree, handler),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{handler}: import app failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["outside"]:
        raise RuntimeError(f"{handler}: loaded modules from outside the artifact: {report['outside'][:5]}")
    subtree = import_subtree(parse_importtime(done.stderr), "app")
    return Run(subtree[-1].cumulative_us / 1e6, report["seconds"], subtree, report)


def first_sdk_use(python: Interpreter, tree: Path) -> dict[str, Any]:
    """`import anthropic` from the layer, then its first use; best read from -X importtime."""
    with socket.socket() as probe:  # a port nothing listens on: bound, then released
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {**lambda_env(tree, "CheckerFunction"), "PYTHONPATH": str(tree / LAYER)}
    done = subprocess.run(
        [python.python, "-S", "-X", "importtime", "-c", SDK_CHILD, closed, json.dumps(SAMPLE_BATCH)],
        cwd=tree / LAYER,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the SDK child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not report["file"].startswith(str(tree)):
        raise RuntimeError(f"anthropic came from {report['file']}, not the artifact")
    anthropic = import_subtree(parse_importtime(done.stderr), "anthropic")[-1]
    return {"import": anthropic.cumulative_us / 1e6, "first_use": report["first_use_seconds"], "file": report["file"]}


def parse_importtime(stderr: str) -> list[Imported]:
    lines = []
    for line in stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            lines.append(Imported(match[4], int(match[1]), int(match[2]), len(match[3]) // 2))
    return lines


def import_subtree(lines: list[Imported], name: str) -> list[Imported]:
    """A top-level import and everything it loaded first: -X importtime prints children
    before their parent, one level deeper, so they are the deeper lines just above it."""
    end = next(i for i, line in enumerate(lines) if line.name == name and line.depth == 0)
    start = end
    while start > 0 and lines[start - 1].depth > 0:
        start -= 1
    return lines[start : end + 1]


def heaviest_packages(subtree: Iterable[Imported], count: int = 3) -> list[tuple[str, float]]:
    """Own import time summed by top-level package: where an import's time actually goes
    (a module's cumulative time is charged to whichever module imported it first)."""
    by_package: Counter[str] = Counter()
    for line in subtree:
        by_package[line.name.split(".")[0]] += line.self_us
    return [(name, us / 1000) for name, us in by_package.most_common(count)]


# ---------------------------------------------------------------- figures


def handler_figure(handler: str, pyc: list[Run], bare: list[Run], shipped: Mapping[str, Any]) -> Figure:
    best, baseline = min(pyc, key=lambda r: r.seconds), min(bare, key=lambda r: r.seconds)
    deferred_loaded = sorted({name for r in pyc for name in DEFERRED if r.report["loaded"].get(name)})
    loads = f"loads {', '.join(deferred_loaded)}" if deferred_loaded else f"loads none of {', '.join(DEFERRED)}"
    heaviest = ", ".join(f"{name} {ms:.0f}" for name, ms in heaviest_packages(best.subtree))
    every_pyc = shipped["exists"] and shipped["kinds"] == {"unchecked-hash": shipped["sources"]}
    print(
        f"cold start: {handler}: import app {best.seconds * 1000:.0f} ms with .pyc "
        f"(wall {best.wall_seconds * 1000:.0f} ms, {best.report['modules']} modules, "
        f"loaded {[name for name, on in best.report['loaded'].items() if on]}), "
        f"{baseline.seconds * 1000:.0f} ms without; heaviest packages (own ms): {heaviest}; "
        f"imported from {sorted({str(Path(f).parent.parent) for f in best.report['from'].values() if f})}",
        flush=True,
    )
    return Figure(
        "cold start",
        f"{handler}: `import app` from the built artifact, best of {len(pyc)} "
        f"(heaviest packages, own ms: {heaviest}; {loads})",
        round(best.seconds * 1000),
        "ms",
        "same artifact without .pyc",
        round(baseline.seconds * 1000),
        baseline.seconds / best.seconds,
        f"ships .pyc ({CACHE_TAG}, unchecked-hash) for all {shipped['sources']:,} .py of .aws-sam/build; "
        "handler import loads no anthropic",
        bool(every_pyc and "anthropic" not in deferred_loaded),
    )


def sdk_figures(sdk: Mapping[str, list[dict[str, Any]]]) -> list[Figure]:
    imported = min(r["import"] for r in sdk["pyc"])
    imported_bare = min(r["import"] for r in sdk["bare"])
    print(
        f"cold start: import anthropic {imported * 1000:.0f} ms with .pyc ({sdk['pyc'][0]['file']}), "
        f"{imported_bare * 1000:.0f} ms without ({sdk['bare'][0]['file']})",
        flush=True,
    )
    first_use = min(r["first_use"] for r in sdk["pyc"])
    first_use_bare = min(r["first_use"] for r in sdk["bare"])
    return [
        Figure(
            "cold start",
            "`import anthropic` from the layer, paid on the SDK's first use, not at handler import",
            round(imported * 1000),
            "ms",
            "without .pyc",
            round(imported_bare * 1000),
            imported_bare / imported,
        ),
        Figure(
            "cold start",
            "the SDK's first use after its import: client, one retrieve (refused), one MessageBatch parsed",
            round(first_use * 1000),
            "ms",
            "without .pyc",
            round(first_use_bare * 1000),
            first_use_bare / first_use,
        ),
    ]


def size_figure() -> Figure:
    with_pyc = tree_mb(REAL_BUILD, bytecode=True)
    without = tree_mb(REAL_BUILD, bytecode=False)
    return Figure(
        "cold start",
        "the arm64 artifact unzipped (both functions and the layer), with its .pyc",
        round(with_pyc, 1),
        "MB",
        "without .pyc",
        round(without, 1),
        without / with_pyc if with_pyc else None,
        f"< {LAMBDA_UNZIPPED_LIMIT_MB} MB (Lambda's limit for a function and its layers, unzipped)",
        0 < with_pyc < LAMBDA_UNZIPPED_LIMIT_MB,
    )
