"""Features: build feature tables from validated data, keep Feast applied, materialize, look features up.

The daily chain is ``land -> validate -> features``, and the ``features`` task builds, then materializes.
This module holds those two steps and the lookups that training and serving use; the Feast definitions
themselves live in ``feature_repo/<dataset>.py`` (declarative, ``feast`` only).

Feature tables (partitioned parquet under ``Settings.features_dir``, read by Feast's DuckDB offline store),
one folder per dataset and table, one partition per day::

    <features>/<dataset>/<table>/date=YYYY-MM-DD/part-0.parquet

What goes into them is the project's: the dataset file names a function (``features.function``) and the
tables it returns (``features.tables``), and :func:`build_features` calls it with the day's validated tables
(:class:`FeatureInputs`, the fixed contract), checks what it returns (the declared tables, an
``event_timestamp`` on every row, nothing stamped after the day's end on the dataset's local calendar) and
writes the day's files aside, then renames them into place together (idempotent, atomic, touching only its
own partitions). The Feast views of the same names are declared in ``feature_repo/<dataset>.py``.

Feast configuration: for the ``local`` profile the library builds the ``RepoConfig`` from
``feature_repo/feature_store.yaml`` with the SQL registry on the ``feast`` database of the settings (the
embedded PostgreSQL by default) and the SQLite online store under ``Settings.feast_dir`` (so a custom
``MLOPS_HOME`` is always honoured), and writes that configuration (0600: it holds the registry's password) to
``$MLOPS_HOME/feast/feature_store.yaml`` for the CLI (``feast -c feature_repo -f <that file> serve``). The
``production`` profile loads ``feature_store.production.yaml`` (SQL registry on PostgreSQL, Redis online
store) whose variables are listed in :data:`PRODUCTION_VARIABLES`. :func:`ensure_applied` applies the
definitions whenever the registry lacks them or holds another version of them (a fingerprint tag on the
feature services), so neither the DAG nor a user has to run ``feast apply`` first.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import threading
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.datasets import DatasetNotFoundError, dataset_spec, source_of
from airflow_mlops.locks import file_lock
from airflow_mlops.settings import PROJECT_ROOT, Profile, Settings, get_settings
from airflow_mlops.user_code import UserCodeError, load_callable
from airflow_mlops.zones import file_sha256, partition_path, write_parquet_together

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore
    from feast.repo_config import RepoConfig

log = logging.getLogger(__name__)

#: The declarative Feast repository of the checkout (its configuration templates; definitions: Settings.feature_repo).
FEATURE_REPO = PROJECT_ROOT / "feature_repo"
LOCAL_YAML = FEATURE_REPO / "feature_store.yaml"
PRODUCTION_YAML = FEATURE_REPO / "feature_store.production.yaml"
#: Where the local profile's rendered configuration is written for the CLI (under ``Settings.feast_dir``).
CLI_YAML_NAME = "feature_store.yaml"
ONLINE_STORE_FILE = "online_store.db"

#: Variables of the production profile (read by ``feature_store.production.yaml``).
PRODUCTION_VARIABLES = ("MLOPS_FEAST_REGISTRY_URL", "MLOPS_FEAST_REDIS_URL")
#: Optional: overrides the Feast project name of the production profile (isolates test runs).
PROJECT_VARIABLE = "MLOPS_FEAST_PROJECT"
#: What the production profile's Redis client gets unless its connection string says otherwise: 2 s to connect,
#: 2 s per read, no retry inside a lookup. By default redis-py waits forever for a read, and retries 3 times with
#: backoff: a lookup on a Redis that stopped answering took 15 s there (measured by the fault suite), past the
#: clients' timeouts; with these it fails in 2 s, the endpoint answers 503 and the client's retry tries again.
REDIS_DEFAULTS = {"socket_connect_timeout": "2", "socket_timeout": "2", "retry": "null"}

#: Tag on every applied feature service: digest of the definitions and source paths it was applied from.
FINGERPRINT_TAG = "airflow_mlops/fingerprint"

TIMESTAMP = "event_timestamp"
#: How feature timestamps are stored: DuckDB/ibis know microsecond timestamps; nanosecond ones come back untyped.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"


class FeatureError(RuntimeError):
    """A feature step failed; the message says which day, table or path and what to do."""


class MissingPartitionError(FeatureError):
    """The validated partition a build needs does not exist (the validate step has not run or failed)."""


class FeaturesNotBuiltError(FeatureError):
    """Feature tables were requested (join, materialization) before :func:`build_features` wrote them."""


class NotMaterializedError(FeatureError):
    """Online features were requested before anything was materialized into the online store."""


class FeatureJoinError(FeatureError):
    """A point-in-time join dropped or duplicated entity rows, or the entity frame is unusable."""


class FeatureStoreConfigError(FeatureError):
    """The Feast configuration of the active profile is incomplete (for example a missing variable)."""


class OnlineStoreUnavailable(FeatureError):
    """The online store did not answer a lookup: down, unreachable or too slow (its client's error is the cause).
    Serving answers 503 with this message; the next lookup tries again. Reading the registry is not covered: a
    registry that fails when its cache expires still raises its own error."""


# ----------------------------------------------------------------------------------------------------------
# Build: the dataset's feature function, called with the day's validated tables
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureInputs:
    """What a dataset's feature function receives for one day ``day`` (the fixed contract).

    The function, named in the dataset file (``features.function: module:function``), is called as
    ``function(inputs)`` and returns one data frame per feature table the file declares
    (``features.tables``), by name. Every frame needs an ``event_timestamp`` column: the instant from which
    its row may be used (timezone-aware; stored as UTC). A build of day ``day`` may only produce values known
    by the end of that day, so no row may be stamped after :attr:`served_from`; rows computed from whole days
    are stamped exactly there. The engine writes the frames (atomically, one partition per table and day),
    registers them with Feast and materializes them; the function only computes.

    Attributes:
        dataset: the dataset's name.
        day: the day being built.
        tables: each table of the dataset, the validated rows of ``day``.
        window: each table named in ``features.lookback_days``, the validated rows of the days
            ``day - N .. day`` that exist (never later ones), with a ``partition_date`` column (ISO date).
        served_from: the start of the next day on the dataset's local calendar (``timezone``), in UTC.
        reference: ``reference(name)`` gives a table of the source that is not delivered by day (for
            example a product catalogue), or None if the source has none.
        warn: ``warn(message)`` records a warning in the task log and in the ``features`` asset event.
    """

    dataset: str
    day: date
    tables: Mapping[str, pd.DataFrame]
    window: Mapping[str, pd.DataFrame]
    served_from: datetime
    reference: Callable[[str], pd.DataFrame | None]
    warn: Callable[[str], None]


@dataclass(frozen=True)
class FeatureTablePartition:
    """One feature table partition written by a build; ``start``/``end`` bound its event timestamps."""

    table: str
    rows: int
    path: str
    sha256: str
    start: str | None
    end: str | None


@dataclass(frozen=True)
class FeatureBuildResult:
    """What :func:`build_features` wrote; ``extra`` is what the ``features`` asset event carries."""

    dataset: str
    partition: str
    tables: tuple[FeatureTablePartition, ...]
    window_days: tuple[str, ...]
    served_from: str
    references: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def rows(self) -> dict[str, int]:
        return {t.table: t.rows for t in self.tables}

    @property
    def paths(self) -> dict[str, str]:
        return {t.table: t.path for t in self.tables}

    @property
    def extra(self) -> dict[str, Any]:
        """JSON-able summary: dataset, partition, rows and paths per table, window days read, intervals."""
        return {
            "dataset": self.dataset,
            "partition": self.partition,
            "rows": self.rows,
            "paths": self.paths,
            "sha256": {t.table: t.sha256 for t in self.tables},
            "intervals": {t.table: [t.start, t.end] for t in self.tables},
            "window_days": list(self.window_days),
            "served_from": self.served_from,
            "references": dict(self.references),
            "warnings": list(self.warnings),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_tables(dataset: str, settings: Settings | None = None) -> tuple[str, ...]:
    """The feature tables that ``dataset``'s file declares (each a Feast feature view of the same name)."""
    try:
        spec = dataset_spec(dataset, settings)
    except DatasetNotFoundError as exc:
        raise FeatureError(str(exc)) from None
    if spec.features is None:
        raise FeatureError(
            f"dataset {dataset!r} declares no features (add a `features:` section with its function and tables "
            f"to {dataset}.yaml)"
        )
    return spec.features.tables


def feature_partition(settings: Settings, dataset: str, table: str, day: date) -> Path:
    """The partition file of feature table ``table`` of ``dataset`` written by the build of ``day``."""
    return partition_path(settings.features_dir, dataset, table, day)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def _require_validated(settings: Settings, dataset: str, table: str, day: date) -> pd.DataFrame:
    path = partition_path(settings.validated_dir, dataset, table, day)
    if not path.exists():
        raise MissingPartitionError(
            f"{dataset}: no validated {table} partition for {day.isoformat()}: {path} does not exist; "
            f"the validate task of ingest_{dataset} must run and pass for this day before features are built"
        )
    try:
        return _read_parquet(path)
    except Exception as exc:  # name the file and the reason, keep the cause
        raise FeatureError(f"cannot read validated {table} partition {path}: {type(exc).__name__}: {exc}") from exc


def served_from(day: date, timezone: str) -> datetime:
    """The start of the day after ``day`` on the local calendar of ``timezone``, in UTC."""
    from zoneinfo import ZoneInfo

    local = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


def _window(
    settings: Settings, dataset: str, table: str, day: date, today: pd.DataFrame, back: int
) -> tuple[pd.DataFrame, list[str]]:
    """``table`` over the validated days ``day-back .. day`` that exist, each row with its ``partition_date``."""
    import pandas as pd

    frames, used = [], []
    for offset in range(back, 0, -1):
        past = day - timedelta(days=offset)
        path = partition_path(settings.validated_dir, dataset, table, past)
        if path.exists():
            frames.append(_read_parquet(path).assign(partition_date=past.isoformat()))
            used.append(past.isoformat())
    frames.append(today.assign(partition_date=day.isoformat()))
    used.append(day.isoformat())
    return pd.concat(frames, ignore_index=True), used


def _checked(dataset: str, day: date, function: str, raw: Any, tables: Sequence[str], until: datetime) -> dict:
    """The function's frames, checked against the contract (names, ``event_timestamp``, nothing after the day)."""
    import pandas as pd

    where = f"{dataset} {day.isoformat()}: {function}"
    if not isinstance(raw, Mapping):
        raise FeatureError(f"{where} returned {type(raw).__name__}, not a mapping of table name to data frame")
    missing, extra = sorted(set(tables) - set(raw)), sorted(set(raw) - set(tables))
    if missing or extra:
        raise FeatureError(
            f"{where} returned tables {sorted(raw)}; the dataset file declares {list(tables)}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (not declared: {', '.join(extra)})" if extra else "")
        )
    frames = {}
    for table in tables:
        frame = raw[table]
        if not isinstance(frame, pd.DataFrame):
            raise FeatureError(f"{where}: table {table!r} is a {type(frame).__name__}, not a pandas DataFrame")
        if TIMESTAMP not in frame.columns:
            raise FeatureError(f"{where}: table {table!r} has no {TIMESTAMP!r} column (columns: {list(frame.columns)})")
        stamps = frame[TIMESTAMP]
        if stamps.isna().any():
            raise FeatureError(f"{where}: {table}.{TIMESTAMP} has {int(stamps.isna().sum())} missing value(s)")
        if isinstance(stamps.dtype, pd.DatetimeTZDtype) or stamps.empty:
            stamps = pd.to_datetime(stamps, utc=True).astype(TIMESTAMP_DTYPE)
        else:
            raise FeatureError(f"{where}: {table}.{TIMESTAMP} must be timezone-aware (got {stamps.dtype})")
        frame = frame.assign(**{TIMESTAMP: stamps})
        if len(frame) and frame[TIMESTAMP].max() > until:
            raise FeatureError(
                f"{where}: {table} has rows stamped up to {frame[TIMESTAMP].max().isoformat()}, after the end of the "
                f"day ({until.isoformat()}); a build may only produce values known by then"
            )
        frames[table] = frame.reset_index(drop=True)
    return frames


