"""The model input contract: how a frame becomes what a fitted pipeline takes, and what it says back (a leaf).

Training, evaluation, serving and monitoring all turn their frames into model input here, so the same
conversion serves everywhere: numeric columns as float64, categorical ones as Python objects with NaN for
every kind of missing value (what the encoders expect). Imports pandas and numpy only, inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class ModelInputError(ValueError):
    """A frame cannot be model input (a column is missing) or a model is not one of ours; says which."""


def categorical_values(values: pd.Series) -> pd.Series:
    """Strings as Python objects, every kind of missing value as NaN (what the encoders expect)."""
    import numpy as np

    # ``where`` alone would turn an all-missing column into float64, which the encoders refuse.
    return values.astype(object).where(values.notna(), np.nan).astype(object)


def model_input(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """The model's input columns of ``frame``: ``numeric`` as float64, then ``categorical`` as object/NaN."""
    import pandas as pd

    missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
    if missing:
        raise ModelInputError(f"frame lacks the model input columns {', '.join(missing)}")
    data = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in numeric}
    data.update({c: categorical_values(frame[c]) for c in categorical})
    return pd.DataFrame(data, index=frame.index)


def model_columns(model: Any) -> tuple[list[str], list[str]]:
    """The ``(numeric, categorical)`` input columns of a pipeline from ``training.build_pipeline``."""
    encode = getattr(model, "named_steps", {}).get("encode")
    groups = {name: list(columns) for name, _, columns in getattr(encode, "transformers_", [])}
    if "numeric" not in groups and "categorical" not in groups:
        raise ModelInputError("not a fitted airflow_mlops pipeline: no fitted 'encode' step with numeric/categorical")
    return groups.get("numeric", []), groups.get("categorical", [])


def model_scores(model: Any, features: pd.DataFrame) -> Any:
    """What a fitted pipeline says of each row of model input ``features``, as a float64 array: the positive
    class's probability for a classifier, the predicted value for a regressor (the one place that knows)."""
    import numpy as np

    if hasattr(model, "predict_proba"):  # a classifier (a Pipeline exposes it only when its last step has it)
        return np.asarray(model.predict_proba(features)[:, 1], dtype="float64")
    return np.asarray(model.predict(features), dtype="float64")
