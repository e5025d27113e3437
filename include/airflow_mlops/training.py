"""Training: the point-in-time training set of a model spec, and the fit.

:func:`build_training_set` reads the validated examples of the spec's window (the dataset's main table,
``window_days`` days ending on ``window_end``), builds the entity frame at each example's event time (the
dataset's ``event_time``; :func:`airflow_mlops.features.entity_frame`), joins the features of the spec's Feast
feature service point-in-time (:func:`airflow_mlops.features.historical_features`), adds the request-time
features the spec lists (columns known at the event, or calendar features of the event time on the dataset's
local clock: ``month``, ``hour``, ``day_of_week`` ...; columns declared ``after_event`` are refused) and derives
the label with the spec's target (a rule, a numeric column, or a function). The split is by time only: the last
``holdout_days`` days of the window are the holdout.

Every validated example of the window becomes one row, identified by a stable ``row_id``
(``YYYYMMDD * 1_000_000 + position in the day``), so the same example has the same id in every window. A rule's
label is negative where its column is missing; a regression label's row is dropped where its column is
missing; how many rows that concerns is recorded as ``rows_without_target``.

:class:`TrainingSet` is saved as ``training_set.parquet`` + ``training_set.json`` in a folder
(:meth:`TrainingSet.save`, :meth:`TrainingSet.load`), so Airflow tasks pass a path, never a frame. Its train and
holdout digests (sha256 of the model-ready rows) identify the data in MLflow and in the idempotency key.

:func:`fit` fits a scikit-learn pipeline on the train rows and scores the holdout. Categorical columns are
ordinal-encoded with unseen categories (and missing values) mapped to NaN, which the tree models treat as
missing, so a category never seen in training is never an error at serving time; the HistGradientBoosting model treats
the encoded columns as native categorical features. Classification fits a classifier (the score is P(yes)),
regression a regressor of the same family (the score is the value). The model input is :func:`model_input`:
numeric columns as float64, categorical ones as object with NaN for missing (the same conversion serving must apply).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.datasets import dataset_spec, validated_examples
from airflow_mlops.features import TIMESTAMP, entity_frame, historical_features
from airflow_mlops.model_input import categorical_values, model_input
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ALGORITHMS, CLASSIFICATION, ModelSpec
from airflow_mlops.user_code import load_callable
from airflow_mlops.zones import aside, partition_path

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from airflow_mlops.evaluation import Scores

log = logging.getLogger(__name__)

ROW_ID = "row_id"
SPLIT = "split"
TRAIN = "train"
HOLDOUT = "holdout"
#: The validated partition (day) a row comes from, ISO date.
PARTITION = "partition_date"
#: ``row_id = YYYYMMDD * ROW_ID_DAY_FACTOR + position of the example in its day``.
ROW_ID_DAY_FACTOR = 1_000_000
#: A window must have validated data for at least this share of its days.
MIN_DAY_COVERAGE = 0.5
FRAME_FILE = "training_set.parquet"
META_FILE = "training_set.json"
#: Categories beyond this many per column are grouped as infrequent (HistGradientBoosting allows < max_bins).
MAX_CATEGORIES = 250


def _local(stamps: pd.Series, timezone: str) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(stamps, utc=True).dt.tz_convert(timezone)


#: Calendar features of the event time on the dataset's local clock (``timezone``), available at request time.
CALENDAR_FEATURES: dict[str, Callable[[pd.Series], pd.Series]] = {
    "month": lambda local: local.dt.month.astype("float64"),
    "hour": lambda local: local.dt.hour.astype("float64"),
    "day_of_week": lambda local: local.dt.dayofweek.astype("float64"),  # Monday = 0
    "day_of_year": lambda local: local.dt.dayofyear.astype("float64"),
    "minute_of_day": lambda local: (local.dt.hour * 60 + local.dt.minute).astype("float64"),
}

#: The same calendar features of one local ``datetime`` (the serving hot path, which builds no frame; a unit test
#: checks that both tables agree).
CALENDAR_VALUES: dict[str, Callable[[datetime], float]] = {
    "month": lambda local: float(local.month),
    "hour": lambda local: float(local.hour),
    "day_of_week": lambda local: float(local.weekday()),  # Monday = 0
    "day_of_year": lambda local: float(local.timetuple().tm_yday),
    "minute_of_day": lambda local: float(local.hour * 60 + local.minute),
}


class TrainingError(RuntimeError):
    """A training set cannot be built or a model cannot be fitted; the message says what and where."""


def training_dir(settings: Settings, model: str, window_end: date) -> Path:
    """Where the training set of a window is kept for the tasks after it (and monitoring's reference)."""
    return settings.home / "training" / model / f"window_end={window_end.isoformat()}"


@dataclass(frozen=True)
class TrainingSet:
    """A point-in-time training set: one row per validated example of the window, split by time.

    ``frame`` holds ``row_id``, ``event_timestamp`` (scheduled departure, UTC), ``partition_date``, ``split``
    (``train``/``holdout``), the entity keys, the slice columns, the features (``numeric`` then ``categorical``)
    and the label (``target``).
    """

    frame: pd.DataFrame
    model: str
    dataset: str
    feature_service: str
    target: str
    target_rule: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    window_start: date
    window_end: date
    holdout_start: date
    train_digest: str
    holdout_digest: str
    days: tuple[str, ...]
    missing_days: tuple[str, ...] = ()
    rows_without_target: int = 0
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        """Model input columns, in model order (numeric, then categorical)."""
        return (*self.numeric, *self.categorical)

    @property
    def train(self) -> pd.DataFrame:
        return self.frame.loc[self.frame[SPLIT] == TRAIN].reset_index(drop=True)

    @property
    def holdout(self) -> pd.DataFrame:
        return self.frame.loc[self.frame[SPLIT] == HOLDOUT].reset_index(drop=True)

    def meta(self) -> dict[str, Any]:
        """JSON-able description (everything but the frame), with row counts and the label's mean per split (the
        positive rate of a yes/no label)."""
        raw = {k: v for k, v in asdict(replace(self, frame=None)).items() if k != "frame"}  # type: ignore[arg-type]
        for key in ("window_start", "window_end", "holdout_start"):
            raw[key] = raw[key].isoformat()
        for key in ("numeric", "categorical", "days", "missing_days"):
            raw[key] = list(raw[key])
        split = self.frame[SPLIT]
        label = self.frame[self.target]
        raw["rows"] = {TRAIN: int((split == TRAIN).sum()), HOLDOUT: int((split == HOLDOUT).sum())}
        raw["label_mean"] = {
            name: float(label[split == name].mean()) if (split == name).any() else None for name in (TRAIN, HOLDOUT)
        }
        return raw

    def summary(self) -> dict[str, Any]:
        """Short JSON-able summary for logs and XCom: window, rows, digests, features."""
        meta = self.meta()
        return {
            key: meta[key]
            for key in (
                "model",
                "feature_service",
                "window_start",
                "window_end",
                "holdout_start",
                "rows",
                "label_mean",
                "train_digest",
                "holdout_digest",
                "missing_days",
                "numeric",
                "categorical",
            )
        }

    def save(self, path: Path | str) -> Path:
        """Write ``training_set.parquet`` and ``training_set.json`` into the folder ``path`` (atomically each)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        frame_tmp, meta_tmp = aside(folder / FRAME_FILE), aside(folder / META_FILE)
        try:
            pq.write_table(pa.Table.from_pandas(self.frame, preserve_index=False), frame_tmp, compression="zstd")
            meta_tmp.write_text(json.dumps(self.meta(), indent=2, sort_keys=True), encoding="utf-8")
            os.replace(frame_tmp, folder / FRAME_FILE)
            os.replace(meta_tmp, folder / META_FILE)
        finally:
            frame_tmp.unlink(missing_ok=True)
            meta_tmp.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, path: Path | str) -> TrainingSet:
        """Read a training set written by :meth:`save`; the digests are checked against the data."""
        import pyarrow.parquet as pq

        folder = Path(path)
        meta_path, frame_path = folder / META_FILE, folder / FRAME_FILE
        if not meta_path.exists() or not frame_path.exists():
            raise TrainingError(f"no training set at {folder}: expected {FRAME_FILE} and {META_FILE}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        frame = pq.read_table(frame_path).to_pandas()
        for column in frame.columns:  # parquet gives None for missing strings; the frame had NaN
            if frame[column].dtype == object:
                frame[column] = categorical_values(frame[column])
        loaded = cls(
            frame=frame,
            model=meta["model"],
            dataset=meta["dataset"],
            feature_service=meta["feature_service"],
            target=meta["target"],
            target_rule=meta["target_rule"],
            numeric=tuple(meta["numeric"]),
            categorical=tuple(meta["categorical"]),
            window_start=date.fromisoformat(meta["window_start"]),
            window_end=date.fromisoformat(meta["window_end"]),
            holdout_start=date.fromisoformat(meta["holdout_start"]),
            train_digest=meta["train_digest"],
            holdout_digest=meta["holdout_digest"],
            days=tuple(meta["days"]),
            missing_days=tuple(meta["missing_days"]),
            rows_without_target=int(meta["rows_without_target"]),
            validation=meta.get("validation") or {},
        )
        train, holdout = _digests(frame, loaded.numeric, loaded.categorical, loaded.target)
        if (train, holdout) != (loaded.train_digest, loaded.holdout_digest):
            raise TrainingError(f"training set at {folder}: the data does not match the digests of {META_FILE}")
        return loaded


@dataclass(frozen=True)
class FitResult:
    """A fitted pipeline, its scores on the holdout (and on the train rows) and how long the fit took."""

    model: Pipeline
    scores: Scores
    train_scores: Scores
    fit_seconds: float
    algorithm: str
    params: dict[str, Any]
    seed: int


# ----------------------------------------------------------------------------------------------------------
# Training set
# ----------------------------------------------------------------------------------------------------------


def serving_input(
    spec: ModelSpec, examples: pd.DataFrame, served: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> pd.DataFrame:
    """The model input for request-time ``examples`` and their ``served`` Feast features (online lookup).

    The same derivation as :func:`build_training_set`: the spec's request-time features from the examples, then the
    feature service's columns, converted by :func:`model_input` (a missing value, such as an unknown entity's
    features, becomes NaN).
    """
    import pandas as pd

    features: dict[str, pd.Series] = {name: _request_feature(examples, name, spec) for name in spec.features}
    for name in served.columns:
        features.setdefault(name, served[name])
    return model_input(pd.DataFrame(features, index=examples.index), numeric, categorical)


def _digest(frame: pd.DataFrame) -> str:
    """sha256 of a frame's values and column names/dtypes (row order matters; the index does not)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _digests(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], target: str) -> tuple[str, str]:
    columns = model_input(frame, numeric, categorical)
    columns.insert(0, ROW_ID, frame[ROW_ID].to_numpy())
    columns[target] = frame[target].to_numpy()
    split = frame[SPLIT].to_numpy()
    return _digest(columns.loc[split == TRAIN]), _digest(columns.loc[split == HOLDOUT])


