"""The seam, on every ``make test``: a second, synthetic dataset built only through the extension points.

``shops`` has nothing of the flights: another table (``sales``), another key (``shop``), another time zone
(Asia/Tokyo), its own suite, feature function, Feast module and model spec, all written into a temporary
project here. The engine runs it in process: land (file source) -> validate (its suite) -> features (its
function) -> materialize -> point-in-time training set -> fit -> score online, and the online scores of new
examples equal the offline ones. A regression model on the same data (a look-ahead aggregate label: the shop's
returns the next day) goes the same way to a gated version and an answer carrying the predicted value.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import yaml

from airflow_mlops.features import build_features, entity_frame, historical_features, materialize_day
from airflow_mlops.gate import check_partition
from airflow_mlops.ingest import land_partition
from airflow_mlops.serving import Predictor
from airflow_mlops.settings import get_settings
from airflow_mlops.specs import load_specs
from airflow_mlops.training import build_training_set, fit, model_input, serving_input

DAYS = [date(2024, 3, 1) + timedelta(days=n) for n in range(10)]
NEXT_DAY = DAYS[-1] + timedelta(days=1)
SHOPS = {"ginza": 0.1, "shibuya": 0.3, "ueno": 0.6}  # share of sales returned, before the basket's effect
TOKYO = ZoneInfo("Asia/Tokyo")

DATASET = {
    "name": "shops",
    "description": "Sales of three shops (synthetic: the seam's test).",
    "tables": {
        "sales": {
            "required": True,
            "columns": {
                "sold_at": "timestamp",
                "shop": "string",
                "basket": "float",
                "returned": {"type": "float", "after_event": True},
            },
        }
    },
    "timezone": "Asia/Tokyo",
    "event_time": "sold_at",
    "source": "",  # set per test: the deliveries folder
    "start_date": DAYS[0].isoformat(),
    "features": {"function": "shops_code:compute", "tables": ["shop_recent"], "lookback_days": {"sales": 2}},
}

SUITE = """
expectations:
  - expect_table_row_count_to_be_between: {min_value: 1}
  - expect_column_to_exist: {column: sold_at}
  - expect_column_values_to_not_be_null: {column: shop}
  - expect_column_values_to_be_in_set: {column: shop, value_set: [ginza, shibuya, ueno]}
  - expect_column_values_to_be_between: {column: basket, min_value: 0, max_value: 1000}
