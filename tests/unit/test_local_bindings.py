"""The local profile's processes listen on loopback and never deserialize models through MLflow.

Checked on the environments the project gives the processes it starts (Airflow, bento servers, the MLflow
server); the integration and e2e tests start those processes with them.
"""

from __future__ import annotations

from airflow_mlops.airflow_runtime import airflow_env
from airflow_mlops.deploy.local import _server_env
from airflow_mlops.mlflow_runtime import server_env
from airflow_mlops.model_files import SAFE_ENV
from airflow_mlops.settings import load_settings


def test_airflow_listens_on_loopback_and_loads_no_model_itself() -> None:
    database = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow@127.0.0.1:5432/airflow"}
    env = airflow_env(8080, load_settings(), base=database)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert SAFE_ENV.items() <= env.items()


def test_model_servers_and_mlflow_get_the_safe_model_environment() -> None:
    assert SAFE_ENV == {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    assert SAFE_ENV.items() <= _server_env(load_settings()).items()
    assert SAFE_ENV.items() <= server_env("postgresql://mlops@127.0.0.1:5432/mlflow", base={}).items()
