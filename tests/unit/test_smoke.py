"""The smoke test's comparison while the online store changes under it (a materialization mid-call).

The endpoint and the offline scoring both look features up online; a day materialized between the
endpoint's lookup and the offline one made a good model fail. Here the store is a dict and the model
scores ``temp / 100``: the registry model and the endpoint are stand-ins (no server, no MLflow), so what is
tested is only the comparison logic of :func:`airflow_mlops.deploy.smoke.smoke_test`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from airflow_mlops import registry, serving
from airflow_mlops.deploy import smoke
from airflow_mlops.deploy.base import Deployment
from airflow_mlops.settings import PROJECT_ROOT, Settings, load_settings
from airflow_mlops.specs import ModelSpec, load_spec

FLIGHT = {
    "carrier": "UA",
    "flight": 1497,
    "tailnum": "N75435",
    "origin": "EWR",
    "dest": "IAH",
    "distance": 1400.0,
    "sched_dep_time": 525,
    "time_hour": pd.Timestamp("2013-01-14T10:00:00Z"),
}
DEPLOYMENT = Deployment(target="local", model="flight_delay", version=3, bento_tag="flight-delay:x", endpoint="-")


class Store:
    """The online store: one feature, and materializations scheduled by the number of lookups made."""

    def __init__(self, temp: float, changes: dict[int, float]) -> None:
        self.temp, self.changes, self.lookups = temp, changes, 0

    def lookup(self) -> float:
        self.lookups += 1
        value = self.temp
        self.temp = self.changes.get(self.lookups, self.temp)  # a materialization right after this lookup
        return value


class Target:
    """The staged endpoint: scores what the store holds when it is called."""

    def __init__(self, store: Store) -> None:
        self.store, self.calls = store, 0

    def invoke(self, deployment: Deployment, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return {
            "predictions": [
                {"delay_probability": self.store.temp / 100, "model_version": deployment.version}
                for _ in payload["flights"]
            ]
        }


@pytest.fixture
def spec() -> ModelSpec:
    return load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")


@pytest.fixture
def fake_predictor(monkeypatch: pytest.MonkeyPatch) -> Callable[[Store], None]:
    def install(store: Store) -> None:
        class FakePredictor:
            def __init__(self, spec: ModelSpec, *args: Any, **kwargs: Any) -> None:
                self.schema = serving.request_schema(spec)  # the real request schema of the spec

            def lookup(self, flights: pd.DataFrame) -> pd.DataFrame:
                return pd.DataFrame({"temp": [store.lookup()] * len(flights)}, index=flights.index)

            def scores(self, flights: pd.DataFrame, served: pd.DataFrame) -> Any:
                return (served["temp"] / 100).to_numpy()

        monkeypatch.setattr(serving, "Predictor", FakePredictor)
        monkeypatch.setattr(registry, "load_model", lambda ref, settings=None: None)
        monkeypatch.setattr(smoke.time, "sleep", lambda seconds: None)

    return install


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return load_settings({"MLOPS_HOME": str(tmp_path)})


def test_a_materialization_during_the_call_is_retried_not_failed(
    spec: ModelSpec, settings: Settings, fake_predictor: Callable[[Store], None]
) -> None:
    store = Store(50.0, {1: 60.0})  # the day lands between the first lookup and the endpoint call
    fake_predictor(store)
    target = Target(store)
    result = smoke.smoke_test(spec, target, DEPLOYMENT, pd.DataFrame([FLIGHT]), settings=settings)  # type: ignore[arg-type]
    assert result.passed, result.failures
    assert target.calls == 2 and result.max_abs_diff < 1e-12


def test_a_store_that_never_settles_fails_with_the_reason(
    spec: ModelSpec, settings: Settings, fake_predictor: Callable[[Store], None]
) -> None:
    store = Store(50.0, {n: 50.0 + n for n in range(1, 100, 2)})  # changes during every call
    fake_predictor(store)
    target = Target(store)
    result = smoke.smoke_test(spec, target, DEPLOYMENT, pd.DataFrame([FLIGHT]), settings=settings)  # type: ignore[arg-type]
    assert not result.passed and target.calls == smoke.STABLE_ATTEMPTS
    assert any("online store changed during each" in failure for failure in result.failures)


def test_a_wrong_answer_on_a_stable_store_still_fails(
    spec: ModelSpec, settings: Settings, fake_predictor: Callable[[Store], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(50.0, {})
    fake_predictor(store)
    target = Target(store)
    monkeypatch.setattr(
        target, "invoke", lambda d, p: {"predictions": [{"delay_probability": 0.9, "model_version": d.version}]}
    )
    result = smoke.smoke_test(spec, target, DEPLOYMENT, pd.DataFrame([FLIGHT]), settings=settings)  # type: ignore[arg-type]
    assert not result.passed and "endpoint 0.900000 vs offline 0.500000" in result.failures[0]
