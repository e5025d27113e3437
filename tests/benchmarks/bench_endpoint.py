"""The BentoML endpoint next to a bare FastAPI app doing the same work, and to in-process predict.

One request = one real flight (a validated row of the last materialized day, drawn at random from a pool):
the Feast online lookup of the ``flight_delay_v1`` service (SQLite online store, local profile), then the model.
Every condition serves the hot path (:meth:`airflow_mlops.serving.Predictor.score`: rows to model input without
pandas, the pipeline compiled by Treelite at load). Conditions, measured in one run with the same home, model version
and request pool:

* **in-process**: ``Predictor.score`` in a loop in this process (no HTTP): one flight on the hot path, one flight
  with the scikit-learn reference (``compiled=False``), and batches of 1,000 flights on the hot path; plus a
  profile of the hot path's steps (:func:`profile`);
* **bare FastAPI**: ``tests/benchmarks/bare_app.py`` under ``uvicorn`` (1 worker), ``POST /predict`` with the same
  body, pydantic models and :class:`~airflow_mlops.serving.Predictor`; nothing else: the floor of an HTTP server;
* **endpoint ``/predict``**: the real bento of the registered version (``packaging.package``), served by
  ``bentoml serve`` (``deploy.local.start_bento_server``: 1 worker, as the service declares), with its token check,
  admission limit, prediction log, metrics and body limit;
* **endpoint ``/predict_batch``**: the same bento's route behind BentoML adaptive batching;
* **endpoint ``/invocations``**: the SageMaker container contract on the same bento.

Load: locust (``tests/benchmarks/locust_predict.py``, ``FastHttpUser``, keep-alive, no think time: a closed loop
of N users) at concurrency 1, 16 and 64, ``BENCH_SECONDS`` (default 20) per point split into ``BENCH_ROUNDS``
(default 2) runs, the first ``WARMUP_SECONDS`` of each run dropped; the user records unrounded response times.
Runs are interleaved, so a change of machine load hits every condition alike. Afterwards the prediction log's
records are counted against the requests the endpoint answered. OpenMP is limited to one thread everywhere
(``BENCH_OMP_THREADS``, default 1).

Targets (issue 15, nothing asserts a timing): in process one flight p50 <= 5 ms and p99 <= 15 ms, 1,000 flights
<= 100 ms; endpoint ``/predict`` one flight at concurrency 1 p50 <= 10 ms and p99 <= 30 ms, >= 150 req/s at 16;
``/predict_batch`` at 64 >= 2x that with 0 failed requests; every answered request in the prediction log.

The state is built by the library in a temporary home: 20 real days (2013-01-01 .. 2013-01-20) written to the
validated zone (``tests/unit/test_features.py``: ``make_home`` / ``validate_days``, without the GX gate), their
feature tables built and materialized into the online store, a small model trained, registered and promoted
(``registry.train``: 14-day window, 3-day holdout, ``max_iter`` 100) and packaged. Every server is stopped by its
process id.

Run: ``.venv/bin/python -m tests.benchmarks.run endpoint`` (or ``-m tests.benchmarks.bench_endpoint [--seconds N]``).
The whole run takes about 2 minutes of setup plus 13 times ``BENCH_SECONDS`` (6-7 minutes by default).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from airflow_mlops.endpoint_auth import TOKEN_VARIABLE, auth_headers
from tests.benchmarks.report import REPO_ROOT, machine_info, write_section

if TYPE_CHECKING:
    from airflow_mlops.deploy.base import Bento
    from airflow_mlops.registry import ModelVersionRef
    from airflow_mlops.settings import Settings
    from airflow_mlops.specs import ModelSpec

NAME = "endpoint"
MODEL = "flight_delay"
SPEC_FILE = REPO_ROOT / "include" / "models" / f"{MODEL}.yaml"
DAYS = [date(2013, 1, 1) + timedelta(days=n) for n in range(20)]  # 2013-01-01 .. 2013-01-20
CONCURRENCY = (1, 16, 64)
DEFAULT_SECONDS = 20
WARMUP_SECONDS = 2.0
DEFAULT_ROUNDS = 2
POOL_SIZE = 500
WARMUP_REQUESTS = 30
BATCH_ROWS = 1000  #: the in-process batch (the request limit, ``serving.MAX_ROWS``)
# Targets (issue 15), on this 2-core machine; nothing asserts them.
INPROC_P50_MS, INPROC_P99_MS, INPROC_BATCH_MS = 5.0, 15.0, 100.0
ENDPOINT_P50_MS, ENDPOINT_P99_MS = 10.0, 30.0
MIN_RPS_16 = 150.0
MIN_BATCHING_GAIN = 2.0  #: ``/predict_batch`` at 64 against ``/predict`` at 16
#: OpenMP threads of the servers (``OMP_NUM_THREADS``); ``BENCH_OMP_THREADS=0`` keeps the default (one per core).
DEFAULT_OMP_THREADS = 1
BIN = Path(sys.executable).parent
LOCUST = str(BIN / "locust")
LOCUSTFILE = Path(__file__).resolve().parent / "locust_predict.py"
_ISOLATED_PREFIXES = ("MLOPS_", "AIRFLOW", "BENTOML_", "FEAST_")

BARE = "bare FastAPI"
ENDPOINT = "endpoint /predict"
BATCHED = "endpoint /predict_batch"
INVOKE = "endpoint /invocations"
INPROC_ONE = "in-process, hot path"
INPROC_DEFAULT = "in-process, scikit-learn reference"
INPROC_BATCH = f"in-process, hot path, {BATCH_ROWS} flights"


def log(message: str) -> None:
    print(f"[{NAME}] {message}", flush=True)


@contextmanager
def isolated_environ(updates: dict[str, str]) -> Generator[None]:
    """``os.environ`` without the caller's ``MLOPS_*``/``AIRFLOW*``/``BENTOML_*``/``FEAST_*`` variables, plus
    ``updates`` (what the library in this process and the servers it starts read); restored on exit."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(_ISOLATED_PREFIXES):
                del os.environ[name]
        os.environ.update(updates)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------------------------------------------- state


