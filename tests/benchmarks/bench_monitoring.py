"""Monitoring: the Evidently drift report next to plain scipy, and drift-to-retraining latency next to a trigger.

Two measurements, one run, written to the ``monitoring`` section of ``BENCHMARKS.md``:

1. **Drift report time** (target: at most 2x). ``monitoring._drift_report`` (Evidently 0.7 ``DataDriftPreset``
   with the spec's methods: normed Wasserstein distance for numeric columns, Jensen-Shannon distance for
   categorical ones, threshold 0.1) next to a plain scipy/numpy loop running the same tests on the same frames:
   per column, infinities and missing values dropped (as Evidently does), ``scipy.stats.wasserstein_distance``
   divided by ``max(std(reference), 0.001)`` (``evidently/legacy/calculations/stattests/
   wasserstein_distance_norm.py``), and ``scipy.spatial.distance.jensenshannon`` of the two relative-frequency
   vectors over the union of the categories seen (``stattests/jensenshannon.py`` with ``get_binned_data``,
   no zero filling). Both must agree on every score (within 1e-6), on the drifted set and on the drift share; the
   agreement is reported. Reference = the champion's training set as monitoring reads it (train rows of the
   shipped spec's 59-day window 2013-01-01 .. 2013-02-28, model input); current = real later flights' model input
   built by the library the same way (a 30-day training set ending 2013-07-30: one day, 2013-07-15, and the
   whole month). Conditions alternate; medians. Evidently's time is split by wrapping its calls (exclusive time:
   the statistical tests, the rest of its per-column drift computation, plotly widgets, the result tree), and
   saving the HTML and JSON (what ``monitor_day`` does after the report) is timed apart.
2. **Drift event -> training run start** (target: at most 1.2x). A real ``airflow standalone`` (LocalExecutor,
   its own home, a PostgreSQL metadata database created and dropped here, the shipped spec, no data), the other
   DAGs paused. Asset path: ``POST /api/v2/assets/events`` for ``x-mlops://flight_delay/drift`` (official client,
   ``AssetApi.create_asset_event``, with the extra the monitor DAG emits) -> the scheduler creates the
   ``train_flight_delay`` run and starts it. Manual path: ``POST /api/v2/dags/train_flight_delay/dagRuns``
   (``AirflowApi.trigger``) -> the run's start. Latency = the run's ``start_date`` minus the client's clock just
   before the request (both paths), and minus the server's record of the request (the event's ``timestamp``,
   the manual run's ``queued_at``). The asset run skips at ``training_set`` (no complete window of data); the
   manual run fails its first try there (no validated data), that task is then marked failed over REST and the
   scheduler ends the run, so that each run is over before the next one starts (``max_active_runs=1``).
   Conditions alternate; one untimed warm-up each.

Nothing here asserts a timing; the Airflow started here is stopped by its process id.

Run: ``.venv/bin/python -m tests.benchmarks.run monitoring`` (or ``-m tests.benchmarks.bench_monitoring``);
``BENCH_SAMPLES`` (default 3) sets the repetitions per size of measurement 1; measurement 2 takes that plus 6 per
path. ``--only drift`` / ``--only trigger`` runs one measurement (the section then says the other was not run).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import random
import shutil
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

from tests.benchmarks.report import REPO_ROOT, machine_info, write_section

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.airflow_runtime import AirflowApi
    from airflow_mlops.settings import Settings
    from airflow_mlops.specs import ModelSpec

NAME = "monitoring"
MODEL = "flight_delay"
DAG_ID = f"train_{MODEL}"
DRIFT_URI = f"x-mlops://{MODEL}/drift"
SPEC_FILE = REPO_ROOT / "include" / "models" / f"{MODEL}.yaml"
#: Reference: the shipped spec's window (59 days ending 2013-02-28, the last 7 days are the holdout).
REFERENCE_END = date(2013, 2, 28)
#: Current: a month of later flights (July), and one day of it.
MONTH_FIRST, MONTH_LAST = date(2013, 7, 1), date(2013, 7, 30)
ONE_DAY = date(2013, 7, 15)
#: Validated days before the month, so that its 7-day carrier features have their history.
LEAD_DAYS = 7
WARMUP_ROWS = 2000
MAX_DRIFT_RATIO = 2.0
MAX_TRIGGER_RATIO = 1.2
SCORE_TOLERANCE = 1e-6
DEFAULT_SAMPLES = 3
TRIGGER_EXTRA_SAMPLES = 6
POLL_SECONDS = 0.25
RUN_TIMEOUT = 300.0
SETTLE_SECONDS = 2.0
#: A random extra pause (up to the scheduler's idle sleep) so that requests land at random phases of its loop.
JITTER_SECONDS = 1.0
_ISOLATED_PREFIXES = ("AIRFLOW", "MLOPS_", "_AIRFLOW")
#: Scheduler settings that decide how fast a queued or asset-triggered run starts (reported as configured).
SCHEDULER_KEYS = (
    ("core", "executor"),
    ("core", "parallelism"),
    ("scheduler", "scheduler_idle_sleep_time"),
    ("scheduler", "scheduler_heartbeat_sec"),
    ("scheduler", "max_dagruns_to_create_per_loop"),
    ("scheduler", "max_dagruns_per_loop_to_schedule"),
    ("scheduler", "use_job_schedule"),
    ("dag_processor", "refresh_interval"),
)


def log(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def spread(values: Iterable[float], digits: int = 2) -> str:
    data = list(values)
    return f"{min(data):.{digits}f}-{max(data):.{digits}f}" if data else "-"


def bootstrap_ratio(a: list[float], b: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """90% bootstrap interval of median(a) / median(b), resampling each list on its own."""
    rng = random.Random(seed)
    ratios = sorted(
        median(rng.choices(a, k=len(a))) / max(median(rng.choices(b, k=len(b))), 1e-9) for _ in range(rounds)
    )
    return ratios[int(0.05 * rounds)], ratios[int(0.95 * rounds) - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


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


# ------------------------------------------------------------------------------------------------ 1. data


@dataclass
class DriftData:
    """Reference and current model input, built by the library from real days."""

    spec: ModelSpec
    reference: pd.DataFrame
    month: pd.DataFrame
    day: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    setup_s: float
    empty_days: dict[str, list[str]]
    month_dates: Any = None


def prepare_data(root: Path) -> DriftData:
    """A fresh home holding the reference window and the current month (validated days + feature tables)."""
    from nyc_flights import Nycflights13Source

    from airflow_mlops.features import build_features
    from airflow_mlops.specs import load_spec
    from airflow_mlops.training import PARTITION, SPLIT, TRAIN, build_training_set, model_input
    from tests.unit.test_features import make_home, validate_days

    started = time.perf_counter()
    spec = load_spec(SPEC_FILE)
    cache = root / "nyc-cache"
    source = Nycflights13Source(cache)
    for table in ("flights", "weather"):
        source.read(table, REFERENCE_END)  # converts the package's tables to parquet once
    settings = make_home(root, cache)
    first = REFERENCE_END - timedelta(days=spec.training.window_days - 1)
    reference_days = [first + timedelta(days=n) for n in range((REFERENCE_END - first).days + 1)]
    lead = MONTH_FIRST - timedelta(days=LEAD_DAYS)
    current_days = [lead + timedelta(days=n) for n in range((MONTH_LAST - lead).days + 1)]
    validate_days(settings, source, reference_days + current_days)
    for day in reference_days + current_days:
        build_features("flights", day, settings=settings)

    reference_set = build_training_set(spec, REFERENCE_END, settings=settings)
    numeric, categorical = list(reference_set.numeric), list(reference_set.categorical)
    train = reference_set.frame[reference_set.frame[SPLIT] == TRAIN]
    reference = model_input(train, numeric, categorical)

    month_days = (MONTH_LAST - MONTH_FIRST).days + 1
    month_spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"window_days": month_days, "holdout_days": 1})}
    )
    month_set = build_training_set(month_spec, MONTH_LAST, settings=settings)
    if (list(month_set.numeric), list(month_set.categorical)) != (numeric, categorical):
        raise RuntimeError("the current month's model columns differ from the reference's")
    month = model_input(month_set.frame, numeric, categorical).reset_index(drop=True)
    dates = month_set.frame[PARTITION].astype(str).to_numpy()
    day = month[dates == ONE_DAY.isoformat()].reset_index(drop=True)
    # Days of the month whose one-day drift report could not run: a model column with no value at all.
    empty_days: dict[str, list[str]] = {}
    for name, rows in month.groupby(dates):
        empty = [c for c in (*numeric, *categorical) if rows[c].isna().all()]
        if empty:
            empty_days[str(name)] = empty
    elapsed = time.perf_counter() - started
    return DriftData(spec, reference, month, day, numeric, categorical, elapsed, empty_days, dates)


# ---------------------------------------------------------------------------------- 1. the plain scipy loop


def plain_drift(
    spec: ModelSpec, current: pd.DataFrame, reference: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[dict[str, float], set[str], float]:
    """Per-column scores, drifted columns and drift share with scipy and numpy only (the tests Evidently runs)."""
    import numpy as np
    from scipy import stats
    from scipy.spatial import distance

    thresholds = spec.drift.feature_thresholds
    scores: dict[str, float] = {}
    for column in numeric:
        ref = reference[column].to_numpy(dtype="float64")
        cur = current[column].to_numpy(dtype="float64")
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        scores[column] = float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    for column in categorical:
        ref_values, cur_values = reference[column].dropna(), current[column].dropna()
        ref_counts, cur_counts = ref_values.value_counts(), cur_values.value_counts()
        keys = ref_counts.index.union(cur_counts.index)
        p = ref_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64") / len(ref_values)
        q = cur_counts.reindex(keys, fill_value=0).to_numpy(dtype="float64") / len(cur_values)
        scores[column] = float(distance.jensenshannon(p, q))
    drifted = {c for c, s in scores.items() if s >= thresholds.get(c, spec.drift.threshold)}
    return scores, drifted, len(drifted) / len(scores)


# ------------------------------------------------------------------------------ 1. Evidently, instrumented


class ExclusiveTimer:
    """Exclusive wall time of wrapped calls: a nested wrapped call's time counts for it, not for its caller."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []
        self._undo: list[Callable[[], None]] = []

    def _enter(self, label: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self.totals[self._stack[-1][0]] += now - self._stack[-1][1]
        self._stack.append([label, now])
        self.calls[label] += 1

    def _exit(self) -> None:
        now = time.perf_counter()
        label, since = self._stack.pop()
        self.totals[label] += now - since
        if self._stack:
            self._stack[-1][1] = now

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        own = attr in vars(owner)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._enter(label)
            try:
                return original(*args, **kwargs)
            finally:
                self._exit()

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original) if own else delattr(owner, attr))

    def call(self, label: str, func: Callable[[], Any]) -> tuple[Any, float, dict[str, float], dict[str, int]]:
        """Run ``func`` with ``label`` for the time no wrapped call accounts for; return result, wall, parts."""
        self.totals.clear()
        self.calls.clear()
        started = time.perf_counter()
        self._enter(label)
        try:
            result = func()
        finally:
            self._exit()
        return result, time.perf_counter() - started, dict(self.totals), dict(self.calls)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


