"""``airflow-mlops new`` and ``airflow-mlops check`` on a project of their own, in a temporary folder.

The skeleton is tried as written, before anything is changed: ``check`` finds no problem, the DAG folder
parses with the new dataset's and models' DAGs (Airflow's ``DagBag`` in a child interpreter, as the DAG
processor would), and the files really work: days of events land, pass their suite, give features through
the generated function and Feast module, and both generated models (classification and regression) train and
clear their gate. Then ``check`` is shown a broken project and must name every problem (file, field, reason)
in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from airflow_mlops.cli import main
from airflow_mlops.evaluation import gate
from airflow_mlops.features import build_features, materialize_day
from airflow_mlops.gate import check_partition
from airflow_mlops.ingest import land_partition
from airflow_mlops.project_check import check_project
from airflow_mlops.scaffold import ScaffoldError, new_dataset, new_model
from airflow_mlops.settings import get_settings
from airflow_mlops.specs import load_specs
from airflow_mlops.training import build_training_set, fit
from tests.dags.conftest import DAGS_DIR, PROBE, isolated_env

START = date(2024, 5, 1)
DAYS = [START + timedelta(days=n) for n in range(28)]
#: Entities and how much each spends on average: the outcome follows the entity and the amount.
ENTITIES = {f"e{n:02d}": 20.0 + 8 * n for n in range(12)}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project: its own datasets, models and feature-repo folders and state."""
    for name, variable in (
        ("datasets", "MLOPS_DATASETS_DIR"),
        ("models", "MLOPS_MODELS_DIR"),
        ("feature_repo", "MLOPS_FEATURE_REPO"),
        ("home", "MLOPS_HOME"),
    ):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / name))
    return tmp_path


def events_of(day: date, rng: np.random.Generator, rows: int = 240) -> pd.DataFrame:
    """A day of events in the skeleton's layout. Each entity spends at its own level (its mean amount, which the
    generated features see over 7 days) and ``outcome`` follows that level and the amount, around 1 (the
    generated classification label is ``outcome >= 1``)."""
    entity = rng.choice(list(ENTITIES), size=rows)
    level = np.array([ENTITIES[e] for e in entity])
    amount = rng.gamma(4.0, level / 4).round(2)
    seconds = rng.integers(0, 86_400, size=rows)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return pd.DataFrame(
        {
            "event_id": [f"{day:%Y%m%d}-{n}" for n in range(rows)],
            "entity_id": entity,
            "occurred_at": [(start + timedelta(seconds=int(s))).isoformat() for s in seconds],
            "amount": amount,
            "outcome": (level - 60) / 30 + (amount - level) / 200 + rng.normal(0, 0.3, rows),
        }
    )


