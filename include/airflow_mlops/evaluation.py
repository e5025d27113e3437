"""Evaluation: score a model on a frame, and the champion/challenger gate, for classification and regression.

:func:`score` computes what the gate and the model card need from a fitted pipeline and a frame holding its
input columns and the label. Classification: ROC AUC, log loss, precision and recall at the spec's decision
threshold, calibration (Brier score, expected calibration error and the reliability table behind it), the
positive rate. Regression: RMSE, MAE, R2, the mean label and the mean prediction. Both: rows, and for each
of the spec's slice columns (``quality.slices``) the spec's primary metric per value. A slice is scored only
with at least :data:`MIN_SLICE_ROWS` rows (classification: and :data:`MIN_SLICE_CLASS_ROWS` of each class);
smaller ones are reported with their row count and no score, and the gate ignores them (mostly noise).

:func:`gate` is pure: it takes the spec and two :class:`Scores` and returns a :class:`GateDecision`, on the
spec's primary metric (:attr:`airflow_mlops.specs.ModelSpec.metric`; AUC by default, RMSE for regression), in
its direction (higher AUC and R2 are better; lower RMSE, MAE and log loss):

* ``bar``: the metric clears ``quality.bar`` (``AUC >= 0.65``, ``RMSE <= 12``), or, when the spec sets none,
  beats the no-skill baseline (AUC above 0.5, R2 above 0).
* With a champion, both scored on the same holdout (the scores carry a digest of the rows and labels scored;
  scores of different rows are refused): ``min_improvement``, the challenger at least this much better (so
  with the default ``0.0`` an equally good, fresher model is promoted); ``max_slice_drop``, no slice scored for
  both gets worse by more than this.

Every check gives one readable reason, e.g. ``AUC 0.712 >= 0.65 (bar)`` or
``slice region=north: RMSE worse by 1.310 > 1 (10.2 -> 11.51)``; failed checks come first.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.specs import CLASSIFICATION, METRICS, Metric, ModelSpec

if TYPE_CHECKING:
    import pandas as pd

#: Slices smaller than this get no score (and are not compared by the gate).
MIN_SLICE_ROWS = 200
#: ... nor, for classification, slices with fewer rows than this of either class.
MIN_SLICE_CLASS_ROWS = 10
#: Equal-width probability bins of the reliability table / expected calibration error.
CALIBRATION_BINS = 10
#: Tolerance of the gate's comparisons (metrics computed on the same rows can differ in the last bits).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class SliceScore:
    """The primary metric of one slice value (``None`` when the slice is too small to score)."""

    rows: int
    value: float | None
    positives: int | None = None  #: classification only


@dataclass(frozen=True)
class Scores:
    """A model's scores on one frame: ``values`` by metric name (NaN when undefined, such as the AUC of a
    single-class frame), the primary ``metric`` the slices are scored in, and the slices."""

    task: str
    metric: str
    values: dict[str, float]
    rows: int
    threshold: float | None = None
    data_digest: str = ""
    reliability: tuple[dict[str, float], ...] = ()
    slices: dict[str, dict[str, SliceScore]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        """One metric's value (``scores["auc"]``); NaN when it was not computed."""
        return float(self.values.get(name, math.nan))

    @property
    def primary(self) -> float:
        """The primary metric's value."""
        return self[self.metric]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow (``<prefix>auc``, ``<prefix>slice.region.north.auc`` ...); NaN values omitted."""
        values: dict[str, float] = {**self.values, "rows": float(self.rows)}
        for column, by_value in self.slices.items():
            for value, entry in by_value.items():
                key = f"slice.{column}.{_metric_name(value)}"
                values[f"{key}.rows"] = float(entry.rows)
                if entry.value is not None:
                    values[f"{key}.{self.metric}"] = entry.value
        return {f"{prefix}{k}": float(v) for k, v in values.items() if not math.isnan(float(v))}

    def slice_values(self, column: str) -> dict[str, float]:
        """``value -> primary metric`` of the slices of ``column`` that have one."""
        return {v: s.value for v, s in self.slices.get(column, {}).items() if s.value is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN stays a float; use ``allow_nan`` or :meth:`metrics` for strict JSON)."""
        raw = asdict(self)
        raw["reliability"] = list(raw["reliability"])
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scores:
        """Inverse of :meth:`to_dict`."""
        data = dict(raw)
        data["reliability"] = tuple(dict(b) for b in data.get("reliability", ()))
        data["slices"] = {
            column: {value: SliceScore(**entry) for value, entry in by_value.items()}
            for column, by_value in data.get("slices", {}).items()
        }
        return cls(**data)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict: ``promote``, one readable reason per check, and the checks themselves."""

    promote: bool
    reasons: tuple[str, ...]
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``promote`` or ``reject`` (the value of the ``gate.decision`` tag)."""
        return "promote" if self.promote else "reject"

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "decision": self.label, "reasons": list(self.reasons), "checks": self.checks}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateDecision:
        return cls(promote=bool(raw["promote"]), reasons=tuple(raw["reasons"]), checks=list(raw.get("checks", [])))


def _metric_name(value: Any) -> str:
    """A slice value usable in an MLflow metric name (letters, digits, ``_-. /``)."""
    text = str(value)
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text) or "_"


def metric_value(metric: str, labels: Any, predictions: Any) -> float:
    """``metric`` (a name of :data:`airflow_mlops.specs.METRICS`) of ``predictions`` against ``labels``; NaN
    when undefined (the AUC or log loss of a single class, R2 of a constant label)."""
    import numpy as np
    from sklearn import metrics

    labels, predictions = np.asarray(labels), np.asarray(predictions, dtype="float64")
    if not len(labels):
        return math.nan
    if metric == "auc":
        return float(metrics.roc_auc_score(labels, predictions)) if len(np.unique(labels)) > 1 else math.nan
    if metric == "log_loss":
        return float(metrics.log_loss(labels, predictions, labels=[0, 1]))
    if metric == "rmse":
        return float(np.sqrt(metrics.mean_squared_error(labels, predictions)))
    if metric == "mae":
        return float(metrics.mean_absolute_error(labels, predictions))
    if metric == "r2":
        return float(metrics.r2_score(labels, predictions)) if np.ptp(labels) > 0 else math.nan
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def _reliability(labels: Any, predictions: Any, bins: int) -> tuple[tuple[dict[str, float], ...], float]:
    """Reliability table over equal-width bins of the predicted probability, and the expected calibration error."""
    import numpy as np

    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(predictions, edges[1:-1], right=False), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if not count:
            continue
        mean_predicted = float(predictions[mask].mean())
        observed = float(labels[mask].mean())
        ece += count / len(labels) * abs(mean_predicted - observed)
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "rows": count,
                "mean_predicted": mean_predicted,
                "observed_rate": observed,
            }
        )
    return tuple(table), float(ece)


def _rows_digest(frame: pd.DataFrame, target: str) -> str:
    import pandas as pd

    columns = [c for c in ("row_id", target) if c in frame.columns]
    digest = hashlib.sha256(",".join(columns).encode())
    digest.update(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy().tobytes())
    return digest.hexdigest()


def predict_scores(model: Any, frame: pd.DataFrame) -> Any:
    """What a fitted pipeline says of each row of ``frame``: P(yes) for a classifier, the value for a regressor.

    The pipeline says which of its columns are numeric and which categorical, so a column that happens to
    be all missing (float NaN) in ``frame`` is still given to the encoder as a categorical one.
    """
    from airflow_mlops.model_input import model_columns, model_input, model_scores

    numeric, categorical = model_columns(model)
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the model's input columns {', '.join(missing)}")
    return model_scores(model, model_input(frame, numeric, categorical))