def _bounds(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    if frame.empty:
        return None, None
    return frame[TIMESTAMP].min().isoformat(), frame[TIMESTAMP].max().isoformat()


def build_features(dataset: str, day: date, *, settings: Settings | None = None) -> FeatureBuildResult:
    """Build the feature tables of ``dataset`` for ``day`` with its feature function; see :class:`FeatureInputs`.

    Reads the validated zone only (:class:`MissingPartitionError` names the path of a missing table), calls the
    function named in the dataset file, checks what it returns, and writes one partition per feature table:
    all written aside and renamed together, so a failed build leaves the day as it was, and a re-run
    replaces them.
    """
    from airflow_mlops.ingest import make_source

    settings = settings or get_settings()
    tables = feature_tables(dataset, settings)
    spec = dataset_spec(dataset, settings)
    if spec.features is None:
        raise FeatureError(f"dataset {dataset!r} declares no features (its file has no `features:` section)")
    try:
        function = load_callable(spec.features.function, settings.datasets_dir)
    except UserCodeError as exc:
        raise FeatureError(f"{settings.datasets_dir / dataset}.yaml, features.function: {exc}") from exc

    today = {table: _require_validated(settings, dataset, table, day) for table in spec.table_names}
    window: dict[str, pd.DataFrame] = {}
    used: set[str] = {day.isoformat()}
    for table, back in spec.features.lookback_days.items():
        window[table], days = _window(settings, dataset, table, day, today[table], back)
        used.update(days)
    until = served_from(day, spec.timezone)

    warnings: list[str] = []
    references: dict[str, str] = {}

    def warn(message: str) -> None:
        log.warning("%s", message)
        warnings.append(str(message))

    def reference(name: str) -> pd.DataFrame | None:
        source = make_source(source_of(dataset, settings), settings)
        read = getattr(source, "reference", None)
        found = read(name) if read is not None else None
        if found is None:
            return None
        frame, where = found
        references[name] = where
        return frame

    inputs = FeatureInputs(
        dataset=dataset, day=day, tables=today, window=window, served_from=until, reference=reference, warn=warn
    )
    try:
        raw = function(inputs)
    except FeatureError:
        raise
    except Exception as exc:  # the user's code failed: name the function and the day, keep the cause
        raise FeatureError(
            f"{dataset} {day.isoformat()}: {spec.features.function} failed: {type(exc).__name__}: {exc}"
        ) from exc
    frames = _checked(dataset, day, spec.features.function, raw, tables, until)

    paths = {table: feature_partition(settings, dataset, table, day) for table in tables}
    write_parquet_together({paths[table]: frames[table] for table in tables})
    written = []
    for table, path in paths.items():
        start, end = _bounds(frames[table])
        written.append(
            FeatureTablePartition(
                table=table, rows=len(frames[table]), path=str(path), sha256=file_sha256(path), start=start, end=end
            )
        )
        log.info("features: wrote %s rows of %s %s for %s at %s", len(frames[table]), dataset, table, day, path)
    return FeatureBuildResult(
        dataset=dataset,
        partition=day.isoformat(),
        tables=tuple(written),
        window_days=tuple(sorted(used)),
        served_from=until.isoformat(),
        references=references,
        warnings=tuple(warnings),
    )


# ----------------------------------------------------------------------------------------------------------
# Feast configuration and registry
# ----------------------------------------------------------------------------------------------------------

_ENV_LOCK = threading.Lock()
_STORES: dict[tuple[str, ...], FeatureStore] = {}
_STORES_LOCK = threading.Lock()


def _local_config_dict(settings: Settings) -> dict[str, Any]:
    import yaml

    raw = yaml.safe_load(LOCAL_YAML.read_text(encoding="utf-8"))
    raw["registry"] = {**raw.get("registry", {}), "path": settings.database_url("feast")}
    raw["online_store"] = {**raw.get("online_store", {}), "path": str(settings.feast_dir / ONLINE_STORE_FILE)}
    return raw


def _production_config_dict() -> dict[str, Any]:
    import yaml

    missing = [name for name in PRODUCTION_VARIABLES if not os.environ.get(name, "").strip()]
    if missing:
        raise FeatureStoreConfigError(
            f"MLOPS_PROFILE=production needs {', '.join(missing)} for Feast ({PRODUCTION_YAML.name}): "
            "MLOPS_FEAST_REGISTRY_URL is the SQLAlchemy URL of the registry database "
            "(postgresql+psycopg://user:password@host:5432/db), MLOPS_FEAST_REDIS_URL the Redis connection "
            "string (host:6379,db=0)"
        )
    raw = yaml.safe_load(os.path.expandvars(PRODUCTION_YAML.read_text(encoding="utf-8")))
    project = os.environ.get(PROJECT_VARIABLE, "").strip()
    if project:
        raw["project"] = project
    online = raw.get("online_store", {})
    if online.get("type") == "redis":
        connection = str(online.get("connection_string", ""))
        given = {part.split("=", 1)[0].strip() for part in connection.split(",") if "=" in part}
        extra = [f"{name}={value}" for name, value in REDIS_DEFAULTS.items() if name not in given]
        online["connection_string"] = ",".join([connection, *extra])
    return raw


def repo_config(settings: Settings | None = None) -> RepoConfig:
    """The Feast ``RepoConfig`` of the active profile, with every path taken from ``settings``."""
    from feast.repo_config import RepoConfig

    settings = settings or get_settings()
    production = settings.profile == Profile.PRODUCTION
    raw = _production_config_dict() if production else _local_config_dict(settings)
    config = RepoConfig(**raw)
    config.repo_path = settings.feature_repo
    return config


def _write_cli_yaml(settings: Settings, raw: dict[str, Any]) -> Path:
    """Write the local profile's configuration (absolute paths) for ``feast -f``; only when it changed."""
    import yaml

    path = settings.feast_dir / CLI_YAML_NAME
    header = (
        "# Written by airflow_mlops.features from feature_repo/feature_store.yaml and MLOPS_HOME; do not edit.\n"
        f"# Use: feast -c {settings.feature_repo} -f {path} <command>\n"
    )
    text = header + yaml.safe_dump(raw, sort_keys=False)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the registry URL carries a password
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path


def cli_yaml(settings: Settings | None = None) -> Path:
    """The ``feature_store.yaml`` that points the Feast CLI at ``settings``' state (local profile).

    ``feast -c feature_repo -f $(this path) serve`` serves exactly what the library materialized. For the
    production profile it is ``feature_repo/feature_store.production.yaml`` (its variables set).
    """
    settings = settings or get_settings()
    if settings.profile == Profile.PRODUCTION:
        return PRODUCTION_YAML
    return _write_cli_yaml(settings, _local_config_dict(settings))


def _store_key(settings: Settings) -> tuple[str, ...]:
    key: tuple[str, ...] = (settings.profile.value, str(settings.home), str(settings.data_dir))
    if settings.profile == Profile.PRODUCTION:
        key += tuple(os.environ.get(name, "") for name in (*PRODUCTION_VARIABLES, PROJECT_VARIABLE))
    return key


def feature_store(settings: Settings | None = None) -> FeatureStore:
    """A new ``FeatureStore`` for the active profile (``settings.profile``), configured by :func:`repo_config`.

    It does not apply anything (see :func:`ensure_applied`); for the local profile it creates
    ``Settings.feast_dir`` and refreshes the CLI's copy of the configuration (:func:`cli_yaml`).
    """
    from feast import FeatureStore

    settings = settings or get_settings()
    if settings.profile != Profile.PRODUCTION:
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
        _write_cli_yaml(settings, _local_config_dict(settings))
    return FeatureStore(repo_path=str(settings.feature_repo), config=repo_config(settings))


def _serving_store(settings: Settings) -> FeatureStore:
    """One ``FeatureStore`` per configuration and process (its registry cache makes lookups cheap)."""
    key = _store_key(settings)
    store = _STORES.get(key)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = feature_store(settings)
    return store


def definition_files(settings: Settings | None = None) -> list[Path]:
    """The Python files of the feature repository (``Settings.feature_repo``), in the order Feast reads them."""
    folder = (settings or get_settings()).feature_repo
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def fingerprint(settings: Settings, project: str) -> str:
    """Digest of what an apply depends on: the definition files, the feature tables' folder, the project."""
    from importlib import metadata

    digest = hashlib.sha256()
    for path in definition_files(settings):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (str(settings.features_dir), project, metadata.version("feast")):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Generator[None]:
    """Set ``values`` in ``os.environ`` while the definitions are loaded (they read MLOPS_HOME/DATA_DIR)."""
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def definition_objects(path: Path, settings: Settings | None = None) -> list[Any]:
    """The Feast objects one file of the feature repository defines, with the source paths of ``settings``.

    The file is executed as a new module (so the paths follow ``settings``, not whatever was imported before);
    its entities, data sources, feature views (and their batch sources) and feature services are returned.
    Whatever the file raises propagates: :func:`airflow_mlops.project_check.check_project` names it.
    """
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    settings = settings or get_settings()
    objects: list[Any] = []
    env = {"MLOPS_HOME": str(settings.home), "MLOPS_DATA_DIR": str(settings.data_dir)}
    with _environment(env):
        spec = importlib.util.spec_from_file_location(f"_feature_repo_{path.stem}_{uuid.uuid4().hex}", path)
        if spec is None or spec.loader is None:
            raise FeatureStoreConfigError(f"{path}: not a loadable Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, Entity | FeatureView | FeatureService | DataSource) and not any(
            value is seen for seen in objects
        ):
            objects.append(value)
            source = value.batch_source if isinstance(value, FeatureView) else None
            if source is not None and not any(source is seen for seen in objects):
                objects.append(source)
    return objects


def load_definitions(settings: Settings | None = None) -> list[Any]:
    """Fresh Feast objects of every file of the feature repository (:func:`definition_objects`)."""
    settings = settings or get_settings()
    return [obj for path in definition_files(settings) for obj in definition_objects(path, settings)]


def _applied_fingerprint(store: FeatureStore) -> str | None:
    try:
        services = store.registry.list_feature_services(store.project, allow_cache=False)
    except Exception:  # no registry yet (or unreadable): apply creates it
        return None
    tags = {service.tags.get(FINGERPRINT_TAG) for service in services}
    return tags.pop() if len(tags) == 1 else None


@contextlib.contextmanager
def _registry_lock(settings: Settings) -> Generator[None]:
    """Serialize registry writers of the local profile's processes.

    The SQL registry stores each feature view as one row: two days materialized at once would each read the
    view's materialization intervals and write it back, and the later write would drop the other's interval.
    """
    if settings.profile == Profile.PRODUCTION:
        yield
        return
    with file_lock(settings.feast_dir / ".registry.lock"):
        yield


def apply_definitions(settings: Settings | None = None, store: FeatureStore | None = None) -> FeatureStore:
    """``feast apply`` for ``settings``: register the definitions, drop what they no longer define."""
    from feast import FeatureService
    from feast.feature_view import DUMMY_ENTITY_NAME

    settings = settings or get_settings()
    store = store or feature_store(settings)
    objects = load_definitions(settings)
    digest = fingerprint(settings, store.project)
    for obj in objects:
        if isinstance(obj, FeatureService):
            obj.tags[FINGERPRINT_TAG] = digest
    names = {(type(obj).__name__, obj.name) for obj in objects}
    stale: list[Any] = []
    with contextlib.suppress(Exception):  # an empty or missing registry has nothing to delete
        project = store.project
        registry = store.registry
        stale += [
            o
            for o in registry.list_feature_services(project, allow_cache=False)
            if ("FeatureService", o.name) not in names
        ]
        stale += [
            o for o in registry.list_feature_views(project, allow_cache=False) if ("FeatureView", o.name) not in names
        ]
        stale += [
            o
            for o in registry.list_entities(project, allow_cache=False)
            if ("Entity", o.name) not in names and o.name != DUMMY_ENTITY_NAME
        ]
    store.apply(objects, objects_to_delete=stale, partial=False)
    store.refresh_registry()
    log.info("features: applied %s Feast objects (fingerprint %s, project %s)", len(objects), digest, store.project)
    return store


def ensure_applied(settings: Settings | None = None) -> FeatureStore:
    """A ``FeatureStore`` whose registry holds the current definitions; applies them only if needed.

    The check is one registry read: every feature service carries the fingerprint of the definitions and
    paths it was applied from (:func:`fingerprint`). A missing registry, one applied by hand with ``feast
    apply`` (no tag) or from other definitions is (re-)applied.
    """
    settings = settings or get_settings()
    store = feature_store(settings)
    digest = fingerprint(settings, store.project)
    if _applied_fingerprint(store) == digest:
        return store
    with _registry_lock(settings):
        if _applied_fingerprint(store) != digest:
            apply_definitions(settings, store)
    return store


# ----------------------------------------------------------------------------------------------------------
# Materialization
# ----------------------------------------------------------------------------------------------------------


def _day_bounds(path: Path) -> tuple[int, datetime | None, datetime | None]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=[TIMESTAMP]).column(0)
    if len(column) == 0:
        return 0, None, None
    bounds = pc.min_max(column)
    return len(column), bounds["min"].as_py(), bounds["max"].as_py()


