"""The DAG plan: the validated configuration's fields the DAG files need, kept between parses until a file changes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_mlops.dag_plan import build_plan, dag_plan, plan_path
from airflow_mlops.datasets import get_datasets
from airflow_mlops.settings import PROJECT_ROOT, load_settings
from airflow_mlops.specs import load_specs

SHIPPED_MODELS = PROJECT_ROOT / "include" / "models"


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped model specs as ``MLOPS_MODELS_DIR``."""
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED_MODELS, folder)
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(folder))
    return folder


def test_the_plan_holds_what_the_validated_files_say(models: Path) -> None:
    settings = load_settings()
    plan = dag_plan(settings)
    specs = load_specs(models).specs
    datasets = get_datasets(settings)
    assert sorted(plan.models) == sorted(specs) and sorted(plan.datasets) == sorted(datasets)
    for name, spec in specs.items():
        model = plan.models[name]
        assert (model.dataset, model.schedule) == (spec.dataset, spec.training.schedule)
        assert name in plan.datasets[spec.dataset].models
    for name, dataset in datasets.items():
        kept = plan.datasets[name]
        assert (kept.schedule, kept.max_active_runs) == (dataset.schedule, dataset.max_active_runs)
        start, end = kept.dates
        assert start.date() == dataset.start_date and start.tzinfo is not None
        assert (end.date() if end else None) == dataset.end_date


def test_a_parse_with_a_current_plan_validates_nothing(models: Path) -> None:
    """With the plan written, a fresh interpreter gets it without importing the validation (pydantic, the specs)."""
    first = dag_plan(load_settings())
    probe = (
        "import sys, json\n"
        "from airflow_mlops.dag_plan import dag_plan\n"
        "plan = dag_plan()\n"
        "print(json.dumps({'models': sorted(plan.models), 'loaded': sorted(m for m in sys.modules if m in "
        "('airflow_mlops.specs', 'airflow_mlops.datasets', 'pydantic', 'yaml'))}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=os.environ.copy(), capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"models": sorted(first.models), "loaded": []}


def test_a_changed_spec_rebuilds_the_plan_and_an_invalid_one_is_left_out(models: Path) -> None:
    settings = load_settings()
    before = dag_plan(settings)
    spec_file = models / "flight_delay.yaml"
    text = spec_file.read_text()
    spec_file.write_text(text + "\ndescription: a new description\n")
    assert dag_plan(settings).models["flight_delay"].description == "a new description"

    (models / "broken.yaml").write_text(text.replace("name: flight_delay", "name: broken") + "\ntask: not_a_task\n")
    after = dag_plan(settings)
    assert "broken" not in after.models and sorted(after.models) == sorted(before.models)


def test_a_damaged_plan_file_is_built_again(models: Path) -> None:
    settings = load_settings()
    expected = build_plan(settings)
    dag_plan(settings)
    path = plan_path(settings)
    path.write_text("{ not json")
    assert dag_plan(settings) == expected
    assert json.loads(path.read_text())["models"].keys() == expected.models.keys()


def test_each_pair_of_folders_has_its_own_plan(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two projects (or a benchmark's conditions) sharing a home do not overwrite each other's plan."""
    one = dag_plan(load_settings())
    other = tmp_path / "other-models"
    other.mkdir()
    shutil.copy(models / "flight_delay.yaml", other / "flight_delay.yaml")
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(other))
    settings = load_settings()
    assert sorted(dag_plan(settings).models) == ["flight_delay"]
    assert plan_path(settings) != plan_path(load_settings({"MLOPS_MODELS_DIR": str(models)}))
    assert sorted(one.models) == sorted(load_specs(models).specs)
