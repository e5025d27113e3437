"""The BentoML endpoint next to a bare FastAPI app doing the same lookup and predict, and to in-process predict.

One request = one real flight (a validated row of the last materialized day, drawn at random from a pool):
the Feast online lookup of the ``flight_delay_v1`` service (SQLite online store, local profile), then the model.
Conditions, measured in one run with the same home, model version and request pool:

* **in-process**: ``Predictor.score([flight])`` in a loop in this process (no HTTP, no request validation), with
  OpenMP limited to one thread and with its default (one thread per core);
* **bare FastAPI**: ``tests/benchmarks/bare_app.py`` under ``uvicorn`` (1 worker), ``POST /predict`` with the same
  body, pydantic models and :class:`~airflow_mlops.serving.Predictor`; nothing else;
* **endpoint ``/predict``**: the real bento of the registered version (``packaging.package``), served by
  ``bentoml serve`` (``deploy.local.start_bento_server``: 1 worker, as the service declares), with its prediction
  log, metrics and body limit;
* **endpoint ``/predict_batch``**: the same bento's route behind BentoML adaptive batching.

Load: locust (``tests/benchmarks/locust_predict.py``, ``FastHttpUser``, keep-alive, no think time: a closed loop
of N users) at concurrency 1, 16 and 64, ``BENCH_SECONDS`` (default 20) per point split into ``BENCH_ROUNDS``
(default 2) runs, the first ``WARMUP_SECONDS`` of each run dropped; the user records unrounded response times.
Runs are interleaved (bare, endpoint, batched at 1, then at 16, then at 64; then again), so a change of machine
load hits every condition alike.

OpenMP: scikit-learn's gradient boosting predicts each tree in an OpenMP parallel region; on a loaded 2-core box
that makes single-row latency a matter of thread scheduling (see the in-process rows). The servers therefore get
``OMP_NUM_THREADS=1`` (``BENCH_OMP_THREADS``, default 1; 0 keeps OpenMP's default), so that the ratios compare
the serving paths rather than scheduler stalls.

Targets (issue): endpoint p50 at most 1.3x bare FastAPI (concurrency 1); endpoint throughput at concurrency 16 at
least 0.9x bare; ``/predict_batch`` throughput at concurrency 64 at least 2x ``/predict``. Nothing asserts a timing.

The state is built by the library in a temporary home: 20 real days (2013-01-01 .. 2013-01-20) written to the
validated zone (``tests/unit/test_features.py``: ``make_home`` / ``validate_days``, without the GX gate), their
feature tables built and materialized into the online store, a small model trained, registered and promoted
(``registry.train``: 14-day window, 3-day holdout, ``max_iter`` 100) and packaged. Every server is stopped by its
process id.

Run: ``.venv/bin/python -m tests.benchmarks.run endpoint`` (or ``-m tests.benchmarks.bench_endpoint [--seconds N]``).
The whole run takes about 2 minutes of setup plus 10 times ``BENCH_SECONDS`` (5-6 minutes by default).
"""

from __future__ import annotations

import argparse
import contextlib
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
MAX_P50_RATIO = 1.3
MIN_THROUGHPUT_RATIO = 0.9
MIN_BATCHING_GAIN = 2.0
#: OpenMP threads of the servers (``OMP_NUM_THREADS``); ``BENCH_OMP_THREADS=0`` keeps the default (one per core).
DEFAULT_OMP_THREADS = 1
BIN = Path(sys.executable).parent
LOCUST = str(BIN / "locust")
LOCUSTFILE = Path(__file__).resolve().parent / "locust_predict.py"
_ISOLATED_PREFIXES = ("MLOPS_", "AIRFLOW", "BENTOML_", "FEAST_")

BARE = "bare FastAPI"
ENDPOINT = "endpoint /predict"
BATCHED = "endpoint /predict_batch"
INPROC_ONE = "in-process, 1 OpenMP thread"
INPROC_DEFAULT = "in-process, default OpenMP threads"


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


