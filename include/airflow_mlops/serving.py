"""Online prediction: the request schema generated from the configuration, and the predictor every path shares.

A model's endpoint takes ``{"<main table>": [row, ...]}``. The
fields of a row come from the configuration (:func:`request_schema`): the dataset's ``key`` of its main table
(how a prediction meets its outcome later), the spec's ``entity_keys``, the dataset's ``event_time`` and the
spec's request-time features that are columns; each field is typed, ranged and patterned as its column is
declared in the dataset file, so a bad request gets 400 naming the field and the reason. A prediction carries
the model's score (classification: ``output.probability`` and the decision ``output.label``, default the
target's name; regression: the predicted value, ``output.value``), the model version and a request id.

:class:`Predictor` turns rows into the model's input exactly as training did (the request-time features by
:func:`airflow_mlops.training.serving_input`, calendar features from the event time on the dataset's clock),
plus the model's Feast feature service looked up in the online store at the event time
(:func:`airflow_mlops.features.online_features`; unknown entities give missing values, which the model treats
as missing, never an error). The BentoML service (:mod:`airflow_mlops.bento_service`), the smoke test, replay
and the benchmarks all use the same :class:`Predictor` and schema, so what is tested offline is what serves.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from airflow_mlops.datasets import ColumnSpec, dataset_spec
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

#: Most rows one request may carry (a larger batch gets 400, naming the limit).
MAX_ROWS = 1000

_PYTHON_TYPES: dict[str, type] = {"int": int, "float": float, "string": str, "bool": bool, "timestamp": datetime}


class SchemaError(ValueError):
    """The configuration cannot make a request schema (a request field is not declared); names what and where."""


def _utc(value: datetime | None) -> datetime | None:
    """A timestamp in UTC; one without an offset is taken as UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _field(column: ColumnSpec) -> tuple[Any, Any]:
    """The pydantic field of a declared column."""
    kind: Any = _PYTHON_TYPES[column.type]
    constraints: dict[str, Any] = {"description": column.description or None}
    if column.type in ("int", "float"):
        constraints.update(ge=column.min, le=column.max)
    if column.type == "string" and column.pattern:
        constraints["pattern"] = column.pattern
    if column.nullable:
        return kind | None, Field(default=None, **constraints)
    return kind, Field(**constraints)


@dataclass(frozen=True)
class RequestSchema:
    """The request and response models of one model's endpoint, generated from its spec and dataset file."""

    collection: str  #: the request body's key (the dataset's main table)
    columns: tuple[str, ...]  #: the fields of a row, in order
    types: dict[str, str]  #: each field's declared column type
    event_time: str
    timezone: str
    score: str  #: the score's field in a prediction (the probability, or the predicted value)
    label: str | None  #: the decision's field in a prediction (None for regression)
    row: type[BaseModel]
    request: type[BaseModel]
    prediction: type[BaseModel]
    response: type[BaseModel]


_SCHEMAS: dict[tuple[str, str], RequestSchema] = {}


def request_schema(spec: ModelSpec, settings: Settings | None = None) -> RequestSchema:
    """The endpoint's schema of ``spec`` (built once per spec and dataset file per process)."""
    settings = settings or get_settings()
    dataset = dataset_spec(spec.dataset, settings)
    cache_key = (spec.model_dump_json(), dataset.model_dump_json())
    cached = _SCHEMAS.get(cache_key)
    if cached is not None:
        return cached
    if dataset.event_time is None:
        raise SchemaError(f"{spec.name}: dataset {spec.dataset!r} declares no event_time; requests need one")
    from airflow_mlops.training import CALENDAR_FEATURES

    main = dataset.tables[dataset.main_table]
    wanted = [*main.key, *spec.entity_keys, dataset.event_time]
    wanted += [name for name in spec.features if name not in CALENDAR_FEATURES]
    columns = tuple(dict.fromkeys(wanted))
    undeclared = [name for name in columns if name not in main.columns]
    if undeclared:
        raise SchemaError(
            f"{spec.name}: request field(s) {', '.join(undeclared)} are not declared in {spec.dataset}.yaml "
            f"(tables.{dataset.main_table}.columns): declare their types there"
        )
    title = "".join(part.title() for part in dataset.main_table.split("_"))
    timestamps = [name for name in columns if main.columns[name].type == "timestamp"]
    texts = [name for name in columns if main.columns[name].type == "string" and main.columns[name].nullable]
    validators: dict[str, Any] = {}
    if timestamps:
        validators["_in_utc"] = field_validator(*timestamps)(classmethod(lambda cls, value: _utc(value)))
    if texts:
        validators["_blank"] = field_validator(*texts, mode="before")(classmethod(lambda cls, v: _blank_is_none(v)))
    row = create_model(
        f"{title}Row",
        __config__=ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True),
        __validators__=validators,
        **{name: _field(main.columns[name]) for name in columns},
    )
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        **{dataset.main_table: (list[row], Field(min_length=1, max_length=MAX_ROWS))},  # type: ignore[valid-type]
    )
    score, label = spec.score_field, spec.label_field
    fields: dict[str, Any] = {
        score: (float, Field(description=f"{'probability of' if label else 'predicted'} {spec.target.name}")),
    }
    if label is not None:
        fields[label] = (bool, Field(description=f"{score} >= the spec's decision threshold"))
    prediction = create_model(
        "Prediction",
        **fields,
        model_version=(int, Field(description="MLflow version of the registered model that answered")),
        request_id=(str, Field(description="id of this prediction in the prediction log")),
    )
    response = create_model("PredictResponse", predictions=(list[prediction], ...))  # type: ignore[valid-type]
    schema = RequestSchema(
        collection=dataset.main_table,
        columns=columns,
        types={name: main.columns[name].type for name in columns},
        event_time=dataset.event_time,
        timezone=dataset.timezone,
        score=score,
        label=label,
        row=row,
        request=request,
        prediction=prediction,
        response=response,
    )
    _SCHEMAS[cache_key] = schema
    return schema


