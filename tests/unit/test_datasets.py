"""Dataset files (``include/datasets/<name>.yaml``): what loads, and what a bad file says (file, field, reason)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from airflow_mlops.config_files import ConfigError
from airflow_mlops.datasets import (
    DatasetNotFoundError,
    all_sources,
    dataset_spec,
    get_datasets,
    load_datasets,
    source_of,
)
from airflow_mlops.settings import PROJECT_ROOT, SettingsError, load_settings

SHIPPED = PROJECT_ROOT / "include" / "datasets" / "flights.yaml"


def write(folder: Path, name: str, **changes: object) -> Path:
    """A copy of the shipped ``flights.yaml`` as ``<folder>/<name>.yaml`` with ``changes`` applied."""
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["name"] = name
    if "tables" in changes:  # the shipped event time and feature function belong to the shipped tables
        raw.pop("features")
        raw.pop("event_time")
    raw.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_shipped_dataset_loads_with_its_tables_calendar_and_dates() -> None:
    result = load_datasets(SHIPPED.parent)
    assert result.errors == []
    flights = result.datasets["flights"]
    assert flights.table_names == ("flights", "weather")
    assert flights.required == ("flights",) and flights.main_table == "flights"
    assert flights.timezone == "America/New_York" and flights.source == "nyc_flights:Nycflights13Source"
    assert (flights.start_date, flights.end_date) == (date(2013, 1, 1), date(2013, 12, 31))
    assert flights.schedule == "@daily" and flights.max_active_runs == 8


def test_every_problem_names_the_file_the_field_and_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "datasets"
    good = write(folder, "orders", tables={"orders": {"required": True}}, timezone="Europe/Paris")
    bad = write(
        folder,
        "broken",
        timezone="Mars/Olympus",
        tables={"Orders": {"required": False}},
        schedule="every day",
        colour="blue",
    )
    dates = write(folder, "dates", start_date="2013-05-01", end_date="2013-04-01")
    mismatch = folder / "renamed.yaml"
    mismatch.write_text(good.read_text())
    (folder / "garbled.yaml").write_text("name: [unclosed\n")

    result = load_datasets(folder)
    assert sorted(result.datasets) == ["orders"]  # bad files do not hide the good one
    errors = {(e.path.name, e.field): e.reason for e in result.errors}
    assert "is not an IANA time zone" in errors[bad.name, "timezone"]
    assert "table names must match" in errors[bad.name, "tables"]
    assert "neither a cron preset" in errors[bad.name, "schedule"]
    assert "Extra inputs are not permitted" in errors[bad.name, "colour"]
    assert "end_date 2013-04-01 is before start_date 2013-05-01" in errors[dates.name, "<root>"]
    assert errors[mismatch.name, "name"] == "'orders' must match the file name 'renamed'"
    assert errors["garbled.yaml", "line 2, column 1"].startswith("not valid YAML")
    assert str(result.errors[0]).startswith(str(result.errors[0].path) + ": ")


def test_a_dataset_needs_a_required_table(tmp_path: Path) -> None:
    path = write(tmp_path, "loose", tables={"events": {"required": False}})
    [error] = load_datasets(tmp_path).errors
    assert error == ConfigError(
        path, "tables", "Value error, mark at least one table `required: true` (a day without its rows does not land)"
    )


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    assert load_datasets(tmp_path / "nowhere").errors == [
        ConfigError(tmp_path / "nowhere", "<folder>", "datasets folder does not exist")
    ]


def test_settings_find_datasets_in_their_folder_and_sources_can_be_overridden(tmp_path: Path) -> None:
    folder = tmp_path / "datasets"
    write(folder, "orders", tables={"orders": {"required": True}}, source=str(tmp_path / "deliveries"))
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DATASETS_DIR": str(folder)})
    assert sorted(get_datasets(settings)) == ["orders"]
    assert source_of("orders", settings) == str(tmp_path / "deliveries")
    assert all_sources(settings) == {"orders": str(tmp_path / "deliveries")}
    with pytest.raises(DatasetNotFoundError, match=r"unknown dataset 'flights'; known: orders \(declared in "):
        dataset_spec("flights", settings)
    with pytest.raises(SettingsError, match="no source for dataset 'flights'"):
        source_of("flights", settings)

    overridden = load_settings(
        {"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DATASETS_DIR": str(folder), "MLOPS_SOURCE_ORDERS": "s3://b/o"}
    )
    assert source_of("orders", overridden) == "s3://b/o"
    # An edited file is read again (the DAG processor and long-lived workers see the change).
    write(folder, "orders", tables={"orders": {"required": True}}, source="s3://bucket/orders", max_active_runs=2)
    assert dataset_spec("orders", settings).max_active_runs == 2


def test_columns_event_time_and_features_are_checked(tmp_path: Path) -> None:
    """Declared columns have known types, the event time is a timestamp of the main table, features name
    a module:function and only tables the dataset has."""
    folder = tmp_path / "datasets"
    trips = {"required": True, "columns": {"started": "timestamp", "port": "string", "fare": {"type": "float"}}}
    good = write(folder, "boats", tables={"trips": trips}, event_time="started")
    typo = write(folder, "typo", tables={"trips": {**trips, "columns": {"started": "datetime"}}})
    wrong = write(folder, "wrong", tables={"trips": trips}, event_time="port")
    code = write(
        folder,
        "code",
        tables={"trips": trips},
        features={"function": "boats/features.py", "tables": ["port_busy"], "lookback_days": {"orders": 3}},
    )

    result = load_datasets(folder)
    assert sorted(result.datasets) == ["boats"]
    boats = result.datasets["boats"]
    assert boats.event_time == "started" and boats.tables["trips"].columns["port"].type == "string"
    assert boats.after_event == ()
    errors = {(e.path.name, e.field): e.reason for e in result.errors}
    assert (
        "'datetime' is not a column type (int, float, string, bool, timestamp)"
        in errors[typo.name, "tables.trips.columns.started.type"]
    )
    assert (
        "event_time 'port' must be declared as a timestamp column of the main table 'trips'"
        in errors[wrong.name, "<root>"]
    )
    assert "is not a dotted path module:function" in errors[code.name, "features.function"]
    assert good.exists()


def test_the_shipped_flights_declare_their_outcomes_after_the_event() -> None:
    flights = load_datasets(SHIPPED.parent).datasets["flights"]
    assert flights.event_time == "time_hour"
    assert set(flights.after_event) == {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}
    assert flights.features is not None and flights.features.lookback_days == {"flights": 6}
