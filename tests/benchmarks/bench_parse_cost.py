"""Parse cost of every DAG file, as Airflow's DAG processor measures it, next to a one-task stub.

Two benchmarks, one run, written to the ``parse_cost`` section of ``BENCHMARKS.md``:

1. **Per DAG file**: ``FileLoadStat.duration`` of each ``dags/**/*.py`` (the repository's own model
   specs) next to a stub DAG file (``schedule=None``, one ``@task``, imports only ``airflow.sdk``).
   Targets: at most 0.2 s per file and at most 1.5x the stub. The files read the configuration through the DAG
   plan (``airflow_mlops.dag_plan``), which the warm-up round writes: the steady state. Each file is also measured
   with its plan removed before every sample (the first parse after a configuration change).
2. **With 50 model specs**: the same files with ``MLOPS_MODELS_DIR`` holding 50 copies of
   ``include/models/flight_delay.yaml`` (``model_00`` .. ``model_49``) against the same folder with
   one. Target: at most 2x (DAGs generated from specs must not parse each spec expensively).
3. **The floor under 2**: ``parse_floor.py``, DAGs of ``train_<model>``'s shape (tasks, dependencies,
   schedule, params) written from constants with only ``airflow.sdk``, parsed with 1 and with 50 DAGs: what
   Airflow itself charges per DAG of that shape, and so how much of ``train.py``'s cost per spec is the
   engine's.
4. **With 10 datasets**: ``MLOPS_DATASETS_DIR`` holding ``include/datasets/flights.yaml`` and 9 copies
   (``dataset_01`` .. ``dataset_09``, beside the dataset's code and suites) against a folder holding only
   ``flights.yaml``, both with the one-spec models folder. Target: at most 2x.

The one-spec and 50-spec conditions also read a datasets folder with only ``flights.yaml``; the per-file
conditions read the repository's folders as they are (both shipped examples).

Every sample is a fresh interpreter (``parse_probe.py``) that first imports what the DAG processor
has loaded (Airflow, the Task SDK, ``DagBag``), freezes those objects for the garbage collector as the DAG
processor does before it forks its parsing processes, and then parses exactly one file; conditions are
interleaved round by round so that a change in machine load hits them alike, and a first warm-up
round is discarded. Figures are medians. Nothing here asserts a timing.

Run: ``.venv/bin/python -m tests.benchmarks.run parse_cost`` (or ``-m tests.benchmarks.bench_parse_cost``);
``BENCH_SAMPLES`` (default 7) sets the number of samples per condition.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, cast

from airflow_mlops.dag_plan import plan_path
from airflow_mlops.settings import load_settings
from tests.benchmarks.report import REPO_ROOT, machine_info, write_section

NAME = "parse_cost"
DAGS_DIR = REPO_ROOT / "dags"
SPEC_TEMPLATE = REPO_ROOT / "include" / "models" / "flight_delay.yaml"
DATASETS_DIR = REPO_ROOT / "include" / "datasets"
DATASET_TEMPLATE = DATASETS_DIR / "flights.yaml"
PROBE = Path(__file__).resolve().with_name("parse_probe.py")
FLOOR = Path(__file__).resolve().with_name("parse_floor.py")
FLOOR_COUNT_VARIABLE = "PARSE_FLOOR_DAGS"
#: The DAG file whose DAGs the floor reproduces.
FLOOR_SHAPE_OF = "train.py"

N_SPECS = 50
N_DATASETS = 10
MAX_SECONDS = 0.2
MAX_STUB_RATIO = 1.5
MAX_SPEC_RATIO = 2.0
DEFAULT_SAMPLES = 7

STUB_DAG = '''"""Stub DAG for the parse-cost benchmark: one task, imports only airflow.sdk."""

from datetime import UTC, datetime

from airflow.sdk import dag, task


@dag(
    dag_id="parse_cost_stub",
    schedule=None,
    start_date=datetime(2013, 1, 1, tzinfo=UTC),
    tags=["benchmark"],
    default_args={"owner": "mlops", "retries": 1},
)
def parse_cost_stub():
    @task
    def noop() -> None:
        """Do nothing."""

    noop()


parse_cost_stub()
'''

#: Variables of the caller's shell that would change what Airflow or the library parse.
_ISOLATED_PREFIXES = ("AIRFLOW", "MLOPS_", "_AIRFLOW")


class ProbeResult(TypedDict):
    """What ``parse_probe.py`` writes for one sample."""

    file: str
    warmup_s: float
    duration_s: float
    dags: int
    tasks: int
    files: int
    import_errors: dict[str, str]


@dataclass(frozen=True)
class Condition:
    """One thing to measure: a DAG file parsed with a given models folder (``None``: the repository's)."""

    key: str
    label: str
    file: Path
    models_dir: Path | None = None
    datasets_dir: Path | None = None
    floor_dags: int | None = None
    #: Remove the DAG plan (``airflow_mlops.dag_plan``) before each sample: the parse right after a config change.
    cold: bool = False


@dataclass
class Samples:
    """Measurements of one condition."""

    durations: list[float] = field(default_factory=list)
    warmups: list[float] = field(default_factory=list)
    dags: int = 0
    tasks: int = 0
    import_errors: dict[str, str] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.durations)

    @property
    def spread(self) -> str:
        return f"{min(self.durations):.3f}-{max(self.durations):.3f}"


