"""Fixtures of every test folder: no embedded PostgreSQL outlives the session.

Tests that use the stack's defaults start the embedded PostgreSQL of their ``MLOPS_HOME``
(:func:`airflow_mlops.embedded_db.ensure_started`, also called by ``start_airflow`` and ``start_mlflow``).
At the end of the session every embedded server under pytest's temporary folder is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from airflow_mlops.embedded_db import EmbeddedDbError, EmbeddedPostgres


@pytest.fixture(scope="session", autouse=True)
def stop_embedded_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop (``pg_ctl stop``, else SIGTERM to its pid) each embedded PostgreSQL the session started."""
    yield
    base = tmp_path_factory.getbasetemp()
    for pid_file in base.rglob("postgres/data/postmaster.pid"):
        server = EmbeddedPostgres(pid_file.parents[2])
        pid = server.pid()
        if pid is None:
            continue
        try:
            server.stop(timeout=30)
        except EmbeddedDbError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
