"""DAG integrity, policy and parse-cost hygiene: every file in ``dags/``, no servers.

* **Integrity**: Airflow's own ``DagBag`` parses the DAG folder with no import errors, every DAG file
  defines at least one DAG, and no file looks up a Connection or Variable at parse time (they are
  patched away, as in the Astronomer Astro CLI template; see ``dagbag_probe.py``).
* **Policy** (``/work/shared/ARCHITECTURE.md``, "Conventions"): every DAG has ``doc_md``, tags, a real
  owner, retries, an explicit schedule and a timezone-aware start date; ``ingest_flights`` keeps the
  contract of the 2013 replay.
* **Parse cost hygiene**: importing a DAG file in a fresh interpreter loads none of the heavy ML
  libraries; the failure names the library and the import chain that pulled it in.
* **Lint**: ``ruff check`` (the project's configuration, AIR rules included) is clean.

The DAG folder is parsed once per session in a child interpreter (``conftest.py``), so these tests
never depend on how an earlier test imported Airflow.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import DAGS_DIR, NAIVE_TZ_SENTINEL, REPO_ROOT, DagBagReport, isolated_env

#: Libraries a DAG file must never load at parse time (top-level package names).
HEAVY_MODULES = (
    "pandas",
    "sklearn",
    "mlflow",
    "feast",
    "bentoml",
    "evidently",
    "great_expectations",
    "pyarrow",
    "numpy",
)

#: Owners that mean "nobody set one".
ANONYMOUS_OWNERS = {"", "airflow", None}

RUFF = Path(sys.executable).parent / "ruff"


def _defines_dags(dag_file: Path) -> bool:
    """Files whose name starts with ``_`` are helpers, not DAG files."""
    return not dag_file.name.startswith("_")


# --------------------------------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------------------------------


def test_no_import_errors(dagbag: DagBagReport) -> None:
    """``DagBag`` imported every DAG file."""
    if dagbag.import_errors:
        details = "\n\n".join(f"=== dags/{path} ===\n{error.strip()}" for path, error in dagbag.import_errors.items())
        pytest.fail(f"{len(dagbag.import_errors)} DAG file(s) failed to import:\n\n{details}", pytrace=False)


def test_dag_folder_defines_dags(dagbag: DagBagReport) -> None:
    """The parse found DAGs at all (an empty bag would make every per-DAG test vacuous)."""
    assert dagbag.dags, f"DagBag found no DAG in {DAGS_DIR}; parse log:\n{dagbag.log[-3000:]}"


def test_every_dag_file_defines_a_dag(dag_file: Path, dagbag: DagBagReport) -> None:
    """Each DAG file yields at least one DAG (a file skipped by Airflow's heuristics would not)."""
    if not _defines_dags(dag_file):
        pytest.skip(f"{dag_file.name} is a helper module (leading underscore)")
    rel = str(dag_file.relative_to(DAGS_DIR))
    if rel in dagbag.import_errors:
        pytest.fail(f"dags/{rel} has an import error (see test_no_import_errors)", pytrace=False)
    found = sorted(d["dag_id"] for d in dagbag.dags.values() if d["fileloc"] == rel)
    assert found, f"dags/{rel} defines no DAG that Airflow's DagBag could find"


def test_no_connection_or_variable_lookups_at_parse_time(dagbag: DagBagReport) -> None:
    """Connections and Variables are read inside tasks, never while the DAG file is parsed."""
    if dagbag.lookups:
        lines = "\n".join(f"  {item['where']}: {item['kind']} {item['key']!r}" for item in dagbag.lookups)
        pytest.fail(
            "DAG files looked up Connections/Variables at parse time (each parse would hit the metadata "
            f"database or secrets backend); move these into tasks or templates:\n{lines}",
            pytrace=False,
        )


def test_no_parse_warnings(dagbag: DagBagReport) -> None:
    """Parsing emits no warnings (deprecated imports and arguments show up here first)."""
    if dagbag.warnings:
        lines = "\n".join(f"  dags/{f}: {w}" for f, ws in dagbag.warnings.items() for w in ws)
        pytest.fail(f"warnings while parsing the DAG folder:\n{lines}", pytrace=False)


# --------------------------------------------------------------------------------------------------
# Policy, per DAG
# --------------------------------------------------------------------------------------------------


def test_doc_md(dag: dict[str, Any]) -> None:
    """Every DAG documents itself (the module docstring as ``doc_md``)."""
    assert dag["doc_md"].strip(), f"{dag['dag_id']} ({dag['fileloc']}): doc_md is empty; pass doc_md=__doc__"


def test_tags(dag: dict[str, Any]) -> None:
    """Every DAG has tags, so the UI can filter by stage and model."""
    assert dag["tags"], f"{dag['dag_id']} ({dag['fileloc']}): no tags"


def test_owner(dag: dict[str, Any]) -> None:
    """Every DAG and task has a real owner, not Airflow's default ``airflow``."""
    owner = dag["default_args"]["owner"]
    assert owner not in ANONYMOUS_OWNERS, f"{dag['dag_id']}: default_args owner is {owner!r}; use dag_helpers"
    anonymous = [t["task_id"] for t in dag["tasks"] if t["owner"] in ANONYMOUS_OWNERS]
    assert not anonymous, f"{dag['dag_id']}: tasks without a real owner: {anonymous}"


def test_retries(dag: dict[str, Any]) -> None:
    """Every DAG retries: ``default_args['retries'] >= 1`` or each task has ``retries >= 1``."""
    default_retries = dag["default_args"]["retries"] or 0
    no_retries = [t["task_id"] for t in dag["tasks"] if (t["retries"] or 0) < 1]
    assert default_retries >= 1 or (dag["tasks"] and not no_retries), (
        f"{dag['dag_id']}: default_args retries={default_retries!r} and tasks without retries: {no_retries}"
    )


def test_start_date_is_timezone_aware(dag: dict[str, Any]) -> None:
    """A fixed, timezone-aware start date (Airflow would silently give a naive one its default zone)."""
    start = dag["start_date"]
    assert start is not None, f"{dag['dag_id']} ({dag['fileloc']}): no start_date"
    assert dag["timezone"] != NAIVE_TZ_SENTINEL, (
        f"{dag['dag_id']} ({dag['fileloc']}): start_date is naive; pass tzinfo, e.g. datetime(..., tzinfo=UTC)"
    )


def _dag_calls(tree: ast.AST) -> list[tuple[int, ast.expr]]:
    """``dag(...)``/``DAG(...)`` calls and bare ``@dag`` decorators in a module, with their line."""

    def is_dag_name(node: ast.expr) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return name in {"dag", "DAG"}

    found: list[tuple[int, ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and is_dag_name(node.func):
            found.append((node.lineno, node))
        elif isinstance(node, ast.FunctionDef):
            found.extend((d.lineno, d) for d in node.decorator_list if not isinstance(d, ast.Call) and is_dag_name(d))
    return found


def test_explicit_schedule(dag_file: Path, dagbag: DagBagReport) -> None:
    """Every ``dag(...)``/``DAG(...)`` in a DAG file passes ``schedule=`` (Airflow 3 defaults to None).

    A file that builds its DAGs through a library helper has no such call; its DAGs must then have a
    schedule other than None (a deliberate ``schedule=None`` belongs in the DAG file, where it is seen).
    """
    rel = str(dag_file.relative_to(DAGS_DIR))
    calls = _dag_calls(ast.parse(dag_file.read_text(encoding="utf-8"), filename=str(dag_file)))
    missing = [
        line
        for line, node in calls
        if not (isinstance(node, ast.Call) and any(kw.arg == "schedule" for kw in node.keywords))
    ]
    assert not missing, f"dags/{rel}: dag()/DAG() without an explicit schedule= keyword at line(s) {missing}"
    if not calls:
        unscheduled = [d["dag_id"] for d in dagbag.dags.values() if d["fileloc"] == rel and d["schedule"] is None]
        assert not unscheduled, f"dags/{rel}: DAGs built elsewhere without a schedule: {unscheduled}"


def test_ingest_flights_contract(dagbag: DagBagReport) -> None:
    """``ingest_flights`` replays 2013 day by day: @daily, 2013-01-01..2013-12-31 (UTC), no catchup."""
    assert "ingest_flights" in dagbag.dags, f"ingest_flights not found; DAGs: {sorted(dagbag.dags)}"
    dag = dagbag.dags["ingest_flights"]
    assert dag["schedule"] == "@daily", dag["schedule"]
    assert dag["start_date"] == {"iso": "2013-01-01T00:00:00+00:00", "aware": True}, dag["start_date"]
    assert dag["end_date"] == {"iso": "2013-12-31T00:00:00+00:00", "aware": True}, dag["end_date"]
    assert dag["catchup"] is False


# --------------------------------------------------------------------------------------------------
# Parse cost hygiene, per DAG file
# --------------------------------------------------------------------------------------------------

#: Imports one DAG file the way a parser would and prints the modules it left loaded.
_IMPORT_AND_LIST_MODULES = """
import json, runpy, sys
runpy.run_path(sys.argv[1], run_name="dag_file_under_test")
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _import_chain(importtime: str, module: str) -> list[str]:
    """From ``python -X importtime`` output, the chain of imports that first loaded ``module``.

    ``-X importtime`` prints each import after its own imports, indented two spaces per level; the
    importer of a line is the next line below it with a smaller indent.
    """
    rows: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or line.count("|") < 2:
            continue
        name = line.split("|", 2)[2]
        stripped = name.strip()
        if stripped == "imported package":
            continue
        rows.append((len(name) - len(name.lstrip()), stripped))
    start = next((i for i, (_, name) in enumerate(rows) if name == module), None)
    if start is None:
        return [module]
    chain = [module]
    indent = rows[start][0]
    for level, name in rows[start + 1 :]:
        if level < indent:
            chain.append(name)
            indent = level
    return list(reversed(chain))


def test_dag_file_loads_no_heavy_libraries(dag_file: Path) -> None:
    """Importing the DAG file in a fresh interpreter loads none of :data:`HEAVY_MODULES`."""
    with tempfile.TemporaryDirectory(prefix="dag-hygiene-") as raw:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _IMPORT_AND_LIST_MODULES, str(dag_file)],
            env=isolated_env(Path(raw)),
            cwd=raw,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    rel = f"dags/{dag_file.relative_to(DAGS_DIR)}"
    marker = [line for line in proc.stdout.splitlines() if line.startswith("MODULES=")]
    if proc.returncode != 0 or not marker:
        errors = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
        pytest.fail(f"{rel} failed to import in a fresh interpreter:\n{errors[-5000:]}", pytrace=False)
    loaded: list[str] = json.loads(marker[-1].removeprefix("MODULES="))
    offenders = sorted({m for m in HEAVY_MODULES for name in loaded if name == m or name.startswith(m + ".")})
    if offenders:
        chains = "\n".join(f"  {m}: " + " -> ".join(_import_chain(proc.stderr, m)) for m in offenders)
        pytest.fail(
            f"{rel} loads {', '.join(offenders)} at parse time; import heavy libraries inside tasks.\n"
            f"Import chains (outermost first):\n{chains}",
            pytrace=False,
        )


# --------------------------------------------------------------------------------------------------
# Lint
# --------------------------------------------------------------------------------------------------


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), "check", "--output-format", "concise", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ruff_check_repository() -> None:
    """``ruff check`` with the project's configuration (pyproject) passes on the whole checkout."""
    proc = _ruff(".")
    assert proc.returncode == 0, f"ruff check . failed:\n{proc.stdout}{proc.stderr}"


def test_ruff_airflow_rules() -> None:
    """The Airflow (AIR) rules pass on the code Airflow loads: DAGs, the library and plugins."""
    targets = [t for t in ("dags", "include", "plugins") if (REPO_ROOT / t).exists()]
    proc = _ruff("--select", "AIR", *targets)
    assert proc.returncode == 0, f"ruff check --select AIR {' '.join(targets)} failed:\n{proc.stdout}{proc.stderr}"
