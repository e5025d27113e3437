"""
### `ingest_<dataset>`: land, validate, then build and serve one day's features

One DAG per dataset file (`include/datasets/<dataset>.yaml`: its tables, source, schedule, first and
last day). For its logical day (the start of its data interval) this DAG runs the daily data chain:

1. **land**: copies that day's raw tables from the dataset's source (its file's `source`, or
   `MLOPS_SOURCE_<DATASET>`) into the landing zone,
   `$MLOPS_HOME/data/landing/<dataset>/<table>/date=YYYY-MM-DD/part-0.parquet`. Emits `<dataset>.landed`.
   A day without rows of a required table fails; a file that cannot be read is quarantined and fails
   the run.
2. **validate**: runs the dataset's Great Expectations suites. Pass: the day is published to the
   validated zone and `<dataset>.validated` is emitted. Fail: the task fails (no retry) with a summary
   of the failed expectations, the batch moves to `$MLOPS_HOME/data/quarantine/<dataset>/date=.../`
   with its result (JSON and Data Docs HTML), and nothing downstream runs.
3. **features**: builds the day's feature tables from validated data only (partitioned parquet; a
   feature may read earlier days, never later ones),
   loads the day's rows into Feast's online store, and emits `<dataset>.features` ("the day's features
   are online"). It then decides, for each model spec of the dataset (`include/models/*.yaml`), whether
   the day makes a new training window due, and emits `<model>.new_window` (the new-data trigger of
   `train_<model>`) through the alias `<model>.new_window.announce` only then; the reason of every
   decision is in the task log and in the `features` event. Due means: the window of
   `training.window_days` days ending on the day has validated data on every day, and nothing was
   announced before or the day is at least `training.retrain_every_days` after the last announced
   window end. The last announced end comes from Airflow itself (the task reads the asset's earlier
   events through `inlet_events`), so no state is kept elsewhere. New data is thus folded before a
   training run exists: a 90-day history backfill announces the first complete window (the first
   champion trains by itself) and then at most once per `retrain_every_days`, instead of starting a
   run per day.

Every step is idempotent for its day: a re-run replaces its own partition and touches nothing else.
`features` waits for the previous day's (`depends_on_past`), because features may read earlier days,
and so that days decide their announcements one after the other, each seeing the
ones before it; a re-run of a day at or before the last announced one never announces again. The
online store holds the latest rows whatever order days are materialized in (each view is loaded up to
the latest end materialized so far). Three tasks a day, not five: each Airflow task costs about a
second of scheduler, API server and process time on top of its work, which a 90-day backfill pays per
day (BENCHMARKS.md, the demo).
`catchup` is off: history comes by backfill (Airflow UI, *Trigger -> Backfill*, or
`POST /api/v2/backfills`).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from airflow_mlops import assets
from airflow_mlops.dag_helpers import default_args, wanted
from airflow_mlops.dag_plan import DatasetPlan, dag_plan


def build_ingest_dag(spec: DatasetPlan) -> None:
    """One ``ingest_<dataset>`` DAG: land -> validate -> features (which announces the models' new windows)."""
    dataset = spec.name
    models = spec.models
    start_date, end_date = spec.dates
    landed_asset = assets.landed(dataset)
    validated_asset = assets.validated(dataset)
    features_asset = assets.features(dataset)
    new_windows = {model: assets.new_window(model) for model in models}
    aliases = {model: assets.new_window_alias(model) for model in models}

    @dag(
        dag_id=f"ingest_{dataset}",
        doc_md=__doc__,
        schedule=spec.schedule,
        start_date=start_date,
        end_date=end_date,
        catchup=False,
        max_active_runs=spec.max_active_runs,
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

        @task(
            inlets=list(new_windows.values()),  # to read the earlier announcements (inlet_events)
            outlets=[features_asset, *aliases.values()],
            depends_on_past=True,  # features may read earlier days; days announce in order
            ignore_first_depends_on_past=True,  # runs from before this task existed have none to wait for
            multiple_outputs=False,
        )
        def features(*, data_interval_start: datetime, inlet_events=None, outlet_events=None) -> dict[str, object]:
            """Build and materialize the day's features; announce each model's new window when it is due."""
            from airflow_mlops.pipeline import features_day

            announced = {model: [event.extra for event in inlet_events[asset]] for model, asset in new_windows.items()}
            done = features_day(dataset, data_interval_start.date().isoformat(), announced)
            outlet_events[features_asset].extra = done["features"]
            for model, extra in done["new_windows"].items():
                outlet_events[aliases[model]].add(new_windows[model], extra=extra)
            return done["features"]

        land() >> validate() >> features()

    ingest()


for _dataset in dag_plan().datasets.values():  # the validated configuration (airflow_mlops.dag_plan)
    if wanted(f"ingest_{_dataset.name}"):  # a task run builds only its own DAG
        build_ingest_dag(_dataset)
