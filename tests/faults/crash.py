"""Run one task of the ingest DAG in this process and SIGKILL the process at a chosen point inside it.

``python -m tests.faults.crash PLAN`` where ``PLAN`` is JSON::

    {"stage": "land" | "validate" | "features" | "materialize", "dataset": "flights", "day": "2013-01-10",
     "crash": {"at": "write_table" | "replace" | "online_write", "nth": 1, "match": "date="} | null}

The stage is the engine call the DAG's task makes (``land_partition``, ``check_partition``, ``build_features``,
``materialize_day``), with the settings of the environment (``MLOPS_HOME`` ...), as an Airflow task process
would run it. ``crash`` names the call to die in; only calls whose path contains ``match`` count, and the
``nth`` of them is where the process kills itself with SIGKILL, the way the kernel's OOM killer or a lost node
ends a task (no ``finally``, no ``atexit``, no flush):

- ``write_table``: ``pyarrow.parquet.write_table`` has written the first half of the file's bytes, then dies;
- ``replace``: ``os.replace`` has renamed the file into place, then dies (between two renames of one write);
- ``online_write``: Feast's SQLite online store has written the first half of a view's rows, then dies.

Without ``crash`` the stage runs to the end and the process exits 0: the retry.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import date
from typing import Any


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _countdown(nth: int) -> Callable[[], bool]:
    """True on the ``nth`` call."""
    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == nth

    return hit


def arm(at: str, nth: int, match: str) -> None:
    """Install the crash point."""
    hit = _countdown(nth)
    if at == "write_table":
        import pyarrow.parquet as pq

        original_write = pq.write_table

        def write_table(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
            if match in str(where) and hit():
                buffer = io.BytesIO()
                original_write(table, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(where, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                print(f"CRASH write_table {where}: {len(data) // 2} of {len(data)} bytes written", flush=True)
                _die()
            original_write(table, where, *args, **kwargs)

        pq.write_table = write_table
    elif at == "replace":
        original_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            original_replace(src, dst, *args, **kwargs)
            if match in str(dst) and hit():
                print(f"CRASH replace after {dst}", flush=True)
                _die()

        os.replace = replace
    elif at == "online_write":
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        original_batch = SqliteOnlineStore.online_write_batch

        def online_write_batch(self: Any, config: Any, table: Any, data: list[Any], progress: Any) -> None:
            if match in table.name and hit():
                half = data[: len(data) // 2]
                original_batch(self, config, table, half, progress)
                print(f"CRASH online_write {table.name}: {len(half)} of {len(data)} rows written", flush=True)
                _die()
            original_batch(self, config, table, data, progress)

        SqliteOnlineStore.online_write_batch = online_write_batch  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {at!r}")


def run_stage(stage: str, dataset: str, day: date) -> Any:
    """The engine call of the ingest DAG's task ``stage``."""
    if stage == "land":
        from airflow_mlops.ingest import land_partition

        return land_partition(dataset, day)
    if stage == "validate":
        from airflow_mlops.gate import check_partition

        return check_partition(dataset, day)
    if stage == "features":
        from airflow_mlops.features import build_features

        return build_features(dataset, day)
    if stage == "materialize":
        from airflow_mlops.features import materialize_day

        return materialize_day(dataset, day)
    raise SystemExit(f"unknown stage {stage!r}")


def main(argv: list[str]) -> int:
    plan = json.loads(argv[0])
    crash = plan.get("crash")
    if crash:
        arm(crash["at"], int(crash.get("nth", 1)), crash.get("match", ""))
    run_stage(plan["stage"], plan["dataset"], date.fromisoformat(plan["day"]))
    print(f"DONE {plan['stage']} {plan['day']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
