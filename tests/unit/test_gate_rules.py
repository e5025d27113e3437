"""The champion/challenger gate (``evaluation.gate``) on hand-made scores, and ``evaluation.score`` on a toy model.

Pure unit tests: no data, no MLflow. The rules (see ``airflow_mlops.evaluation``): a first model needs
``min_auc``; a challenger also needs an AUC improvement ``>= min_improvement`` over the champion on the same
holdout (equal passes when ``min_improvement`` is 0) and no slice may lose more than ``max_slice_auc_drop``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.evaluation import GateDecision, Scores, SliceScore, gate, predict_proba, score
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
                "min_auc": 0.65,
                "min_improvement": 0.0,
                "max_slice_auc_drop": 0.02,
                "slices": ["origin", "carrier"],  # the flights example's slices (no default)
                **quality,
            },
        }
    )


def scores(auc: float, slices: dict[str, dict[str, float | None]] | None = None, digest: str = "holdout-a") -> Scores:
    """Scores with the given AUC and slice AUCs (``None``: a slice too small to have one)."""
    return Scores(
        auc=auc,
        log_loss=0.45,
        precision=0.5,
        recall=0.1,
        threshold=0.5,
        brier=0.14,
        ece=0.02,
        rows=1000,
        positive_rate=0.2,
        mean_prediction=0.2,
        data_digest=digest,
        slices={
            column: {value: SliceScore(rows=300, positives=60, auc=a) for value, a in by_value.items()}
            for column, by_value in (slices or {}).items()
        },
    )


def check(decision: GateDecision, name: str) -> list[dict[str, Any]]:
    return [c for c in decision.checks if c["check"] == name]


# --- first model ----------------------------------------------------------------------------------


def test_first_model_is_judged_on_the_absolute_bar_only() -> None:
    decision = gate(spec(), scores(0.712, {"origin": {"EWR": 0.3}}), None)
    assert decision.promote
    assert decision.label == "promote"
    assert decision.reasons[0] == "AUC 0.712 >= 0.65 (min_auc)"
    assert "no champion yet: absolute thresholds only" in decision.reasons
    assert (
        check(decision, "min_auc")[0] | {"passed": True, "value": 0.712, "threshold": 0.65}
        == check(decision, "min_auc")[0]
    )


def test_first_model_below_the_bar_is_rejected() -> None:
    decision = gate(spec(), scores(0.612), None)
    assert not decision.promote
    assert decision.label == "reject"
    assert decision.reasons[0] == "AUC 0.612 < 0.65 (min_auc)"


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
        "AUC 0.712 >= 0.65 (min_auc)",
        "AUC improvement +0.012 >= 0 (min_improvement; champion 0.700, challenger 0.712)",
        "slices: no origin or carrier lost more than 0.02 AUC (3 compared; largest drop +0.010 at origin=JFK)",
    )
    assert [c["check"] for c in decision.checks] == ["min_auc", "min_improvement", "max_slice_auc_drop"]
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
    assert decision.reasons[0] == "slice origin=EWR: AUC dropped 0.031 > 0.02 (0.702 -> 0.671)"
    failed = [c for c in decision.checks if not c["passed"]]
    assert failed == [
        {
            "check": "max_slice_auc_drop",
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
    slices = sorted(c["slice"] for c in check(decision, "max_slice_auc_drop"))
    assert slices == ["carrier=UA", "origin=EWR"]  # JFK lost exactly 0.02: at the limit, allowed
    assert gate(spec(max_slice_auc_drop=0.1), challenger, champion).promote


def test_slices_without_an_auc_or_outside_the_spec_are_not_compared() -> None:
    champion = scores(0.7, {"origin": {"EWR": 0.70, "HA": 0.9}, "dest": {"IAH": 0.9}})
    challenger = scores(0.7, {"origin": {"EWR": 0.70, "HA": None}, "dest": {"IAH": 0.1}})
    decision = gate(spec(slices=["origin"]), challenger, champion)
    assert decision.promote
    assert check(decision, "max_slice_auc_drop")[0]["compared"] == 1
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
    assert result.positive_rate == pytest.approx(frame["delayed"].mean())
    assert 0.6 < result.auc < 0.8
    assert result.brier < 0.2 and result.ece < 0.05
    assert sum(b["rows"] for b in result.reliability) == n
    predicted = predict_proba(model, frame) >= 0.5
    actual = frame["delayed"].to_numpy() == 1
    assert result.threshold == pytest.approx(0.5)
    assert result.precision == pytest.approx((predicted & actual).sum() / predicted.sum())
    assert result.recall == pytest.approx((predicted & actual).sum() / actual.sum())
    assert set(result.slices) == {"origin", "carrier"}
    assert result.slices["origin"]["LGA"].auc is not None  # ~300 rows, both classes
    assert result.slices["carrier"]["HA"].auc is None  # ~30 rows: too few
    assert result.slices["carrier"]["HA"].rows == (frame["carrier"] == "HA").sum()
    assert result.data_digest == score(model, frame.copy(), spec()).data_digest
    assert result.data_digest != score(model, frame.iloc[1:], spec()).data_digest
    with pytest.raises(ValueError, match="no label column"):
        score(model, frame.drop(columns="delayed"), spec())
