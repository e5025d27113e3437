"""The train DAG's four triggers as Airflow sees them: new features, drift, the spec's cron, and requests.

The DAG file is imported in a fresh interpreter (like the DAG processor) with a spec that sets
``training.schedule``; the timetable must fire on either asset and on the cron, and the params carry
requests. (New data and drift run for real in ``tests/e2e``, requests in ``tests/integration/test_train_dag``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from airflow_mlops.settings import PROJECT_ROOT

PROBE = """
import gc, json, runpy
from datetime import datetime, timezone
from airflow.sdk.definitions.dag import DAG
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction

runpy.run_path("dags/train.py")
dag = next(o for o in gc.get_objects() if isinstance(o, DAG) and o.dag_id.startswith("train_"))
core = decode_timetable(encode_timetable(dag.timetable))  # what the scheduler runs
monday = datetime(2026, 11, 23, 0, 0, tzinfo=timezone.utc)
info = core.next_dagrun_info(
    last_automated_data_interval=DataInterval(monday, monday),
    restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
)
print(json.dumps({
    "timetable": type(core).__name__,
    "assets": sorted(a.uri for a in dag.timetable.asset_condition.objects),
    "next": info.run_after.isoformat() if info else None,
    "params": sorted(dag.params.keys()),
    "max_active_runs": dag.max_active_runs,
}))
"""


def test_train_dag_fires_on_features_drift_cron_and_requests(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    raw["training"]["schedule"] = "0 3 * * 1"  # Mondays 03:00 UTC
    (tmp_path / "flight_delay.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "MLOPS_MODELS_DIR": str(tmp_path), "MLOPS_HOME": str(tmp_path / "home")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["timetable"] == "AssetOrTimeSchedule"
    assert seen["assets"] == ["x-mlops://flight_delay/drift", "x-mlops://flights/features"]
    assert seen["next"] == "2026-11-23T03:00:00+00:00"  # the cron's next Monday slot
    assert seen["params"] == ["force", "window_end"] and seen["max_active_runs"] == 1