TESTS = "statistical tests (Wasserstein, Jensen-Shannon)"
COLUMN_REST = "rest of the per-column drift (histograms, correlations, plot data)"
VALUE_WIDGETS = "`ValueDrift` widgets (plotly figures)"
PRESET_WIDGETS = "preset widgets (`DataDriftTable` / dataset drift, plotly figures)"
RESULT_TREE = "`snapshot.dict()` (result tree read by `_drift_report`)"
PLUMBING = "datasets, metric plumbing, the rest"
PART_ORDER = (TESTS, COLUMN_REST, VALUE_WIDGETS, PRESET_WIDGETS, RESULT_TREE, PLUMBING)


def instrument_evidently() -> ExclusiveTimer:
    from evidently.core.report import Snapshot
    from evidently.legacy.calculations import data_drift
    from evidently.legacy.calculations.stattests.registry import StatTest
    from evidently.metrics import column_statistics
    from evidently.presets.drift import DataDriftPreset

    timer = ExclusiveTimer()
    timer.wrap(StatTest, "__call__", TESTS)
    timer.wrap(data_drift, "get_one_column_drift", COLUMN_REST)  # called by the legacy dataset-level metrics
    timer.wrap(column_statistics, "get_one_column_drift", COLUMN_REST)  # ... and by each ValueDrift
    timer.wrap(column_statistics.ValueDriftCalculation, "_render", VALUE_WIDGETS)
    timer.wrap(DataDriftPreset, "render", PRESET_WIDGETS)
    timer.wrap(Snapshot, "dict", RESULT_TREE)
    return timer


