"""One place that resolves every path, URI and secret of airflow-mlops.

Everything comes from environment variables prefixed ``MLOPS_`` with the defaults of the
``local`` profile, so that deleting the state folder (``MLOPS_HOME``, by default ``.mlops/`` in the
checkout) is a full reset. No other module computes its own paths: they call :func:`get_settings`.

Variables:

``MLOPS_HOME``
    State folder. Default: ``<checkout>/.mlops``.
``MLOPS_PROFILE``
    ``local`` (default, embedded, nothing to run) or ``production`` (PostgreSQL, Redis, Celery).
``MLOPS_MLFLOW_TRACKING_URI``, ``MLOPS_FEAST_REGISTRY_URL``, ``MLOPS_PREDICTION_LOG_URL``,
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
    The MLflow tracking store (or server), the Feast SQL registry, the prediction log and Airflow's metadata
    database. Default (``local`` profile): one database each on the embedded PostgreSQL of ``MLOPS_HOME``
    (:mod:`airflow_mlops.embedded_db`); the ``production`` profile requires them.
``MLOPS_SOURCE_<DATASET>``
    Where a dataset's days come from, instead of its file's ``source``: a folder or ``s3://`` prefix
    holding ``date=YYYY-MM-DD/`` partitions with one file per table (CSV or parquet), or a built-in replay.
``MLOPS_DATASETS_DIR``
    Folder of dataset files (one ``<name>.yaml`` each). Default: ``include/datasets`` in the checkout.
``MLOPS_MODELS_DIR``
    Folder of model specs. Default: ``include/models`` in the checkout.
``MLOPS_DATA_DIR``
    Data zones (landing, later validated, quarantine, features). Default: ``$MLOPS_HOME/data``.
``MLOPS_ENDPOINT_TOKEN``
    The bearer token the model endpoints require (:mod:`airflow_mlops.endpoint_auth`). Default (``local``
    profile): generated once into ``$MLOPS_HOME/secrets/endpoint-token`` (mode 0600); the ``production``
    profile requires it.
``MLOPS_MLFLOW_ADMIN_PASSWORD``
    The password of ``admin`` on a tracking server started with MLflow's basic-auth app (the production
    profile's default). Default (``local`` profile): generated once into ``$MLOPS_HOME/secrets``.
``MLOPS_MLFLOW_SECRET_KEY``
    The key signing that app's CSRF tokens (the same on every server of one store). Default (``local``
    profile): generated once into ``$MLOPS_HOME/secrets``.
``AIRFLOW_HOME``
    Default: ``$MLOPS_HOME/airflow``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

#: The checkout: ``include/airflow_mlops/settings.py`` -> two levels up from ``include/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Profile(StrEnum):
    """Runtime profiles; see docs/architecture.md, "Profiles"."""

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
    #: Sources given in the environment (``MLOPS_SOURCE_<DATASET>``), by dataset name.
    source_overrides: dict[str, str] = field(default_factory=dict)
    #: Where the dataset files are (``MLOPS_DATASETS_DIR``).
    datasets_dir: Path = PROJECT_ROOT / "include" / "datasets"
    #: The Feast repository whose ``*.py`` hold the definitions, one module per dataset (``MLOPS_FEATURE_REPO``).
    feature_repo: Path = PROJECT_ROOT / "feature_repo"
    #: Database URLs given in the environment, by role (see :data:`DATABASE_VARIABLES`).
    database_overrides: dict[str, str] = field(default_factory=dict)
    #: The endpoints' bearer token given in the environment (``MLOPS_ENDPOINT_TOKEN``), else empty.
    endpoint_token_override: str = field(default="", repr=False)
    #: The MLflow admin's password given in the environment (``MLOPS_MLFLOW_ADMIN_PASSWORD``), else empty.
    mlflow_admin_password_override: str = field(default="", repr=False)
    #: The MLflow auth app's CSRF signing key given in the environment (``MLOPS_MLFLOW_SECRET_KEY``), else empty.
    mlflow_secret_key_override: str = field(default="", repr=False)

    def endpoint_token(self) -> str:
        """The bearer token of the model endpoints (see :mod:`airflow_mlops.endpoint_auth`).

        ``MLOPS_ENDPOINT_TOKEN`` when set; else, in the ``local`` profile, the token generated once into
        :attr:`endpoint_token_file` (mode 0600; every process of the same ``MLOPS_HOME`` reads the same one).
        """
        return self._secret(
            self.endpoint_token_override,
            "MLOPS_ENDPOINT_TOKEN",
            self.endpoint_token_file,
            "the bearer token the model endpoints require",
        )

    def mlflow_admin_password(self) -> str:
        """The password of the MLflow basic-auth app's ``admin`` (see :mod:`airflow_mlops.mlflow_runtime`).

        ``MLOPS_MLFLOW_ADMIN_PASSWORD`` when set; else, in the ``local`` profile, generated once into
        ``$MLOPS_HOME/secrets/mlflow-admin-password`` (mode 0600).
        """
        return self._secret(
            self.mlflow_admin_password_override,
            "MLOPS_MLFLOW_ADMIN_PASSWORD",
            self.secrets_dir / "mlflow-admin-password",
            "the password of the MLflow tracking server's admin",
        )

    def mlflow_secret_key(self) -> str:
        """The key that signs the MLflow basic-auth app's CSRF tokens (its ``MLFLOW_FLASK_SERVER_SECRET_KEY``).

        ``MLOPS_MLFLOW_SECRET_KEY`` when set (the same on every server of a store); else, in the ``local``
        profile, generated once into ``$MLOPS_HOME/secrets/mlflow-secret-key`` (mode 0600).
        """
        return self._secret(
            self.mlflow_secret_key_override,
            "MLOPS_MLFLOW_SECRET_KEY",
            self.secrets_dir / "mlflow-secret-key",
            "the key that signs the MLflow tracking server's CSRF tokens",
        )

    def _secret(self, given: str, variable: str, path: Path, what: str) -> str:
        """``given`` (from ``variable``), else the local profile's secret in ``path``, generated on first use.

        Generation is atomic and never replaces a file: processes that start at once agree on one value.
        """
        if given:
            return given
        if self.profile == Profile.PRODUCTION:
            raise SettingsError(f"MLOPS_PROFILE=production needs {variable} ({what})")
        if not path.exists():
            import secrets

            from airflow_mlops.zones import aside, write_text_atomic

            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = aside(path)
            write_text_atomic(secrets.token_urlsafe(32) + "\n", fresh, private=True)
            try:
                os.link(fresh, path)  # atomic and never replaces: two first starts agree on one value
            except FileExistsError:
                pass
            finally:
                fresh.unlink(missing_ok=True)
        value = path.read_text().strip()
        if not value:
            raise SettingsError(f"{path} is empty: delete it to generate a new one ({what})")
        return value

    @property
    def endpoint_token_file(self) -> Path:
        """Where the local profile keeps the generated endpoint token."""
        return self.secrets_dir / "endpoint-token"

    @property
    def secrets_dir(self) -> Path:
        """Secrets generated by the project (mode 0600 files)."""
        return self.home / "secrets"

    def database_url(self, role: str) -> str:
        """The URL of database ``role`` (``airflow``, ``mlflow``, ``feast``, ``predictions``).

        The environment's (:data:`DATABASE_VARIABLES`) when set; else, in the ``local`` profile, that database on
        the embedded PostgreSQL (:mod:`airflow_mlops.embedded_db`, which must have been started once).
        """
        if role in self.database_overrides:
            return self.database_overrides[role]
        if self.profile == Profile.PRODUCTION:
            raise SettingsError(f"MLOPS_PROFILE=production needs {DATABASE_VARIABLES[role]} (a database URL)")
        from airflow_mlops.embedded_db import EmbeddedDbError, embedded

        try:
            return embedded(self.home).url(role)
        except EmbeddedDbError as exc:
            raise SettingsError(str(exc)) from None

    def uses_embedded_db(self) -> bool:
        """Whether any database of these settings lives on the embedded PostgreSQL."""
        return self.profile == Profile.LOCAL and any(role not in self.database_overrides for role in DATABASE_VARIABLES)

    @property
    def mlflow_tracking_uri(self) -> str:
        """MLflow's tracking URI: a database URL (the client writes the store itself) or a tracking server."""
        return self.database_url("mlflow")

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
        """Feast's files of the local profile (the online store, the CLI's ``feature_store.yaml``)."""
        return self.home / "feast"

    @property
    def cache_dir(self) -> Path:
        """Caches that can always be rebuilt (for example a replayed package's tables as parquet)."""
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


