"""The MLflow server killed (SIGKILL, every process) in the middle of ``register`` and of ``promote``.

A real ``mlflow server`` on a free loopback port, its store a fresh PostgreSQL database of the machine's server and
its artifacts proxied into a folder, is killed from inside the engine's own call, at an exact step:

- ``register``, before the version is created (``mlflow.register_model``): the run and model are logged, no version;
- ``register``, after the version is created and before it is finished (``update_model_version``): the version
  exists, its run never ended, no ``@challenger``;
- ``promote``, between its two alias writes (``@previous`` written, ``@champion`` not).

Each time the call fails with a :class:`~airflow_mlops.registry.RegistryError` naming the server; a server
restarted on the same store shows ``@champion`` where it was, and the retry (the same call, as the task's retry makes
it) ends with one version per training, never two, and the aliases where a clean run puts them.

The same server behind the suite's HTTP proxy (:mod:`tests.faults.http_proxy`), which fails only the requests for a
logged model's files (503, or a hang past the client's timeout) while the rest of MLflow answers: ``register``'s
``log_model`` fails before any version exists, and ``package`` (in a task process of its own) fails naming the store,
records no bento; each retry then completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import psutil
import pytest
from mlflow import MlflowClient

from airflow_mlops import registry
from airflow_mlops.ingest import file_sha256
from airflow_mlops.registry import RegistryError
from airflow_mlops.settings import PROJECT_ROOT, Settings
from airflow_mlops.specs import ModelSpec
from airflow_mlops.training import build_training_set, fit
from tests.faults.http_proxy import HttpFaultProxy, HttpMode
from tests.integration.conftest import fresh_postgres_database
from tests.integration.test_training_server import CRIPPLED, MODEL, Mlflow, server_spec
from tests.unit.conftest import file_stores
from tests.unit.test_training import WINDOW_END, shared_window

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning"),
]


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Settings:
    """A home whose validated zone holds 14 real January days and whose Feast feature tables are built."""
    return shared_window(tmp_path_factory, nyc_cache_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, window: Settings) -> Iterator[Mlflow]:
    with fresh_postgres_database() as database, pytest.MonkeyPatch.context() as mp:
        # One attempt per call: the client's own retries (7, with backoff) would only make the outage longer.
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        runtime = Mlflow(tmp_path_factory.mktemp("mlflow-server"), database, window)
        runtime.start()
        try:
            yield runtime
        finally:
            runtime.stop()
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def kill_server(runtime: Mlflow) -> None:
    """SIGKILL every process of the server (gunicorn's workers first, then their parent); wait until gone."""
    assert runtime.server is not None
    root = psutil.Process(runtime.server.pid)
    processes = [*root.children(recursive=True), root]
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)


