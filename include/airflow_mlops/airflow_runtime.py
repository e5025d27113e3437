"""Run the project's own Airflow (local profile) and talk to it through the official REST client.

:func:`start_airflow` launches ``airflow standalone`` (API server, scheduler, DAG processor,
triggerer) as a process group on a loopback port with the project's DAGs, plugins and home;
:func:`stop_airflow` stops it by its process id. :class:`AirflowApi` wraps the official
``apache-airflow-client``: token, backfills, runs. The demo, the CLI and the tests share this code.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import subprocess  # ruff: ignore[suspicious-subprocess-import] - starts the project's own servers and tools, argument lists only
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx

from airflow_mlops.model_files import SAFE_ENV
from airflow_mlops.processes import free_port, stop_process_group
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.zones import write_text_atomic

log = logging.getLogger(__name__)

ADMIN_USER = "admin"
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"  # ruff: ignore[hardcoded-password-string] - a file name
TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowRuntimeError(RuntimeError):
    """Airflow did not start, did not answer, or a run did not succeed; the message says which."""


def airflow_env(port: int, settings: Settings | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Airflow processes of the local profile, serving on ``127.0.0.1:port``."""
    settings = settings or get_settings()
    env = dict(os.environ if base is None else base)
    url = f"http://127.0.0.1:{port}"
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            **SAFE_ENV,  # no model deserialization through MLflow: airflow_mlops.model_files loads them
            # standalone starts its components as `airflow ...` subprocesses: our bin/ must be on PATH.
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "MLOPS_HOME": str(settings.home),
            "AIRFLOW_HOME": str(settings.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            # Two cores: keep the number of concurrent task processes small.
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": env.get("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "30"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            # Airflow's default is every interface; the local profile listens on loopback only.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        }
    )
    if not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").strip():
        # The metadata database of the settings: the `airflow` database of the embedded PostgreSQL by default.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.database_url("airflow")
    return env


def ensure_admin_password(airflow_home: Path) -> Path:
    """The simple auth manager's password file, generated here on first start (mode 0600).

    Left to Airflow, the first start generates the admin password and prints it into the API server's output,
    so into ``$MLOPS_HOME/run/airflow-<port>.log``; a password already in the file is never printed.
    """
    path = airflow_home / PASSWORD_FILE
    if not path.exists():
        write_text_atomic(json.dumps({ADMIN_USER: secrets.token_urlsafe(16)}) + "\n", path, private=True)
    path.chmod(0o600)
    return path


def admin_password(airflow_home: Path) -> str:
    """The admin password of ``$AIRFLOW_HOME`` (see :func:`ensure_admin_password`)."""
    path = airflow_home / PASSWORD_FILE
    try:
        return str(json.loads(path.read_text())[ADMIN_USER])
    except (OSError, KeyError, ValueError) as exc:
        raise AirflowRuntimeError(f"no admin password in {path} ({exc}); has Airflow started once?") from exc


@dataclass
class AirflowServer:
    """A running ``airflow standalone`` process group."""

    pid: int
    url: str
    airflow_home: Path
    log_path: Path

    def password(self) -> str:
        return admin_password(self.airflow_home)


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "airflow.json"