@dataclass
class State:
    settings: Settings
    spec: ModelSpec
    ref: ModelVersionRef
    bento: Bento
    bodies: list[dict[str, Any]]
    bodies_file: Path
    seconds: dict[str, float]


def write_spec(models_dir: Path) -> Path:
    """The shipped spec on a small window (14 days, 3-day holdout, 100 iterations, AUC bar 0.6)."""
    raw = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    raw["training"].update(window_days=14, holdout_days=3)
    raw["algorithm"]["params"]["max_iter"] = 100
    raw["quality"]["bar"] = 0.6
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / SPEC_FILE.name
    target.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return target


def request_pool(settings: Settings, day: date, size: int) -> list[dict[str, Any]]:
    """``size`` single-flight ``/predict`` bodies from ``day``'s validated flights (rows the schema accepts)."""
    import pandas as pd
    from pydantic import ValidationError

    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.serving import payload, request_schema
    from airflow_mlops.zones import partition_path

    schema = request_schema(model_spec(MODEL, settings), settings)
    frame = pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", day))
    rows = []
    for row in payload(schema, frame)["flights"]:
        try:
            schema.row.model_validate(row)
        except ValidationError:
            continue
        rows.append(row)
    random.Random(42).shuffle(rows)
    return [{"flights": [row]} for row in rows[:size]]


def prepare_state(root: Path) -> State:
    """Validated days, features in the online store, a champion and its bento, under ``root`` (see module doc).

    ``os.environ`` must already carry ``MLOPS_HOME=root/mlops-home`` and ``MLOPS_MODELS_DIR=root/models``.
    """
    from nyc_flights import Nycflights13Source

    from airflow_mlops import features, packaging, registry
    from airflow_mlops.settings import get_settings
    from airflow_mlops.specs import load_spec
    from tests.unit.test_features import make_home, validate_days

    seconds: dict[str, float] = {}
    mark = time.perf_counter()
    cache = root / "nyc-cache"
    source = Nycflights13Source(cache)
    for table in ("flights", "weather"):
        source.read(table, DAYS[0])  # converts the package's tables to parquet once
    spec_path = write_spec(root / "models")
    home = make_home(root, cache, {"MLOPS_MODELS_DIR": str(root / "models")}).home
    settings = get_settings()
    if settings.home != home or settings.models_dir != spec_path.parent:
        raise RuntimeError(f"MLOPS_HOME/MLOPS_MODELS_DIR must point into {root} before prepare_state")
    from airflow_mlops.embedded_db import ensure_started

    ensure_started(settings)  # the home's embedded PostgreSQL: MLflow store, Feast registry, prediction log
    validate_days(settings, source, DAYS)
    for day in DAYS:
        features.build_features("flights", day, settings=settings)
        features.materialize_day("flights", day, settings=settings)
    seconds["data"] = time.perf_counter() - mark
    log(f"{len(DAYS)} days validated, built and materialized in {seconds['data']:.0f} s")

    mark = time.perf_counter()
    spec = load_spec(spec_path)
    outcome = registry.train(MODEL, DAYS[-1], settings=settings, spec=spec)
    ref = registry.champion(spec, settings)
    if ref is None:
        raise RuntimeError(f"training did not promote a champion: {outcome.decision.to_dict()}")
    seconds["train"] = time.perf_counter() - mark
    log(f"trained and promoted {ref.name} v{ref.version} in {seconds['train']:.0f} s")

    mark = time.perf_counter()
    bento = packaging.package(spec, ref, settings=settings)
    seconds["package"] = time.perf_counter() - mark
    log(f"packaged {bento.tag} in {seconds['package']:.0f} s")

    bodies = request_pool(settings, DAYS[-1], POOL_SIZE)
    bodies_file = root / "bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    return State(settings, spec, ref, bento, bodies, bodies_file, seconds)


