"""The package's shape, read with `ast` (nothing is imported): no import cycle inside `elchat`, no
import of an elchat module hidden inside a function, short functions, the method's published
settings written in one module only, and `UserError` taken from `elchat.errors`.

Each test prints every offender (module, line, what to do), not just the first.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "elchat"
MAX_LINES = 60  # end_lineno - lineno + 1, docstring included

# Plotting functions of elchat/report.py allowed past MAX_LINES, each with the reason; the key is
# "report.py:<function>". Empty: every figure of the report fits (keep it that way if you can).
LONG_PLOTTING: dict[str, str] = {}

# The published settings of elchat/method.py: these values may be written nowhere else.
PUBLISHED = {(0, 1, -2, -1): "method.TRANSITION_LAYERS", (0.3, 0.5, 0.5, 0.3): "method.ELCHAT_T"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    """module name -> (path, parsed tree) for every elchat/**/*.py."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


SOURCES = _sources()


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(node, module: str, path: Path) -> list[str]:
    """The elchat modules an import statement loads (a package's submodules and the package)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "elchat" or a.name.startswith("elchat.")]
    if node.level:
        base = _package_of(module, path)
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    elif node.module and (node.module == "elchat" or node.module.startswith("elchat.")):
        target = node.module
    else:
        return []
    subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in SOURCES]
    # `from . import x` where x is a module loads x; any other name comes from `target` itself.
    return subs + ([target] if len(subs) < len(node.names) else [])


def _is_type_checking(node) -> bool:
    test = node.test
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _top_level_imports(tree):
    """Import statements that run when the module is imported (not inside a def or class)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node):
            continue
        else:
            stack.extend(ast.iter_child_nodes(node))


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, (path, tree) in SOURCES.items():
        edges = set()
        for node in _top_level_imports(tree):
            for target in _imported(node, module, path):
                edges.add(target)
                # Loading a submodule runs its parent packages' __init__ first (the module's own
                # packages are already loaded when it runs).
                parent = target.rpartition(".")[0]
                while parent.count(".") >= 1 and not module.startswith(parent + "."):
                    edges.add(parent)
                    parent = parent.rpartition(".")[0]
        graph[module] = {t for t in edges if t in SOURCES and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                comps.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in comps]


def _cycle_in(graph, comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return sorted(comp)


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_import_cycle():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles inside elchat (top-level imports):\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_function_local_import_of_elchat_modules():
    offenders = []
    for module, (path, tree) in SOURCES.items():
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _imported(node, module, path):
                    offenders.append(f"{_rel(path)}:{node.lineno} in {fn.name}(): "
                                     f"{ast.unparse(node)}  (move it to the top of the module)")
    assert not offenders, "function-local imports of elchat modules:\n  " + "\n  ".join(offenders)


def test_functions_are_short():
    for key in LONG_PLOTTING:
        file, _, name = key.partition(":")
        assert file == "report.py" and name.startswith("fig_"), f"{key}: only report's figures may be long"
    offenders = []
    for module, (path, tree) in SOURCES.items():
        for fn in _functions(tree):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_LINES and f"{path.name}:{fn.name}" not in LONG_PLOTTING:
                offenders.append(f"{_rel(path)}:{fn.lineno} {fn.name}() has {lines} lines")
    assert not offenders, (f"functions over {MAX_LINES} lines (split them into named steps):\n  "
                           + "\n  ".join(offenders))


def _literal(node):
    """A tuple/list of numbers as a tuple (negative numbers included), else None."""
    if not isinstance(node, (ast.Tuple, ast.List)):
        return None
    try:
        values = tuple(ast.literal_eval(e) for e in node.elts)
    except ValueError:
        return None
    return values if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) else None


def _as_numbers(text: str):
    """"0,1,-2,-1" (a CLI default, say) as a tuple of numbers, else None."""
    try:
        return tuple(ast.literal_eval(p) for p in text.split(","))
    except (ValueError, SyntaxError):
        return None


def test_published_settings_are_written_once():
    offenders = []
    for module, (path, tree) in SOURCES.items():
        if module == "elchat.method":
            continue
        for node in ast.walk(tree):
            value = _literal(node)
            if value is None and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and "," in node.value and len(node.value) < 40:
                value = _as_numbers(node.value)
            if value in PUBLISHED:
                offenders.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}  "
                                 f"(use {PUBLISHED[value]})")
    assert not offenders, "published settings written outside elchat/method.py:\n  " + "\n  ".join(offenders)


def test_user_error_comes_from_errors_module():
    offenders = []
    for module, (path, tree) in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "elchat.cli" in _imported(node, module, path) \
                    and any(a.name == "UserError" for a in node.names):
                offenders.append(f"{_rel(path)}:{node.lineno}: {ast.unparse(node)}  "
                                 "(import it from elchat.errors)")
    assert not offenders, "UserError imported from elchat.cli:\n  " + "\n  ".join(offenders)


@pytest.mark.parametrize("line, module, expected", [
    ("from . import runs, params", "elchat.report", ["elchat.runs", "elchat.params"]),
    ("from .atomic import atomic_dir", "elchat.report", ["elchat.atomic"]),
    ("from .results import metric", "elchat.evaluation.mc", ["elchat.evaluation.results"]),
    ("from ..packing import pack", "elchat.evaluation.bpc", ["elchat.packing"]),
    ("import elchat.evaluation as ev", "elchat.report", ["elchat.evaluation"]),
    ("import numpy as np", "elchat.report", []),
])
def test_import_resolution(line, module, expected):
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    assert _imported(ast.parse(line).body[0], module, path) == expected
