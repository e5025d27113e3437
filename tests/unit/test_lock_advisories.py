"""The lock pins every package at or above the fix of each advisory the README lists.

The table is the README's ("Security"): one row per advisory, the package as PyPI names it and the first
version with the fix. Offline, no advisory database is consulted; ``pip-audit -r requirements.lock`` does that
where there is network.
"""

from __future__ import annotations

import re

from packaging.version import Version

from airflow_mlops.settings import PROJECT_ROOT

ROW = re.compile(r"^\| ([a-z0-9-]+) \| ((?:GHSA|CVE)-[^|]+) \| (\d+(?:\.\d+)+) \|$")
PIN = re.compile(r"^([a-z0-9-]+)==([^ ]+) \\$")


def _advisories() -> list[tuple[str, str, Version]]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    return [(m[1], m[2].strip(), Version(m[3])) for m in map(ROW.match, readme.splitlines()) if m]


def _pins() -> dict[str, Version]:
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    return {m[1]: Version(m[2]) for m in map(PIN.match, lock.splitlines()) if m}


def _below(advisories: list[tuple[str, str, Version]], pins: dict[str, Version]) -> list[str]:
    return [
        f"{package}=={pins.get(package)} is below {fixed} ({advisory})"
        for package, advisory, fixed in advisories
        if package not in pins or pins[package] < fixed
    ]


def test_the_lock_is_at_or_above_every_listed_fix() -> None:
    advisories, pins = _advisories(), _pins()
    assert {package for package, _, _ in advisories} >= {"apache-airflow-core", "mlflow", "bentoml", "feast", "skops"}
    assert len(pins) > 300  # the whole lock was read
    assert _below(advisories, pins) == []


def test_a_pin_below_a_fix_or_a_missing_package_is_reported() -> None:
    advisories = _advisories()
    pins = {**_pins(), "bentoml": Version("1.4.36")}
    del pins["skops"]
    assert _below(advisories, pins) == [
        "bentoml==1.4.36 is below 1.4.37 (CVE-2026-33744 (shell commands through `docker.system_packages`))",
        "skops==None is below 0.13.0 (CVE-2025-54886 (`Card.get_model` falls back to joblib))",
    ]
