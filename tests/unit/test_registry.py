"""Registry: MLflow runs, versions, aliases, model cards and the whole train flow, on embedded MLflow.

MLflow runs embedded: the default tracking URI of the settings (SQLite under a temporary ``MLOPS_HOME``, with
artifacts under ``$MLOPS_HOME/mlflow/artifacts``); the window is the 14 real January days of
``test_training.py`` (:func:`shared_window`). Each test registers its own model name, so tests do not depend on
each other's versions. The unreachable server is a closed loopback port.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from airflow_mlops import registry
from airflow_mlops.evaluation import predict_scores
from airflow_mlops.registry import RegistryError, TrainOutcome
from airflow_mlops.settings import Settings, load_settings
from airflow_mlops.specs import ModelSpec
from airflow_mlops.training import FitResult, TrainingSet, build_training_set, fit
from tests.unit.test_training import WINDOW_END, make_spec, shared_window

TAGS = {"airflow.dag_id": "train_flight_delay", "airflow.run_id": "manual__2013-01-15T00:00:00+00:00"}
#: Two depth-1 trees: a deliberately poor challenger.
WEAK = {"max_iter": 2, "max_depth": 1}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Settings:
    return shared_window(tmp_path_factory, nyc_cache_dir)


@pytest.fixture(scope="module")
def training_set(settings: Settings) -> TrainingSet:
    return build_training_set(make_spec(), WINDOW_END, settings=settings)


@pytest.fixture(scope="module")
def fitted(training_set: TrainingSet) -> FitResult:
    return fit(make_spec(), training_set)


@dataclass
class First:
    spec: ModelSpec
    outcome: TrainOutcome


@pytest.fixture(scope="module")
def first(settings: Settings) -> First:
    """The first model of ``delay_first``, trained through the whole flow (promoted on the absolute bar)."""
    spec = make_spec("delay_first")
    return First(spec, registry.train(spec.name, WINDOW_END, spec=spec, tags=TAGS, settings=settings))


def client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def card(settings: Settings, run_id: str, tmp_path: Path) -> str:
    path = client(settings).download_artifacts(run_id, registry.CARD_FILE, str(tmp_path))
    return Path(path).read_text(encoding="utf-8")


def versions(settings: Settings, name: str) -> list[int]:
    return sorted(int(v.version) for v in client(settings).search_model_versions(f"name = '{name}'"))


# --- first model ----------------------------------------------------------------------------------


def test_first_model_is_registered_gated_and_promoted(first: First, settings: Settings, tmp_path: Path) -> None:
    outcome = first.outcome
    ref = outcome.ref
    assert (ref.name, ref.version, ref.created) == ("delay_first", 1, True)
    assert outcome.decision.promote and outcome.promoted
    assert outcome.decision.reasons[0].startswith("AUC 0.")
    assert outcome.decision.reasons[0].endswith(">= 0.55 (bar)")
    assert "no champion yet: absolute thresholds only" in outcome.decision.reasons
    assert outcome.champion_before is None
    assert outcome.champion_after is not None and outcome.champion_after.version == 1
    assert registry.aliases(first.spec, settings) == {"challenger": 1, "champion": 1}
    assert registry.champion(first.spec, settings) == registry.ModelVersionRef("delay_first", 1, ref.run_id)
    assert set(outcome.seconds) >= {"training_set", "fit", "register", "decide", "promote", "total"}


def test_the_run_records_params_metrics_data_code_and_airflow_tags(first: First, settings: Settings) -> None:
    ref, summary = first.outcome.ref, first.outcome.training_set
    run = client(settings).get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    experiment = client(settings).get_experiment(run.info.experiment_id)
    assert experiment.name == "delay_first"
    assert experiment.artifact_location == (settings.home / "mlflow" / "artifacts" / "delay_first").as_uri()
    params = run.data.params
    assert params["algorithm"] == "hist_gradient_boosting"
    assert params["seed"] == "42"
    assert params["model.max_iter"] == "60"
    assert params["window_days"] == "14" and params["holdout_days"] == "4"
    assert params["feature_service"] == "flight_delay_v1"
    assert "temp" in params["features.numeric"].split(",") and "dest" in params["features.categorical"].split(",")
    metrics = run.data.metrics
    assert metrics["holdout.auc"] == pytest.approx(first.outcome.scores["auc"])
    assert metrics["gate.challenger.auc"] == pytest.approx(metrics["holdout.auc"])
    assert {"holdout.slice.origin.EWR.auc", "holdout.slice.carrier.UA.auc", "train.auc", "fit_seconds"} <= set(metrics)
    assert metrics["rows.holdout"] == summary["rows"]["holdout"]
    tags = run.data.tags
    assert tags["data.window_start"] == "2013-01-01" and tags["data.window_end"] == "2013-01-14"
    assert tags["data.holdout_start"] == "2013-01-11"
    assert tags["data.train_digest"] == summary["train_digest"]
    assert tags["data.holdout_digest"] == summary["holdout_digest"]
    assert tags["feature_service"] == "flight_delay_v1"
    assert tags["git_sha"] == tags["mlflow.source.git.commit"] == registry.git_sha()
    assert len(tags["git_sha"]) == 40
    assert tags["airflow.dag_id"] == TAGS["airflow.dag_id"] and tags["airflow.run_id"] == TAGS["airflow.run_id"]
    assert tags["gate.decision"] == "promote"
    assert len(tags[registry.TRAINING_KEY]) == 64
    version = client(settings).get_model_version("delay_first", "1")
    assert version.tags[registry.TRAINING_KEY] == tags[registry.TRAINING_KEY]
    assert version.tags["gate.decision"] == "promote"
    artifacts = {a.path for a in client(settings).list_artifacts(ref.run_id)}
    assert {"model_card.md", "gate_decision.json", "training_set.json", "holdout_scores.json"} <= artifacts


def test_the_model_loads_back_and_predicts_what_was_scored(
    first: First, settings: Settings, training_set: TrainingSet
) -> None:
    info = mlflow.models.get_model_info(first.outcome.ref.uri)
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    inputs = {column.name: column.type.name for column in info.signature.inputs.inputs}
    assert (inputs["temp"], inputs["month"], inputs["carrier"]) == ("double", "double", "string")
    model = registry.load_model(first.outcome.ref, settings)
    refit = fit(first.spec, training_set)  # deterministic: the same pipeline as the registered one
    holdout = training_set.holdout
    assert np.array_equal(predict_scores(model, holdout), predict_scores(refit.model, holdout))


def test_the_model_card_shows_data_features_metrics_and_decision(
    first: First, settings: Settings, tmp_path: Path
) -> None:
    text = card(settings, first.outcome.ref.run_id, tmp_path)
    assert text.startswith("# Model card: delay_first version 1")
    assert "Decision: **PROMOTE** against no champion (first model)" in text
    assert "## Decision: PROMOTE" in text
    assert "- no champion yet: absolute thresholds only" in text
    assert "Window 2013-01-01 .. 2013-01-14; holdout (time-based) from 2013-01-11" in text
    assert "flight_delay_v1" in text and "carrier_delay_rate_7d" in text
    assert "| auc |" in text and "| origin=EWR |" in text
    assert f"dag `{TAGS['airflow.dag_id']}`" in text


# --- champion / challenger ------------------------------------------------------------------------


def aliases_of(settings: Settings, spec: ModelSpec) -> dict[str, int]:
    return registry.aliases(spec, settings)


def test_a_worse_challenger_is_rejected_and_a_passing_one_moves_the_champion(
    settings: Settings, tmp_path: Path
) -> None:
    good = make_spec("delay_chain")
    v1 = registry.train(good.name, WINDOW_END, spec=good, settings=settings)
    assert v1.promoted and aliases_of(settings, good) == {"challenger": 1, "champion": 1}

    weak = make_spec("delay_chain", params=WEAK)
    v2 = registry.train(weak.name, WINDOW_END, spec=weak, settings=settings)
    assert (v2.ref.version, v2.ref.created, v2.decision.promote, v2.promoted) == (2, True, False, False)
    assert v2.decision.reasons[0].startswith("AUC improvement -")
    assert any(r.startswith("slice ") and "AUC worse by" in r for r in v2.decision.reasons)
    assert aliases_of(settings, good) == {"challenger": 2, "champion": 1}  # the champion did not move
    assert v2.champion_after == registry.champion(good, settings) and v2.champion_after.version == 1
    run = client(settings).get_run(v2.ref.run_id)
    assert run.data.tags["gate.decision"] == "reject"
    assert run.data.tags["gate.reasons"].splitlines() == list(v2.decision.reasons)
    assert run.data.tags["gate.champion_version"] == "1"
    text = card(settings, v2.ref.run_id, tmp_path)
    assert "## Decision: REJECT" in text and v2.decision.reasons[0] in text
    assert "| metric | challenger v2 | champion v1 | delta |" in text
    with pytest.raises(RegistryError, match="cannot be promoted: its gate decision is reject"):
        registry.promote(weak, v2.ref, settings=settings)
    assert aliases_of(settings, good) == {"challenger": 2, "champion": 1}

    # The same model with another seed: a new training (new key), exactly as good, so it passes (equal AUC,
    # min_improvement 0) and replaces the champion; the old champion keeps @previous.
    again = make_spec("delay_chain", algorithm={**good.algorithm.model_dump(), "seed": 7})
    v3 = registry.train(again.name, WINDOW_END, spec=again, settings=settings)
    assert (v3.ref.version, v3.decision.promote, v3.promoted) == (3, True, True)
    assert "AUC improvement +0.000 >= 0 (min_improvement" in v3.decision.reasons[1]
    assert aliases_of(settings, good) == {"challenger": 3, "champion": 3, "previous": 1}
    assert "against @champion version 1" in card(settings, v3.ref.run_id, tmp_path)


def test_promote_refuses_an_ungated_version_or_a_stale_gate(
    settings: Settings, training_set: TrainingSet, fitted: FitResult
) -> None:
    spec = make_spec("delay_promote")
    ref = registry.train_and_register(spec, training_set, fitted, settings=settings)
    with pytest.raises(RegistryError, match="missing"):
        registry.promote(spec, ref, settings=settings)
    assert aliases_of(settings, spec) == {"challenger": 1}
    assert registry.decide(spec, ref, training_set, settings=settings).promote
    other = make_spec("delay_promote", algorithm={**spec.algorithm.model_dump(), "seed": 9})
    second = registry.train_and_register(other, training_set, fitted, settings=settings)
    assert registry.decide(other, second, training_set, settings=settings).promote  # gated against no champion
    registry.promote(spec, ref, settings=settings)
    with pytest.raises(RegistryError, match=r"gated against champion none, but @champion is now 1"):
        registry.promote(other, second, settings=settings)
    assert aliases_of(settings, spec) == {"challenger": 2, "champion": 1}
    registry.promote(spec, ref, settings=settings)  # already champion: nothing to do
    assert aliases_of(settings, spec) == {"challenger": 2, "champion": 1}


# --- idempotency ----------------------------------------------------------------------------------


def test_registering_the_same_training_twice_gives_the_same_version(
    settings: Settings, training_set: TrainingSet, fitted: FitResult
) -> None:
    spec = make_spec("delay_idem")
    first = registry.train_and_register(spec, training_set, fitted, tags=TAGS, settings=settings)
    again = registry.train_and_register(spec, training_set, fitted, tags=TAGS, settings=settings)
    assert first.created and not again.created
    assert (again.version, again.run_id) == (first.version, first.run_id)
    assert versions(settings, spec.name) == [1]
    outcome = registry.train(spec.name, WINDOW_END, spec=spec, settings=settings)  # the whole flow, again
    assert (outcome.ref.version, outcome.ref.created) == (1, False)
    assert "fit" not in outcome.seconds  # found by its training key before fitting
    assert versions(settings, spec.name) == [1]
    forced = registry.train_and_register(spec, training_set, fitted, force=True, settings=settings)
    assert forced.created and forced.version == 2


def test_a_rerun_after_an_outage_completes_the_version_instead_of_duplicating_it(
    settings: Settings, training_set: TrainingSet, fitted: FitResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec("delay_outage")
    real = MlflowClient.set_registered_model_alias

    def outage(self: MlflowClient, *args: Any, **kwargs: Any) -> None:
        raise MlflowException("API request failed: connection reset by peer")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", outage)
    with pytest.raises(RegistryError, match=r"MLflow at sqlite:///.*registering delay_outage failed"):
        registry.train_and_register(spec, training_set, fitted, settings=settings)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    assert versions(settings, spec.name) == [1]  # registered before the outage hit
    version = client(settings).get_model_version(spec.name, "1")
    assert client(settings).get_run(version.run_id).info.status == "FAILED"
    assert aliases_of(settings, spec) == {}

    ref = registry.train_and_register(spec, training_set, fitted, settings=settings)
    assert (ref.version, ref.created, ref.run_id) == (1, False, version.run_id)
    assert versions(settings, spec.name) == [1]
    assert aliases_of(settings, spec) == {"challenger": 1}
    assert client(settings).get_run(ref.run_id).info.status == "FINISHED"


# --- MLflow unreachable ---------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_mlflow_is_a_clear_error_and_moves_nothing(
    first: First, settings: Settings, training_set: TrainingSet, fitted: FitResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{closed_port()}"
    down = load_settings({"MLOPS_HOME": str(settings.home), "MLOPS_MLFLOW_TRACKING_URI": uri})
    before = aliases_of(settings, first.spec)
    calls = {
        "champion": lambda: registry.champion(first.spec, down),
        "register": lambda: registry.train_and_register(first.spec, training_set, fitted, settings=down),
        "decide": lambda: registry.decide(first.spec, first.outcome.ref, training_set, settings=down),
        "promote": lambda: registry.promote(first.spec, first.outcome.ref, settings=down),
        "train": lambda: registry.train(first.spec.name, WINDOW_END, spec=first.spec, settings=down),
    }
    for name, call in calls.items():
        started = time.perf_counter()
        with pytest.raises(RegistryError, match=f"MLflow at {uri}: connecting failed") as err:
            call()
        assert "Connection refused" in str(err.value), name
        assert time.perf_counter() - started < 30, name
    assert aliases_of(settings, first.spec) == before
    assert versions(settings, first.spec.name) == [1]


# --- trusted loading -------------------------------------------------------------------------------


def test_a_tampered_champion_is_refused_at_load_and_nothing_is_promoted(settings: Settings) -> None:
    """The version's ``model.sha256`` is the stored file's; a file changed afterwards is never loaded or replaced."""
    from urllib.parse import urlparse

    from airflow_mlops.model_files import DIGEST_TAG, UntrustedModelError, model_file
    from airflow_mlops.zones import file_sha256

    spec = make_spec("delay_tampered")
    outcome = registry.train(spec.name, WINDOW_END, spec=spec, settings=settings)
    assert outcome.promoted
    mlflow_client = client(settings)
    version = mlflow_client.get_model_version(spec.name, str(outcome.ref.version))
    model_id = version.source.removeprefix("models:/")
    stored = model_file(Path(urlparse(mlflow_client.get_logged_model(model_id).artifact_location).path))
    assert version.tags[DIGEST_TAG] == file_sha256(stored)
    assert registry.load_model(outcome.ref, settings) is not None

    stored.write_bytes(stored.read_bytes() + b"\0")  # whoever can write the artifact store
    with pytest.raises(UntrustedModelError, match="changed after registration"):
        registry.load_model(outcome.ref, settings)
    with pytest.raises(UntrustedModelError):  # the gate scores the champion: it refuses, nothing moves
        registry.train(spec.name, WINDOW_END, spec=spec, force=True, settings=settings)
    assert registry.aliases(spec, settings)[registry.CHAMPION] == outcome.ref.version