def running_airflow(settings: Settings | None = None) -> AirflowServer | None:
    """The Airflow this state folder started earlier, if its process is still alive."""
    settings = settings or get_settings()
    try:
        info = json.loads(_pid_file(settings).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return AirflowServer(
        pid=int(info["pid"]),
        url=info["url"],
        airflow_home=Path(info["airflow_home"]),
        log_path=Path(info["log_path"]),
    )


#: The components started one by one for the CeleryExecutor (``airflow standalone`` forces the LocalExecutor),
#: as ``docker/compose.yaml`` runs them, after ``airflow db migrate``.
CELERY_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker")


def celery_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for the CeleryExecutor: checks what it needs and fills what it can derive.

    Needs a PostgreSQL metadata database (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) and a broker
    (``AIRFLOW__CELERY__BROKER_URL``, Redis); the result backend defaults to the metadata database, and one
    JWT secret is shared by the separately started components (each would otherwise make its own).
    """
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    missing = []
    if not conn.startswith("postgresql"):
        missing.append("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (a postgresql:// URL)")
    if not env.get("AIRFLOW__CELERY__BROKER_URL"):
        missing.append("AIRFLOW__CELERY__BROKER_URL")
    if missing:
        raise AirflowRuntimeError(f"the CeleryExecutor needs {' and '.join(missing)} in the environment")
    env = dict(env)
    env["AIRFLOW__CORE__EXECUTOR"] = "CeleryExecutor"
    env.setdefault("AIRFLOW__CELERY__RESULT_BACKEND", "db+" + conn)
    env.setdefault("AIRFLOW__CELERY__WORKER_CONCURRENCY", env.get("AIRFLOW__CORE__PARALLELISM", "4"))
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
    return env


def start_airflow(
    port: int | None = None,
    settings: Settings | None = None,
    timeout: float = 300,
    wait_for_dags: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
    celery: bool = False,
) -> AirflowServer:
    """Start Airflow on 127.0.0.1 and wait until it is healthy and has parsed ``wait_for_dags``.

    By default ``airflow standalone`` (LocalExecutor). ``celery=True`` runs the production executor instead:
    ``airflow db migrate``, then :data:`CELERY_COMPONENTS` side by side in one process group (see
    :func:`celery_env` for what the environment must hold).
    """
    from airflow_mlops.embedded_db import ensure_started

    settings = settings or get_settings()
    port = port or free_port()
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    ensure_started(settings, progress)  # the metadata database, unless the environment names another
    log_path = settings.run_dir / f"airflow-{port}.log"
    env = airflow_env(port, settings)
    write_local_settings(settings)
    ensure_admin_password(settings.airflow_home)
    airflow_bin = str(Path(sys.executable).parent / "airflow")
    command = [airflow_bin, "standalone"]
    if celery:
        env = celery_env(env)
        started = " & ".join(f"{shlex.quote(airflow_bin)} {component}" for component in CELERY_COMPONENTS)
        command = ["bash", "-c", f"{shlex.quote(airflow_bin)} db migrate && {{ {started} & wait; }}"]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(  # ruff: ignore[subprocess-without-shell-equals-true] - Airflow from this venv, arguments built here
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(settings.home),
        )
    server = AirflowServer(
        pid=proc.pid, url=f"http://127.0.0.1:{port}", airflow_home=settings.airflow_home, log_path=log_path
    )
    _pid_file(settings).write_text(
        json.dumps(
            {"pid": proc.pid, "url": server.url, "airflow_home": str(server.airflow_home), "log_path": str(log_path)}
        )
    )
    try:
        _wait_healthy(server, proc, timeout, wait_for_dags, progress)
    except BaseException:
        stop_airflow(server.pid)
        raise
    return server


def write_local_settings(settings: Settings) -> Path:
    """``$AIRFLOW_HOME/config/airflow_local_settings.py``: preload the stage libraries in the scheduler."""
    from airflow_mlops.airflow_preload import LOCAL_SETTINGS

    path = settings.airflow_home / "config" / "airflow_local_settings.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != LOCAL_SETTINGS:
        path.write_text(LOCAL_SETTINGS)
    return path


def _wait_healthy(
    server: AirflowServer,
    proc: subprocess.Popen[bytes],
    timeout: float,
    wait_for_dags: tuple[str, ...],
    progress: Callable[[str], None] | None,
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AirflowRuntimeError(f"Airflow exited with {proc.returncode}; see {server.log_path}")
        status = _health(server.url)
        if status != last and progress:
            progress(f"Airflow: {status}")
        last = status
        if status == "healthy":
            if not wait_for_dags:
                return
            try:
                api = AirflowApi.login(server.url, ADMIN_USER, server.password())
                missing = [d for d in wait_for_dags if not api.dag_exists(d)]
            except (AirflowRuntimeError, httpx.HTTPError):
                missing = list(wait_for_dags)
            if not missing:
                return
            if progress:
                progress(f"Airflow: waiting for the DAG processor to parse {', '.join(missing)}")
        time.sleep(2)
    raise AirflowRuntimeError(
        f"Airflow at {server.url} not ready after {timeout:.0f}s (last: {last}); see {server.log_path}"
    )


class SchedulerDown(AirflowRuntimeError):
    """The scheduler stopped heartbeating while we waited on it (its log says why).

    Waits check it so that a dead scheduler fails them within minutes, naming the cause, instead of at their
    timeout (half an hour for a training).
    """


def _health(url: str) -> str:
    try:
        body = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return "starting API server"
    waiting = [
        name
        for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        if (body.get(name) or {}).get("status") != "healthy"
    ]
    return "healthy" if not waiting else "waiting for " + ", ".join(waiting)


def stop_airflow(pid: int, timeout: float = 60) -> None:
    """Stop the process group started by :func:`start_airflow`: SIGTERM, then SIGKILL after ``timeout``."""
    stop_process_group(pid, timeout)


def get_token(url: str, username: str, password: str) -> str:
    """A JWT from the API server (``POST /auth/token``), as every REST client needs."""
    response = httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
    if response.status_code >= 400:
        raise AirflowRuntimeError(f"POST {url}/auth/token answered {response.status_code}: {response.text[:200]}")
    return str(response.json()["access_token"])


def day_start(day: date) -> datetime:
    """Midnight UTC of ``day``: the logical date of the daily run that lands ``day``."""
    return datetime.combine(day, dtime(0), tzinfo=UTC)


class AirflowApi:
    """The official ``apache-airflow-client`` bound to one API server and token."""

    def __init__(self, url: str, token: str) -> None:
        import airflow_client.client as client

        self._client_mod = client
        self.url = url
        self.api_client = client.ApiClient(client.Configuration(host=url, access_token=token))

    @classmethod
    def login(cls, url: str, username: str, password: str) -> AirflowApi:
        return cls(url, get_token(url, username, password))

    #: How long the scheduler may look unhealthy before a wait gives up on it.
    SCHEDULER_GRACE = 120.0

    def check_scheduler(self) -> None:
        """Raise :class:`SchedulerDown` when the scheduler has been unhealthy for ``SCHEDULER_GRACE`` seconds."""
        try:
            body = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            healthy = (body.get("scheduler") or {}).get("status") == "healthy"
        except (httpx.HTTPError, ValueError):
            healthy = False
        now = time.monotonic()
        if healthy:
            self._unhealthy_since = None
            return
        since = getattr(self, "_unhealthy_since", None)
        if since is None:
            self._unhealthy_since = now
        elif now - since > self.SCHEDULER_GRACE:
            raise SchedulerDown(
                f"the Airflow scheduler at {self.url} has not heartbeated for {now - since:.0f} s; see the Airflow log"
            )

    def dag_exists(self, dag_id: str) -> bool:
        from airflow_client.client.exceptions import NotFoundException

        try:
            self._client_mod.DAGApi(self.api_client).get_dag(dag_id)
        except NotFoundException:
            return False
        return True

    def create_backfill(
        self, dag_id: str, start: date, end: date, max_active_runs: int = 4, reprocess: str = "completed"
    ) -> int:
        """Create a backfill for the days ``start``..``end`` (both included); return its id.

        ``reprocess``: ``completed`` runs every day again, ``failed`` only missing and failed days.
        """
        from airflow_client.client.exceptions import ConflictException, ServiceException

        body = self._client_mod.BackfillPostBody(
            dag_id=dag_id,
            from_date=day_start(start),
            to_date=day_start(end),
            max_active_runs=max_active_runs,
            reprocess_behavior=self._client_mod.ReprocessBehavior(reprocess),
        )
        try:
            return int(self._client_mod.BackfillApi(self.api_client).create_backfill(body).id)
        except ConflictException as exc:
            raise AirflowRuntimeError(
                f"{dag_id}: Airflow refused the backfill ({exc.body or exc.reason}); "
                "a DAG runs one backfill at a time, wait for the current one or cancel it in the UI"
            ) from None
        except ServiceException as exc:
            raise AirflowRuntimeError(f"{dag_id}: backfill not created: {exc.status} {exc.body}") from None

    def wait_for_backfills(self, dag_id: str, timeout: float = 300) -> None:
        """Wait until no backfill of ``dag_id`` is running (Airflow allows one at a time per DAG)."""
        backfills = self._client_mod.BackfillApi(self.api_client)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [b.id for b in backfills.list_backfills(dag_id, limit=100).backfills if b.completed_at is None]
            if not running:
                return
            time.sleep(1)
        raise AirflowRuntimeError(f"{dag_id}: backfills {running} still running after {timeout:.0f}s")

    def trigger(self, dag_id: str, logical_date: datetime, conf: dict[str, Any] | None = None) -> str:
        """Trigger one run of ``dag_id`` for ``logical_date``; return its run id."""
        body = self._client_mod.TriggerDAGRunPostBody(logical_date=logical_date, conf=conf or {})
        return str(self._client_mod.DagRunApi(self.api_client).trigger_dag_run(dag_id, body).dag_run_id)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1800) -> str:
        """Wait until one run has finished; return its state (``success`` or ``failed``)."""
        runs = self._client_mod.DagRunApi(self.api_client)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = str(runs.get_dag_run(dag_id, run_id).state.value)
            if state in TERMINAL_RUN_STATES:
                return state
            self.check_scheduler()
            time.sleep(2)
        raise AirflowRuntimeError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s (last state {state})")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """State of each task instance of one run, keyed by task id (``none`` when not scheduled yet)."""
        tis = self._client_mod.TaskInstanceApi(self.api_client).get_task_instances(dag_id, run_id).task_instances
        return {ti.task_id: ti.state.value if ti.state else "none" for ti in tis}

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The log of a task's latest try as text, one structured line per row (a cleared task starts a new try)."""
        tis = self._client_mod.TaskInstanceApi(self.api_client)
        latest = tis.get_task_instance(dag_id, run_id, task_id).try_number
        messages = tis.get_log(dag_id, run_id, task_id, try_number=latest).content.actual_instance or []
        return "\n".join(m if isinstance(m, str) else json.dumps(m.to_dict(), default=str) for m in messages)

    def runs(self, dag_id: str, start: date, end: date) -> dict[str, str]:
        """State of each run whose logical date falls in ``start``..``end``, keyed by day (ISO)."""
        found = self._get_dag_runs(dag_id, logical_date_gte=day_start(start), logical_date_lte=day_start(end))
        return {run.logical_date.date().isoformat(): str(run.state.value) for run in found}

    def _get_dag_runs(self, dag_id: str, **filters: Any) -> list[Any]:
        """Every run matching ``filters``, page by page (the API answers at most ``maximum_page_limit``, 100)."""
        api = self._client_mod.DagRunApi(self.api_client)
        found: list[Any] = []
        while True:
            page = api.get_dag_runs(dag_id, limit=100, offset=len(found), **filters)
            found.extend(page.dag_runs)
            if not page.dag_runs or len(found) >= page.total_entries:
                return found

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first: ``run_id``, ``run_type``, ``state``, dates, ``conf``."""
        return [
            {
                "run_id": run.dag_run_id,
                "run_type": str(getattr(run.run_type, "value", run.run_type)),
                "state": str(getattr(run.state, "value", run.state)),
                "run_after": run.run_after,
                "start_date": run.start_date,
                "end_date": run.end_date,
                "logical_date": run.logical_date,
            }
            for run in self._get_dag_runs(dag_id, order_by=["run_after"])
        ]

    def runs_triggered_by(self, dag_id: str, source_dag_id: str, source_run_id: str) -> list[dict[str, Any]]:
        """The asset-triggered runs of ``dag_id`` that consumed an asset event emitted by ``source_run_id``."""
        emitted = (
            self._client_mod.AssetApi(self.api_client)
            .get_asset_events(source_dag_id=source_dag_id, source_run_id=source_run_id)
            .asset_events
        )
        if not emitted:
            return []
        since = min(e.timestamp for e in emitted)  # only runs created after the first event can have consumed it
        dag_runs = self._client_mod.DagRunApi(self.api_client)
        found = []
        for run in self.dag_runs(dag_id):
            if run["run_type"] != "asset_triggered" or run["run_after"] < since:
                continue
            events = dag_runs.get_upstream_asset_events(dag_id, run["run_id"]).asset_events
            if any(e.source_dag_id == source_dag_id and e.source_run_id == source_run_id for e in events):
                found.append(run)
        return found

    def wait_until_idle(self, dag_id: str, timeout: float = 1800, settle: float = 10) -> list[dict[str, Any]]:
        """Wait until ``dag_id`` has no queued or running run for ``settle`` seconds; return its runs."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = self.dag_runs(dag_id)
            busy = [r for r in runs if r["state"] not in TERMINAL_RUN_STATES]
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return runs
            self.check_scheduler()
            time.sleep(2)
        raise AirflowRuntimeError(f"{dag_id}: still busy after {timeout:.0f}s: {[r['run_id'] for r in runs]}")

    def wait_for_runs(
        self,
        dag_id: str,
        start: date,
        end: date,
        timeout: float = 1800,
        progress: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """Wait until every day in ``start``..``end`` has a finished run; fail naming the failed days."""
        expected = (end - start).days + 1
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.runs(dag_id, start, end)
            if progress:
                progress(states)
            finished = {day: s for day, s in states.items() if s in TERMINAL_RUN_STATES}
            if len(finished) == expected:
                failed = sorted(day for day, s in finished.items() if s == "failed")
                if failed:
                    raise AirflowRuntimeError(f"{dag_id}: runs failed for {', '.join(failed)}; see the Airflow UI")
                return states
            self.check_scheduler()
            time.sleep(2)
        raise AirflowRuntimeError(f"{dag_id}: runs not finished after {timeout:.0f}s: {states}")
