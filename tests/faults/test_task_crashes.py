"""A task process of the ingest DAG killed (SIGKILL) mid-``land``, mid-``build_features``, mid-``materialize``.

Each scenario runs the task's engine call in a process of its own (:mod:`tests.faults.crash`) that kills itself
with SIGKILL at a chosen point inside a write: half a parquet file written, one file of a multi-file write
renamed and the next not, half of a feature view's rows written to the online store. Then:

1. no visible file is partial: every parquet file a reader can see opens, and each of the day's is byte for
   byte the table a clean run writes (hidden ``.tmp`` files left by the kill are not seen by readers);
2. the retry (the same call in a new process, as Airflow's retry runs it) exits 0;
3. after it and the rest of the day's tasks, every partition of the day and every row of the online store
   equal those of a clean run in another home.

Airflow itself is not in the loop here: what is tested is what the task leaves behind when its process dies
and what its retry does with it. The scheduler's own restarts are another scenario.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nyc_flights import Nycflights13Source

from airflow_mlops.features import ONLINE_STORE_FILE, build_features, materialize_day
from airflow_mlops.gate import check_partition
from airflow_mlops.ingest import land_partition
from airflow_mlops.settings import PROJECT_ROOT, Settings
from tests.unit.conftest import file_stores
from tests.unit.test_features import make_home, validate_days

DATASET = "flights"
DAY = date(2013, 1, 10)
#: The days before DAY that its features look back over (``lookback_days`` of the dataset file), validated.
PRIOR = [DAY - timedelta(days=n) for n in range(6, 0, -1)]
STAGES = ("land", "validate", "features", "materialize")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning"),
]


def run_in_process(settings: Settings, stage: str) -> None:
    """One task's engine call, in this process (the clean runs)."""
    calls: dict[str, Callable[[], object]] = {
        "land": lambda: land_partition(DATASET, DAY, settings=settings),
        "validate": lambda: check_partition(DATASET, DAY, settings=settings),
        "features": lambda: build_features(DATASET, DAY, settings=settings),
        "materialize": lambda: materialize_day(DATASET, DAY, settings=settings),
    }
    calls[stage]()


def new_home(root: Path, nyc_cache_dir: Path) -> Settings:
    settings = make_home(root, nyc_cache_dir)
    validate_days(settings, Nycflights13Source(nyc_cache_dir), PRIOR)
    return settings


def child(settings: Settings, stage: str, crash: dict[str, object] | None = None) -> subprocess.CompletedProcess[str]:
    """The stage in a new process with ``settings``' home; killed at ``crash`` if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW"))}
    env.update({"MLOPS_HOME": str(settings.home), **file_stores(settings.home), "PYTHONPATH": str(PROJECT_ROOT)})
    plan = {"stage": stage, "dataset": DATASET, "day": DAY.isoformat(), "crash": crash}
    return subprocess.run(
        [sys.executable, "-m", "tests.faults.crash", json.dumps(plan)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def zones(settings: Settings) -> list[Path]:
    return [settings.landing_dir, settings.validated_dir, settings.features_dir]


def visible_files(settings: Settings) -> dict[str, Path]:
    """Every parquet file a reader can see (no hidden name in its path), by path relative to its home."""
    found = {}
    for zone in zones(settings):
        for path in zone.rglob("*.parquet"):
            relative = path.relative_to(settings.home)
            if not any(part.startswith(".") for part in relative.parts):
                found[str(relative)] = path
    return found


def hidden_leftovers(settings: Settings) -> list[Path]:
    return [p for zone in zones(settings) for p in zone.rglob(".*") if p.is_file()]


def online_rows(settings: Settings) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the SQLite online store, per table, without the write time (``created_ts``)."""
    path = settings.feast_dir / ONLINE_STORE_FILE
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: conn.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{t}" ORDER BY entity_key, feature_name'
            ).fetchall()
            for t in sorted(tables)
        }


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Settings:
    """A home where the day ran its four tasks without a fault: the reference."""
    settings = new_home(tmp_path_factory.mktemp("clean"), nyc_cache_dir)
    for stage in STAGES:
        run_in_process(settings, stage)
    return settings


def assert_no_partial_file(settings: Settings, clean: Settings) -> int:
    """Every visible file opens; the day's are the clean run's tables. Returns how many of the day's are visible."""
    reference = visible_files(clean)
    day_files = 0
    for relative, path in visible_files(settings).items():
        table = pq.read_table(path)  # a partial file does not open
        if f"date={DAY.isoformat()}" in relative:
            day_files += 1
            assert relative in reference, f"{relative} is visible but a clean run writes no such file"
            assert table.equals(pq.read_table(reference[relative])), f"{relative} differs from a clean run's"
    return day_files


CASES = [
    pytest.param("land", {"at": "write_table", "nth": 1, "match": "date="}, id="land-half-file"),
    pytest.param("land", {"at": "replace", "nth": 1, "match": "date="}, id="land-between-renames"),
    pytest.param("features", {"at": "write_table", "nth": 2, "match": "date="}, id="features-half-file"),
    pytest.param("features", {"at": "replace", "nth": 1, "match": "date="}, id="features-between-renames"),
    pytest.param("materialize", {"at": "online_write", "nth": 1, "match": ""}, id="materialize-half-rows"),
]


@pytest.mark.parametrize(("stage", "crash"), CASES)
def test_a_killed_task_leaves_no_partial_file_and_its_retry_equals_a_clean_run(
    stage: str,
    crash: dict[str, object],
    clean: Settings,
    tmp_path: Path,
    nyc_cache_dir: Path,
    observed: Callable[[str, str, str], None],
) -> None:
    settings = new_home(tmp_path, nyc_cache_dir)
    before = STAGES[: STAGES.index(stage)]
    for done in before:
        run_in_process(settings, done)
    rows_before = online_rows(settings)

    killed = child(settings, stage, crash)
    assert killed.returncode == -signal.SIGKILL, f"the crash point was not reached:\n{killed.stdout}\n{killed.stderr}"
    what = next(line for line in killed.stdout.splitlines() if line.startswith("CRASH "))
    what = what.removeprefix("CRASH ").replace(f"{settings.home}/", "")
    visible_after_kill = assert_no_partial_file(settings, clean)
    leftovers = hidden_leftovers(settings)
    partial_online = online_rows(settings) != rows_before

    started = time.monotonic()
    retry = child(settings, stage)
    retry_seconds = time.monotonic() - started
    assert retry.returncode == 0, f"the retry failed:\n{retry.stdout}\n{retry.stderr[-4000:]}"
    for rest in STAGES[STAGES.index(stage) + 1 :]:
        run_in_process(settings, rest)

    reference = visible_files(clean)
    mine = visible_files(settings)
    assert sorted(mine) == sorted(reference)
    for relative, path in mine.items():
        assert pq.read_table(path).equals(pq.read_table(reference[relative])), f"{relative} differs"
    online, clean_online = online_rows(settings), online_rows(clean)
    assert online == clean_online, "the online store differs from a clean run's"

    observed(
        f"task killed mid-`{stage}` ({crash['at']}, SIGKILL)",
        "no partial file visible; the retry completes; partitions and online values equal a clean run's",
        f"killed: {what}; "
        f"{visible_after_kill} file(s) of the day visible after the kill, all complete; "
        f"{len(leftovers)} hidden temp file(s) left; online store {'partly written' if partial_online else 'untouched'}"
        f"; retry exit 0 in {retry_seconds:.1f} s; {len(mine)} files and "
        f"{sum(len(r) for r in online.values())} online rows equal to the clean run's",
    )