def killing_before(runtime: Mlflow, target: Any, name: str, when: Callable[..., bool] = lambda *a, **k: True) -> Any:
    """A stand-in for ``target.name`` that kills the server and then makes the real call (which fails)."""
    original = getattr(target, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            kill_server(runtime)
        return original(*args, **kwargs)

    return call


def versions_with_key(runtime: Mlflow, key: str) -> list[int]:
    client = MlflowClient(tracking_uri=runtime.url, registry_uri=runtime.url)
    found = client.search_model_versions(f"name = '{MODEL}' and tags.{registry.TRAINING_KEY} = '{key}'")
    return sorted(int(v.version) for v in found)


def good_spec(**params: object) -> ModelSpec:
    """The integration spec with an absolute bar any real model clears (the first champion is crippled)."""
    spec = server_spec(**params)
    return spec.model_copy(update={"quality": spec.quality.model_copy(update={"bar": 0.5})})


@pytest.fixture(scope="module")
def crippled_champion(server: Mlflow) -> registry.ModelVersionRef:
    """Version 1, a one-tree model that clears the 0.5 bar, as @champion: any real challenger beats it."""
    outcome = registry.train(MODEL, WINDOW_END, spec=good_spec(**CRIPPLED), settings=server.settings())
    assert outcome.promoted, outcome.decision.reasons
    return outcome.ref


@pytest.mark.parametrize(
    ("where", "target", "name"),
    [
        pytest.param("before the version is created", mlflow, "register_model", id="before-version"),
        pytest.param("after the version is created", MlflowClient, "update_model_version", id="after-version"),
    ],
)
def test_mlflow_killed_during_register_moves_no_alias_and_the_retry_registers_one_version(
    where: str,
    target: Any,
    name: str,
    server: Mlflow,
    crippled_champion: registry.ModelVersionRef,
    observed: Callable[[str, str, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = good_spec(max_iter=40 if target is mlflow else 50)  # one training per case: its own key
    settings = server.settings()
    training_set = build_training_set(spec, WINDOW_END, settings=settings)
    key = registry.training_key(spec, training_set)
    result = fit(spec, training_set)
    aliases_before = registry.aliases(spec, settings)

    with monkeypatch.context() as mp:
        mp.setattr(target, name, killing_before(server, target, name))
        started = time.monotonic()
        with pytest.raises(RegistryError, match=f"MLflow at {server.url}") as failure:
            registry.train_and_register(spec, training_set, result, settings=settings)
        failed_in = time.monotonic() - started

    server.start()  # the same store and artifacts, a new port
    settings = server.settings()
    assert registry.aliases(spec, settings) == aliases_before  # no alias moved
    left = versions_with_key(server, key)
    assert len(left) == (0 if target is mlflow else 1), left  # killed before / after the version was created
    assert registry.existing_version(spec, training_set, settings=settings) is None  # nothing finished to reuse

    ref = registry.train_and_register(spec, training_set, result, settings=settings)
    assert versions_with_key(server, key) == [ref.version]  # one version for the training, not two
    if left:
        assert ref.version == left[0] and not ref.created  # the unfinished version was completed, not replaced
    after = registry.aliases(spec, settings)
    assert after == {**aliases_before, "challenger": ref.version}
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    assert client.get_run(ref.run_id).info.status == "FINISHED"

    observed(
        f"MLflow server killed during `register`, {where}",
        "a clear failure; no alias moves; the retry registers one version, not two",
        f"failed in {failed_in:.1f} s: {str(failure.value).splitlines()[0][:90]}...; aliases unchanged "
        f"({', '.join(f'@{a} v{v}' for a, v in sorted(aliases_before.items()))}); "
        f"{len(left)} version(s) left by the failed attempt; after the retry 1 version with the training's key "
        f"(v{ref.version}, {'completed' if left else 'registered'}), @challenger v{ref.version}",
    )


def test_mlflow_killed_during_promote_keeps_the_champion_and_the_retry_completes_the_move(
    server: Mlflow,
    crippled_champion: registry.ModelVersionRef,
    observed: Callable[[str, str, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = good_spec(max_iter=60)
    settings = server.settings()
    training_set = build_training_set(spec, WINDOW_END, settings=settings)
    ref = registry.train_and_register(spec, training_set, fit(spec, training_set), settings=settings)
    decision = registry.decide(spec, ref, training_set, settings=settings)
    assert decision.promote, decision.reasons
    champion_before = registry.champion(spec, settings)
    assert champion_before is not None and champion_before.version != ref.version

    def champion_write(*args: Any, **kwargs: Any) -> bool:
        return registry.CHAMPION in (*args, *kwargs.values())

    with monkeypatch.context() as mp:
        mp.setattr(
            MlflowClient,
            "set_registered_model_alias",
            killing_before(server, MlflowClient, "set_registered_model_alias", champion_write),
        )
        with pytest.raises(RegistryError, match=f"MLflow at {server.url}"):
            registry.promote(spec, ref, settings=settings)

    server.start()
    settings = server.settings()
    during = registry.aliases(spec, settings)
    assert during["champion"] == champion_before.version  # @champion never moved
    assert during.get("previous") in (None, champion_before.version)  # at most, @previous already names it

    registry.promote(spec, ref, settings=settings)  # the retry
    after = registry.aliases(spec, settings)
    assert after["champion"] == ref.version and after["previous"] == champion_before.version

    observed(
        "MLflow server killed during `promote`, between its two alias writes",
        "@champion does not move until the promotion completes; the retry completes it",
        f"after the kill @champion v{during['champion']} (unchanged), @previous "
        f"{'v' + str(during['previous']) if during.get('previous') else 'unset'}; after the retry @champion "
        f"v{after['champion']}, @previous v{after['previous']}",
    )


def test_two_promotions_at_once_move_the_champion_once(
    server: Mlflow, observed: Callable[[str, str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two challengers gated against the same champion (a request and a drift event trained at once) promoted at
    the same moment: one moves ``@champion``, the other is refused, ``@previous`` names the old champion.

    Each promotion is held for a second right after it reads ``@champion`` (where a slow registry would hold it),
    so without the lock both would read the same champion and both would "win"."""
    model = "flight_delay_race"
    settings = server.settings()

    def renamed(spec: ModelSpec) -> ModelSpec:
        return spec.model_copy(update={"name": model})

    first = registry.train(model, WINDOW_END, spec=renamed(good_spec(**CRIPPLED)), settings=settings)
    assert first.promoted, first.decision.reasons
    challengers = []
    for iterations in (70, 80):
        spec = renamed(good_spec(max_iter=iterations))
        training_set = build_training_set(spec, WINDOW_END, settings=settings)
        ref = registry.train_and_register(spec, training_set, fit(spec, training_set), settings=settings)
        assert registry.decide(spec, ref, training_set, settings=settings).promote
        challengers.append((spec, ref))

    read_champion = registry._alias

    def slow_alias(client: MlflowClient, name: str, alias: str) -> Any:
        found = read_champion(client, name, alias)
        if alias == registry.CHAMPION:
            time.sleep(1.0)
        return found

    monkeypatch.setattr(registry, "_alias", slow_alias)
    outcomes: dict[int, str] = {}

    def promote(spec: ModelSpec, ref: registry.ModelVersionRef) -> None:
        try:
            registry.promote(spec, ref, settings=settings)
            outcomes[ref.version] = "promoted"
        except RegistryError as exc:
            outcomes[ref.version] = f"refused: {exc}"

    threads = [threading.Thread(target=promote, args=pair) for pair in challengers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    promoted = [v for v, o in outcomes.items() if o == "promoted"]
    assert len(outcomes) == 2 and len(promoted) == 1, outcomes
    refused = next(o for o in outcomes.values() if o != "promoted")
    assert "gate it again; nothing moved" in refused
    aliases = registry.aliases(challengers[0][0], settings)
    assert aliases["champion"] == promoted[0] and aliases["previous"] == first.ref.version

    observed(
        "two trainings of one model promoted at once (each held 1 s after reading @champion)",
        "at most one promotion; @champion and @previous consistent",
        f"v{promoted[0]} promoted, the other refused (`{refused.removeprefix('refused: ')[:110]}`); "
        f"@champion v{aliases['champion']}, @previous v{aliases['previous']} (the champion both were gated against)",
    )


@pytest.fixture
def artifact_proxy(server: Mlflow) -> Iterator[HttpFaultProxy]:
    """An HTTP proxy in front of the server (its current port); the engine is pointed at the proxy."""
    proxy = HttpFaultProxy(server.url, hang_seconds=ARTIFACT_HANG_SECONDS).start()
    try:
        yield proxy
    finally:
        proxy.stop()


#: How long the proxy holds a request it hangs: longer than the client's timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT``).
ARTIFACT_HANG_SECONDS = 30
#: The part of an artifact route that names a logged model's files (``<experiment>/models/<model id>/artifacts``).
MODEL_ARTIFACTS = ("/mlflow-artifacts/", "/models/")


@pytest.mark.parametrize(("mode", "iterations"), [("error", 110), ("hang", 120)])
def test_artifact_store_failing_during_log_model_leaves_no_version_and_the_retry_registers_one(
    mode: HttpMode,
    iterations: int,
    server: Mlflow,
    crippled_champion: registry.ModelVersionRef,
    artifact_proxy: HttpFaultProxy,
    observed: Callable[[str, str, str], None],
) -> None:
    """The model's files cannot be stored (every request for them answers 503, or hangs past the client's
    timeout) while the run's own artifacts and the registry still answer: ``train_and_register`` fails naming the
    server; no version exists for the training, so no alias can reach one; the run is marked FAILED."""
    spec = good_spec(max_iter=iterations)
    settings = server.settings(artifact_proxy.url)
    training_set = build_training_set(spec, WINDOW_END, settings=settings)
    key = registry.training_key(spec, training_set)
    result = fit(spec, training_set)
    aliases_before = registry.aliases(spec, settings)

    artifact_proxy.fail(mode, *MODEL_ARTIFACTS)
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"MLflow at {artifact_proxy.url}: registering {MODEL} failed") as failure:
        registry.train_and_register(spec, training_set, result, settings=settings)
    failed_in = time.monotonic() - started
    refused = sum(artifact_proxy.failed.values())
    assert refused >= 1, "the fault never fired: the model's files took another route"

    assert versions_with_key(server, key) == []  # nothing registered, so nothing an alias could name
    assert registry.aliases(spec, settings) == aliases_before
    client = server.client()
    runs = client.search_runs(
        [registry._experiment_id(client, spec, settings)], f"tags.{registry.TRAINING_KEY} = '{key}'"
    )
    assert [run.info.status for run in runs] == ["FAILED"]

    artifact_proxy.heal()
    ref = registry.train_and_register(spec, training_set, result, settings=settings)  # the task's retry
    assert ref.created and versions_with_key(server, key) == [ref.version]
    assert registry.aliases(spec, settings) == {**aliases_before, "challenger": ref.version}

    what = "answering 503" if mode == "error" else f"hanging ({ARTIFACT_HANG_SECONDS} s, client timeout 10 s)"
    observed(
        f"artifact store {what} for the model's files during `log_model`",
        "a clear failure; no version reachable by an alias; the retry registers one version",
        f"failed in {failed_in:.1f} s after {refused} refused request(s): "
        f"`{gist(str(failure.value))}`; 0 versions with the training's key, aliases unchanged, "
        f"the run FAILED; after the retry 1 version (v{ref.version}, @challenger)",
    )


def gist(message: str) -> str:
    """A long error message, one line: its start and its end (where the cause is)."""
    flat = " ".join(message.split())
    return flat if len(flat) <= 240 else f"{flat[:140]} … {flat[-100:]}"


def package_in_a_task(server: Mlflow, url: str, ref: registry.ModelVersionRef) -> subprocess.CompletedProcess[str]:
    """``package`` of ``ref`` in a process of its own (:mod:`tests.faults.package_task`), MLflow at ``url``."""
    env = {
        **os.environ,
        "MLOPS_HOME": str(server.window.home),
        **file_stores(server.window.home),
        "MLOPS_MLFLOW_TRACKING_URI": url,
    }
    env.pop("BENTOML_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "tests.faults.package_task", ref.name, str(ref.version), ref.run_id],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_artifact_store_failing_during_packaging_fails_clearly_and_records_no_bento(
    server: Mlflow,
    crippled_champion: registry.ModelVersionRef,
    artifact_proxy: HttpFaultProxy,
    observed: Callable[[str, str, str], None],
) -> None:
    """The champion's files cannot be read while it is packaged (503, then a hang past the client's timeout):
    the task fails with a :class:`~airflow_mlops.packaging.PackagingError` naming the version and the step, the
    version carries no ``bento.*`` tag (nothing a deployment would pick up), the aliases stay; the retry packages."""
    settings = server.settings()
    ref = crippled_champion
    aliases_before = registry.aliases(server_spec(), settings)
    seen = []
    for mode in ("error", "hang"):
        artifact_proxy.fail(mode, *MODEL_ARTIFACTS)
        started = time.monotonic()
        task = package_in_a_task(server, artifact_proxy.url, ref)
        seen.append((mode, time.monotonic() - started, task))
        assert task.returncode == 1, (task.stdout, task.stderr[-3000:])
        failure = f"PackagingError: {MODEL} v{ref.version}: MLflow at {artifact_proxy.url}: downloading {ref.uri}"
        assert failure in task.stderr, task.stderr[-3000:]
        assert not any(k.startswith("bento.") for k in registry.version_tags(ref, settings))
        assert registry.aliases(server_spec(), settings) == aliases_before
    refused = sum(artifact_proxy.failed.values())

    artifact_proxy.heal()
    task = package_in_a_task(server, artifact_proxy.url, ref)  # the retry
    assert task.returncode == 0, task.stderr[-3000:]
    bento = json.loads(task.stdout.strip().splitlines()[-1])
    tags = registry.version_tags(ref, settings)
    assert tags["bento.tag"] == bento["tag"] and tags["bento.digest"] == file_sha256(Path(bento["archive"]))

    observed(
        "artifact store answering 503, then hanging past the client's timeout, while the champion is packaged",
        "a clear failure; nothing recorded for deployment; the retry packages",
        "; ".join(
            f"{mode}: the task failed in {took:.1f} s: `{gist(task.stderr.split('PackagingError: ', 1)[1])}`"
            for mode, took, task in seen
        )
        + f" ({refused} refused requests); no `bento.*` tag on v{ref.version}, aliases unchanged; the retry "
        f"packaged {bento['tag']}",
    )
