"""The stages of ``train_<model>`` as JSON-in, JSON-out functions, one per Airflow task.

Tasks pass small dicts through XCom; the training set itself goes through a folder under
``$MLOPS_HOME/training/<model>/window_end=YYYY-MM-DD/`` (parquet + JSON, digests checked on load).
Each function is a thin adapter over :mod:`airflow_mlops.training` and :mod:`airflow_mlops.registry`,
so the same stages run in one plain Python process (:func:`airflow_mlops.registry.train`) or as tasks.
It also decides when a run is due: :func:`new_window_due` (ingest's ``features`` task, which folds new
data before a run exists) and :func:`resolve_window_end` (which window a run trains on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops.datasets import validated_example_days, validated_examples
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec, load_specs

if TYPE_CHECKING:
    from airflow_mlops.evaluation import GateDecision

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A stage cannot run: unknown model, no data for the window; the message says which."""


@dataclass(frozen=True)
class Skip:
    """An asset-triggered run that has nothing to do yet (the reason goes to the task log)."""

    reason: str


def model_spec(name: str, settings: Settings | None = None) -> ModelSpec:
    """The valid spec called ``name``; an invalid or missing one fails with its file and field."""
    specs = load_specs(settings.models_dir if settings else None)
    if name in specs.specs:
        return specs.specs[name]
    errors = "; ".join(str(e) for e in specs.errors)
    raise PipelineError(f"no valid model spec {name!r} (known: {', '.join(sorted(specs.specs)) or 'none'}). {errors}")


def latest_validated_day(spec: ModelSpec, settings: Settings) -> date | None:
    """The most recent day whose main table passed validation."""
    days = validated_example_days(spec.dataset, settings)
    return days[-1] if days else None


def window_days(spec: ModelSpec, window_end: date) -> list[date]:
    """The days of the training window ending on ``window_end``."""
    return [window_end - timedelta(days=n) for n in range(spec.training.window_days - 1, -1, -1)]


def missing_days(spec: ModelSpec, window_end: date, settings: Settings) -> list[date]:
    """Days of the window whose main table is not validated (cheap: file checks only)."""
    return [d for d in window_days(spec, window_end) if not validated_examples(spec.dataset, d, settings).exists()]


def labelable_end(spec: ModelSpec, day: date) -> date:
    """The last window end whose labels data up to ``day`` can give: ``day`` minus the label's horizon."""
    return day - timedelta(days=spec.target.horizon_days)


def _unlabeled(spec: ModelSpec, window_end: date, settings: Settings) -> str | None:
    """Why the window ending on ``window_end`` cannot be labeled yet (its label's horizon), or None."""
    from airflow_mlops.training import horizon_missing

    missing = horizon_missing(spec, window_end, settings)
    if not missing:
        return None
    return (
        f"the label looks {spec.target.horizon_days} day(s) ahead of {window_end}: {len(missing)} of those days "
        f"are not validated yet (first {missing[0]})"
    )


def latest_complete_window_end(spec: ModelSpec, until: date, settings: Settings) -> date | None:
    """The latest day ``<= until`` whose whole window is validated (None if there is none)."""
    present = {d for d in validated_example_days(spec.dataset, settings) if d <= until}
    for end in sorted(present, reverse=True):
        if all(d in present for d in window_days(spec, end)):
            return end
    return None


def _champion_window_end(spec: ModelSpec, settings: Settings) -> date | None:
    from airflow_mlops.registry import champion, mlflow_client, version_tags

    ref = champion(spec, settings)
    if ref is None:
        return None
    tags = mlflow_client(settings).get_run(ref.run_id).data.tags
    raw = tags.get("data.window_end") or version_tags(ref, settings).get("data.window_end")
    return date.fromisoformat(raw) if raw else None


