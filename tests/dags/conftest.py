"""Fixtures of the DAG integrity tests: the DAG folder parsed once, in a fresh interpreter.

Airflow reads ``AIRFLOW_HOME`` and its configuration when it is first imported, and other test
folders may import it earlier with another environment. So the DAG folder is parsed by
``dagbag_probe.py`` in a child interpreter whose environment is built here: temporary
``AIRFLOW_HOME`` and ``MLOPS_HOME``, no example DAGs, a sentinel default timezone, and none of the
developer's ``AIRFLOW*`` or ``MLOPS_*`` variables (no ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` either:
the probe patches Connection and Variable lookups away and records them).

Tests get the parse through the ``dagbag`` fixture, and are parametrized per DAG (``dag``) and per
DAG file (``dag_file``) by :func:`pytest_generate_tests`, so a report names the DAG or file at fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
PROBE = Path(__file__).resolve().with_name("dagbag_probe.py")

#: Default timezone of the parse. Airflow silently gives a naive ``start_date`` the default timezone
#: (then converts it to UTC), so a DAG whose timezone comes out as this unlikely zone had a naive one.
NAIVE_TZ_SENTINEL = "Pacific/Chatham"

#: Variables of the developer's shell that would change what Airflow or the library parse.
_ISOLATED_PREFIXES = ("AIRFLOW", "MLOPS_", "_AIRFLOW")


def dag_files() -> list[Path]:
    """Every Python file under ``dags/`` (sorted), whatever later issues add."""
    return sorted(p for p in DAGS_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a child interpreter: the caller's, minus ``AIRFLOW*``/``MLOPS_*``, state under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_PREFIXES)}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "MLOPS_HOME": str(tmp / "mlops"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class DagBagReport:
    """What ``dagbag_probe.py`` found in the DAG folder."""

    import_errors: dict[str, str]
    warnings: dict[str, list[str]]
    stats: list[dict[str, Any]]
    dags: dict[str, dict[str, Any]]
    lookups: list[dict[str, str]] = field(default_factory=list)
    log: str = field(default="", repr=False)


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(DAGS_DIR))
    except ValueError:
        return path


@cache
def parse_dag_folder() -> DagBagReport:
    """Parse ``dags/`` once per session with ``DagBag`` in a fresh interpreter; fail if the probe fails."""
    with tempfile.TemporaryDirectory(prefix="dag-integrity-") as raw:
        tmp = Path(raw)
        out = tmp / "dagbag.json"
        proc = subprocess.run(
            [sys.executable, str(PROBE), str(DAGS_DIR), str(out)],
            env=isolated_env(tmp, AIRFLOW__CORE__DEFAULT_TIMEZONE=NAIVE_TZ_SENTINEL),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"dagbag_probe.py exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-5000:]}"
                f"\n--- stderr ---\n{proc.stderr[-5000:]}"
            )
        raw_report = json.loads(out.read_text())
    return DagBagReport(
        import_errors={_relative(k): v for k, v in raw_report["import_errors"].items()},
        warnings=raw_report["warnings"],
        stats=raw_report["stats"],
        dags=raw_report["dags"],
        lookups=raw_report["lookups"],
        log=proc.stdout + proc.stderr,
    )


@pytest.fixture(scope="session")
def dagbag() -> DagBagReport:
    """The DAG folder as Airflow's ``DagBag`` parsed it (see :func:`parse_dag_folder`)."""
    return parse_dag_folder()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``dag`` (one parsed DAG's description) by DAG id and ``dag_file`` by path."""
    if "dag" in metafunc.fixturenames:
        dags = parse_dag_folder().dags
        metafunc.parametrize("dag", list(dags.values()), ids=list(dags))
    if "dag_file" in metafunc.fixturenames:
        files = dag_files()
        metafunc.parametrize("dag_file", files, ids=[str(p.relative_to(DAGS_DIR)) for p in files])
