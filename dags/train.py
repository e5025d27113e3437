"""
### `train_<model>`: training set -> register -> gate -> package -> deploy -> smoke test -> promote

One DAG per model spec (`include/models/<model>.yaml`), generated from the spec.

**When it runs**: a new training window announced by `ingest_<dataset>` (the `<model>.new_window` asset:
its `features` task emits it, through an asset alias, only when the window ending on the day is complete
and, after the first, `training.retrain_every_days` past the last one, so a backfill starts one run, not
one per day),
a drift event from monitoring (the `<model>.drift` asset), the spec's optional cron (`training.schedule`), or on
request (UI *Trigger*, `POST /api/v2/dags/train_<model>/dagRuns`) with params `window_end`
(`YYYY-MM-DD`, default: the latest validated day) and `force` (train again even if the same data
and spec were already trained; it never bypasses the gate). `max_active_runs=1`.

1. **training_set**: point-in-time training set from Feast over the spec's window; the last
   `holdout_days` days are the holdout.
2. **register**: fits the scikit-learn pipeline, logs the MLflow run (params, metrics, slices, data
   window, digests, feature service, git sha, this DAG and run id as tags) and registers the version
   with alias `@challenger`. A re-run of the same training registers no duplicate.
3. **gate**: scores challenger and `@champion` on the same holdout with the spec's rules; writes the
   decision and reasons to the run and to its model card. A rejected challenger stops here: the task
   log says **not promoted** with the reasons and everything after it is skipped.
4. **package**: builds the version's bento (BentoML model imported from MLflow, bentofile, exported
   `.bento` archive); its tag and sha256 go on the model version.
5. **deploy**: stages the bento on the spec's target (`local`, `sagemaker`, `kubernetes`) beside what
   serves now.
6. **smoke_test**: holdout rows through the staged endpoint must match the version's offline
   predictions. Pass: the new bento takes the traffic. Fail: rolled back, the task fails, `@champion` stays.
7. **promote**: moves `@champion` to the new version; the old champion keeps `@previous`. Emits
   `<model>.trained` and `<model>.deployed`.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from airflow_mlops import assets
from airflow_mlops.dag_helpers import default_args, wanted
from airflow_mlops.dag_plan import DatasetPlan, ModelPlan, dag_plan


def build_train_dag(spec: ModelPlan, dataset: DatasetPlan) -> None:
    """One ``train_<model>`` DAG for ``spec``."""
    trigger = assets.new_window(spec.name) | assets.drift(spec.name)
    schedule = trigger
    if spec.schedule:
        schedule = AssetOrTimeSchedule(timetable=CronTriggerTimetable(spec.schedule, timezone="UTC"), assets=trigger)
    trained_asset = assets.trained(spec.name)
    deployed_asset = assets.deployed(spec.name)

    @dag(
        dag_id=f"train_{spec.name}",
        doc_md=__doc__,
        description=spec.description,
        schedule=schedule,
        start_date=dataset.dates[0],
        catchup=False,
        max_active_runs=1,
        tags=["mlops", "train", spec.name],
        default_args=default_args(),
        params={
            "window_end": Param(None, type=["null", "string"], format="date", description="last day of the window"),
            "force": Param(False, type="boolean", description="train again on the same data and spec"),
        },
    )
    def train() -> None:
        @task(multiple_outputs=False)
        def training_set(*, params=None, triggering_asset_events=None, run_id: str | None = None) -> dict[str, object]:
            """Build and save the point-in-time training set of the window."""
            from airflow.sdk.exceptions import AirflowSkipException

            from airflow_mlops.pipeline import prepare_training_set

            prepared = prepare_training_set(
                spec.name,
                params.get("window_end") if params else None,
                triggering_events=_event_extras(triggering_asset_events),
                run_id=run_id,
            )
            if "skip" in prepared:
                raise AirflowSkipException(str(prepared["skip"]))
            return prepared

        @task(multiple_outputs=False)
        def register(prepared: dict[str, object], *, params=None, dag_run=None) -> dict[str, object]:
            """Fit, log the MLflow run and register the version as @challenger."""
            from airflow_mlops.pipeline import fit_and_register

            tags = {"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id}
            return fit_and_register(spec.name, prepared, tags=tags, force=bool(params and params.get("force")))

        @task.short_circuit(ignore_downstream_trigger_rules=True)
        def gate(prepared: dict[str, object], version: dict[str, object]) -> bool:
            """Challenger vs champion on the same holdout; False (not promoted) skips what follows."""
            from airflow_mlops.pipeline import decide_version

            return decide_version(spec.name, prepared, version).promote

        @task(multiple_outputs=False)
        def package(version: dict[str, object]) -> dict[str, object]:
            """Build (or reuse) the version's bento and export its archive."""
            from airflow_mlops.pipeline import package_version

            return package_version(spec.name, version)

        @task(multiple_outputs=False)
        def deploy(bento: dict[str, object]) -> dict[str, object]:
            """Stage the bento on the spec's deploy target beside what serves now."""
            from airflow_mlops.pipeline import deploy_bento

            return deploy_bento(spec.name, bento)

        @task(multiple_outputs=False, retries=0)
        def smoke_test(deployment: dict[str, object], prepared: dict[str, object]) -> dict[str, object]:
            """Holdout requests must match offline predictions; pass commits, fail rolls back."""
            from airflow.sdk.exceptions import AirflowFailException

            from airflow_mlops.deploy.smoke import SmokeTestFailed
            from airflow_mlops.pipeline import smoke_and_commit

            try:
                return smoke_and_commit(spec.name, deployment, prepared)
            except SmokeTestFailed as exc:
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[trained_asset, deployed_asset], multiple_outputs=False)
        def promote(
            version: dict[str, object], released: dict[str, object], *, outlet_events=None
        ) -> dict[str, object]:
            """Move @champion to the new version (it serves already); the old champion keeps @previous."""
            from airflow_mlops.pipeline import promote_version

            promoted = promote_version(spec.name, version)
            outlet_events[trained_asset].extra = promoted
            deployment = released["deployment"]
            outlet_events[deployed_asset].extra = {
                **promoted,
                "target": deployment["target"],
                "bento": deployment["bento_tag"],
                "url": deployment["details"].get("url", deployment["endpoint"]),
            }
            return {**promoted, "deployment": deployment}

        prepared = training_set()
        version = register(prepared)
        bento = package(version)
        gate(prepared, version) >> bento
        released = smoke_test(deploy(bento), prepared)
        promote(version, released)

    train()


def _event_extras(events: object) -> list[dict[str, object]]:
    """The extras of the asset events that triggered this run (empty for manual or timed runs)."""
    if not events:
        return []
    return [dict(event.extra or {}) for queue in events.values() for event in queue]


_plan = dag_plan()  # the validated configuration (airflow_mlops.dag_plan)
for _spec in _plan.models.values():
    if wanted(f"train_{_spec.name}"):  # a task run builds only its own DAG
        build_train_dag(_spec, _plan.datasets[_spec.dataset])
