"""Every Airflow Asset of the platform, in one registry.

Assets are named ``<dataset>.<stage>`` (data) or ``<model>.<stage>`` (models) and carry an
``x-mlops://`` URI, so they are stable across machines and state folders. Events carry small,
JSON-able extras: the partition, row counts and paths, never data.

This module imports only ``airflow.sdk``: DAG files import it at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset

GROUP = "mlops"


def _asset(subject: str, stage: str) -> Asset:
    return Asset(name=f"{subject}.{stage}", uri=f"x-mlops://{subject}/{stage}", group=GROUP)


def landed(dataset: str) -> Asset:
    """A day of ``dataset`` landed in the landing zone (extra: partition, rows, paths)."""
    return _asset(dataset, "landed")
