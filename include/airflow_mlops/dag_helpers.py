"""Shared DAG defaults, so every DAG file states its policy the same way.

Imports only the standard library at the top (the dataset files are read on demand, with PyYAML and pydantic,
which the DAG files load anyway for the model specs).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
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


def _midnight(day: date | None) -> datetime | None:
    return datetime.combine(day, time(), tzinfo=UTC) if day else None


def dataset_dates(dataset: str) -> tuple[datetime, datetime | None]:
    """The first and last day of ``dataset`` (its file's ``start_date``, ``end_date``) as UTC midnights.

    The DAGs of a dataset and of its models take their dates from there, so no DAG file names a year.
    """
    from airflow_mlops.datasets import dataset_spec

    spec = dataset_spec(dataset)
    start = _midnight(spec.start_date)
    if start is None:  # the dataset spec requires start_date
        raise ValueError(f"dataset {dataset!r} has no start_date")
    return start, _midnight(spec.end_date)


def wanted(dag_id: str) -> bool:
    """Whether this parse needs the DAG ``dag_id``.

    The DAG processor parses a file for all its DAGs; a task run parses it again only for the DAG of its task
    (Airflow's ``get_parsing_context()``), so a file that generates one DAG per spec or dataset builds just that
    one there instead of all of them.
    """
    from airflow.sdk import get_parsing_context

    requested = get_parsing_context().dag_id
    return requested is None or requested == dag_id
