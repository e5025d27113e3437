"""Parse exactly one DAG file the way Airflow's DAG processor does, and write its parse cost as JSON.

Run in a fresh interpreter by ``bench_parse_cost.py``: ``python -P parse_probe.py <dag_file> <out.json>``.
It first imports what the DAG processor has loaded before a file is parsed (the processor module,
which brings Airflow, the Task SDK and ``DagBag``) and, as the DAG processor's manager does before it
forks the processes that parse files (``DagFileProcessorManager.before_run``), moves those objects out of
the garbage collector's reach with ``gc.freeze()``; then it parses the one file with ``DagBag`` and
reports ``FileLoadStat.duration``: the figure the DAG processor itself records for that file. Without the
freeze, a full collection over Airflow's ~200,000 imported objects (about 0.14 s here) lands in some
parses and not others, and the figures measure the collector.

Only the standard library is imported at module level: the Airflow import is timed separately.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
from pathlib import Path


def main(dag_file: Path, out: Path) -> None:
    """Warm up like the DAG processor, parse ``dag_file`` once, write the stats to ``out``."""
    started = time.perf_counter()
    importlib.import_module("airflow.dag_processing.processor")  # what the DAG processor has loaded
    from airflow.dag_processing.dagbag import DagBag

    warmup_s = time.perf_counter() - started
    gc.freeze()  # what DagFileProcessorManager.before_run does before it forks the parsing processes
    bag = DagBag(dag_folder=dag_file, load_op_links=False)
    stats = bag.dagbag_stats
    result = {
        "file": str(dag_file),
        "warmup_s": warmup_s,
        "duration_s": sum(s.duration.total_seconds() for s in stats),
        "dags": sum(s.dag_num for s in stats),
        "tasks": sum(s.task_num for s in stats),
        "files": len(stats),
        "import_errors": dict(bag.import_errors),
    }
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
