"""The engine knows no use case: not one line of the engine, the DAG files or the plugin names the flights.

The engine knows zones, partitions, suites, feature tables, specs, versions and bentos; the flights example
lives in configuration (``include/datasets/flights.yaml``, its suites, ``include/models/flight_delay.yaml``,
``feature_repo/flights.py``) and its own code (``include/datasets/nyc_flights.py``). Docstrings and comments
count too: an example in a docstring names a generic use, not the shipped one.
"""

from __future__ import annotations

import re

from airflow_mlops.settings import PROJECT_ROOT

#: The words of the flights use case (the same pattern the generic-engine issue counts with ``grep -iE``).
VOCABULARY = re.compile(
    r"flight|tailnum|carrier|sched_dep|dep_delay|arr_delay|weather|nycflights|America/New_York|EWR|JFK|LGA",
    re.IGNORECASE,
)
ROOTS = ("include/airflow_mlops", "dags", "plugins")


def _naming_lines() -> list[str]:
    found = []
    for root in ROOTS:
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if VOCABULARY.search(line):
                    found.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    return found


def test_the_engine_names_no_use_case() -> None:
    found = _naming_lines()
    assert found == [], "move use-case knowledge to configuration or user code:\n" + "\n".join(found[:20])
    # The roots are where the code is (else nothing would be found for the wrong reason).
    assert all(any((PROJECT_ROOT / root).rglob("*.py")) for root in ROOTS)


def test_the_pattern_finds_the_use_case_where_it_lives() -> None:
    """The same scan over the example's own code finds it: the test can fail."""
    example = (PROJECT_ROOT / "include" / "datasets" / "nyc_flights.py").read_text(encoding="utf-8")
    assert sum(1 for line in example.splitlines() if VOCABULARY.search(line)) > 10
