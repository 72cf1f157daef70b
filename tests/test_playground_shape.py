"""The playground's modules depend one way (bot/playground/host.py): none imports one that imports it,
not even for type checking, and each imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PLAYGROUND = Path(__file__).resolve().parents[1] / "bot" / "playground"
MODULES = sorted(p.stem for p in PLAYGROUND.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The playground modules ``module`` imports, anywhere in it (TYPE_CHECKING blocks and functions too)."""
    tree = ast.parse((PLAYGROUND / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name.startswith("bot.playground."):
                found.add(name.split(".")[2])
            elif name == "bot.playground" and isinstance(node, ast.ImportFrom):
                found.update(a.name for a in node.names if a.name in MODULES)
    return found


def test_the_playground_modules_import_each_other_without_a_cycle():
    graph = {m: _imports(m) for m in MODULES}
    assert graph["slack"] >= {"webapi", "deliver", "page", "state"}  # the test sees imports at all
    order: list[str] = []
    visiting: list[str] = []

    def visit(module: str) -> None:
        if module in order:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting[visiting.index(module):], module])
        visiting.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        visiting.pop()
        order.append(module)

    for module in MODULES:
        visit(module)

    def below(module: str) -> set[str]:
        return set().union(*({d} | below(d) for d in graph[module])) if graph[module] else set()

    for low, high in [("wire", "state"), ("state", "host"), ("host", "webapi"), ("webapi", "page"),
                      ("deliver", "page"), ("page", "slack"), ("slack", "run")]:
        assert low in below(high) and high not in below(low), (low, high)


@pytest.mark.parametrize("module", MODULES)
def test_each_playground_module_imports_on_its_own(module: str):
    done = subprocess.run([sys.executable, "-c", f"import bot.playground.{module}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
