"""``airflow-mlops new``: the skeleton of every file a team fills to bring a dataset or a model.

:func:`new_dataset` writes the dataset file, one suite per table, the feature function (its contract in the
docstring) and the Feast module; :func:`new_model` writes a model spec for an existing dataset, its columns,
label and feature service taken from that dataset's files. Every file says in comments what to change, and
the skeleton is valid as written: ``airflow-mlops check`` passes and the DAGs parse before anything is
changed. Nothing existing is ever overwritten: a file that is already there stops the command, named.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from string import Template

from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ALGORITHMS, CLASSIFICATION, DEFAULT_METRIC, METRICS, REGRESSION

TEMPLATES = Path(__file__).with_name("templates")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: The table the dataset skeleton declares (its suite, feature function and Feast module follow it).
MAIN_TABLE = "events"


class ScaffoldError(ValueError):
    """A skeleton cannot be written (a bad name, an existing file, a dataset without what a model needs)."""


def _render(template: str, **values: str) -> str:
    return Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)


def _write_all(files: dict[Path, str]) -> list[Path]:
    """Write ``files``; refuse before writing anything if one of them exists."""
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ScaffoldError(f"not overwriting {', '.join(existing)}: remove or rename it first")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def _checked_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ScaffoldError(f"{kind} name {name!r} must be lower case letters, digits and underscores, from a letter")
    return name


def new_dataset(name: str, *, start_date: date | None = None, settings: Settings | None = None) -> list[Path]:
    """Write the skeleton of dataset ``name`` (see the module doc); the paths written."""
    settings = settings or get_settings()
    _checked_name("dataset", name)
    values = {
        "name": name,
        "upper": name.upper(),
        "source": str(settings.home / "incoming" / name),
        "start_date": (start_date or date.today()).isoformat(),
    }
    files = {
        settings.datasets_dir / f"{name}.yaml": _render("dataset.yaml.tmpl", **values),
        settings.datasets_dir / "suites" / name / f"{MAIN_TABLE}.yaml": _render(
            "suite.yaml.tmpl", dataset=name, table=MAIN_TABLE
        ),
        settings.datasets_dir / f"{name}_features.py": _render("features.py.tmpl", **values),
        settings.feature_repo / f"{name}.py": _render("feast.py.tmpl", **values),
    }
    return _write_all(files)


def _service_and_keys(dataset: str, settings: Settings) -> tuple[str, list[str]]:
    """The dataset's feature service (``<dataset>_v1`` if defined, else the first over its feature tables) and
    the join keys of its entities."""
    from feast import Entity, FeatureService, FeatureView

    from airflow_mlops.datasets import dataset_spec
    from airflow_mlops.features import load_definitions

    features = dataset_spec(dataset, settings).features
    tables = set(features.tables) if features else set()
    objects = load_definitions(settings)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    entities = {o.name: o for o in objects if isinstance(o, Entity)}
    services = [
        o for o in objects if isinstance(o, FeatureService) and {p.name for p in o.feature_view_projections} & tables
    ]
    if not services:
        raise ScaffoldError(
            f"dataset {dataset!r} has no Feast feature service over its feature tables ({', '.join(sorted(tables))}) "
            f"in {settings.feature_repo}: define one first (airflow-mlops new dataset writes one)"
        )
    service = next((s for s in services if s.name == f"{dataset}_v1"), services[0])
    keys: list[str] = []
    for projection in service.feature_view_projections:
        for entity in views[projection.name].entities:
            key = entities[entity].join_key if entity in entities else entity
            if key not in keys:
                keys.append(key)
    return service.name, keys


def new_model(name: str, dataset: str, task: str = CLASSIFICATION, *, settings: Settings | None = None) -> list[Path]:
    """Write the spec of model ``name`` on ``dataset`` for ``task`` (see the module doc); the paths written."""
    from airflow_mlops.datasets import DatasetNotFoundError, dataset_spec

    settings = settings or get_settings()
    _checked_name("model", name)
    if task not in (CLASSIFICATION, REGRESSION):
        raise ScaffoldError(f"task {task!r} is neither {CLASSIFICATION} nor {REGRESSION}")
    try:
        spec = dataset_spec(dataset, settings)
    except DatasetNotFoundError as exc:
        raise ScaffoldError(f"{exc}; write it first (airflow-mlops new dataset {dataset})") from None
    main = spec.tables[spec.main_table]
    outcomes = [c for c, col in main.columns.items() if col.after_event and col.type in ("int", "float")]
    if not outcomes:
        raise ScaffoldError(
            f"{dataset}.yaml declares no numeric `after_event: true` column in {spec.main_table!r} for the label"
        )
    service, keys = _service_and_keys(dataset, settings)
    skip = {*main.key, *keys, spec.event_time}
    request = [
        c for c, col in main.columns.items() if c not in skip and not col.after_event and col.type != "timestamp"
    ]
    label = outcomes[0]
    if task == CLASSIFICATION:
        target = f'  rule: "{label} >= 1"               # CHANGE ME: the yes/no label, from the example\'s own row\n'
        target += "  name: positive"
        slice_drop, bar = "0.05", "0.65"
    else:
        target = f"  value: {label}                      # CHANGE ME: the numeric label (or a look-ahead function)\n"
        target += f"  name: {label}_label"
        slice_drop, bar = "1.0", "10.0"
    metric = DEFAULT_METRIC[task]
    text = _render(
        "model.yaml.tmpl",
        name=name,
        task=task,
        dataset=dataset,
        entity_keys=", ".join(keys),
        feature_service=service,
        target=target,
        features=", ".join(["hour", "day_of_week", *request]),
        algorithms=", ".join(ALGORITHMS[task]),
        metric=metric,
        metrics=", ".join(m.name for m in METRICS.values() if m.task == task),
        bar_example=bar,
        slice_drop=slice_drop,
    )
    return _write_all({settings.models_dir / f"{name}.yaml": text})
