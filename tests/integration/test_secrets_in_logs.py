"""No secret of the local profile is printed or logged: the session's state folder is scanned for them.

After the session's real Airflow has started and run (the earlier integration modules backfilled days through
it), every file under ``MLOPS_HOME`` (logs of Airflow, of its tasks and of the servers, reports, data) is
read; the Airflow admin password, the embedded PostgreSQL's password and the endpoint token may appear only
in the files that store them, each with mode 0600. (The token is generated here if no earlier module of the
session deployed a model; the train DAG's test checks that its deployment's servers and clients use it.)
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from airflow_mlops.airflow_runtime import AirflowServer
from airflow_mlops.settings import load_settings

#: The only files that may hold a secret (relative to MLOPS_HOME): where it is stored, and the Feast CLI's config.
STORES = {
    "secrets/postgres_password",
    "secrets/endpoint-token",
    "airflow/simple_auth_manager_passwords.json.generated",
    "feast/feature_store.yaml",
}


@pytest.mark.integration
def test_no_secret_is_logged_or_left_readable(airflow_server: AirflowServer, airflow_password: str, mlops_home: Path):
    postgres_password = (mlops_home / "secrets" / "postgres_password").read_text().strip()
    token = load_settings({"MLOPS_HOME": str(mlops_home)}).endpoint_token()
    secrets = {
        "the Airflow admin password": airflow_password,
        "the PostgreSQL password": postgres_password,
        "the endpoint token": token,
    }
    assert all(len(value) >= 12 for value in secrets.values())
    scanned, leaks = 0, []
    for path in mlops_home.rglob("*"):
        relative = path.relative_to(mlops_home).as_posix()
        if not path.is_file() or path.is_symlink() or relative.startswith("postgres/data/"):  # the cluster
            continue
        content = path.read_bytes()
        scanned += 1
        for name, value in secrets.items():
            if value.encode() in content and relative not in STORES:
                leaks.append(f"{name} in {relative}")
    assert scanned > 5 and leaks == []
    logs = list((mlops_home / "run").glob("airflow-*.log"))
    assert logs and all(airflow_password not in log.read_text(errors="replace") for log in logs)
    for relative in STORES:
        store = mlops_home / relative
        if store.exists():
            assert stat.S_IMODE(store.stat().st_mode) == 0o600, relative
