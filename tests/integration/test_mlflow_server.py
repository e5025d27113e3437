"""The project's MLflow tracking server for real: PostgreSQL store, proxied artifacts, registry, Host check.

* ``mlflow server`` started by :func:`start_mlflow` on a free loopback port (one server for the module),
  with the machine's PostgreSQL as backend store (a database of its own, dropped afterwards) and artifacts
  proxied into a temporary folder. The plain MLflow client logs a run (``log_batch``), a scikit-learn model
  registered as ``it_model`` with alias ``@champion``, loads it back by alias and predicts.
* The embedded profile: ``airflow-mlops mlflow start`` / ``stop`` on a fresh ``MLOPS_HOME`` (embedded PostgreSQL and
  artifacts under it), stopped by process id with its whole process group.
* A backend that cannot be opened: the server exits and the error quotes its log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from airflow_mlops import mlflow_runtime
from airflow_mlops.embedded_db import embedded
from airflow_mlops.mlflow_runtime import (
    MlflowRuntimeError,
    MlflowServer,
    mlflow_group,
    port_in_use,
    running_mlflow,
    start_mlflow,
    stop_mlflow,
)
from airflow_mlops.processes import free_port
from airflow_mlops.settings import Settings, load_settings, mask_url
from tests.integration.conftest import fresh_postgres_database

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def pg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-pg-home")


@pytest.fixture(scope="module")
def pg_settings(pg_home: Path) -> Settings:
    return load_settings({"MLOPS_HOME": str(pg_home)})


@pytest.fixture(scope="module")
def mlflow_database() -> Iterator[str]:
    """A PostgreSQL database of the module's own for the MLflow store."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def pg_server(pg_settings: Settings, pg_home: Path, mlflow_database: str) -> Iterator[MlflowServer]:
    """One ``mlflow server`` for the module: PostgreSQL store, artifacts proxied into ``<tmp>/artifacts``."""
    began = time.monotonic()
    server = start_mlflow(settings=pg_settings, backend_uri=mlflow_database, artifacts=pg_home / "artifacts")
    print(f"mlflow server (PostgreSQL store) healthy after {time.monotonic() - began:.1f}s")
    try:
        yield server
    finally:
        stop_mlflow(server.pid)


