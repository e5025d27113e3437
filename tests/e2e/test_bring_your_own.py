"""docs/bring-your-own.md, followed from ``airflow-mlops new`` to a deployed, monitored model, end to end.

A project of its own in a temporary folder (its datasets, models and Feast repository; nothing under
``include/airflow_mlops/``, ``dags/`` or ``plugins/`` is touched): the page's runnable blocks run as written
through a shell (new dataset, new model, check, backfill, replay, monitor). Between them the test does what
the page asks of the user: it delivers the days (real files in the source folder, synthetic events) and
gives the model a port of its own. Real components, as in ``test_loop.py``: ``airflow standalone`` on the
home's embedded PostgreSQL, Feast, MLflow, BentoML servers behind the local router, on free loopback ports,
stopped by process id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, start_airflow, stop_airflow
from airflow_mlops.deploy.local import stop as stop_endpoint
from airflow_mlops.endpoint_auth import auth_headers
from airflow_mlops.ingest import days
from airflow_mlops.monitoring import reports_dir
from airflow_mlops.processes import free_port
from airflow_mlops.settings import DATABASE_VARIABLES, load_settings
from tests.doc_examples import example_block
from tests.unit.test_scaffold import events_of

FIRST, LAST = date(2024, 5, 1), date(2024, 5, 29)  # as in the page's blocks

pytestmark = pytest.mark.integration


@dataclass
class Project:
    root: Path
    env: dict[str, str]


def run(block: str, project: Project) -> str:
    """Run a block of the page through bash in the project; fail with its output if it fails."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=project.env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"{block}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("bring-your-own")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW"))}
    env.pop("BENTOML_HOME", None)
    for name, variable in (
        ("include/datasets", "MLOPS_DATASETS_DIR"),
        ("include/models", "MLOPS_MODELS_DIR"),
        ("feature_repo", "MLOPS_FEATURE_REPO"),
        (".mlops", "MLOPS_HOME"),
    ):
        (root / name).mkdir(parents=True)
        env[variable] = str(root / name)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AIRFLOW_HOME", "MLOPS_DATA_DIR", "BENTOML_HOME", *DATABASE_VARIABLES.values()):
            mp.delenv(name, raising=False)
        for variable in ("MLOPS_DATASETS_DIR", "MLOPS_MODELS_DIR", "MLOPS_FEATURE_REPO", "MLOPS_HOME"):
            mp.setenv(variable, env[variable])
        yield Project(root, env)
        stop_endpoint("order_value", load_settings())


def test_the_page_takes_a_new_dataset_to_a_monitored_endpoint(project: Project) -> None:
    # 1-3. The skeleton, as the page writes it, and the check.
    run(example_block("byo-new-dataset"), project)
    run(example_block("byo-new-model"), project)
    assert "no problem" in run(example_block("byo-check"), project)

    # 4. What the page asks of the user: deliver the days, give the model its own port.
    settings = load_settings()
    spec_path = settings.models_dir / "order_value.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    port = free_port()
    spec["deploy"]["local"] = {"port": port}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    source = yaml.safe_load((settings.datasets_dir / "orders.yaml").read_text())["source"]
    rng = np.random.default_rng(11)
    for day in days(FIRST, LAST):
        folder = Path(source) / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        events_of(day, rng).to_csv(folder / "events.csv", index=False)

    server = start_airflow(free_port(), settings, wait_for_dags=("ingest_orders", "train_order_value"))
    try:
        api = AirflowApi.login(server.url, ADMIN_USER, server.password())
        run(example_block("byo-backfill"), project)
        runs = api.wait_until_idle("train_order_value", timeout=1800)
        trained = [r for r in runs if r["run_type"] == "asset_triggered"]
        assert len(trained) == 1 and trained[0]["state"] == "success", trained
        assert api.task_states("train_order_value", trained[0]["run_id"])["promote"] == "success"
        client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
        champion = int(client.get_model_version_by_alias("order_value", "champion").version)

        # 5. The endpoint answers, the page's replay sends traffic, the page's monitoring judges it.
        event = {"event_id": "x-1", "entity_id": "e03", "occurred_at": "2024-05-30T10:15:00Z", "amount": 42.5}
        body = {"events": [event]}
        auth = auth_headers(settings.endpoint_token())
        assert httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=60).status_code == 401
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, headers=auth, timeout=60)
        assert answer.status_code == 200, answer.text
        assert set(answer.json()["predictions"][0]) == {"prediction", "model_version", "request_id"}
        assert answer.json()["predictions"][0]["model_version"] == champion
        bad_body = {"events": [{**event, "amount": -1}]}
        bad = httpx.post(f"http://127.0.0.1:{port}/predict", json=bad_body, headers=auth, timeout=60)
        assert bad.status_code == 400 and "amount" in bad.text
        replayed = run(example_block("byo-replay"), project)
        assert '"failed_requests": 0' in replayed, replayed
        run(example_block("byo-monitor"), project)
        summary = json.loads((reports_dir(settings, "order_value", LAST) / "summary.json").read_text())
        assert summary["status"] in ("ok", "drift"), summary
        assert summary["rows"] >= 3 * 240 and summary["metric"] == "rmse" and summary["quality"] is not None
    finally:
        stop_airflow(server.pid)
