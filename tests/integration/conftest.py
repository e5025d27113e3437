"""Fixtures that start real servers on 127.0.0.1 and stop them by process id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def airflow_server(mlops_home: Path) -> Iterator[AirflowServer]:
    """A real `airflow standalone` (API server, scheduler, DAG processor, triggerer) on a free port."""
    settings = load_settings()
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
