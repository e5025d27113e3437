"""Online prediction: the request schema, and the predictor every serving path shares.

A request is ``{"flights": [...]}``; each flight carries the schedule fields of the flights table
(:class:`Flight`). :class:`Predictor` turns flights into the model's input exactly as training did: the spec's
request-time columns (``month``, ``hour``, ``day_of_week``, ``distance``, ``carrier``...) derived from the
schedule by :func:`airflow_mlops.training.serving_input`, plus the model's Feast feature service looked up in the
online store (:func:`airflow_mlops.features.online_features`; unknown entities give missing values, which the
model treats as missing, never an error). It answers one :class:`Prediction` per flight.

The BentoML service (:mod:`airflow_mlops.bento_service`), the smoke test and the benchmarks all call the same
:class:`Predictor`, so what is tested offline is what serves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_mlops.datasets import dataset_spec
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

#: Most flights one request may carry (a larger batch gets 400, naming the limit).
MAX_FLIGHTS = 1000
#: Largest request body in bytes (a larger body gets 413).
MAX_BODY_BYTES = 1_000_000


@cache
def flights_timezone() -> str:
    """Local clock of the flights table (``sched_dep_time``, the partition day), from its dataset file."""
    return dataset_spec("flights").timezone


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class Flight(BaseModel):
    """One scheduled departure, with the fields of the flights table (others, like ``dep_delay``, are ignored)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    carrier: str = Field(pattern=r"^[A-Z0-9]{2,3}$", description="two-letter carrier code, e.g. UA")
    flight: int = Field(ge=1, le=9999, description="flight number")
    tailnum: str | None = Field(default=None, max_length=10, description="plane tail number, if known")
    origin: str = Field(pattern=r"^[A-Z]{3}$", description="origin airport (EWR, JFK, LGA)")
    dest: str = Field(pattern=r"^[A-Z]{3}$", description="destination airport")
    distance: float = Field(gt=0, le=20_000, description="miles")
    sched_dep_time: int = Field(ge=0, le=2359, description="scheduled departure, local HHMM (e.g. 1530)")
    time_hour: datetime = Field(description="scheduled departure hour, ISO 8601 (no offset means UTC)")

    @field_validator("tailnum")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("sched_dep_time")
    @classmethod
    def _clock(cls, value: int) -> int:
        if value % 100 >= 60:
            raise ValueError(f"{value} is not a HHMM clock time (minutes must be below 60)")
        return value

    @field_validator("time_hour")
    @classmethod
    def _on_the_hour(cls, value: datetime) -> datetime:
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        if value.minute or value.second or value.microsecond:
            raise ValueError(f"{value.isoformat()} is not on the hour (time_hour is the scheduled departure hour)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _hours_agree(self) -> Flight:
        local = self.time_hour.astimezone(_zone(flights_timezone()))
        if local.hour != self.sched_dep_time // 100:
            raise ValueError(
                f"time_hour {self.time_hour.isoformat()} is {local.hour:02d}:00 in {flights_timezone()}, but "
                f"sched_dep_time {self.sched_dep_time:04d} says {self.sched_dep_time // 100:02d}:xx"
            )
        return self

    @property
    def local_date(self) -> str:
        """The flight's day in the local clock (its partition in the flights table), ISO date."""
        return self.time_hour.astimezone(_zone(flights_timezone())).date().isoformat()


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="forbid")

    flights: list[Flight] = Field(min_length=1, max_length=MAX_FLIGHTS)


class Prediction(BaseModel):
    """The answer for one flight."""

    delay_probability: float = Field(description="probability of departing 15 minutes late or more")
    delayed: bool = Field(description="delay_probability >= the spec's decision threshold")
    model_version: int = Field(description="MLflow version of the registered model that answered")
    request_id: str = Field(description="id of this prediction in the prediction log")


class PredictResponse(BaseModel):
    """The body ``POST /predict`` answers."""

    predictions: list[Prediction]


@dataclass
class Scored:
    """Flights scored by :meth:`Predictor.score`: the answers and what the model saw (for the log)."""

    predictions: list[Prediction]
    flights: pd.DataFrame  #: the request's flights as a flights-table frame
    served: pd.DataFrame  #: the Feast features looked up, one row per flight (None for unknown entities)

    def log_records(self, model: str) -> list[dict[str, Any]]:
        """One prediction-log record per flight: ids, time, inputs, looked-up features, prediction, version."""
        now = datetime.now(UTC)
        inputs = self.flights[list(_LOGGED_INPUTS)].to_dict("records")
        served = self.served.to_dict("records")
        return [
            {
                "request_id": p.request_id,
                "logged_at": now,
                "model": model,
                "model_version": p.model_version,
                **inputs[i],
                **served[i],
                "delay_probability": p.delay_probability,
                "delayed": p.delayed,
            }
            for i, p in enumerate(self.predictions)
        ]