def resolve_window_end(
    spec: ModelSpec, requested: str | None, events: list[dict[str, Any]], settings: Settings
) -> date | Skip:
    """The window end of a run.

    - the ``window_end`` param (a request) wins;
    - a ``drift`` event retrains on the most recent data: the window ending on the drifted day when it can be
      trained on (its holdout complete, at least ``MIN_DAY_COVERAGE`` of its days validated: after a change of
      regime the recent days matter, not a full window of the old one), else the latest complete window before
      it; it skips when that is no newer than the champion's window (retraining would repeat the champion);
    - new-data events (``features``) use their newest partition, skip while that window is incomplete (a
      backfill emits one event per day) and skip until it is ``training.retrain_every_days`` past the
      champion's window end;
    - otherwise (cron) the latest validated day.
    """
    if requested:
        try:
            return date.fromisoformat(str(requested))
        except ValueError:
            raise PipelineError(f"param window_end={requested!r} is not a date (YYYY-MM-DD)") from None
    drifted = sorted(str(e["window_end"]) for e in events if e.get("status") == "drift" and e.get("window_end"))
    if drifted:
        return _drift_window_end(spec, labelable_end(spec, date.fromisoformat(drifted[-1])), settings)
    partitions = sorted(str(e["partition"]) for e in events if e.get("partition"))
    if partitions:
        end = labelable_end(spec, date.fromisoformat(partitions[-1]))
        unlabeled = _unlabeled(spec, end, settings)
        if unlabeled:
            return Skip(f"window ending {end} cannot be labeled yet: {unlabeled}")
        gaps = missing_days(spec, end, settings)
        if gaps:
            return Skip(
                f"window {window_days(spec, end)[0]}..{end} is not complete yet: {len(gaps)} day(s) without "
                f"validated {spec.dataset} data (first {gaps[0]}); the run that completes it will train"
            )
        trained_until = _champion_window_end(spec, settings)
        every = spec.training.retrain_every_days
        if trained_until is not None and (end - trained_until).days < every:
            return Skip(
                f"the champion was trained on data up to {trained_until}; new data retrains every {every} days "
                f"(next on {trained_until + timedelta(days=every)} or later; drift and requests retrain sooner)"
            )
        return end
    latest = latest_validated_day(spec, settings)
    if latest is None:
        raise PipelineError(
            f"no validated {spec.dataset} data under {settings.validated_dir}; land and validate data first"
        )
    return labelable_end(spec, latest)


def _drift_window_end(spec: ModelSpec, drifted: date, settings: Settings) -> date | Skip:
    """Where a retraining after drift on ``drifted`` ends its window (see :func:`resolve_window_end`)."""
    from airflow_mlops.training import MIN_DAY_COVERAGE

    gaps = set(missing_days(spec, drifted, settings))
    holdout = window_days(spec, drifted)[-spec.training.holdout_days :]
    if not gaps.intersection(holdout) and len(gaps) <= (1 - MIN_DAY_COVERAGE) * spec.training.window_days:
        log.info(
            "%s: drift on %s; retraining on the window ending that day (%s of its %s days validated)",
            spec.name,
            drifted,
            spec.training.window_days - len(gaps),
            spec.training.window_days,
        )
        return drifted
    end = latest_complete_window_end(spec, drifted, settings)
    if end is None:
        return Skip(f"drift on {drifted}, but no trainable {spec.training.window_days}-day window of data yet")
    trained_until = _champion_window_end(spec, settings)
    if trained_until is not None and end <= trained_until:
        return Skip(
            f"drift on {drifted}, but no data newer than the champion's window (ends {trained_until}) can be trained "
            f"on yet: the window ending {drifted} has {len(gaps)} day(s) without validated data; land the recent "
            f"days (its holdout and at least {MIN_DAY_COVERAGE:.0%} of its days) to retrain"
        )
    log.info("%s: drift on %s; retraining on the latest complete window, ending %s", spec.name, drifted, end)
    return end


@dataclass(frozen=True)
class NewWindow:
    """Whether the day just ingested makes a new training window of a model due (see :func:`new_window_due`)."""

    model: str
    day: date  #: the day ingested (the window ends on it, or its label horizon before it)
    due: bool  #: announce it: emit the ``<model>.new_window`` asset event, which starts ``train_<model>``
    reason: str  #: why (or why not), for the task log
    window_start: date
    previous: date | None  #: the newest partition announced before, if any

    def event_extra(self) -> dict[str, Any]:
        """The extra of the ``new_window`` event; ``partition`` is what :func:`resolve_window_end` reads."""
        return {
            "partition": self.day.isoformat(),
            "window_start": self.window_start.isoformat(),
            "previous": self.previous.isoformat() if self.previous else None,
            "reason": self.reason,
        }


