"""The Airflow scheduler killed (SIGKILL, with every task process it started) in the middle of a backfill.

A real ``airflow standalone`` (LocalExecutor, metadata in a PostgreSQL database of its own) backfills eight real
January days of ``ingest_flights`` through the REST API. Once some days are done and others are running, the
scheduler's whole process tree gets SIGKILL (a crashed scheduler, or its machine); ``standalone`` does not restart
it, so the test starts a new ``airflow scheduler`` on the same database, as a supervisor (systemd, Kubernetes)
would. The backfill must complete, with one run per day, one asset event per day and stage, every partition there.

The heartbeat timeout is 30 s here (Airflow's default is 300 s): the time after which the new scheduler treats
the killed tasks as gone and retries them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import airflow_client.client as client
import psutil
import pytest

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowServer, airflow_env, start_airflow, stop_airflow
from airflow_mlops.deploy.local import stop_tree
from airflow_mlops.processes import free_port
from airflow_mlops.settings import Settings, load_settings
from airflow_mlops.zones import partition_path
from tests.integration.conftest import deliveries, fresh_postgres_database, mlops_home, models_dir
from tests.integration.test_airflow_backfill import _api_client

__all__ = ["deliveries", "mlops_home", "models_dir"]  # the integration session's home, file source and spec

DAG_ID = "ingest_flights"
DAYS = [date(2013, 1, day) for day in range(1, 9)]
HEARTBEAT_TIMEOUT = 30

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow(mlops_home: Path, deliveries: Path, models_dir: Path) -> Iterator[AirflowServer]:
    with fresh_postgres_database() as database, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", database)
        mp.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", str(HEARTBEAT_TIMEOUT))
        server = start_airflow(free_port(), load_settings(), wait_for_dags=(DAG_ID,))
        try:
            yield server
        finally:
            stop_airflow(server.pid)


def scheduler_tree(standalone_pid: int) -> list[psutil.Process]:
    """The ``airflow scheduler`` process under ``standalone`` and everything it started (executor, tasks)."""
    for child in psutil.Process(standalone_pid).children(recursive=True):
        with_args = child.cmdline()
        if len(with_args) >= 2 and with_args[-1] == "scheduler" and "airflow" in with_args[-2]:
            return [child, *child.children(recursive=True)]
    raise AssertionError("no `airflow scheduler` process under standalone")


def run_states(api: client.ApiClient, days: list[date] = DAYS, dag_id: str = DAG_ID) -> list[tuple[date, str]]:
    """(logical date, state) of every run of ``dag_id`` over ``days``."""
    runs = client.DagRunApi(api).get_dag_runs(
        dag_id,
        logical_date_gte=datetime.combine(days[0], datetime.min.time(), tzinfo=UTC),
        logical_date_lte=datetime.combine(days[-1], datetime.min.time(), tzinfo=UTC),
        limit=100,
    )
    return [(run.logical_date.date(), run.state.value) for run in runs.dag_runs]


def backfill_until_half_way(
    api: client.ApiClient, days: list[date], dag_id: str, *, max_active_runs: int, done: int
) -> int:
    """Backfill ``days`` of ``dag_id`` over the REST API; return once ``done`` days succeeded and one runs."""
    client.BackfillApi(api).create_backfill(
        client.BackfillPostBody(
            dag_id=dag_id,
            from_date=datetime.combine(days[0], datetime.min.time(), tzinfo=UTC),
            to_date=datetime.combine(days[-1], datetime.min.time(), tzinfo=UTC),
            max_active_runs=max_active_runs,
            reprocess_behavior=client.ReprocessBehavior.FAILED,
        )
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = Counter(state for _, state in run_states(api, days, dag_id))
        if states["success"] >= done and states["running"] >= 1:
            return states["success"]
        time.sleep(1)
    raise AssertionError(f"the backfill never got half-way: {run_states(api, days, dag_id)}")


def start_component(component: str, port: int, settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``airflow <component>`` of the server on ``port``, in a session of its own, output appended to ``log_path``."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), component],
            env=airflow_env(port, settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(settings.home),
        )


def test_scheduler_killed_mid_backfill_and_restarted_completes_every_day_once(
    airflow: AirflowServer, observed: Callable[[str, str, str], None]
) -> None:
    settings = load_settings()
    password = airflow.password()
    api = _api_client(airflow, ADMIN_USER, password)
    done_before = backfill_until_half_way(api, DAYS, DAG_ID, max_active_runs=4, done=2)

    tree = scheduler_tree(airflow.pid)
    for process in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    killed_at = time.monotonic()
    time.sleep(5)

    port = int(airflow.url.rsplit(":", 1)[1])
    log_path = settings.run_dir / "scheduler-restarted.log"
    scheduler = start_component("scheduler", port, settings, log_path)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = run_states(api)
            if len(runs) == len(DAYS) and all(state in ("success", "failed") for _, state in runs):
                break
            time.sleep(2)
        finished_in = time.monotonic() - killed_at
    finally:
        stop_tree(scheduler.pid)

    runs = run_states(api)
    assert sorted(runs) == [(day, "success") for day in DAYS], runs  # every day once, all successful

    events = client.AssetApi(api).get_asset_events(source_dag_id=DAG_ID, limit=500).asset_events
    per_stage = {
        stage: Counter(e.extra["partition"] for e in events if e.uri == f"x-mlops://flights/{stage}")
        for stage in ("landed", "validated", "features")
    }
    for stage, counts in per_stage.items():
        assert counts == dict.fromkeys((d.isoformat() for d in DAYS), 1), (stage, counts)
    for day in DAYS:
        for zone in (settings.landing_dir, settings.validated_dir):
            assert partition_path(zone, "flights", "flights", day).exists(), (zone, day)

    tries = client.TaskInstanceApi(api).get_task_instances(DAG_ID, "~", limit=500).task_instances
    retried = sorted(f"{t.task_id} ({t.dag_run_id})" for t in tries if (t.try_number or 1) > 1)

    observed(
        "Airflow scheduler killed (SIGKILL, with its task processes) mid-backfill, then a new one started",
        "the backfill completes; every day once",
        f"killed with {done_before} of {len(DAYS)} days done and {len(tree) - 1} processes under it; all "
        f"{len(DAYS)} days successful {finished_in:.0f} s later, one run and one landed/validated/features event "
        f"per day; {len(retried)} task(s) ran again ({', '.join(retried) or 'none'})",
    )
