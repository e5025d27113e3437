"""
### `monitor_<model>`: Evidently drift and quality of a day's served traffic -> the `drift` asset

One DAG per model spec, `@daily` over the days of its dataset (its file's `start_date` to `end_date`;
catchup off: past days come by backfill, like any day).
The run for logical date *D* judges the predictions served for events of *D* and the days before it
(`drift.current_days`, a week by default):

1. **report**: current data is that week's prediction log (features as served), joined with the true outcome
   of the days whose rows have landed; reference is the champion's training set. Evidently computes drift per
   feature and, with outcomes, the model's quality (classification or regression). Reports (HTML + JSON) go to
   `$MLOPS_HOME/reports/<model>/date=D/`, named in the task log and behind the task's *Drift report* link; the
   key figures are logged to MLflow on the champion's run (`monitor.*`).
2. **should_retrain**: the spec's `drift` policy (drift share, per-feature thresholds, quality drop against
   the champion's holdout in the spec's primary metric, minimum rows, cooldown). A day that cannot be judged
   (no traffic, too few rows) says so and stops here.
3. **emit_drift**: emits the `<model>.drift` asset event with the reasons, report path and figures, which
   schedules `train_<model>`.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from airflow_mlops import assets
from airflow_mlops.dag_helpers import default_args, wanted
from airflow_mlops.dag_plan import DatasetPlan, ModelPlan, dag_plan


def build_monitor_dag(spec: ModelPlan, dataset: DatasetPlan) -> None:
    """One ``monitor_<model>`` DAG for ``spec``."""
    drift_asset = assets.drift(spec.name)
    start_date, end_date = dataset.dates  # the days its dataset covers

    @dag(
        dag_id=f"monitor_{spec.name}",
        doc_md=__doc__,
        description=f"Drift and quality of {spec.name}'s served traffic, day by day",
        schedule="@daily",
        start_date=start_date,
        end_date=end_date,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", "monitor", spec.name],
        default_args=default_args(),
    )
    def monitor() -> None:
        @task(multiple_outputs=False)
        def report(*, data_interval_start=None) -> dict[str, object]:
            """Evidently reports of the day's traffic and the policy's verdict."""
            from airflow_mlops.pipeline import monitor_model

            return monitor_model(spec.name, data_interval_start.date().isoformat())

        @task.short_circuit
        def should_retrain(result: dict[str, object]) -> bool:
            """True when the policy says retrain; otherwise the run ends here, without an event."""
            return bool(result["retrain"])

        @task(outlets=[drift_asset])
        def emit_drift(result: dict[str, object], *, outlet_events=None) -> None:
            """The ``drift`` asset event, with reasons, report path and figures in its extra."""
            outlet_events[drift_asset].extra = result["event"]

        result = report()
        should_retrain(result) >> emit_drift(result)

    monitor()


_plan = dag_plan()  # the validated configuration (airflow_mlops.dag_plan)
for _spec in _plan.models.values():
    if wanted(f"monitor_{_spec.name}"):  # a task run builds only its own DAG
        build_monitor_dag(_spec, _plan.datasets[_spec.dataset])
