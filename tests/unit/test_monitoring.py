"""Evidently's drift verdicts as the policy reads them, on small synthetic frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.monitoring import _drift_report
from airflow_mlops.settings import PROJECT_ROOT
from airflow_mlops.specs import load_spec


def test_shifted_and_lost_features_drift_stable_ones_do_not() -> None:
    spec = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "temp": rng.normal(30, 5, 2000),
            "wind_gust": rng.normal(10, 2, 2000),
            "distance": rng.normal(1000, 300, 2000),
            "carrier": rng.choice(["UA", "AA", "B6"], 2000).astype(object),
        }
    )
    current = pd.DataFrame(
        {
            "temp": rng.normal(80, 5, 600),  # summer
            "wind_gust": np.nan,  # the online store served nothing
            "distance": rng.normal(1000, 300, 600),
            "carrier": rng.choice(["UA", "AA", "B6"], 600).astype(object),
        }
    )
    snapshot, features, share = _drift_report(spec, current, reference, ["temp", "wind_gust", "distance"], ["carrier"])
    assert features["temp"].drifted and features["temp"].score > spec.drift.threshold
    assert features["wind_gust"].drifted is True and features["wind_gust"].method == "no value in the served traffic"
    assert not features["distance"].drifted and not features["carrier"].drifted
    assert share == pytest.approx(0.5)
    assert "temp" in snapshot.json()


def test_quality_is_read_from_evidently_in_the_primary_metric_of_either_task() -> None:
    """Classification: Evidently's ROC AUC; regression: Evidently's RMSE (and MAE, R2 when the spec gates on them),
    each equal to scikit-learn's figure on the same labelled rows; unlabelled rows are left out."""
    from airflow_mlops.evaluation import metric_value
    from airflow_mlops.monitoring import OUTCOME, SCORE, _quality_report

    classifier = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")
    rng = np.random.default_rng(3)
    n = 800
    outcome = rng.integers(0, 2, n).astype(float)
    current = pd.DataFrame({OUTCOME: outcome, SCORE: np.clip(0.3 * outcome + rng.uniform(0, 0.7, n), 0, 1)})
    current.loc[:99, OUTCOME] = np.nan  # not landed yet
    snapshot, auc = _quality_report(classifier, current)
    labelled = current.dropna()
    assert snapshot is not None and auc == pytest.approx(metric_value("auc", labelled[OUTCOME], labelled[SCORE]))

    truth = rng.normal(20, 5, n)
    regression = pd.DataFrame({OUTCOME: truth, SCORE: truth + rng.normal(0, 2, n)})
    for metric in ("rmse", "mae", "r2"):
        spec = classifier.model_copy(
            update={
                "task": "regression",
                "quality": classifier.quality.model_copy(update={"metric": metric}),
            }
        )
        snapshot, figure = _quality_report(spec, regression)
        expected = metric_value(metric, regression[OUTCOME], regression[SCORE])
        assert snapshot is not None and figure == pytest.approx(expected, rel=1e-6), metric
    assert _quality_report(spec, regression.head(10)) == (None, None)  # too few labelled rows to judge
