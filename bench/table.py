"""One table for every benchmark: each figure with its unit, the baseline it is set
against (measured in the same run), the ratio, the goal and whether this run met it."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

NOT_JUDGED = "not judged (--quick)"


@dataclass(frozen=True)
class Figure:
    area: str  # submit, results, checker, cold start, cost
    what: str  # what was measured, with its input
    value: float
    unit: str  # "s", "MB", "MB/s", "calls", "$"…
    baseline: str = ""  # what it is compared with, measured in this run
    baseline_value: float | None = None
    ratio: float | None = None  # how many times better than the baseline (>1 is better)
    goal: str = ""
    met: bool | None = None  # None: a figure with no goal of its own, or one not judged
    judged: bool = True  # False in a quick run: its goal is shown, not judged

    def row(self) -> list[str]:
        return [
            self.area,
            self.what,
            f"{_number(self.value)} {self.unit}",
            f"{self.baseline}: {_number(self.baseline_value)} {self.unit}" if self.baseline else "",
            f"{self.ratio:.1f}x" if self.ratio is not None else "",
            self.goal,
            NOT_JUDGED if self.goal and not self.judged else {True: "yes", False: "**NO**", None: ""}[self.met],
        ]


HEADER = ["area", "measured", "ours", "baseline (same run)", "ratio", "goal", "met"]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def machine() -> str:
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu}){memory}, "
        f"{platform.system()} {platform.release()}, Python {sys.version.split()[0]}"
    )


def markdown(figures: Iterable[Figure]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(figure.row() for figure in figures)]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
