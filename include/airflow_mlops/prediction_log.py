"""The prediction log: every served prediction, readable by day for monitoring.

Each record holds the request id, the time, the request's inputs, the Feast features as served, the prediction
and the model version. Records are keyed by the example's local day (``date``), the partition the monitoring
DAG reads next to the day's true outcomes.

Sinks, chosen by the settings' ``predictions`` database URL (``MLOPS_PREDICTION_LOG_URL``):

- a PostgreSQL URL (the default: the ``predictions`` database of the embedded PostgreSQL in the local
  profile; required in production): one table per model, ``prediction_log_<model>``, created on first write
  (each model logs its own request fields, so two models never share a table's columns);
- ``file:///folder``: partitioned parquet, ``<folder>/<model>/date=YYYY-MM-DD/part-<time>-<id>.parquet``
  (written aside, then renamed), for a machine without any database.

:class:`PredictionLog` never blocks or fails a prediction: :meth:`PredictionLog.log` only puts records on a
bounded in-memory queue (dropping, and counting, what does not fit); a background thread writes them in
batches; a write error is logged and counted, never raised to the caller.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow_mlops.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

TABLE = "prediction_log"


def table_of(model: str) -> str:
    """The PostgreSQL table of ``model``'s prediction log (model names are lower-case identifiers)."""
    return f"{TABLE}_{model}"


def _log_url(settings: Settings, url: str | None) -> str:
    return url if url is not None else settings.database_url("predictions")


def _parquet_dir(url: str, model: str) -> Path | None:
    """The parquet folder of ``model`` when ``url`` is a ``file://`` URL, else None."""
    return Path(url.removeprefix("file://")) / model if url.startswith("file://") else None


class Sink(Protocol):
    def write(self, frame: pd.DataFrame) -> None: ...


class ParquetSink:
    """Partitioned parquet under ``root`` (a model's folder): one new file per day and flush."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for day, part in frame.groupby("date", sort=True):
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
            aside = folder / f".{name}.tmp"
            pq.write_table(pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), aside)
            os.replace(aside, folder / name)


class PostgresSink:
    """The ``prediction_log`` table of a PostgreSQL database (SQLAlchemy; the table is created on first write)."""

    def __init__(self, url: str, table: str = TABLE) -> None:
        from sqlalchemy import create_engine

        self.url = url
        self.table = table
        self.engine = create_engine(url.replace("postgres://", "postgresql://", 1), pool_pre_ping=True)

    def write(self, frame: pd.DataFrame) -> None:
        # pandas creates the table on first write; the rows go in by COPY (pandas' documented insertion method
        # for PostgreSQL): a multi-row INSERT built by SQLAlchemy held the GIL for ~150 ms per second of traffic
        # (176 records) in the serving process, against ~15 ms for COPY (BENCHMARKS.md, endpoint p99).
        frame.to_sql(self.table, self.engine, if_exists="append", index=False, method=_copy_rows, chunksize=10_000)


def _csv_value(value: Any) -> Any:
    """A value as COPY reads it into the column the first batch created: NaN as NULL, a whole float as an integer
    (pandas turns an integer column with a missing value into floats, which a ``bigint`` column refuses as text)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def _copy_rows(table: Any, conn: Any, keys: list[str], rows: Any) -> None:
    """``DataFrame.to_sql`` insertion method: ``COPY ... FROM STDIN`` in CSV (None is NULL), psycopg2's or 3's."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer).writerows([_csv_value(value) for value in row] for row in rows)
    buffer.seek(0)
    columns = ", ".join('"{}"'.format(key.replace('"', '""')) for key in keys)
    name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    sql = f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv)"
    cursor = conn.connection.cursor()
    try:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(sql, buffer)
        else:  # psycopg 3
            with cursor.copy(sql) as copy:
                copy.write(buffer.getvalue())
    finally:
        cursor.close()


def make_sink(model: str, settings: Settings | None = None, url: str | None = None) -> Sink:
    """The sink of ``url`` (default: the settings' ``predictions`` database); see the module doc."""
    url = _log_url(settings or get_settings(), url)
    folder = _parquet_dir(url, model)
    return ParquetSink(folder) if folder is not None else PostgresSink(url, table_of(model))


@dataclass
class LogStats:
    """Counters of a :class:`PredictionLog` (also exported as Prometheus metrics by the service)."""

    queued: int = 0
    written: int = 0
    dropped: int = 0  #: records refused because the queue was full
    failed: int = 0  #: records lost to write errors
    errors: list[str] = field(default_factory=list)


class PredictionLog:
    """Asynchronous, bounded prediction log writer (see the module doc)."""

    def __init__(
        self,
        sink: Sink,
        *,
        flush_seconds: float = 1.0,
        max_batch: int = 5000,
        max_queue: int = 200_000,
    ) -> None:
        self.sink = sink
        self.flush_seconds = flush_seconds
        self.max_batch = max_batch
        self.stats = LogStats()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue ``records`` for writing; never blocks, never raises."""
        for record in records:
            try:
                self._queue.put_nowait(record)
                self.stats.queued += 1
            except queue.Full:
                self.stats.dropped += 1
                if self.stats.dropped in (1, 10, 100) or self.stats.dropped % 10_000 == 0:
                    log.warning("prediction log queue full: %s records dropped so far", self.stats.dropped)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: queue still full at close; %s records not written", self._queue.qsize())
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.flush_seconds
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = ...
            if item is None:
                self._flush(batch)
                return
            if item is not ...:
                batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= self.max_batch or time.monotonic() >= deadline:
                self._flush(batch)
                batch = []
                deadline = time.monotonic() + self.flush_seconds

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        import pandas as pd

        try:
            self.sink.write(pd.DataFrame.from_records(batch))
            self.stats.written += len(batch)
        except Exception as exc:  # logging must never take the service down
            self.stats.failed += len(batch)
            message = f"{type(exc).__name__}: {exc}"
            self.stats.errors = [*self.stats.errors[-9:], message]
            log.error("prediction log: %s records not written: %s", len(batch), message)


def read_predictions(
    model: str, day: date, *, settings: Settings | None = None, url: str | None = None
) -> pd.DataFrame:
    """The logged predictions of ``model`` for examples of ``day`` (empty frame when none)."""
    import pandas as pd

    url = _log_url(settings or get_settings(), url)
    folder = _parquet_dir(url, model)
    if folder is None:
        from sqlalchemy import create_engine, text

        engine = create_engine(url.replace("postgres://", "postgresql://", 1))
        try:
            with engine.connect() as conn:
                table = table_of(model)
                if not conn.execute(text("select to_regclass(:t)"), {"t": table}).scalar():
                    return pd.DataFrame()
                return pd.read_sql(
                    # The table name is derived from a validated model name (lower-case identifier); values are bound.
                    text(f"select * from {table} where model = :m and date = :d"),  # ruff: ignore[hardcoded-sql-expression]
                    conn,
                    params={"m": model, "d": day.isoformat()},
                )
        finally:
            engine.dispose()
    folder = folder / f"date={day.isoformat()}"
    files = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
