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


STAGES = ("sampling", "scoring", "training", "evaluation", "annotation")
UPPER = ("rankalign.workflows", "rankalign.api", "rankalign.cli")
# the stage -> stage imports docs/design.md §0 allows: evaluation scores with scoring's rewards;
# every other stage stands on core alone
STAGE_GRAPH = {stage: set() for stage in STAGES} | {"evaluation": {"scoring"}}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_core_does_not_import_stages():
    """core (data, tokenization, models, logprobs, losses, metrics, ...) <- stages <- workflows
    <- api <- cli: a core module (the data/ package's included) imports no stage package, a
    stage no workflow."""
    for m, edges in _imports().items():
        targets = {t for t, _ in edges}
        if m == "rankalign" or m.startswith(UPPER):
            continue
        if _stage(m) is None:  # a core module
            assert not {t for t in targets if _stage(t) or t.startswith(UPPER)}, m
        else:
            assert not {t for t in targets if t.startswith(UPPER)}, m


def test_stage_imports_follow_the_design_graph():
    """A stage imports another stage only where STAGE_GRAPH (docs/design.md §0) says so."""
    found = {
        (_stage(m), _stage(t))
        for m, edges in _imports().items()
        for t, _ in edges
        if _stage(m) and _stage(t) and _stage(m) != _stage(t)
    }
    extra = sorted(f"{a} -> {b}" for a, b in found if b not in STAGE_GRAPH[a])
    assert not extra, f"stage imports outside the design's graph: {extra}"
    assert set(STAGE_GRAPH) == {p.name for p in (SRC / "rankalign").iterdir() if p.name in STAGES}


def test_the_stage_graph_check_can_fail():
    assert _stage("rankalign.training.policy") == "training"
    assert _stage("rankalign.losses") is None and _stage("rankalign.data.files") is None
    assert "sampling" not in STAGE_GRAPH["training"]


def test_every_loss_has_a_spec_with_a_learning_rate():
    """The registry is the specs: a loss without one, or without a learning rate (it would train
    at TrainingArguments' 5e-5), fails here; so does a per-loss default table that forgot one."""
    from rankalign import losses as L
    from rankalign.training.config import LOSS_DEFAULTS

    assert list(L.LOSSES) == list(L.SPECS)
    for name, fn in L.LOSSES.items():
        spec = L.SPECS[name]
        assert spec.fn is fn and spec.name == name
        assert isinstance(spec.learning_rate, float) and 0 < spec.learning_rate < 1e-3, name
        assert LOSS_DEFAULTS[name]["learning_rate"] == spec.learning_rate, name
    assert L.NEEDS_REFERENCE == {n for n, s in L.SPECS.items() if s.needs_reference}
    assert L.MIN_RESPONSES == {n: s.min_responses for n, s in L.SPECS.items()}


def test_every_spec_option_reaches_train_help(capsys, monkeypatch):
    """Each loss option is a `rankalign train` flag, listed in --help with its range or choices
    and the default of every loss that takes it."""
    import pytest

    from rankalign import losses as L
    from rankalign.cli import main

    monkeypatch.setenv("COLUMNS", "100000")  # argparse would wrap inside `listwise-dpo`
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for spec in L.SPECS.values():
        for option in spec.options:
            at = shown.index(f"--{option.name} ")
            text = shown[at : shown.index(" --", at + 3)]
            assert spec.name in text, (option.name, spec.name)
            assert option.check is None or option.check in text, option.name
            assert all(c in text for c in option.choices or ()), option.name


def test_core_modules_of_the_losses_import_only_torch():
    """losses.py, loss_core.py and loss_spec.py: pure functions of tensors and their specs."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"torch"}
    for name in ("losses", "loss_core", "loss_spec"):
        for node in ast.walk(ast.parse((SRC / "rankalign" / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.module in ("rankalign.loss_core", "rankalign.loss_spec"):
                    continue
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, (name, roots)
