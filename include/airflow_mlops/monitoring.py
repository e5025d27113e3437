"""Monitoring: Evidently drift and quality reports of a day's served traffic, and the retraining policy.

:func:`monitor_day` judges one day of a model's traffic:

- **current** data is the day's prediction log (:mod:`airflow_mlops.prediction_log`: the inputs and the Feast
  features *as served*), turned into the model's input columns exactly as serving did
  (:func:`airflow_mlops.training.serving_input`); once the day's examples have landed in the validated zone,
  each prediction is joined with its true outcome (the spec's label) by the main table's ``key`` and event time;
- **reference** data is the champion's training set (its train rows), read from where the training stored it,
  or rebuilt from the validated zone and checked against the digest recorded on the MLflow run.

Evidently 0.7 computes drift per feature (``DataDriftPreset``: each column's method and threshold, with the
spec's per-feature thresholds) and, when outcomes exist, the model's quality on them (``ClassificationPreset``
or ``RegressionPreset``, by the spec's task), from which the spec's primary metric is read. The
reports go to ``$MLOPS_HOME/reports/<model>/date=YYYY-MM-DD/`` (``drift.html``/``drift.json``,
``quality.html``/``quality.json``, ``summary.json``), and the key figures are logged to MLflow on the champion's
run (metrics ``monitor.*``, step = the day's ordinal).

The policy (spec ``drift``) says *retrain* when the share of drifted features reaches ``drift_share``, when a
feature listed in ``feature_thresholds`` drifts, or when the primary metric on the served traffic is more than
``max_quality_drop`` worse than on the champion's holdout (AUC lower, RMSE higher ...); never with fewer than
``min_rows`` predictions (status ``insufficient_data``), and not within ``cooldown_hours`` of the champion's
training window end (data time, so replays and backfills judge alike; status ``cooldown``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.registry import ModelVersionRef

log = logging.getLogger(__name__)

#: Outcome column added to the current data (the spec's target, from the landed examples).
OUTCOME = "outcome"
#: The served score in the current data (the log's probability or predicted value: the spec's ``score_field``).
SCORE = "score"
#: Fewest labelled rows (classification: with both classes) for a quality report.
MIN_LABELLED = 50
#: Where Evidently's result holds each primary metric (the type name its metric's config ends with).
_EVIDENTLY_METRIC = {"auc": "RocAuc", "log_loss": "LogLoss", "rmse": "RMSE", "mae": "MAE", "r2": "R2Score"}

#: Statuses of a monitored day.
DRIFT, OK, INSUFFICIENT, NO_TRAFFIC, NO_CHAMPION, COOLDOWN = (
    "drift",
    "ok",
    "insufficient_data",
    "no_traffic",
    "no_champion",
    "cooldown",
)


class MonitoringError(RuntimeError):
    """A day cannot be monitored for a reason that needs fixing (not merely too little traffic)."""


@dataclass
class FeatureDrift:
    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass
class MonitorResult:
    """One monitored day: status, whether to retrain and why, the figures and where the reports are."""

    model: str
    day: str
    status: str
    retrain: bool
    reasons: list[str]
    rows: int = 0
    labelled_rows: int = 0
    champion_version: int | None = None
    served_versions: list[int] = field(default_factory=list)
    drift_share: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    metric: str = ""  #: the spec's primary metric, in which quality is judged
    quality: float | None = None  #: the metric on the labelled served traffic
    champion_quality: float | None = None  #: the metric on the champion's holdout
    quality_drop: float | None = None  #: how much worse ``quality`` is than ``champion_quality``
    reports: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as None): what the task returns and ``summary.json`` holds."""
        return _strict(asdict(self))

    def event_extra(self) -> dict[str, Any]:
        """What the ``drift`` asset event carries: reasons, report paths and the key figures."""
        return {
            "model": self.model,
            "day": self.day,
            "window_end": self.day,
            "status": self.status,
            "reasons": self.reasons,
            "drift_share": self.drift_share,
            "drifted_features": self.drifted_features,
            "metric": self.metric,
            "quality": self.quality,
            "champion_quality": self.champion_quality,
            "quality_drop": self.quality_drop,
            "rows": self.rows,
            "champion_version": self.champion_version,
            "report": self.reports.get("drift_html"),
            "reports": self.reports,
        }


def reports_dir(settings: Settings, model: str, day: date) -> Path:
    return settings.home / "reports" / model / f"date={day.isoformat()}"


def _is_p_value(method: str) -> bool:
    return "p_value" in method.replace("-", "_").lower()


def _drifted(score: float, method: str, threshold: float) -> bool:
    """Evidently scores are p-values for small samples (drift when below the threshold) and distances otherwise
    (drift when at or above it)."""
    if math.isnan(score):
        return False
    return score < threshold if _is_p_value(method) else score >= threshold