def _validation_summary(settings: Settings, dataset: str, days: Sequence[date]) -> dict[str, Any]:
    """What the validation gate recorded for the window's days (``result.json`` per partition), if anything."""
    passed: list[str] = []
    failed: list[str] = []
    without: list[str] = []
    for day in days:
        path = settings.validation_dir / dataset / f"date={day.isoformat()}" / "result.json"
        try:
            report = json.loads(path.read_text(encoding="utf-8")).get("report", {})
        except (OSError, ValueError):
            without.append(day.isoformat())
            continue
        (passed if report.get("success") else failed).append(day.isoformat())
    return {
        "days": len(days),
        "passed": len(passed),
        "failed": failed,
        "without_result": len(without),
        "results_dir": str(settings.validation_dir / dataset),
    }


def event_time(spec: ModelSpec, settings: Settings | None = None) -> tuple[str, str]:
    """The dataset's event-time column and time zone; a dataset without one cannot be trained on."""
    dataset = dataset_spec(spec.dataset, settings)
    if dataset.event_time is None:
        raise TrainingError(
            f"{spec.name}: dataset {spec.dataset!r} declares no event_time (the timestamp column of "
            f"{dataset.main_table!r} saying when each example happens); add it to {spec.dataset}.yaml"
        )
    return dataset.event_time, dataset.timezone


