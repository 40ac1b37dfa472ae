"""The layering of docs/architecture.md, checked on the source: the module import graph
(imports inside functions included) has no cycle, every module imports only its own
layer or the layers below, the core imports no RL/CL framework, library code never
imports the compatibility re-exports, and scripts/ holds entry points only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sparse_agents", "continual", "envs")
LAYERS = {"core": 1, "adapter": 2, "experiment": 3}
#: old import paths kept as re-exports after the move; nothing in the library uses them
COMPAT = {"continual.task_masks", "continual.plugins", "sparse_agents.sb3.continual",
          "sparse_agents.sb3.experiment"}
#: frameworks the core must not import
FRAMEWORKS = ("stable_baselines3", "sb3_contrib", "avalanche", "gymnasium", "rl_zoo3")


def layer_of(module: str) -> str:
    """The layer a module belongs to, from its path."""
    parts = module.split(".")
    if parts[0] in ("continual", "envs"):
        return "experiment"
    sub = parts[1] if len(parts) > 1 else ""
    if sub in ("sb3", "avalanche"):
        return "adapter"
    if sub in ("experiments", "study", "cli"):
        return "experiment"
    return "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules(top: str = "") -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = source_modules()


def resolve(name: str) -> str | None:
    """The project module ``name`` refers to (``a.b.c`` may be a name inside ``a.b``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of a project module."""
    tree = ast.parse(MODULES[module].read_text())
    is_pkg = MODULES[module].name == "__init__.py"
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{a.name}" for a in child.names] + [base]
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    out.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    # ``from a.b import c`` gives both a.b.c and a.b: keep the most specific per line
    best: dict[int, tuple[str, int, bool]] = {}
    for target, line, inner in out:
        if line not in best or len(target) > len(best[line][0]):
            best[line] = (target, line, inner)
    return list(best.values())


GRAPH = {m: imports_of(m) for m in MODULES}


def find_cycle(graph: dict[str, list[tuple[str, int, bool]]]) -> list[str] | None:
    """One import cycle as a module path, or ``None``."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for target, _, _ in graph[node]:
            if colour.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in colour:
                found = dfs(target)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for node in graph:
        if node not in colour:
            found = dfs(node)
            if found:
                return found
    return None


def test_module_import_graph_has_no_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_cycle_finder_sees_a_cycle_hidden_in_a_function():
    graph = {"a": [("b", 1, False)], "b": [("a", 9, True)], "c": []}
    assert find_cycle(graph) == ["a", "b", "a"]


def test_every_module_imports_only_its_layer_or_below():
    bad = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)}) at line {line}"
           for m, edges in GRAPH.items() if m not in COMPAT
           for t, line, _ in edges if LAYERS[layer_of(t)] > LAYERS[layer_of(m)]]
    assert not bad, "\n".join(bad)


def test_library_never_imports_the_compatibility_paths():
    bad = [f"{m} imports {t} (line {line})" for m, edges in GRAPH.items() if m not in COMPAT
           for t, line, _ in edges if t in COMPAT and not m.endswith("__init__")]
    assert not bad, "\n".join(bad)


def test_core_imports_no_rl_or_cl_framework():
    bad = []
    for module, path in MODULES.items():
        if layer_of(module) != "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{module}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_thin_entry_points(path):
    tree = ast.parse(path.read_text())
    defs = [n.name for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    assert not defs, f"{path.name} defines {defs}: move the logic into the package"


def test_layer_map_covers_the_planned_layout():
    assert layer_of("sparse_agents.topology") == "core"
    assert layer_of("sparse_agents.task_masks") == "core"
    assert layer_of("sparse_agents.condensed.kernels") == "core"
    assert layer_of("sparse_agents.sb3.mixin") == "adapter"
    assert layer_of("sparse_agents.avalanche.plugins") == "adapter"
    assert layer_of("sparse_agents.experiments.rl") == "experiment"
    assert layer_of("continual.experiment") == "experiment"
    assert {"sparse_agents.task_masks", "sparse_agents.sb3.task_policy",
            "sparse_agents.experiments.rl_stream"} <= set(MODULES)
