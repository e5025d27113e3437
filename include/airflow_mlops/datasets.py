"""Datasets: one YAML file per dataset under ``include/datasets/`` (``MLOPS_DATASETS_DIR``), validated by pydantic.

A dataset is a set of raw tables delivered together, one partition per day. Its file says which tables
there are and which must have rows for a day to land, the time zone of the data's local calendar, where the
data comes from by default, and the ingest schedule with its first and last day. One ``ingest_<dataset>``
DAG is generated per file; the engine reads nothing about a dataset from anywhere else. A file that does not
load is reported with file, field and reason (:func:`load_datasets`), and the other datasets still load.
Imports only PyYAML and pydantic beside the standard library: DAG files import it at parse time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_mlops.config_files import ConfigError, load_model_folder
from airflow_mlops.settings import SOURCE_PREFIX, Settings, SettingsError, get_settings
from airflow_mlops.user_code import is_dotted_path
from airflow_mlops.zones import partition_days, partition_path

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
#: Airflow's cron presets that run once a day at most (a dataset is partitioned by day).
_PRESETS = {"@daily", "@weekly", "@monthly", "@yearly", "@once"}
_CRON = re.compile(r"^\S+(\s+\S+){4}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Column types a dataset file may declare, and the Python type a request field of that type gets.
COLUMN_TYPES = ("int", "float", "string", "bool", "timestamp")


class ColumnSpec(_Strict):
    """One declared column: its type, and whether it is only known after the example's event time."""

    type: str = Field(description=f"one of {', '.join(COLUMN_TYPES)}")
    after_event: bool = Field(
        default=False, description="only known after the event (an outcome): never a feature, may feed a label"
    )
    nullable: bool = Field(default=False, description="a request may leave it out or send null (features: missing)")
    min: float | None = Field(default=None, description="smallest value a request may send (numbers)")
    max: float | None = Field(default=None, description="largest value a request may send (numbers)")
    pattern: str | None = Field(default=None, description="regular expression a request's value must match (text)")
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value not in COLUMN_TYPES:
            raise ValueError(f"{value!r} is not a column type ({', '.join(COLUMN_TYPES)})")
        return value


class TableSpec(_Strict):
    """One raw table of a dataset, delivered as ``<table>.csv`` or ``<table>.parquet`` for each day."""

    required: bool = Field(default=False, description="a day without any row of this table does not land")
    description: str = ""
    columns: dict[str, ColumnSpec] = Field(
        default_factory=dict,
        description="declared columns and their types (the event time, keys, request fields, outcomes); "
        "a bare type stands for {type: <type>}",
    )
    key: tuple[str, ...] = Field(
        default=(), description="columns that identify a row within its day (predictions meet their outcomes by it)"
    )

    @model_validator(mode="after")
    def _declared_key(self) -> TableSpec:
        undeclared = [column for column in self.key if column not in self.columns]
        if undeclared:
            raise ValueError(f"key column(s) {', '.join(undeclared)} must be declared under columns")
        return self

    @field_validator("columns", mode="before")
    @classmethod
    def _bare_types(cls, value: object) -> object:
        if isinstance(value, dict):
            return {name: {"type": spec} if isinstance(spec, str) else spec for name, spec in value.items()}
        return value


