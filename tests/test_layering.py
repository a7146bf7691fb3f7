"""The import graph of tapa_lab is a DAG with fixed layers: every import (at module top or inside a function) goes to
a lower layer, and the modules inside each package import each other without cycles.

Layers, lowest first (a package may import only from strictly lower layers, and from itself):
errors | kernels, devices, data | posenc | model | lit | cli_parser | cli | eval | hf | bench, ablation |
__main__.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tapa_lab"

LAYERS: dict[str, int] = {
    "errors": 0,
    "kernels": 1, "devices": 1, "data": 1,
    "posenc": 2,
    "model": 3,
    "lit": 4,
    "cli_parser": 5,
    "cli": 6,
    "eval": 7,
    "hf": 8,
    "bench": 9, "ablation": 9,
    "__main__": 10,
}


def module_name(path: Path) -> str:
    """``tapa_lab/kernels/dispatch.py`` -> ``tapa_lab.kernels.dispatch``; packages are named by their folder."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``tapa_lab`` module ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "tapa_lab")
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: {modules of tapa_lab it imports}}`` over every file of the package (existing modules only)."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: {name for name in imported_modules(path) if name in files and name != module}
            for module, path in files.items()}


def layer_of(module: str) -> str:
    """The layer key of a module: its sub-package, or its own name for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tapa_lab"


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up or across layers, as ``"a -> b"`` lines."""
    violations = []
    for module, targets in graph.items():
        source = layer_of(module)
        for target in targets:
            into = layer_of(target)
            if into == "tapa_lab":
                continue  # the package root re-exports nothing the layers depend on
            if source != into and LAYERS[into] >= LAYERS.get(source, len(LAYERS)):
                violations.append(f"{module} ({source}) -> {target} ({into})")
    return sorted(violations)


def cycles(graph: dict[str, set[str]], modules: Iterable[str]) -> list[list[str]]:
    """Import cycles among ``modules`` (depth-first search; each cycle reported once from where it was found)."""
    inside = set(modules)
    state: dict[str, int] = {}
    found: list[list[str]] = []
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ()) & inside):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(inside):
        if module not in state:
            visit(module)
    return found


def test_every_top_level_part_of_the_package_has_a_layer():
    parts = {layer_of(module) for module in import_graph()} - {"tapa_lab"}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {sorted(parts - set(LAYERS))}"


def test_imports_only_go_down_the_layers():
    assert layering_violations(import_graph()) == []


@pytest.mark.parametrize("package", sorted({layer_of(m) for m in import_graph()} - {"tapa_lab"}))
def test_modules_inside_a_package_import_each_other_without_cycles(package):
    graph = import_graph()
    assert cycles(graph, [m for m in graph if layer_of(m) == package]) == []


def test_nothing_imports_the_entry_point():
    assert [m for m, targets in import_graph().items() if "tapa_lab.__main__" in targets] == []


def test_the_checks_catch_a_reintroduced_back_edge():
    graph = import_graph()
    graph["tapa_lab.kernels.launch"] = graph["tapa_lab.kernels.launch"] | {"tapa_lab.model.decoder"}
    graph["tapa_lab.kernels.launch"] |= {"tapa_lab.kernels.dispatch"}
    assert "tapa_lab.kernels.launch (kernels) -> tapa_lab.model.decoder (model)" in layering_violations(graph)
    kernel_cycles = cycles(graph, [m for m in graph if layer_of(m) == "kernels"])
    assert any("tapa_lab.kernels.launch" in cycle for cycle in kernel_cycles)
