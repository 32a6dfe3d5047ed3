"""Import structure, read from the source with ``ast`` (nothing is imported): the reporting layer has no
import cycle and imports no runner, launcher or CLI, and the taskeval package has no import cycle at all;
imports inside functions count (a lazy import that closes a cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# execution side: reporting reads what these write and never calls them
FORBIDDEN = ("taskeval.cli", "taskeval.runner", "taskeval.benchmark", "taskeval.joint", "taskeval.launchers",
             "taskeval.fusion_train", "taskeval.fusedset", "taskeval.fusing", "detectors", "segmenters",
             "fusion_models", "ultralytics", "segmentation_models_pytorch")


def modules(package: str) -> dict[str, Path]:
    """Dotted name -> source file of every module of ``package`` (``pkg/__init__.py`` is ``pkg``)."""
    root = REPO / package.replace(".", "/")
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (``from a import b`` counts as ``a.b`` where that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return out


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules it imports anywhere in its source, for every module of ``package``."""
    mods = modules(package)
    known = set(mods)
    return {m: imported(m, p, known) for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``) among the keys of ``edges``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m] & edges.keys()):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "x"}, "b": set()}) is None


def test_reporting_has_no_cycle_and_imports_no_runner():
    edges = graph("taskeval.reporting")
    assert {"taskeval.reporting.run", "taskeval.reporting.tables", "taskeval.reporting.report",
            "taskeval.reporting.finalize"} <= edges.keys()
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"
    bad = {m: sorted(i for i in imps if any(i == f or i.startswith(f + ".") for f in FORBIDDEN))
           for m, imps in edges.items()}
    bad = {m: i for m, i in bad.items() if i}
    assert not bad, f"the reporting layer imports the execution side: {bad}"


def test_statistics_and_tasks_import_no_reporting():
    for package in ("taskeval.stats", "taskeval.tasks", "taskeval.store", "taskeval.results"):
        for m, imps in graph(package).items():
            assert not [i for i in imps if i.startswith("taskeval.reporting")], m


def test_package_has_no_cycle():
    edges = graph("taskeval")
    assert {"taskeval.stats", "taskeval.tasks.detection", "taskeval.reporting.report"} <= edges.keys()
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