def mask_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (for logs, status and messages); non-URLs unchanged."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


#: The environment variable that sets each database URL (the role names are the embedded database names).
DATABASE_VARIABLES = {
    "airflow": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "mlflow": "MLOPS_MLFLOW_TRACKING_URI",
    "feast": "MLOPS_FEAST_REGISTRY_URL",
    "predictions": "MLOPS_PREDICTION_LOG_URL",
}

#: The prefix of the variables that override a dataset's source: ``MLOPS_SOURCE_<DATASET>`` (upper case).
SOURCE_PREFIX = "MLOPS_SOURCE_"


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
    overrides = {role: env[var].strip() for role, var in DATABASE_VARIABLES.items() if env.get(var, "").strip()}
    sources = {
        name.removeprefix(SOURCE_PREFIX).lower(): value.strip()
        for name, value in env.items()
        if name.startswith(SOURCE_PREFIX) and value.strip()
    }
    return Settings(
        home=home,
        profile=profile,
        airflow_home=_path(env, "AIRFLOW_HOME", home / "airflow"),
        models_dir=_path(env, "MLOPS_MODELS_DIR", PROJECT_ROOT / "include" / "models"),
        data_dir=_path(env, "MLOPS_DATA_DIR", home / "data"),
        source_overrides=sources,
        datasets_dir=_path(env, "MLOPS_DATASETS_DIR", PROJECT_ROOT / "include" / "datasets"),
        feature_repo=_path(env, "MLOPS_FEATURE_REPO", PROJECT_ROOT / "feature_repo"),
        database_overrides=overrides,
        endpoint_token_override=env.get("MLOPS_ENDPOINT_TOKEN", "").strip(),
        mlflow_admin_password_override=env.get("MLOPS_MLFLOW_ADMIN_PASSWORD", "").strip(),
        mlflow_secret_key_override=env.get("MLOPS_MLFLOW_SECRET_KEY", "").strip(),
    )


@cache
def _cached(key: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(dict(key))


def get_settings() -> Settings:
    """Settings for the current environment; cached per distinct set of relevant variables."""
    names = ("AIRFLOW_HOME", DATABASE_VARIABLES["airflow"])
    relevant = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("MLOPS_") or k in names))
    return _cached(relevant)