def dag_files() -> list[Path]:
    """Every Python file under ``dags/`` (sorted), whatever later issues add; ``_helpers.py`` excluded."""
    return sorted(p for p in DAGS_DIR.rglob("*.py") if "__pycache__" not in p.parts and not p.name.startswith("_"))


def _renamed(template: Path, name: str) -> str:
    """The text of ``template`` with its top-level ``name:`` set to ``name``."""
    text, replaced = re.subn(
        r"^name:.*$", f"name: {name}", template.read_text(encoding="utf-8"), count=1, flags=re.MULTILINE
    )
    if not replaced:
        raise RuntimeError(f"{template} has no top-level 'name:' line to rewrite")
    return text


def write_spec_folder(folder: Path, count: int) -> Path:
    """``folder`` with ``count`` copies of the flight_delay spec (``model_00``...; one copy keeps its name)."""
    folder.mkdir(parents=True, exist_ok=True)
    if count == 1:
        shutil.copyfile(SPEC_TEMPLATE, folder / SPEC_TEMPLATE.name)
        return folder
    for i in range(count):
        name = f"model_{i:02d}"
        (folder / f"{name}.yaml").write_text(_renamed(SPEC_TEMPLATE, name), encoding="utf-8")
    return folder


def write_dataset_folder(folder: Path, count: int) -> Path:
    """A datasets folder holding the flights dataset (its file, code and suites) and ``count - 1`` copies of it
    (``dataset_01``...): the repository's other datasets are left out, so one folder differs from the other only
    in the number of datasets."""
    folder.mkdir(parents=True)
    shutil.copyfile(DATASET_TEMPLATE, folder / DATASET_TEMPLATE.name)
    for code in DATASETS_DIR.glob("*.py"):
        shutil.copyfile(code, folder / code.name)
    suites = DATASETS_DIR / "suites" / DATASET_TEMPLATE.stem
    shutil.copytree(suites, folder / "suites" / DATASET_TEMPLATE.stem)
    for i in range(1, count):
        name = f"dataset_{i:02d}"
        (folder / f"{name}.yaml").write_text(_renamed(DATASET_TEMPLATE, name), encoding="utf-8")
        shutil.copytree(suites, folder / "suites" / name)
    return folder


def check_spec_folder(folder: Path, expected: int) -> None:
    """Fail unless the library loads exactly ``expected`` valid specs from ``folder`` (the scenario is real)."""
    from airflow_mlops.specs import load_specs

    loaded = load_specs(folder)
    if loaded.errors or len(loaded.specs) != expected:
        errors = "\n".join(str(e) for e in loaded.errors)
        raise RuntimeError(f"{folder}: expected {expected} valid specs, got {len(loaded.specs)}\n{errors}")


