"""Feast definitions of the electricity example (dataset ``vic_electricity``): one entity, one view, one service.

``region_daily`` is written by ``include/datasets/vic_electricity.py:compute_features`` under
``<data>/features/vic_electricity/region_daily`` (one row per region and day, stamped at the start of the next
market day); the model ``electricity_demand`` serves ``electricity_demand_v1``.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, String

DATA = (
    Path(os.environ["MLOPS_DATA_DIR"])
    if os.environ.get("MLOPS_DATA_DIR")
    else Path(os.environ.get("MLOPS_HOME", ".mlops")) / "data"
)

region = Entity(name="region", join_keys=["region"], value_type=ValueType.STRING, description="market region")

region_daily = FeatureView(
    name="region_daily",
    entities=[region],
    ttl=timedelta(days=2),  # a day's figures serve the next day; a missing day leaves them missing after that
    schema=[
        Field(name="region", dtype=String),
        Field(name="demand_mean_1d", dtype=Float64, description="mean demand of the day before, GW"),
        Field(name="demand_max_1d", dtype=Float64, description="peak half-hourly demand of the day before, GW"),
        Field(name="demand_mean_7d", dtype=Float64, description="mean demand of the 7 days before, GW"),
        Field(name="demand_same_day_last_week", dtype=Float64, description="mean demand a week before the day, GW"),
        Field(name="temperature_max_1d", dtype=Float64, description="highest temperature of the day before, C"),
        Field(name="temperature_mean_1d", dtype=Float64, description="mean temperature of the day before, C"),
    ],
    source=FileSource(
        name="region_daily_source",
        path=str(DATA / "features" / "vic_electricity" / "region_daily"),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
    ),
    online=True,
)

electricity_demand_v1 = FeatureService(name="electricity_demand_v1", features=[region_daily])
