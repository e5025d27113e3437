"""Run the benchmarks and write their sections of ``BENCHMARKS.md``: what ``make bench`` calls.

    .venv/bin/python -m tests.benchmarks.run                 # every benchmark
    .venv/bin/python -m tests.benchmarks.run parse_cost      # those whose module name contains "parse_cost"
    .venv/bin/python -m tests.benchmarks.run --list
    .venv/bin/python -m tests.benchmarks.run --samples 3     # quicker, noisier (sets BENCH_SAMPLES)

A benchmark is a module ``tests/benchmarks/bench_<name>.py`` with a function ``run() -> str | None``
that measures, writes its own section with :func:`tests.benchmarks.report.write_section` and returns
(or prints) its markdown. Benchmarks never assert timings: the exit status is non-zero only when a
benchmark crashed; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PACKAGE = __package__ or "tests.benchmarks"
# The flights example's own code (include/datasets/nyc_flights.py), as pytest's `pythonpath` has it.
sys.path.insert(0, str(BENCH_DIR.parents[1] / "include" / "datasets"))


def discover() -> list[str]:
    """Module names of every ``bench_*.py`` next to this file, sorted."""
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks one after the other; 1 if any crashed."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only benchmarks whose module name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--samples", type=int, help="samples per measurement (exported as BENCH_SAMPLES)")
    args = parser.parse_args(argv)

    modules = [m for m in discover() if not args.names or any(n in m for n in args.names)]
    if args.list or not modules:
        print("\n".join(discover()) if args.list else f"no benchmark matches {args.names}; have: {discover()}")
        return 0 if args.list else 2
    if args.samples:
        os.environ["BENCH_SAMPLES"] = str(args.samples)

    crashed: list[str] = []
    for name in modules:
        started = time.monotonic()
        print(f"=== {name} ===", flush=True)
        try:
            importlib.import_module(f"{PACKAGE}.{name}").run()
        except Exception:
            traceback.print_exc()
            crashed.append(name)
        print(f"=== {name}: {'CRASHED' if name in crashed else 'done'} in {time.monotonic() - started:.0f} s ===")
    if crashed:
        print(f"benchmarks that crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
