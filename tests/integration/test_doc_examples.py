"""The manual's curl, Python client and feature examples, run verbatim against a real Airflow.

The blocks follow the markers ``<!-- example: curl -->``, ``<!-- example: python -->`` and
``<!-- example: features -->`` (``docs/operations.md``, ``docs/features.md``; see ``tests/doc_examples.py``);
if a page changes, this test runs the new text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from airflow_mlops.airflow_runtime import AirflowApi, AirflowServer
from airflow_mlops.settings import load_settings
from airflow_mlops.zones import partition_path
from tests.doc_examples import example_block


def _env(server: AirflowServer, password: str) -> dict[str, str]:
    env = dict(os.environ, AIRFLOW_URL=server.url, AIRFLOW_PASSWORD=password)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


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
    api = AirflowApi.login(airflow_server.url, airflow_user, airflow_password)
    api.wait_for_backfills("ingest_flights")
    states = api.wait_for_runs("ingest_flights", date(2013, 1, 8), date(2013, 1, 12), timeout=600)
    assert set(states.values()) == {"success"}
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
