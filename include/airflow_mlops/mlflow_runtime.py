"""Run the project's own MLflow tracking server (its UI browses the registry).

:func:`start_mlflow` launches ``mlflow server`` (uvicorn, one worker) as a process group of its own on a
loopback port: backend store from the settings (the ``mlflow`` database of the embedded PostgreSQL in the
``local`` profile, or a PostgreSQL URL given for ``production``), artifacts proxied by the server
(``--serve-artifacts``) into ``$MLOPS_HOME/mlflow/artifacts``, Host header checked against the loopback
names of its port, job execution off (it would start a Huey consumer and about 2 GB of workers).
With ``auth`` (the production profile's default) it runs MLflow's basic-auth app (``--app-name basic-auth``):
every request but ``/health`` needs HTTP basic credentials, the user ``admin`` is created on first start with
:meth:`~airflow_mlops.settings.Settings.mlflow_admin_password` (handed to the server in its environment, never
on the command line or in a file of ours), the user store is ``$MLOPS_HOME/mlflow/basic_auth.db``, the
configuration ``$MLOPS_HOME/secrets/mlflow-auth.ini`` (mode 0600), and CORS admits only the server's own
loopback origins. Clients authenticate with MLflow's ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``. :func:`stop_mlflow` stops it by its process id. The CLI's ``airflow-mlops mlflow
start|stop`` (:data:`mlflow_group`), the demo and the tests share this code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess  # ruff: ignore[suspicious-subprocess-import] - starts the project's own servers and tools, argument lists only
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import httpx

from airflow_mlops.model_files import SAFE_ENV
from airflow_mlops.processes import free_port, port_in_use, stop_process_group
from airflow_mlops.settings import Profile, Settings, SettingsError, get_settings, mask_url
from airflow_mlops.zones import write_text_atomic

log = logging.getLogger(__name__)

#: Port of ``airflow-mlops mlflow start`` (MLflow's own default).
DEFAULT_PORT = 5000
#: Database engines offered for MLflow's SQL store: the server databases of ``mlflow.store.db.db_types``.
#: MLflow also reads SQLite files, but Airflow tasks, the server and the CLI write the store at once.
SUPPORTED_ENGINES = ("postgresql", "mysql", "mssql")
#: Environment of the server processes: no job executor (Huey consumer and its workers, ~2 GB).
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
#: The basic-auth app's administrator (MLflow's ``admin_username``), created on the server's first start.
AUTH_ADMIN = "admin"
#: What an authenticated user may do where no permission was granted (MLflow's ``default_permission``).
AUTH_DEFAULT_PERMISSION = "READ"
#: How many lines of the server log an error message quotes.
LOG_TAIL_LINES = 25


class MlflowRuntimeError(RuntimeError):
    """MLflow did not start or its configuration is wrong; the message says what and where."""


@dataclass
class MlflowServer:
    """A running ``mlflow server`` process group.

    ``backend_uri`` is shown with any password masked (``***``): it is what the pid file and the CLI print.
    """

    pid: int
    url: str
    log_path: Path
    backend_uri: str
    artifacts: str
    #: Whether the server runs MLflow's basic-auth app (requests need credentials).
    auth: bool = False


def default_backend_uri(settings: Settings) -> str:
    """The backend store of ``settings``: its ``mlflow_tracking_uri`` when that is a database URL.

    In the ``local`` profile that is the ``mlflow`` database of the embedded PostgreSQL. When the tracking URI
    points at a server (``http(s)://``, as clients of the ``production`` profile use) there is no store to
    derive: the caller passes the PostgreSQL URL explicitly.
    """
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        raise MlflowRuntimeError(
            f"MLOPS_MLFLOW_TRACKING_URI={uri!r} is a tracking server, not a backend store "
            f"(profile {settings.profile.value}); pass the server's database URL explicitly "
            "(e.g. --backend-store-uri postgresql+psycopg2://user@host:5432/mlflow)"
        )
    return uri


def default_artifacts(settings: Settings) -> Path:
    """Where the server stores the artifacts it proxies by default: ``$MLOPS_HOME/mlflow/artifacts``."""
    return settings.home / "mlflow" / "artifacts"


def check_backend_uri(uri: str) -> str:
    """Validate a backend store URI before any process starts; return it unchanged.

    Raises :class:`MlflowRuntimeError` naming the URI (password masked) and what is wrong with it.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = (uri or "").strip()
    if not raw:
        raise MlflowRuntimeError(
            "the MLflow backend store URI is empty; give a database URL such as postgresql+psycopg2://user@host/db"
        )
    if raw.startswith(("http://", "https://")):
        raise MlflowRuntimeError(
            f"backend store URI {raw!r} is a tracking server URL, not a database; "
            "give a database URL (postgresql+psycopg2://user@host/db)"
        )
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise MlflowRuntimeError(
            f"backend store URI {raw!r} is not a database URL ({exc}); expected dialect[+driver]://..., "
            f"with dialect one of {', '.join(SUPPORTED_ENGINES)}"
        ) from None
    shown = url.render_as_string(hide_password=True)
    engine = url.get_backend_name()
    if engine not in SUPPORTED_ENGINES:
        raise MlflowRuntimeError(
            f"backend store URI {shown!r}: MLflow stores runs in {', '.join(SUPPORTED_ENGINES)}, not {engine!r}"
        )
    if not url.database:
        raise MlflowRuntimeError(f"backend store URI {shown!r} names no database; add /<database> to it")
    return raw


def check_backend_reachable(uri: str, timeout: float = 10) -> None:
    """Open the backend store once and list its tables; fail fast with the driver's reason if it cannot.

    ``mlflow server`` retries a store it cannot open for about 100 s (``mlflow.store.db.utils``) before it
    exits; this check turns a missing database, a refused connection, a missing driver or a file that is not
    a database into an immediate :class:`MlflowRuntimeError`.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    shown = mask_url(uri)
    connect_args: dict[str, int] = {}
    if sa.engine.make_url(uri).get_backend_name() in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = max(1, int(timeout))
    engine = None
    try:
        engine = sa.create_engine(uri, poolclass=NullPool, connect_args=connect_args)
        with engine.connect() as conn:
            sa.inspect(conn).get_table_names()
    except Exception as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise MlflowRuntimeError(f"MLflow backend store {shown!r} cannot be opened: {reason}") from None
    finally:
        if engine is not None:
            engine.dispose()


def _has_password(uri: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(uri).password is not None


def allowed_hosts(port: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Host headers the server accepts: the loopback names of ``port``, then ``extra`` ones."""
    return [f"127.0.0.1:{port}", f"localhost:{port}", *extra]


def server_command(
    port: int,
    backend_uri: str,
    artifacts: str | Path,
    *,
    workers: int = 1,
    extra_hosts: tuple[str, ...] = (),
    auth: bool = False,
) -> list[str]:
    """The ``mlflow server`` command line (without the environment; see :func:`server_env`).

    ``auth``: MLflow's basic-auth app, with CORS admitting the server's own loopback origins only.

    A backend URI that carries a password stays off the command line (``ps`` shows it to every user): it
    goes to the server through ``MLFLOW_BACKEND_STORE_URI`` instead (see :func:`server_env`).
    """
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow_bin, "server"]
    if not _has_password(backend_uri):
        command += ["--backend-store-uri", backend_uri]
    command += [
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # uvicorn (MLflow 3's default server); one worker process on a two-core machine.
        "--workers",
        str(workers),
        "--allowed-hosts",
        ",".join(allowed_hosts(port, extra_hosts)),
    ]
    if auth:
        origins = ",".join(f"http://{host}" for host in allowed_hosts(port))
        command += ["--app-name", "basic-auth", "--cors-allowed-origins", origins]
    return command