def _values_digest(path: Path) -> str:
    """SHA-256 of a feature partition's rows without their event timestamps (what the online store keeps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.drop_columns([TIMESTAMP]).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _online_already(settings: Settings, dataset: str, table: str, day: date, latest: datetime | None) -> date | None:
    """The previous day, if its partition holds the same rows as ``day``'s and is already online.

    A snapshot table (reference data stamped anew every day) then adds nothing online: the store keeps one
    row per entity, and it holds these values already, so :func:`materialize_day` skips the view.
    """
    previous = day - timedelta(days=1)
    before = feature_partition(settings, dataset, table, previous)
    path = feature_partition(settings, dataset, table, day)
    if latest is None or not before.exists():
        return None
    _, _, before_end = _day_bounds(before)
    if before_end is None or before_end > latest or _values_digest(before) != _values_digest(path):
        return None
    return previous


def materialize_day(dataset: str, day: date, *, settings: Settings | None = None) -> dict[str, Any]:
    """Load the rows that ``day``'s build of ``dataset`` wrote into the online store of the active profile.

    Only the dataset's own feature views are loaded: another dataset's days are none of this call's business.

    Per feature view, the interval is ``[first, last]`` event timestamp of the day's partition, extended to
    the latest end materialized so far: the online store then holds, per entity, the latest row up to that
    end whatever order days are (re-)materialized in, so a re-run gives the same online state. A view whose
    partition holds the same values as the previous day's, which is online already, is skipped (a snapshot of
    reference data, stamped anew each day, would write the same rows again; see :func:`_online_already`). Applies the
    definitions first if needed (:func:`ensure_applied`). Returns a JSON-able summary.
    """
    settings = settings or get_settings()
    bounds: dict[str, tuple[int, datetime | None, datetime | None]] = {}
    for table in feature_tables(dataset, settings):
        path = feature_partition(settings, dataset, table, day)
        if not path.exists():
            raise FeaturesNotBuiltError(
                f"no {dataset} {table} partition for {day.isoformat()}: {path} does not exist; build_features("
                f"{dataset!r}, {day.isoformat()}) must run before the day is materialized"
            )
        bounds[table] = _day_bounds(path)
    store = ensure_applied(settings)
    views: dict[str, Any] = {}
    with _registry_lock(settings):
        for table, (rows, start, end) in bounds.items():
            if rows == 0 or start is None or end is None:
                views[table] = {"rows": 0, "start": None, "end": None, "skipped": "no rows for the day"}
                continue
            view = store.registry.get_feature_view(table, store.project, allow_cache=False)
            latest = max((interval[1] for interval in view.materialization_intervals), default=None)
            same_as = _online_already(settings, dataset, table, day, latest)
            if same_as is not None:
                views[table] = {
                    "rows": rows,
                    "start": None,
                    "end": latest.isoformat() if latest else None,
                    "skipped": f"same rows as {same_as.isoformat()}, which are online already",
                }
                log.info("%s %s: same rows as %s, already online; not loaded again", table, day, same_as)
                continue
            until = max(end, latest) if latest is not None else end
            store.materialize(start_date=start, end_date=until, feature_views=[table])
            views[table] = {"rows": rows, "start": start.isoformat(), "end": until.isoformat()}
    return {
        "dataset": dataset,
        "day": day.isoformat(),
        "profile": settings.profile.value,
        "project": store.project,
        "online_store": store.config.online_store.type,
        "views": views,
    }


# ----------------------------------------------------------------------------------------------------------
# Lookups
# ----------------------------------------------------------------------------------------------------------


def _service(store: FeatureStore, name: str, *, allow_cache: bool = True) -> FeatureService:
    try:
        return store.registry.get_feature_service(name, store.project, allow_cache=allow_cache)
    except Exception as exc:
        if type(exc).__name__ != "FeatureServiceNotFoundException":
            raise
        try:
            known = ", ".join(sorted(s.name for s in store.registry.list_feature_services(store.project)))
        except Exception:
            known = ""
        raise FeatureError(
            f"no feature service {name!r} in Feast project {store.project!r} (known: {known or 'none'})"
        ) from None


def _service_views(store: FeatureStore, service: FeatureService) -> list[Any]:
    return [
        store.registry.get_feature_view(projection.name, store.project)
        for projection in service.feature_view_projections
    ]


def entity_frame(examples: pd.DataFrame, keys: Sequence[str], event_time: str) -> pd.DataFrame:
    """The entity frame of ``examples``: ``row_id``, the entity ``keys``, ``event_timestamp``.

    ``event_timestamp`` is the examples' ``event_time`` column in UTC (a value without an offset is UTC), the
    instant of every point-in-time lookup; ``row_id`` is the frame's own ``row_id`` column if it has one, else
    ``0..n-1`` in row order. A missing key is None (its features come back missing, never an error).
    """
    import pandas as pd

    missing = [c for c in (*keys, event_time) if c not in examples.columns]
    if missing:
        raise FeatureJoinError(f"the examples lack {', '.join(missing)} (needed for the entity frame)")
    source = examples.reset_index(drop=True)
    frame = pd.DataFrame(
        {"row_id": source["row_id"] if "row_id" in source.columns else pd.RangeIndex(len(source))}
    ).astype({"row_id": "int64"})
    for key in keys:
        frame[key] = source[key].astype(object).where(source[key].notna(), None)
    frame[TIMESTAMP] = pd.to_datetime(source[event_time], utc=True).astype(TIMESTAMP_DTYPE)
    return frame


def _require_built(settings: Settings, views: Sequence[Any]) -> None:
    empty = []
    for view in views:
        folder = Path(view.batch_source.path)
        if not any(folder.glob("date=*/*.parquet")):
            empty.append(f"{view.name} ({folder})")
    if empty:
        raise FeaturesNotBuiltError(
            f"no feature table partitions for {', '.join(empty)}: run build_features for the days first "
            "(the daily DAG's build_features task)"
        )


def historical_features(
    entity_df: pd.DataFrame,
    *,
    service: str,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Point-in-time join of ``entity_df`` with the features of ``service`` (Feast, DuckDB offline store).

    ``entity_df`` needs ``row_id`` (unique), the join keys of the service's views and ``event_timestamp``
    (the prediction time, UTC; :func:`entity_frame`); other columns pass through. Each feature comes from the
    latest row at or before ``event_timestamp`` within its view's TTL, else it is null. The result is sorted
    by ``row_id`` and has exactly the rows of ``entity_df``: :class:`FeatureJoinError` otherwise.
    """
    import pandas as pd

    settings = settings or get_settings()
    frame = entity_df.copy()
    missing = [c for c in ("row_id", TIMESTAMP) if c not in frame.columns]
    if missing:
        raise FeatureJoinError(f"entity frame lacks {', '.join(missing)}; build it with entity_frame(...)")
    if frame["row_id"].isna().any() or frame["row_id"].duplicated().any():
        raise FeatureJoinError("entity frame: row_id must be unique and not null (it is how rows are matched back)")
    timestamps = pd.to_datetime(frame[TIMESTAMP], utc=True)
    if timestamps.isna().any():
        raise FeatureJoinError(f"entity frame: {int(timestamps.isna().sum())} rows have no {TIMESTAMP}")
    frame[TIMESTAMP] = timestamps.astype(TIMESTAMP_DTYPE)
    store = ensure_applied(settings)
    feature_service = _service(store, service, allow_cache=False)
    views = _service_views(store, feature_service)
    keys = sorted({column.name for view in views for column in view.entity_columns})
    absent = [key for key in keys if key not in frame.columns]
    if absent:
        raise FeatureJoinError(f"entity frame lacks the join keys {', '.join(absent)} of {service}")
    _require_built(settings, views)
    if frame.empty:
        raise FeatureJoinError("entity frame has no rows")
    result = store.get_historical_features(entity_df=frame, features=feature_service).to_df()
    expected = frame["row_id"]
    if len(result) != len(frame) or not result["row_id"].sort_values().reset_index(drop=True).equals(
        expected.sort_values().reset_index(drop=True)
    ):
        lost = set(expected) - set(result["row_id"])
        duplicated = int(result["row_id"].duplicated().sum())
        raise FeatureJoinError(
            f"point-in-time join of {len(frame)} entity rows returned {len(result)} rows "
            f"({len(lost)} row ids missing, {duplicated} duplicated); refusing to return a wrong training set"
        )
    return result.sort_values("row_id", kind="stable").reset_index(drop=True)


