"""What :mod:`airflow_mlops.mlflow_runtime` decides before any server runs: command line, environment, errors.

The server itself is exercised for real in ``tests/integration/test_mlflow_server.py``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from airflow_mlops.mlflow_runtime import (
    SERVER_ENV,
    MlflowRuntimeError,
    auth_env,
    check_backend_reachable,
    mlflow_group,
    running_mlflow,
    server_command,
    server_env,
    start_mlflow,
)
from airflow_mlops.settings import load_settings


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_server_command_binds_loopback_with_proxied_artifacts_and_checked_hosts(tmp_path: Path) -> None:
    backend = "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow"
    command = server_command(5123, backend, tmp_path / "artifacts", extra_hosts=("mlflow.internal",))
    assert command[0].endswith("mlflow")
    assert command[1] == "server"
    assert _option(command, "--backend-store-uri") == backend
    assert "--serve-artifacts" in command
    assert _option(command, "--artifacts-destination") == str(tmp_path / "artifacts")
    assert _option(command, "--host") == "127.0.0.1"
    assert _option(command, "--port") == "5123"
    assert _option(command, "--workers") == "1"
    assert _option(command, "--allowed-hosts").split(",") == ["127.0.0.1:5123", "localhost:5123", "mlflow.internal"]


def test_server_env_disables_job_execution_and_keeps_passwords_off_the_command_line() -> None:
    assert SERVER_ENV == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    plain = "postgresql+psycopg2://mlflow@db:5432/mlflow"
    env = server_env(plain, base={"PATH": "/bin", "MLFLOW_TRACKING_URI": "http://elsewhere"})
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["PATH"] == "/bin"
    assert "MLFLOW_TRACKING_URI" not in env
    assert "MLFLOW_BACKEND_STORE_URI" not in env

    secret = "postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow"
    command = server_command(5000, secret, "s3://bucket/mlflow")
    assert "--backend-store-uri" not in command
    assert not any("s3cret" in part for part in command)
    assert server_env(secret, base={})["MLFLOW_BACKEND_STORE_URI"] == secret


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "is empty"),
        ("postgres//127.0.0.1/mlflow", "is not a database URL"),
        ("redis://127.0.0.1:6379/0", "not 'redis'"),
        ("http://127.0.0.1:5000", "is a tracking server URL"),
        ("sqlite:////tmp/mlflow.db", r"not 'sqlite'"),  # Airflow tasks, the server and the CLI write at once
        ("postgresql+psycopg2://user:hidden@127.0.0.1:5432", "names no database"),
    ],
)
def test_malformed_backend_uri_is_refused_before_anything_starts(tmp_path: Path, uri: str, message: str) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    with pytest.raises(MlflowRuntimeError, match=message) as info:
        start_mlflow(settings=settings, backend_uri=uri or " ")
    assert "hidden" not in str(info.value)
    assert not settings.run_dir.exists()


def test_store_that_cannot_be_opened_is_refused_before_the_server_starts(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(MlflowRuntimeError, match=r"cannot be opened: .*Connection refused") as refused:
        check_backend_reachable(f"postgresql+psycopg2://mlflow:hidden@127.0.0.1:{closed}/mlflow")
    assert "hidden" not in str(refused.value)
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    with pytest.raises(MlflowRuntimeError, match="No module named 'pymysql'") as info:
        start_mlflow(settings=settings, backend_uri="mysql+pymysql://mlflow:hidden@127.0.0.1:3306/mlflow")
    assert "mysql+pymysql://mlflow:***@127.0.0.1:3306/mlflow" in str(info.value)
    assert "hidden" not in str(info.value)
    assert not settings.run_dir.exists()


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(MlflowRuntimeError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_mlflow(port, settings)
    assert running_mlflow(settings) is None


def test_running_mlflow_ignores_a_stale_pid_file(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "mlflow.json").write_text(json.dumps({"pid": 2**22 + 12345, "url": "http://x"}))
    assert running_mlflow(settings) is None
    result = CliRunner().invoke(mlflow_group, ["stop"], env={"MLOPS_HOME": str(tmp_path)})
    assert result.exit_code == 0
    assert "No MLflow server" in result.output


def test_basic_auth_command_and_environment(tmp_path: Path) -> None:
    command = server_command(5123, "postgresql+psycopg2://m@127.0.0.1:5432/m", tmp_path / "a", auth=True)
    assert _option(command, "--app-name") == "basic-auth"
    assert _option(command, "--cors-allowed-origins") == "http://127.0.0.1:5123,http://localhost:5123"
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    env = auth_env(settings)  # local profile: the secrets are generated, 0600, and stable
    assert env == auth_env(settings)
    assert len(env["MLFLOW_AUTH_ADMIN_PASSWORD"]) >= 40 and len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 40
    config = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert config.stat().st_mode & 0o777 == 0o600
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] not in config.read_text()
    assert f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'basic_auth.db'}" in config.read_text()
    production = load_settings({"MLOPS_HOME": str(tmp_path / "prod"), "MLOPS_PROFILE": "production"})
    with pytest.raises(MlflowRuntimeError, match="needs MLOPS_MLFLOW_ADMIN_PASSWORD"):
        auth_env(production)
    production = load_settings(
        {"MLOPS_HOME": str(tmp_path / "prod"), "MLOPS_PROFILE": "production", "MLOPS_MLFLOW_ADMIN_PASSWORD": "pw"}
    )
    with pytest.raises(MlflowRuntimeError, match="needs MLOPS_MLFLOW_SECRET_KEY"):
        auth_env(production)
    assert not (tmp_path / "prod" / "secrets").exists()  # production generates nothing
