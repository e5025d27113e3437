"""``docs/bring-your-own.md``, run as written: its runnable blocks, in a temporary project, through a shell.

The blocks follow the markers ``<!-- example: byo-... -->``; if the page changes, this test runs the new
text. The sample output the page shows for a clean and for a broken project is compared with what
``airflow-mlops check`` really prints (paths shortened as on the page).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from airflow_mlops.settings import PROJECT_ROOT
from tests.doc_examples import example_block

PAGE = PROJECT_ROOT / "docs" / "bring-your-own.md"


def shown_output(after: str) -> list[str]:
    """The lines of the first plain fenced block after the text ``after`` on the page."""
    text = PAGE.read_text()
    match = re.search(re.escape(after) + r".*?\n```\n(.*?)\n```", text, re.DOTALL)
    assert match, f"{PAGE.name} shows no output after {after!r}"
    return match.group(1).splitlines()


@pytest.fixture
def project(tmp_path: Path) -> dict[str, str]:
    """The environment of an empty project in ``tmp_path``, with the venv's commands on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    for name, variable in (
        ("include/datasets", "MLOPS_DATASETS_DIR"),
        ("include/models", "MLOPS_MODELS_DIR"),
        ("feature_repo", "MLOPS_FEATURE_REPO"),
        (".mlops", "MLOPS_HOME"),
    ):
        (tmp_path / name).mkdir(parents=True)
        env[variable] = str(tmp_path / name)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    return env


def run(block: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_page_walks_new_dataset_new_model_and_check(project: dict[str, str], tmp_path: Path) -> None:
    created = run(example_block("byo-new-dataset"), project, tmp_path)
    assert created.returncode == 0, created.stderr
    for path in (
        "include/datasets/orders.yaml",
        "include/datasets/suites/orders/events.yaml",
        "include/datasets/orders_features.py",
        "feature_repo/orders.py",
    ):
        assert (tmp_path / path).is_file(), path
    modelled = run(example_block("byo-new-model"), project, tmp_path)
    assert modelled.returncode == 0, modelled.stderr
    spec = yaml.safe_load((tmp_path / "include/models/order_value.yaml").read_text())
    assert (spec["task"], spec["target"]["value"], spec["feature_service"]) == ("regression", "outcome", "orders_v1")

    checked = run(example_block("byo-check"), project, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().splitlines() == shown_output(
        "<!-- example: byo-check -->\n```bash\nairflow-mlops check\n```"
    )

    # Break the project the way the page's second sample does; check must print exactly those lines.
    model = tmp_path / "include/models/order_value.yaml"
    model.write_text(
        model.read_text()
        .replace("feature_service: orders_v1", "feature_service: orders_v2")
        .replace("features: [hour, day_of_week, amount]", "features: [hour, day_of_week, amount, outcome]")
    )
    (tmp_path / "include/datasets/suites/orders/events.yaml").write_text(
        "expectations:\n  - expect_column_values_to_be_magic: {column: amount}\n"
    )
    broken = run(example_block("byo-check"), project, tmp_path)
    assert broken.returncode == 1
    printed = [line.replace(f"{tmp_path}/", "") for line in broken.stdout.strip().splitlines()]
    assert printed == shown_output("exits 1 when there is any:")


def test_minimal_feature_function_meets_the_contract() -> None:
    """The page's minimal feature function, given a real ``FeatureInputs``, passes the engine's result checks."""
    import pandas as pd

    from airflow_mlops.features import TIMESTAMP, FeatureInputs, _checked, served_from

    namespace: dict[str, object] = {}
    exec(example_block("byo-compute-features"), namespace)
    day = date(2024, 3, 10)
    orders = pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4],
            "customer_id": ["a", "a", "b", "a"],
            "partition_date": ["2024-03-08", "2024-03-09", "2024-03-10", "2024-03-10"],
        }
    )
    inputs = FeatureInputs(
        dataset="shop",
        day=day,
        tables={"orders": orders[orders.partition_date == day.isoformat()]},
        window={"orders": orders},
        served_from=served_from(day, "Asia/Tokyo"),
        reference=lambda name: None,
        warn=lambda message: None,
    )
    raw = namespace["compute_features"](inputs)  # type: ignore[operator]
    frames = _checked("shop", day, "compute_features", raw, ["customer_recent"], inputs.served_from)
    recent = frames["customer_recent"].set_index("customer_id")
    assert recent["orders_30d"].to_dict() == {"a": 3, "b": 1}
    assert (recent[TIMESTAMP] == pd.Timestamp("2024-03-10T15:00:00Z")).all()  # next midnight in Tokyo, in UTC
