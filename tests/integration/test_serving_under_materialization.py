"""Serving under materialization: the bento endpoint keeps answering while the online store is written.

Feast 0.67's ``materialize`` flips each feature view to ``MATERIALIZING`` in the registry while it writes;
unless the registry sets ``serve_features_while_materializing`` (feast issue #6780), online reads of that view
raise and the endpoint answers 500. (A file registry stores that state; Feast 0.67's SQL registry skips the
write, as it compares feature views without their state, so there the flag is a guard for later versions.)

The module state of :mod:`tests.integration.test_serving` (real January days, a trained champion, its bento
served by ``bentoml serve`` on a free port, stopped by process id) is reused. Five new real days are validated
and built here; a background thread sends ``/predict`` requests with real flights while the main thread
materializes those days into the same registry and online store, and another thread watches the registry.
The server only resolves its features again when its registry cache expires, so once the registry shows
``MATERIALIZING`` the days are materialized again until one cache TTL has passed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from airflow_mlops.features import build_features, feature_store, materialize_day, repo_config
from airflow_mlops.ingest import Nycflights13Source, partition_path
from airflow_mlops.serving import flights_payload
from airflow_mlops.settings import Settings
from tests.integration import test_serving
from tests.integration.test_serving import Served
from tests.unit.test_features import validate_days
from tests.unit.test_training import DAYS, WINDOW_END

#: Days delivered after the champion's window: validated and built before the load, materialized under it.
NEW_DAYS = [WINDOW_END + timedelta(days=n) for n in range(1, 6)]
#: Requests that must overlap the materialization window, so the test cannot pass without load.
MIN_OVERLAPPING = 20
MAX_LATENCY = 2.0
FLIGHTS_PER_REQUEST = 10

# The module fixtures of test_serving, bound here: this module gets a module state (home, champion, server) of its own.
nyc_cache_dir = test_serving.nyc_cache_dir
served = test_serving.served
server = test_serving.server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning"),
]


@dataclass(frozen=True)
class Answer:
    started: float
    finished: float
    status: int | None
    detail: str

    @property
    def latency(self) -> float:
        return self.finished - self.started


def _bodies(settings: Settings, days: list[date]) -> list[dict]:
    """``/predict`` bodies of real flights, ``FLIGHTS_PER_REQUEST`` each, from validated days."""
    bodies = []
    for day in days:
        frame = pd.read_parquet(partition_path(settings.validated_dir, "flights", day))
        for start in range(0, 5 * FLIGHTS_PER_REQUEST, FLIGHTS_PER_REQUEST):
            bodies.append(flights_payload(frame.iloc[start : start + FLIGHTS_PER_REQUEST]))
    return bodies


def _steady_load(url: str, bodies: list[dict], stop: threading.Event, answers: list[Answer]) -> None:
    """One client sending the bodies in turn, back to back, until ``stop``; every answer is recorded."""
    with httpx.Client(timeout=30) as client:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post(f"{url}/predict", json=bodies[n % len(bodies)])
                status, detail = response.status_code, response.text[:300]
            except httpx.HTTPError as exc:
                status, detail = None, f"{type(exc).__name__}: {exc}"
            answers.append(Answer(started, time.monotonic(), status, detail))
            n += 1


def _watch_registry(settings: Settings, stop: threading.Event, seen: list[float]) -> None:
    """Poll the shared registry, never a cache, and record each time a feature view is ``MATERIALIZING``."""
    from feast.feature_view import FeatureViewState

    store = feature_store(settings)
    while not stop.is_set():
        try:
            views = store.registry.list_feature_views(store.project, allow_cache=False)
        except Exception:  # a file registry read while it is rewritten: look again
            views = []
        if any(view.state == FeatureViewState.MATERIALIZING for view in views):
            seen.append(time.monotonic())
        stop.wait(0.05)


def _server_refresh_seconds(settings: Settings) -> float:
    """How long after a registry change the server is sure to have resolved its features again.

    Feast's online path reuses its resolution of a feature service (where the state gate runs) while the
    registry cache is within ``cache_ttl_seconds``, whatever the registry type (0 means forever).
    """
    ttl = repo_config(settings).registry.cache_ttl_seconds or 0
    return float(ttl) + 5.0 if ttl > 0 else 0.0


def test_predict_answers_while_days_are_materialized(served: Served, server: str, nyc_cache_dir: Path) -> None:
    settings = served.settings
    validate_days(settings, Nycflights13Source(nyc_cache_dir), NEW_DAYS)
    for day in NEW_DAYS:
        build_features("flights", day, settings=settings)
    bodies = _bodies(settings, [DAYS[-2], WINDOW_END, *NEW_DAYS])
    warm = httpx.post(f"{server}/predict", json=bodies[0], timeout=60)  # the server's first lookup is slower
    assert warm.status_code == 200, warm.text

    answers: list[Answer] = []
    materializing: list[float] = []  # when the registry showed a view MATERIALIZING
    stop = threading.Event()
    threads = [
        threading.Thread(target=_steady_load, args=(server, bodies, stop, answers), daemon=True),
        threading.Thread(target=_watch_registry, args=(settings, stop, materializing), daemon=True),
    ]
    refresh = _server_refresh_seconds(settings)
    materialized = 0
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        window_start = time.monotonic()
        days = iter(NEW_DAYS * 100)
        # The new days once; re-run them while the registry has shown MATERIALIZING for less than the time the
        # server takes to resolve its features again (the registry cache TTL), so that it is sure to see that state.
        while materialized < len(NEW_DAYS) or (materializing and time.monotonic() - materializing[0] < refresh):
            result = materialize_day(next(days), settings=settings)
            assert all(view["rows"] > 0 for view in result["views"].values()), result
            materialized += 1
        window_end = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    overlapping = [a for a in answers if a.started < window_end and a.finished > window_start]
    failed = [a for a in answers if a.status != 200]
    slow = [a for a in answers if a.latency > MAX_LATENCY]
    max_latency = max(a.latency for a in answers)
    print(
        f"\n{len(answers)} requests ({len(overlapping)} during {materialized} materializations, "
        f"{window_end - window_start:.1f} s): {len(failed)} not 200, max latency {max_latency:.3f} s; "
        f"the registry showed MATERIALIZING in {len(materializing)} polls"
    )
    assert len(overlapping) >= MIN_OVERLAPPING, (len(overlapping), window_end - window_start)
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, first: {failed[0].status} {failed[0].detail}"
    assert not slow, f"{len(slow)} requests slower than {MAX_LATENCY} s (max {max_latency:.3f} s)"
