"""The layering of docs/architecture.md, checked on the source: the module import graph
(imports inside functions included) has no cycle, every module imports only its own
layer or the layers below, the core imports no RL/CL framework, library code never
imports the compatibility re-exports, and scripts/ holds entry points only. Owners write
their own state: no module writes another object's private attributes or imports another
module's private names (explicit, reasoned exceptions only)."""

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



def absolute_base(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module name an ``import from`` in ``module`` reads from."""
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_pkg else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return base

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
                base = absolute_base(module, is_pkg, child)
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


# ---------------------------------------------------------------------------- owners
#: methods that change the container they are called on
MUTATORS = {"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear",
            "remove", "add", "discard"}
_TORCH_SWAP = ("torch has no public API to turn a Module's parameter into a buffer of the "
               "same name (and back) in place: install/uninstall move `weight` between "
               "torch's own dicts, keeping its position (parameters() and state_dict() "
               "order unchanged), and the forward override in the instance dict")
#: writes of another object's private state that are allowed, (file, function, written
#: object) -> why. Each is an exception to the rule: keep them few.
PRIVATE_WRITES_ALLOWED: dict[tuple[str, str, str], str] = {
    ("sparse_agents/sb3/pruned.py", "_rebuild", "new.__dict__"):
        "rebuilds the algorithm from the dense one's attributes the way SB3's own "
        "BaseAlgorithm.load does (__dict__.update): SB3 has no public setter for them",
    **{("sparse_agents/compute/linear.py", f"CondensedLinearTraining.{fn}", target): _TORCH_SWAP
       for fn, target in [("install", "module._parameters"), ("install", "module._buffers"),
                          ("uninstall", "module.__dict__"), ("uninstall", "module._parameters"),
                          ("uninstall", "module._buffers")]},
    ("sparse_agents/condensed/convert.py", "_attach_state", "target._condense_state"):
        "convert's own attribute on the copy condense() made (refresh() reads it back); "
        "not an attribute of the model's class",
}


def _is_private(attr: str) -> bool:
    return attr.startswith("_")


def _method_owner(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str | None, bool]:
    """The first parameter of a method (``self``/``cls``; ``None`` for a staticmethod)
    and whether it is a classmethod."""
    decorators = {ast.unparse(d) for d in fn.decorator_list}
    args = fn.args.posonlyargs + fn.args.args
    if "staticmethod" in decorators or not args:
        return None, False
    return args[0].arg, "classmethod" in decorators


def _own_copies(fn: ast.AST, me: str, of_class: bool) -> set[str]:
    """Local names a method binds to a new instance of its own class (``__deepcopy__``
    and alternative constructors fill in the new object's private fields)."""
    makers = {f"object.__new__(type({me}))", f"copy.copy({me})"}
    classes = {f"type({me})", f"{me}.__class__"}
    if of_class:
        makers.add(f"object.__new__({me})")
        classes.add(me)
    out = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and (
                ast.unparse(node.value) in makers or ast.unparse(node.value.func) in classes):
            out.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return out


def _foreign_private(node: ast.AST, owners: set[str]) -> str | None:
    """``X._attr`` (as written) when ``node`` is a private attribute of an object other
    than ``owners`` (the method's ``self``/``cls`` and copies of its class)."""
    if isinstance(node, ast.Attribute) and _is_private(node.attr):
        base = node.value
        if not (isinstance(base, ast.Name) and base.id in owners):
            return ast.unparse(node)
    return None


def _targets(node: ast.AST) -> list[ast.AST]:
    """What an assignment, augmented/annotated assignment or ``del`` writes (unpacked)."""
    if isinstance(node, ast.Assign | ast.Delete):
        found = list(node.targets)
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        found = [node.target]
    else:
        return []
    flat: list[ast.AST] = []
    while found:
        t = found.pop()
        if isinstance(t, ast.Tuple | ast.List):
            found.extend(t.elts)
        elif isinstance(t, ast.Starred):
            found.append(t.value)
        else:
            flat.append(t.value if isinstance(t, ast.Subscript) else t)
    return flat


def private_writes(path: Path) -> list[tuple[int, str, str]]:
    """``(line, function, written object)`` for every write of another object's private
    state in ``path``: ``X._a = ...`` (augmented, annotated, ``del``), ``X._a[k] = ...``,
    ``X._a.update(...)`` and other mutating methods, ``setattr(X, "_a", ...)`` (also
    ``object.__setattr__``, ``delattr``), ``X.__class__ = ...`` and ``X.__dict__`` writes,
    for ``X`` other than the enclosing method's ``self``/``cls`` (closures included)."""
    out: list[tuple[int, str, str]] = []

    def check(node: ast.AST, where: str, owners: set[str]) -> None:
        for target in _targets(node):
            hit = _foreign_private(target, owners)
            if hit:
                out.append((node.lineno, where, hit))
        if not isinstance(node, ast.Call):
            return
        func = node.func
        if ast.unparse(func) in ("setattr", "delattr", "object.__setattr__",
                                 "object.__delattr__") and len(node.args) >= 2:
            obj, attr = node.args[0], node.args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str) \
                    and _is_private(attr.value) \
                    and not (isinstance(obj, ast.Name) and obj.id in owners):
                out.append((node.lineno, where, f"{ast.unparse(obj)}.{attr.value}"))
        elif isinstance(func, ast.Attribute) and func.attr in MUTATORS:
            hit = _foreign_private(func.value, owners)
            if hit:
                out.append((node.lineno, where, hit))

    def visit(node: ast.AST, scope: list[str], owners: set[str], in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, [*scope, child.name], set(), True)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = set(owners)  # a closure writes its method's object
                me, of_class = _method_owner(child) if in_class else (None, False)
                if me is not None:
                    inner |= {me} | _own_copies(child, me, of_class)
                visit(child, [*scope, child.name], inner, False)
            else:
                check(child, ".".join(scope) or "<module>", owners)
                visit(child, scope, owners, in_class)

    visit(ast.parse(path.read_text()), [], set(), False)
    return out


def test_no_module_writes_another_objects_private_state():
    found: dict[tuple[str, str, str], int] = {}
    for path in MODULES.values():
        rel = path.relative_to(ROOT).as_posix()
        for line, where, target in private_writes(path):
            found.setdefault((rel, where, target), line)
    bad = [f"{rel}:{line} {where}: writes {target}"
           for (rel, where, target), line in found.items()
           if (rel, where, target) not in PRIVATE_WRITES_ALLOWED]
    assert not bad, ("state written from outside its owner (give the owner a public "
                     "method, or allow it in PRIVATE_WRITES_ALLOWED with a reason):\n"
                     + "\n".join(bad))
    stale = [key for key in PRIVATE_WRITES_ALLOWED if key not in found]
    assert not stale, f"allowed writes that no longer happen: {stale}"


def test_private_write_check_sees_each_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "def f(layer, cls):\n"
        "    layer._chain, layer.name = 1, 2\n"
        "    layer.__class__ = cls\n"
        "    cls._n += 1\n"
        "    layer._cache[0] = 1\n"
        "    layer._hooks.append(3)\n"
        "    setattr(layer, '_link', 0)\n"
        "    object.__setattr__(layer, '_keep', 0)\n"
        "    layer.__dict__.update({})\n"
        "class A:\n"
        "    def __init__(self, other):\n"
        "        self._x = 1\n"
        "        other._x = 2\n"
        "        def hook():\n"
        "            self._y = 3\n"
        "        self.child._z = 4\n"
        "    def __deepcopy__(self, memo):\n"
        "        new = object.__new__(type(self))\n"
        "        new.__dict__['_x'] = 1\n"
        "    @classmethod\n"
        "    def make(cls):\n"
        "        obj = cls()\n"
        "        obj._x = 1\n"
        "        cls._count = 1\n")
    assert [(w, t) for _, w, t in private_writes(src)] == [
        ("f", "layer._chain"), ("f", "layer.__class__"), ("f", "cls._n"),
        ("f", "layer._cache"), ("f", "layer._hooks"), ("f", "layer._link"),
        ("f", "layer._keep"), ("f", "layer.__dict__"),
        ("A.__init__", "other._x"), ("A.__init__", "self.child._z")]


#: private names one module imports from another, (importer, imported module, name) -> why
PRIVATE_IMPORTS_ALLOWED: dict[tuple[str, str, str], str] = {}


def private_imports(module: str) -> list[tuple[str, str, int]]:
    """``(imported module, private name, line)`` for every ``from m import _name`` of
    another project module."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = absolute_base(module, is_pkg, node)
        target = resolve(base)
        if target is None or target == module:
            continue
        out += [(target, a.name, node.lineno) for a in node.names
                if a.name.startswith("_") and resolve(f"{base}.{a.name}") != f"{base}.{a.name}"]
    return out


def test_no_module_imports_another_modules_private_names():
    found = {(m, t, name): line for m in MODULES for t, name, line in private_imports(m)}
    bad = [f"{m}:{line} imports {name} from {t}" for (m, t, name), line in found.items()
           if (m, t, name) not in PRIVATE_IMPORTS_ALLOWED]
    assert not bad, ("a private name of another module (give it a public API, or allow it "
                     "in PRIVATE_IMPORTS_ALLOWED with a reason):\n" + "\n".join(bad))
    stale = [key for key in PRIVATE_IMPORTS_ALLOWED if key not in found]
    assert not stale, f"allowed imports that no longer happen: {stale}"