def _announced_days(announced: Iterable[Mapping[str, Any] | None]) -> list[date]:
    """Partitions of earlier ``new_window`` events; those without a readable one (e.g. made by hand) are ignored."""
    days = []
    for extra in announced:
        try:
            days.append(date.fromisoformat(str((extra or {})["partition"])))
        except (KeyError, ValueError):
            continue
    return days


def new_window_due(
    spec: ModelSpec, day: date, announced: Iterable[Mapping[str, Any] | None], settings: Settings
) -> NewWindow:
    """Whether ingesting ``day`` makes a new training window of ``spec`` due, so that ingest announces it.

    New data is folded here, before any ``train_<model>`` run exists (a backfill ingests one day per run, and an
    event per day would start a run per day). The day is due when both hold:

    - nothing was announced before, or ``day`` is at least ``training.retrain_every_days`` after the newest
      announced partition (a day at or before it, e.g. a re-run of an old day, is never due);
    - the window ending on ``day`` is complete: every one of its ``training.window_days`` days has validated rows
      of the dataset's main table (file checks only, see :func:`missing_days`).

    So the first window trains as soon as it is complete, then new data retrains every ``retrain_every_days``
    at most; drift and requests retrain sooner through their own triggers. ``announced`` are the extras of the
    model's earlier ``new_window`` events (the DAG reads them from Airflow, so no state of its own is kept).
    The run it starts still applies :func:`resolve_window_end`'s guards (e.g. a newer champion after drift).
    """
    end = labelable_end(spec, day)  # the window whose labels the day completes
    start = window_days(spec, end)[0]
    earlier = _announced_days(announced)
    previous = max(earlier) if earlier else None
    every = spec.training.retrain_every_days

    def decision(due: bool, reason: str) -> NewWindow:
        return NewWindow(spec.name, day, due, reason, start, previous)

    if previous is not None and day <= previous:
        return decision(False, f"a window ending on {previous} was announced already; {day} adds nothing newer")
    if previous is not None and (day - previous).days < every:
        return decision(
            False,
            f"the last window announced ends {previous}; new data retrains every {every} days "
            f"(next on {previous + timedelta(days=every)} or later; drift and requests retrain sooner)",
        )
    unlabeled = _unlabeled(spec, end, settings)
    if unlabeled:
        return decision(False, f"window {start}..{end} cannot be labeled yet: {unlabeled}")
    gaps = missing_days(spec, end, settings)
    if gaps:
        return decision(
            False,
            f"window {start}..{end} is not complete yet: {len(gaps)} of its {spec.training.window_days} days "
            f"without validated data (first {gaps[0]})",
        )
    since = f"{(day - previous).days} days after the last one ({previous})" if previous else "the first one"
    return decision(True, f"window {start}..{end} is complete and new: {since}")


def announce_new_window(
    model: str, day: str, announced: Iterable[Mapping[str, Any] | None], *, settings: Settings | None = None
) -> dict[str, Any]:
    """:func:`new_window_due` for ``model`` and ``day``, as JSON (what :func:`features_day` decides per model).

    Returns ``{"due": bool, "reason": str, "event": extra}``; the event is emitted only when due.
    """
    settings = settings or get_settings()
    spec = model_spec(model, settings)
    decided = new_window_due(spec, date.fromisoformat(day), announced, settings)
    log.info("%s %s: %s: %s", model, day, "new window, announced" if decided.due else "not announced", decided.reason)
    return {"due": decided.due, "reason": decided.reason, "event": decided.event_extra()}


