"""The champion/challenger gate (``evaluation.gate``) on hand-made scores, and ``evaluation.score`` on toy models.

Pure unit tests: no data, no MLflow. The rules (see ``airflow_mlops.evaluation``), on the spec's primary metric in
its direction: every version clears ``bar`` (or, without one, the no-skill baseline); a challenger also needs an
improvement ``>= min_improvement`` over the champion on the same holdout (equal passes when ``min_improvement`` is
0) and no slice may get worse by more than ``max_slice_drop``. Classification gates on AUC here, regression on
RMSE (lower is better) and R2.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.evaluation import GateDecision, Scores, SliceScore, gate, metric_value, predict_scores, score
from airflow_mlops.specs import ModelSpec


def spec(**quality: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "toy",
            "dataset": "flights",
            "entity_keys": ["origin"],
            "feature_service": "toy_v1",
            "target": {"rule": "dep_delay >= 15", "name": "delayed"},
            "features": ["distance"],
            "algorithm": {"name": "hist_gradient_boosting"},
            "quality": {
                "metric": "auc",
                "bar": 0.65,
                "min_improvement": 0.0,
                "max_slice_drop": 0.02,
                "slices": ["origin", "carrier"],  # the flights example's slices (no default)
                **quality,
            },
        }
    )


def scores(auc: float, slices: dict[str, dict[str, float | None]] | None = None, digest: str = "holdout-a") -> Scores:
    """Scores with the given AUC and slice AUCs (``None``: a slice too small to have one)."""
    return Scores(
        task="binary_classification",
        metric="auc",
        values={"auc": auc, "log_loss": 0.45, "precision": 0.5, "recall": 0.1, "brier": 0.14, "ece": 0.02},
        threshold=0.5,
        rows=1000,
        data_digest=digest,
        slices={
            column: {value: SliceScore(rows=300, positives=60, value=a) for value, a in by_value.items()}
            for column, by_value in (slices or {}).items()
        },
    )


def regression_spec(**quality: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "toy_minutes",
            "task": "regression",
            "dataset": "flights",
            "entity_keys": ["origin"],
            "feature_service": "toy_v1",
            "target": {"value": "dep_delay", "name": "minutes"},
            "features": ["distance"],
            "algorithm": {"name": "hist_gradient_boosting"},
            "quality": {"max_slice_drop": 1.0, "slices": ["origin"], **quality},
        }
    )


def regression_scores(
    rmse: float, r2: float = 0.3, slices: dict[str, float] | None = None, metric: str = "rmse"
) -> Scores:
    """Regression scores with the given RMSE and R2, and ``origin`` slices in ``metric``."""
    return Scores(
        task="regression",
        metric=metric,
        values={"rmse": rmse, "mae": rmse * 0.7, "r2": r2},
        rows=1000,
        data_digest="holdout-a",
        slices={"origin": {value: SliceScore(rows=300, value=v) for value, v in (slices or {}).items()}},
    )


def check(decision: GateDecision, name: str) -> list[dict[str, Any]]:
    return [c for c in decision.checks if c["check"] == name]


# --- first model ----------------------------------------------------------------------------------


def test_first_model_is_judged_on_the_absolute_bar_only() -> None:
    decision = gate(spec(), scores(0.712, {"origin": {"EWR": 0.3}}), None)
    assert decision.promote
    assert decision.label == "promote"
    assert decision.reasons[0] == "AUC 0.712 >= 0.65 (bar)"
    assert "no champion yet: absolute thresholds only" in decision.reasons
    assert check(decision, "bar")[0] | {"passed": True, "value": 0.712, "threshold": 0.65} == check(decision, "bar")[0]


def test_first_model_below_the_bar_is_rejected() -> None:
    decision = gate(spec(), scores(0.612), None)
    assert not decision.promote
    assert decision.label == "reject"
    assert decision.reasons[0] == "AUC 0.612 < 0.65 (bar)"


def test_a_single_class_holdout_never_promotes() -> None:
    decision = gate(spec(), scores(math.nan), None)
    assert not decision.promote
    assert "single class" in decision.reasons[0]
    assert not gate(spec(), scores(0.7), scores(math.nan)).promote


# --- against a champion ---------------------------------------------------------------------------


def test_a_better_challenger_is_promoted_with_every_check_explained() -> None:
    champion = scores(0.700, {"origin": {"EWR": 0.70, "JFK": 0.68}, "carrier": {"UA": 0.66}})
    challenger = scores(0.712, {"origin": {"EWR": 0.71, "JFK": 0.67}, "carrier": {"UA": 0.70}})
    decision = gate(spec(), challenger, champion)
    assert decision.promote
    assert decision.reasons == (
        "AUC 0.712 >= 0.65 (bar)",
        "AUC improvement +0.012 >= 0 (min_improvement; champion 0.700, challenger 0.712)",
        "slices: no origin or carrier got worse by more than 0.02 AUC (3 compared; largest drop +0.010 at origin=JFK)",
    )
    assert [c["check"] for c in decision.checks] == ["bar", "min_improvement", "max_slice_drop"]
    assert all(c["passed"] for c in decision.checks)


def test_a_worse_challenger_is_rejected() -> None:
    decision = gate(spec(), scores(0.690), scores(0.700))
    assert not decision.promote
    assert decision.reasons[0] == "AUC improvement -0.010 < 0 (min_improvement; champion 0.700, challenger 0.690)"


def test_an_equally_good_challenger_passes_unless_an_improvement_is_required() -> None:
    """Equal AUC on the same holdout: with ``min_improvement: 0`` the fresher model wins; a positive
    ``min_improvement`` demands a real gain (tiny float differences are tolerated, not rewarded)."""
    assert gate(spec(), scores(0.7), scores(0.7)).promote
    assert gate(spec(), scores(0.7 + 1e-12), scores(0.7)).promote
    assert gate(spec(), scores(0.7 - 1e-12), scores(0.7)).promote
    strict = spec(min_improvement=0.005)
    assert not gate(strict, scores(0.7), scores(0.7)).promote
    assert not gate(strict, scores(0.704), scores(0.7)).promote
    assert gate(strict, scores(0.706), scores(0.7)).promote


def test_better_overall_but_a_slice_drops_too_much_is_rejected() -> None:
    champion = scores(0.700, {"origin": {"EWR": 0.702, "JFK": 0.68, "LGA": 0.67}})
    challenger = scores(0.720, {"origin": {"EWR": 0.671, "JFK": 0.70, "LGA": 0.70}})
    decision = gate(spec(), challenger, champion)
    assert not decision.promote
    assert decision.reasons[0] == "slice origin=EWR: AUC worse by 0.031 > 0.02 (0.702 -> 0.671)"
    failed = [c for c in decision.checks if not c["passed"]]
    assert failed == [
        {
            "check": "max_slice_drop",
            "passed": False,
            "reason": decision.reasons[0],
            "slice": "origin=EWR",
            "value": pytest.approx(0.031),
            "threshold": 0.02,
        }
    ]


def test_every_failing_slice_is_named_and_a_drop_at_the_limit_passes() -> None:
    champion = scores(0.7, {"origin": {"EWR": 0.70, "JFK": 0.70}, "carrier": {"UA": 0.70, "B6": 0.70}})
    challenger = scores(0.7, {"origin": {"EWR": 0.65, "JFK": 0.68}, "carrier": {"UA": 0.60, "B6": 0.71}})
    decision = gate(spec(), challenger, champion)
    assert not decision.promote
    slices = sorted(c["slice"] for c in check(decision, "max_slice_drop"))
    assert slices == ["carrier=UA", "origin=EWR"]  # JFK lost exactly 0.02: at the limit, allowed
    assert gate(spec(max_slice_drop=0.1), challenger, champion).promote


def test_slices_without_an_auc_or_outside_the_spec_are_not_compared() -> None:
    champion = scores(0.7, {"origin": {"EWR": 0.70, "HA": 0.9}, "dest": {"IAH": 0.9}})
    challenger = scores(0.7, {"origin": {"EWR": 0.70, "HA": None}, "dest": {"IAH": 0.1}})
    decision = gate(spec(slices=["origin"]), challenger, champion)
    assert decision.promote
    assert check(decision, "max_slice_drop")[0]["compared"] == 1
    none = gate(spec(), scores(0.7), scores(0.7))
    assert "none large enough to compare" in none.reasons[-1]


def test_scores_of_different_holdouts_are_never_compared() -> None:
    decision = gate(spec(), scores(0.8, digest="holdout-b"), scores(0.7, digest="holdout-a"))
    assert not decision.promote
    assert decision.reasons[0] == "challenger and champion were not scored on the same holdout"


def test_decision_and_scores_round_trip_as_json() -> None:
    decision = gate(spec(), scores(0.71, {"origin": {"EWR": 0.7}}), scores(0.70, {"origin": {"EWR": 0.7}}))
    assert GateDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision
    original = scores(0.71, {"origin": {"EWR": 0.7, "HA": None}})
    assert Scores.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    metrics = original.metrics("holdout.")
    assert metrics["holdout.auc"] == pytest.approx(0.71)
    assert metrics["holdout.slice.origin.EWR.auc"] == pytest.approx(0.7)
    assert metrics["holdout.slice.origin.HA.rows"] == 300
    assert "holdout.slice.origin.HA.auc" not in metrics


# --- score ----------------------------------------------------------------------------------------


def test_score_measures_discrimination_calibration_and_slices() -> None:
    from airflow_mlops.training import build_pipeline

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "distance": rng.uniform(100, 2000, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n, p=[0.45, 0.45, 0.1]),
            "carrier": rng.choice(["UA", "B6", "HA"], n, p=[0.5, 0.49, 0.01]),
        }
    )
    frame["delayed"] = (rng.uniform(0, 1, n) < 0.05 + 0.3 * (frame["distance"] > 1000)).astype("int64")
    model = build_pipeline("logistic_regression", {}, 0, ["distance"], ["origin"])
    model.fit(frame[["distance", "origin"]], frame["delayed"])
    result = score(model, frame, spec())
    assert result.rows == n
    assert result["positive_rate"] == pytest.approx(frame["delayed"].mean())
    assert 0.6 < result["auc"] < 0.8 and result.primary == result["auc"]
    assert result["brier"] < 0.2 and result["ece"] < 0.05
    assert sum(b["rows"] for b in result.reliability) == n
    predicted = predict_scores(model, frame) >= 0.5
    actual = frame["delayed"].to_numpy() == 1
    assert result.threshold == pytest.approx(0.5)
    assert result["precision"] == pytest.approx((predicted & actual).sum() / predicted.sum())
    assert result["recall"] == pytest.approx((predicted & actual).sum() / actual.sum())
    assert set(result.slices) == {"origin", "carrier"}
    assert result.slices["origin"]["LGA"].value is not None  # ~300 rows, both classes
    assert result.slices["carrier"]["HA"].value is None  # ~30 rows: too few
    assert result.slices["carrier"]["HA"].rows == (frame["carrier"] == "HA").sum()
    assert result.data_digest == score(model, frame.copy(), spec()).data_digest
    assert result.data_digest != score(model, frame.iloc[1:], spec()).data_digest
    with pytest.raises(ValueError, match="no label column"):
        score(model, frame.drop(columns="delayed"), spec())


# --- regression -----------------------------------------------------------------------------------


def test_regression_gates_on_rmse_where_lower_is_better() -> None:
    """A lower RMSE is an improvement; a slice whose RMSE rises more than ``max_slice_drop`` blocks."""
    champion = regression_scores(10.0, slices={"EWR": 9.0, "JFK": 11.0})
    better = regression_scores(9.5, slices={"EWR": 8.8, "JFK": 11.9})
    decision = gate(regression_spec(), better, champion)
    assert decision.promote, decision.reasons
    assert "RMSE improvement +0.500 >= 0 (min_improvement; champion 10.000, challenger 9.500)" in decision.reasons
    worse = gate(regression_spec(), regression_scores(10.4, slices={"EWR": 9.0}), champion)
    assert not worse.promote
    assert worse.reasons[0].startswith("RMSE improvement -0.400 < 0")
    slice_worse = gate(regression_spec(), regression_scores(9.0, slices={"EWR": 10.2, "JFK": 10.0}), champion)
    assert not slice_worse.promote
    assert slice_worse.reasons[0] == "slice origin=EWR: RMSE worse by 1.200 > 1 (9.000 -> 10.200)"


def test_regression_bar_is_an_upper_bound_and_without_one_the_model_must_beat_the_mean() -> None:
    assert gate(regression_spec(bar=12), regression_scores(11.0), None).promote
    capped = gate(regression_spec(bar=12), regression_scores(12.5), None)
    assert not capped.promote and capped.reasons[0] == "RMSE 12.500 > 12 (bar)"
    no_skill = gate(regression_spec(), regression_scores(11.0, r2=-0.01), None)
    assert not no_skill.promote
    assert no_skill.reasons[0] == "R2 -0.010 <= 0 (no-skill baseline; quality.bar unset)"
    assert gate(regression_spec(), regression_scores(11.0, r2=0.2), None).promote
    r2_gate = regression_spec(metric="r2", bar=0.25, max_slice_drop=0.05)
    assert not gate(r2_gate, regression_scores(11.0, r2=0.2, metric="r2"), None).promote
    assert gate(r2_gate, regression_scores(11.0, r2=0.3, metric="r2"), None).promote
    with pytest.raises(ValueError, match="scored in rmse, the spec gates on r2"):
        gate(r2_gate, regression_scores(11.0), None)


def test_a_spec_mixing_tasks_is_refused_with_the_field_and_the_fix() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"quality\.metric: 'auc' is not a regression metric"):
        regression_spec(metric="auc")
    base = regression_spec().model_dump()
    with pytest.raises(ValidationError, match="a rule makes a yes/no label"):
        ModelSpec.model_validate({**base, "target": {"rule": "dep_delay >= 15"}})
    with pytest.raises(ValidationError, match="'logistic_regression' is not a regression algorithm"):
        ModelSpec.model_validate({**base, "algorithm": {"name": "logistic_regression"}})
    with pytest.raises(ValidationError, match="`value` is for regression"):
        ModelSpec.model_validate({**base, "task": "binary_classification"})
    with pytest.raises(ValidationError, match="exactly one of"):
        ModelSpec.model_validate({**base, "target": {"value": "dep_delay", "function": "m:f"}})


def test_score_of_a_regressor_measures_rmse_mae_r2_and_slices() -> None:
    from airflow_mlops.training import build_pipeline

    rng = np.random.default_rng(1)
    n = 3000
    frame = pd.DataFrame(
        {
            "row_id": np.arange(n),
            "distance": rng.uniform(100, 2000, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n, p=[0.45, 0.45, 0.1]),
        }
    )
    frame["minutes"] = 0.01 * frame["distance"] + np.where(frame["origin"] == "EWR", 5.0, 0.0) + rng.normal(0, 2, n)
    model = build_pipeline("hist_gradient_boosting", {"max_iter": 50}, 0, ["distance"], ["origin"], "regression")
    model.fit(frame[["distance", "origin"]], frame["minutes"])
    result = score(model, frame, regression_spec())
    predicted = predict_scores(model, frame)
    errors = frame["minutes"].to_numpy() - predicted
    assert result.task == "regression" and result.metric == "rmse" and result.threshold is None
    assert result.primary == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert result["mae"] == pytest.approx(np.mean(np.abs(errors)))
    assert 0.8 < result["r2"] < 1  # distance and origin explain most of the variance; the noise is left
    assert result["mean_label"] == pytest.approx(frame["minutes"].mean())
    assert not result.reliability  # calibration is a classification figure
    lga = (frame["origin"] == "LGA").to_numpy()
    assert result.slices["origin"]["LGA"].value == pytest.approx(
        metric_value("rmse", frame["minutes"][lga], predicted[lga])
    )
    assert result.slices["origin"]["LGA"].positives is None
    assert Scores.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.metrics("holdout.")["holdout.slice.origin.EWR.rmse"] == result.slices["origin"]["EWR"].value
