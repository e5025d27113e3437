"""The metadata database restarted in the middle of a backfill: runs resume or fail clearly, nothing is duplicated.

The local profile's own database: a real ``airflow standalone`` (LocalExecutor) keeps its metadata in the
session home's embedded PostgreSQL, which also holds that home's MLflow store and Feast registry (what ``make demo``
runs). Six real January days of ``ingest_flights`` are backfilled through the REST API; once some days are done and
others running, PostgreSQL is stopped as a crash stops it (``pg_ctl stop -m immediate``: no checkpoint, every
connection cut), kept down for :data:`DOWN_SECONDS`, and started again (it replays its WAL).

Airflow's components hold database connections; a component that exits because its database went away is started
again by the test, as the supervisor of a production deployment would (compose ``restart: unless-stopped``,
Kubernetes, systemd; ``standalone`` restarts nothing). The invariant: every day ends with exactly one run, successful
or failed; a failed run succeeds when cleared (the retry a user makes); in the end one landed, validated and features
event per day and every partition there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import airflow_client.client as client
import psutil
import pytest

from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowServer, start_airflow, stop_airflow
from airflow_mlops.deploy.local import stop_tree
from airflow_mlops.embedded_db import embedded
from airflow_mlops.processes import free_port, port_in_use
from airflow_mlops.settings import load_settings
from airflow_mlops.zones import partition_path
from tests.faults.test_scheduler_faults import HEARTBEAT_TIMEOUT, backfill_until_half_way, run_states, start_component
from tests.integration.conftest import deliveries, mlops_home, models_dir
from tests.integration.test_airflow_backfill import _api_client

__all__ = ["deliveries", "mlops_home", "models_dir"]  # the integration session's home, file source and spec

DAG_ID = "ingest_flights"
#: Days the scheduler test does not backfill (it takes 1 to 8 in the same session home).
DAYS = [date(2013, 1, day) for day in range(9, 15)]
#: How long the database stays down.
DOWN_SECONDS = 15
#: Airflow's long-running components found as ``airflow <component>`` processes (the API server renames its process;
#: it is found by its port).
COMPONENTS = ("scheduler", "dag-processor", "triggerer")

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow(mlops_home: Path, deliveries: Path, models_dir: Path) -> Iterator[AirflowServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)  # the home's embedded PostgreSQL
        mp.setenv("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", str(HEARTBEAT_TIMEOUT))
        server = start_airflow(free_port(), load_settings(), wait_for_dags=(DAG_ID,))
        try:
            yield server
        finally:
            stop_airflow(server.pid)


def running_components(roots: list[int]) -> dict[str, int]:
    """The ``airflow <component>`` processes alive under ``roots`` (standalone and what the test started)."""
    found: dict[str, int] = {}
    for root in roots:
        try:
            tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                argv = process.cmdline()  # a zombie (exited, not yet reaped) raises ZombieProcess
            except psutil.Error:
                continue
            if len(argv) >= 2 and argv[-1] in COMPONENTS and "airflow" in argv[-2]:
                found.setdefault(argv[-1], process.pid)
    return found


def test_metadata_database_restarted_mid_backfill_runs_resume_or_fail_clearly_and_none_is_duplicated(
    airflow: AirflowServer, observed: Callable[[str, str, str], None]
) -> None:
    settings = load_settings()
    api = _api_client(airflow, ADMIN_USER, airflow.password())
    done_before = backfill_until_half_way(api, DAYS, DAG_ID, max_active_runs=3, done=1)

    database = embedded(settings.home)
    port = int(airflow.url.rsplit(":", 1)[1])
    before = running_components([airflow.pid])
    assert sorted(before) == sorted(COMPONENTS) and port_in_use(port), before
    database.stop(mode="immediate")
    stopped_at = time.monotonic()
    time.sleep(DOWN_SECONDS)
    database.start()
    up_after = time.monotonic() - stopped_at

    started: list[tuple[str, int]] = []  # what the test started again, as a supervisor would
    log_path = settings.run_dir / "airflow-after-db-restart.log"

    def supervise() -> None:
        alive = running_components([airflow.pid, *(pid for _, pid in started)])
        if port_in_use(port):
            alive["api-server"] = 0
        for component in (*COMPONENTS, "api-server"):
            if component not in alive:
                started.append((component, start_component(component, port, settings, log_path).pid))

    try:
        deadline = time.monotonic() + 900
        runs: list[tuple[date, str]] = []
        while time.monotonic() < deadline:
            time.sleep(3)
            supervise()
            try:
                runs = run_states(api, DAYS, DAG_ID)
            except client.ApiException as exc:
                if exc.status == 401:  # a restarted API server signs tokens again
                    api = _api_client(airflow, ADMIN_USER, airflow.password())
                continue
            except (OSError, client.exceptions.OpenApiException):  # the API server is starting again
                continue
            if len(runs) == len(DAYS) and all(state in ("success", "failed") for _, state in runs):
                break
        settled_in = time.monotonic() - stopped_at

        assert sorted(day for day, _ in runs) == DAYS, runs  # every day exactly once
        failed = [day for day, state in runs if state == "failed"]
        clues = {}
        for day in failed:  # a failed run names the tasks that failed; clearing it is the retry
            run_id = next(r.dag_run_id for r in _runs(api, day))
            tasks = client.TaskInstanceApi(api).get_task_instances(DAG_ID, run_id).task_instances
            broken = [t.task_id for t in tasks if t.state and t.state.value in ("failed", "upstream_failed")]
            assert broken, (day, [(t.task_id, t.state) for t in tasks])
            clues[day] = broken
            client.DagRunApi(api).clear_dag_run(DAG_ID, run_id, client.DAGRunClearBody(dry_run=False))
        if failed:  # the user's retry: cleared runs succeed
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                time.sleep(3)
                supervise()
                runs = run_states(api, DAYS, DAG_ID)
                if all(state in ("success", "failed") for _, state in runs):
                    break
        assert sorted(runs) == [(day, "success") for day in DAYS], runs
    finally:
        for _, pid in started:
            stop_tree(pid)

    events = client.AssetApi(api).get_asset_events(source_dag_id=DAG_ID, limit=500).asset_events
    for stage in ("landed", "validated", "features"):
        counts = Counter(e.extra["partition"] for e in events if e.uri == f"x-mlops://flights/{stage}")
        assert {day: counts[day.isoformat()] for day in DAYS} == dict.fromkeys(DAYS, 1), (stage, counts)
    for day in DAYS:
        for zone in (settings.landing_dir, settings.validated_dir):
            assert partition_path(zone, "flights", "flights", day).exists(), (zone, day)

    tries = client.TaskInstanceApi(api).get_task_instances(DAG_ID, "~", limit=500).task_instances
    retried = [t for t in tries if (t.try_number or 1) > 1 and t.logical_date and t.logical_date.date() in DAYS]
    failures = "; ".join(f"{day}: {', '.join(tasks)}" for day, tasks in clues.items())
    restarted = ", ".join(component for component, _ in started) or "none"
    outcome = f"{len(failed)} run(s) failed" + (f" ({failures}), each succeeded when cleared" if failed else "")
    observed(
        "metadata database (the local profile's embedded PostgreSQL) crashed mid-backfill and started again "
        f"{DOWN_SECONDS} s later",
        "runs resume or fail clearly; nothing duplicated",
        f"stopped with {done_before} of {len(DAYS)} days done; up again after {up_after:.0f} s; Airflow components "
        f"that exited on the lost connection, started again by the test as a supervisor would: {restarted}; "
        f"{len(retried)} task(s) ran again; every run settled {settled_in:.0f} s after the crash; {outcome}; one "
        "run and one landed/validated/features event per day",
    )


def _runs(api: client.ApiClient, day: date) -> list[client.DAGRunResponse]:
    moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return client.DagRunApi(api).get_dag_runs(DAG_ID, logical_date_gte=moment, logical_date_lte=moment).dag_runs
