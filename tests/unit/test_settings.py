"""Settings: local-profile defaults, ``MLOPS_*`` overrides, clear errors, and env-aware caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_mlops.datasets import source_of
from airflow_mlops.settings import PROJECT_ROOT, Profile, SettingsError, get_settings, load_settings

CHECKOUT = Path(__file__).resolve().parents[2]


def test_project_root_is_the_checkout() -> None:
    """Default paths hang off the checkout, which holds ``dags/`` and ``include/models/``."""
    assert PROJECT_ROOT == CHECKOUT
    assert (PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").is_file()


def test_defaults_are_the_local_profile_under_the_checkout() -> None:
    """With no variable set, everything lives under ``<checkout>/.mlops`` and needs no server."""
    settings = load_settings({})
    home = CHECKOUT / ".mlops"

    assert settings.home == home
    assert settings.profile is Profile.LOCAL
    assert settings.airflow_home == home / "airflow"
    assert settings.data_dir == home / "data"
    assert settings.landing_dir == home / "data" / "landing"
    assert settings.cache_dir == home / "cache"
    assert settings.run_dir == home / "run"
    assert settings.models_dir == CHECKOUT / "include" / "models"
    assert settings.dags_dir == CHECKOUT / "dags"
    assert settings.plugins_dir == CHECKOUT / "plugins"
    # Every database on the embedded PostgreSQL of MLOPS_HOME (none given by the environment).
    assert settings.database_overrides == {} and settings.uses_embedded_db()
    assert source_of("flights", settings) == "nyc_flights:Nycflights13Source"


def test_blank_values_fall_back_to_defaults() -> None:
    """An exported-but-empty variable (``MLOPS_HOME=``) means "use the default", not "the cwd"."""
    settings = load_settings({"MLOPS_HOME": "  ", "MLOPS_PROFILE": "", "MLOPS_SOURCE_FLIGHTS": " "})
    assert settings == load_settings({})


def test_mlops_home_moves_every_derived_path(tmp_path: Path) -> None:
    """Only ``MLOPS_HOME`` is set: Airflow home, data zones, MLflow store and caches follow it."""
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})

    assert settings.home == tmp_path
    assert settings.airflow_home == tmp_path / "airflow"
    assert settings.data_dir == tmp_path / "data"
    assert settings.landing_dir == tmp_path / "data" / "landing"
    assert settings.cache_dir == tmp_path / "cache"
    # The embedded database follows it, and says how to start it before it exists.
    with pytest.raises(SettingsError, match=f"{tmp_path}.*airflow-mlops db start"):
        settings.database_url("mlflow")
    # The specs are part of the checkout, not of the state folder.
    assert settings.models_dir == CHECKOUT / "include" / "models"


def test_every_variable_overrides_its_default(tmp_path: Path) -> None:
    """Each documented variable wins over the default it replaces."""
    env = {
        "MLOPS_HOME": str(tmp_path / "home"),
        "MLOPS_PROFILE": "production",
        "MLOPS_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLOPS_SOURCE_FLIGHTS": "s3://deliveries/flights",
        "MLOPS_MODELS_DIR": str(tmp_path / "models"),
        "MLOPS_DATA_DIR": str(tmp_path / "zones"),
        "AIRFLOW_HOME": str(tmp_path / "af"),
    }
    settings = load_settings(env)

    assert settings.home == tmp_path / "home"
    assert settings.profile is Profile.PRODUCTION
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert source_of("flights", settings) == "s3://deliveries/flights"
    assert settings.models_dir == tmp_path / "models"
    assert settings.data_dir == tmp_path / "zones"
    assert settings.landing_dir == tmp_path / "zones" / "landing"
    assert settings.airflow_home == tmp_path / "af"


def test_relative_and_home_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths come back absolute: relative ones against the cwd, ``~`` against ``$HOME``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    settings = load_settings({"MLOPS_HOME": "state", "MLOPS_DATA_DIR": "~/zones"})

    assert settings.home == tmp_path / "state"
    assert settings.data_dir == tmp_path / "user" / "zones"
    assert settings.home.is_absolute()
    assert settings.data_dir.is_absolute()


def test_source_of_a_folder_is_kept_verbatim() -> None:
    """A source is a folder or URI, handed to the ingest layer as written."""
    settings = load_settings({"MLOPS_SOURCE_FLIGHTS": "/srv/deliveries/flights"})
    assert source_of("flights", settings) == "/srv/deliveries/flights"


def test_unknown_dataset_source_names_the_variable_and_known_datasets() -> None:
    """Asking for a dataset nobody configured says which variable to set."""
    settings = load_settings({})
    with pytest.raises(SettingsError) as info:
        source_of("trains", settings)
    message = str(info.value)
    assert "MLOPS_SOURCE_TRAINS" in message
    assert "'trains'" in message
    assert "flights" in message


def test_invalid_profile_names_the_variable_the_value_and_the_choices() -> None:
    """A typo in the profile fails loudly instead of silently running the local profile."""
    with pytest.raises(SettingsError) as info:
        load_settings({"MLOPS_PROFILE": "prod"})
    message = str(info.value)
    assert "MLOPS_PROFILE" in message
    assert "'prod'" in message
    assert "local" in message
    assert "production" in message
    # SettingsError is a ValueError, so generic config handling catches it too.
    assert isinstance(info.value, ValueError)


def test_get_settings_reads_the_process_environment(isolated_env: Path) -> None:
    """``get_settings()`` resolves ``os.environ`` (the fixture set ``MLOPS_HOME``)."""
    settings = get_settings()
    assert settings.home == isolated_env
    assert settings.profile is Profile.LOCAL


def test_get_settings_follows_environment_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is keyed by the relevant variables: a changed variable gives new settings."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "one"))
    first = get_settings()
    assert first.home == tmp_path / "one"
    assert get_settings() is first  # same environment: cached

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "two"))
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    second = get_settings()
    assert second.home == tmp_path / "two"
    assert second.profile is Profile.PRODUCTION

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "af"))
    assert get_settings().airflow_home == tmp_path / "af"

    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "one"))
    monkeypatch.delenv("MLOPS_PROFILE")
    assert get_settings() == first


def test_get_settings_ignores_unrelated_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables outside ``MLOPS_*``/``AIRFLOW_HOME`` neither change nor invalidate the settings."""
    before = get_settings()
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    assert get_settings() is before


def test_get_settings_raises_for_invalid_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error surfaces through ``get_settings()`` too, naming the variable."""
    monkeypatch.setenv("MLOPS_PROFILE", "staging")
    with pytest.raises(SettingsError, match="MLOPS_PROFILE"):
        get_settings()


def test_database_urls_come_from_the_environment_first_and_production_requires_them(tmp_path: Path) -> None:
    """Each database URL of the environment wins; the production profile starts nothing embedded."""
    env = {
        "MLOPS_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://a:x@db/airflow",
        "MLOPS_MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    settings = load_settings(env)
    assert settings.database_url("airflow") == "postgresql+psycopg2://a:x@db/airflow"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.uses_embedded_db()  # feast and predictions still default to it
    production = load_settings({**env, "MLOPS_PROFILE": "production"})
    assert not production.uses_embedded_db()
    with pytest.raises(SettingsError, match="production needs MLOPS_FEAST_REGISTRY_URL"):
        production.database_url("feast")
