"""The `airflow-mlops` console script: ingest with progress, status as JSON, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from airflow_mlops.cli import main
from airflow_mlops.settings import PROJECT_ROOT

from .conftest import NycTables


def test_ingest_lands_each_day_and_status_reports_it(linked_home: Path, nyc: NycTables) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", "--start", "2013-02-27", "--end", "2013-03-01"])
    assert result.exit_code == 2 and "give --dataset: 2 datasets are configured (flights, vic_electricity)" in (
        result.output
    )
    result = runner.invoke(main, ["ingest", "--dataset", "flights", "--start", "2013-02-27", "--end", "2013-03-01"])
    assert result.exit_code == 0, result.output
    assert "Landed 3 day(s)" in result.output and " flights rows " in result.output
    for day in ("2013-02-27", "2013-02-28", "2013-03-01"):
        landed = pd.read_parquet(
            linked_home / "data" / "landing" / "flights" / "flights" / f"date={day}" / "part-0.parquet"
        )
        assert len(landed) == len(nyc.day("flights", pd.Timestamp(day).date()))

    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["mlops_home"] == str(linked_home)
    # The unit tests' stores are files (tests/unit/conftest.py); a database password would be masked.
    assert report["databases"]["mlflow"] == f"sqlite:///{linked_home / 'mlflow.db'}"
    assert report["embedded_postgres"]["running"] is False
    assert report["models"]["flight_delay"]["feature_service"] == "flight_delay_v1"
    assert report["landing"]["flights.flights"] == {"count": 3, "first": "2013-02-27", "last": "2013-03-01"}
    assert report["endpoints"] == {}
    assert report["spec_errors"] == []


def test_status_names_an_invalid_spec_and_keeps_the_good_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml", models)
    (models / "broken.yaml").write_text(
        (models / "flight_delay.yaml")
        .read_text()
        .replace("name: flight_delay", "name: broken")
        .replace("window_days: 59", "window_days: many")
    )
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert list(report["models"]) == ["flight_delay"]
    [error] = report["spec_errors"]
    assert "broken.yaml: training.window_days:" in error and "integer" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--start", "2013-13-01", "--end", "2013-01-02"], "'2013-13-01' is not a date"),
        (["ingest", "--dataset", "flights", "--start", "2013-01-05", "--end", "2013-01-02"], "is before --start"),
        (["ingest", "--start", "2013-01-01", "--end", "2013-01-01", "--dataset", "trains"], "unknown dataset"),
    ],
)
def test_bad_arguments_get_a_clear_error(linked_home: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output
    assert not (linked_home / "data" / "landing").exists()


def test_bad_profile_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PROFILE", "staging")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code != 0
    assert "MLOPS_PROFILE='staging'" in result.output


def test_backfill_without_airflow_says_how_to_start_it() -> None:
    result = CliRunner().invoke(
        main, ["backfill", "--dag", "ingest_flights", "--start", "2013-01-01", "--end", "2013-01-02"]
    )
    assert result.exit_code != 0
    assert "airflow-mlops airflow start" in result.output