def request_feature_is_calendar(
    name: str, columns: Iterable[str], spec: ModelSpec, settings: Settings | None = None
) -> bool:
    """Whether request-time feature ``name`` is a calendar feature of the event time (True) or one of ``columns``
    (False); a feature that is neither, the target or only known after the event is a :class:`TrainingError`."""
    dataset = dataset_spec(spec.dataset, settings)
    if name == spec.target.column:
        raise TrainingError(f"{spec.name}: feature {name!r} is the target column ({spec.target.described}); remove it")
    if name in dataset.after_event:
        raise TrainingError(
            f"{spec.name}: feature {name!r} is only known after the event (after_event in {spec.dataset}.yaml: it "
            f"leaks the outcome); request-time features are columns known by then or one of "
            f"{', '.join(sorted(CALENDAR_FEATURES))}"
        )
    if name in CALENDAR_FEATURES:
        return True
    if name in columns:
        return False
    raise TrainingError(
        f"{spec.name}: feature {name!r} is neither a column of the validated {spec.dataset} examples nor a calendar "
        f"feature of the event time ({', '.join(sorted(CALENDAR_FEATURES))})"
    )


def _request_feature(examples: pd.DataFrame, name: str, spec: ModelSpec, settings: Settings | None = None) -> pd.Series:
    """A request-time feature of ``examples``: a calendar feature of the event time, or a column known by then."""
    if request_feature_is_calendar(name, examples.columns, spec, settings):
        column, timezone = event_time(spec, settings)
        return CALENDAR_FEATURES[name](_local(examples[column], timezone))
    return examples[name]


