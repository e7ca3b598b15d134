#!/usr/bin/env python3
"""The module map of the package: modules, their lines, the longest functions.

    python3 bench/modmap.py            # the working tree's hostcreator/
    python3 bench/modmap.py af20215    # the package as of a commit (git archive)

Used for the redesign's before/after (issue 11): how many modules, the median
and largest module, the median and longest functions.
"""

from __future__ import annotations

import ast
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hostcreator"


def tree_at(commit: str, into: Path) -> Path:
    """The package as of COMMIT, unpacked below INTO."""
    archive = into / "tree.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", commit, PACKAGE], stdout=out,
                       check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / PACKAGE


def measure(package: Path) -> None:
    lines: dict[str, int] = {}
    functions: list[tuple[int, str]] = []
    for path in sorted(package.rglob("*.py")):
        module = str(path.relative_to(package))
        text = path.read_text()
        lines[module] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                functions.append((node.end_lineno - node.lineno + 1, f"{module}:{node.name}"))
    largest = sorted(lines.items(), key=lambda item: -item[1])
    print(f"modules: {len(lines)}, lines: {sum(lines.values())}, "
          f"median module: {statistics.median(lines.values()):.0f} lines")
    print("largest modules: " + ", ".join(f"{m} {n}" for m, n in largest[:6]))
    print(f"functions: {len(functions)}, "
          f"median function: {statistics.median(n for n, _ in functions):.0f} lines")
    print("longest functions: " + ", ".join(f"{name} {n}" for n, name in
                                             sorted(functions, reverse=True)[:6]))


def main(argv: list[str]) -> None:
    if not argv:
        measure(ROOT / PACKAGE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        measure(tree_at(argv[0], Path(tmp)))


if __name__ == "__main__":
    main(sys.argv[1:])
