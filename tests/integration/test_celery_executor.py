"""The production executor for real: Airflow's CeleryExecutor on the machine's PostgreSQL and Redis.

``airflow standalone`` forces the LocalExecutor, so :func:`start_airflow` with ``celery=True`` runs the
components one by one as ``docker/compose.yaml`` does (``db migrate``, then api-server, scheduler,
dag-processor, triggerer and a ``celery worker``), on a fresh PostgreSQL metadata database that is also
Celery's result backend, and a Redis database as broker. One day of ``ingest_flights`` runs through it: its
four tasks succeed, and Celery's result backend holds a successful result for each, so they went through
the broker to the worker. Everything started here is stopped by its process group id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import date

import pytest
import redis
import sqlalchemy

from airflow_mlops.airflow_runtime import (
    ADMIN_USER,
    AirflowApi,
    AirflowRuntimeError,
    AirflowServer,
    celery_env,
    day_start,
    free_port,
    start_airflow,
    stop_airflow,
)
from airflow_mlops.settings import load_settings
from tests.integration.conftest import fresh_postgres_database

pytestmark = pytest.mark.integration

DAY = date(2013, 1, 2)
TASKS = ("land", "validate", "features")


@pytest.fixture(scope="module")
def celery_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowServer, str]]:
    home = tmp_path_factory.mktemp("celery") / "home"
    broker_db = random.randint(1, 15)  # a Redis database of its own, emptied before and after
    broker = f"redis://127.0.0.1:6379/{broker_db}"
    redis.Redis.from_url(broker).flushdb()
    with pytest.MonkeyPatch.context() as mp, fresh_postgres_database() as database:
        mp.setenv("MLOPS_HOME", str(home))
        for name in ("AIRFLOW_HOME", "MLOPS_DATA_DIR", "MLOPS_MLFLOW_TRACKING_URI", "MLOPS_SOURCE_FLIGHTS"):
            mp.delenv(name, raising=False)
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", database)
        mp.setenv("AIRFLOW__CELERY__BROKER_URL", broker)
        server = start_airflow(
            free_port(), load_settings(), timeout=600, wait_for_dags=("ingest_flights",), celery=True
        )
        try:
            yield server, database
        finally:
            stop_airflow(server.pid)
            redis.Redis.from_url(broker).flushdb()


def test_celery_executor_runs_the_daily_chain(celery_airflow: tuple[AirflowServer, str]) -> None:
    server, database = celery_airflow
    api = AirflowApi.login(server.url, ADMIN_USER, server.password())
    run_id = api.trigger("ingest_flights", day_start(DAY))
    assert api.wait_for_run("ingest_flights", run_id, timeout=900) == "success", api.task_states(
        "ingest_flights", run_id
    )
    assert api.task_states("ingest_flights", run_id) == dict.fromkeys(TASKS, "success")
    # Jan 2 completes no training window: no new_window event, and the features task says why.
    assert "flight_delay 2013-01-02: not announced: window" in api.task_log("ingest_flights", run_id, "features")
    # The worker records a task's result after the task process has reported success to Airflow, so the
    # last task may still read STARTED for a moment after the run is green: wait for it (bounded).
    engine = sqlalchemy.create_engine(database)
    try:
        deadline = time.monotonic() + 60
        while True:
            with engine.connect() as conn:
                results = conn.execute(sqlalchemy.text("SELECT status FROM celery_taskmeta")).scalars().all()
            if results.count("SUCCESS") >= len(TASKS) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        engine.dispose()
    assert results.count("SUCCESS") >= len(TASKS), results


def test_celery_executor_needs_postgres_and_a_broker() -> None:
    with pytest.raises(AirflowRuntimeError, match=r"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN .*AIRFLOW__CELERY__BROKER_URL"):
        celery_env({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/airflow.db"})
    env = celery_env(
        {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u@h/db", "AIRFLOW__CELERY__BROKER_URL": "redis://h"}
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://u@h/db" and env["AIRFLOW__API_AUTH__JWT_SECRET"]
