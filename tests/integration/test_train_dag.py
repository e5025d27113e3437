"""``train_flight_delay`` end to end through a real Airflow, with the embedded MLflow of the session, deploying
to the local target (bento servers behind the spec's stable URL, on a free port).

The session's spec (conftest) has a 14-day window, so two weeks of real January 2013 data, landed,
validated and materialized by ``ingest_flights``, make a complete window.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from airflow_mlops.airflow_runtime import AirflowApi, AirflowServer, day_start
from airflow_mlops.endpoint_auth import auth_headers
from airflow_mlops.pipeline import model_spec
from airflow_mlops.serving import payload, request_schema
from airflow_mlops.settings import load_settings
from airflow_mlops.zones import partition_path

INGEST = "ingest_flights"
TASKS = ("training_set", "register", "gate", "package", "deploy", "smoke_test", "promote")
TRAIN = "train_flight_delay"
FIRST, LAST = date(2013, 1, 1), date(2013, 1, 14)


@pytest.mark.integration
def test_train_dag_registers_gates_deploys_and_promotes(
    airflow_server: AirflowServer, airflow_user: str, airflow_password: str, models_dir: Path
) -> None:
    settings = load_settings()
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills(INGEST)
    # Every day of the window through the chain (days earlier tests ran are not run again).
    states = api.runs(INGEST, FIRST, LAST)
    if any(states.get(date(2013, 1, d).isoformat()) != "success" for d in range(FIRST.day, LAST.day + 1)):
        api.create_backfill(INGEST, FIRST, LAST, reprocess="failed")
        api.wait_for_backfills(INGEST, timeout=1200)
    assert set(api.wait_for_runs(INGEST, FIRST, LAST, timeout=1200).values()) == {"success"}

    # Retraining on request through the REST API, with params.
    run_id = api.trigger(TRAIN, day_start(date(2013, 1, 15)), conf={"window_end": LAST.isoformat()})
    assert api.wait_for_run(TRAIN, run_id, timeout=900) == "success", api.task_states(TRAIN, run_id)
    assert api.task_states(TRAIN, run_id) == dict.fromkeys(TASKS, "success")

    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    champion = client.get_model_version_by_alias("flight_delay", "champion")
    run = client.get_run(champion.run_id)
    assert run.data.tags["airflow.dag_id"] == TRAIN
    # Registered by this run, or by a run the window's last features event triggered just before it.
    train_runs = {r.dag_run_id for r in api._client_mod.DagRunApi(api.api_client).get_dag_runs(TRAIN).dag_runs}
    assert run.data.tags["airflow.run_id"] in train_runs
    assert any("card" in artifact.path for artifact in client.list_artifacts(champion.run_id))
    assert champion.tags.get("gate.decision") == "promote"
    assert champion.tags["bento.tag"].startswith("flight-delay:") and len(champion.tags["bento.digest"]) == 64

    # The champion serves behind the spec's stable URL, deployed and smoke-tested by the run.
    spec = yaml.safe_load((models_dir / "flight_delay.yaml").read_text())
    url = f"http://127.0.0.1:{spec['deploy']['local']['port']}"
    rows = pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", LAST)).head(3)
    body = payload(request_schema(model_spec("flight_delay")), rows)
    assert httpx.post(f"{url}/predict", json=body, timeout=60).status_code == 401  # the stable URL needs the token
    answer = httpx.post(f"{url}/predict", json=body, headers=auth_headers(settings.endpoint_token()), timeout=60)
    assert answer.status_code == 200, answer.text
    assert {p["model_version"] for p in answer.json()["predictions"]} == {int(champion.version)}
    assert "smoke test passed" in api.task_log(TRAIN, run_id, "smoke_test")

    # The same training again: no duplicate version, the champion stays where it is.
    again = api.trigger(TRAIN, day_start(date(2013, 1, 16)), conf={"window_end": LAST.isoformat()})
    assert api.wait_for_run(TRAIN, again, timeout=900) == "success", api.task_states(TRAIN, again)
    versions = client.search_model_versions("name='flight_delay'")
    assert len(versions) == 1, [v.version for v in versions]
    assert client.get_model_version_by_alias("flight_delay", "champion").version == champion.version


@pytest.mark.integration
def test_train_dag_keeps_a_worse_challenger_out(
    airflow_server: AirflowServer, airflow_user: str, airflow_password: str, models_dir: Path
) -> None:
    """A challenger that loses on the holdout stops at ``gate``: "not promoted", ``promote`` skipped."""
    settings = load_settings()
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    try:
        champion = client.get_model_version_by_alias("flight_delay", "champion")
    except Exception:
        pytest.skip("needs the champion of test_train_dag_registers_gates_deploys_and_promotes")

    # The spec is read when a task runs: cripple the model for the next training only.
    path = models_dir / "flight_delay.yaml"
    original = path.read_text()
    crippled = yaml.safe_load(original)
    crippled["algorithm"]["params"].update(max_iter=1, max_leaf_nodes=2)
    path.write_text(yaml.safe_dump(crippled, sort_keys=False))
    try:
        run_id = api.trigger(TRAIN, day_start(date(2013, 1, 17)), conf={"window_end": LAST.isoformat()})
        assert api.wait_for_run(TRAIN, run_id, timeout=900) == "success", api.task_states(TRAIN, run_id)
    finally:
        path.write_text(original)

    assert api.task_states(TRAIN, run_id) == {
        "training_set": "success",
        "register": "success",
        "gate": "success",
        **dict.fromkeys(("package", "deploy", "smoke_test", "promote"), "skipped"),
    }
    log = api.task_log(TRAIN, run_id, "gate")
    assert "not promoted" in log and "AUC improvement" in log
    assert client.get_model_version_by_alias("flight_delay", "champion").version == champion.version
    challenger = client.get_model_version_by_alias("flight_delay", "challenger")
    assert challenger.version != champion.version
    assert challenger.tags.get("gate.decision") == "reject"
