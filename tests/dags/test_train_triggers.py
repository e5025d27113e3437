"""The train DAG's four triggers as Airflow sees them: new data, drift, the spec's cron, and requests.

The DAG files are imported in a fresh interpreter (like the DAG processor) with a spec that sets
``training.schedule``; the train timetable must fire on either asset and on the cron, and the params carry
requests. New data reaches ``train_<model>`` only through ingest's ``features`` task, which emits
``<model>.new_window`` through an asset alias when a window is due (the decision itself is unit-tested in
``tests/unit/test_triggers``). The announcing runs for real in ``DAG.test`` on a throwaway SQLite metadata
database: ``land`` and ``validate`` marked success and the feature build and materialization replaced by
stand-ins (they are tested in ``tests/unit/test_features`` and end to end), so what runs is Airflow's side: the
task reads its earlier events through ``inlet_events`` and emits one through the alias only when a window is due.
(New data and drift run for real in ``tests/e2e``, requests in ``tests/integration/test_train_dag``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_mlops.settings import PROJECT_ROOT, load_settings
from airflow_mlops.zones import partition_path

from .conftest import DAGS_DIR, isolated_env

PROBE = """
import gc, json, runpy
from datetime import datetime, timezone
from airflow.sdk.definitions.dag import DAG
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction

runpy.run_path("dags/train.py")
runpy.run_path("dags/ingest.py")
dags = {o.dag_id: o for o in gc.get_objects() if isinstance(o, DAG)}
dag, ingest = dags["train_flight_delay"], dags["ingest_flights"]
core = decode_timetable(encode_timetable(dag.timetable))  # what the scheduler runs
# The cron's slots after a fixed last run. catchup=True pins the clock: with catchup=False the timetable
# starts from "now" (the DAG's own setting; history comes by backfill), which changes every day.
slots, last = [], datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)  # a Monday
for _ in range(2):
    info = core.next_dagrun_info(
        last_automated_data_interval=DataInterval(last, last),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    slots.append(info.run_after.isoformat())
    last = info.run_after
features = ingest.get_task("features")
print(json.dumps({
    "timetable": type(core).__name__,
    "assets": sorted(a.uri for a in dag.timetable.asset_condition.objects),
    "slots": slots,
    "params": sorted(dag.params.keys()),
    "max_active_runs": dag.max_active_runs,
    "tasks": sorted(ingest.task_ids),
    "features": {
        "upstream": sorted(features.upstream_task_ids),
        "downstream": sorted(features.downstream_task_ids),
        "outlets": [getattr(a, "uri", None) or type(a).__name__ + ":" + a.name for a in features.outlets],
        "inlets": [a.uri for a in features.inlets],
        "depends_on_past": features.depends_on_past,
        "ignore_first_depends_on_past": features.ignore_first_depends_on_past,
    },
}))
"""


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the probe saw of ``train_flight_delay`` and ``ingest_flights``, with a Monday-03:00 cron in the spec."""
    tmp_path = tmp_path_factory.mktemp("triggers")
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    raw["training"]["schedule"] = "0 3 * * 1"  # Mondays 03:00 UTC
    (tmp_path / "flight_delay.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLOPS_MODELS_DIR": str(tmp_path), "MLOPS_HOME": str(tmp_path / "home")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_train_dag_fires_on_new_windows_drift_cron_and_requests(seen: dict[str, Any]) -> None:
    assert seen["timetable"] == "AssetOrTimeSchedule"
    assert seen["assets"] == ["x-mlops://flight_delay/drift", "x-mlops://flight_delay/new_window"]
    # The cron's next Monday slots after the last run (the same on whatever day the test runs).
    assert seen["slots"] == ["2026-11-23T03:00:00+00:00", "2026-11-30T03:00:00+00:00"]
    assert seen["params"] == ["force", "window_end"] and seen["max_active_runs"] == 1


def test_ingest_announces_new_windows_from_its_features_task(seen: dict[str, Any]) -> None:
    """Three tasks a day; ``features`` emits ``flights.features`` always and the train trigger through its alias."""
    assert seen["tasks"] == ["features", "land", "validate"]
    features = seen["features"]
    assert features["upstream"] == ["validate"] and features["downstream"] == []
    assert features["outlets"] == ["x-mlops://flights/features", "AssetAlias:flight_delay.new_window.announce"]
    # The model's earlier new_window events are its inlet (read to fold new data); days decide one after the other.
    assert features["inlets"] == ["x-mlops://flight_delay/new_window"]
    assert features["depends_on_past"] is True and features["ignore_first_depends_on_past"] is True


#: Runs ``ingest_flights`` for each day given (``DAG.test``) with land and validate marked success and the feature
#: build and materialization replaced by stand-ins, so ``features`` runs Airflow's side of announcing for real;
#: prints its state and the reasons of its ``flights.features`` event per run, then the ``new_window`` events.
ANNOUNCE_PROBE = """
import json, sys
from datetime import datetime, timezone
import airflow_mlops.features as engine_features
Built = type("Built", (), {})
def build_features(dataset, day, settings=None):
    built = Built()
    built.extra = {"partition": str(day)}
    return built
engine_features.build_features = build_features
engine_features.materialize_day = lambda dataset, day, settings=None: {"day": str(day), "views": {}}
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.db import initdb
from airflow.utils.session import create_session
from sqlalchemy import select

initdb()  # a fresh SQLite metadata database under AIRFLOW_HOME
dag = DagBag(dag_folder=sys.argv[1]).get_dag("ingest_flights")
states = []
for day in sys.argv[2:]:
    run = dag.test(
        logical_date=datetime.fromisoformat(day).replace(tzinfo=timezone.utc),
        mark_success_pattern="^(land|validate)$",
    )
    states.append([day, {ti.task_id: ti.state for ti in run.get_task_instances()}["features"]])
with create_session() as session:
    def extras(asset):
        return [dict(extra) for extra in session.execute(
            select(AssetEvent.extra).join(AssetEvent.asset).where(AssetModel.name == asset).order_by(AssetEvent.id)
        ).scalars().all()]
    seen = {"states": states, "events": extras("flight_delay.new_window"), "features": extras("flights.features")}
print("SEEN=" + json.dumps(seen))
"""


def test_announce_emits_new_window_events_only_when_due(tmp_path: Path) -> None:
    """7-day windows, retrain every 3 days, Jan 1-10 validated: Jan 7 and Jan 10 are announced, nothing else."""
    models = tmp_path / "models"
    models.mkdir()
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    raw["training"].update(window_days=7, holdout_days=2, retrain_every_days=3)
    (models / "flight_delay.yaml").write_text(yaml.safe_dump(raw))
    env = isolated_env(tmp_path, MLOPS_MODELS_DIR=str(models))
    validated_dir = load_settings(env).validated_dir
    for day in (date(2013, 1, 1) + timedelta(days=n) for n in range(10)):
        path = partition_path(validated_dir, "flights", "flights", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # the announce decision only checks that the validated partitions exist
    # Jan 6 (its window starts Dec 31), Jan 7 (complete), Jan 8 (too soon), Jan 10 (3 days on), Jan 7 re-run.
    runs = ["2013-01-06", "2013-01-07", "2013-01-08", "2013-01-10", "2013-01-07"]
    done = subprocess.run(
        [sys.executable, "-c", ANNOUNCE_PROBE, str(DAGS_DIR), *runs],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("SEEN=")]
    assert done.returncode == 0 and marker, (done.stdout + done.stderr)[-5000:]
    seen = json.loads(marker[-1].removeprefix("SEEN="))
    assert seen["states"] == [[day, "success"] for day in runs]  # every day's features are built either way
    assert [e["partition"] for e in seen["events"]] == ["2013-01-07", "2013-01-10"]
    reasons = [event["announce"]["flight_delay"] for event in seen["features"]]
    assert [reason.split(":")[0] for reason in reasons] == [
        "not announced",  # Jan 6: its window starts Dec 31, before the data
        "announced",
        "not announced",  # Jan 8: too soon after Jan 7
        "announced",
        "not announced",  # Jan 7 again: at or before the last announced day
    ], reasons
    assert "not complete yet" in reasons[0] and "retrains every 3 days" in reasons[2]
    assert seen["events"][1]["previous"] == "2013-01-07" and seen["events"][1]["window_start"] == "2013-01-04"
