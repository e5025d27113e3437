"""The served form of a fitted pipeline: the encoding as lookups, the trees compiled by Treelite.

The scikit-learn pipeline (:func:`airflow_mlops.training.build_pipeline`) stays the reference: training,
evaluation, the gate, the smoke test's expected values and monitoring all score with it. Scoring one row with it
costs tens of milliseconds of per-call overhead (pandas frames, the ``ColumnTransformer``'s checks, a Python loop
over hundreds of trees), all made for batches. :func:`compile_model` turns a fitted tree pipeline into a
:class:`CompiledModel` that pays that overhead once, when the model is loaded:

- the ``OrdinalEncoder`` becomes one ``dict`` per categorical column, built by running the fitted encoder itself
  over every category it knows, one unseen value and one missing value (so infrequent grouping, unknown and
  missing values map exactly as the reference maps them);
- the estimator (histogram gradient boosting or random forest, classifier or regressor) is imported by
  ``treelite.sklearn.import_model`` and predicted by Treelite's GTIL (compiled C++, one thread per call).

It is built in memory from the already-verified scikit-learn model (:mod:`airflow_mlops.model_files`: sha256 and
trusted types), so no second artifact has to be trusted. Pipelines it does not cover (the linear models, whose
reference path is already cheap) get ``None``, and the caller keeps the reference. Parity with the reference is
tested on real rows (``tests/unit/test_compiled_model.py``), and every deployment's smoke test compares the
served predictions with the registry model's offline ones.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: A value no categorical column has ever seen: what an unknown category encodes as.
_UNSEEN = "\x00airflow-mlops-unseen\x00"
_ESTIMATORS = (
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float:
    """A numeric input as ``pd.to_numeric(errors="coerce")`` reads it: NaN when missing or not a number."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class CategoryCodes:
    """What the fitted encoder gives each value of one categorical column."""

    codes: dict[Any, float]
    unknown: float  #: a category the encoder never saw
    missing: float  #: None or NaN

    def encode(self, value: Any) -> float:
        if _missing(value):
            return self.missing
        return self.codes.get(value, self.unknown)


class CompiledModel:
    """A fitted tree pipeline in a form made for inference: ``scores(columns)`` equals the reference's
    :func:`airflow_mlops.model_input.model_scores` on the same columns (up to float rounding)."""

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str],
        codes: Sequence[CategoryCodes],
        trees: Any,
        classifier: bool,
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.codes = list(codes)
        self.trees = trees
        self.classifier = classifier

    def matrix(self, columns: Mapping[str, Sequence[Any]], rows: int) -> Any:
        """The encoded input matrix (``rows`` x numeric then categorical columns, float64)."""
        import numpy as np

        matrix = np.empty((rows, len(self.numeric) + len(self.categorical)), dtype="float64")
        for j, name in enumerate(self.numeric):
            matrix[:, j] = [_number(v) for v in columns[name]]
        offset = len(self.numeric)
        for j, (name, codes) in enumerate(zip(self.categorical, self.codes, strict=True)):
            matrix[:, offset + j] = [codes.encode(v) for v in columns[name]]
        return matrix

    def scores(self, columns: Mapping[str, Sequence[Any]], rows: int) -> Any:
        """The positive class's probability (classifier) or the predicted value (regressor) of each row, as a
        float64 array; ``columns`` maps every input column to ``rows`` values."""
        import numpy as np
        import treelite

        predicted = treelite.gtil.predict(self.trees, self.matrix(columns, rows), nthread=1)
        predicted = np.asarray(predicted, dtype="float64").reshape(rows, -1)
        # Treelite gives one margin-transformed column for binary boosting, one per class for a forest.
        return predicted[:, -1] if self.classifier else predicted[:, 0]


def _category_codes(encode: Any, numeric: list[str], categorical: list[str]) -> list[CategoryCodes]:
    """One :class:`CategoryCodes` per categorical column, read off the fitted ``encode`` step itself."""
    import numpy as np
    import pandas as pd

    encoder = dict((name, step) for name, step, _ in encode.transformers_)["categorical"]
    known = [[c for c in categories if not _missing(c)] for categories in encoder.categories_]
    length = max((len(k) for k in known), default=0) + 2
    probe: dict[str, Any] = {name: np.full(length, np.nan) for name in numeric}
    for name, values in zip(categorical, known, strict=True):
        padding = [values[0] if values else _UNSEEN] * (length - 2 - len(values))
        probe[name] = pd.Series([*values, *padding, _UNSEEN, np.nan], dtype=object)
    encoded = np.asarray(encode.transform(pd.DataFrame(probe)), dtype="float64")[:, len(numeric) :]
    return [
        CategoryCodes(
            codes={value: float(encoded[i, j]) for i, value in enumerate(values)},
            unknown=float(encoded[length - 2, j]),
            missing=float(encoded[length - 1, j]),
        )
        for j, values in enumerate(known)
    ]


def _identity(step: Any) -> bool:
    """Whether a fitted ``ColumnTransformer`` step passes its columns through (fitted ``"passthrough"`` becomes an
    identity ``FunctionTransformer``)."""
    return step == "passthrough" or (type(step).__name__ == "FunctionTransformer" and step.func is None)


def _not_covered(model: Any) -> str | None:
    """Why :func:`compile_model` does not cover ``model`` (None when it does)."""
    from airflow_mlops.model_input import ModelInputError, model_columns

    steps = getattr(model, "named_steps", {})
    encode, estimator = steps.get("encode"), steps.get("model")
    if encode is None or type(estimator).__name__ not in _ESTIMATORS:
        return f"its estimator {type(estimator).__name__} is not one of {', '.join(_ESTIMATORS)}"
    try:
        numeric, categorical = model_columns(model)
    except ModelInputError as exc:
        return str(exc)
    transformers = {name: step for name, step, _ in encode.transformers_}
    if numeric and not _identity(transformers.get("numeric")):
        return "its numeric columns are transformed"
    if categorical and type(transformers.get("categorical")).__name__ != "OrdinalEncoder":
        return "its categorical columns are not ordinal-encoded"
    if list(encode.get_feature_names_out()) != [*numeric, *categorical]:
        return "its encoded columns are not its numeric then its categorical inputs"
    return None


def compile_model(model: Any) -> CompiledModel | None:
    """The :class:`CompiledModel` of a fitted tree pipeline, or None when the pipeline is not one it covers
    (the caller then scores with the scikit-learn reference; the reason is logged). Takes a fraction of a second."""
    from airflow_mlops.model_input import model_columns

    reason = _not_covered(model)
    if reason is not None:
        log.info("scoring with the scikit-learn pipeline itself: %s", reason)
        return None
    import treelite.sklearn

    encode, estimator = model.named_steps["encode"], model.named_steps["model"]
    numeric, categorical = model_columns(model)
    with warnings.catch_warnings():
        # Treelite casts the boosting model's own category values to int64, NaN (missing, seen in training) too;
        # a missing value is routed as missing either way, as the parity tests on rows with missing categories show.
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        trees = treelite.sklearn.import_model(estimator)
    codes = _category_codes(encode, numeric, categorical) if categorical else []
    log.info(
        "compiled %s with Treelite (%d numeric, %d categorical inputs)",
        type(estimator).__name__,
        len(numeric),
        len(categorical),
    )
    return CompiledModel(numeric, categorical, codes, trees, classifier=hasattr(estimator, "predict_proba"))
