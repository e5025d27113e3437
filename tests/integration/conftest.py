"""Fixtures that start real servers on 127.0.0.1 and stop them by process id."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowServer, free_port, start_airflow, stop_airflow
from airflow_mlops.settings import load_settings


@pytest.fixture(scope="session")
def mlops_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state folder of its own for the integration session, exported as MLOPS_HOME."""
    home = tmp_path_factory.mktemp("mlops-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.delenv("AIRFLOW_HOME", raising=False)
        mp.delenv("MLOPS_DATA_DIR", raising=False)
        mp.delenv("MLOPS_SOURCE_FLIGHTS", raising=False)
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


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server (dropped afterwards); yields its SQLAlchemy URL."""
    name = f"mlops_it_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def airflow_server(mlops_home: Path, postgres_database: str) -> Iterator[AirflowServer]:
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
