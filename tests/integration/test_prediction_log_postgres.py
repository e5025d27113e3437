"""The production prediction log: one ``prediction_log_<model>`` table per model on the machine's PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from airflow_mlops.prediction_log import PostgresSink, PredictionLog, make_sink, read_predictions
from tests.integration.conftest import fresh_postgres_database

pytestmark = pytest.mark.integration


def test_prediction_log_table_in_postgres() -> None:
    with fresh_postgres_database() as url:
        assert read_predictions("flight_delay", date(2013, 1, 14), url=url).empty  # no table yet
        sink = make_sink("flight_delay", url=url)
        assert isinstance(sink, PostgresSink)
        log = PredictionLog(sink, flush_seconds=0.05)
        rows = [
            {
                "request_id": f"r{n}",
                "logged_at": datetime(2026, 11, 22, tzinfo=UTC),
                "model": "flight_delay",
                "model_version": 2,
                "date": "2013-01-14" if n < 3 else "2013-01-15",
                "carrier": "B6",
                "temp": 20.0 + n,
                "delay_probability": 0.1 * n,
                "delayed": n >= 5,
            }
            for n in range(5)
        ]
        log.log(rows[:2])
        log.log(rows[2:])
        log.close()
        assert log.stats.written == 5 and log.stats.failed == 0
        day = read_predictions("flight_delay", date(2013, 1, 14), url=url)
        assert sorted(day["request_id"]) == ["r0", "r1", "r2"]
        assert list(day.sort_values("request_id")["temp"]) == [20.0, 21.0, 22.0]
        assert read_predictions("other_model", date(2013, 1, 14), url=url).empty
        # Another model logs other request fields into a table of its own; neither disturbs the other.
        other = PredictionLog(make_sink("basket_value", url=url), flush_seconds=0.05)
        other.log([{"request_id": "b0", "model": "basket_value", "date": "2013-01-14", "store": "S1", "value": 3.5}])
        other.close()
        assert other.stats.written == 1 and other.stats.failed == 0
        assert list(read_predictions("basket_value", date(2013, 1, 14), url=url)["store"]) == ["S1"]
        assert len(read_predictions("flight_delay", date(2013, 1, 14), url=url)) == 3
        sink.engine.dispose()
