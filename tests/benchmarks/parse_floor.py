"""The parse-cost benchmark's floor: ``PARSE_FLOOR_DAGS`` DAGs shaped like ``train_<model>``, without the engine.

Each DAG has what ``dags/train.py`` gives one model spec (the same seven TaskFlow tasks and dependencies, the
two-asset schedule, the two trigger ``Param`` s, the same ``default_args`` and outlets) but is written out
from constants and imports only ``airflow.sdk``: no spec is read, no engine module imported. Parsing it with 1
and with 50 DAGs shows what Airflow itself charges per DAG of this shape, the floor under any file that
generates one such DAG per spec.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, task

COUNT = int(os.environ.get("PARSE_FLOOR_DAGS", "1"))


def build(name: str) -> None:
    """One DAG shaped like ``train_<name>``."""
    trigger = Asset(name=f"{name}.new_window", uri=f"x-floor://{name}/new_window") | Asset(
        name=f"{name}.drift", uri=f"x-floor://{name}/drift"
    )
    trained = Asset(name=f"{name}.trained", uri=f"x-floor://{name}/trained")
    deployed = Asset(name=f"{name}.deployed", uri=f"x-floor://{name}/deployed")

    @dag(
        dag_id=f"floor_{name}",
        schedule=trigger,
        start_date=datetime(2013, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["benchmark", name],
        default_args={
            "owner": "mlops",
            "retries": 2,
            "retry_delay": timedelta(seconds=30),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10),
        },
        params={
            "window_end": Param(None, type=["null", "string"], format="date", description="last day of the window"),
            "force": Param(False, type="boolean", description="train again on the same data and spec"),
        },
    )
    def floor() -> None:
        @task(multiple_outputs=False)
        def training_set(*, params=None) -> dict[str, object]:
            return {}

        @task(multiple_outputs=False)
        def register(prepared: dict[str, object], *, params=None) -> dict[str, object]:
            return {}

        @task.short_circuit(ignore_downstream_trigger_rules=True)
        def gate(prepared: dict[str, object], version: dict[str, object]) -> bool:
            return True

        @task(multiple_outputs=False)
        def package(version: dict[str, object]) -> dict[str, object]:
            return {}

        @task(multiple_outputs=False)
        def deploy(bento: dict[str, object]) -> dict[str, object]:
            return {}

        @task(multiple_outputs=False, retries=0)
        def smoke_test(deployment: dict[str, object], prepared: dict[str, object]) -> dict[str, object]:
            return {}

        @task(outlets=[trained, deployed], multiple_outputs=False)
        def promote(version: dict[str, object], released: dict[str, object]) -> dict[str, object]:
            return {}

        prepared = training_set()
        version = register(prepared)
        bento = package(version)
        gate(prepared, version) >> bento
        released = smoke_test(deploy(bento), prepared)
        promote(version, released)

    floor()


for _number in range(COUNT):
    build(f"model_{_number:02d}")
