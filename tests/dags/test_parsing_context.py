"""A task run parses its DAG file for its own DAG only (Airflow's ``get_parsing_context()``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_mlops.settings import PROJECT_ROOT

from .conftest import DAGS_DIR, isolated_env

PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()}}))
"""


def parsed(tmp_path: Path, dag_file: str, **env: str) -> list[str]:
    """The DAG ids a parse of ``dags/<dag_file>`` builds, with two model specs, in a fresh interpreter."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    spec = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    for name in ("first", "second"):
        (models / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "name": name}))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS_DIR / dag_file)],
        env=isolated_env(tmp_path, MLOPS_MODELS_DIR=str(models), **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    return report["dags"]


@pytest.mark.parametrize("shape", ["train", "monitor"])
def test_a_task_run_builds_only_its_own_dag(tmp_path: Path, shape: str) -> None:
    assert parsed(tmp_path, f"{shape}.py") == [f"{shape}_first", f"{shape}_second"]
    only = parsed(tmp_path, f"{shape}.py", _AIRFLOW_PARSING_CONTEXT_DAG_ID=f"{shape}_second")
    assert only == [f"{shape}_second"]
    assert parsed(tmp_path, f"{shape}.py", _AIRFLOW_PARSING_CONTEXT_DAG_ID="ingest_flights") == []