@dataclass
class SizeResult:
    """Measurement 1 for one current frame."""

    label: str
    rows: int
    evidently_s: list[float] = field(default_factory=list)
    plain_s: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    max_diff: float = 0.0
    worst_column: str = ""
    same_drifted: bool = False
    drifted: list[str] = field(default_factory=list)
    evidently_share: float = float("nan")
    plain_share: float = float("nan")
    save_html_s: float = float("nan")
    html_bytes: int = 0
    json_s: float = float("nan")
    json_bytes: int = 0
    order: list[str] = field(default_factory=list)


@dataclass
class DriftResult:
    reference_rows: int
    columns: tuple[int, int]
    setup_s: float
    import_s: float
    first_call_s: float
    sizes: list[SizeResult]
    empty_days: dict[str, list[str]]
    empty_day_outcome: str = ""


def empty_column_check(data: DriftData) -> str:
    """What ``_drift_report`` does with a real day on which a model column has no value (behaviour, not timed)."""
    from airflow_mlops.monitoring import _drift_report

    day, columns = sorted(data.empty_days.items())[0]
    current = data.month[data.month_dates == day]
    reference = data.reference.sample(WARMUP_ROWS, random_state=0)
    try:
        _, features, share = _drift_report(data.spec, current, reference, data.numeric, data.categorical)
    except Exception as exc:
        return f"on {day} ({len(current)} rows) `_drift_report` raised `{type(exc).__name__}: {str(exc)[:160]}`"
    found = [f"`{c}`: {features[c]}" for c in columns if c in features]
    return f"on {day} ({len(current)} rows) `_drift_report` ran (drift share {share:.3f}); " + (
        "; ".join(found) if found else f"{', '.join(columns)} not in its result"
    )


