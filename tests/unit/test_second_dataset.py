"""The seam, on every ``make test``: a second, synthetic dataset built only through the extension points.

``shops`` has nothing of the flights: another table (``sales``), another key (``shop``), another time zone
(Asia/Tokyo), its own suite, feature function, Feast module and model spec, all written into a temporary
project here. The engine runs it in process: land (file source) -> validate (its suite) -> features (its
function) -> materialize -> point-in-time training set -> fit -> score online, and the online scores of new
examples equal the offline ones.
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
    "quality": {"min_auc": 0.5, "slices": ["shop"]},
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
    assert result.scores.auc > 0.65, result.scores  # the shop and the basket carry real signal

    new = pd.read_csv(shops_project / f"date={NEXT_DAY.isoformat()}" / "sales.csv").head(50)
    predictor = Predictor(spec, result.model, 1, settings=settings)
    online = predictor.probabilities(new, predictor.lookup(new))
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
