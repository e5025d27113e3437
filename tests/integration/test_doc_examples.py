"""The manual's operations, feature and MLflow examples, run verbatim against a real Airflow and real servers.

Each block follows its marker ``<!-- example: NAME -->`` (``docs/operations.md``, ``docs/features.md``,
``docs/training.md``; see ``tests/doc_examples.py``): if a page changes, these tests run the new text, from the
repository root as the pages say. Servers a block starts (Feast's, MLflow's) it also stops; the tests check
their ports are closed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from airflow_mlops.airflow_runtime import AirflowApi, AirflowServer
from airflow_mlops.mlflow_runtime import running_mlflow
from airflow_mlops.processes import free_port, port_in_use
from airflow_mlops.settings import PROJECT_ROOT, load_settings
from airflow_mlops.zones import partition_path
from tests.doc_examples import example_block


def _env(server: AirflowServer, password: str) -> dict[str, str]:
    env = dict(os.environ, AIRFLOW_URL=server.url, AIRFLOW_PASSWORD=password)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def _wait_for_materialized_days(server: AirflowServer, user: str, password: str) -> None:
    """Wait until Jan 8-12 (backfilled by the curl and Python examples) are ingested and materialized."""
    api = AirflowApi.login(server.url, user, password)
    api.wait_for_backfills("ingest_flights")
    states = api.wait_for_runs("ingest_flights", date(2013, 1, 8), date(2013, 1, 12), timeout=600)
    assert set(states.values()) == {"success"}


@pytest.mark.integration
def test_readme_curl_example(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills("ingest_flights")  # one backfill per DAG at a time
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example_block("curl")],
        env=_env(airflow_server, airflow_password),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"dag_id":"ingest_flights"' in done.stdout.replace(" ", "")
    states = api.wait_for_runs("ingest_flights", date(2013, 1, 8), date(2013, 1, 10), timeout=600)
    assert set(states.values()) == {"success"}
    landing = load_settings().landing_dir
    for day in (8, 9, 10):
        assert partition_path(landing, "flights", "flights", date(2013, 1, day)).exists()


@pytest.mark.integration
def test_readme_python_client_example(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills("ingest_flights")
    done = subprocess.run(
        [sys.executable, "-c", example_block("python")],
        env=_env(airflow_server, airflow_password),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"backfill \d+ from 2013-01-11", done.stdout), done.stdout
    states = api.wait_for_runs("ingest_flights", date(2013, 1, 11), date(2013, 1, 12), timeout=600)
    assert set(states.values()) == {"success"}
    assert partition_path(load_settings().landing_dir, "flights", "weather", date(2013, 1, 12)).exists()


@pytest.mark.integration
def test_readme_features_example(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    """The SDK lookup of docs/features.md answers from the online store the DAG runs materialized."""
    _wait_for_materialized_days(airflow_server, airflow_user, airflow_password)
    done = subprocess.run(
        [sys.executable, "-c", example_block("features")],
        env=_env(airflow_server, airflow_password),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    known, unknown = done.stdout.strip().splitlines()[-2:]
    rate, temp, seats = known.split()
    assert 0.0 <= float(rate) <= 1.0 and float(temp) > -40 and int(seats) > 0, known
    assert unknown == "None None"


def _bash(name: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the shell block ``name`` from the repository root, as a reader of the page would."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example_block(name)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.integration
def test_airflow_password_example(airflow_server: AirflowServer, airflow_password: str):
    """docs/operations.md's one-liner prints the generated admin password of this MLOPS_HOME."""
    done = _bash("airflow-password", _env(airflow_server, airflow_password), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == airflow_password


@pytest.mark.integration
def test_cli_backfill_and_ingest_example(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    """docs/operations.md's command-line backfill (through the REST API) and landing without Airflow."""
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills("ingest_flights")
    done = _bash("cli-backfill", _env(airflow_server, airflow_password), timeout=900)
    said = " ".join((done.stdout + done.stderr).split())  # the CLI's console: stderr, wrapped to the terminal
    assert done.returncode == 0, said
    assert re.search(r"Backfill \d+ of ingest_flights for 2013-01-18 \.\. 2013-01-19 created", said), said
    assert "Landed 1 day(s)" in said, said
    states = api.wait_for_runs("ingest_flights", date(2013, 1, 18), date(2013, 1, 19), timeout=60)
    assert set(states.values()) == {"success"}
    settings = load_settings()
    for day in (18, 19):
        assert partition_path(settings.validated_dir, "flights", "flights", date(2013, 1, day)).exists()
    landed = partition_path(settings.landing_dir, "flights", "flights", date(2013, 1, 20))
    assert landed.exists()
    assert not partition_path(settings.validated_dir, "flights", "flights", date(2013, 1, 20)).exists()


@pytest.mark.integration
def test_feast_serve_example(airflow_server: AirflowServer, airflow_user: str, airflow_password: str):
    """docs/features.md's HTTP lookup: Feast's own feature server answers what the DAG runs materialized."""
    _wait_for_materialized_days(airflow_server, airflow_user, airflow_password)
    port = free_port()
    done = _bash("feast-serve", {**_env(airflow_server, airflow_password), "PORT": str(port)}, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"metadata"' in done.stdout, done.stdout[-3000:]
    start = done.stdout.index("{")
    answer, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    names = answer["metadata"]["feature_names"]
    values = {name: result["values"][0] for name, result in zip(names, answer["results"], strict=True)}
    statuses = {name: result["statuses"][0] for name, result in zip(names, answer["results"], strict=True)}
    assert statuses["carrier_delay_rate_7d"] == statuses["plane_seats"] == "PRESENT", statuses
    assert 0.0 <= values["carrier_delay_rate_7d"] <= 1.0 and values["plane_seats"] > 0, values
    assert not port_in_use(port), "the block's server still listens"


@pytest.mark.integration
def test_mlflow_ui_example(mlops_home: Path):
    """docs/training.md's MLflow UI: the block starts the home's tracking server, reports its URL, and stops it."""
    settings = load_settings()
    assert running_mlflow(settings) is None
    done = _bash("mlflow-ui", dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr
    up = re.search(r"MLflow is up at http://127\.0\.0\.1:(\d+) \(pid (\d+), store (\S+),", done.stderr)
    assert up, done.stderr
    assert "mlflow" in up.group(3) and f"Stopped MLflow (pid {up.group(2)})" in done.stderr, done.stderr
    assert running_mlflow(settings) is None and not port_in_use(int(up.group(1)))
