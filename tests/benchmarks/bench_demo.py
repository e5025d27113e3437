"""The demo's own timing: ``airflow-mlops demo`` from a fresh state folder, step by step, run after run.

Each run is what ``make clean && make demo`` does (install excluded): a new ``MLOPS_HOME`` (so a new embedded
PostgreSQL, Airflow home, MLflow store, Feast registry and online store), the whole loop, then everything
stopped (``--stop`` and ``airflow-mlops down``). The demo writes ``run/demo.json`` (steps and the minute
each started, the history's days and minutes, train runs started during the history, runs per DAG and
state); this benchmark reads it. Runs: ``BENCH_DEMO_RUNS`` (default 5). The section keeps the previous
recorded figures (in a comment) and shows them side by side with the new ones.

The stable endpoint port of the shipped spec (3000) and Airflow's 8080 (a free one if busy) are used, as
by the demo itself: stop your own demo (``make stop``) before running this.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.report import BENCHMARKS_MD, machine_info, write_section

NAME = "demo"
CLI = Path(sys.executable).with_name("airflow-mlops")
PREVIOUS = re.compile(r"<!-- demo-figures: (\{.*?\}) -->")


def _run_once(root: Path, index: int) -> dict[str, Any]:
    """One demo in a fresh ``MLOPS_HOME``; its ``demo.json`` plus wall time, exit status and failures."""
    home = root / f"run-{index}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AIRFLOW"))}
    env["MLOPS_HOME"] = str(home)
    log_path = root / f"run-{index}.log"
    began = time.monotonic()
    with log_path.open("w") as log:
        done = subprocess.run(
            [str(CLI), "demo", "--model", "flight_delay", "--stop"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = (time.monotonic() - began) / 60
    subprocess.run([str(CLI), "down"], env=env, capture_output=True, check=False)
    record: dict[str, Any] = {"exit": done.returncode, "wall_min": round(wall, 2), "log": str(log_path)}
    figures = home / "run" / "demo.json"
    if figures.exists():
        record.update(json.loads(figures.read_text()))
    else:
        record["error"] = log_path.read_text(errors="replace")[-1500:]
    record["failed_runs"] = sum(
        n for counts in record.get("runs", {}).values() for key, n in counts.items() if key.endswith("/failed")
    )
    return record


def _step_minutes(record: dict[str, Any]) -> dict[str, float]:
    """Minutes per step: the next step's start minus this one's (the summary ends the last)."""
    steps = record.get("steps", [])
    return {a["step"]: round(b["started_min"] - a["started_min"], 2) for a, b in itertools.pairwise(steps)}


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r["exit"] == 0 and "total_min" in r]
    totals = [r["total_min"] for r in ok]
    rates = [r["history"]["days"] / r["history"]["minutes"] for r in ok if r.get("history", {}).get("minutes")]
    steps: dict[str, list[float]] = {}
    for record in ok:
        for step, minutes in _step_minutes(record).items():
            steps.setdefault(step, []).append(minutes)
    return {
        "runs": len(records),
        "passed": len(ok),
        "failed_runs": sum(r["failed_runs"] for r in records),
        "median_min": round(statistics.median(totals), 2) if totals else None,
        "max_min": round(max(totals), 2) if totals else None,
        "history_days_per_min_median": round(statistics.median(rates), 1) if rates else None,
        "train_runs_during_history_max": max((r.get("train_runs_during_history", 0) for r in ok), default=None),
        "steps_median_min": {step: round(statistics.median(v), 2) for step, v in steps.items()},
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


def _previous() -> dict[str, Any] | None:
    try:
        found = PREVIOUS.search(BENCHMARKS_MD.read_text(encoding="utf-8"))
    except OSError:
        return None
    return json.loads(found.group(1)) if found else None


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def render(records: list[dict[str, Any]], now: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The markdown of the section (``before``: the previous recorded summary, or None)."""
    prev = before or {}
    lines = [
        "## The demo, end to end (`make clean && make demo`, install excluded)",
        "",
        machine_info(),
        "",
        f"{now['runs']} consecutive run(s) of `airflow-mlops demo --stop`, each from a new `MLOPS_HOME` (new embedded "
        "PostgreSQL, Airflow, MLflow store, Feast registry and online store), on commit "
        f"`{now['commit']}`; previous recorded run: commit `{prev.get('commit', '-')}`.",
        "",
        "| figure | this run | previous run |",
        "| --- | --- | --- |",
    ]
    for key, label in (
        ("passed", "demos that succeeded"),
        ("failed_runs", "failed DAG runs, all demos together"),
        ("median_min", "minutes per demo, median"),
        ("max_min", "minutes per demo, max"),
        ("history_days_per_min_median", "history (90 days) in days per minute, median"),
        ("train_runs_during_history_max", "train runs started during the history, max"),
    ):
        lines.append(f"| {label} | {_cell(now.get(key))} | {_cell(prev.get(key))} |")
    lines += ["", "Minutes per step (median over the runs that succeeded):", "", "| step | this run | previous run |"]
    lines.append("| --- | --- | --- |")
    for step, minutes in now["steps_median_min"].items():
        lines.append(f"| {step} | {minutes} | {_cell(prev.get('steps_median_min', {}).get(step))} |")
    lines += ["", "Each run: minutes, history days per minute, train runs during the history, failed DAG runs.", ""]
    lines += [
        "| run | exit | minutes | days/min | train runs (history) | failed runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(records, 1):
        history = r.get("history") or {}
        rate = round(history["days"] / history["minutes"], 1) if history.get("minutes") else None
        lines.append(
            f"| {i} | {r['exit']} | {_cell(r.get('total_min'))} | {_cell(rate)} | "
            f"{_cell(r.get('train_runs_during_history'))} | {r['failed_runs']} |"
        )
    lines += ["", f"<!-- demo-figures: {json.dumps(now, sort_keys=True)} -->"]
    return "\n".join(lines)


def run() -> str:
    runs = int(os.environ.get("BENCH_DEMO_RUNS", "5"))
    root = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    records = []
    try:
        for index in range(1, runs + 1):
            record = _run_once(root, index)
            print(f"demo {index}/{runs}: exit {record['exit']}, {record.get('total_min')} min", flush=True)
            records.append(record)
    finally:
        if all(r["exit"] == 0 for r in records):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs of the runs kept in {root}", flush=True)
    markdown = render(records, _summary(records), _previous())
    write_section(NAME, markdown)
    print(markdown)
    return markdown