@pytest.fixture
def tracking(pg_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the MLflow client (fluent API included) at the module's server; restore afterwards."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_server.url)  # restored by monkeypatch
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", pg_server.url)
    mlflow.set_tracking_uri(pg_server.url)
    mlflow.set_registry_uri(pg_server.url)
    try:
        yield pg_server.url
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _flights_frame(rows: int = 80) -> tuple[pd.DataFrame, pd.Series]:
    """A small flights-like frame: late, long, cold departures are delayed more often."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "sched_dep_hour": rng.integers(5, 23, rows).astype(float),
            "distance": rng.uniform(200, 2500, rows).round(),
            "temp": rng.uniform(10, 90, rows).round(1),
        }
    )
    score = 0.25 * (frame["sched_dep_hour"] - 14) + 0.03 * (45 - frame["temp"]) + rng.normal(0, 1, rows)
    return frame, (score > 0).astype(int).rename("delayed")


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning")
def test_registry_round_trip_through_the_server(
    tracking: str, pg_server: MlflowServer, pg_home: Path, mlflow_database: str
) -> None:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from sklearn.linear_model import LogisticRegression

    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment_id = client.create_experiment("it_flight_delay")
    run = client.create_run(experiment_id, run_name="it_run")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric("roc_auc", 0.81, now, 0), Metric("roc_auc", 0.83, now, 1), Metric("log_loss", 0.47, now, 0)],
        params=[Param("C", "1.0"), Param("data_window", "2013-01-01..2013-01-31")],
        tags=[RunTag("airflow_dag_id", "train_flight_delay")],
    )
    frame, target = _flights_frame()
    model = LogisticRegression(max_iter=500).fit(frame, target)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text("gate: passed\n", "reports/gate.txt")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name="it_model",
            input_example=frame.head(3),
            pip_requirements=["scikit-learn"],  # skip requirement inference (a subprocess per model)
        )
    client.set_terminated(run_id)
    version = info.registered_model_version
    client.set_registered_model_alias("it_model", "champion", version)

    finished = client.get_run(run_id)
    assert finished.data.params == {"C": "1.0", "data_window": "2013-01-01..2013-01-31"}
    assert finished.data.metrics["roc_auc"] == pytest.approx(0.83)
    assert [m.value for m in client.get_metric_history(run_id, "roc_auc")] == [0.81, 0.83]
    assert finished.data.tags["airflow_dag_id"] == "train_flight_delay"
    assert client.get_model_version_by_alias("it_model", "champion").version == str(version)

    champion = mlflow.pyfunc.load_model("models:/it_model@champion")
    predicted = champion.predict(frame)
    np.testing.assert_array_equal(np.asarray(predicted), model.predict(frame))

    # Artifacts went through the server (proxied URIs) and landed under its artifacts destination.
    artifacts = pg_home / "artifacts"
    assert pg_server.artifacts == str(artifacts)
    assert finished.info.artifact_uri.startswith("mlflow-artifacts:")
    run_folder = artifacts / finished.info.artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    assert (run_folder / "reports" / "gate.txt").read_text() == "gate: passed\n"
    logged = client.get_logged_model(info.model_id)
    assert logged.artifact_location.startswith("mlflow-artifacts:")
    model_folder = artifacts / logged.artifact_location.removeprefix("mlflow-artifacts:").lstrip("/")
    assert (model_folder / "MLmodel").is_file()
    assert not (pg_home / "mlruns").exists()
    assert not (pg_home / "mlartifacts").exists()

    # The store is the PostgreSQL database, not a file next to the server.
    engine = sa.create_engine(mlflow_database)
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM registered_models")).scalars().all()
            aliases = conn.execute(sa.text("SELECT alias, version FROM registered_model_aliases")).all()
    finally:
        engine.dispose()
    assert names == ["it_model"]
    assert [tuple(row) for row in aliases] == [("champion", int(version))]


@pytest.mark.integration
def test_server_checks_the_host_header(pg_server: MlflowServer) -> None:
    port = pg_server.url.rsplit(":", 1)[1]
    assert httpx.get(pg_server.url + SEARCH, timeout=10).status_code == 200
    assert httpx.get(pg_server.url + SEARCH, headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200
    foreign = httpx.get(pg_server.url + SEARCH, headers={"Host": "mlflow.attacker.example"}, timeout=10)
    assert foreign.status_code == 403


@pytest.mark.integration
def test_pid_file_names_the_running_server(pg_server: MlflowServer, pg_settings: Settings) -> None:
    found = running_mlflow(pg_settings)
    assert found == pg_server
    assert found.backend_uri.startswith("postgresql+psycopg2://")
    assert found.log_path.is_file()
    assert "Uvicorn running on" in found.log_path.read_text()


@pytest.mark.integration
def test_embedded_server_starts_and_stops_with_its_process_group(tmp_path: Path) -> None:
    """`airflow-mlops mlflow start|stop` on a fresh MLOPS_HOME: the embedded PostgreSQL store, artifacts under it."""
    import mlflow

    home = tmp_path / "mlops-home"
    settings = load_settings({"MLOPS_HOME": str(home)})
    port = free_port()
    runner = CliRunner()
    began = time.monotonic()
    started = runner.invoke(mlflow_group, ["start", "--port", str(port)], env={"MLOPS_HOME": str(home)})
    print(f"mlflow server (embedded PostgreSQL store, initialized first) healthy after {time.monotonic() - began:.1f}s")
    server = running_mlflow(settings)
    try:
        assert started.exit_code == 0, started.output
        assert server is not None
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.backend_uri == mask_url(settings.mlflow_tracking_uri)
        assert server.backend_uri.endswith("/mlflow") and ":***@127.0.0.1:" in server.backend_uri
        assert embedded(home).status().running

        client = mlflow.MlflowClient(tracking_uri=server.url)
        run = client.create_run(client.create_experiment("it_embedded"))
        client.log_text(run.info.run_id, "hello", "notes/hello.txt")
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        landed = list((home / "mlflow" / "artifacts").rglob("hello.txt"))
        assert [p.read_text() for p in landed] == ["hello"]

        again = runner.invoke(mlflow_group, ["start"], env={"MLOPS_HOME": str(home)})
        assert again.exit_code == 0
        assert f"already running at {server.url}" in again.output

        stopped = runner.invoke(mlflow_group, ["stop"], env={"MLOPS_HOME": str(home)})
        assert stopped.exit_code == 0, stopped.output
        assert f"Stopped MLflow (pid {server.pid})" in stopped.output
        assert not _group_alive(server.pid)
        assert not port_in_use(port)
        assert running_mlflow(settings) is None
    finally:
        if server is not None:
            stop_mlflow(server.pid)


@pytest.mark.integration
def test_missing_database_fails_at_once(tmp_path: Path) -> None:
    """MLflow itself would retry the store for ~100 s before exiting; the pre-flight check answers at once."""
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    missing = "postgresql+psycopg2://postgres@127.0.0.1:5432/mlops_it_no_such_database"
    began = time.monotonic()
    with pytest.raises(MlflowRuntimeError, match='database "mlops_it_no_such_database" does not exist'):
        start_mlflow(settings=settings, backend_uri=missing)
    assert time.monotonic() - began < 10
    assert running_mlflow(settings) is None


@pytest.mark.integration
def test_server_that_exits_fails_with_the_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `mlflow server` that cannot load its store's driver exits; the error quotes its log.

    Our own pre-flight check is switched off here (it would refuse the URI first): that is the only stand-in.
    """
    monkeypatch.setattr(mlflow_runtime, "check_backend_reachable", lambda uri: None)
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    with pytest.raises(MlflowRuntimeError, match="mlflow server exited with 1") as info:
        start_mlflow(settings=settings, backend_uri="postgresql+pg8000://postgres@127.0.0.1:5432/postgres")
    message = str(info.value)
    assert "No module named 'pg8000'" in message
    assert str(settings.run_dir / "mlflow-") in message
    assert running_mlflow(settings) is None


@pytest.mark.integration
def test_server_not_healthy_in_time_is_stopped(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    with pytest.raises(MlflowRuntimeError, match=r"not healthy after 1s; log .*mlflow-\d+\.log"):
        start_mlflow(settings=settings, timeout=1)
    assert running_mlflow(settings) is None
    assert not (settings.run_dir / "mlflow.json").exists()


@pytest.mark.integration
def test_production_server_requires_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production profile's server runs MLflow's basic-auth app: the auth matrix, a reader's 403, no leak."""
    import secrets

    from mlflow import MlflowClient

    password = secrets.token_urlsafe(24)  # a fixture's secret, made here
    env = {
        "MLOPS_HOME": str(tmp_path / "home"),
        "MLOPS_PROFILE": "production",
        "MLOPS_MLFLOW_ADMIN_PASSWORD": password,
        "MLOPS_MLFLOW_SECRET_KEY": secrets.token_hex(16),
    }
    settings = load_settings(env)
    with fresh_postgres_database() as database:
        server = start_mlflow(settings=settings, backend_uri=database, artifacts=tmp_path / "artifacts")
        try:
            assert server.auth and running_mlflow(settings) == server
            assert httpx.get(server.url + "/health", timeout=10).status_code == 200  # probes stay open
            assert httpx.get(server.url + SEARCH, timeout=10).status_code == 401
            assert httpx.get(server.url + SEARCH, auth=("admin", password[::-1]), timeout=10).status_code == 401
            assert httpx.get(server.url + SEARCH, auth=("admin", password), timeout=10).status_code == 200
            # CORS admits the server's own origins only.
            foreign = httpx.get(
                server.url + SEARCH, auth=("admin", password), headers={"Origin": "http://evil.example"}, timeout=10
            )
            assert foreign.headers.get("access-control-allow-origin") != "http://evil.example"

            # The client authenticates with MLflow's own variables; a READ user may look but not change.
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            admin = MlflowClient(server.url)
            experiment = admin.create_experiment("guarded")
            reader_password = secrets.token_urlsafe(16)
            created = httpx.post(
                server.url + "/api/2.0/mlflow/users/create",
                json={"username": "reader", "password": reader_password},
                auth=("admin", password),
                timeout=10,
            )
            assert created.status_code == 200, created.text
            read = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
            assert httpx.get(server.url + read, auth=("reader", reader_password), timeout=10).status_code == 200
            delete = httpx.post(
                server.url + "/api/2.0/mlflow/experiments/delete",
                json={"experiment_id": experiment},
                auth=("reader", reader_password),
                timeout=10,
            )
            assert delete.status_code == 403, delete.text
            assert admin.get_experiment(experiment).lifecycle_stage == "active"
        finally:
            stop_mlflow(server.pid)
    # The password is in no file of the home (it reached the server through its environment only).
    config = settings.secrets_dir / "mlflow-auth.ini"
    assert oct(config.stat().st_mode & 0o777) == "0o600" and "admin_username = admin" in config.read_text()
    leaks = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaks == []
