"""Evaluation: score a model on a frame, and the champion/challenger gate.

:func:`score` computes what the gate and the model card need from a fitted pipeline and a frame holding its
input columns and the label: ROC AUC, log loss, precision and recall at the spec's decision threshold,
calibration (Brier score, expected calibration error and the reliability table behind it), rows, positive rate,
and per-slice AUC for each of the spec's slice columns (``quality.slices``). A slice gets an AUC only when
it has at least :data:`MIN_SLICE_ROWS` rows and :data:`MIN_SLICE_CLASS_ROWS` rows of each class; smaller slices
are reported with their row count and no AUC, and the gate ignores them (their AUC is mostly noise).

:func:`gate` is pure: it takes the spec and two :class:`Scores` and returns a :class:`GateDecision`.

* First model (no champion): the challenger's AUC must reach ``quality.min_auc``.
* Otherwise, both scored on the same holdout (the scores carry a digest of the rows and labels scored; scores of
  different rows are refused): AUC ``>= min_auc``; AUC improvement over the champion ``>= min_improvement``
  (so with the default ``0.0`` an equally good, fresher model is promoted); and no slice scored for both may
  lose more than ``max_slice_auc_drop`` AUC.

Every check gives one readable reason, e.g. ``AUC 0.712 >= 0.65 (min_auc)`` or
``slice region=north: AUC dropped 0.031 > 0.02 (0.702 -> 0.671)``; failed checks come first.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

#: Slices smaller than this get no AUC (and are not compared by the gate).
MIN_SLICE_ROWS = 200
#: ... nor slices with fewer rows than this of either class.
MIN_SLICE_CLASS_ROWS = 10
#: Equal-width probability bins of the reliability table / expected calibration error.
CALIBRATION_BINS = 10
#: Tolerance of the gate's comparisons (AUCs computed on the same rows can differ in the last bits).
TOLERANCE = 1e-9


@dataclass(frozen=True)
class SliceScore:
    """AUC of one slice value (``None`` when the slice is too small or has a single class)."""

    rows: int
    positives: int
    auc: float | None


@dataclass(frozen=True)
class Scores:
    """A model's scores on one frame. ``auc`` is NaN when the frame has a single class."""

    auc: float
    log_loss: float
    precision: float
    recall: float
    threshold: float
    brier: float
    ece: float
    rows: int
    positive_rate: float
    mean_prediction: float
    data_digest: str = ""
    reliability: tuple[dict[str, float], ...] = ()
    slices: dict[str, dict[str, SliceScore]] = field(default_factory=dict)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow (``<prefix>auc``, ``<prefix>slice.region.north.auc`` ...); NaN values omitted."""
        values: dict[str, float] = {
            "auc": self.auc,
            "log_loss": self.log_loss,
            "precision": self.precision,
            "recall": self.recall,
            "brier": self.brier,
            "ece": self.ece,
            "rows": float(self.rows),
            "positive_rate": self.positive_rate,
            "mean_prediction": self.mean_prediction,
        }
        for column, by_value in self.slices.items():
            for value, entry in by_value.items():
                key = f"slice.{column}.{_metric_name(value)}"
                values[f"{key}.rows"] = float(entry.rows)
                if entry.auc is not None:
                    values[f"{key}.auc"] = entry.auc
        return {f"{prefix}{k}": float(v) for k, v in values.items() if not math.isnan(float(v))}

    def slice_aucs(self, column: str) -> dict[str, float]:
        """``value -> AUC`` of the slices of ``column`` that have one."""
        return {v: s.auc for v, s in self.slices.get(column, {}).items() if s.auc is not None}

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


def _auc(labels: Any, predictions: Any) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2:
        return math.nan
    return float(roc_auc_score(labels, predictions))


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


def predict_proba(model: Any, frame: pd.DataFrame) -> Any:
    """Probability of the positive class from a fitted pipeline, for the columns it was fitted on.

    The pipeline says which of its columns are numeric and which categorical, so a column that happens to
    be all missing (float NaN) in ``frame`` is still given to the encoder as a categorical one.
    """
    from airflow_mlops.model_input import model_columns, model_input

    numeric, categorical = model_columns(model)
    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the model's input columns {', '.join(missing)}")
    return model.predict_proba(model_input(frame, numeric, categorical))[:, 1]


def score(model: Any, frame: pd.DataFrame, spec: ModelSpec, *, slices: bool = True) -> Scores:
    """Scores of ``model`` on ``frame`` (input columns + the spec's label column); see the module doc."""
    import numpy as np
    from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score

    target = spec.target.name
    if target not in frame.columns:
        raise ValueError(f"the frame has no label column {target!r}")
    if frame.empty:
        raise ValueError("cannot score an empty frame")
    labels = frame[target].to_numpy().astype("int64")
    predictions = np.asarray(predict_proba(model, frame), dtype="float64")
    threshold = spec.training.decision_threshold
    decided = (predictions >= threshold).astype("int64")
    reliability, ece = _reliability(labels, predictions, CALIBRATION_BINS)
    by_slice: dict[str, dict[str, SliceScore]] = {}
    if slices:
        for column in spec.quality.slices:
            if column not in frame.columns:
                continue
            by_value: dict[str, SliceScore] = {}
            keys = frame[column].astype(object).where(frame[column].notna(), "<missing>").to_numpy()
            for value in sorted(set(keys.tolist()), key=str):
                mask = keys == value
                rows, positives = int(mask.sum()), int(labels[mask].sum())
                eligible = rows >= MIN_SLICE_ROWS and min(positives, rows - positives) >= MIN_SLICE_CLASS_ROWS
                auc = _auc(labels[mask], predictions[mask]) if eligible else None
                by_value[str(value)] = SliceScore(rows=rows, positives=positives, auc=auc)
            by_slice[column] = by_value
    return Scores(
        auc=_auc(labels, predictions),
        log_loss=float(log_loss(labels, predictions, labels=[0, 1])),
        precision=float(precision_score(labels, decided, zero_division=0)),
        recall=float(recall_score(labels, decided, zero_division=0)),
        threshold=float(threshold),
        brier=float(brier_score_loss(labels, predictions)),
        ece=ece,
        rows=len(labels),
        positive_rate=float(labels.mean()),
        mean_prediction=float(predictions.mean()),
        data_digest=_rows_digest(frame, target),
        reliability=reliability,
        slices=by_slice,
    )


def _check(name: str, passed: bool, reason: str, **values: Any) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), "reason": reason, **values}


def gate(spec: ModelSpec, challenger: Scores, champion: Scores | None) -> GateDecision:
    """Decide whether ``challenger`` replaces ``champion`` under ``spec.quality`` (see the module doc)."""
    quality = spec.quality
    checks: list[dict[str, Any]] = []
    auc = challenger.auc
    if math.isnan(auc):
        checks.append(_check("min_auc", False, "AUC undefined: the holdout has a single class", value=None))
    else:
        ok = auc >= quality.min_auc - TOLERANCE
        checks.append(
            _check(
                "min_auc",
                ok,
                f"AUC {auc:.3f} {'>=' if ok else '<'} {quality.min_auc:g} (min_auc)",
                value=auc,
                threshold=quality.min_auc,
            )
        )
    if champion is None:
        checks.append(_check("champion", True, "no champion yet: absolute thresholds only"))
    else:
        same = not (challenger.data_digest and champion.data_digest) or challenger.data_digest == champion.data_digest
        if not same:
            checks.append(_check("same_holdout", False, "challenger and champion were not scored on the same holdout"))
        if math.isnan(champion.auc) or math.isnan(auc):
            checks.append(_check("min_improvement", False, "AUC improvement undefined (single-class holdout)"))
        else:
            delta = auc - champion.auc
            ok = delta >= quality.min_improvement - TOLERANCE
            checks.append(
                _check(
                    "min_improvement",
                    ok,
                    f"AUC improvement {delta:+.3f} {'>=' if ok else '<'} {quality.min_improvement:g} "
                    f"(min_improvement; champion {champion.auc:.3f}, challenger {auc:.3f})",
                    value=delta,
                    threshold=quality.min_improvement,
                    champion=champion.auc,
                    challenger=auc,
                )
            )
        compared = 0
        worst: tuple[float, str] | None = None
        for column in quality.slices:
            before, after = champion.slice_aucs(column), challenger.slice_aucs(column)
            for value in sorted(set(before) & set(after)):
                compared += 1
                drop = before[value] - after[value]
                if worst is None or drop > worst[0]:
                    worst = (drop, f"{column}={value}")
                if drop > quality.max_slice_auc_drop + TOLERANCE:
                    checks.append(
                        _check(
                            "max_slice_auc_drop",
                            False,
                            f"slice {column}={value}: AUC dropped {drop:.3f} > {quality.max_slice_auc_drop:g} "
                            f"({before[value]:.3f} -> {after[value]:.3f})",
                            slice=f"{column}={value}",
                            value=drop,
                            threshold=quality.max_slice_auc_drop,
                        )
                    )
        if not any(c["check"] == "max_slice_auc_drop" for c in checks):
            if worst is None:
                text = f"slices ({', '.join(quality.slices) or 'none'}): none large enough to compare"
            else:
                text = (
                    f"slices: no {' or '.join(quality.slices)} lost more than {quality.max_slice_auc_drop:g} AUC "
                    f"({compared} compared; largest drop {worst[0]:+.3f} at {worst[1]})"
                )
            checks.append(
                _check("max_slice_auc_drop", True, text, compared=compared, threshold=quality.max_slice_auc_drop)
            )
    promote = all(c["passed"] for c in checks)
    ordered = [c for c in checks if not c["passed"]] + [c for c in checks if c["passed"]]
    return GateDecision(promote=promote, reasons=tuple(c["reason"] for c in ordered), checks=checks)
