"""The engine's layers: no import cycle between its modules, and ``pipeline`` is the top layer.

Every ``from airflow_mlops... import`` counts, at module level or inside a function (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:`` (annotations only). Leaf modules (paths and zones, the
model input contract, processes and ports) exist so that stages never need each other both ways.
"""

from __future__ import annotations

import ast
from pathlib import Path

from airflow_mlops.settings import PROJECT_ROOT

ENGINE = PROJECT_ROOT / "include" / "airflow_mlops"
#: Modules that only import the standard library (and third-party libraries), never another engine module.
LEAVES = ("airflow_mlops.zones", "airflow_mlops.model_input", "airflow_mlops.processes", "airflow_mlops.user_code")


def _module(path: Path) -> str:
    return ".".join(("airflow_mlops", *path.relative_to(ENGINE).with_suffix("").parts)).removesuffix(".__init__")


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("airflow_mlops"):
            found.add(node.module)
        found |= _imports(node)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ENGINE.rglob("*.py")):
        name = _module(path)
        graph[name] = _imports(ast.parse(path.read_text(encoding="utf-8"))) - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_engine_modules() -> None:
    graph = _graph()
    assert len(graph) > 20  # the engine was found
    assert _cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_leaves_import_no_engine_module() -> None:
    graph = _graph()
    assert {leaf: graph[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


def test_pipeline_is_the_top_layer() -> None:
    """Only the CLI imports ``pipeline`` inside the engine (the DAGs import it too, from outside)."""
    users = sorted(name for name, imports in _graph().items() if "airflow_mlops.pipeline" in imports)
    assert users == ["airflow_mlops.cli"]