class FeaturesSpec(_Strict):
    """How a dataset's feature tables are computed: the user's function and what it reads and returns."""

    function: str = Field(
        description="module:function called with the day's validated tables (airflow_mlops.features.FeatureInputs); "
        "modules are found in the datasets folder first"
    )
    tables: tuple[str, ...] = Field(min_length=1, description="the feature tables it returns, one Feast view each")
    lookback_days: dict[str, int] = Field(
        default_factory=dict,
        description="table -> N: the function also receives that table over the N validated days before the day",
    )

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if not is_dotted_path(value):
            raise ValueError(f"{value!r} is not a dotted path module:function (for example my_features:compute)")
        return value

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not re.match(_NAME, name)]
        if bad:
            raise ValueError(f"feature table names must match {_NAME}: {', '.join(bad)}")
        if len(set(value)) != len(value):
            raise ValueError("a feature table is listed twice")
        return value

    @field_validator("lookback_days")
    @classmethod
    def _lookback(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {table: days for table, days in value.items() if not 0 <= days <= 366}
        if bad:
            raise ValueError(f"lookback days must be 0..366: {bad}")
        return value


class DatasetSpec(_Strict):
    """A dataset's declaration: its tables, calendar, default source and ingest schedule."""

    name: str = Field(pattern=_NAME, description="the file's name; names DAGs, folders and assets")
    description: str = ""
    tables: dict[str, TableSpec] = Field(min_length=1)
    timezone: str = Field(default="UTC", description="IANA time zone of the data's local calendar columns")
    partition: str = Field(default="daily", pattern="^daily$", description="one partition per day (only daily)")
    source: str = Field(
        min_length=1,
        description="where days come from unless MLOPS_SOURCE_<NAME> says otherwise: a folder or s3:// prefix of "
        "date=YYYY-MM-DD/<table>.csv|parquet, or a replay loader by dotted path module:Class (called with the "
        "cache folder)",
    )
    schedule: str = Field(default="@daily", description="the ingest DAG's schedule: a cron preset or expression")
    start_date: date = Field(description="first day the ingest DAG covers")
    end_date: date | None = Field(default=None, description="last day it covers (none: open-ended)")
    max_active_runs: int = Field(default=8, ge=1, le=64, description="days the ingest DAG runs side by side")
    event_time: str | None = Field(
        default=None,
        description="the main table's timestamp column saying when each example happens (UTC if no offset): "
        "feature lookups are point-in-time at this instant; calendar features derive from it in `timezone`",
    )
    features: FeaturesSpec | None = Field(default=None, description="the feature function and its tables")

    @field_validator("tables")
    @classmethod
    def _table_names(cls, value: dict[str, TableSpec]) -> dict[str, TableSpec]:
        bad = [name for name in value if not re.match(_NAME, name)]
        if bad:
            raise ValueError(f"table names must match {_NAME} (lower case, digits, underscores): {', '.join(bad)}")
        if not any(table.required for table in value.values()):
            raise ValueError("mark at least one table `required: true` (a day without its rows does not land)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (for example UTC or Europe/Paris)") from None
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        value = value.strip()
        if value not in _PRESETS and not _CRON.match(value):
            raise ValueError(f"{value!r} is neither a cron preset ({', '.join(sorted(_PRESETS))}) nor 5 cron fields")
        return value

    @model_validator(mode="after")
    def _dates(self) -> DatasetSpec:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @model_validator(mode="after")
    def _event_time(self) -> DatasetSpec:
        if self.event_time is None:
            return self
        declared = self.tables[self.main_table].columns.get(self.event_time)
        if declared is None or declared.type != "timestamp":
            raise ValueError(
                f"event_time {self.event_time!r} must be declared as a timestamp column of the main table "
                f"{self.main_table!r} (tables.{self.main_table}.columns.{self.event_time}: timestamp)"
            )
        return self

    @property
    def after_event(self) -> tuple[str, ...]:
        """Columns of the main table only known after the event (never features)."""
        return tuple(name for name, col in self.tables[self.main_table].columns.items() if col.after_event)

    @model_validator(mode="after")
    def _lookback_tables(self) -> DatasetSpec:
        unknown = sorted(set(self.features.lookback_days) - set(self.tables)) if self.features else []
        if unknown:
            raise ValueError(f"features.lookback_days names table(s) the dataset does not have: {', '.join(unknown)}")
        return self

    @property
    def table_names(self) -> tuple[str, ...]:
        """Every table, in the file's order."""
        return tuple(self.tables)

    @property
    def required(self) -> tuple[str, ...]:
        """The tables that must have rows for a day to land, in the file's order."""
        return tuple(name for name, table in self.tables.items() if table.required)

    @property
    def main_table(self) -> str:
        """The first required table: the one whose days count as the dataset's days (windows, replay)."""
        return self.required[0]


class DatasetNotFoundError(KeyError):
    """A dataset was named that no valid dataset file declares."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class DatasetSet:
    """The result of loading a folder of dataset files: the valid ones by name, and the errors of the rest."""

    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)


def load_datasets(datasets_dir: Path | None = None) -> DatasetSet:
    """Load every ``*.yaml`` dataset file in ``datasets_dir`` (default: settings); bad files do not hide good ones."""
    loaded, errors = load_model_folder(datasets_dir or get_settings().datasets_dir, DatasetSpec, "datasets")
    return DatasetSet(datasets=loaded, errors=errors)


_cache: dict[Path, tuple[tuple[tuple[str, int, int], ...], dict[str, DatasetSpec]]] = {}


def get_datasets(settings: Settings | None = None) -> dict[str, DatasetSpec]:
    """The valid datasets of the active settings' folder, by name (reloaded when a file changes)."""
    folder = (settings or get_settings()).datasets_dir
    files = sorted(folder.glob("*.y*ml")) if folder.is_dir() else []
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    hit = _cache.get(folder)
    if hit is None or hit[0] != stamp:
        hit = (stamp, load_datasets(folder).datasets)
        _cache[folder] = hit
    return hit[1]


def dataset_spec(name: str, settings: Settings | None = None) -> DatasetSpec:
    """The dataset ``name``; :class:`DatasetNotFoundError` names the known ones and where they are declared."""
    settings = settings or get_settings()
    known = get_datasets(settings)
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}; known: {listed} (declared in {settings.datasets_dir}/<name>.yaml)"
        )
    return known[name]


def validated_example_days(dataset: str, settings: Settings | None = None) -> list[date]:
    """Days whose main table (one row per example) passed validation, oldest first."""
    settings = settings or get_settings()
    return partition_days(settings.validated_dir, dataset, dataset_spec(dataset, settings).main_table)


def validated_examples(dataset: str, day: date, settings: Settings | None = None) -> Path:
    """The validated file of the dataset's main table for ``day`` (it may not exist)."""
    settings = settings or get_settings()
    return partition_path(settings.validated_dir, dataset, dataset_spec(dataset, settings).main_table, day)


def source_of(dataset: str, settings: Settings | None = None) -> str:
    """Where the raw data of ``dataset`` comes from: ``MLOPS_SOURCE_<DATASET>``, else its file's ``source``."""
    settings = settings or get_settings()
    if dataset in settings.source_overrides:
        return settings.source_overrides[dataset]
    try:
        return dataset_spec(dataset, settings).source
    except DatasetNotFoundError as exc:
        raise SettingsError(
            f"no source for dataset {dataset!r}: {exc}; declare it there or set {SOURCE_PREFIX}{dataset.upper()}"
        ) from None


def all_sources(settings: Settings | None = None) -> dict[str, str]:
    """The source of every declared dataset (and of every ``MLOPS_SOURCE_<DATASET>`` given)."""
    settings = settings or get_settings()
    return {**{name: spec.source for name, spec in get_datasets(settings).items()}, **settings.source_overrides}