@dataclass(frozen=True)
class LabelInputs:
    """What a label function (the spec's ``target.function``) receives: the fixed contract.

    The function is called as ``function(inputs)`` and returns one label per example, in the order of
    ``inputs.examples`` (a pandas Series or array: booleans or 0/1 for classification, numbers for regression;
    no missing value). It may look at later days than an example's own, up to ``horizon_days`` after the
    window's last day, and never further.

    Attributes:
        dataset: the dataset's name.
        examples: the examples to label (the main table's validated rows of the window), with ``row_id`` and
            ``partition_date`` (ISO date of each row's day).
        tables: each table of the dataset over the window and the ``horizon_days`` after it (the validated days
            that exist), each row with its ``partition_date``.
        horizon_end: the last day the function may read.
    """

    dataset: str
    examples: pd.DataFrame
    tables: Mapping[str, pd.DataFrame]
    horizon_end: date


def horizon_missing(spec: ModelSpec, last_day: date, settings: Settings | None = None) -> list[date]:
    """The days after ``last_day`` that the spec's label reads and that are not validated yet."""
    horizon = [last_day + timedelta(days=n) for n in range(1, spec.target.horizon_days + 1)]
    return [day for day in horizon if not validated_examples(spec.dataset, day, settings).exists()]


def _tables_over(settings: Settings, dataset: str, first: date, last: date) -> dict[str, pd.DataFrame]:
    """Every table of ``dataset`` over the validated days ``first .. last`` that exist, with ``partition_date``."""
    import pandas as pd
    import pyarrow.parquet as pq

    tables = {}
    for table in dataset_spec(dataset, settings).table_names:
        parts = []
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            path = partition_path(settings.validated_dir, dataset, table, day)
            if path.exists():
                parts.append(pq.read_table(path).to_pandas().assign(**{PARTITION: day.isoformat()}))
        tables[table] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({PARTITION: []})
    return tables