def request_frame(schema: RequestSchema, rows: list[BaseModel] | list[dict[str, Any]]) -> pd.DataFrame:
    """Request rows as a frame of the main table's columns, with the event time in UTC and each row's local
    ``date`` (its day on the dataset's calendar: the partition its outcome lands in)."""
    import pandas as pd

    records = [row.model_dump() if isinstance(row, BaseModel) else row for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(schema.columns))
    return with_local_date(schema, frame)


def with_local_date(schema: RequestSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its event time in UTC and the local ``date`` of each row (a copy)."""
    import pandas as pd

    frame = frame.copy()
    stamps = pd.to_datetime(frame[schema.event_time], utc=True)
    frame[schema.event_time] = stamps
    frame["date"] = stamps.dt.tz_convert(schema.timezone).dt.strftime("%Y-%m-%d")
    return frame


@dataclass
class Scored:
    """Rows scored by :meth:`Predictor.score`: the answers and what the model saw (for the log)."""

    predictions: list[BaseModel]
    inputs: list[dict[str, Any]]  #: each request row's fields, its event time in UTC and its local ``date``
    served: list[dict[str, Any]]  #: the Feast features looked up for each row (None for unknown entities)
    schema: RequestSchema

    def log_records(self, model: str) -> list[dict[str, Any]]:
        """One prediction-log record per row: ids, time, inputs, looked-up features, prediction, version."""
        now = datetime.now(UTC)
        outputs = [name for name in (self.schema.score, self.schema.label) if name is not None]
        return [
            {
                "request_id": p.request_id,  # type: ignore[attr-defined]
                "logged_at": now,
                "model": model,
                "model_version": p.model_version,  # type: ignore[attr-defined]
                **self.inputs[i],
                **self.served[i],
                **{name: getattr(p, name) for name in outputs},
            }
            for i, p in enumerate(self.predictions)
        ]


class Predictor:
    """A fitted pipeline of one registered version, with the spec's feature lookup (and decision threshold).

    Two paths give the same scores. The reference (:meth:`lookup` and :meth:`scores`, on frames) is what offline
    scoring and the smoke test's expected values use. The hot path (:meth:`score`, what the endpoint calls) pays
    the per-call overhead once, at construction: no pandas frame per request, the request-time features read from
    the rows, and the model compiled for inference (:func:`airflow_mlops.compiled_model.compile_model`) when the
    pipeline is one it covers; ``compiled=False`` (or a pipeline it does not cover) scores with the reference.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        version: int,
        *,
        settings: Settings | None = None,
        compiled: bool = True,
    ) -> None:
        from zoneinfo import ZoneInfo

        from airflow_mlops.compiled_model import compile_model
        from airflow_mlops.model_input import model_columns
        from airflow_mlops.training import request_feature_is_calendar

        self.spec = spec
        self.model = model
        self.version = int(version)
        self.settings = settings or get_settings()
        self.schema = request_schema(spec, self.settings)
        self.numeric, self.categorical = model_columns(model)
        self.threshold = spec.training.decision_threshold if spec.is_classifier else None
        self.compiled = compile_model(model) if compiled else None
        self._zone = ZoneInfo(self.schema.timezone)
        self._calendar = {
            name: request_feature_is_calendar(name, self.schema.columns, spec, self.settings) for name in spec.features
        }

    def lookup(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The spec's Feast feature service for each row at its event time, online (None when unknown)."""
        import pandas as pd

        from airflow_mlops.features import entity_frame, online_features

        entities = entity_frame(rows, self.spec.entity_keys, self.schema.event_time).to_dict("records")
        found = online_features(entities, service=self.spec.feature_service, settings=self.settings)
        keys = set(self.spec.entity_keys)
        return pd.DataFrame([{k: v for k, v in row.items() if k not in keys} for row in found], index=rows.index)

    def scores(self, rows: pd.DataFrame, served: pd.DataFrame) -> Any:
        """The reference model's scores (probabilities, or predicted values) for rows whose features were looked
        up (offline scoring and the smoke test's expected values)."""
        from airflow_mlops.model_input import model_scores
        from airflow_mlops.training import serving_input

        return model_scores(self.model, serving_input(self.spec, rows, served, self.numeric, self.categorical))

    def score(self, rows: list[BaseModel]) -> Scored:
        """Look the features up and score ``rows`` (validated request rows); one prediction each, in order."""
        if self.compiled is None:
            frame = request_frame(self.schema, rows)
            served_frame = self.lookup(frame)
            values = self.scores(frame, served_frame)
            inputs = frame[[*self.schema.columns, "date"]].to_dict("records")
            served = served_frame.to_dict("records")
        else:
            inputs, local = self._inputs(rows)
            served = self._lookup(inputs)
            values = self.compiled.scores(self._model_columns(inputs, local, served), len(inputs))
        prediction, score, label = self.schema.prediction, self.schema.score, self.schema.label
        predictions = [
            prediction(
                **{score: float(v), "model_version": self.version, "request_id": uuid.uuid4().hex},
                **({label: bool(v >= self.threshold)} if label is not None and self.threshold is not None else {}),
            )
            for v in values
        ]
        return Scored(predictions=predictions, inputs=inputs, served=served, schema=self.schema)

    def _inputs(self, rows: list[BaseModel]) -> tuple[list[dict[str, Any]], list[datetime | None]]:
        """Each row's fields with its event time in UTC and its local ``date`` (as :func:`request_frame`), and
        its event time on the dataset's clock."""
        inputs: list[dict[str, Any]] = []
        local: list[datetime | None] = []
        for row in rows:
            record = row.model_dump() if isinstance(row, BaseModel) else dict(row)
            fields = {name: record.get(name) for name in self.schema.columns}
            stamp = fields[self.schema.event_time]
            if isinstance(stamp, str):
                stamp = datetime.fromisoformat(stamp)
            stamp = _utc(stamp)
            fields[self.schema.event_time] = stamp
            here = stamp.astimezone(self._zone) if stamp is not None else None
            fields["date"] = here.strftime("%Y-%m-%d") if here is not None else None
            inputs.append(fields)
            local.append(here)
        return inputs, local

    def _lookup(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`lookup` for request rows: the service's features of each row, without its keys."""
        from airflow_mlops.features import online_features

        keys = self.spec.entity_keys
        found = online_features(
            [{key: row[key] for key in keys} for row in inputs],
            service=self.spec.feature_service,
            settings=self.settings,
        )
        return [{name: value for name, value in row.items() if name not in keys} for row in found]

    def _model_columns(
        self, inputs: list[dict[str, Any]], local: list[datetime | None], served: list[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """The model's input columns (:func:`airflow_mlops.training.serving_input` without a frame)."""
        from airflow_mlops.model_input import ModelInputError
        from airflow_mlops.training import CALENDAR_VALUES

        columns: dict[str, list[Any]] = {}
        for name, calendar in self._calendar.items():
            if calendar:
                columns[name] = [CALENDAR_VALUES[name](t) if t is not None else math.nan for t in local]
            else:
                columns[name] = [row[name] for row in inputs]
        for name in served[0] if served else ():
            columns.setdefault(name, [row.get(name) for row in served])
        missing = [name for name in (*self.numeric, *self.categorical) if name not in columns]
        if missing:
            raise ModelInputError(f"frame lacks the model input columns {', '.join(missing)}")
        return columns


def payload(schema: RequestSchema, rows: pd.DataFrame) -> dict[str, Any]:
    """A ``/predict`` body from rows of the main table (what replay, the smoke test and the demo send)."""
    import pandas as pd

    fields = [name for name in schema.columns if name in rows.columns]
    frame = rows[fields].astype(object).where(rows[fields].notna(), None)
    if schema.event_time in frame.columns:
        stamps = pd.to_datetime(rows[schema.event_time], utc=True)
        frame[schema.event_time] = [s.isoformat() if not pd.isna(s) else None for s in stamps]
    records = frame.to_dict("records")
    numbers = {name: _PYTHON_TYPES[schema.types[name]] for name in fields if schema.types[name] in ("int", "float")}
    for record in records:
        for name, kind in numbers.items():
            if record.get(name) is not None:
                record[name] = kind(record[name])
    return {schema.collection: records}