"""

CODE = '''
import pandas as pd


def compute(inputs):
    """Per shop over the day and the two before it: sales and the share returned, served from tomorrow."""
    sales = inputs.window["sales"]
    recent = sales.groupby("shop").agg(sales_3d=("shop", "size"), return_rate_3d=("returned", "mean"))
    recent = recent.reset_index().astype({"sales_3d": "int64", "return_rate_3d": "float64"})
    recent["event_timestamp"] = inputs.served_from
    return {"shop_recent": recent}


def returns_tomorrow(inputs):
    """A regression label that looks ahead and aggregates: how many sales the example's shop gets back tomorrow."""
    sales = inputs.tables["sales"]
    per_day = sales[sales["returned"] >= 1].groupby(["shop", "partition_date"]).size()
    examples = inputs.examples
    tomorrow = (pd.to_datetime(examples["partition_date"]) + pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d")
    return pd.Series([float(per_day.get((s, t), 0)) for s, t in zip(examples["shop"], tomorrow)], index=examples.index)


def busier_tomorrow(inputs):
    """A label that looks ahead: the example's shop sells more the next day than on the example's day."""
    per_day = inputs.tables["sales"].groupby(["shop", "partition_date"]).size()
    examples = inputs.examples
    tomorrow = (pd.to_datetime(examples["partition_date"]) + pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d")
    return pd.Series(
        [
            per_day.get((shop, later), 0) > per_day.get((shop, day), 0)
            for shop, day, later in zip(examples["shop"], examples["partition_date"], tomorrow)
        ],
        index=examples.index,
    )
'''

FEAST = """
import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String

DATA = Path(os.environ["MLOPS_DATA_DIR"]) if os.environ.get("MLOPS_DATA_DIR") else Path(
    os.environ["MLOPS_HOME"]
) / "data"

shop = Entity(name="shop", join_keys=["shop"], value_type=ValueType.STRING)
shop_recent = FeatureView(
    name="shop_recent",
    entities=[shop],
    ttl=timedelta(days=2),
    schema=[
        Field(name="shop", dtype=String),
        Field(name="sales_3d", dtype=Int64),
        Field(name="return_rate_3d", dtype=Float64),
    ],
    source=FileSource(
        name="shop_recent_source",
        path=str(DATA / "features" / "shops" / "shop_recent"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
    ),
    online=True,
)
shops_v1 = FeatureService(name="shops_v1", features=[shop_recent])
"""

SPEC = {
    "name": "returns",
    "dataset": "shops",
    "entity_keys": ["shop"],
    "feature_service": "shops_v1",
    "target": {"rule": "returned >= 1", "name": "returned_flag"},
    "features": ["hour", "day_of_week", "basket"],
    "algorithm": {"name": "hist_gradient_boosting", "params": {"max_iter": 50}, "seed": 7},
    "training": {"window_days": 10, "holdout_days": 2},
    "quality": {"bar": 0.5, "slices": ["shop"]},
}


LOOK_AHEAD = {
    **SPEC,
    "name": "busier",
    "target": {"function": "shops_code:busier_tomorrow", "horizon_days": 1, "name": "busier_tomorrow"},
    "training": {"window_days": 8, "holdout_days": 2},
}


REGRESSION = {
    **SPEC,
    "name": "returns_next_day",
    "task": "regression",
    "target": {"function": "shops_code:returns_tomorrow", "horizon_days": 1, "name": "returns_tomorrow"},
    "features": ["hour", "basket"],
    "training": {"window_days": 9, "holdout_days": 2},
    "quality": {"max_slice_drop": 5.0, "slices": ["shop"]},  # RMSE by default; no bar: must beat the mean
    "output": {"value": "expected_returns"},
}


def sales_of(day: date, rng: np.random.Generator, rows: int = 300) -> pd.DataFrame:
    """One day of sales: the return probability depends on the shop and on the basket."""
    shop = rng.choice(list(SHOPS), size=rows)
    basket = rng.gamma(2.0, 40.0, size=rows).round(2)
    chance = np.clip(np.array([SHOPS[s] for s in shop]) + (basket - 80) / 400, 0.02, 0.95)
    seconds = rng.integers(9 * 3600, 21 * 3600, size=rows)  # opening hours, Tokyo time
    opening = datetime(day.year, day.month, day.day, tzinfo=TOKYO)
    sold_at = [(opening + timedelta(seconds=int(s))).astimezone(UTC).isoformat() for s in seconds]
    returned = (rng.random(rows) < chance).astype(float)
    return pd.DataFrame({"sold_at": sold_at, "shop": shop, "basket": basket, "returned": returned})


@pytest.fixture
def shops_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project of its own: dataset file, suite, feature code, Feast module, model spec and deliveries."""
    datasets, repo, models, deliveries = (tmp_path / name for name in ("datasets", "repo", "models", "deliveries"))
    for folder in (datasets / "suites" / "shops", repo, models):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(2024)
    for day in [*DAYS, NEXT_DAY]:
        (deliveries / f"date={day.isoformat()}").mkdir(parents=True)
        sales_of(day, rng).to_csv(deliveries / f"date={day.isoformat()}" / "sales.csv", index=False)
    (datasets / "shops.yaml").write_text(yaml.safe_dump({**DATASET, "source": str(deliveries)}))
    (datasets / "suites" / "shops" / "sales.yaml").write_text(SUITE)
    (datasets / "shops_code.py").write_text(textwrap.dedent(CODE))
    (repo / "shops.py").write_text(textwrap.dedent(FEAST))
    (models / "returns.yaml").write_text(yaml.safe_dump(SPEC))
    (models / "busier.yaml").write_text(yaml.safe_dump(LOOK_AHEAD))
    (models / "returns_next_day.yaml").write_text(yaml.safe_dump(REGRESSION))
    monkeypatch.setenv("MLOPS_DATASETS_DIR", str(datasets))
    monkeypatch.setenv("MLOPS_FEATURE_REPO", str(repo))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    return deliveries


def test_a_second_dataset_runs_from_landing_to_online_scores(shops_project: Path) -> None:
    settings = get_settings()
    for day in DAYS:
        landed = land_partition("shops", day, settings=settings)
        assert landed.rows == {"sales": 300}
        published = check_partition("shops", day, settings=settings)
        assert published.paths["sales"].endswith(f"validated/shops/sales/date={day.isoformat()}/part-0.parquet")
        built = build_features("shops", day, settings=settings)
        assert built.rows == {"shop_recent": 3}
        materialize_day("shops", day, settings=settings)
    assert not (settings.landing_dir / "flights").exists()

    # Tokyo is UTC+9: the build of a day serves its rows from 15:00 UTC of that day.
    assert built.served_from == f"{DAYS[-1].isoformat()}T15:00:00+00:00"
    assert built.window_days == tuple(d.isoformat() for d in DAYS[-3:])

    specs = load_specs(settings.models_dir)
    assert specs.errors == []
    spec = specs.specs["returns"]
    training_set = build_training_set(spec, DAYS[-1], settings=settings)
    assert len(training_set.frame) == 300 * len(DAYS)
    assert {"hour", "day_of_week", "basket", "sales_3d", "return_rate_3d"} <= set(training_set.features)
    first_day = training_set.frame[training_set.frame["partition_date"] == DAYS[0].isoformat()]
    assert first_day["sales_3d"].isna().all()  # nothing is served before the first build's day is over
    later = training_set.frame[training_set.frame["partition_date"] == DAYS[5].isoformat()]
    assert later["sales_3d"].notna().all()

    result = fit(spec, training_set)
    assert result.scores["auc"] > 0.65, result.scores  # the shop and the basket carry real signal

    new = pd.read_csv(shops_project / f"date={NEXT_DAY.isoformat()}" / "sales.csv").head(50)
    predictor = Predictor(spec, result.model, 1, settings=settings)
    online = predictor.scores(new, predictor.lookup(new))
    joined = historical_features(entity_frame(new, ["shop"], "sold_at"), service="shops_v1", settings=settings)
    served = joined.drop(columns=["row_id", "shop", "event_timestamp"])
    offline_input = serving_input(spec, new, served, predictor.numeric, predictor.categorical)
    offline = result.model.predict_proba(model_input(offline_input, predictor.numeric, predictor.categorical))[:, 1]
    assert np.abs(online - offline).max() < 1e-9
    last_three = (
        pd.concat(pd.read_csv(shops_project / f"date={day.isoformat()}" / "sales.csv") for day in DAYS[-3:])
        .groupby("shop")
        .size()
    )
    assert predictor.lookup(new)["sales_3d"].tolist() == new["shop"].map(last_three).tolist()  # the last build


def test_a_label_that_looks_ahead_waits_for_its_horizon(shops_project: Path) -> None:
    """``busier_tomorrow`` reads the day after each example: the last day's window waits for the next day."""
    from airflow_mlops.pipeline import new_window_due, resolve_window_end
    from airflow_mlops.training import TrainingError, horizon_missing

    settings = get_settings()
    for day in DAYS:
        land_partition("shops", day, settings=settings)
        check_partition("shops", day, settings=settings)
        build_features("shops", day, settings=settings)
    spec = load_specs(settings.models_dir).specs["busier"]

    with pytest.raises(TrainingError, match=r"looks 1 day\(s\) ahead of 2024-03-10; 1 of those days are not"):
        build_training_set(spec, DAYS[-1], settings=settings)
    assert horizon_missing(spec, DAYS[-1], settings) == [NEXT_DAY]
    # Ingesting a day completes the labels of the window ending the day before it: that one is announced and
    # trained, never the window ending on the day itself.
    due = new_window_due(spec, DAYS[-1], [], settings)
    assert due.due and due.reason.startswith("window 2024-03-02..2024-03-09 is complete and new"), due.reason
    assert resolve_window_end(spec, None, [due.event_extra()], settings) == DAYS[-2]

    training_set = build_training_set(spec, DAYS[-2], settings=settings)
    sales = {
        day: pd.read_csv(shops_project / f"date={day.isoformat()}" / "sales.csv").groupby("shop").size() for day in DAYS
    }
    frame = training_set.frame
    for day in (DAYS[0], DAYS[-2]):
        rows = frame[frame["partition_date"] == day.isoformat()]
        expected = rows["shop"].map(lambda shop, d=day: sales[d + timedelta(days=1)][shop] > sales[d][shop])
        assert rows["busier_tomorrow"].tolist() == expected.astype(int).tolist()
    assert training_set.target_rule == "shops_code:busier_tomorrow(...), looking 1 day(s) ahead"


def test_a_regression_model_with_a_look_ahead_aggregate_label_is_gated_and_answers_a_value(
    shops_project: Path,
) -> None:
    """Regression through the same seams: the label function aggregates tomorrow's returns per shop; the
    regressor is scored in RMSE/MAE/R2, gated against the no-skill baseline, and answers with ``output.value``."""
    from airflow_mlops.evaluation import gate
    from airflow_mlops.serving import request_schema

    settings = get_settings()
    for day in [*DAYS, NEXT_DAY]:
        land_partition("shops", day, settings=settings)
        check_partition("shops", day, settings=settings)
        build_features("shops", day, settings=settings)
        materialize_day("shops", day, settings=settings)
    spec = load_specs(settings.models_dir).specs["returns_next_day"]
    assert (spec.task, spec.metric.name, spec.score_field, spec.label_field) == (
        "regression",
        "rmse",
        "expected_returns",
        None,
    )
    training_set = build_training_set(spec, DAYS[-1], settings=settings)  # the horizon (NEXT_DAY) has landed
    frame = training_set.frame
    returns = {
        day: pd.read_csv(shops_project / f"date={day.isoformat()}" / "sales.csv")
        .query("returned >= 1")
        .groupby("shop")
        .size()
        for day in [*DAYS, NEXT_DAY]
    }
    last = frame[frame["partition_date"] == DAYS[-1].isoformat()]
    assert last["returns_tomorrow"].tolist() == last["shop"].map(returns[NEXT_DAY]).astype(float).tolist()

    result = fit(spec, training_set)
    scores = result.scores
    assert scores.metric == "rmse" and scores.primary == scores["rmse"] and scores["r2"] > 0.5, scores
    assert set(scores.slices["shop"]) == set(SHOPS)
    decision = gate(spec, scores, None)
    assert decision.promote and decision.reasons[0].startswith("R2 0."), decision.reasons
    again = gate(spec, scores, scores)  # the same model as champion: no improvement, allowed at 0
    assert again.promote and "RMSE improvement +0.000 >= 0" in again.reasons[1], again.reasons

    new = pd.read_csv(shops_project / f"date={NEXT_DAY.isoformat()}" / "sales.csv").head(20)
    predictor = Predictor(spec, result.model, 3, settings=settings)
    schema = request_schema(spec, settings)
    body = {"sales": new[["sold_at", "shop", "basket"]].to_dict("records")}
    rows = schema.request.model_validate(body).sales  # type: ignore[attr-defined]
    answered = predictor.score(rows)
    response = schema.response.model_validate({"predictions": [p.model_dump() for p in answered.predictions]})
    first = response.predictions[0].model_dump()  # type: ignore[attr-defined]
    assert set(first) == {"expected_returns", "model_version", "request_id"} and first["model_version"] == 3
    online = np.array([p.expected_returns for p in answered.predictions])  # type: ignore[attr-defined]
    # The hot path (the compiled model, no frames) next to the scikit-learn reference on the same rows and features.
    assert predictor.compiled is not None
    inputs, served = pd.DataFrame(answered.inputs), pd.DataFrame(answered.served)
    offline = result.model.predict(serving_input(spec, inputs, served, predictor.numeric, predictor.categorical))
    assert np.abs(online - offline).max() < 1e-9
    by_shop = pd.Series(online, index=new["shop"]).groupby(level=0).mean()
    assert by_shop["ueno"] > by_shop["ginza"]  # ueno returns most, ginza least
    assert {"expected_returns"} <= set(answered.log_records("returns_next_day")[0])
