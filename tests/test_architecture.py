"""The import rules of docs/architecture.md, checked on the source: no cycles between stations, and the
boundaries that keep backends, interventions and the zoo apart."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vrp_bench

PACKAGE = Path(vrp_bench.__file__).parent


def imported_names(path: Path) -> list[str]:
    """Every absolute module name a Python file imports (anywhere in it, lazily too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def station(module: str) -> str:
    """The architecture's unit of a module: ``vrp_bench.api.<module>`` each, else the top-level package."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[1:2] == ["api"] and len(parts) > 2 else ".".join(parts[:2])


def import_graph() -> dict[str, set[str]]:
    """Station -> the stations its modules import (any import statement, also inside functions)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if {"tasks", "checkpoints"} & set(relative.parts):
            continue
        source = station(".".join(relative.parts).removesuffix(".__init__"))
        graph[source] |= {station(n) for n in imported_names(path) if n.startswith("vrp_bench.")} - {source}
    return graph


def test_stations_form_no_cycle():
    graph = import_graph()

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for target in graph.get(stack.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    cycles = [(a, b) for a in graph for b in graph[a] if a in reachable(b)]
    assert not cycles, f"import cycles between stations: {cycles}"


def test_boundaries():
    graph = import_graph()
    assert "vrp_bench.models" not in graph["vrp_bench.interventions"]  # only the Intervenable interface
    assert "vrp_bench.zoo" not in graph["vrp_bench.models"]  # a family needs no training recipe
    assert not {"vrp_bench.signals", "vrp_bench.evaluator", "vrp_bench.report"} & graph["vrp_bench.models"]
    assert {s for s in graph["vrp_bench.signals"]} <= {
        "vrp_bench.api.errors", "vrp_bench.api.metrics", "vrp_bench.api.registry", "vrp_bench.api.traces"}
    assert graph["vrp_bench.api.traces"] == set()
    for name, imported in graph.items():
        if name not in ("vrp_bench.cli", "vrp_bench.__main__"):
            assert "vrp_bench.cli" not in imported, name


def test_only_the_integrations_import_lmms_eval():
    """VRP-Bench's core never imports lmms-eval (an optional extra): only ``vrp_bench.integrations`` (VRP's models
    as lmms-eval models) does, and nothing else in the package imports the integrations."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if "checkpoints" in relative.parts:
            continue
        module = ".".join(relative.parts).removesuffix(".__init__")
        if station(module) == "vrp_bench.integrations":
            continue
        offenders += [f"{module} imports {n}" for n in imported_names(path)
                      if n.split(".")[0] == "lmms_eval" or station(n) == "vrp_bench.integrations"]
    assert not offenders, offenders
