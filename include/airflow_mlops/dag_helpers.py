"""Shared DAG defaults, so every DAG file states its policy the same way.

Imports only the standard library at the top; what the DAGs take from the configuration is in
:mod:`airflow_mlops.dag_plan`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

OWNER = "mlops"


def default_args(**overrides: Any) -> dict[str, Any]:
    """Task defaults: an owner, retries with exponential backoff, no e-mail."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }
    args.update(overrides)
    return args


def wanted(dag_id: str) -> bool:
    """Whether this parse needs the DAG ``dag_id``.

    The DAG processor parses a file for all its DAGs; a task run parses it again only for the DAG of its task
    (Airflow's ``get_parsing_context()``), so a file that generates one DAG per spec or dataset builds just that
    one there instead of all of them.
    """
    from airflow.sdk import get_parsing_context

    requested = get_parsing_context().dag_id
    return requested is None or requested == dag_id