def check_dataset_folder(folder: Path, expected: int) -> None:
    """Fail unless the library loads exactly ``expected`` datasets from ``folder``."""
    from airflow_mlops.datasets import load_datasets

    loaded = load_datasets(folder)
    if loaded.errors or len(loaded.datasets) != expected:
        errors = "\n".join(str(e) for e in loaded.errors)
        raise RuntimeError(f"{folder}: expected {expected} valid datasets, got {len(loaded.datasets)}\n{errors}")


def sample_env(
    state: Path, models_dir: Path | None, datasets_dir: Path | None = None, floor_dags: int | None = None
) -> dict[str, str]:
    """A child's environment: the caller's minus ``AIRFLOW*``/``MLOPS_*``, state under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_PREFIXES)}
    env.update(
        {
            "AIRFLOW_HOME": str(state / "airflow"),
            "MLOPS_HOME": str(state / "mlops"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        }
    )
    if models_dir is not None:
        env["MLOPS_MODELS_DIR"] = str(models_dir)
    if datasets_dir is not None:
        env["MLOPS_DATASETS_DIR"] = str(datasets_dir)
    if floor_dags is not None:
        env[FLOOR_COUNT_VARIABLE] = str(floor_dags)
    return env


def sample(condition: Condition, state: Path) -> ProbeResult:
    """Parse ``condition.file`` once in a fresh interpreter; the probe's JSON result."""
    out = state / "sample.json"
    out.unlink(missing_ok=True)
    env = sample_env(state, condition.models_dir, condition.datasets_dir, condition.floor_dags)
    if condition.cold:
        plan_path(load_settings({k: v for k, v in env.items() if k.startswith("MLOPS_")})).unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-P", str(PROBE), str(condition.file), str(out)],
        env=env,
        cwd=state,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"parse probe failed for {condition.label} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return cast(ProbeResult, json.loads(out.read_text()))


def measure(conditions: list[Condition], samples: int, state: Path, warmup_rounds: int = 1) -> dict[str, Samples]:
    """``samples`` parses of every condition, interleaved round by round after ``warmup_rounds``."""
    results = {c.key: Samples() for c in conditions}
    rounds = warmup_rounds + samples
    for round_no in range(rounds):
        counted = round_no >= warmup_rounds
        for condition in conditions:
            raw = sample(condition, state)
            got = results[condition.key]
            got.dags, got.tasks, got.import_errors = raw["dags"], raw["tasks"], raw["import_errors"]
            if counted:
                got.durations.append(raw["duration_s"])
                got.warmups.append(raw["warmup_s"])
            tag = f"{round_no - warmup_rounds + 1}/{samples}" if counted else "warm-up"
            print(f"[{NAME}] {tag:>7} {condition.label}: {raw['duration_s']:.3f} s", file=sys.stderr)
    return results


def _verdict(ok: bool, errors: dict[str, str]) -> str:
    if errors:
        return "ERROR (import error)"
    return "PASS" if ok else "MISS"


def render(files: list[Path], results: dict[str, Samples], samples: int) -> str:
    """The markdown of the ``parse_cost`` section."""
    stub = results["stub"]
    warmup = statistics.median(w for s in results.values() for w in s.warmups)
    lines = [
        "## DAG file parse cost",
        "",
        machine_info(),
        "",
        f"`FileLoadStat.duration` from Airflow's `DagBag` (what the DAG processor records per file), median of "
        f"{samples} fresh interpreters per row after one discarded warm-up round, conditions interleaved. Each "
        f"interpreter first imports `airflow.dag_processing.processor` (Airflow, Task SDK, `DagBag`; median "
        f"{warmup:.2f} s, not counted), freezes those objects for the garbage collector (`gc.freeze()`, as the DAG "
        "processor's manager does before it forks the processes that parse files), then parses exactly one file. "
        "The stub is a one-`@task` DAG (`schedule=None`) importing only `airflow.sdk`.",
        "",
        "### Per DAG file",
        "",
        "| file | DAGs | tasks | median (s) | min-max (s) | ratio to stub | target | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        f"| stub (one `@task`) | {stub.dags} | {stub.tasks} | {stub.median:.3f} | {stub.spread} | 1.00x | - | - |",
    ]
    for f in files:
        got = results[f"file:{f}"]
        ratio = got.median / stub.median
        ok = got.median <= MAX_SECONDS and ratio <= MAX_STUB_RATIO
        lines.append(
            f"| `dags/{f.relative_to(DAGS_DIR)}` | {got.dags} | {got.tasks} | {got.median:.3f} | {got.spread} "
            f"| {ratio:.2f}x | <= {MAX_SECONDS} s and <= {MAX_STUB_RATIO}x stub | {_verdict(ok, got.import_errors)} |"
        )
    lines += [
        "",
        "The files read the configuration through the DAG plan (`airflow_mlops.dag_plan`), validated once and kept "
        "until a dataset file or spec changes; the warm-up round writes it, so the rows above are the steady state "
        "(the DAG processor parses every file every 30 s). The parse right after a change validates the files again:",
        "",
        "| file | median, plan rebuilt (s) | ratio to stub | median, plan current (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for f in files:
        cold, warm = results[f"cold:{f}"], results[f"file:{f}"]
        lines.append(
            f"| `dags/{f.relative_to(DAGS_DIR)}` | {cold.median:.3f} | {cold.median / stub.median:.2f}x "
            f"| {warm.median:.3f} |"
        )
    lines += [
        "",
        f"### With {N_SPECS} model specs",
        "",
        f"`MLOPS_MODELS_DIR` holding {N_SPECS} copies of `include/models/flight_delay.yaml` (`model_00` .. "
        f"`model_{N_SPECS - 1:02d}`) against the same folder holding only `flight_delay.yaml`; the datasets folder "
        "holds only `flights.yaml` in both.",
        "",
        f"| file | DAGs (1 -> {N_SPECS} specs) | median, 1 spec (s) | median, {N_SPECS} specs (s) "
        f"| ratio {N_SPECS}/1 | target | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for f in files:
        one, many = results[f"one:{f}"], results[f"many:{f}"]
        ratio = many.median / one.median
        errors = one.import_errors | many.import_errors
        lines.append(
            f"| `dags/{f.relative_to(DAGS_DIR)}` | {one.dags} -> {many.dags} | {one.median:.3f} | {many.median:.3f} "
            f"| {ratio:.2f}x | <= {MAX_SPEC_RATIO}x | {_verdict(ratio <= MAX_SPEC_RATIO, errors)} |"
        )
    lines += _floor_lines(files, results)
    lines += [
        "",
        f"### With {N_DATASETS} datasets",
        "",
        f"`MLOPS_DATASETS_DIR` holding `include/datasets/flights.yaml` and {N_DATASETS - 1} copies (`dataset_01` .. "
        f"`dataset_{N_DATASETS - 1:02d}`, suites copied too) against a folder holding only `flights.yaml`; one model "
        "spec in both.",
        "",
        f"| file | DAGs (1 -> {N_DATASETS} datasets) | median, 1 dataset (s) | median, {N_DATASETS} datasets (s) "
        f"| ratio {N_DATASETS}/1 | target | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for f in files:
        one, many = results[f"one:{f}"], results[f"datasets:{f}"]
        ratio = many.median / one.median
        errors = one.import_errors | many.import_errors
        lines.append(
            f"| `dags/{f.relative_to(DAGS_DIR)}` | {one.dags} -> {many.dags} | {one.median:.3f} | {many.median:.3f} "
            f"| {ratio:.2f}x | <= {MAX_SPEC_RATIO}x | {_verdict(ratio <= MAX_SPEC_RATIO, errors)} |"
        )
    errors = {k: v for s in results.values() for k, v in s.import_errors.items()}
    if errors:
        lines += ["", "Import errors:", ""]
        lines += [f"- `{path}`: {msg.strip().splitlines()[-1]}" for path, msg in sorted(errors.items())]
    return "\n".join(lines)


def _per_dag_ms(one: Samples, many: Samples) -> float:
    """What each DAG past the first adds to the parse, in milliseconds (medians)."""
    return (many.median - one.median) / max(many.dags - one.dags, 1) * 1000


def _floor_lines(files: list[Path], results: dict[str, Samples]) -> list[str]:
    """The floor's row and the per-DAG comparison of every file that makes one DAG per spec."""
    one, many = results["floor:one"], results["floor:many"]
    errors = one.import_errors | many.import_errors
    floor_ms = _per_dag_ms(one, many)
    lines = [
        f"| Airflow floor: `tests/benchmarks/parse_floor.py` | {one.dags} -> {many.dags} | {one.median:.3f} "
        f"| {many.median:.3f} | {many.median / one.median:.2f}x | - | {'ERROR (import error)' if errors else '-'} |",
        "",
        "The floor builds DAGs of `train_<model>`'s shape (the same seven TaskFlow tasks and dependencies, "
        "two-asset schedule, two trigger params, `default_args`, outlets) from constants, importing only "
        "`airflow.sdk`: what Airflow itself charges per DAG of that shape. Per DAG past the first, `dags/train.py` "
        "next to it:",
        "",
        "| file | ms per extra DAG | the floor's (ms) | engine's own (ms) | per extra DAG / floor's |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for f in files:
        first, fifty = results[f"one:{f}"], results[f"many:{f}"]
        if f.name != FLOOR_SHAPE_OF:  # the floor has train's shape; other files' DAGs are other shapes
            continue
        ms = _per_dag_ms(first, fifty)
        lines.append(
            f"| `dags/{f.relative_to(DAGS_DIR)}` | {ms:.1f} | {floor_ms:.1f} | {ms - floor_ms:.1f} "
            f"| {ms / floor_ms:.2f}x |"
        )
    return lines


def run(samples: int | None = None) -> str:
    """Measure, write the ``parse_cost`` section of ``BENCHMARKS.md`` and return its markdown."""
    samples = samples or int(os.environ.get("BENCH_SAMPLES", DEFAULT_SAMPLES))
    files = dag_files()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-parse-cost-") as raw:
        tmp = Path(raw)
        stub_dir = tmp / "stub"
        stub_dir.mkdir()
        stub = stub_dir / "parse_cost_stub.py"
        stub.write_text(STUB_DAG, encoding="utf-8")
        one_spec = write_spec_folder(tmp / "models-1", 1)
        many_specs = write_spec_folder(tmp / f"models-{N_SPECS}", N_SPECS)
        check_spec_folder(one_spec, 1)
        check_spec_folder(many_specs, N_SPECS)
        one_dataset = write_dataset_folder(tmp / "datasets-1", 1)
        many_datasets = write_dataset_folder(tmp / f"datasets-{N_DATASETS}", N_DATASETS)
        check_dataset_folder(one_dataset, 1)
        check_dataset_folder(many_datasets, N_DATASETS)
        state = tmp / "state"
        state.mkdir()

        conditions = [
            Condition("stub", "stub", stub),
            Condition("floor:one", "floor (1 DAG)", FLOOR, floor_dags=1),
            Condition("floor:many", f"floor ({N_SPECS} DAGs)", FLOOR, floor_dags=N_SPECS),
        ]
        for f in files:
            rel = f.relative_to(DAGS_DIR)
            conditions += [
                Condition(f"file:{f}", f"dags/{rel}", f),
                Condition(f"cold:{f}", f"dags/{rel} (plan rebuilt)", f, cold=True),
                Condition(f"one:{f}", f"dags/{rel} (1 spec)", f, one_spec, one_dataset),
                Condition(f"many:{f}", f"dags/{rel} ({N_SPECS} specs)", f, many_specs, one_dataset),
                Condition(f"datasets:{f}", f"dags/{rel} ({N_DATASETS} datasets)", f, one_spec, many_datasets),
            ]
        results = measure(conditions, samples, state)
    markdown = render(files, results, samples)
    write_section(NAME, markdown)
    print(f"[{NAME}] done in {time.monotonic() - started:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.benchmarks.bench_parse_cost [--samples N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help=f"samples per condition (default {DEFAULT_SAMPLES})")
    args = parser.parse_args(argv)
    run(args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