def _not_materialized(store: FeatureStore, service: str) -> NotMaterializedError:
    return NotMaterializedError(
        f"nothing of {service} has been materialized into the {store.config.online_store.type} online store "
        f"of project {store.project!r} yet: run materialize_day for a built day first"
    )


@dataclass(frozen=True)
class _OnlineView:
    """One feature view of a service as the online store is read for it: its join keys and the service's features."""

    view: Any  #: the ``FeatureView`` as the registry holds it
    keys: tuple[str, ...]
    value_types: tuple[Any, ...]  #: Feast ``ValueType`` of each join key
    features: tuple[str, ...]


@dataclass(frozen=True)
class _Resolved:
    """A feature service resolved against one registry snapshot (what every lookup needs, computed once)."""

    stamp: Any
    service: FeatureService
    keys: tuple[str, ...]
    features: tuple[str, ...]
    materialized: bool
    #: per feature view, what :func:`_read_online` reads; None when a projection maps join keys (the SDK reads it)
    reads: tuple[_OnlineView, ...] | None = None


_RESOLVED: dict[tuple[int, str], _Resolved] = {}


def _resolve(store: FeatureStore, name: str, *, fresh: bool = False) -> _Resolved:
    """The service ``name`` of ``store``, cached until the store's registry cache is refreshed.

    Resolving costs milliseconds (Feast rebuilds feature views from protobuf, with run-time type checks);
    reusing the same ``FeatureService`` object also lets Feast reuse its own per-request resolution cache.
    """
    registry = store.registry
    if fresh:
        store.refresh_registry()
        registry = store.registry
    stamp = getattr(registry, "cached_registry_proto_created", None)
    hit = _RESOLVED.get((id(store), name))
    if not fresh and hit is not None and stamp is not None and hit.stamp == stamp and registry.is_cache_valid():
        return hit
    service = _service(store, name)
    views = _service_views(store, service)
    keys = tuple(sorted({column.name for view in views for column in view.entity_columns}))
    names = tuple(f.name for projection in service.feature_view_projections for f in projection.features)
    reads = tuple(
        _OnlineView(
            view=view,
            keys=tuple(column.name for column in view.entity_columns),
            value_types=tuple(column.dtype.to_value_type() for column in view.entity_columns),
            features=tuple(f.name for f in projection.features),
        )
        for projection, view in zip(service.feature_view_projections, views, strict=True)
    )
    mapped = any(projection.join_key_map for projection in service.feature_view_projections)
    resolved = _Resolved(
        stamp=getattr(store.registry, "cached_registry_proto_created", None),
        service=service,
        keys=keys,
        features=names,
        materialized=any(view.materialization_intervals for view in views),
        reads=None if mapped or len(set(names)) != len(names) else reads,
    )
    _RESOLVED[id(store), name] = resolved
    return resolved


