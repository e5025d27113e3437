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