# -------------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    label: str
    pid: int
    url: str
    log: Path
    started_s: float


def start_bare(state: State, root: Path) -> Server:
    """``uvicorn`` (1 worker) serving ``bare_app`` for the champion, in its own session; once ``/readyz`` answers."""
    import httpx

    from airflow_mlops.deploy.local import stop_tree
    from airflow_mlops.processes import free_port

    port = free_port()
    log_path = root / "bare-app.log"
    env = {
        **os.environ,
        "BARE_APP_MODEL": state.spec.name,
        "BARE_APP_VERSION": str(state.ref.version),
        "BARE_APP_RUN_ID": state.ref.run_id,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    args = [sys.executable, "-m", "uvicorn", "--factory", "tests.benchmarks.bare_app:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    started = time.perf_counter()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bare app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return Server(BARE, proc.pid, url, log_path, time.perf_counter() - started)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_tree(proc.pid)
    raise RuntimeError(f"bare app not ready within 180 s:\n{log_path.read_text()[-3000:]}")


def start_endpoint(state: State) -> Server:
    from airflow_mlops.deploy.local import start_bento_server
    from airflow_mlops.processes import free_port

    started = time.perf_counter()
    record = start_bento_server(state.bento.tag, free_port(), state.settings, name=f"bench-{MODEL}")
    return Server(ENDPOINT, record["pid"], record["url"], Path(record["log"]), time.perf_counter() - started)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants, so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def check_route(url: str, path: str, body: dict[str, Any], count: int, headers: dict[str, str]) -> None:
    """``count`` warm-up requests; fail loudly if the route does not answer a prediction."""
    import httpx

    with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        for _ in range(count):
            response = client.post(path, json=body)
            if response.status_code != 200 or "delay_probability" not in response.text:
                raise RuntimeError(f"POST {url}{path} answered {response.status_code}: {response.text[:300]}")


# ---------------------------------------------------------------------------------------------- measurement


@dataclass
class Point:
    """One condition at one concurrency, summed over its rounds."""

    label: str
    users: int
    times_ms: list[float] = field(default_factory=list)  #: successful requests inside the measured windows
    window_s: float = 0.0  #: length of the measured windows
    wall_s: float = 0.0  #: whole runs (warm-up included), for the CPU shares
    cpu_s: float | None = None  #: CPU of the server's process tree (or of this process, in-process) over the runs
    client_cpu_s: float | None = None  #: CPU of locust over the runs
    answered: int = 0  #: successful requests over the runs (warm-up included), for CPU per request
    failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    round_throughputs: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def p99(self) -> float:
        return self.pct(0.99)

    @property
    def throughput(self) -> float:
        return len(self.times_ms) / self.window_s if self.window_s else 0.0

    @property
    def server_cores(self) -> float | None:
        return self.cpu_s / self.wall_s if self.cpu_s is not None and self.wall_s else None

    @property
    def client_cores(self) -> float | None:
        return self.client_cpu_s / self.wall_s if self.client_cpu_s is not None and self.wall_s else None

    @property
    def server_cpu_ms(self) -> float | None:
        """CPU per successful request."""
        return self.cpu_s * 1000 / self.answered if self.cpu_s is not None and self.answered else None


def locust_round(point: Point, server: Server, path: str, seconds: float, state: State, out: Path) -> None:
    """One locust run of ``point`` against ``server`` (``seconds`` s, the first ``WARMUP_SECONDS`` dropped)."""
    env = {
        **os.environ,
        "BENCH_LOCUST_BODIES": str(state.bodies_file),
        "BENCH_LOCUST_PATH": path,
        "BENCH_LOCUST_OUT": str(out),
        TOKEN_VARIABLE: state.settings.endpoint_token(),
    }
    users = str(point.users)
    args = [LOCUST, "-f", str(LOCUSTFILE), "--headless", "-u", users, "-r", users, "-t", f"{seconds:g}s"]
    args += ["--host", server.url, "--only-summary", "--loglevel", "WARNING"]
    out.unlink(missing_ok=True)
    cpu_before = tree_cpu_seconds(server.pid)
    started = time.monotonic()
    result = subprocess.run(
        args, cwd=out.parent, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    wall = time.monotonic() - started
    cpu = tree_cpu_seconds(server.pid) - cpu_before
    if not out.exists():
        raise RuntimeError(f"locust against {server.url}{path} wrote no samples (exit {result.returncode}):\n"
                           f"{result.stderr[-3000:]}")  # fmt: skip
    raw = json.loads(out.read_text())
    samples = [(s, rt, ok) for s, rt, ok in raw["samples"] if s]
    # The measured window: from WARMUP_SECONDS after the first request to the last answer; a request counts
    # (latency and throughput) when its answer arrives inside it.
    first = min(s for s, _, _ in samples)
    done = [(s + rt / 1000, rt, ok) for s, rt, ok in samples]
    last = max(d for d, _, _ in done)
    window_start = min(first + WARMUP_SECONDS, first + (last - first) / 2)
    window = last - window_start
    ok_times = [rt for d, rt, ok in done if ok and d >= window_start]
    point.times_ms += ok_times
    point.window_s += window
    point.wall_s += wall
    point.cpu_s = (point.cpu_s or 0.0) + cpu
    point.client_cpu_s = (point.client_cpu_s or 0.0) + raw["cpu_s"]
    point.answered += sum(ok for _, _, ok in samples)
    point.failures += sum(not ok for _, _, ok in samples)
    point.errors.update(raw.get("errors") or {})
    point.round_throughputs.append(len(ok_times) / window if window else 0.0)
    failed = f", {sum(not ok for _, _, ok in samples)} failed" if point.failures else ""
    log(
        f"  {point.label:<24} c={point.users:<3} p50 {statistics.median(ok_times) if ok_times else float('nan'):7.1f}"
        f" ms  {point.round_throughputs[-1]:6.1f} req/s  server {cpu / wall:.2f} cores, locust "
        f"{raw['cpu_s'] / wall:.2f}{failed}"
    )


def _predictor(state: State, compiled: bool = True) -> Any:
    from airflow_mlops.registry import load_model
    from airflow_mlops.serving import Predictor

    model = load_model(state.ref, state.settings)
    return Predictor(state.spec, model, state.ref.version, settings=state.settings, compiled=compiled)


def in_process_point(state: State, seconds: float, label: str, *, compiled: bool = True, rows: int = 1) -> Point:
    """``Predictor.score`` of ``rows`` flights back to back in this process for ``seconds`` (after a warm-up),
    compiled (the hot path the endpoint serves) or with the scikit-learn reference; OpenMP limited to one thread
    (as the servers run)."""
    from threadpoolctl import threadpool_limits

    predictor = _predictor(state, compiled)
    flights = [predictor.schema.row.model_validate(body["flights"][0]) for body in state.bodies]
    rng = random.Random(7)
    point = Point(label, 1)
    clock = time.perf_counter
    with threadpool_limits(limits=1):
        for _ in range(3 if rows > 1 else WARMUP_REQUESTS):
            predictor.score(rng.choices(flights, k=rows))
        deadline = clock() + seconds
        started, cpu_started = clock(), time.process_time()
        while clock() < deadline:
            batch = rng.choices(flights, k=rows)  # the pool has fewer than 1,000 flights
            mark = clock()
            predictor.score(batch)
            point.times_ms.append((clock() - mark) * 1000)
        point.window_s = clock() - started
        point.cpu_s = time.process_time() - cpu_started
    point.answered = len(point.times_ms)
    log(f"  {label:<24} c=1   p50 {point.p50:7.1f} ms  p99 {point.p99:7.1f} ms  {point.throughput:6.1f} calls/s")
    return point


#: The hot path's steps, in order, as :meth:`Predictor.score` runs them (``profile``).
STEPS = (
    ("request rows", "the validated rows to dicts, event time in UTC, local date and clock"),
    ("online lookup", "`features.online_features`: one Feast provider `online_read` per feature view of the service"),
    ("model input", "the model's columns from the rows and the served features, encoded into one float matrix"),
    ("model", "Treelite's GTIL over the matrix (one thread)"),
    ("predictions", "one pydantic `Prediction` per row, with its request id"),
    ("log records", "`Scored.log_records`: one dict per row for the prediction log"),
)


def profile(state: State, rows: int, calls: int) -> dict[str, float]:
    """Median milliseconds of each step of :data:`STEPS` over ``calls`` calls of ``rows`` flights, in process."""
    import uuid

    import treelite
    from threadpoolctl import threadpool_limits

    predictor = _predictor(state)
    flights = [predictor.schema.row.model_validate(body["flights"][0]) for body in state.bodies]
    rng = random.Random(11)
    schema = predictor.schema
    times: dict[str, list[float]] = {name: [] for name, _ in STEPS}
    clock = time.perf_counter
    with threadpool_limits(limits=1):
        for n in range(calls + 3):
            batch = rng.choices(flights, k=rows)
            scored = predictor.score(batch)  # not timed: a real Scored for the log step
            marks = [clock()]
            inputs, local = predictor._inputs(batch)
            marks.append(clock())
            served = predictor._lookup(inputs)
            marks.append(clock())
            matrix = predictor.compiled.matrix(predictor._model_columns(inputs, local, served), rows)
            marks.append(clock())
            values = treelite.gtil.predict(predictor.compiled.trees, matrix, nthread=1).reshape(rows, -1)[:, -1]
            marks.append(clock())
            for v in values:
                schema.prediction(
                    **{schema.score: float(v), "model_version": 1, "request_id": uuid.uuid4().hex},
                    **({schema.label: bool(v >= 0.5)} if schema.label else {}),
                )
            marks.append(clock())
            scored.log_records(state.spec.name)
            marks.append(clock())
            if n >= 3:  # warm-up dropped
                for i, (name, _) in enumerate(STEPS):
                    times[name].append((marks[i + 1] - marks[i]) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def answered_by(url: str, headers: dict[str, str]) -> int:
    """Requests the server answered with 200 on its prediction routes, by its own ``/metrics`` (locust does not
    count the requests still in flight when a run ends, which the server answers and logs)."""
    import re

    import httpx

    metrics = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    pattern = re.compile(r"^bentoml_service_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
    total = 0.0
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match and 'http_response_code="200"' in match["labels"]:
            route = re.search(r'endpoint="([^"]*)"', match["labels"])
            if route and route.group(1) in ("/predict", "/predict_batch", "/invocations"):
                total += float(match["value"])
    if not total:
        raise RuntimeError(f"{url}/metrics counts no answered prediction request: {metrics[:500]}")
    return int(total)


def logged_records(state: State) -> int:
    """Prediction-log records of the pool's day (every request of the run is a flight of that day)."""
    from airflow_mlops.prediction_log import read_predictions

    return len(read_predictions(state.spec.name, DAYS[-1], settings=state.settings))


# --------------------------------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(points: list[Point], servers: dict[str, Server], state: State, context: dict[str, Any]) -> str:
    """The markdown of the ``endpoint`` section."""
    by = {(p.label, p.users): p for p in points}
    bare = {c: by[BARE, c] for c in CONCURRENCY}
    rounds = context["rounds"]
    lines = [
        "## Endpoint: BentoML `/predict` next to bare FastAPI and in-process predict",
        "",
        machine_info(),
        "",
        f"One request = one real flight of {DAYS[-1].isoformat()} (pool of {len(state.bodies)} validated rows, drawn "
        f"at random): Feast online lookup of `{state.spec.feature_service}` (SQLite online store, local profile), "
        f"then the model ({state.spec.name} v{state.ref.version}, `{state.spec.algorithm.name}` with "
        f"{state.spec.algorithm.params.get('max_iter')} trees, trained by `registry.train` on "
        f"{(DAYS[-1] - timedelta(days=state.spec.training.window_days - 1)).isoformat()} .. {DAYS[-1].isoformat()}). "
        "Every path serves the **hot path** (`Predictor.score`: no pandas frame per request, the pipeline compiled "
        "by Treelite at load, `airflow_mlops.compiled_model`); the *scikit-learn reference* row is the same call "
        "scoring with the fitted pipeline itself, for comparison. "
        f"*Endpoint* is the real bento (`{state.bento.tag}`) under `bentoml serve` (1 worker as the service "
        "declares, with its token check, admission limit, prediction log, metrics and body limit); *bare FastAPI* is "
        "`tests/benchmarks/bare_app.py` under `uvicorn` (1 worker): the same body, pydantic models and hot path for "
        "the same version, nothing else (the floor of an HTTP server doing this work); `/invocations` is the "
        "SageMaker container contract on the same bento. OpenMP: one thread everywhere. Load: locust headless "
        f"(`FastHttpUser`, keep-alive, no think time: N users = N requests in flight), {context['seconds']} s per "
        f"point in {rounds} run(s) of {context['seconds'] / rounds:g} s, the first {WARMUP_SECONDS:g} s of each "
        "dropped; response times unrounded. Runs interleaved (every path at 1, then 16, then 64; then again).",
        "",
        f"**This machine has {os.cpu_count()} cores, shared by the server under test, the load generator and whatever "
        f"else runs** (1-minute load average {context['load'][0]:.2f} at the start, {context['load'][1]:.2f} at the "
        "end). *server cores* is the CPU the server's process tree used over the runs (share of wall-clock time), "
        "*CPU ms / req* that CPU per successful request, *locust cores* the load generator's share. "
        f"Setup (not counted): data {state.seconds['data']:.0f} s, training {state.seconds['train']:.0f} s, "
        f"packaging {state.seconds['package']:.0f} s; servers ready in "
        + ", ".join(f"{s.started_s:.0f} s ({s.label})" for s in servers.values())
        + f". Whole benchmark: {context['elapsed']:.0f} s.",
        "",
        "| path | concurrency | ok requests | p50 (ms) | p99 (ms) | req/s | p50 / bare | p99 / bare | req/s / bare "
        "| server cores | CPU ms / req | locust cores | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [(INPROC_ONE, 1), (INPROC_DEFAULT, 1), (INPROC_BATCH, 1)]
    order += [(label, c) for label in (BARE, ENDPOINT, BATCHED, INVOKE) for c in CONCURRENCY]
    for key in order:
        p = by.get(key)
        if p is None:
            continue
        base = bare[p.users]
        ratios = (
            f"{p.p50 / base.p50:.2f}x | {p.p99 / base.p99:.2f}x | {p.throughput / base.throughput:.2f}x"
            if not p.label.startswith("in-process")
            else "- | - | -"
        )
        lines.append(
            f"| {p.label} | {p.users} | {len(p.times_ms)} | {p.p50:.1f} | {p.p99:.1f} | {p.throughput:.1f} | {ratios} "
            f"| {_ms(p.server_cores, 2)} | {_ms(p.server_cpu_ms)} | {_ms(p.client_cores, 2)} | {p.failures} |"
        )

    one, batch = by[INPROC_ONE, 1], by[INPROC_BATCH, 1]
    end1, end16 = by[ENDPOINT, 1], by[ENDPOINT, 16]
    batched64 = by[BATCHED, 64]
    failed = sum(p.failures for p in points)
    answered, logged = context["answered"], context["logged"]
    lines += [
        "",
        "| target (issue 15) | measured | result |",
        "| --- | ---: | --- |",
        f"| in process, one flight: p50 <= {INPROC_P50_MS:g} ms, p99 <= {INPROC_P99_MS:g} ms | {one.p50:.2f} / "
        f"{one.p99:.2f} ms | {verdict(one.p50 <= INPROC_P50_MS and one.p99 <= INPROC_P99_MS)} |",
        f"| in process, {BATCH_ROWS} flights: <= {INPROC_BATCH_MS:g} ms (p50) | {batch.p50:.1f} ms (p99 "
        f"{batch.p99:.1f}) | {verdict(batch.p50 <= INPROC_BATCH_MS)} |",
        f"| endpoint `/predict`, one flight, concurrency 1: p50 <= {ENDPOINT_P50_MS:g} ms, p99 <= "
        f"{ENDPOINT_P99_MS:g} ms | {end1.p50:.1f} / {end1.p99:.1f} ms "
        f"| {verdict(end1.p50 <= ENDPOINT_P50_MS and end1.p99 <= ENDPOINT_P99_MS)} |",
        f"| endpoint `/predict` at concurrency 16: >= {MIN_RPS_16:g} req/s | {end16.throughput:.1f} req/s "
        f"| {verdict(end16.throughput >= MIN_RPS_16)} |",
        f"| `/predict_batch` at 64 >= {MIN_BATCHING_GAIN:g}x `/predict` at 16, 0 failed | "
        f"{batched64.throughput:.1f} req/s ({batched64.throughput / end16.throughput:.2f}x), "
        f"{batched64.failures} failed | "
        f"{verdict(batched64.throughput >= MIN_BATCHING_GAIN * end16.throughput and not batched64.failures)} |",
        f"| 0 failed requests at every concurrency | {failed} failed | {verdict(failed == 0)} |",
        f"| prediction log: records written = requests the endpoint answered (its `/metrics`) | {logged} of "
        f"{answered} ({context['locust_answered']} counted by locust) | {verdict(logged == answered)} |",
        "",
        "Where the milliseconds of the hot path go (in process, median of "
        f"{context['profile_calls']} calls per size; `tests.benchmarks.bench_endpoint.profile`):",
        "",
        f"| step | what | 1 flight (ms) | {BATCH_ROWS} flights (ms) |",
        "| --- | --- | ---: | ---: |",
    ]
    small, large = context["profile"][1], context["profile"][BATCH_ROWS]
    for name, what in STEPS:
        lines.append(f"| {name} | {what} | {small[name]:.3f} | {large[name]:.1f} |")
    lines.append(f"| total | | {sum(small.values()):.3f} | {sum(large.values()):.1f} |")
    heaviest = max(large, key=large.__getitem__)
    share = large[heaviest] / sum(large.values())
    http = end1.p50 - one.p50
    lines += [
        "",
        "Reading:",
        "",
        f"- **The reference and the hot path.** One flight through the scikit-learn pipeline took p50 "
        f"{by[INPROC_DEFAULT, 1].p50:.1f} ms, through the hot path {one.p50:.2f} ms "
        f"({by[INPROC_DEFAULT, 1].p50 / one.p50:.0f}x less): the pandas frames, the `ColumnTransformer`'s per-call "
        "checks and the Python loop over the trees are paid once at load instead of per call.",
        f"- **HTTP and BentoML.** The endpoint answered one flight at p50 {end1.p50:.1f} ms, {http:.1f} ms more than "
        f"the same call in process, and {end1.p50 / bare[1].p50:.2f}x the bare FastAPI app ({bare[1].p50:.1f} ms) "
        "that does the same work with nothing else.",
        f"- **Where a batch goes.** For {BATCH_ROWS} flights the heaviest step is *{heaviest}*, {share:.0%} of "
        f"the hot path ({large[heaviest]:.0f} ms of {sum(large.values()):.0f}).",
        f"- **Batching.** `/predict_batch` at 64 answered {batched64.throughput:.0f} req/s, "
        f"{batched64.throughput / end16.throughput:.2f}x `/predict` at 16 (target {MIN_BATCHING_GAIN:g}x). It merges "
        f"the model call (about {small['model']:.2f} ms of a request), and the server's CPU per request fell from "
        f"{_ms(by[ENDPOINT, 64].server_cpu_ms)} ms (`/predict` at 64) to {_ms(batched64.server_cpu_ms)} ms; what is "
        "left is paid per request whatever the batch (HTTP, JSON and pydantic validation, BentoML's request path, "
        f"the log records) in one Python worker, which used {_ms(batched64.server_cores, 2)} of the "
        f"{os.cpu_count()} cores it shares with the load generator. At concurrency 1 the route waits for requests "
        f"to batch with: p99 {by[BATCHED, 1].p99:.0f} ms against {end1.p99:.0f} ms for `/predict` (BentoML's "
        "dispatcher learns its wait from the traffic it saw); single requests belong on `/predict`.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ run


def measure(
    state: State, root: Path, seconds: int, omp_threads: int | None = None, rounds: int = DEFAULT_ROUNDS
) -> tuple[list[Point], dict[str, Server], dict[str, Any]]:
    """Start both servers, drive them point by point, measure in-process; stop the servers by pid.

    ``omp_threads`` limits the OpenMP threads of the servers (``OMP_NUM_THREADS``) and of the in-process predict.
    """
    from airflow_mlops.deploy.local import stop_tree

    servers: dict[str, Server] = {}
    points: list[Point] = []
    saved = os.environ.get("OMP_NUM_THREADS")
    if omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(omp_threads)  # the servers inherit it
    try:
        servers[ENDPOINT] = start_endpoint(state)
        log(f"endpoint ready at {servers[ENDPOINT].url} in {servers[ENDPOINT].started_s:.0f} s")
        servers[BARE] = start_bare(state, root)
        log(f"bare app ready at {servers[BARE].url} in {servers[BARE].started_s:.0f} s")
        body = state.bodies[0]
        headers = auth_headers(state.settings.endpoint_token())  # the bento requires it; the bare app ignores it
        check_route(servers[BARE].url, "/predict", body, WARMUP_REQUESTS, headers)
        for path in ("/predict", "/predict_batch", "/invocations"):
            check_route(servers[ENDPOINT].url, path, body, WARMUP_REQUESTS, headers)
        warmups = 3 * WARMUP_REQUESTS
        points.append(in_process_point(state, seconds / 2, INPROC_ONE))
        points.append(in_process_point(state, seconds / 2, INPROC_DEFAULT, compiled=False))
        points.append(in_process_point(state, seconds / 2, INPROC_BATCH, rows=BATCH_ROWS))
        extras: dict[str, Any] = {"profile_calls": 50}
        extras["profile"] = {n: profile(state, n, extras["profile_calls"]) for n in (1, BATCH_ROWS)}
        runs = [
            (BARE, BARE, "/predict"),
            (ENDPOINT, ENDPOINT, "/predict"),
            (BATCHED, ENDPOINT, "/predict_batch"),
            (INVOKE, ENDPOINT, "/invocations"),
        ]
        loaded = {(label, users): Point(label, users) for users in CONCURRENCY for label, _, _ in runs}
        points += loaded.values()
        (root / "locust").mkdir(exist_ok=True)
        for round_ in range(rounds):
            log(f"round {round_ + 1} of {rounds}: {seconds / rounds:g} s per point")
            for users in CONCURRENCY:
                for label, server, path in runs:
                    out = root / "locust" / f"{label.replace(' ', '_').replace('/', '')}-{users}.json"
                    locust_round(loaded[label, users], servers[server], path, seconds / rounds, state, out)
        extras["answered"] = answered_by(servers[ENDPOINT].url, headers)
        extras["locust_answered"] = warmups + sum(p.answered for p in loaded.values() if p.label != BARE)
    finally:
        for server in servers.values():
            stop_tree(server.pid)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    extras["logged"] = logged_records(state)  # the server flushed its log on shutdown
    return points, servers, extras


def run(seconds: int | None = None) -> str:
    """Measure, write the ``endpoint`` section of ``BENCHMARKS.md`` and return its markdown."""
    seconds = seconds or int(os.environ.get("BENCH_SECONDS", DEFAULT_SECONDS))
    omp_threads = int(os.environ.get("BENCH_OMP_THREADS", DEFAULT_OMP_THREADS)) or None
    rounds = max(1, int(os.environ.get("BENCH_ROUNDS", DEFAULT_ROUNDS)))
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    env = {"MLOPS_HOME": str(root / "mlops-home"), "MLOPS_MODELS_DIR": str(root / "models")}
    try:
        with isolated_environ(env):
            state = prepare_state(root)
            points, servers, extras = measure(state, root, seconds, omp_threads, rounds)
    finally:
        from airflow_mlops.embedded_db import embedded

        embedded(Path(env["MLOPS_HOME"])).stop()  # by its pid, if it was started
        shutil.rmtree(root, ignore_errors=True)
    context = {
        **extras,
        "seconds": seconds,
        "omp_threads": omp_threads,
        "rounds": rounds,
        "load": (load_before, os.getloadavg()[0]),
        "elapsed": time.monotonic() - started,
    }
    markdown = render(points, servers, state, context)
    write_section(NAME, markdown)
    log(f"done in {context['elapsed']:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.benchmarks.bench_endpoint [--seconds N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=None, help=f"seconds per point (default {DEFAULT_SECONDS})")
    args = parser.parse_args(argv)
    run(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