def labels(spec: ModelSpec, examples: pd.DataFrame, settings: Settings | None = None) -> tuple[pd.Series, int]:
    """The spec's label of each example (in order: 0/1 for classification, a float for regression) and how
    many examples had no value to judge.

    A rule reads the example's own column, and a missing value is negative (counted); a ``value`` column is the
    label as it is (missing values stay NaN, counted: the training set drops those rows). A label function is
    called with :class:`LabelInputs` over the examples' days and the horizon after them; every day of the
    horizon must be validated (:func:`horizon_missing`), else :class:`TrainingError` says which.
    """
    import pandas as pd

    settings = settings or get_settings()
    target = spec.target
    if target.function is None:
        column = target.column
        if column is None:  # a rule or a value names its column; the spec validator requires one of the three
            raise TrainingError(f"the label {target.name!r} names no column")
        if column not in examples.columns:
            kind = f"target rule {target.rule!r}" if target.rule is not None else "target value"
            raise TrainingError(
                f"{spec.name}: the {kind} needs column {column!r}, which the validated {spec.dataset} examples lack"
            )
        missing = int(examples[column].isna().sum())
        if target.rule is not None:
            values = target.apply(examples[column]).astype("int64")
        else:
            values = pd.to_numeric(examples[column], errors="coerce").astype("float64")
            if values.isna().sum() > missing:
                raise TrainingError(f"{spec.name}: target value column {column!r} holds values that are not numbers")
        return pd.Series(values.to_numpy(), index=examples.index), missing
    days = sorted(date.fromisoformat(d) for d in examples[PARTITION].unique())
    missing_days = horizon_missing(spec, days[-1], settings)
    if missing_days:
        raise TrainingError(
            f"{spec.name}: the label looks {target.horizon_days} day(s) ahead of {days[-1]}; "
            f"{len(missing_days)} of those days are not validated yet (first {missing_days[0]})"
        )
    horizon_end = days[-1] + timedelta(days=target.horizon_days)
    try:
        function = load_callable(target.function, settings.datasets_dir)
        inputs = LabelInputs(
            dataset=spec.dataset,
            examples=examples,
            tables=_tables_over(settings, spec.dataset, days[0], horizon_end),
            horizon_end=horizon_end,
        )
        raw = function(inputs)
    except Exception as exc:  # the user's code: name it and the model, keep the cause
        raise TrainingError(
            f"{spec.name}: label function {target.function} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return _checked_labels(spec, raw, examples), 0


def _checked_labels(spec: ModelSpec, raw: Any, examples: pd.DataFrame) -> pd.Series:
    """A label function's result as labels of ``examples``: one per example, none missing, 0/1 or numbers."""
    import numpy as np
    import pandas as pd

    name = spec.target.function
    values = pd.Series(np.asarray(raw), index=examples.index) if not isinstance(raw, pd.Series) else raw
    if len(values) != len(examples):
        raise TrainingError(
            f"{spec.name}: label function {name} returned {len(values)} labels for {len(examples)} examples"
        )
    if values.isna().any():
        raise TrainingError(f"{spec.name}: label function {name} returned {int(values.isna().sum())} missing labels")
    kind = "booleans or 0/1" if spec.is_classifier else "numbers"
    try:
        converted = values.astype("int64" if spec.is_classifier else "float64")
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{spec.name}: label function {name} must return {kind}: {exc}") from exc
    if spec.is_classifier and not converted.isin([0, 1]).all():
        raise TrainingError(f"{spec.name}: label function {name} must return {kind}")
    if not spec.is_classifier and not np.isfinite(converted.to_numpy()).all():
        raise TrainingError(f"{spec.name}: label function {name} returned infinite values")
    return pd.Series(converted.to_numpy(), index=examples.index)


def _read_window(
    settings: Settings, spec: ModelSpec, days: Sequence[date]
) -> tuple[list[tuple[date, pd.DataFrame]], list[date]]:
    import pyarrow.parquet as pq

    present: list[tuple[date, pd.DataFrame]] = []
    missing: list[date] = []
    for day in days:
        path = validated_examples(spec.dataset, day, settings)
        if not path.exists():
            missing.append(day)
            continue
        try:
            present.append((day, pq.read_table(path).to_pandas()))
        except Exception as exc:
            raise TrainingError(f"cannot read validated partition {path}: {type(exc).__name__}: {exc}") from exc
    return present, missing


def _missing_message(settings: Settings, spec: ModelSpec, missing: Sequence[date], limit: int = 5) -> str:
    shown = [str(validated_examples(spec.dataset, day, settings)) for day in missing[:limit]]
    more = f" and {len(missing) - limit} more" if len(missing) > limit else ""
    return ", ".join(shown) + more


def build_training_set(spec: ModelSpec, window_end: date, *, settings: Settings | None = None) -> TrainingSet:
    """The point-in-time training set of ``spec`` for the window ending on ``window_end`` (see the module doc).

    Missing validated days are listed in ``missing_days`` (and logged); it is an error (naming the expected
    partition files) when the window has no validated day, when its train part or its holdout has none, or when
    fewer than half of its days are there.
    """
    import numpy as np
    import pandas as pd

    settings = settings or get_settings()
    start = window_end - timedelta(days=spec.training.window_days - 1)
    holdout_start = window_end - timedelta(days=spec.training.holdout_days - 1)
    days = [start + timedelta(days=n) for n in range(spec.training.window_days)]
    window = f"{start.isoformat()}..{window_end.isoformat()}"

    present, missing = _read_window(settings, spec, days)
    if not present:
        raise TrainingError(
            f"{spec.name}: no validated {spec.dataset} partition in the window {window}: expected "
            f"{_missing_message(settings, spec, missing)}; run the daily chain (land, validate) for these days first"
        )
    holdout_days = [d for d, _ in present if d >= holdout_start]
    train_days = [d for d, _ in present if d < holdout_start]
    if not holdout_days or not train_days:
        part = "holdout" if not holdout_days else "train part"
        absent = [d for d in missing if (d >= holdout_start) == (not holdout_days)]
        raise TrainingError(
            f"{spec.name}: the {part} of the window {window} has no validated {spec.dataset} day: expected "
            f"{_missing_message(settings, spec, absent)}"
        )
    if len(present) < MIN_DAY_COVERAGE * len(days):
        raise TrainingError(
            f"{spec.name}: only {len(present)} of the {len(days)} days of the window {window} are validated "
            f"(at least {MIN_DAY_COVERAGE:.0%} needed); missing: {_missing_message(settings, spec, missing)}"
        )
    if missing:
        log.warning(
            "%s: %s of %s days of %s have no validated partition: %s",
            spec.name,
            len(missing),
            len(days),
            window,
            _missing_message(settings, spec, missing),
        )

    parts = []
    for day, frame in present:
        if len(frame) >= ROW_ID_DAY_FACTOR:
            raise TrainingError(f"{spec.name}: {day} has {len(frame)} rows, more than row ids can number")
        base = int(day.strftime("%Y%m%d")) * ROW_ID_DAY_FACTOR
        parts.append(
            frame.reset_index(drop=True).assign(
                **{ROW_ID: np.arange(base, base + len(frame), dtype="int64"), PARTITION: day.isoformat()}
            )
        )
    examples = pd.concat(parts, ignore_index=True)
    label, without_target = labels(spec, examples, settings)  # first: a label that cannot be made stops here
    if label.isna().any():  # a regression value that is missing: nothing to learn from that example
        known = label.notna().to_numpy()
        examples, label = examples.loc[known].reset_index(drop=True), label.loc[known].reset_index(drop=True)
    schedule = {name: _request_feature(examples, name, spec, settings) for name in spec.features}  # bad names first

    entities = entity_frame(examples, spec.entity_keys, event_time(spec, settings)[0])
    joined = historical_features(entities, service=spec.feature_service, settings=settings)
    if not np.array_equal(joined[ROW_ID].to_numpy(), examples[ROW_ID].to_numpy()):
        raise TrainingError(f"{spec.name}: the feature join returned rows out of order")  # sorted by row_id
    feast_columns = [c for c in joined.columns if c not in entities.columns]

    frame = pd.DataFrame({ROW_ID: examples[ROW_ID], TIMESTAMP: joined[TIMESTAMP], PARTITION: examples[PARTITION]})
    frame[SPLIT] = np.where(examples[PARTITION] >= holdout_start.isoformat(), HOLDOUT, TRAIN)
    for key in (*spec.entity_keys, *spec.quality.slices):
        if key not in frame.columns and key in examples.columns:
            frame[key] = categorical_values(examples[key])
    features: dict[str, pd.Series] = dict(schedule)
    for name in feast_columns:
        if name in features:
            raise TrainingError(
                f"{spec.name}: feature {name!r} is listed in the spec and also served by {spec.feature_service}"
            )
        features[name] = joined[name]
    numeric = tuple(n for n, s in features.items() if pd.api.types.is_numeric_dtype(s) or s.dtype == bool)
    categorical = tuple(n for n in features if n not in numeric)
    frame = pd.concat(
        [
            frame.drop(columns=[c for c in features if c in frame.columns]),
            model_input(pd.DataFrame(features), numeric, categorical),
        ],
        axis=1,
    )
    frame[spec.target.name] = label.to_numpy()
    train_digest, holdout_digest = _digests(frame, numeric, categorical, spec.target.name)
    training_set = TrainingSet(
        frame=frame,
        model=spec.name,
        dataset=spec.dataset,
        feature_service=spec.feature_service,
        target=spec.target.name,
        target_rule=spec.target.described,
        numeric=numeric,
        categorical=categorical,
        window_start=start,
        window_end=window_end,
        holdout_start=holdout_start,
        train_digest=train_digest,
        holdout_digest=holdout_digest,
        days=tuple(d.isoformat() for d, _ in present),
        missing_days=tuple(d.isoformat() for d in missing),
        rows_without_target=without_target,
        validation=_validation_summary(settings, spec.dataset, [d for d, _ in present]),
    )
    log.info("%s: training set %s", spec.name, json.dumps(training_set.summary()))
    return training_set


# ----------------------------------------------------------------------------------------------------------
# Fit
# ----------------------------------------------------------------------------------------------------------


def _ordinal_encoder(unknown: float) -> Any:
    from sklearn.preprocessing import OrdinalEncoder

    return OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=unknown,
        encoded_missing_value=unknown,
        max_categories=MAX_CATEGORIES,
        dtype=float,
    )


