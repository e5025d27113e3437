"""``airflow-mlops check``: every dataset, suite, feature definition and model spec of a project, in one run.

Each file is loaded the way the platform will load it (the dataset and spec files by pydantic, the suites
into Great Expectations, the user's code by its dotted path, the Feast modules executed), and the files are
checked against each other: a spec's dataset, columns, label and feature service must exist, a dataset's
feature tables must be Feast feature views, every table must have its suite. Every problem is reported as
``<file>: <field>: <reason>``, all of them at once, and a broken file never hides the others' problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.config_files import ConfigError
from airflow_mlops.datasets import DatasetSpec, load_datasets
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec, load_specs
from airflow_mlops.user_code import UserCodeError, is_dotted_path, load_object


@dataclass
class CheckReport:
    """What :func:`check_project` found: the problems, and what was checked."""

    problems: list[ConfigError] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    suites: int = 0
    feature_views: list[str] = field(default_factory=list)
    feature_services: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: what was checked and how many problems."""
        checked = (
            f"{len(self.datasets)} dataset(s), {self.suites} suite(s), {len(self.feature_views)} feature view(s), "
            f"{len(self.feature_services)} feature service(s), {len(self.models)} model spec(s)"
        )
        return f"checked {checked}: " + ("no problem" if self.ok else f"{len(self.problems)} problem(s)")


def _file(folder: Path, name: str) -> Path:
    """The configuration file of ``name`` in ``folder`` (``.yaml`` unless only a ``.yml`` exists)."""
    path = folder / f"{name}.yaml"
    return path if path.exists() or not (folder / f"{name}.yml").exists() else folder / f"{name}.yml"


def _reason(exc: BaseException, path: Path | None = None) -> str:
    """The exception's message, without the file's path in front (the report names the file already)."""
    text = str(exc).strip() or type(exc).__name__
    if path is not None:
        for prefix in (f"{path}: ", f"{path}, "):
            text = text.removeprefix(prefix)
    return text


def _check_dataset(dataset: DatasetSpec, settings: Settings, views: set[str]) -> tuple[list[ConfigError], int]:
    """The problems of one valid dataset file (its suites, code and feature tables) and how many suites loaded."""
    from airflow_mlops.validation import SuiteError, load_suite, suite_path

    path = _file(settings.datasets_dir, dataset.name)
    problems: list[ConfigError] = []
    suites = 0
    for table in dataset.tables:
        suite = suite_path(settings, dataset.name, table)
        try:
            load_suite(suite, f"{dataset.name}.{table}", dataset.start_date)
            suites += 1
        except SuiteError as exc:
            problems.append(ConfigError(suite, "<file>", _reason(exc, suite)))
    if is_dotted_path(dataset.source):
        try:
            load_object(dataset.source, settings.datasets_dir)
        except UserCodeError as exc:
            problems.append(ConfigError(path, "source", _reason(exc)))
    if dataset.features is not None:
        try:
            function = load_object(dataset.features.function, settings.datasets_dir)
            if not callable(function):
                problems.append(ConfigError(path, "features.function", f"{dataset.features.function} is not callable"))
        except UserCodeError as exc:
            problems.append(ConfigError(path, "features.function", _reason(exc)))
        for table in dataset.features.tables:
            if table not in views:
                problems.append(
                    ConfigError(
                        path,
                        "features.tables",
                        f"{table!r} is not a feature view of the feature repository ({settings.feature_repo}); "
                        "each feature table needs one FeatureView of that name",
                    )
                )
    return problems, suites


def _check_spec(spec: ModelSpec, dataset: DatasetSpec, settings: Settings, services: set[str]) -> list[ConfigError]:
    """The problems of one valid spec against its dataset and the Feast definitions."""
    from airflow_mlops.serving import SchemaError, request_schema
    from airflow_mlops.training import CALENDAR_FEATURES

    path = _file(settings.models_dir, spec.name)
    main = dataset.tables[dataset.main_table]
    where = f"the main table {dataset.main_table!r} of {dataset.name}.yaml"
    problems: list[ConfigError] = []
    if spec.feature_service not in services:
        known = ", ".join(sorted(services)) or "none"
        problems.append(
            ConfigError(path, "feature_service", f"no Feast feature service {spec.feature_service!r} (known: {known})")
        )
    for key in spec.entity_keys:
        if key not in main.columns:
            problems.append(ConfigError(path, "entity_keys", f"{key!r} is not a column of {where}"))
    for name in spec.features:
        column = main.columns.get(name)
        if column is None and name not in CALENDAR_FEATURES:
            calendar = ", ".join(CALENDAR_FEATURES)
            problems.append(
                ConfigError(
                    path, "features", f"{name!r} is neither a column of {where} nor a calendar feature ({calendar})"
                )
            )
        elif column is not None and column.after_event:
            problems.append(
                ConfigError(path, "features", f"{name!r} is declared after_event: it is not known at prediction time")
            )
    target = spec.target
    if target.column is not None and target.column not in main.columns:
        problems.append(ConfigError(path, "target", f"the label reads {target.column!r}, not a column of {where}"))
    if target.function is not None:
        try:
            load_object(target.function, settings.datasets_dir)
        except UserCodeError as exc:
            problems.append(ConfigError(path, "target.function", _reason(exc)))
    for column in spec.quality.slices:
        if column not in main.columns:
            problems.append(ConfigError(path, "quality.slices", f"{column!r} is not a column of {where}"))
    if not problems:
        try:
            request_schema(spec, settings)
        except SchemaError as exc:
            problems.append(ConfigError(path, "features", _reason(exc)))
    return problems


def _feast(settings: Settings) -> tuple[list[Any], list[ConfigError]]:
    """Every Feast object of the feature repository, and a problem for each file that does not load."""
    from airflow_mlops.features import definition_files, definition_objects

    objects: list[Any] = []
    problems: list[ConfigError] = []
    for path in definition_files(settings):
        try:
            objects += definition_objects(path, settings)
        except Exception as exc:  # the user's module: whatever it raises is its problem to name
            problems.append(ConfigError(path, "<module>", f"{type(exc).__name__}: {_reason(exc)}"))
    return objects, problems


def check_project(settings: Settings | None = None) -> CheckReport:
    """Load and cross-check every configuration file of the project (see the module doc)."""
    from feast import FeatureService, FeatureView

    settings = settings or get_settings()
    report = CheckReport()
    loaded = load_datasets(settings.datasets_dir)
    report.problems += loaded.errors
    objects, problems = _feast(settings)
    report.problems += problems
    views = {obj.name for obj in objects if isinstance(obj, FeatureView)}
    services = {obj.name for obj in objects if isinstance(obj, FeatureService)}
    report.feature_views, report.feature_services = sorted(views), sorted(services)
    for dataset in loaded.datasets.values():
        found, suites = _check_dataset(dataset, settings, views)
        report.problems += found
        report.suites += suites
    report.datasets = sorted(loaded.datasets)
    specs = load_specs(settings.models_dir)
    report.problems += specs.errors
    for spec in specs.specs.values():
        report.problems += _check_spec(spec, loaded.datasets[spec.dataset], settings, services)
    report.models = sorted(specs.specs)
    return report