def _classification(labels: Any, predictions: Any, threshold: float) -> tuple[dict[str, float], tuple, float]:
    from sklearn.metrics import brier_score_loss, precision_score, recall_score

    decided = (predictions >= threshold).astype("int64")
    reliability, ece = _reliability(labels, predictions, CALIBRATION_BINS)
    values = {
        "auc": metric_value("auc", labels, predictions),
        "log_loss": metric_value("log_loss", labels, predictions),
        "precision": float(precision_score(labels, decided, zero_division=0)),
        "recall": float(recall_score(labels, decided, zero_division=0)),
        "brier": float(brier_score_loss(labels, predictions)),
        "ece": ece,
        "positive_rate": float(labels.mean()),
        "mean_prediction": float(predictions.mean()),
    }
    return values, reliability, ece


def score(model: Any, frame: pd.DataFrame, spec: ModelSpec, *, slices: bool = True) -> Scores:
    """Scores of ``model`` on ``frame`` (input columns + the spec's label column); see the module doc."""
    import numpy as np

    target = spec.target.name
    if target not in frame.columns:
        raise ValueError(f"the frame has no label column {target!r}")
    if frame.empty:
        raise ValueError("cannot score an empty frame")
    classifier = spec.is_classifier
    labels = frame[target].to_numpy().astype("int64" if classifier else "float64")
    predictions = np.asarray(predict_scores(model, frame), dtype="float64")
    metric = spec.metric.name
    reliability: tuple[dict[str, float], ...] = ()
    if classifier:
        values, reliability, _ = _classification(labels, predictions, spec.training.decision_threshold)
    else:
        values = {name: metric_value(name, labels, predictions) for name in ("rmse", "mae", "r2")} | {
            "mean_label": float(labels.mean()),
            "mean_prediction": float(predictions.mean()),
        }
    by_slice: dict[str, dict[str, SliceScore]] = {}
    if slices:
        for column in spec.quality.slices:
            if column not in frame.columns:
                continue
            by_value: dict[str, SliceScore] = {}
            keys = frame[column].astype(object).where(frame[column].notna(), "<missing>").to_numpy()
            for value in sorted(set(keys.tolist()), key=str):
                mask = keys == value
                rows = int(mask.sum())
                positives = int(labels[mask].sum()) if classifier else None
                eligible = rows >= MIN_SLICE_ROWS and (
                    positives is None or min(positives, rows - positives) >= MIN_SLICE_CLASS_ROWS
                )
                figure = metric_value(metric, labels[mask], predictions[mask]) if eligible else None
                if figure is not None and math.isnan(figure):
                    figure = None
                by_value[str(value)] = SliceScore(rows=rows, value=figure, positives=positives)
            by_slice[column] = by_value
    return Scores(
        task=spec.task,
        metric=metric,
        values=values,
        rows=len(labels),
        threshold=float(spec.training.decision_threshold) if classifier else None,
        data_digest=_rows_digest(frame, target),
        reliability=reliability,
        slices=by_slice,
    )


def _check(name: str, passed: bool, reason: str, **values: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), "reason": reason, **values}


def _bar_check(metric: Metric, value: float, bar: float | None) -> dict[str, Any]:
    """The absolute bar on the primary metric (the spec's ``quality.bar``, else the no-skill baseline)."""
    if math.isnan(value):
        why = "the holdout has a single class" if metric.task == CLASSIFICATION else "the holdout label is constant"
        return _check("bar", False, f"{metric.title} undefined: {why}", value=None)
    if bar is None:
        ok = metric.better(value, metric.no_skill) > TOLERANCE
        sign = (">" if metric.higher_is_better else "<") if ok else ("<=" if metric.higher_is_better else ">=")
        text = f"{metric.title} {value:.3f} {sign} {metric.no_skill:g} (no-skill baseline; quality.bar unset)"
        return _check("bar", ok, text, value=value, threshold=metric.no_skill)
    ok = metric.better(value, bar) >= -TOLERANCE
    sign = (">=" if metric.higher_is_better else "<=") if ok else ("<" if metric.higher_is_better else ">")
    return _check("bar", ok, f"{metric.title} {value:.3f} {sign} {bar:g} (bar)", value=value, threshold=bar)


