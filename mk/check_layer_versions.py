"""Checks that the built layer holds exactly the hashed lock's packages at the lock's versions:
`python mk/check_layer_versions.py <layer python dir> <lock>`. Exit 1, one line per difference."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def built(site: Path) -> dict[str, str]:
    found = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in metadata.read_text(encoding="utf-8").splitlines()[:10] if ": " in line
        )
        found[normalized(fields["Name"])] = fields["Version"]
    return found


def locked(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", lock.read_text(encoding="utf-8"), re.M)
    return {normalized(name): version for name, version in pins}


def main(site: Path, lock: Path) -> int:
    have, want = built(site), locked(lock)
    problems = [
        f"{site}: {name} is {have.get(name, 'missing')}, the lock {lock} says {want.get(name, 'absent')}"
        for name in sorted(set(have) | set(want))
        if have.get(name) != want.get(name)
    ]
    sys.stdout.write("\n".join(problems) or f"{site}: all {len(want)} packages at the versions of {lock}")
    sys.stdout.write("\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
