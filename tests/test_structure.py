"""The package's shape: dependencies point down the pipeline (no import cycle among rankalign
modules, function-level imports included), and no private name is imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def _imports() -> dict[str, list[tuple[str, str | None]]]:
    """module -> [(imported module, imported name or None)], every import statement (module
    level, inside functions, under TYPE_CHECKING alike)."""
    modules = {_module(p): p for p in (SRC / "rankalign").rglob("*.py")}
    found = {}
    for name, path in modules.items():
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}: relative import (use rankalign.X)")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rankalign"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    edges.append((target, None) if target in modules else (node.module, alias.name))
            elif isinstance(node, ast.Import):
                edges += [(a.name, None) for a in node.names if a.name.startswith("rankalign")]
        found[name] = edges
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph = {m: {t for t, _ in edges if t != m} for m, edges in _imports().items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_crosses_modules():
    crossing = [
        f"{m} imports {t}.{n}"
        for m, edges in _imports().items()
        for t, n in edges
        if n and n.startswith("_") and not n.startswith("__") and t != m
    ]
    assert not crossing, crossing


def test_core_does_not_import_stages():
    """core (data, tokenization, models, logprobs, losses, metrics, ...) <- stages <- workflows
    <- api <- cli: a core module imports no stage package, a stage no workflow."""
    stages = (
        "rankalign.sampling",
        "rankalign.scoring",
        "rankalign.training",
        "rankalign.evaluation",
    )
    upper = ("rankalign.workflows", "rankalign.api", "rankalign.cli")
    for m, edges in _imports().items():
        targets = {t for t, _ in edges}
        if m.count(".") == 1 and m not in upper:  # a core module
            assert not {t for t in targets if t.startswith(stages + upper)}, m
        if m.startswith(stages):
            assert not {t for t in targets if t.startswith(upper)}, m
