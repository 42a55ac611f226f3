"""The layering contract, checked statically (``ast``, nothing imported):

(a) ``compression_core``'s modules import each other without a cycle, and so do the dashboard's (which import each
    other by their names inside ``dashboard/``: ``import state``, ``from store import ...``);
(b) the library imports neither ``dashboard``, ``benchmarks`` nor ``sample_models`` (anywhere, also inside
    functions), and the dashboard imports no ``benchmarks`` (``tests/test_workload.py`` also keeps the library from
    even naming ``sample_models``);
(c) an import inside a function is of a module outside the library and says why on its line (or the line above):
    a heavy or optional dependency (onnx, onnxruntime, optuna, ray), never a way around a cycle.

The graph in (a) has an edge A -> B for every module-level import in A of B, and A -> P for every package P that
import passes through (``from .ort_engine import`` in ``quantize/static.py`` runs nothing extra, but
``from ..quantize.int4 import`` in ``ort_deploy.py`` first runs ``quantize/__init__.py``, which imports the
handlers). Without those package edges a cycle that only closes through a package's ``__init__`` would pass here
and fail with "partially initialized module" in whichever order the modules happen to be imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "compression_core"
NEVER_IMPORTED_BY_THE_LIBRARY = ("dashboard", "benchmarks", "sample_models")


def _modules(package: str) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package __init__)} of every .py file under ``package``."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _imports(tree: ast.AST):
    """(node, inside a function) for every import statement of a module (not those under ``if TYPE_CHECKING:``)."""
    def walk(node, inside):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never runs
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, inside
            yield from walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    yield from walk(tree, False)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known) -> list[str]:
    """The absolute names an import statement loads (``from pkg import sub`` loads ``pkg.sub`` when it is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def _dashboard_modules() -> dict[str, tuple[Path, bool]]:
    """The dashboard's modules by the names they import each other with (``dashboard/`` is on ``sys.path`` when the
    app runs: ``state``, ``store.database``, ``pages.explore``)."""
    return {name.removeprefix("dashboard."): v for name, v in _modules("dashboard").items() if name != "dashboard"}


def _import_graph(mods: dict[str, tuple[Path, bool]] | None = None) -> dict[str, set[str]]:
    mods = _modules(LIBRARY) if mods is None else mods
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_package) in mods.items():
        for node, inside in _imports(ast.parse(path.read_text(), str(path))):
            if inside:
                continue
            for target in _targets(name, is_package, node, mods):
                if target not in mods:
                    continue
                if target != name:
                    graph[name].add(target)
                parts = target.split(".")
                first = 2 if parts[0] == LIBRARY else 1  # the library's root is imported first, always
                for k in range(first, len(parts)):  # packages an import passes through run their __init__
                    package = ".".join(parts[:k])
                    if package in mods and not (name == package or name.startswith(package + ".")):
                        graph[name].add(package)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_packages_an_import_runs():
    graph = _import_graph()
    assert "compression_core.quantize.int4" in graph["compression_core.ort_deploy"]
    assert "compression_core.quantize" in graph["compression_core.ort_deploy"]  # quantize/__init__ runs first
    assert "compression_core.quantize" not in graph["compression_core.quantize.static"]  # its own package


def test_library_modules_import_each_other_without_a_cycle():
    cycle = _cycle(_import_graph())
    assert cycle is None, "import cycle in compression_core: " + " -> ".join(cycle)


def test_dashboard_modules_import_each_other_without_a_cycle():
    graph = _import_graph(_dashboard_modules())
    assert "state.workloads" in graph and "store" in graph  # the graph sees the packages
    assert any(graph.values()), "no edges found: the dashboard's import names are not resolved"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle in dashboard: " + " -> ".join(cycle)


def _top_level_imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, top-level module name) of every import in ``package``, at any depth, plus import_module calls
    with a literal name."""
    found = []
    for path, _ in _modules(package).values():
        tree = ast.parse(path.read_text(), str(path))
        rel = str(path.relative_to(ROOT))
        for node, _inside in _imports(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(rel, node.lineno, n.split(".")[0]) for n in names]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
                found.append((rel, node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_library_imports_no_dashboard_benchmarks_or_samples():
    bad = [f"{f}:{line} imports {name}" for f, line, name in _top_level_imports(LIBRARY)
           if name in NEVER_IMPORTED_BY_THE_LIBRARY]
    assert bad == [], "; ".join(bad)


def test_dashboard_imports_no_benchmarks():
    bad = [f"{f}:{line} imports {name}" for f, line, name in _top_level_imports("dashboard") if name == "benchmarks"]
    assert bad == [], "; ".join(bad)


def test_imports_inside_functions_are_of_outside_modules_and_say_why():
    """A function-level import of the library's own modules is a cycle being dodged: refused. One of another
    package carries a ``#`` comment saying why it is not at the top (heavy to import, optional)."""
    mods = _modules(LIBRARY)
    problems = []
    for name, (path, is_package) in mods.items():
        lines = path.read_text().splitlines()
        for node, inside in _imports(ast.parse("\n".join(lines), str(path))):
            if not inside:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            targets = sorted(set(_targets(name, is_package, node, mods)))
            if any(t == LIBRARY or t.startswith(LIBRARY + ".") for t in targets):
                problems.append(f"{where} imports {', '.join(targets)} inside a function (move it to the top)")
                continue
            statement = lines[node.lineno - 1: node.end_lineno]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if not (any("#" in ln for ln in statement) or above.startswith("#")):
                problems.append(f"{where} imports {', '.join(targets)} inside a function without a '# reason' "
                                "(move it to the top, or say why it is lazy)")
    assert problems == [], "\n".join(problems)
