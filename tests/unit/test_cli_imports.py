"""The command line has no import cycle: each `pooler.cli` module imports alone in a fresh
interpreter, and no chain of imports among them (top-level or inside a function) leads back
to where it started. Shared helpers live in `pooler.cli.common`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pooler

PACKAGE_DIR = Path(pooler.__file__).parent
CLI_DIR = PACKAGE_DIR / "cli"
CLI_MODULES = sorted(f"pooler.cli.{p.stem}" for p in CLI_DIR.glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path, module: str) -> set[str]:
    """Every `pooler...` module `path` imports, at any depth of its code (function-level
    imports too), except under `if TYPE_CHECKING:` (no import at run time)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            found.add(base)
            # `from pooler.cli import admin` imports the submodule pooler.cli.admin.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("pooler")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if node.level == 0:
        return node.module or ""
    parent = module.rsplit(".", node.level)[0]
    return f"{parent}.{node.module}" if node.module else parent


def import_graph(modules: list[str]) -> dict[str, set[str]]:
    """module -> the modules of `modules` it imports."""
    known = set(modules)
    graph = {}
    for module in modules:
        path = PACKAGE_DIR.parent / (module.replace(".", "/") + ".py")
        graph[module] = imported_modules(path, module) & known - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the path that closes it, or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt, [*path, nxt])
                if found is not None:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found is not None:
                return found
    return None


def test_the_cycle_finder_finds_a_lazy_import_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_cli_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph(CLI_MODULES)
    assert "pooler.cli.admin_keys" in graph["pooler.cli.admin"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("module", CLI_MODULES)
def test_each_cli_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