def measure_drift(data: DriftData, samples: int, tmp: Path) -> DriftResult:
    """Alternate ``_drift_report`` and the plain loop on a day and on the month; check they agree."""
    spec = data.spec
    if (spec.drift.num_method, spec.drift.cat_method) != ("wasserstein", "jensenshannon"):
        raise RuntimeError(
            f"the plain loop implements wasserstein/jensenshannon; the spec asks for "
            f"{spec.drift.num_method}/{spec.drift.cat_method}"
        )
    started = time.perf_counter()
    for module in ("evidently", "evidently.presets"):
        importlib.import_module(module)

    import_s = time.perf_counter() - started
    from airflow_mlops.monitoring import _drift_report

    reference, numeric, categorical = data.reference, data.numeric, data.categorical
    warm = data.month.sample(min(WARMUP_ROWS, len(data.month)), random_state=0)
    started = time.perf_counter()
    _drift_report(spec, warm, reference, numeric, categorical)  # first call: plotly, stat-test registry, caches
    first_call_s = time.perf_counter() - started
    log(f"evidently import {import_s:.1f} s, first call ({len(warm)} rows) {first_call_s:.1f} s")

    sizes: list[SizeResult] = []
    timer = instrument_evidently()
    try:
        for label, current in (("one day", data.day), ("one month", data.month)):
            res = SizeResult(label, len(current))
            snapshot = features = share = None
            for rep in range(samples):
                order = ("evidently", "plain") if rep % 2 == 0 else ("plain", "evidently")
                for condition in order:
                    res.order.append(condition)
                    if condition == "evidently":
                        (snapshot, features, share), wall, parts, calls = timer.call(
                            PLUMBING, functools.partial(_drift_report, spec, current, reference, numeric, categorical)
                        )
                        res.evidently_s.append(wall)
                        res.parts.append(parts)
                        res.calls = calls
                    else:
                        mark = time.perf_counter()
                        scores, drifted, plain_share = plain_drift(spec, current, reference, numeric, categorical)
                        res.plain_s.append(time.perf_counter() - mark)
                log(
                    f"{label} rep {rep + 1}/{samples}: evidently {res.evidently_s[-1]:.2f} s, "
                    f"plain {res.plain_s[-1]:.3f} s"
                )
            assert features is not None and snapshot is not None and share is not None
            diffs = {c: abs(features[c].score - scores[c]) for c in scores}
            res.worst_column = max(diffs, key=lambda c: diffs[c])
            res.max_diff = diffs[res.worst_column]
            ev_drifted = {c for c, f in features.items() if f.drifted}
            res.same_drifted = ev_drifted == drifted and set(features) == set(scores)
            res.drifted = sorted(ev_drifted)
            res.evidently_share, res.plain_share = float(share), plain_share
            # What monitor_day does after the report: save HTML and JSON (not part of _drift_report).
            html = tmp / f"drift-{label.replace(' ', '-')}.html"
            mark = time.perf_counter()
            snapshot.save_html(str(html))
            res.save_html_s = time.perf_counter() - mark
            res.html_bytes = html.stat().st_size
            mark = time.perf_counter()
            raw = snapshot.json()
            res.json_s = time.perf_counter() - mark
            res.json_bytes = len(raw.encode())
            sizes.append(res)
    finally:
        timer.restore()
    outcome = empty_column_check(data) if data.empty_days else ""
    return DriftResult(
        reference_rows=len(reference),
        columns=(len(numeric), len(categorical)),
        setup_s=data.setup_s,
        import_s=import_s,
        first_call_s=first_call_s,
        sizes=sizes,
        empty_days=data.empty_days,
        empty_day_outcome=outcome,
    )


# ------------------------------------------------------------------------------------------ 2. trigger latency


@dataclass
class TriggerSample:
    path: str  # "asset" or "manual"
    run_id: str
    request_s: float  # client clock just before the POST
    response_s: float  # client clock when the POST returned
    recorded_s: float  # server: the event's timestamp / the manual run's queued_at
    queued_s: float  # the run's queued_at
    start_s: float  # the run's start_date
    end_state: str
    first_task_state: str

    @property
    def request_to_start(self) -> float:
        return self.start_s - self.request_s

    @property
    def recorded_to_start(self) -> float:
        return self.start_s - self.recorded_s


@dataclass
class TriggerResult:
    airflow_start_s: float = 0.0
    config: dict[str, str] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)
    ended_at_start: list[str] = field(default_factory=list)
    warmup: list[TriggerSample] = field(default_factory=list)
    asset: list[TriggerSample] = field(default_factory=list)
    manual: list[TriggerSample] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


CONFIG_PROBE = r"""
import json, sys
from airflow.configuration import conf
keys = json.loads(sys.argv[1])
print(json.dumps({f"{s}.{k}": conf.get(s, k, fallback=None) for s, k in keys}))
"""


def scheduler_config(settings: Settings) -> dict[str, str]:
    """The scheduler settings as Airflow resolves them in the environment ``start_airflow`` gives it."""
    from airflow_mlops.airflow_runtime import airflow_env
    from airflow_mlops.processes import free_port

    proc = subprocess.run(
        [sys.executable, "-c", CONFIG_PROBE, json.dumps(SCHEDULER_KEYS)],
        env=airflow_env(free_port(), settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr.strip()[-300:]}
    return json.loads(lines[-1])


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _terminal(state: Any) -> bool:
    return str(getattr(state, "value", state)) in ("success", "failed")


def quiet_other_dags(api: AirflowApi, result: TriggerResult) -> None:
    """Pause every DAG but the train DAG and end their runs started at boot (``@daily`` with catchup off)."""
    client = api._client_mod
    dags = client.DAGApi(api.api_client)
    runs = client.DagRunApi(api.api_client)
    for dag in dags.get_dags(limit=100).dags:
        if dag.dag_id == DAG_ID:
            continue
        dags.patch_dag(dag.dag_id, client.DAGPatchBody(is_paused=True))
        result.paused.append(dag.dag_id)
        for run in runs.get_dag_runs(dag.dag_id, state=["queued", "running"], limit=100).dag_runs:
            runs.patch_dag_run(
                dag.dag_id, run.dag_run_id, client.DAGRunPatchBody(state=client.DagRunMutableStates.FAILED)
            )
            result.ended_at_start.append(f"{dag.dag_id}/{run.dag_run_id}")


def _wait(what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{what}: not seen after {timeout:.0f} s")


def _finish_run(api: AirflowApi, run_id: str) -> tuple[str, str]:
    """Let the run end by itself (the asset run skips) or, once its first task has failed its try (the manual run:
    no data), mark that task failed so that the scheduler ends the run.

    Not the run itself: a run marked failed over REST is never seen finishing by the scheduler, and if the DAG
    processor parsed the DAG while the run was active, ``DagModel.exceeds_max_non_backfill`` stays set and the next
    asset-triggered run waits for the next parse (a 28.6 s sample in a first version of this benchmark).
    """
    client = api._client_mod
    runs = client.DagRunApi(api.api_client)
    tis = client.TaskInstanceApi(api.api_client)
    marked = False

    def settled() -> tuple[str, str] | None:
        nonlocal marked
        run = runs.get_dag_run(DAG_ID, run_id)
        first = api.task_states(DAG_ID, run_id).get("training_set", "none")
        if _terminal(run.state):
            return str(run.state.value), first
        if first == "up_for_retry" and not marked:
            body = client.PatchTaskInstanceBody(new_state=client.TaskInstanceState.FAILED)
            tis.patch_task_instance(DAG_ID, run_id, "training_set", body)
            marked = True
        return None

    state, first = _wait(f"{DAG_ID} run {run_id} to finish", settled)
    return (f"{state} (training_set marked failed)" if marked else state), ("up_for_retry" if marked else first)


def asset_sample(api: AirflowApi, asset_id: int, n: int) -> TriggerSample:
    """Emit the drift event over REST; wait for the train run it creates to start, then to finish."""
    client = api._client_mod
    runs = client.DagRunApi(api.api_client)
    before = {r.dag_run_id for r in runs.get_dag_runs(DAG_ID, limit=1000).dag_runs}
    extra = {
        "model": MODEL,
        "day": MONTH_LAST.isoformat(),
        "window_end": MONTH_LAST.isoformat(),
        "status": "drift",
        "reasons": [f"benchmark drift event {n}"],
        "drift_share": 0.5,
    }
    request = time.time()
    event = client.AssetApi(api.api_client).create_asset_event(
        client.CreateAssetEventsBody(asset_id=asset_id, extra=extra)
    )
    response = time.time()

    def started() -> Any:
        for run in runs.get_dag_runs(DAG_ID, limit=20, order_by=["-run_after"]).dag_runs:
            if run.dag_run_id not in before and run.start_date is not None:
                return run
        return None

    run = _wait("the asset-triggered run to start", started)
    state, first = _finish_run(api, run.dag_run_id)
    return TriggerSample(
        path="asset",
        run_id=run.dag_run_id,
        request_s=request,
        response_s=response,
        recorded_s=event.timestamp.timestamp(),
        queued_s=_ts(run.queued_at) or float("nan"),
        start_s=run.start_date.timestamp(),
        end_state=state,
        first_task_state=first,
    )


def manual_sample(api: AirflowApi) -> TriggerSample:
    """``POST .../dagRuns``; wait for the run to start, then to finish."""
    runs = api._client_mod.DagRunApi(api.api_client)
    request = time.time()
    run_id = api.trigger(DAG_ID, datetime.now(UTC), conf={})
    response = time.time()
    run = _wait("the manual run to start", lambda: (r := runs.get_dag_run(DAG_ID, run_id)).start_date and r)
    state, first = _finish_run(api, run_id)
    queued = _ts(run.queued_at) or float("nan")
    return TriggerSample(
        path="manual",
        run_id=run_id,
        request_s=request,
        response_s=response,
        recorded_s=queued,
        queued_s=queued,
        start_s=run.start_date.timestamp(),
        end_state=state,
        first_task_state=first,
    )


def measure_trigger(samples: int, tmp: Path, database_url: str) -> TriggerResult:
    """Start Airflow on PostgreSQL with an empty home, then alternate drift events and manual triggers."""
    from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, start_airflow, stop_airflow
    from airflow_mlops.processes import free_port
    from airflow_mlops.settings import load_settings

    result = TriggerResult()
    home, models = tmp / "airflow-mlops-home", tmp / "airflow-models"
    models.mkdir(parents=True)
    shutil.copyfile(SPEC_FILE, models / SPEC_FILE.name)
    env = {
        "MLOPS_HOME": str(home),
        "MLOPS_MODELS_DIR": str(models),
        "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
    }
    with isolated_environ(env):
        settings = load_settings()
        result.config = scheduler_config(settings)
        started = time.perf_counter()
        server = start_airflow(free_port(), settings, wait_for_dags=(DAG_ID,), progress=log)
        result.airflow_start_s = time.perf_counter() - started
        log(f"Airflow up in {result.airflow_start_s:.0f} s at {server.url} (pid {server.pid}, log {server.log_path})")
        try:
            api = AirflowApi.login(server.url, ADMIN_USER, server.password())
            quiet_other_dags(api, result)
            assets = api._client_mod.AssetApi(api.api_client).get_assets(uri_pattern=DRIFT_URI).assets
            asset_id = next(a.id for a in assets if a.uri == DRIFT_URI)
            time.sleep(SETTLE_SECONDS * 2)
            rng = random.Random(0)
            for warm in (asset_sample(api, asset_id, 0), manual_sample(api)):
                result.warmup.append(warm)
                log(f"warm-up {warm.path}: {warm.request_to_start:.2f} s to start ({warm.end_state})")
                time.sleep(SETTLE_SECONDS + rng.uniform(0, JITTER_SECONDS))
            for n in range(samples):
                for path in ("asset", "manual") if n % 2 == 0 else ("manual", "asset"):
                    sample = asset_sample(api, asset_id, n + 1) if path == "asset" else manual_sample(api)
                    (result.asset if path == "asset" else result.manual).append(sample)
                    result.order.append(path)
                    log(
                        f"{n + 1}/{samples} {path}: request -> start {sample.request_to_start:.2f} s, "
                        f"recorded -> start {sample.recorded_to_start:.2f} s ({sample.end_state}, "
                        f"training_set {sample.first_task_state})"
                    )
                    time.sleep(SETTLE_SECONDS + rng.uniform(0, JITTER_SECONDS))
        finally:
            stop_airflow(server.pid)
            log(f"Airflow (pid {server.pid}) stopped")
    return result


# ------------------------------------------------------------------------------------------------- render


def render_drift(res: DriftResult) -> list[str]:
    numeric, categorical = res.columns
    lines = [
        "### 1. Drift report: Evidently `DataDriftPreset` vs a plain scipy loop running the same tests",
        "",
        f"Reference: the train rows of the shipped spec's window ending {REFERENCE_END} ({res.reference_rows:,} rows, "
        f"model input: {numeric} numeric + {categorical} categorical columns). Current: model input of real later "
        f"flights built by the library the same way: {ONE_DAY} and {MONTH_FIRST} .. {MONTH_LAST} (data setup "
        f"{res.setup_s:.0f} s, not counted). Evidently = `monitoring._drift_report` (`Report([DataDriftPreset(...)])."
        f"run` plus reading `snapshot.dict()`); plain = per column `scipy.stats.wasserstein_distance` / "
        f"`max(std(reference), 0.001)` and `scipy.spatial.distance.jensenshannon` of the relative frequencies, NaN "
        f"and infinities dropped. Both in this process after one untimed Evidently call on {WARMUP_ROWS:,} rows; "
        "conditions alternate (order per size: "
        + "; ".join(f"{s.label}: {', '.join(s.order)}" for s in res.sizes)
        + ").",
        "",
        "| current data | rows | Evidently median (s) | min-max (s) | plain scipy median (s) | min-max (s) "
        "| ratio Evidently / plain | target | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for s in res.sizes:
        ratio = median(s.evidently_s) / median(s.plain_s)
        lines.append(
            f"| {s.label} | {s.rows:,} | {median(s.evidently_s):.2f} | {spread(s.evidently_s)} "
            f"| {median(s.plain_s):.3f} | {spread(s.plain_s, 3)} | **{ratio:.1f}x** | <= {MAX_DRIFT_RATIO:.0f}x "
            f"| {verdict(ratio <= MAX_DRIFT_RATIO)} |"
        )
    ratios = [median(s.evidently_s) / median(s.plain_s) for s in res.sizes]
    met = all(r <= MAX_DRIFT_RATIO for r in ratios)
    lines += [
        "",
        f"Target (issue): at most {MAX_DRIFT_RATIO:.0f}x. **{', '.join(f'{r:.1f}x' for r in ratios)} "
        f"({' / '.join(s.label for s in res.sizes)}): {'met' if met else 'not met'}.**",
        "",
        "Agreement (last Evidently report vs the plain loop, same frames):",
        "",
        "| current data | max abs score difference (column) | same drifted set | drift share Evidently / plain "
        "| drifted columns |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for s in res.sizes:
        ok = s.max_diff <= SCORE_TOLERANCE
        lines.append(
            f"| {s.label} | {s.max_diff:.1e} (`{s.worst_column}`){'' if ok else ' **over 1e-6**'} "
            f"| {'yes' if s.same_drifted else '**no**'} | {s.evidently_share:.3f} / {s.plain_share:.3f} "
            f"| {len(s.drifted)} of {numeric + categorical}: {', '.join(f'`{c}`' for c in s.drifted)} |"
        )
    lines += [
        "",
        "Where Evidently's time goes (exclusive wall time of wrapped calls, medians over the timed reports; the "
        "wrappers cost microseconds). `DataDriftPreset` computes each column's drift "
        f"{max(s.calls.get(TESTS, 0) for s in res.sizes) // max(1, numeric + categorical)} times: for "
        "`DriftedColumnsCount` (legacy `DatasetDriftMetric`), for each `ValueDrift`, and again for the preset's "
        "`DataDriftTable` widget, and renders plotly figures for every column while computing:",
        "",
        "| part | "
        + " | ".join(f"{s.label} (s)" for s in res.sizes)
        + " | "
        + " | ".join(f"{s.label} share" for s in res.sizes)
        + " |",
        "| --- | " + " | ".join(["---:"] * (2 * len(res.sizes))) + " |",
    ]
    totals = [median(s.evidently_s) for s in res.sizes]
    for part in PART_ORDER:
        values = [median(p.get(part, 0.0) for p in s.parts) for s in res.sizes]
        calls = res.sizes[-1].calls.get(part) if part != PLUMBING else None
        name = f"{part} ({calls} call{'s' if calls > 1 else ''})" if calls else part
        lines.append(
            f"| {name} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + " | "
            + " | ".join(f"{v / t:.0%}" for v, t in zip(values, totals, strict=True))
            + " |"
        )
    once = [
        median(p.get(TESTS, 0.0) for p in s.parts) / max(1, s.calls.get(TESTS, 1) // (numeric + categorical))
        for s in res.sizes
    ]
    lines += [
        "| of which: the tests once per column (what the plain loop computes) | "
        + " | ".join(f"{v:.3f}" for v in once)
        + " | "
        + " | ".join(f"{v / t:.0%}" for v, t in zip(once, totals, strict=True))
        + " |",
        "",
        "Outside `_drift_report`, `monitor_day` then saves the report: `save_html` "
        + ", ".join(f"{s.label} {s.save_html_s:.2f} s ({s.html_bytes / 1e6:.1f} MB)" for s in res.sizes)
        + "; `json()` "
        + ", ".join(f"{s.label} {s.json_s * 1000:.0f} ms ({s.json_bytes / 1e3:.0f} kB)" for s in res.sizes)
        + f". Fixed costs a fresh task process pays once: `import evidently, evidently.presets` {res.import_s:.1f} s, "
        f"first `_drift_report` call ({WARMUP_ROWS:,} rows) {res.first_call_s:.1f} s.",
    ]
    if res.empty_days:
        days = ", ".join(f"{d} (`{'`, `'.join(cols)}`)" for d, cols in sorted(res.empty_days.items()))
        lines += [
            "",
            f"Observed while building the data (behaviour, not timed): on {len(res.empty_days)} of the month's days a "
            f"model column has no value at all: {days}. Evidently itself refuses such a column (`ValueError: An empty "
            "column ... was provided for drift calculation in the current dataset`), so the library must leave it out "
            f"of the preset. Checked once with a {WARMUP_ROWS:,}-row reference sample: {res.empty_day_outcome}.",
        ]
    return lines


def render_trigger(res: TriggerResult) -> list[str]:
    asset, manual = res.asset, res.manual
    a_req, m_req = median(s.request_to_start for s in asset), median(s.request_to_start for s in manual)
    a_rec, m_rec = median(s.recorded_to_start for s in asset), median(s.recorded_to_start for s in manual)
    ratio_req, ratio_rec = a_req / m_req, a_rec / m_rec
    lo, hi = bootstrap_ratio([s.request_to_start for s in asset], [s.request_to_start for s in manual])
    config = ", ".join(f"`{k}` = {v}" for k, v in res.config.items())
    lines = [
        "### 2. Drift event -> training run start, next to a manual REST trigger",
        "",
        f"`airflow standalone` ({res.config.get('core.executor', 'LocalExecutor')}, its own `AIRFLOW_HOME`, a fresh "
        f"PostgreSQL metadata database; up in {res.airflow_start_s:.0f} s, not counted), the shipped spec, an empty "
        f"`MLOPS_HOME` (no data). Paused for the measurement: {', '.join(f'`{d}`' for d in res.paused) or 'none'}"
        + (f" (runs they started at boot marked failed: {len(res.ended_at_start)})" if res.ended_at_start else "")
        + f". Asset path: `POST /api/v2/assets/events` for `{DRIFT_URI}` (official client "
        "`AssetApi.create_asset_event`, extra as the monitor DAG emits it: `status: drift`, `window_end`) -> the "
        f"scheduler creates and starts a `{DAG_ID}` run (it then skips at `training_set`: no complete window). Manual "
        f"path: `POST /api/v2/dags/{DAG_ID}/dagRuns` (`AirflowApi.trigger`) -> the run starts (its `training_set` "
        "fails its first try, no data; the task is then marked failed over REST and the scheduler ends the run: "
        "marking the run itself failed can leave `exceeds_max_non_backfill` set and defer the next asset-triggered run "
        "until the DAG is parsed again). Every run is over before the next "
        f"request; {len(asset)} + {len(manual)} samples alternating ({', '.join(res.order)}) after one untimed warm-up "
        f"each; a pause of {SETTLE_SECONDS:.0f}-{SETTLE_SECONDS + JITTER_SECONDS:.0f} s (uniformly random) before each "
        "request, so that requests land at random phases of the scheduler loop; poll every "
        f"{POLL_SECONDS} s (the figures are the server's timestamps, not the poll). Scheduler "
        f"settings (as configured for this Airflow): {config}.",
        "",
        "| path | request -> run start, median (s) | min-max (s) | server record -> run start, median (s) "
        "| min-max (s) | samples |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| manual `POST .../dagRuns` | {m_req:.2f} | {spread(s.request_to_start for s in manual)} | {m_rec:.2f} "
        f"| {spread(s.recorded_to_start for s in manual)} | {len(manual)} |",
        f"| drift asset event `POST /assets/events` | {a_req:.2f} | {spread(s.request_to_start for s in asset)} "
        f"| {a_rec:.2f} | {spread(s.recorded_to_start for s in asset)} | {len(asset)} |",
        f"| **ratio asset / manual** | **{ratio_req:.2f}x** | | **{ratio_rec:.2f}x** | | |",
        "",
        f"Target (issue): at most {MAX_TRIGGER_RATIO}x. Request -> start (client clock just before the `POST` -> the "
        f"run's `start_date`): **{ratio_req:.2f}x, {'met' if ratio_req <= MAX_TRIGGER_RATIO else 'not met'}** "
        f"({verdict(ratio_req <= MAX_TRIGGER_RATIO)}). Server record -> start (the event's `timestamp` / the manual "
        f"run's `queued_at` -> `start_date`): **{ratio_rec:.2f}x, "
        f"{'met' if ratio_rec <= MAX_TRIGGER_RATIO else 'not met'}** ({verdict(ratio_rec <= MAX_TRIGGER_RATIO)}). "
        f"How sure: the medians differ by {a_req - m_req:+.2f} s, against a scheduler idle sleep of "
        f"{res.config.get('scheduler.scheduler_idle_sleep_time', '?')} s; bootstrap 90% interval of the request -> "
        f"start ratio (each path's samples resampled, 2,000 rounds): {lo:.2f}x-{hi:.2f}x"
        + (
            f", which contains {MAX_TRIGGER_RATIO}x: this run cannot tell whether the target holds."
            if lo <= MAX_TRIGGER_RATIO <= hi
            else f", entirely {'below' if hi < MAX_TRIGGER_RATIO else 'above'} {MAX_TRIGGER_RATIO}x."
        ),
        "",
        "Split (medians, s):",
        "",
        "| path | request -> API answered | request -> server record | record -> run created (`queued_at`) "
        "| `queued_at` -> `start_date` |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| manual | {median(s.response_s - s.request_s for s in manual):.3f} "
        f"| {median(s.recorded_s - s.request_s for s in manual):.3f} | 0 (the API creates the run) "
        f"| {median(s.start_s - s.queued_s for s in manual):.3f} |",
        f"| asset | {median(s.response_s - s.request_s for s in asset):.3f} "
        f"| {median(s.recorded_s - s.request_s for s in asset):.3f} "
        f"| {median(s.queued_s - s.recorded_s for s in asset):.3f} "
        f"| {median(s.start_s - s.queued_s for s in asset):.3f} |",
        "",
        "Per sample, request -> start (s): asset "
        + ", ".join(f"{s.request_to_start:.2f}" for s in asset)
        + "; manual "
        + ", ".join(f"{s.request_to_start:.2f}" for s in manual)
        + ". Warm-up: "
        + ", ".join(f"{s.path} {s.request_to_start:.2f}" for s in res.warmup)
        + ". Both paths wait for the same scheduler loop (`_create_dagruns_for_dags` then `_start_queued_dagruns` in "
        "one iteration), which sleeps up to `scheduler_idle_sleep_time` when idle: with a few samples the ratio "
        "mostly reflects where in that sleep each request landed.",
    ]
    return lines


def render(drift: DriftResult | None, trigger: TriggerResult | None, context: dict[str, Any]) -> str:
    lines = [
        "## Monitoring: drift report cost and drift-to-retraining latency",
        "",
        machine_info(),
        "",
        f"2-core machine shared with other work: 1-minute load average {context['load'][0]:.2f} at the start, "
        f"{context['load'][1]:.2f} at the end (compare figures of one run, side by side). Whole benchmark: "
        f"{context['elapsed']:.0f} s.",
        "",
    ]
    if drift is not None:
        lines += render_drift(drift)
    else:
        lines += ["### 1. Drift report", "", f"Not measured: {context.get('drift_error', 'not run (--only)')}"]
    lines.append("")
    if trigger is not None:
        lines += render_trigger(trigger)
    else:
        lines += [
            "### 2. Drift event -> training run start",
            "",
            f"Not measured: {context.get('trigger_error', 'not run (--only)')}",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- run


def run(samples: int | None = None, only: str | None = None) -> str:
    """Measure, write the ``monitoring`` section of ``BENCHMARKS.md`` and return its markdown."""
    from tests.integration.conftest import fresh_postgres_database

    samples = max(1, samples or int(os.environ.get("BENCH_SAMPLES", DEFAULT_SAMPLES)))
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    context: dict[str, Any] = {}
    drift: DriftResult | None = None
    trigger: TriggerResult | None = None
    failures: list[Exception] = []
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-", ignore_cleanup_errors=True) as raw:
        tmp = Path(raw)
        if only in (None, "drift"):
            try:
                with isolated_environ({"PYTHONPYCACHEPREFIX": str(tmp / "pycache")}):
                    data = prepare_data(tmp / "drift")
                    log(
                        f"data ready in {data.setup_s:.0f} s: reference {len(data.reference):,} rows, day "
                        f"{len(data.day):,}, month {len(data.month):,}"
                    )
                    drift = measure_drift(data, samples, tmp)
                    del data
            except Exception as exc:
                failures.append(exc)
                context["drift_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if only in (None, "trigger"):
            try:
                with fresh_postgres_database() as database_url:
                    trigger = measure_trigger(samples + TRIGGER_EXTRA_SAMPLES, tmp, database_url)
            except Exception as exc:
                failures.append(exc)
                context["trigger_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    context.update(load=(load_before, os.getloadavg()[0]), elapsed=time.monotonic() - started)
    markdown = render(drift, trigger, context)
    write_section(NAME, markdown)
    print(f"[{NAME}] done in {context['elapsed']:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    if failures:
        raise failures[0]
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.benchmarks.bench_monitoring [--samples N] [--only drift|trigger]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help=f"repetitions (default {DEFAULT_SAMPLES})")
    parser.add_argument("--only", choices=("drift", "trigger"), default=None, help="run one measurement")
    args = parser.parse_args(argv)
    run(args.samples, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
