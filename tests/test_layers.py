"""The import graph of hostcreator/: no cycle, and every import points down the layers.

The layers are those of the README's Layout section. A module may import its own
package and any lower layer, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PACKAGE = Path(__file__).parent.parent / "hostcreator"

# Lowest first. A top-level module not named here is of the base layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "log", "run", "paths", "config", "resources", "faults", "__init__"),
    ("state", "distro"),
    ("host",),
    ("disk", "domain"),
    ("build",),
    ("vm",),
    ("cli", "__main__", "manpage"),
)


def layer_of(module: str) -> int:
    head = module.split(".")[1] if "." in module else module
    for rank, names in enumerate(LAYERS):
        if head in names:
            return rank
    return 0


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The hostcreator modules PATH imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hostcreator")}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith("hostcreator"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py")
                          .exists() or (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                          else node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path) if i in modules and i != name}
            for name, path in modules.items()}


def test_the_import_graph_has_no_cycle():
    edges = graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node):], node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(edges[node]):
            # A package's __init__ is not an edge of its modules (hostcreator.distro).
            if not node.startswith(target + "."):
                visit(target, [*path, node])
        done.add(node)

    for node in sorted(edges):
        visit(node, [])


def test_imports_point_down_the_layers():
    upward = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items() for target in targets
        if layer_of(target) > layer_of(source)
    )
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_every_package_is_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    named = {n for names in LAYERS for n in names}
    assert packages <= named, f"packages in no layer: {packages - named}"