def in_process_point(state: State, seconds: float, label: str, threads: int | None = None) -> Point:
    """``Predictor.score([flight])`` back to back in this process for ``seconds`` (after a warm-up); with
    ``threads``, the native thread pools (OpenMP: the model's tree traversal) are limited to that many."""
    from threadpoolctl import threadpool_limits

    from airflow_mlops.registry import load_model
    from airflow_mlops.serving import Predictor

    predictor = Predictor(state.spec, load_model(state.ref, state.settings), state.ref.version, settings=state.settings)
    flights = [predictor.schema.row.model_validate(body["flights"][0]) for body in state.bodies]
    rng = random.Random(7)
    point = Point(label, 1)
    clock = time.perf_counter
    with threadpool_limits(limits=threads) if threads else contextlib.nullcontext():
        for _ in range(WARMUP_REQUESTS):
            predictor.score([rng.choice(flights)])
        deadline = clock() + seconds
        started, cpu_started = clock(), time.process_time()
        while clock() < deadline:
            flight = rng.choice(flights)
            mark = clock()
            predictor.score([flight])
            point.times_ms.append((clock() - mark) * 1000)
        point.window_s = clock() - started
        point.cpu_s = time.process_time() - cpu_started
    point.answered = len(point.times_ms)
    log(f"  {label:<24} c=1   p50 {point.p50:7.1f} ms  p99 {point.p99:7.1f} ms  {point.throughput:6.1f} calls/s")
    return point


def log_records_ms(state: State, calls: int = 200) -> float:
    """Median time of ``Scored.log_records`` for one scored flight (what the endpoint adds to build its log)."""
    from airflow_mlops.registry import load_model
    from airflow_mlops.serving import Predictor

    predictor = Predictor(state.spec, load_model(state.ref, state.settings), state.ref.version, settings=state.settings)
    scored = [predictor.score([predictor.schema.row.model_validate(body["flights"][0])]) for body in state.bodies[:20]]
    times = []
    for n in range(calls):
        mark = time.perf_counter()
        scored[n % len(scored)].log_records(state.spec.name)
        times.append((time.perf_counter() - mark) * 1000)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _service_setting(pattern: str, file: str = "bento_service.py") -> int | None:
    """An integer setting of the service or its packaging, read from the library's source."""
    import re

    source = (REPO_ROOT / "include" / "airflow_mlops" / file).read_text(encoding="utf-8")
    found = re.search(pattern, source, re.DOTALL)
    return int(found.group(1)) if found else None


def batch_latency_ms() -> int | None:
    """``max_latency_ms`` of the service's ``/predict_batch`` route."""
    return _service_setting(r'route="/predict_batch".*?max_latency_ms=(\d+)')


def service_threads() -> int | None:
    """The ``threads`` of the ``@bentoml.service`` (how many sync API calls run at once)."""
    return _service_setting(r"@bentoml\.service\(.*?threads=(\d+)")


