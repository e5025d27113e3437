"""Parse a DAG folder with Airflow's ``DagBag`` and write what the policy tests check as JSON.

Run in a fresh interpreter (``python dagbag_probe.py <dags_dir> <out.json>``) by ``conftest.py``, whose
environment already points ``AIRFLOW_HOME`` and ``MLOPS_HOME`` at temporary folders and turns the
example DAGs off, so nothing here touches the checkout's state or the developer's Airflow.

Connections and Variables are patched away the way the Astronomer Astro CLI template does it: a
lookup at parse time returns a dummy (so the rest of the file still parses and every other check
still runs) and is recorded with the DAG file and line that asked, for a test to fail on.

Only the standard library is imported at module level: Airflow is imported inside :func:`main`,
after the environment is in place.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

#: Marker for "no default given" in the patched ``Variable.get``.
_ABSENT = object()


def _when(value: Any) -> dict[str, Any] | None:
    """A datetime as ISO text plus whether it carries a timezone (``None`` stays ``None``)."""
    if not isinstance(value, datetime):
        return None
    return {"iso": value.isoformat(), "aware": value.tzinfo is not None and value.utcoffset() is not None}


def _caller(dags_dir: Path) -> str:
    """``<file>:<line>`` of the innermost frame inside ``dags_dir`` that led to this call."""
    prefix = str(dags_dir)
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(prefix):
            return f"{Path(frame.filename).relative_to(dags_dir)}:{frame.lineno}"
    return "<outside the DAG folder>"


def _patch_lookups(dags_dir: Path, lookups: list[dict[str, str]]) -> None:
    """Replace the Task SDK's Connection and Variable lookups by recording dummies.

    The pre-SDK ``airflow.models`` spellings are left alone: ruff's AIR rules reject them in DAG files,
    and against the probe's empty metadata database they fail loudly as import errors anyway.
    """
    import airflow.sdk as sdk

    def record(kind: str, key: str) -> None:
        lookups.append({"kind": kind, "key": key, "where": _caller(dags_dir)})

    def get_connection(cls: type, conn_id: str, *args: Any, **kwargs: Any) -> Any:
        record("connection", conn_id)
        return sdk.Connection(conn_id=conn_id, conn_type="generic")

    def get_variable(cls: type, key: str, default: Any = _ABSENT, *args: Any, **kwargs: Any) -> Any:
        record("variable", key)
        if default is not _ABSENT:
            return default
        if kwargs.get("default_var", _ABSENT) is not _ABSENT:
            return kwargs["default_var"]
        return {} if kwargs.get("deserialize_json") else "NON_DEFAULT_MOCKED_VARIABLE_VALUE"

    sdk.BaseHook.get_connection = classmethod(get_connection)  # type: ignore[method-assign,assignment]
    sdk.Connection.get = classmethod(get_connection)  # type: ignore[method-assign,assignment]
    sdk.Variable.get = classmethod(get_variable)  # type: ignore[method-assign,assignment]


def _describe(dag: Any, dags_dir: Path) -> dict[str, Any]:
    """The attributes of one parsed DAG that the policy tests check, JSON-able."""
    default_args = dict(dag.default_args or {})
    fileloc = Path(dag.fileloc)
    try:
        rel = str(fileloc.relative_to(dags_dir))
    except ValueError:
        rel = str(fileloc)
    return {
        "dag_id": dag.dag_id,
        "fileloc": rel,
        "doc_md": dag.doc_md or "",
        "description": dag.description or "",
        "tags": sorted(str(tag) for tag in (dag.tags or [])),
        "schedule": repr(dag.schedule) if not isinstance(dag.schedule, str | type(None)) else dag.schedule,
        "timetable": repr(dag.timetable),
        "start_date": _when(dag.start_date or default_args.get("start_date")),
        # Airflow gives a naive start_date the default timezone: see NAIVE_TZ_SENTINEL in conftest.py.
        "timezone": str(getattr(dag.timezone, "name", dag.timezone)),
        "end_date": _when(dag.end_date or default_args.get("end_date")),
        "catchup": bool(dag.catchup),
        "max_active_runs": dag.max_active_runs,
        "default_args": {
            "owner": default_args.get("owner"),
            "retries": default_args.get("retries"),
        },
        "tasks": [{"task_id": t.task_id, "owner": t.owner, "retries": t.retries} for t in dag.tasks],
    }


def main(dags_dir: Path, out: Path) -> None:
    """Parse ``dags_dir`` and write import errors, warnings, stats, DAGs and lookups to ``out``."""
    lookups: list[dict[str, str]] = []
    _patch_lookups(dags_dir, lookups)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=dags_dir)
    report = {
        "import_errors": dict(bag.import_errors),
        "warnings": {str(Path(f).relative_to(dags_dir)): list(w) for f, w in bag.captured_warnings.items()},
        "stats": [
            {"file": s.file, "duration_s": s.duration.total_seconds(), "dags": s.dag_num, "tasks": s.task_num}
            for s in bag.dagbag_stats
        ],
        "dags": {dag_id: _describe(dag, dags_dir) for dag_id, dag in sorted(bag.dags.items())},
        "lookups": lookups,
    }
    out.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