def features_day(
    dataset: str,
    day: str,
    announced: Mapping[str, Iterable[Mapping[str, Any] | None]],
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Task ``features`` of ``ingest_<dataset>``: build the day's feature tables, load them online, announce windows.

    ``announced`` maps each model of the dataset to the extras of its earlier ``new_window`` events. Returns
    ``{"features": <extra of the dataset's features event>, "new_windows": {model: extra}}``, where
    ``new_windows`` holds only the models whose window the day makes due (:func:`new_window_due`); the reasons
    of every decision are in ``features["announce"]`` and in the log.
    """
    from airflow_mlops.features import build_features, materialize_day

    settings = settings or get_settings()
    built = build_features(dataset, date.fromisoformat(day), settings=settings).extra
    online = materialize_day(dataset, date.fromisoformat(day), settings=settings)
    new_windows: dict[str, dict[str, Any]] = {}
    reasons: dict[str, str] = {}
    for model, events in sorted(announced.items()):
        decided = announce_new_window(model, day, events, settings=settings)
        reasons[model] = ("announced: " if decided["due"] else "not announced: ") + str(decided["reason"])
        if decided["due"]:
            new_windows[model] = decided["event"]
    return {"features": {**built, "online": online, "announce": reasons}, "new_windows": new_windows}


def prepare_training_set(
    model: str,
    window_end: str | None,
    *,
    triggering_events: list[dict[str, Any]] | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Task ``training_set``: build and save the window's training set; ``{"skip": reason}`` if not due."""
    from airflow_mlops.training import build_training_set

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    end = resolve_window_end(spec, window_end, triggering_events or [], settings)
    if isinstance(end, Skip):
        log.info("%s: nothing to train: %s", model, end.reason)
        return {"skip": end.reason}
    training_set = build_training_set(spec, end, settings=settings)
    from airflow_mlops.training import training_dir

    folder = training_set.save(training_dir(settings, model, end))
    summary = training_set.summary()
    log.info("%s: training set of %s saved in %s (run %s)", model, summary["window_end"], folder, run_id)
    return {"path": str(folder), **summary}


def fit_and_register(
    model: str,
    prepared: dict[str, Any],
    *,
    tags: dict[str, str] | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Task ``register``: fit on the saved set, log the run, register the version as @challenger.

    The same training (same data, spec and seed) already registered is returned without fitting again,
    unless ``force``: a retry after an MLflow outage leaves no duplicate version.
    """
    from airflow_mlops.registry import existing_version, train_and_register
    from airflow_mlops.training import TrainingSet, fit

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    training_set = TrainingSet.load(prepared["path"])
    ref = None if force else existing_version(spec, training_set, settings=settings)
    if ref is None:
        ref = train_and_register(
            spec, training_set, fit(spec, training_set), tags=dict(tags or {}), force=force, settings=settings
        )
    log.info("%s: version %s (run %s, new: %s)", model, ref.version, ref.run_id, ref.created)
    return ref.to_dict()


def decide_version(
    model: str, prepared: dict[str, Any], version: dict[str, Any], *, settings: Settings | None = None
) -> GateDecision:
    """Task ``gate``: challenger vs @champion on the same holdout; the decision and reasons go to the log."""
    from airflow_mlops.registry import ModelVersionRef, decide
    from airflow_mlops.training import TrainingSet

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    ref = ModelVersionRef.from_dict(version)
    decision = decide(spec, ref, TrainingSet.load(prepared["path"]), settings=settings)
    verdict = "promoted" if decision.promote else "not promoted"
    log.info("%s version %s: %s\n  %s", model, ref.version, verdict, "\n  ".join(decision.reasons))
    return decision


def promote_version(model: str, version: dict[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """Task ``promote``: @champion to this version, the old champion to @previous; returns the aliases."""
    from airflow_mlops.registry import ModelVersionRef, aliases, promote

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    ref = ModelVersionRef.from_dict(version)
    promote(spec, ref, settings=settings)
    return {"model": model, "version": ref.version, "run_id": ref.run_id, "aliases": aliases(spec, settings)}


def package_version(model: str, version: dict[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """Task ``package``: the version's bento (built and exported, or reused); its tag and digest go on the version."""
    from airflow_mlops.packaging import package
    from airflow_mlops.registry import ModelVersionRef

    settings = settings or get_settings()
    bento = package(model_spec(model, settings), ModelVersionRef.from_dict(version), settings=settings)
    log.info(
        "%s version %s: bento %s, archive %s (sha256 %s)", model, bento.version, bento.tag, bento.archive, bento.digest
    )
    return bento.to_dict()


def deploy_bento(model: str, bento: dict[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """Task ``deploy``: stage the bento on the spec's target beside what serves now."""
    from airflow_mlops.deploy.base import Bento
    from airflow_mlops.deploy.targets import get_target

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    target = get_target(spec)
    deployment = target.deploy(spec, Bento.from_dict(bento))
    log.info("%s version %s: staged on %s at %s", model, deployment.version, target.name, deployment.endpoint)
    return deployment.to_dict()


def smoke_and_commit(
    model: str, deployment: dict[str, Any], prepared: dict[str, Any], *, settings: Settings | None = None
) -> dict[str, Any]:
    """Task ``smoke_test``: holdout requests through the staged deployment must match the offline predictions.

    Pass: the deployment is committed (it serves) and the result is returned. Fail: the deployment is rolled
    back (what served before keeps serving) and :class:`~airflow_mlops.deploy.smoke.SmokeTestFailed` is raised,
    so ``promote`` never runs and ``@champion`` stays where it is.
    """
    from airflow_mlops.deploy.base import Deployment
    from airflow_mlops.deploy.smoke import SmokeTestFailed, holdout_examples, smoke_test
    from airflow_mlops.deploy.targets import get_target

    settings = settings or get_settings()
    spec = model_spec(model, settings)
    target = get_target(spec)
    staged = Deployment.from_dict(deployment)
    try:
        examples = holdout_examples(spec, prepared["path"], spec.deploy.smoke_rows, settings)
        result = smoke_test(spec, target, staged, examples, settings=settings)
    except Exception as exc:
        target.rollback(staged)
        raise SmokeTestFailed(
            f"{model} version {staged.version}: smoke test could not run ({exc}); rolled back"
        ) from exc
    if not result.passed:
        target.rollback(staged)
        raise SmokeTestFailed(
            f"{model} version {staged.version}: smoke test failed on {target.name}; rolled back, "
            "@champion unchanged:\n  " + "\n  ".join(result.failures)
        )
    try:
        committed = target.commit(staged)
    except Exception:
        target.rollback(staged)  # never leave the staged server behind; what served before keeps serving
        raise
    log.info(
        "%s version %s: smoke test passed (%s rows, max |diff| %.2g); now serving at %s",
        model,
        staged.version,
        result.rows,
        result.max_abs_diff,
        committed.details.get("url", committed.endpoint),
    )
    return {"deployment": committed.to_dict(), "smoke": result.to_dict()}


def train_and_deploy(
    model: str,
    window_end: str | None = None,
    *,
    force: bool = False,
    tags: dict[str, str] | None = None,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every stage of ``train_<model>`` in this process, in the DAG's order: set, register, gate, package,
    deploy, smoke test, promote (the CLI's ``train``).

    ``@champion`` moves only after the new version serves and passed its smoke test, as in the DAG: a version
    the gate keeps out is registered and stops there; a failed smoke test rolls the deployment back and raises
    :class:`~airflow_mlops.deploy.smoke.SmokeTestFailed`. Returns what each stage returned.
    """
    settings = settings or get_settings()
    say = progress or (lambda text: None)
    say("training set")
    prepared = prepare_training_set(model, window_end, settings=settings)
    if "skip" in prepared:
        return {"skipped": prepared["skip"]}
    say("fit and register")
    version = fit_and_register(model, prepared, tags=tags, force=force, settings=settings)
    decision = decide_version(model, prepared, version, settings=settings)
    result: dict[str, Any] = {"prepared": prepared, "version": version, "decision": decision}
    if not decision.promote:
        return result
    say("package")
    bento = package_version(model, version, settings=settings)
    say("deploy")
    staged = deploy_bento(model, bento, settings=settings)
    say("smoke test")
    result["released"] = smoke_and_commit(model, staged, prepared, settings=settings)
    result["promoted"] = promote_version(model, version, settings=settings)
    return result


def monitor_model(model: str, day: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Task ``report`` of ``monitor_<model>``: the day's Evidently reports and the policy's verdict.

    Returns the :class:`~airflow_mlops.monitoring.MonitorResult` as a dict, plus ``event``: the extra of the
    ``drift`` asset event the run emits when the policy says retrain.
    """
    from airflow_mlops.monitoring import monitor_day

    settings = settings or get_settings()
    result = monitor_day(model_spec(model, settings), date.fromisoformat(day), settings=settings)
    for name, path in sorted(result.reports.items()):
        log.info("%s %s: report %s: %s", model, day, name, path)
    log.info("%s %s: %s, retrain: %s\n  %s", model, day, result.status, result.retrain, "\n  ".join(result.reasons))
    return {**result.to_dict(), "event": result.event_extra()}