def bento_omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` in the ``envs`` of the bentofile that packaging writes (None if unset)."""
    return _service_setting(r'"OMP_NUM_THREADS", "value": "(\d+)"', "packaging.py")


def render(points: list[Point], servers: dict[str, Server], state: State, context: dict[str, Any]) -> str:
    """The markdown of the ``endpoint`` section."""
    by = {(p.label, p.users): p for p in points}
    bare = {c: by[BARE, c] for c in CONCURRENCY}
    omp = context.get("omp_threads")
    threads = (
        f"`OMP_NUM_THREADS={omp}` for both servers (`BENCH_OMP_THREADS`; 0 keeps OpenMP's default, see the reading)"
        if omp
        else "OpenMP's default, one per core (`BENCH_OMP_THREADS=0`)"
    )
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
        f"*Endpoint* is the real bento (`{state.bento.tag}`) under `bentoml serve` (1 worker as the service "
        "declares, with its prediction log, metrics and body limit); *bare FastAPI* is `tests/benchmarks/bare_app.py` "
        "under `uvicorn` (1 worker): the same body, pydantic models and `Predictor` for the same version, nothing "
        "else; *in-process* is `Predictor.score([flight])` in a loop (no HTTP). Both servers keep their default "
        f"access log (to a file); OpenMP threads: {threads}. Load: locust headless (`FastHttpUser`, keep-alive, no "
        f"think time: N users = N requests in flight), {context['seconds']} s per point in {rounds} run(s) of "
        f"{context['seconds'] / rounds:g} s, the first {WARMUP_SECONDS:g} s of each dropped; response times "
        "unrounded (recorded by the user; locust's own statistics round to whole milliseconds). Runs interleaved "
        "(bare, endpoint, batched at 1, then 16, then 64, then again).",
        "",
        f"**This machine has {os.cpu_count()} cores, shared by the server under test, the load generator and whatever "
        f"else runs** (1-minute load average {context['load'][0]:.2f} at the start, {context['load'][1]:.2f} at the "
        "end): absolute figures are of this box at that moment; the ratios, measured alike and interleaved, are what "
        "compare. *server cores* is the CPU the server's process tree used over the runs (share of wall-clock time), "
        "*CPU ms / req* that CPU per successful request (less sensitive to other load than latency), *locust* the "
        "share of a core the load generator used. "
        f"Setup (not counted): data {state.seconds['data']:.0f} s, training {state.seconds['train']:.0f} s, "
        f"packaging {state.seconds['package']:.0f} s; servers ready in "
        + ", ".join(f"{s.started_s:.0f} s ({s.label})" for s in servers.values())
        + f". Whole benchmark: {context['elapsed']:.0f} s.",
        "",
        "| path | concurrency | ok requests | p50 (ms) | p99 (ms) | req/s | p50 / bare | p99 / bare | req/s / bare "
        "| server cores | CPU ms / req | locust cores | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    inproc = [INPROC_ONE, INPROC_DEFAULT] if omp == 1 else [INPROC_DEFAULT, INPROC_ONE]
    order = [(label, 1) for label in inproc] + [(label, c) for label in (BARE, ENDPOINT, BATCHED) for c in CONCURRENCY]
    for key in order:
        p = by.get(key)
        if p is None:
            continue
        base = bare[p.users]
        lines.append(
            f"| {p.label} | {p.users} | {len(p.times_ms)} | {p.p50:.1f} | {p.p99:.1f} | {p.throughput:.1f} "
            f"| {p.p50 / base.p50:.2f}x | {p.p99 / base.p99:.2f}x | {p.throughput / base.throughput:.2f}x "
            f"| {_ms(p.server_cores, 2)} | {_ms(p.server_cpu_ms)} | {_ms(p.client_cores, 2)} | {p.failures} |"
        )

    endpoint, batched = by[ENDPOINT, 64], by[BATCHED, 64]
    p50_ratio = by[ENDPOINT, 1].p50 / bare[1].p50
    tput_ratio = by[ENDPOINT, 16].throughput / bare[16].throughput
    gain = batched.throughput / endpoint.throughput if endpoint.throughput else float("nan")
    refused = f", {batched.failures} requests refused" if batched.failures else ""

    def per_round(a: Point, b: Point) -> str:
        ratios = [x / y if y else float("nan") for x, y in zip(a.round_throughputs, b.round_throughputs, strict=True)]
        return f"; runs: {', '.join(f'{r:.2f}x' for r in ratios)}" if len(ratios) > 1 else ""

    lines += [
        "",
        "| target (issue) | measured | result |",
        "| --- | ---: | --- |",
        f"| endpoint p50 <= {MAX_P50_RATIO}x bare FastAPI (single row, concurrency 1) | **{p50_ratio:.2f}x** "
        f"({by[ENDPOINT, 1].p50:.1f} vs {bare[1].p50:.1f} ms) | {verdict(p50_ratio <= MAX_P50_RATIO)} |",
        f"| endpoint throughput at concurrency 16 >= {MIN_THROUGHPUT_RATIO}x bare FastAPI | **{tput_ratio:.2f}x** "
        f"({by[ENDPOINT, 16].throughput:.1f} vs {bare[16].throughput:.1f} req/s"
        f"{per_round(by[ENDPOINT, 16], bare[16])}) "
        f"| {verdict(tput_ratio >= MIN_THROUGHPUT_RATIO)} |",
        f"| adaptive batching at concurrency 64 >= {MIN_BATCHING_GAIN:g}x unbatched (`/predict_batch` vs "
        f"`/predict`, successful req/s) | **{gain:.2f}x** ({batched.throughput:.1f} vs {endpoint.throughput:.1f} "
        f"req/s{refused}) | {verdict(gain >= MIN_BATCHING_GAIN)} |",
        "",
        "Reading:",
        "",
        *reading(by, context),
    ]
    return "\n".join(lines)


def reading(by: dict[tuple[str, int], Point], context: dict[str, Any]) -> list[str]:
    """Bullet points explaining the figures of this run (computed from them, not canned)."""
    notes = []
    default, single = by[INPROC_DEFAULT, 1], by[INPROC_ONE, 1]
    notes.append(
        f"- **OpenMP threads.** In process, `Predictor.score` of one flight took p50 {default.p50:.1f} / p99 "
        f"{default.p99:.1f} ms with OpenMP's default threads (one per core) and p50 {single.p50:.1f} / p99 "
        f"{single.p99:.1f} ms with one thread. scikit-learn's `HistGradientBoostingClassifier.predict_proba` runs "
        "each tree in an OpenMP parallel region with one thread per core: for one row that is a fork/join per tree, "
        "cheap while the other core is idle, a stall (threads spinning, then waiting for a descheduled peer) when "
        "another process holds it, as locust does under load. "
        + (
            f"The bento's `bentofile.yaml` sets `OMP_NUM_THREADS={bento_omp}` in its `envs` (and the local target "
            "starts its servers so); "
            if (bento_omp := bento_omp_threads())
            else "Neither the bento nor its `bentofile.yaml` limits OpenMP; "
        )
        + (
            f"the benchmark runs both servers with `OMP_NUM_THREADS={context['omp_threads']}` so that the ratios "
            "compare the serving paths, not scheduler stalls. "
            if context.get("omp_threads")
            else "this run keeps the default (`BENCH_OMP_THREADS=0`), so every server latency carries these stalls. "
        )
    )
    end16, bare16 = by[ENDPOINT, 16], by[BARE, 16]
    if end16.server_cpu_ms and bare16.server_cpu_ms:
        end1, bare1 = by[ENDPOINT, 1], by[BARE, 1]
        notes.append(
            f"- **What the endpoint adds per request.** Server CPU per answered request, endpoint vs bare: "
            f"{_ms(end1.server_cpu_ms)} vs {_ms(bare1.server_cpu_ms)} ms at concurrency 1, "
            f"{end16.server_cpu_ms:.1f} vs {bare16.server_cpu_ms:.1f} ms at 16 "
            f"({end16.server_cpu_ms / bare16.server_cpu_ms:.2f}x); the servers used {end16.server_cores:.2f} and "
            f"{bare16.server_cores:.2f} cores at 16. Beyond the shared lookup and "
            "predict, the endpoint builds the prediction-log records (`Scored.log_records`, pandas frames to dicts: "
            f"{context['log_records_ms']:.1f} ms per single-flight request, timed in process) and writes them from a "
            "background thread (one parquet file per second), and runs BentoML's request path: its IO model, "
            "OpenTelemetry and Prometheus middleware and the access log."
        )
        cpu_ratio = end16.server_cpu_ms / bare16.server_cpu_ms
        cores_ratio = (end16.server_cores or 0) / (bare16.server_cores or 1)
        if cpu_ratio < 1.1 and cores_ratio < 0.85:
            notes.append(
                f"- **Throughput at 16 is CPU not obtained, not work added.** The endpoint needed {cpu_ratio:.2f}x the "
                f"bare app's CPU per request but ran on {cores_ratio:.2f}x its cores. On a box where other processes "
                "keep more threads runnable than there are cores, the scheduler (which shares CPU per thread) likely "
                "gives the server with fewer runnable threads the smaller share; on an idle machine both are bounded "
                "by one core (the GIL) and this gap should shrink."
            )
        end64, bare64 = by[ENDPOINT, 64], by[BARE, 64]
        if end64.server_cpu_ms and bare64.server_cpu_ms:
            notes.append(
                f"- **Concurrency inside the server.** At 64 the endpoint spent {end64.server_cpu_ms:.1f} ms of CPU "
                f"per request, the bare app {bare64.server_cpu_ms:.1f} ms. FastAPI runs a `def` route in AnyIO's "
                "thread pool (40 threads), so up to 40 requests contend for the GIL and the cores at once; BentoML "
                f"runs a sync API in a pool of the service's `threads` ({service_threads()} in `bento_service.py`): "
                "that many requests score at once while the event loop parses and queues the others."
            )
    batched = [by[BATCHED, c] for c in CONCURRENCY]
    if any(p.failures for p in batched):
        limit = batch_latency_ms()
        counts = ", ".join(f"{p.failures} at {p.users}" for p in batched if p.failures)
        answers = sorted({message[:90] for p in batched for message in p.errors})
        warned = (
            "; at start-up BentoML itself logged that the route's max latency is likely too low for serving"
            if context.get("latency_warning")
            else ""
        )
        notes.append(
            f"- **`/predict_batch` sheds load instead of batching it.** Refused requests per concurrency: {counts} "
            f"(answers: {'; '.join(f'`{a}`' for a in answers)}). The server log holds "
            f"{context.get('overloaded', 0)} `ServiceUnavailable: process is overloaded`{warned}. BentoML's "
            "adaptive-batching dispatcher cancels a queued request when it estimates that the request cannot be "
            f"answered within the route's `max_latency_ms` ({limit} ms in `bento_service.py`), and one call of the "
            f"model path alone takes longer (in-process p50 {single.p50:.1f} ms with one OpenMP thread). What "
            "the batched route answers is the few requests the dispatcher admits, not what batching could do; the "
            "batching target cannot be judged until the route's latency budget exceeds one call's latency (a few "
            "hundred ms)."
        )
    return notes


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
        check_route(servers[ENDPOINT].url, "/predict", body, WARMUP_REQUESTS, headers)
        check_route(servers[ENDPOINT].url, "/predict_batch", body, WARMUP_REQUESTS, headers)
        points.append(in_process_point(state, seconds / 2, INPROC_ONE, threads=1))
        points.append(in_process_point(state, seconds / 2, INPROC_DEFAULT))
        extras = {"log_records_ms": log_records_ms(state)}
        runs = [(BARE, BARE, "/predict"), (ENDPOINT, ENDPOINT, "/predict"), (BATCHED, ENDPOINT, "/predict_batch")]
        loaded = {(label, users): Point(label, users) for users in CONCURRENCY for label, _, _ in runs}
        points += loaded.values()
        (root / "locust").mkdir(exist_ok=True)
        for round_ in range(rounds):
            log(f"round {round_ + 1} of {rounds}: {seconds / rounds:g} s per point")
            for users in CONCURRENCY:
                for label, server, path in runs:
                    out = root / "locust" / f"{label.replace(' ', '_').replace('/', '')}-{users}.json"
                    locust_round(loaded[label, users], servers[server], path, seconds / rounds, state, out)
    finally:
        for server in servers.values():
            stop_tree(server.pid)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    server_log = servers[ENDPOINT].log.read_text(errors="replace")
    extras["latency_warning"] = "max latency that is likely too low" in server_log
    extras["overloaded"] = server_log.count("ServiceUnavailable: process is overloaded")
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
