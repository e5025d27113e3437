"""Live traffic from history: send the real examples of past days to a model's endpoint, as requests.

:func:`replay` reads each day's main table from the dataset's source (the same source the ingest DAG lands
from, so days not landed yet can be replayed too), drops rows a request cannot carry (a required request
field missing), and posts them in batches to ``<url>/predict`` at an optional rate, so the endpoint's
prediction log fills with served traffic that monitoring then judges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import httpx

from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec


@dataclass
class ReplayResult:
    days: list[str]
    rows: int = 0
    requests: int = 0
    predicted: int = 0
    failed_requests: int = 0
    skipped_rows: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def day_examples(spec: ModelSpec, day: date, settings: Settings | None = None) -> Any:
    """The main table's rows of ``day`` from the dataset's source."""
    from airflow_mlops.datasets import dataset_spec, source_of
    from airflow_mlops.ingest import make_source

    settings = settings or get_settings()
    main = dataset_spec(spec.dataset, settings).main_table
    return make_source(source_of(spec.dataset, settings), settings).read(main, day)


def replay(
    spec: ModelSpec,
    url: str,
    days: list[date],
    *,
    rate: float = 0.0,
    batch: int = 50,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Send the examples of ``days`` to ``url/predict``, ``batch`` per request, at most ``rate`` rows/s (0: no cap).

    Requests carry the settings' endpoint token (:mod:`airflow_mlops.endpoint_auth`).

    ``progress(done, total)`` is called after each request. Failed requests are counted (and their first errors
    kept), never fatal: replay is traffic, not a test.
    """
    import pandas as pd

    from airflow_mlops.endpoint_auth import auth_headers
    from airflow_mlops.serving import payload, request_schema

    settings = settings or get_settings()
    schema = request_schema(spec, settings)
    result = ReplayResult(days=[d.isoformat() for d in days])
    frames = [day_examples(spec, day, settings) for day in days]
    examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    required = [name for name, f in schema.row.model_fields.items() if f.is_required()]
    usable = examples.dropna(subset=[c for c in required if c in examples.columns])
    result.skipped_rows = len(examples) - len(usable)
    result.rows = len(usable)
    started = time.perf_counter()
    with httpx.Client(timeout=60, headers=auth_headers(settings.endpoint_token())) as client:
        for start in range(0, len(usable), batch):
            chunk = usable.iloc[start : start + batch]
            body = payload(schema, chunk)
            try:
                response = client.post(f"{url.rstrip('/')}/predict", json=body)
                if response.status_code == 200:
                    result.predicted += len(response.json()["predictions"])
                else:
                    result.failed_requests += 1
                    if len(result.errors) < 5:
                        result.errors.append(f"{response.status_code}: {response.text[:300]}")
            except httpx.HTTPError as exc:
                result.failed_requests += 1
                if len(result.errors) < 5:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
            result.requests += 1
            done = min(start + batch, len(usable))
            if progress:
                progress(done, len(usable))
            if rate > 0:  # pace: the first `done` rows should take done / rate seconds
                ahead = done / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    result.seconds = time.perf_counter() - started
    return result