_PROVIDERS: dict[int, Any] = {}


def _provider(store: FeatureStore) -> Any:
    """Feast's provider for ``store``'s configuration, one per store and process (it holds the store's connection)."""
    provider = _PROVIDERS.get(id(store))
    if provider is None:
        from feast.infra.provider import get_provider

        provider = _PROVIDERS[id(store)] = get_provider(store.config)
    return provider


_SCALARS = frozenset({"string_val", "int64_val", "int32_val", "double_val", "float_val", "bool_val"})


def _python_value(value: Any) -> Any:
    """A ``ValueProto`` as Python, as ``get_online_features(...).to_dict()`` gives it (None when unset)."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def _entity_value(value: str, value_type: Any) -> Any:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    if value_type == ValueType.STRING:
        return Value(string_val=value)
    return python_values_to_proto_values([value], feature_type=value_type)[0]


def _read_online(store: FeatureStore, reads: Sequence[_OnlineView], rows: list[dict[str, str]]) -> dict[str, list[Any]]:
    """The features of ``reads`` for each of ``rows`` (join keys as strings), column by column, in row order."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    provider = _provider(store)
    columns: dict[str, list[Any]] = {}
    for read in reads:
        at: dict[tuple[str, ...], list[int]] = {}
        for index, row in enumerate(rows):
            at.setdefault(tuple(row[key] for key in read.keys), []).append(index)
        entities = list(at)
        protos = [
            EntityKey(
                join_keys=list(read.keys),
                entity_values=[_entity_value(v, t) for v, t in zip(entity, read.value_types, strict=True)],
            )
            for entity in entities
        ]
        found = provider.online_read(
            config=store.config, table=read.view, entity_keys=protos, requested_features=list(read.features)
        )
        for name in read.features:
            column = columns[name] = [None] * len(rows)
            for entity, (_, values) in zip(entities, found, strict=True):
                if values:
                    python = _python_value(values.get(name))
                    for index in at[entity]:
                        column[index] = python
    return columns


