"""What the DAG files need from the project's configuration, kept so that a parse does not validate it again.

Airflow's DAG processor parses every DAG file in a new process every 30 s (``[dag_processor] refresh_interval`` here)
and again for every task run. Validating the dataset files and model specs (PyYAML, the pydantic models of
:mod:`airflow_mlops.datasets` and :mod:`airflow_mlops.specs`) was most of a DAG file's own parse time. The DAG
files only need a few fields, so :func:`dag_plan` validates the files once and keeps those fields in
``$MLOPS_HOME/cache/dag-plan-<folders>.json``, stamped with the name, size and modification time of every dataset
file, model spec and engine module that decides them. A parse whose stamp matches reads that JSON (standard
library only); any change to those files (or to the folders chosen) validates everything again and writes it anew.

Invalid files are left out, as :func:`airflow_mlops.specs.load_specs` leaves them out: ``airflow-mlops check``
names them with file, field and reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.zones import write_text_atomic

#: Bump when the fields below change: plans written by another version are rebuilt.
PLAN_VERSION = 1
#: Engine modules whose code decides the plan (validation, defaults): a change to one rebuilds it.
_ENGINE_FILES = ("dag_plan.py", "datasets.py", "specs.py", "config_files.py", "user_code.py")


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset's ``ingest_<dataset>`` DAG."""

    name: str
    schedule: str
    max_active_runs: int
    start_date: str  # ISO day
    end_date: str | None
    models: tuple[str, ...]  # its valid model specs, sorted

    @property
    def dates(self) -> tuple[datetime, datetime | None]:
        """First and last day as UTC midnights (the DAGs' ``start_date``, ``end_date``)."""
        return _midnight(self.start_date), _midnight(self.end_date) if self.end_date else None


@dataclass(frozen=True)
class ModelPlan:
    """One model's ``train_<model>`` and ``monitor_<model>`` DAGs."""

    name: str
    dataset: str
    description: str | None
    schedule: str | None  # the spec's ``training.schedule`` cron


@dataclass(frozen=True)
class DagPlan:
    """Every valid dataset and model spec of the project, by name."""

    datasets: dict[str, DatasetPlan]
    models: dict[str, ModelPlan]


def _midnight(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(), tzinfo=UTC)


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.y*ml")) if folder.is_dir() else []


def _stamp(settings: Settings) -> list[list[object]]:
    """Name, size and modification time of every file the plan depends on."""
    engine = Path(__file__).parent
    files = [*_files(settings.datasets_dir), *_files(settings.models_dir), *(engine / n for n in _ENGINE_FILES)]
    stamp: list[list[object]] = [[PLAN_VERSION]]
    for path in files:
        stat = path.stat()
        stamp.append([str(path), stat.st_size, stat.st_mtime_ns])
    return stamp


def plan_path(settings: Settings) -> Path:
    """The plan's file for the settings' dataset and model folders."""
    folders = f"{settings.datasets_dir.resolve()}\n{settings.models_dir.resolve()}"
    return settings.cache_dir / f"dag-plan-{hashlib.sha256(folders.encode()).hexdigest()[:12]}.json"


def build_plan(settings: Settings) -> DagPlan:
    """Validate the dataset files and model specs (what :func:`dag_plan` keeps)."""
    from airflow_mlops.datasets import get_datasets
    from airflow_mlops.specs import load_specs

    specs = load_specs(settings.models_dir).specs
    models = {
        name: ModelPlan(
            name=name,
            dataset=spec.dataset,
            description=spec.description.strip()[:200] if spec.description else None,
            schedule=spec.training.schedule,
        )
        for name, spec in sorted(specs.items())
    }
    datasets = {
        name: DatasetPlan(
            name=name,
            schedule=spec.schedule,
            max_active_runs=spec.max_active_runs,
            start_date=spec.start_date.isoformat(),
            end_date=spec.end_date.isoformat() if spec.end_date else None,
            models=tuple(sorted(m.name for m in models.values() if m.dataset == name)),
        )
        for name, spec in sorted(get_datasets(settings).items())
    }
    return DagPlan(datasets=datasets, models=models)


def _read(raw: dict[str, Any]) -> DagPlan:
    return DagPlan(
        datasets={k: DatasetPlan(**{**v, "models": tuple(v["models"])}) for k, v in raw["datasets"].items()},
        models={k: ModelPlan(**v) for k, v in raw["models"].items()},
    )


def dag_plan(settings: Settings | None = None) -> DagPlan:
    """The project's plan: read from its file when the stamp matches, else validated and written (module doc)."""
    settings = settings or get_settings()
    stamp = _stamp(settings)
    path = plan_path(settings)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("stamp") == stamp:
            return _read(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing, unreadable or from another version: build it again
    plan = build_plan(settings)
    document = {
        "stamp": stamp,
        "datasets": {k: asdict(v) for k, v in plan.datasets.items()},
        "models": {k: asdict(v) for k, v in plan.models.items()},
    }
    with contextlib.suppress(OSError):  # a read-only home: the next parse validates again
        write_text_atomic(json.dumps(document, indent=1), path)
    return plan
