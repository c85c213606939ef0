"""What `make bench` judges, apart from the measuring: the submit and results goals set against
a baseline of the same run, as pure functions of the figures (the other goals are set in their
sections), and what a run exits with. A quick run (`python -m bench --quick`) judges none.

Submit is judged against the two paths that parse every line, as ours does: the minimal
stream-and-post path and the parse floor (the object read, each line parsed, nothing else).
Naive is shown beside them but not judged against: the parse floor alone takes most of a
quarter of naive's time, before any create is sent. Results are judged against a plain copy
of the same bytes. The local stack (bench.stack) is judged against the bytes its bucket holds
and against itself: its disk flat while idle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from bench.table import Figure

SUBMIT_TIMES_MINIMAL = 1.5  # ours' time at most this many times the minimal path's
SUBMIT_TIMES_PARSE_FLOOR = 2.0  # ours' time at most this many times the parse floor's
RESULTS_OF_COPY = 0.5  # ours' throughput at least this share of a plain copy's
# The local stack's disk beyond the bucket's bytes, at its peak: at most the file (a multipart
# upload's parts, held until the upload completes and then streamed into the object a part at
# a time) plus this much (one shard's create body spooled to disk: the API takes at most
# 256 MB per create).
STACK_WORKING_SET_FILES = 1
STACK_WORKING_SET_EXTRA_MB = 256
# The local stack's peak memory: at most the file's size plus this much (the servers, both
# handlers and their buffers). moto once joined a multipart upload's parts in memory several
# times over and read a whole object for each range of it: 4.7 GB for a 1 GB file.
STACK_MEMORY_EXTRA_MB = 512
STACK_IDLE_GROWTH_MB = 4  # the most the stack's disk may grow while idle, a large file in inbox/
MB = 1024 * 1024


@dataclass(frozen=True)
class Goal:
    text: str  # the goal column
    met: bool


def submit_beside_minimal(ours_seconds: float, minimal_seconds: float) -> Goal:
    return Goal(
        f"ours <= {SUBMIT_TIMES_MINIMAL:g}x minimal's time (ratio >= {1 / SUBMIT_TIMES_MINIMAL:.2f}x)",
        ours_seconds <= SUBMIT_TIMES_MINIMAL * minimal_seconds,
    )


def submit_beside_parse_floor(ours_seconds: float, parse_floor_seconds: float) -> Goal:
    return Goal(
        f"ours <= {SUBMIT_TIMES_PARSE_FLOOR:g}x the parse floor's time (ratio >= {1 / SUBMIT_TIMES_PARSE_FLOOR:.2f}x)",
        ours_seconds <= SUBMIT_TIMES_PARSE_FLOOR * parse_floor_seconds,
    )


def results_beside_copy(ours_mb_per_s: float, copy_mb_per_s: float) -> Goal:
    return Goal(
        f"ours >= {RESULTS_OF_COPY:g}x a plain copy's throughput",
        ours_mb_per_s >= RESULTS_OF_COPY * copy_mb_per_s,
    )


def stack_disk_beside_bucket(peak_beyond_stored_bytes: float, file_bytes: float) -> Goal:
    allowed = STACK_WORKING_SET_FILES * file_bytes + STACK_WORKING_SET_EXTRA_MB * MB
    return Goal(
        f"<= {STACK_WORKING_SET_FILES:g}x the file + {STACK_WORKING_SET_EXTRA_MB} MB beyond the bucket's bytes",
        peak_beyond_stored_bytes <= allowed,
    )


def stack_memory_beside_file(peak_rss_mb: float, file_mb: float) -> Goal:
    return Goal(
        f"<= the file + {STACK_MEMORY_EXTRA_MB} MB",
        peak_rss_mb <= file_mb + STACK_MEMORY_EXTRA_MB,
    )


def stack_flat_while_idle(growth_bytes: float) -> Goal:
    return Goal(f"flat: grows < {STACK_IDLE_GROWTH_MB} MB while idle", growth_bytes < STACK_IDLE_GROWTH_MB * MB)


def missed(figures: Iterable[Figure]) -> list[Figure]:
    return [figure for figure in figures if figure.met is False]


def exit_status(figures: Iterable[Figure]) -> int:
    """1 when a goal was missed, else 0."""
    return 1 if missed(figures) else 0


def unjudged(figures: Iterable[Figure]) -> list[Figure]:
    """The figures of a quick run: small inputs, so no goal is judged; the goal stays in its
    column, and the met column says it was not judged."""
    return [replace(figure, met=None, judged=False) if figure.goal else figure for figure in figures]