def gate(spec: ModelSpec, challenger: Scores, champion: Scores | None) -> GateDecision:
    """Decide whether ``challenger`` replaces ``champion`` under ``spec.quality`` (see the module doc)."""
    quality, metric = spec.quality, spec.metric
    if challenger.metric != metric.name:
        raise ValueError(f"the challenger was scored in {challenger.metric}, the spec gates on {metric.name}")
    value = challenger.primary
    if quality.bar is None and math.isinf(metric.no_skill):  # RMSE, MAE: no skill is no better than the mean
        checks = [_bar_check(METRICS["r2"], challenger["r2"], None)]
    else:
        checks = [_bar_check(metric, value, quality.bar)]
    if champion is None:
        checks.append(_check("champion", True, "no champion yet: absolute thresholds only"))
    else:
        same = not (challenger.data_digest and champion.data_digest) or challenger.data_digest == champion.data_digest
        if not same:
            checks.append(_check("same_holdout", False, "challenger and champion were not scored on the same holdout"))
        before = champion[metric.name]
        if math.isnan(before) or math.isnan(value):
            checks.append(_check("min_improvement", False, f"{metric.title} improvement undefined on this holdout"))
        else:
            delta = metric.better(value, before)
            ok = delta >= quality.min_improvement - TOLERANCE
            checks.append(
                _check(
                    "min_improvement",
                    ok,
                    f"{metric.title} improvement {delta:+.3f} {'>=' if ok else '<'} {quality.min_improvement:g} "
                    f"(min_improvement; champion {before:.3f}, challenger {value:.3f})",
                    value=delta,
                    threshold=quality.min_improvement,
                    champion=before,
                    challenger=value,
                )
            )
        checks += _slice_checks(spec, challenger, champion)
    promote = all(c["passed"] for c in checks)
    ordered = [c for c in checks if not c["passed"]] + [c for c in checks if c["passed"]]
    return GateDecision(promote=promote, reasons=tuple(c["reason"] for c in ordered), checks=checks)


def _slice_checks(spec: ModelSpec, challenger: Scores, champion: Scores) -> list[dict[str, Any]]:
    """``max_slice_drop``: one failed check per slice that got worse by more than allowed, else one summary."""
    quality, metric = spec.quality, spec.metric
    limit = quality.max_slice_drop
    failed: list[dict[str, Any]] = []
    compared = 0
    worst: tuple[float, str] | None = None
    for column in quality.slices:
        before, after = champion.slice_values(column), challenger.slice_values(column)
        for value in sorted(set(before) & set(after)):
            compared += 1
            drop = -metric.better(after[value], before[value])
            if worst is None or drop > worst[0]:
                worst = (drop, f"{column}={value}")
            if drop > limit + TOLERANCE:
                failed.append(
                    _check(
                        "max_slice_drop",
                        False,
                        f"slice {column}={value}: {metric.title} worse by {drop:.3f} > {limit:g} "
                        f"({before[value]:.3f} -> {after[value]:.3f})",
                        slice=f"{column}={value}",
                        value=drop,
                        threshold=limit,
                    )
                )
    if failed:
        return failed
    if worst is None:
        text = f"slices ({', '.join(quality.slices) or 'none'}): none large enough to compare"
    else:
        text = (
            f"slices: no {' or '.join(quality.slices)} got worse by more than {limit:g} {metric.title} "
            f"({compared} compared; largest drop {worst[0]:+.3f} at {worst[1]})"
        )
    return [_check("max_slice_drop", True, text, compared=compared, threshold=limit)]
