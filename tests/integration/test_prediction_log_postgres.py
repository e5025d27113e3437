"""The prediction log's PostgreSQL sink on a real server: batch after batch, every value back as written.

A database of its own on the machine's PostgreSQL (``conftest.fresh_postgres_database``). The first batch creates
the table (pandas infers the column types); later batches go in by COPY and must fit those columns even when pandas
gives them other Python types (an integer column with a missing value becomes floats).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd

from airflow_mlops.prediction_log import PostgresSink, PredictionLog, read_predictions, table_of
from tests.integration.conftest import fresh_postgres_database

DAY = date(2013, 1, 14)


def _record(n: int, **changes: object) -> dict[str, object]:
    return {
        "request_id": f"r{n}",
        "logged_at": datetime(2026, 12, 3, 9, 0, n, tzinfo=UTC),
        "model": "m",
        "model_version": 3,
        "date": DAY.isoformat(),
        "carrier": "UA",
        "flight": 100 + n,
        "time_hour": datetime(2013, 1, 14, 5, tzinfo=UTC),
        "temp": 30.5 + n / 3,
        "plane_year": 2004,
        "delay_probability": 0.1 + n / 7,
        "delayed": n % 2 == 0,
        **changes,
    }


def test_batches_after_the_first_keep_every_record_and_value() -> None:
    first = [_record(n) for n in range(3)]
    later = [_record(3, plane_year=None, temp=None, carrier=None), _record(4), _record(5, plane_year=1998)]
    with fresh_postgres_database() as url:
        sink = PostgresSink(url, table_of("m"))
        prediction_log = PredictionLog(sink, flush_seconds=0.1)
        prediction_log.log(first)
        prediction_log.close()
        again = PredictionLog(sink, flush_seconds=0.1)  # a second writer: as a restarted server
        again.log(later)
        again.close()
        assert (prediction_log.stats.written, again.stats.written, again.stats.failed) == (3, 3, 0)
        rows = read_predictions("m", DAY, url=url).sort_values("request_id").reset_index(drop=True)
    sent = pd.DataFrame.from_records([*first, *later])
    assert rows["request_id"].tolist() == sent["request_id"].tolist()
    assert rows["delay_probability"].tolist() == sent["delay_probability"].tolist()  # floats exactly
    assert rows["delayed"].tolist() == sent["delayed"].tolist()
    assert rows["flight"].tolist() == sent["flight"].tolist()
    assert rows["plane_year"].tolist()[:3] + rows["plane_year"].tolist()[4:] == [2004, 2004, 2004, 2004, 1998]
    assert pd.isna(rows["plane_year"][3]) and pd.isna(rows["temp"][3]) and rows["carrier"][3] is None
    assert rows["temp"][:3].tolist() == sent["temp"][:3].tolist()
    assert (rows["time_hour"] == pd.Timestamp("2013-01-14T05:00:00Z")).all()
    assert (rows["logged_at"].dt.tz is not None) and rows["logged_at"][5] == pd.Timestamp(later[2]["logged_at"])