def build_pipeline(
    algorithm: str,
    params: dict[str, Any],
    seed: int,
    numeric: Sequence[str],
    categorical: Sequence[str],
    task: str = CLASSIFICATION,
) -> Pipeline:
    """The unfitted scikit-learn pipeline of ``algorithm`` for ``task`` over ``numeric`` then ``categorical`` columns.

    Unseen and missing categories become NaN (tree models: missing values), or, for the linear models (logistic
    regression, ridge), an all-zero one-hot row; missing numbers are native NaN for the trees and the median for
    the linear models.
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = list(numeric), list(categorical)
    classifier = task == CLASSIFICATION
    if algorithm not in ALGORITHMS[task]:
        raise TrainingError(f"{algorithm!r} is not a {task} algorithm ({', '.join(ALGORITHMS[task])})")
    if algorithm in ("logistic_regression", "ridge"):
        encode = ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="__missing__"),
                        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20),
                    ),
                    categorical,
                ),
            ],
            verbose_feature_names_out=False,
        )
        if classifier:
            estimator: Any = LogisticRegression(**{"max_iter": 1000, **params, "random_state": seed})
        else:
            estimator = Ridge(**{**params, "random_state": seed})
    else:
        encode = ColumnTransformer(
            [("numeric", "passthrough", numeric), ("categorical", _ordinal_encoder(np.nan), categorical)],
            verbose_feature_names_out=False,
        )
        if algorithm == "hist_gradient_boosting":
            mask = [False] * len(numeric) + [True] * len(categorical)
            boosting = HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor
            estimator = boosting(
                **{**params, "categorical_features": mask if categorical else None, "random_state": seed}
            )
        else:
            forest = RandomForestClassifier if classifier else RandomForestRegressor
            estimator = forest(**{"n_estimators": 200, "min_samples_leaf": 20, **params, "random_state": seed})
    return Pipeline([("encode", encode), ("model", estimator)])


def fit(spec: ModelSpec, training_set: TrainingSet) -> FitResult:
    """Fit the spec's algorithm on the train rows of ``training_set`` and score its holdout.

    Deterministic for a given ``spec.algorithm.seed`` (the same data gives the same predictions).
    """
    import numpy as np

    from airflow_mlops.evaluation import score

    train = training_set.train
    if train.empty or training_set.holdout.empty:
        raise TrainingError(f"{spec.name}: the training set needs train and holdout rows")
    labels = train[training_set.target].to_numpy()
    if spec.is_classifier and len(np.unique(labels)) < 2:
        raise TrainingError(f"{spec.name}: the train rows have a single class ({training_set.target}={labels[0]})")
    if not spec.is_classifier and np.ptp(labels) == 0:
        raise TrainingError(f"{spec.name}: the train rows have a constant label ({training_set.target}={labels[0]})")
    algorithm = spec.algorithm
    try:
        pipeline = build_pipeline(
            algorithm.name,
            dict(algorithm.params),
            algorithm.seed,
            training_set.numeric,
            training_set.categorical,
            spec.task,
        )
    except TypeError as exc:
        raise TrainingError(f"{spec.name}: invalid params for {algorithm.name}: {exc}") from exc
    started = time.perf_counter()
    try:
        pipeline.fit(model_input(train, training_set.numeric, training_set.categorical), labels)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{spec.name}: fitting {algorithm.name} failed: {exc}") from exc
    seconds = time.perf_counter() - started
    scores = score(pipeline, training_set.holdout, spec)
    train_scores = score(pipeline, train, spec, slices=False)
    log.info(
        "%s: fitted %s in %.1f s on %s rows: holdout %s %.4f (train %.4f)",
        spec.name,
        algorithm.name,
        seconds,
        len(train),
        spec.metric.title,
        scores.primary,
        train_scores.primary,
    )
    estimator = pipeline.named_steps["model"]
    params = {k: v for k, v in estimator.get_params().items() if k != "categorical_features"}
    return FitResult(
        model=pipeline,
        scores=scores,
        train_scores=train_scores,
        fit_seconds=seconds,
        algorithm=algorithm.name,
        params=params,
        seed=algorithm.seed,
    )