_LOGGED_INPUTS = ("date", "carrier", "flight", "tailnum", "origin", "dest", "distance", "sched_dep_time", "time_hour")


def flights_frame(flights: list[Flight]) -> pd.DataFrame:
    """Request flights as rows of the flights table (local ``year``/``month``/``day``/``hour``/``minute``)."""
    import pandas as pd

    frame = pd.DataFrame([f.model_dump() for f in flights])
    return with_local_clock(frame)


def with_local_clock(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (``time_hour``, ``sched_dep_time``...) plus the flights table's local ``year``/``month``/``day``/
    ``hour``/``minute`` and the partition ``date``: what the spec's schedule features derive from."""
    import pandas as pd

    frame = frame.copy()
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    local = frame["time_hour"].dt.tz_convert(flights_timezone())
    sched = frame["sched_dep_time"].astype("int64")
    frame["year"], frame["month"], frame["day"] = local.dt.year, local.dt.month, local.dt.day
    frame["hour"], frame["minute"] = sched // 100, sched % 100
    frame["date"] = local.dt.strftime("%Y-%m-%d")
    return frame


class Predictor:
    """A fitted pipeline of one registered version, with the spec's feature lookup and decision threshold."""

    def __init__(self, spec: ModelSpec, model: Any, version: int, *, settings: Settings | None = None) -> None:
        from airflow_mlops.training import event_time, model_columns

        self.spec = spec
        self.model = model
        self.version = int(version)
        self.settings = settings or get_settings()
        self.numeric, self.categorical = model_columns(model)
        self.threshold = spec.training.decision_threshold
        self.event_time = event_time(spec, self.settings)[0]

    def lookup(self, flights: pd.DataFrame) -> pd.DataFrame:
        """The spec's Feast feature service for each flight, from the online store (None when unknown)."""
        import pandas as pd

        from airflow_mlops.features import entity_frame, online_features

        entities = entity_frame(flights, self.spec.entity_keys, self.event_time).to_dict("records")
        rows = online_features(entities, service=self.spec.feature_service, settings=self.settings)
        keys = set(self.spec.entity_keys)
        return pd.DataFrame([{k: v for k, v in row.items() if k not in keys} for row in rows], index=flights.index)

    def probabilities(self, flights: pd.DataFrame, served: pd.DataFrame) -> Any:
        """Delay probabilities for flights whose features were looked up (offline scoring uses this too)."""
        from airflow_mlops.training import serving_input

        features = serving_input(self.spec, flights, served, self.numeric, self.categorical)
        return self.model.predict_proba(features)[:, 1]

    def score(self, flights: list[Flight]) -> Scored:
        """Look the features up and score ``flights``; one :class:`Prediction` each, in order."""
        frame = flights_frame(flights)
        served = self.lookup(frame)
        probabilities = self.probabilities(frame, served)
        predictions = [
            Prediction(
                delay_probability=float(p),
                delayed=bool(p >= self.threshold),
                model_version=self.version,
                request_id=uuid.uuid4().hex,
            )
            for p in probabilities
        ]
        return Scored(predictions=predictions, flights=frame, served=served)


def flights_payload(flights: pd.DataFrame) -> dict[str, Any]:
    """A ``/predict`` body from rows of the flights table (what replay, the smoke test and the demo send)."""
    import pandas as pd

    fields = [name for name in Flight.model_fields if name in flights.columns]
    rows = flights[fields].astype(object).where(flights[fields].notna(), None).to_dict("records")
    for row in rows:
        stamp = row.get("time_hour")
        if isinstance(stamp, pd.Timestamp | datetime):
            row["time_hour"] = (
                pd.Timestamp(stamp).tz_localize("UTC").isoformat()
                if stamp.tzinfo is None
                else (pd.Timestamp(stamp).tz_convert("UTC").isoformat())
            )
        for name in ("flight", "sched_dep_time"):
            if row.get(name) is not None:
                row[name] = int(row[name])
        if row.get("distance") is not None:
            row["distance"] = float(row["distance"])
    return {"flights": rows}
