"""The documentation holds together: every relative link in a Markdown file reaches a file
(and a heading, for `#anchor` links into Markdown), no file cites a document that lives
outside the repository or a tracker number, README.md stays a short front door with the two
commands, and docs/architecture.md draws the state machines exactly as the code defines them."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

from batchdrop.domain.states import mermaid

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README_MAX_BYTES = 12_000
# Folders that are not the project's own text: tools, builds, caches, local runs.
SKIPPED_DIRS = {
    ".git",
    ".venv",
    ".tools",
    ".aws-sam",
    ".batchdrop",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "__pycache__",
    "node_modules",
}
STATES_BEGIN = "<!-- states:begin -->\n"
STATES_END = "<!-- states:end -->"

# Documents the project was built from that are not in the repository: a reader of the
# repository cannot open them, so the repository must say what it needs in its own words.
# Spelled in pieces: this file must name them without citing them itself.
OUTSIDE_DOCUMENTS = (
    *(f"{name}.md" for name in ("RELIABILITY", "DESIGN", "LOCAL-" + "TOOLING", "STYLE")),
    "anthropic-batches-" + "spec",
    ".." + "/shared",
    "/work/" + "shared",
)
# "issue 5", "Issue #12", "issues 3 and 4": numbers of a tracker the reader cannot see. The
# lookahead spares a number that goes on ("issues 1,000 calls" is a verb and a count).
TRACKER_NUMBER = re.compile(r"\bissues?\s+#?\d+(?![\d,.]*\d)", re.IGNORECASE)
URL = re.compile(r"https?://\S+")
# This file names the patterns it looks for.
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if path.name not in SKIPPED_DIRS and not path.name.endswith(".egg-info"):
                yield from _walk(path)
        elif path.is_file():
            yield path


@cache
def repo_files() -> tuple[str, ...]:
    """The repository's files, relative to its root: git's list when git can answer (so local
    output such as a downloaded results/ folder is not judged), else a walk of the tree."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        names = [path.relative_to(ROOT).as_posix() for path in _walk(ROOT)]
    return tuple(sorted(name for name in names if (ROOT / name).is_file()))


def _text(name: str) -> str | None:
    data = (ROOT / name).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def markdown_files() -> list[str]:
    return [name for name in repo_files() if name.endswith(".md")]


# --- Markdown: links and headings -------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _without_code(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every link target of a Markdown text, outside code blocks and code spans."""
    prose = _without_code(text)
    return [*INLINE_LINK.findall(prose), *REFERENCE_LINK.findall(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercased, punctuation dropped
    (letters, digits, '_' and '-' stay), spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML shows nothing
    text = text.replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors a Markdown text offers: its headings' slugs (a repeated one gets -1, -2,
    as on GitHub) and explicit <a name/id> anchors."""
    found: set[str] = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(name: str, text: str) -> list[str]:
    problems = []
    here = (ROOT / name).parent
    for target in links(text):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # a link out of the repository (https:, mailto:) is not checked here
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            destination = ROOT / name  # "#anchor": a heading of this file
        elif path_part.startswith("/"):
            destination = (ROOT / path_part.lstrip("/")).resolve()  # GitHub: from the repository's root
        else:
            destination = (here / path_part).resolve()
        if not destination.is_relative_to(ROOT) or not destination.exists():
            problems.append(f"{name}: {target} (no such file)")
        elif anchor and destination.suffix == ".md" and not _has_anchor(destination, unquote(anchor)):
            problems.append(f"{name}: {target} (no heading with that anchor)")
    return problems


def _has_anchor(markdown: Path, anchor: str) -> bool:
    return markdown.is_file() and anchor.lower() in anchors(markdown.read_text(encoding="utf-8"))


def test_the_link_checker_finds_a_missing_file_and_a_missing_heading() -> None:
    text = "[ok](README.md) [gone](docs/nowhere.md) [bad](README.md#no-such-heading) `[code](x.md)`"
    assert broken_links("README.md", text) == [
        "README.md: docs/nowhere.md (no such file)",
        "README.md: README.md#no-such-heading (no heading with that anchor)",
    ]


def test_slugs_are_githubs() -> None:
    assert slug("The `batchdrop` command: local up & down") == "the-batchdrop-command-local-up--down"
    assert slug("What holds, and the test that shows it") == "what-holds-and-the-test-that-shows-it"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


@pytest.mark.parametrize("name", markdown_files())
def test_every_relative_link_reaches_a_file_and_heading(name: str) -> None:
    text = _text(name)
    assert text is not None, f"{name} is not UTF-8 text"
    assert broken_links(name, text) == []


# --- no citations of what the reader cannot open ----------------------------------------


def citations(text: str) -> list[str]:
    found = [document for document in OUTSIDE_DOCUMENTS if document in text]
    found += [match.group(0) for match in TRACKER_NUMBER.finditer(URL.sub("", text))]
    return found


def test_the_citation_check_finds_documents_and_tracker_numbers_but_not_counts_or_urls() -> None:
    reliability, shared = OUTSIDE_DOCUMENTS[0], OUTSIDE_DOCUMENTS[5]
    assert citations(f"as {reliability} §9 says") == [reliability]
    assert citations(f"see {shared}/notes") == [shared]
    assert citations("fixed in issue 5; Issues 3 and 4; issue #12.") == ["issue 5", "Issues 3", "issue #12"]
    assert citations("it issues 1,000 calls; https://github.com/getmoto/moto/issues/8762") == []


def test_no_file_cites_an_outside_document_or_a_tracker_number() -> None:
    problems = []
    for name in repo_files():
        if name == SELF or re.fullmatch(r"requirements/[^/]+\.txt", name):
            continue  # the lock files hold hashes and names pip wrote, not prose
        text = _text(name)
        if text is None:
            continue
        problems.extend(f"{name}: {found}" for found in citations(text))
    assert problems == []


# --- README and the state diagrams -------------------------------------------------------


def test_readme_is_short_and_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= README_MAX_BYTES, f"README.md is {len(readme)} bytes; move detail into docs/"
    text = readme.decode("utf-8")
    assert "make demo" in text
    assert "make test" in text


def states_block(text: str) -> str:
    begin = text.index(STATES_BEGIN) + len(STATES_BEGIN)
    return text[begin : text.index(STATES_END, begin)]


def test_architecture_draws_the_state_machines_as_the_code_defines_them() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert states_block(text) == mermaid(), "paste batchdrop.domain.states.mermaid() between the states markers"
