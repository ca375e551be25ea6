"""No import circles in ``mercury``: neither between modules nor between its packages.

A circle means a definition lives in the wrong file (an error class, a factory): it makes
import order matter and hides which layer depends on which. Every import counts, including
those inside functions and ``TYPE_CHECKING`` blocks: deferring an import hides a circle, it
does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mercury.config import REPO_ROOT

PACKAGE = REPO_ROOT / "mercury"


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the mercury modules it imports (``from a import b`` counts ``a.b`` when that
    is a module, else ``a``)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        found = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                              else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """``mercury.features.definition.dsl`` -> ``mercury.features``; top-level modules are their
    own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_itself_back():
    found = cycles(import_graph())
    assert not found, "import circles between modules: " + "; ".join(" <-> ".join(c)
                                                                     for c in found)


def test_no_package_imports_itself_back():
    graph: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        graph.setdefault(package_of(module), set()).update(
            package_of(m) for m in imported if package_of(m) != package_of(module))
    found = cycles(graph)
    assert not found, "import circles between packages: " + "; ".join(" <-> ".join(c)
                                                                      for c in found)


def test_the_walk_sees_a_circle():
    """The check itself can fail: two modules importing each other are found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    graph = import_graph()
    assert "mercury.features.definition.dsl" in graph["mercury.features.definition.compile"]