def _parse_dags(tmp: Path) -> dict:
    """Parse ``dags/`` with the project's folders, as the DAG processor would (a child interpreter)."""
    out = tmp / "dagbag.json"
    keep = {k: v for k, v in __import__("os").environ.items() if k.startswith("MLOPS_")}
    proc = subprocess.run(
        [sys.executable, str(PROBE), str(DAGS_DIR), str(out)],
        env={**isolated_env(tmp / "parse"), **keep},
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_the_skeleton_is_valid_parses_and_runs_before_anything_is_changed(project: Path) -> None:
    settings = get_settings()
    written = new_dataset("orders", start_date=START)
    assert {p.relative_to(project).as_posix() for p in written} == {
        "datasets/orders.yaml",
        "datasets/suites/orders/events.yaml",
        "datasets/orders_features.py",
        "feature_repo/orders.py",
    }
    assert "CHANGE ME" in (project / "datasets" / "orders.yaml").read_text()
    new_model("big_order", "orders")
    new_model("order_value", "orders", "regression")
    spec = yaml.safe_load((project / "models" / "order_value.yaml").read_text())
    assert (spec["task"], spec["target"], spec["entity_keys"], spec["feature_service"]) == (
        "regression",
        {"value": "outcome", "name": "outcome_label"},
        ["entity_id"],
        "orders_v1",
    )
    assert spec["features"] == ["hour", "day_of_week", "amount"]

    report = check_project()
    assert report.ok, [str(p) for p in report.problems]
    assert (report.datasets, report.models, report.feature_services) == (
        ["orders"],
        ["big_order", "order_value"],
        ["orders_v1"],
    )
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0 and "no problem" in result.output

    parsed = _parse_dags(project)
    assert parsed["import_errors"] == {}
    assert {"ingest_orders", "train_big_order", "train_order_value", "monitor_order_value"} <= set(parsed["dags"])

    # The files work as written: the days land, validate, build and materialize features; both models train.
    rng = np.random.default_rng(5)
    incoming = settings.home / "incoming" / "orders"
    for day in DAYS:
        folder = incoming / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        events_of(day, rng).to_csv(folder / "events.csv", index=False)
        land_partition("orders", day, settings=settings)
        check_partition("orders", day, settings=settings)
        built = build_features("orders", day, settings=settings)
        materialize_day("orders", day, settings=settings)
    assert built.rows == {"orders_entity_stats": len(ENTITIES)}
    specs = load_specs(settings.models_dir).specs
    for name in ("big_order", "order_value"):
        model = specs[name]
        training_set = build_training_set(model, DAYS[-1], settings=settings)
        assert {"amount", "events_7d", "amount_mean_7d"} <= set(training_set.features)
        fitted = fit(model, training_set)
        decision = gate(model, fitted.scores, None)
        assert decision.promote, (name, decision.reasons)
    assert fitted.scores["r2"] > 0.5  # the entity's level (through its features) and the amount explain it


def test_new_never_overwrites_and_names_what_is_missing(project: Path) -> None:
    new_dataset("orders", start_date=START)
    before = (project / "datasets" / "orders.yaml").read_text()
    with pytest.raises(ScaffoldError, match=r"not overwriting .*orders\.yaml"):
        new_dataset("orders")
    assert (project / "datasets" / "orders.yaml").read_text() == before
    with pytest.raises(ScaffoldError, match="write it first"):
        new_model("churn", "customers")
    with pytest.raises(ScaffoldError, match="lower case"):
        new_dataset("Orders")
    result = CliRunner().invoke(main, ["new", "model", "churn", "--dataset", "customers"])
    assert result.exit_code == 1 and "airflow-mlops new dataset customers" in result.output


def test_check_names_every_problem_with_file_field_and_reason_in_one_run(project: Path) -> None:
    new_dataset("baskets", start_date=START)  # a name of its own: modules stay imported
    new_model("basket_value", "baskets", "regression")
    datasets, models = project / "datasets", project / "models"
    spec = yaml.safe_load((models / "basket_value.yaml").read_text())
    spec["features"] = ["amount", "outcome", "basket_size"]  # an outcome, and a column nobody declared
    spec["feature_service"] = "baskets_v2"
    (models / "basket_value.yaml").write_text(yaml.safe_dump(spec))
    (models / "broken.yaml").write_text("name: broken\ndataset: baskets\ntraining: {window_days: many}\n")
    (datasets / "suites" / "baskets" / "events.yaml").write_text(
        "expectations:\n  - expect_column_values_to_be_magic: {column: amount}\n"
    )
    (datasets / "baskets_features.py").unlink()

    report = check_project()
    found = {(Path(p.path).name, p.field) for p in report.problems}
    assert {
        ("events.yaml", "<file>"),
        ("baskets.yaml", "features.function"),
        ("basket_value.yaml", "feature_service"),
        ("basket_value.yaml", "features"),
        ("broken.yaml", "training.window_days"),
    } <= found, found
    reasons = "\n".join(str(p) for p in report.problems)
    assert "'outcome' is declared after_event" in reasons and "'basket_size' is neither a column" in reasons
    assert "expect_column_values_to_be_magic" in reasons and "baskets_v2" in reasons
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 1 and f"{len(report.problems)} problem(s)" in result.output