def auth_env(settings: Settings) -> dict[str, str]:
    """The basic-auth app's environment: its configuration file (written here, 0600), the admin password and
    the key signing its CSRF tokens.

    The file names the user store (``$MLOPS_HOME/mlflow/basic_auth.db``) and the admin's name; the password
    goes in ``MLFLOW_AUTH_ADMIN_PASSWORD``, which MLflow reads when it creates the admin on the first start.
    """
    try:
        secrets = {
            "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_admin_password(),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.mlflow_secret_key(),
        }
    except SettingsError as exc:
        raise MlflowRuntimeError(f"MLflow's basic-auth app: {exc}") from None
    store = settings.home / "mlflow" / "basic_auth.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    config = settings.secrets_dir / "mlflow-auth.ini"
    text = (
        "[mlflow]\n"
        f"default_permission = {AUTH_DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{store}\n"
        f"admin_username = {AUTH_ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    write_text_atomic(text, config, private=True)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), **secrets}


def server_env(backend_uri: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the ``mlflow server`` process: ``base`` (default ``os.environ``) plus :data:`SERVER_ENV`."""
    env = dict(os.environ if base is None else base)
    env.update(SERVER_ENV)
    env.update(SAFE_ENV)  # the server never deserializes a model either
    # A client-side tracking URI in the caller's environment means nothing to the server itself.
    env.pop("MLFLOW_TRACKING_URI", None)
    if _has_password(backend_uri):
        env["MLFLOW_BACKEND_STORE_URI"] = backend_uri
    else:
        env.pop("MLFLOW_BACKEND_STORE_URI", None)
    return env


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty if it cannot be read)."""
    try:
        with path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except OSError:
        return ""


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "mlflow.json"


def running_mlflow(settings: Settings | None = None) -> MlflowServer | None:
    """The MLflow server this state folder started earlier, if its process is still alive."""
    settings = settings or get_settings()
    try:
        info = json.loads(_pid_file(settings).read_text())
        os.kill(int(info["pid"]), 0)
        return MlflowServer(
            pid=int(info["pid"]),
            url=info["url"],
            log_path=Path(info["log_path"]),
            backend_uri=info["backend_uri"],
            artifacts=info["artifacts"],
            auth=bool(info.get("auth", False)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def start_mlflow(
    port: int | None = None,
    settings: Settings | None = None,
    backend_uri: str | None = None,
    artifacts: str | Path | None = None,
    timeout: float = 120,
    extra_hosts: tuple[str, ...] = (),
    auth: bool | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` on ``127.0.0.1:port`` and wait until ``GET /health`` answers.

    ``auth`` (default: on in the production profile) runs MLflow's basic-auth app (see the module doc).

    ``backend_uri`` defaults to :func:`default_backend_uri` (started first if it is the embedded database),
    ``artifacts`` (an
    artifact store URI or folder the server proxies) to :func:`default_artifacts`; ``port`` to a free one.
    Fails with :class:`MlflowRuntimeError` before starting anything if the port is taken or the store's URI
    is malformed or cannot be opened (:func:`check_backend_reachable`), and with the log's tail if the
    server exits or is not healthy within ``timeout`` seconds (its process group is stopped then). The pid
    file is ``<run_dir>/mlflow.json``.
    """
    from airflow_mlops.embedded_db import ensure_started

    settings = settings or get_settings()
    if auth is None:
        auth = settings.profile == Profile.PRODUCTION
    if backend_uri is not None:
        backend_uri = check_backend_uri(backend_uri)
    port = port or free_port()
    if port_in_use(port):
        raise MlflowRuntimeError(
            f"port {port} on 127.0.0.1 is already in use; choose another port or stop what listens there"
        )
    if backend_uri is None:
        ensure_started(settings)
        backend_uri = check_backend_uri(default_backend_uri(settings))
    check_backend_reachable(backend_uri)
    if artifacts is None:
        artifacts = default_artifacts(settings)
    if isinstance(artifacts, Path) or "://" not in str(artifacts):
        artifacts = Path(artifacts).expanduser().resolve()
        try:
            artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MlflowRuntimeError(f"cannot create the MLflow artifacts folder {artifacts} ({exc})") from None
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.run_dir / f"mlflow-{port}.log"
    command = server_command(port, backend_uri, artifacts, extra_hosts=extra_hosts, auth=auth)
    env = server_env(backend_uri)
    if auth:
        env.update(auth_env(settings))
    log.info("starting MLflow: %s", shlex.join(command))
    with log_path.open("ab") as out:
        proc = subprocess.Popen(  # ruff: ignore[subprocess-without-shell-equals-true] - mlflow from this venv, arguments built here
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(settings.home),
        )
    server = MlflowServer(
        pid=proc.pid,
        url=f"http://127.0.0.1:{port}",
        log_path=log_path,
        backend_uri=mask_url(backend_uri),
        artifacts=str(artifacts),
        auth=auth,
    )
    pid_file = _pid_file(settings)
    pid_file.write_text(json.dumps({**asdict(server), "log_path": str(log_path)}))
    try:
        _wait_healthy(server, proc, timeout)
    except BaseException:
        stop_mlflow(server.pid)
        with contextlib.suppress(OSError):
            pid_file.unlink()
        raise
    return server


def _wait_healthy(server: MlflowServer, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MlflowRuntimeError(
                f"mlflow server exited with {proc.returncode} (backend {server.backend_uri}); "
                f"log {server.log_path}, last lines:\n{log_tail(server.log_path)}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise MlflowRuntimeError(
        f"MLflow at {server.url} not healthy after {timeout:.0f}s; log {server.log_path}, last lines:\n"
        f"{log_tail(server.log_path)}"
    )


def stop_mlflow(pid: int, timeout: float = 30) -> None:
    """Stop the process group started by :func:`start_mlflow`: SIGTERM, then SIGKILL after ``timeout``.

    The same process-group stop as Airflow's (:func:`airflow_mlops.processes.stop_process_group`).
    """
    stop_process_group(pid, timeout=timeout)


# --- CLI: `airflow-mlops mlflow ...` (added to the main group by cli.py) ---------------------------------


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("mlflow")
def mlflow_group() -> None:
    """Start and stop the project's own MLflow tracking server (its UI is the server's home page)."""


@mlflow_group.command("start")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="port on 127.0.0.1 (free one if busy)")
@click.option(
    "--backend-store-uri",
    "backend_uri",
    default=None,
    help="database URL of the store (default: the mlflow database of the embedded PostgreSQL of MLOPS_HOME)",
)
@click.option(
    "--auth/--no-auth",
    default=None,
    help="MLflow's basic-auth app (default: on in the production profile, off in the local one)",
)
def mlflow_start(port: int, backend_uri: str | None, auth: bool | None) -> None:
    """Start `mlflow server` in the background with proxied artifacts under MLOPS_HOME."""
    settings = _settings()
    server = running_mlflow(settings)
    if server is not None:
        click.echo(f"MLflow already running at {server.url} (pid {server.pid})", err=True)
        return
    if port_in_use(port):
        new_port = free_port()
        click.echo(f"port {port} is busy; using {new_port}", err=True)
        port = new_port
    click.echo(f"Starting MLflow on http://127.0.0.1:{port} ...", err=True)
    try:
        server = start_mlflow(port, settings, backend_uri=backend_uri, auth=auth)
    except MlflowRuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"MLflow is up at {server.url} (pid {server.pid}, store {server.backend_uri}, "
        f"artifacts {server.artifacts}, log {server.log_path})",
        err=True,
    )
    click.echo(f"Clients: export MLFLOW_TRACKING_URI={server.url}", err=True)
    if server.auth:
        where = (
            "MLOPS_MLFLOW_ADMIN_PASSWORD"
            if settings.mlflow_admin_password_override
            else str(settings.secrets_dir / "mlflow-admin-password")
        )
        click.echo(
            f"Basic auth is on: export MLFLOW_TRACKING_USERNAME={AUTH_ADMIN} and MLFLOW_TRACKING_PASSWORD "
            f"(the password is in {where}); the UI asks for the same.",
            err=True,
        )


@mlflow_group.command("stop")
def mlflow_stop() -> None:
    """Stop the MLflow server started by `airflow-mlops mlflow start`."""
    settings = _settings()
    server = running_mlflow(settings)
    if server is None:
        click.echo("No MLflow server of this state folder is running.", err=True)
        return
    stop_mlflow(server.pid)
    with contextlib.suppress(OSError):
        _pid_file(settings).unlink()
    click.echo(f"Stopped MLflow (pid {server.pid}).", err=True)
