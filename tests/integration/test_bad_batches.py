"""Bad batches through a real Airflow: the run fails, the batch is quarantined, nothing good changes.

The session's Airflow reads flights from a file source (``MLOPS_SOURCE_FLIGHTS``, see conftest), so
these tests deliver real rows made bad the way real deliveries go bad, and drive the DAG through the
official REST client exactly as a user would: trigger a day, clear a run.
"""

from __future__ import annotations

import hashlib
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.airflow_runtime import AirflowApi, AirflowServer, day_start
from airflow_mlops.settings import load_settings
from airflow_mlops.zones import partition_path

DAG_ID = "ingest_flights"
GOOD_THEN_BAD = date(2013, 1, 14)
TRUNCATED = date(2013, 1, 15)


def _snapshot(*roots: Path) -> dict[str, tuple[str, int]]:
    """Checksum and mtime of every file under the roots (the good state that must not change)."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return files


def _run_id(api: AirflowApi, day: date) -> str:
    client = api._client_mod
    runs = client.DagRunApi(api.api_client).get_dag_runs(
        DAG_ID, logical_date_gte=day_start(day), logical_date_lte=day_start(day)
    )
    return str(runs.dag_runs[0].dag_run_id)


def _wait(api: AirflowApi, day: date, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = api.runs(DAG_ID, day, day).get(day.isoformat(), "")
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    raise AssertionError(f"run of {day} not finished after {timeout}s (last state {state!r})")


def _events(api: AirflowApi, stage: str, day: date) -> int:
    client = api._client_mod
    events = client.AssetApi(api.api_client).get_asset_events(source_dag_id=DAG_ID, limit=1000).asset_events
    uri = f"x-mlops://flights/{stage}"
    return sum(1 for e in events if e.uri == uri and (e.extra or {}).get("partition") == day.isoformat())


def _clear(api: AirflowApi, run_id: str) -> None:
    client = api._client_mod
    client.TaskInstanceApi(api.api_client).post_clear_task_instances(
        DAG_ID, client.ClearTaskInstancesBody(dry_run=False, dag_run_id=run_id, only_failed=False, reset_dag_runs=True)
    )
    time.sleep(3)


@pytest.mark.integration
def test_bad_batches_fail_quarantine_and_change_nothing_good(
    airflow_server: AirflowServer, airflow_user: str, airflow_password: str, deliveries: Path
) -> None:
    settings = load_settings()
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills(DAG_ID)

    # 1. A good day runs the whole chain.
    api.trigger(DAG_ID, day_start(GOOD_THEN_BAD))
    assert _wait(api, GOOD_THEN_BAD) == "success"
    run_id = _run_id(api, GOOD_THEN_BAD)
    states = api.task_states(DAG_ID, run_id)
    assert states == dict.fromkeys(("land", "validate", "features"), "success")
    good_validated = partition_path(settings.validated_dir, "flights", "flights", GOOD_THEN_BAD).read_bytes()
    good = _snapshot(settings.validated_dir, settings.features_dir, settings.feast_dir)
    assert good, "the good day wrote nothing to the validated zone, features or online store"
    events_before = {stage: _events(api, stage, GOOD_THEN_BAD) for stage in ("validated", "features")}
    assert events_before == {"validated": 1, "features": 1}

    # 2. The supplier re-delivers that day with a column dropped; the run is cleared and runs again.
    delivered = deliveries / f"date={GOOD_THEN_BAD.isoformat()}" / "flights.parquet"
    original = delivered.read_bytes()
    pd.read_parquet(delivered).drop(columns=["dep_delay"]).to_parquet(delivered, index=False)
    _clear(api, run_id)
    assert _wait(api, GOOD_THEN_BAD) == "failed"
    assert api.task_states(DAG_ID, run_id) == {
        "land": "success",
        "validate": "failed",
        "features": "upstream_failed",
    }
    log = api.task_log(DAG_ID, run_id, "validate")
    assert "validation of flights date=2013-01-14: FAILED" in log
    assert "dep_delay" in log
    quarantine = settings.quarantine_dir / "flights" / f"date={GOOD_THEN_BAD.isoformat()}"
    assert f"quarantined flights date=2013-01-14 in {quarantine}" in log
    assert {"flights.parquet", "weather.parquet", "result.json", "flights.html"} <= {
        p.name for p in quarantine.iterdir()
    }
    assert "dep_delay" not in pd.read_parquet(quarantine / "flights.parquet").columns
    assert not partition_path(settings.landing_dir, "flights", "flights", GOOD_THEN_BAD).exists()
    # Nothing good changed: the published day, the features and the online store are as they were.
    assert _snapshot(settings.validated_dir, settings.features_dir, settings.feast_dir) == good
    assert partition_path(settings.validated_dir, "flights", "flights", GOOD_THEN_BAD).read_bytes() == good_validated
    assert {stage: _events(api, stage, GOOD_THEN_BAD) for stage in events_before} == events_before

    # 3. A new day arrives truncated (half a parquet file): it cannot even be read.
    truncated = deliveries / f"date={TRUNCATED.isoformat()}" / "flights.parquet"
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    api.trigger(DAG_ID, day_start(TRUNCATED))
    assert _wait(api, TRUNCATED) == "failed"
    truncated_run = _run_id(api, TRUNCATED)
    assert api.task_states(DAG_ID, truncated_run) == {
        "land": "failed",
        "validate": "upstream_failed",
        "features": "upstream_failed",
    }
    log = api.task_log(DAG_ID, truncated_run, "land")
    assert f"cannot read {deliveries}/date={TRUNCATED.isoformat()}/flights.parquet" in log
    assert "quarantined" in log
    quarantined = settings.quarantine_dir / "flights" / f"date={TRUNCATED.isoformat()}"
    assert (quarantined / "raw" / "flights.parquet").read_bytes() == raw[: len(raw) // 2]
    assert not partition_path(settings.landing_dir, "flights", "flights", TRUNCATED).exists()
    assert _snapshot(settings.validated_dir, settings.features_dir, settings.feast_dir) == good
    assert _events(api, "landed", TRUNCATED) == 0

    # 4. Release by fixing the delivery: the corrected file arrives, the run is cleared and goes green.
    delivered.write_bytes(original)
    _clear(api, run_id)
    assert _wait(api, GOOD_THEN_BAD) == "success"
    assert partition_path(settings.validated_dir, "flights", "flights", GOOD_THEN_BAD).read_bytes() == good_validated
    assert _events(api, "validated", GOOD_THEN_BAD) == 2
