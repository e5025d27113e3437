"""Models load only from trusted types and only as registered (:mod:`airflow_mlops.model_files`).

Real scikit-learn pipelines saved by MLflow in the skops format into a temporary folder; the hostile models use
``numpy.testing._private.utils.runstring`` (a plain ``exec`` that a ``numpy.`` prefix rule used to admit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from airflow_mlops.model_files import (
    SAFE_ENV,
    TRUSTED_TYPES,
    UntrustedModelError,
    load_trusted,
    model_file,
    trusted_types_of,
)
from airflow_mlops.specs import ALGORITHMS, CLASSIFICATION
from airflow_mlops.training import build_pipeline
from airflow_mlops.zones import file_sha256

RUNSTRING = "numpy.testing._private.utils.runstring"


def _frame(rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows),
            "c": rng.choice(["x", "y", "z"], size=rows).astype(object),
        }
    )
    frame.loc[::7, "a"] = np.nan
    frame.loc[::11, "c"] = None
    return frame


def _fitted(algorithm: str, task: str) -> object:
    frame = _frame()
    labels = (frame["b"] > 0).astype(int) if task == CLASSIFICATION else frame["b"] * 2.0
    return build_pipeline(algorithm, {}, 1, ["a", "b"], ["c"], task).fit(frame, labels)


def _saved(model: object, folder: Path, **kwargs: object) -> tuple[Path, str]:
    """``model`` saved by MLflow (skops) into ``folder``; the folder and its model file's sha256."""
    mlflow.sklearn.save_model(model, str(folder), **{"serialization_format": "skops", **kwargs})
    return folder, file_sha256(model_file(folder))


@pytest.mark.parametrize(
    ("task", "algorithm"), [(task, algorithm) for task, algorithms in ALGORITHMS.items() for algorithm in algorithms]
)
def test_every_algorithm_saves_and_loads_within_the_allowlist(task: str, algorithm: str, tmp_path: Path) -> None:
    model = _fitted(algorithm, task)
    trusted = trusted_types_of(model)
    assert set(trusted) <= TRUSTED_TYPES
    folder, digest = _saved(model, tmp_path / "model", skops_trusted_types=trusted)
    loaded = load_trusted(folder, digest, f"{algorithm} ({task})")
    frame = _frame(20)
    method = "predict_proba" if task == CLASSIFICATION else "predict"
    np.testing.assert_allclose(getattr(loaded, method)(frame), getattr(model, method)(frame))


def test_the_allowlist_is_exact_names() -> None:
    assert all(not name.endswith(".") for name in TRUSTED_TYPES)
    assert RUNSTRING not in TRUSTED_TYPES


def test_a_model_holding_an_exec_helper_is_refused_at_save() -> None:
    from numpy.testing._private.utils import runstring

    hostile = make_pipeline(FunctionTransformer(runstring))
    with pytest.raises(UntrustedModelError, match=RUNSTRING.replace(".", r"\.")):
        trusted_types_of(hostile)


def test_a_file_that_trusts_itself_is_refused_at_load(tmp_path: Path) -> None:
    """MLflow reads the trusted types from the model's own MLmodel; the project reads its own allowlist."""
    from numpy.testing._private.utils import runstring

    hostile = make_pipeline(FunctionTransformer(runstring))
    folder, digest = _saved(hostile, tmp_path / "model", skops_trusted_types=[RUNSTRING])
    with pytest.raises(UntrustedModelError, match=f"does not trust: {RUNSTRING}"):
        load_trusted(folder, digest, "hostile v1")  # even with the right digest


def test_a_replaced_file_is_refused_with_both_digests(tmp_path: Path) -> None:
    model = _fitted("hist_gradient_boosting", CLASSIFICATION)
    folder, digest = _saved(model, tmp_path / "model", skops_trusted_types=trusted_types_of(model))
    substitute = _fitted("logistic_regression", CLASSIFICATION)
    other, other_digest = _saved(substitute, tmp_path / "other", skops_trusted_types=trusted_types_of(substitute))
    model_file(folder).write_bytes(model_file(other).read_bytes())
    with pytest.raises(UntrustedModelError) as refused:
        load_trusted(folder, digest, "flight_delay v3")
    assert digest in str(refused.value) and other_digest in str(refused.value)
    assert "flight_delay v3" in str(refused.value)


def test_pickle_models_and_unverifiable_versions_are_refused(tmp_path: Path) -> None:
    model = _fitted("ridge", "regression")
    pickled = tmp_path / "pickled"
    mlflow.sklearn.save_model(model, str(pickled), serialization_format="cloudpickle")
    with pytest.raises(UntrustedModelError, match="serialization_format is 'cloudpickle'"):
        load_trusted(pickled, "0" * 64, "ridge v1")
    folder, _ = _saved(model, tmp_path / "model", skops_trusted_types=trusted_types_of(model))
    with pytest.raises(UntrustedModelError, match=r"no model\.sha256 was recorded"):
        load_trusted(folder, None, "ridge v2")
    flavor = yaml.safe_load((folder / "MLmodel").read_text())
    flavor["flavors"]["sklearn"]["pickled_model"] = "../outside.skops"
    (folder / "MLmodel").write_text(yaml.safe_dump(flavor))
    with pytest.raises(UntrustedModelError, match="is not a file of"):
        load_trusted(folder, "0" * 64, "ridge v3")


def test_mlflow_itself_refuses_to_deserialize_under_the_safe_environment(tmp_path: Path) -> None:
    """Every process the project starts gets SAFE_ENV: MLflow's own loader then refuses, skops included."""
    model = _fitted("ridge", "regression")
    folder, _ = _saved(model, tmp_path / "model", skops_trusted_types=trusted_types_of(model))
    code = f"import mlflow.sklearn; mlflow.sklearn.load_model({str(folder)!r})"
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **SAFE_ENV}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in done.stderr
