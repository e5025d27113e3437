"""The served form of a model (:mod:`airflow_mlops.compiled_model`) against the scikit-learn reference.

Real rows: the holdout of the 14-day January 2013 window of ``tests/unit/test_training.py`` (a few thousand real
flights with their point-in-time features). The model is fitted with the shipped spec's own parameters (300
trees of 31 leaves), so what is compared is what serves. Every test compares two computations of the same rows;
no expected score is written down here. The largest absolute difference of each comparison is printed (``-s``)
and recorded as a test property (``--junitxml``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import airflow_mlops.features as features_module
from airflow_mlops.compiled_model import compile_model
from airflow_mlops.model_input import model_columns, model_input, model_scores
from airflow_mlops.serving import MAX_ROWS, Predictor, payload, request_schema
from airflow_mlops.settings import PROJECT_ROOT
from airflow_mlops.specs import CLASSIFICATION, REGRESSION, load_spec
from airflow_mlops.training import CALENDAR_FEATURES, CALENDAR_VALUES, build_pipeline, fit
from tests.unit.test_training import Window, make_spec
from tests.unit.test_training import window as window  # the module-scoped fixture

#: Float rounding only: Treelite sums the same leaf values in the same order as scikit-learn.
TOLERANCE = 1e-9
SHIPPED_PARAMS = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").algorithm.params


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A frame's columns as plain Python lists (what the hot path hands the compiled model)."""
    return {name: frame[name].astype(object).where(frame[name].notna(), None).tolist() for name in frame.columns}


def _compare(model: Any, frame: pd.DataFrame, record: Any, name: str) -> float:
    numeric, categorical = model_columns(model)
    compiled = compile_model(model)
    assert compiled is not None, f"{type(model.named_steps['model']).__name__} was not compiled"
    reference = model_scores(model, model_input(frame, numeric, categorical))
    served = compiled.scores(_columns(frame[[*numeric, *categorical]]), len(frame))
    assert served.shape == reference.shape and np.isfinite(served).all()
    difference = float(np.abs(served - reference).max())
    record(name, difference)
    print(f"{name}: {len(frame)} rows, max |compiled - scikit-learn| = {difference:.3g}")
    assert difference <= TOLERANCE, f"{name}: max difference {difference}"
    return difference


@pytest.fixture(scope="module")
def shipped(window: Window) -> Any:
    """The shipped spec's boosting model fitted on the window's train days."""
    return fit(make_spec(params=dict(SHIPPED_PARAMS)), window.training_set).model


def test_boosting_scores_equal_scikit_learn_on_real_rows(shipped: Any, window: Window, record_property: Any) -> None:
    holdout = window.training_set.holdout
    assert len(holdout) > 2000
    _compare(shipped, holdout, record_property, "hist_gradient_boosting")


def test_unseen_infrequent_and_missing_categories_map_as_the_reference_maps_them(
    window: Window, record_property: Any
) -> None:
    ts = window.training_set
    model = build_pipeline("hist_gradient_boosting", {"max_iter": 40}, 7, ts.numeric, ts.categorical)
    model.set_params(encode__categorical__max_categories=6)  # most destinations and carriers become infrequent
    model.fit(model_input(ts.train, ts.numeric, ts.categorical), ts.train[ts.target])
    encoder = model.named_steps["encode"].named_transformers_["categorical"]
    grouped = dict(zip(encoder.feature_names_in_, encoder.infrequent_categories_, strict=True))
    assert len(grouped["dest"]) > 20 and len(grouped["carrier"]) > 3
    rows = ts.holdout.head(600).copy()
    rows.loc[rows.index[::4], "dest"] = grouped["dest"][0]
    rows.loc[rows.index[1::4], "carrier"] = "ZZ"  # never seen
    rows.loc[rows.index[2::4], "carrier"] = None
    rows.loc[rows.index[3::4], "dest"] = np.nan
    rows.loc[rows.index[::5], "distance"] = np.nan
    _compare(model, rows, record_property, "hist_gradient_boosting, infrequent/unseen/missing categories")