def online_features(
    rows: list[dict[str, Any]],
    *,
    service: str,
    settings: Settings | None = None,
    sdk: bool = False,
) -> list[dict[str, Any]]:
    """Online lookup: for each row (its join keys), the row's keys plus the latest features of ``service``.

    Unknown entities (or a None key) give None feature values, not errors; extra columns of a row are
    ignored. Raises :class:`NotMaterializedError` when nothing of the service was ever materialized.

    The store is read through Feast's provider, one ``online_read`` per feature view of the service (resolved
    once per registry snapshot), each distinct entity once: the same rows and values as
    ``FeatureStore.get_online_features`` (``sdk=True``, and services whose projections map join keys), without
    its per-call resolution and response building, which cost about 0.1 ms per row.
    """
    settings = settings or get_settings()
    if not rows:
        return []
    store = _serving_store(settings)
    try:
        resolved = _resolve(store, service)
    except FeatureError:
        resolved = None
    if resolved is None or not resolved.materialized:
        # The cached registry may predate the first apply or materialization: look again before failing.
        store.refresh_registry()
        if not store.registry.list_feature_services(store.project, allow_cache=False):
            raise _not_materialized(store, service)
        resolved = _resolve(store, service, fresh=True)
        if not resolved.materialized:
            raise _not_materialized(store, service)
    keys = resolved.keys
    entity_rows = []
    for index, row in enumerate(rows):
        absent = [key for key in keys if key not in row]
        if absent:
            raise FeatureError(f"online lookup row {index} lacks {', '.join(absent)} (needs {', '.join(keys)})")
        entity_rows.append({key: "" if row[key] is None else str(row[key]) for key in keys})
    try:
        if resolved.reads is not None and not sdk:
            response = _read_online(store, resolved.reads, entity_rows)
        else:
            response = store.get_online_features(features=resolved.service, entity_rows=entity_rows).to_dict()
    except FeatureError:
        raise
    except Exception as exc:  # the store's own client errors (redis, sqlite3, ...): one kind for the callers
        raise OnlineStoreUnavailable(
            f"online store ({store.config.online_store.type}) unavailable for {service}: {type(exc).__name__}: {exc}"
        ) from exc
    names = [name for name in resolved.features if name in response]
    return [
        {**{key: row[key] for key in keys}, **{name: response[name][i] for name in names}} for i, row in enumerate(rows)
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_mlops.features [apply|yaml]``: apply the definitions / print the CLI yaml path."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "yaml"
    settings = get_settings()
    if command == "apply":
        apply_definitions(settings)
    elif command != "yaml":
        print(f"unknown command {command!r}; use 'apply' or 'yaml'", file=sys.stderr)
        return 2
    print(cli_yaml(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