def reference_frame(
    spec: ModelSpec, champion: ModelVersionRef, settings: Settings
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The champion's training set (train rows) as model input, with its ``(numeric, categorical)`` columns."""
    from airflow_mlops.registry import configure_mlflow, mlflow_client
    from airflow_mlops.training import SPLIT, TRAIN, TrainingSet, build_training_set, model_input, training_dir

    configure_mlflow(settings)
    tags = mlflow_client(settings).get_run(champion.run_id).data.tags
    window_end = date.fromisoformat(tags["data.window_end"])
    folder = training_dir(settings, spec.name, window_end)
    training_set = None
    if folder.is_dir():
        loaded = TrainingSet.load(folder)
        if loaded.train_digest == tags.get("data.train_digest"):
            training_set = loaded
    if training_set is None:
        training_set = build_training_set(spec, window_end, settings=settings)
        if training_set.train_digest != tags.get("data.train_digest"):
            raise MonitoringError(
                f"{spec.name}: the champion's training set (window ending {window_end}) cannot be rebuilt as it was: "
                f"train digest {training_set.train_digest[:12]} != {tags.get('data.train_digest', '?')[:12]} on run "
                f"{champion.run_id}"
            )
        training_set.save(folder)
    train = training_set.frame[training_set.frame[SPLIT] == TRAIN]
    numeric, categorical = list(training_set.numeric), list(training_set.categorical)
    return model_input(train, numeric, categorical), numeric, categorical


def current_frame(
    spec: ModelSpec, day: date, numeric: list[str], categorical: list[str], settings: Settings
) -> pd.DataFrame:
    """The served traffic of ``day`` and the ``drift.current_days - 1`` days before it as model input (plus
    ``score``, ``model_version``, ``date`` and, for days whose examples have landed, ``outcome``)."""
    import pandas as pd

    from airflow_mlops.prediction_log import read_predictions

    days = [day - timedelta(days=n) for n in range(spec.drift.current_days - 1, -1, -1)]
    parts = [read_predictions(spec.name, d, settings=settings) for d in days]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    logged = pd.concat(parts, ignore_index=True).drop_duplicates("request_id").reset_index(drop=True)
    return _model_frame(spec, logged, days, numeric, categorical, settings)


def _model_frame(
    spec: ModelSpec,
    logged: pd.DataFrame,
    days: list[date],
    numeric: list[str],
    categorical: list[str],
    settings: Settings,
) -> pd.DataFrame:
    import pandas as pd

    from airflow_mlops.datasets import dataset_spec, validated_examples
    from airflow_mlops.serving import request_schema, with_local_date
    from airflow_mlops.training import PARTITION, TrainingError, labels, serving_input

    schema = request_schema(spec, settings)
    rows = with_local_date(schema, logged)
    served = logged[[c for c in logged.columns if c in numeric or c in categorical]]
    frame = serving_input(spec, rows, served, numeric, categorical)
    frame[SCORE] = logged[schema.score].astype("float64")
    frame["model_version"] = logged["model_version"].astype("int64")
    frame["date"] = rows["date"].to_numpy()
    # A prediction meets its outcome by the main table's key and the event time (unique within a day).
    keys = [*dataset_spec(spec.dataset, settings).tables[schema.collection].key, schema.event_time]
    if len(keys) == 1:
        log.info("%s: %s declares no key for %s; outcomes cannot be joined", spec.name, spec.dataset, schema.collection)
        return frame
    truth_days = [(d, p) for d in days if (p := validated_examples(spec.dataset, d, settings)).exists()]
    outcome = None
    if truth_days:
        truth = pd.concat(
            [pd.read_parquet(p).assign(**{PARTITION: d.isoformat()}) for d, p in truth_days], ignore_index=True
        )
        try:
            outcome, _ = labels(spec, truth, settings)
        except TrainingError as exc:  # a label that looks ahead, whose horizon has not landed yet
            log.info("%s: outcomes not known yet: %s", spec.name, exc)
    if outcome is not None:
        truth = with_local_date(schema, truth.drop(columns=["date"], errors="ignore"))
        truth[OUTCOME] = outcome.to_numpy()
        truth = truth.drop_duplicates(keys)[[*keys, OUTCOME]]
        joined = rows[keys].merge(truth, on=keys, how="left")
        frame[OUTCOME] = joined[OUTCOME].to_numpy()
    return frame


def _drift_report(
    spec: ModelSpec, current: pd.DataFrame, reference: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[Any, dict[str, FeatureDrift], float]:
    """Evidently's drift report over the features with values on both sides; a feature with no value at all in
    the served traffic (but values in the reference) counts as drifted: serving lost it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    features: dict[str, FeatureDrift] = {}
    usable: list[str] = []
    for name in (*numeric, *categorical):
        if current[name].notna().any() and reference[name].notna().any():
            usable.append(name)
        else:
            lost = bool(reference[name].notna().any())
            features[name] = FeatureDrift(
                float("nan"), "no value in the served traffic" if lost else "no value", 0.0, lost
            )
    num = [c for c in numeric if c in usable]
    cat = [c for c in categorical if c in usable]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    thresholds = {k: v for k, v in spec.drift.feature_thresholds.items() if k in usable}
    report = Report(
        [
            DataDriftPreset(
                columns=usable,
                drift_share=spec.drift.drift_share,
                num_method=spec.drift.num_method,
                cat_method=spec.drift.cat_method,
                threshold=spec.drift.threshold,
                per_column_threshold=thresholds or None,
            )
        ]
    )
    snapshot = report.run(
        Dataset.from_pandas(current[usable], data_definition=definition),
        Dataset.from_pandas(reference[usable], data_definition=definition),
    )
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            score = float(metric["value"])
            method, threshold = str(config.get("method")), float(config.get("threshold"))
            features[config["column"]] = FeatureDrift(score, method, threshold, _drifted(score, method, threshold))
    share = sum(f.drifted for f in features.values()) / len(features) if features else 0.0
    return snapshot, features, share


def _quality_report(spec: ModelSpec, current: pd.DataFrame) -> tuple[Any, float | None]:
    """Evidently's quality report of the labelled served rows (by the spec's task) and its primary metric."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    labelled = current[current[OUTCOME].notna()].copy()
    if spec.is_classifier:
        labelled[OUTCOME] = labelled[OUTCOME].astype("int64")
        if len(labelled) < MIN_LABELLED or labelled[OUTCOME].nunique() < 2:
            return None, None
        definition = DataDefinition(
            numerical_columns=[SCORE],
            classification=[BinaryClassification(target=OUTCOME, prediction_probas=SCORE)],
        )
        preset: Any = ClassificationPreset()
    else:
        labelled[OUTCOME] = labelled[OUTCOME].astype("float64")
        if len(labelled) < MIN_LABELLED:
            return None, None
        definition = DataDefinition(
            numerical_columns=[OUTCOME, SCORE], regression=[Regression(target=OUTCOME, prediction=SCORE)]
        )
        preset = RegressionPreset()
    snapshot = Report([preset]).run(Dataset.from_pandas(labelled[[OUTCOME, SCORE]], data_definition=definition), None)
    wanted = _EVIDENTLY_METRIC[spec.metric.name]
    for metric in snapshot.dict()["metrics"]:
        if metric.get("config", {}).get("type", "").rsplit(":", 1)[-1] == wanted:  # not DummyMAE and the like
            value = metric["value"]
            return snapshot, float(value["mean"] if isinstance(value, dict) else value)  # MAE: mean and std
    return snapshot, None


def _save(snapshot: Any, folder: Path, name: str) -> dict[str, str]:
    html, raw = folder / f"{name}.html", folder / f"{name}.json"
    snapshot.save_html(str(html))
    raw.write_text(snapshot.json())
    return {f"{name}_html": str(html), f"{name}_json": str(raw)}


def _champion_figures(
    spec: ModelSpec, champion: ModelVersionRef, settings: Settings
) -> tuple[float | None, date | None]:
    """The champion's primary metric on its holdout, and the last day of its training window."""
    from airflow_mlops.registry import mlflow_client

    run = mlflow_client(settings).get_run(champion.run_id)
    figure = run.data.metrics.get(f"holdout.{spec.metric.name}")
    window_end = run.data.tags.get("data.window_end")
    return figure, date.fromisoformat(window_end) if window_end else None


def _log_to_mlflow(champion: ModelVersionRef, result: MonitorResult, day: date, settings: Settings) -> None:
    from mlflow.entities import Metric

    from airflow_mlops.registry import mlflow_client

    figures = {
        "monitor.rows": result.rows,
        "monitor.drift_share": result.drift_share,
        "monitor.drifted_features": len(result.drifted_features),
        f"monitor.{result.metric}": result.quality,
        "monitor.quality_drop": result.quality_drop,
        "monitor.retrain": float(result.retrain),
    }
    stamp = int(datetime.combine(day, datetime.min.time()).timestamp() * 1000)
    metrics = [
        Metric(k, float(v), stamp, day.toordinal()) for k, v in figures.items() if v is not None and not math.isnan(v)
    ]
    client = mlflow_client(settings)
    client.log_batch(champion.run_id, metrics=metrics)
    client.set_model_version_tag(champion.name, str(champion.version), "monitor.last_day", day.isoformat())
    client.set_model_version_tag(champion.name, str(champion.version), "monitor.last_status", result.status)


def monitor_day(spec: ModelSpec, day: date, *, settings: Settings | None = None) -> MonitorResult:
    """Judge one day of ``spec``'s served traffic (see the module doc); the reports are written, not returned."""
    from airflow_mlops.registry import champion as current_champion
    from airflow_mlops.registry import configure_mlflow

    settings = settings or get_settings()
    started = time.perf_counter()
    configure_mlflow(settings)
    champion = current_champion(spec, settings)
    result = MonitorResult(
        model=spec.name, day=day.isoformat(), status=OK, retrain=False, reasons=[], metric=spec.metric.name
    )
    folder = reports_dir(settings, spec.name, day)
    folder.mkdir(parents=True, exist_ok=True)
    if champion is None:
        result.status, result.reasons = NO_CHAMPION, [f"{spec.name} has no @champion yet: nothing to compare with"]
        return _finish(result, folder, started)
    result.champion_version = champion.version
    reference, numeric, categorical = reference_frame(spec, champion, settings)
    current = current_frame(spec, day, numeric, categorical, settings)
    result.rows = len(current)
    if current.empty:
        result.status = NO_TRAFFIC
        result.reasons = [
            f"no prediction logged for the {spec.drift.current_days} days ending {day} "
            "(replay traffic or wait for requests)"
        ]
        return _finish(result, folder, started)
    result.served_versions = sorted(int(v) for v in current["model_version"].unique())
    if OUTCOME in current.columns:
        result.labelled_rows = int(current[OUTCOME].notna().sum())
    if result.rows < spec.drift.min_rows:
        result.status = INSUFFICIENT
        result.reasons = [
            f"{result.rows} predictions in the {spec.drift.current_days} days ending {day}, fewer than "
            f"drift.min_rows={spec.drift.min_rows}"
        ]
        return _finish(result, folder, started)

    snapshot, features, share = _drift_report(spec, current, reference, numeric, categorical)
    result.reports.update(_save(snapshot, folder, "drift"))
    result.features = features
    result.drift_share = share
    result.drifted_features = sorted(name for name, f in features.items() if f.drifted)
    reasons: list[str] = []
    if share >= spec.drift.drift_share:
        reasons.append(
            f"{len(result.drifted_features)} of {len(features)} features drifted (share {share:.2f} >= "
            f"drift_share {spec.drift.drift_share}): {', '.join(result.drifted_features[:8])}"
        )
    for name in spec.drift.feature_thresholds:
        if name in features and features[name].drifted:
            f = features[name]
            reasons.append(f"{name} drifted ({f.method} {f.score:.3g} vs threshold {f.threshold})")
    if OUTCOME in current.columns:
        snapshot, figure = _quality_report(spec, current)
        if snapshot is not None:
            result.reports.update(_save(snapshot, folder, "quality"))
        result.quality = figure
        result.champion_quality, _ = _champion_figures(spec, champion, settings)
        if figure is not None and result.champion_quality is not None:
            metric = spec.metric
            result.quality_drop = -metric.better(figure, result.champion_quality)
            if result.quality_drop > spec.drift.max_quality_drop:
                reasons.append(
                    f"{metric.title} {figure:.3f} on the served traffic is {result.quality_drop:.3f} worse than the "
                    f"champion's holdout {metric.title} {result.champion_quality:.3f} "
                    f"(max_quality_drop {spec.drift.max_quality_drop})"
                )
    if reasons:
        _, trained_until = _champion_figures(spec, champion, settings)
        cooldown = timedelta(hours=spec.drift.cooldown_hours)
        if (
            trained_until is not None
            and datetime.combine(day, datetime.min.time())
            < datetime.combine(trained_until, datetime.min.time()) + cooldown
        ):
            result.status = COOLDOWN
            result.reasons = [
                *reasons,
                f"but the champion was trained on data up to {trained_until}, within cooldown_hours="
                f"{spec.drift.cooldown_hours} of {day}: no retraining yet",
            ]
        else:
            result.status, result.retrain, result.reasons = DRIFT, True, reasons
    else:
        result.reasons = [f"no drift: share {share:.2f} < {spec.drift.drift_share}, quality within bounds"]
    try:
        _log_to_mlflow(champion, result, day, settings)
    except Exception as exc:  # the report stands on its own; MLflow is a convenience here
        log.warning("%s: could not log the monitoring figures of %s to MLflow: %s", spec.name, day, exc)
    return _finish(result, folder, started)


def _strict(value: Any) -> Any:
    """``value`` with NaN floats as None (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def _finish(result: MonitorResult, folder: Path, started: float) -> MonitorResult:
    result.seconds = time.perf_counter() - started
    summary = folder / "summary.json"
    result.reports["summary"] = str(summary)
    summary.write_text(json.dumps(_strict(result.to_dict()), indent=2, default=str, allow_nan=False))
    log.info("%s %s: %s (retrain: %s) %s", result.model, result.day, result.status, result.retrain, result.reasons)
    return result