@pytest.mark.parametrize("algorithm", ["random_forest", "hist_gradient_boosting"])
@pytest.mark.parametrize("task", [CLASSIFICATION, REGRESSION])
def test_forests_and_regressors_equal_scikit_learn(
    window: Window, algorithm: str, task: str, record_property: Any
) -> None:
    ts = window.training_set
    params = {"n_estimators": 30, "max_depth": 10} if algorithm == "random_forest" else {"max_iter": 80}
    model = build_pipeline(algorithm, params, 7, ts.numeric, ts.categorical, task=task)
    train = model_input(ts.train, ts.numeric, ts.categorical)
    target = ts.train[ts.target] if task != REGRESSION else ts.train["distance"] / 100 + ts.train["hour"]
    model.fit(train, target)
    _compare(model, ts.holdout.head(3000), record_property, f"{algorithm}, {task}")


def test_linear_models_keep_the_reference(window: Window) -> None:
    ts = window.training_set
    model = build_pipeline("logistic_regression", {}, 1, ts.numeric, ts.categorical)
    model.fit(model_input(ts.train, ts.numeric, ts.categorical), ts.train[ts.target])
    assert compile_model(model) is None


def test_calendar_values_equal_the_frame_calendar(window: Window) -> None:
    stamps = window.training_set.frame["event_timestamp"].dt.tz_convert("America/New_York")
    for name, of_frame in CALENDAR_FEATURES.items():
        assert of_frame(stamps).tolist() == [CALENDAR_VALUES[name](t.to_pydatetime()) for t in stamps], name


def test_the_hot_path_answers_and_logs_what_the_reference_path_does(
    shipped: Any, window: Window, monkeypatch: pytest.MonkeyPatch, record_property: Any
) -> None:
    """``Predictor.score`` compiled and not, on the same validated request rows and the same served features.

    The online store is replaced by the holdout's own point-in-time features, handed out in request order (both
    paths make one lookup per call); the real lookup is tested in ``test_features.py`` and, end to end, by the
    serving integration tests and every deployment's smoke test.
    """
    spec, settings = make_spec(params=dict(SHIPPED_PARAMS)), window.settings
    schema = request_schema(spec, settings)
    holdout = window.training_set.holdout.head(2 * MAX_ROWS)
    # The training set keeps the event time as ``event_timestamp`` and drops the flight's identifiers (which no
    # model reads): put them back as the request has them.
    holdout = holdout.assign(
        time_hour=holdout["event_timestamp"], flight=np.arange(len(holdout)) + 1, sched_dep_time=holdout["hour"] * 100
    )
    served_names = [c for c in window.training_set.features if c not in spec.features]
    served_rows = holdout[served_names].astype(object).where(holdout[served_names].notna(), None)
    cursor = [0]  # the holdout row of the first request row of the call

    def from_the_holdout(rows: list[dict[str, Any]], *, service: str, settings: Any = None) -> list[dict[str, Any]]:
        keys = spec.entity_keys  # what the real lookup answers: the row's keys, then the service's features
        return [
            {**{k: row[k] for k in keys}, **served_rows.iloc[cursor[0] + i].to_dict()} for i, row in enumerate(rows)
        ]

    monkeypatch.setattr(features_module, "online_features", from_the_holdout)
    hot, reference = Predictor(spec, shipped, 4, settings=settings), Predictor(spec, shipped, 4, compiled=False)
    assert hot.compiled is not None and reference.compiled is None
    worst = 0.0
    for start, stop in ((0, 1), (1, MAX_ROWS), (MAX_ROWS, 2 * MAX_ROWS)):
        cursor[0] = start
        rows = getattr(schema.request.model_validate(payload(schema, holdout.iloc[start:stop])), schema.collection)
        answered, expected = hot.score(rows), reference.score(rows)
        got = np.array([p.delay_probability for p in answered.predictions])  # type: ignore[attr-defined]
        want = np.array([p.delay_probability for p in expected.predictions])  # type: ignore[attr-defined]
        worst = max(worst, float(np.abs(got - want).max()))
        assert [p.delayed for p in answered.predictions] == [p.delayed for p in expected.predictions]  # type: ignore[attr-defined]
        drop = {"request_id", "logged_at", "delay_probability"}
        ours, theirs = answered.log_records(spec.name), expected.log_records(spec.name)
        assert [_record(r, drop) for r in ours] == [_record(r, drop) for r in theirs]
    record_property("predictor hot path", worst)
    print(f"Predictor.score: {len(holdout)} rows, max |hot path - reference path| = {worst:.3g}")
    assert worst <= TOLERANCE


def _record(record: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    """A log record without ``drop``, every missing value (None, NaN) as None."""
    return {k: None if v is None or v != v else v for k, v in record.items() if k not in drop}
