"""The package's shape, drawn from its imports: layers that only import downwards, no import
cycles, and modules short enough to read (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "ttexp"

LAYERS = [
    {"errors", "files"},
    {"config"},
    {"models"},
    {"data"},
    {"backends"},
    {"record"},
    {"train"},
    {"tasks"},
    {"sweeps"},
    {"runner", "callbacks", "worker", "__main__", "tools",
     "bench", "compare", "doctor", "import_config", "summarize", "validate_data"},
]
"""Bottom to top: a module may import its own layer and the ones below, never one above."""

MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ttexp module ``path`` imports, at any depth (imports inside functions count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ttexp")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ttexp"):
            if node.module == "ttexp":
                out |= {f"ttexp.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py") if "conf" not in p.parts}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imp in _imports(path):
            while imp not in modules and "." in imp:
                imp = imp.rsplit(".", 1)[0]  # `from ttexp.x import y` where y is not a module
            if imp in modules and imp != name and imp != "ttexp":
                deps.add(imp)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer; add its folder to LAYERS")


def test_every_module_has_a_layer():
    for module in _graph():
        if module != "ttexp":
            _layer(module)


def test_no_upward_imports():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() if m != "ttexp"
              for d in deps if _layer(d) > _layer(m)]
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_short(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines (limit {MAX_LINES}): split it"
