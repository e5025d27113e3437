"""The prediction log never blocks or fails a prediction, and reads back by day."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.prediction_log import ParquetSink, PostgresSink, PredictionLog, make_sink, read_predictions
from airflow_mlops.settings import load_settings


def record(n: int, day: str = "2013-01-14") -> dict[str, object]:
    return {
        "request_id": f"r{n}",
        "logged_at": datetime(2026, 11, 22, tzinfo=UTC),
        "model": "m",
        "model_version": 3,
        "date": day,
        "carrier": "UA",
        "temp": 30.5 + n,
        "delay_probability": 0.25,
        "delayed": False,
    }


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, frame: pd.DataFrame) -> None:
        self.calls += 1
        raise ConnectionError("database is down")


class Slow:
    def __init__(self) -> None:
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        time.sleep(0.5)
        self.rows += len(frame)


def test_parquet_log_reads_back_by_day(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'predictions'}"
    settings = load_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_PREDICTION_LOG_URL": url})
    sink = make_sink("m", settings)
    assert isinstance(sink, ParquetSink) and sink.root == tmp_path / "predictions" / "m"
    log = PredictionLog(sink, flush_seconds=0.1)
    log.log([record(1), record(2), record(3, day="2013-01-15")])
    log.close()
    assert log.stats.written == 3 and log.stats.failed == 0
    day14 = read_predictions("m", date(2013, 1, 14), settings=settings)
    assert sorted(day14["request_id"]) == ["r1", "r2"]
    assert list(read_predictions("m", date(2013, 1, 15), settings=settings)["request_id"]) == ["r3"]
    assert read_predictions("m", date(2013, 1, 16), settings=settings).empty
    assert not list(sink.root.rglob("*.tmp"))  # written aside, then renamed


def test_a_failing_sink_never_reaches_the_caller() -> None:
    sink = Broken()
    log = PredictionLog(sink, flush_seconds=0.05)
    log.log([record(1), record(2)])  # must not raise
    log.close()
    assert sink.calls == 1
    assert log.stats.failed == 2 and log.stats.written == 0
    assert "database is down" in log.stats.errors[-1]


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    log = PredictionLog(Slow(), flush_seconds=0.01, max_queue=10, max_batch=5)
    started = time.perf_counter()
    log.log([record(n) for n in range(1000)])
    assert time.perf_counter() - started < 0.5  # not one sink write long: the caller never waited on it
    assert log.stats.dropped > 0 and log.stats.queued + log.stats.dropped == 1000
    log.close()
    assert log.stats.written == log.stats.queued


def test_a_database_url_means_postgres_and_the_default_is_the_embedded_database(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://u:p@127.0.0.1:1/predictions"
    settings = load_settings({"MLOPS_HOME": str(tmp_path), "MLOPS_PREDICTION_LOG_URL": url})
    assert isinstance(make_sink("m", settings), PostgresSink)
    with pytest.raises(Exception, match="airflow-mlops db start"):  # local default: the embedded PostgreSQL
        make_sink("m", load_settings({"MLOPS_HOME": str(tmp_path)}))
