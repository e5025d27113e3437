"""The BentoML service of a model (BentoML 1.4, ``@bentoml.service`` class), built per model version.

Packaging (:mod:`airflow_mlops.packaging`) writes a two-line ``service.py`` into the bento that calls
:func:`build_service` with the model's BentoML model tag and spec, so the bento carries its model and spec
and nothing else decides what it serves. The service answers:

- ``POST /predict`` ``{"<main table>": [...]}`` -> ``{"predictions": [...]}``, with the schema generated from the
  spec and its dataset file (:func:`airflow_mlops.serving.request_schema`): the request is validated by
  pydantic (400 naming the field and the reason; 413 past the body limit), the
  spec's Feast feature service is looked up in the online store, the model scores, and every prediction goes
  to the prediction log (:mod:`airflow_mlops.prediction_log`) without ever blocking or failing the request;
- ``POST /predict_batch`` (the same body) -> ``[...]`` (a bare list of predictions): the same scoring
  behind BentoML's adaptive batching, which merges concurrent requests into one model call;
- at most ``deploy.max_concurrency`` requests at once (``MLOPS_MAX_CONCURRENCY`` in the server's environment wins): one
  more gets 429, and a batched request that would wait past
  ``deploy.batch_latency_ms`` gets 503; both with ``Retry-After``, counted in ``/metrics`` as
  ``requests_refused`` (:mod:`airflow_mlops.overload`);
- ``GET /livez``, ``GET /readyz`` (ready once the model is loaded and the feature store answers), ``GET /metrics``
  (Prometheus, with the prediction-log counters) from BentoML;
- with ``MLOPS_ENDPOINT_TOKEN`` in the server's environment, every route but the health checks requires
  ``Authorization: Bearer <token>`` (:mod:`airflow_mlops.endpoint_auth`); a server of the production profile
  (``MLOPS_PROFILE=production``) refuses to start without one, unless the platform in front authenticates
  (``MLOPS_ENDPOINT_AUTH=platform``, as the SageMaker target sets it);
- SageMaker's container contract on the same bento: ``GET /ping`` and ``POST /invocations`` (the
  ``/predict`` body), served on port 8080 when ``BENTOML_PORT=8080`` (as the container image sets it).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from airflow_mlops.body_limit import MAX_BODY_BYTES, BodyLimit
from airflow_mlops.endpoint_auth import TOKEN_VARIABLE, BearerAuth, required_token
from airflow_mlops.overload import Overload, max_concurrency, unavailable
from airflow_mlops.serving import MAX_ROWS, request_schema

log = logging.getLogger(__name__)

# BentoML 1.4 calls a pydantic API deprecated in 2.11 on every request; one warning line per request otherwise.
warnings.filterwarnings("ignore", message=r".*__get_pydantic_core_schema__.*", category=DeprecationWarning)


def build_service(model_tag: str, spec_file: str | Path) -> Any:
    """The BentoML service class serving BentoML model ``model_tag`` with the spec in ``spec_file``."""
    import bentoml
    from bentoml.exceptions import ServiceUnavailable
    from fastapi.responses import JSONResponse
    from pydantic import ValidationError

    from airflow_mlops.features import OnlineStoreUnavailable
    from airflow_mlops.specs import load_spec

    spec = load_spec(Path(spec_file))
    schema = request_schema(spec)
    limit = max_concurrency(os.environ, spec.deploy.max_concurrency, f"model endpoint {spec.name}")  # bad: fail now
    sagemaker = FastAPI(title=f"{spec.name} SageMaker contract", docs_url=None, redoc_url=None, openapi_url=None)

    @bentoml.service(
        name=spec.name.replace("_", "-"),
        # No BentoML max_concurrency: admission is Overload's (deploy.max_concurrency), whose 429 says Retry-After.
        traffic={"timeout": 30},
        workers=1,
        # Scoring releases the GIL in compiled code (Treelite, SQLite): a few threads keep both cores busy.
        threads=4,
        metrics={"enabled": True},
    )
    @bentoml.asgi_app(sagemaker, path="/")
    class ModelService:
        """Predictions of one registered model version, with Feast lookups and the prediction log."""

        bento_model = bentoml.models.BentoModel(model_tag)

        def __init__(self) -> None:
            from pathlib import Path

            from airflow_mlops.model_files import load_trusted
            from airflow_mlops.prediction_log import PredictionLog, make_sink
            from airflow_mlops.serving import Predictor

            info = self.bento_model
            labels = info.info.labels
            version = int(labels.get("model_version", 0))
            # Only the registered file (its sha256 recorded at registration), only the project's trusted types.
            model_dir = Path(info.path_of("mlflow_model"))
            model = load_trusted(model_dir, labels.get("model_sha256"), f"{spec.name} v{version}")
            self.predictor = Predictor(spec, model, version)
            self.log = PredictionLog(make_sink(spec.name))
            self.logged = bentoml.metrics.Gauge(
                name="prediction_log_records",
                documentation="prediction-log records by outcome (queued, written, dropped, failed)",
                labelnames=["outcome"],
            )
            log.info("%s: serving model version %s (%s)", spec.name, version, model_tag)

        def _score(self, rows: list[Any]) -> list[Any]:
            try:
                scored = self.predictor.score(rows)
            except OnlineStoreUnavailable as exc:  # 503 with the reason and Retry-After: the next request tries again
                log.warning("%s", exc)
                unavailable(str(exc))
                raise ServiceUnavailable(str(exc)) from exc
            try:
                self.log.log(scored.log_records(spec.name))
                for outcome in ("queued", "written", "dropped", "failed"):
                    self.logged.labels(outcome=outcome).set(getattr(self.log.stats, outcome))
            except Exception:  # the log never fails a prediction
                log.exception("prediction log: could not queue records")
            return scored.predictions

        # BentoML calls an API with the request model's fields as keywords: here the main table's name.
        @bentoml.api(route="/predict", input_spec=schema.request, output_spec=schema.response)
        def predict(self, **body: Any) -> Any:
            """Predictions for up to ``MAX_ROWS`` rows."""
            return schema.response(predictions=self._score(body[schema.collection]))

        # The dispatcher refuses (503, with Retry-After from Overload) a request it predicts it cannot answer within
        # the budget: deploy.batch_latency_ms, well above max_concurrency times one call (about a millisecond).
        @bentoml.api(
            route="/predict_batch",
            batchable=True,
            max_batch_size=MAX_ROWS,
            max_latency_ms=spec.deploy.batch_latency_ms,
            input_spec=schema.request,
        )
        def predict_batch(self, rows: list[Any]) -> list[Any]:
            """``/predict`` behind adaptive batching: concurrent requests share one model call."""
            return self._score(rows)

        def __is_ready__(self) -> bool:
            return self.predictor is not None

        @sagemaker.get("/ping")
        def ping(self) -> dict[str, str]:
            """SageMaker health check."""
            return {"status": "ok", "model_version": str(self.predictor.version)}

        @sagemaker.post("/invocations")
        async def invocations(self, request: Request) -> Any:
            """SageMaker inference: the ``/predict`` body, the ``/predict`` answer."""
            try:
                body = schema.request.model_validate_json(await request.body())
            except ValidationError as exc:
                return JSONResponse(
                    {"error": f"{exc.error_count()} validation error(s)", "detail": _errors(exc)}, status_code=400
                )
            try:
                predictions = await run_in_threadpool(self._score, getattr(body, schema.collection))
            except ServiceUnavailable as exc:
                return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
            return schema.response(predictions=predictions).model_dump()

        @bentoml.on_shutdown
        def _close_log(self) -> None:
            self.log.close()

    token = required_token(dict(os.environ), f"model endpoint {spec.name}")
    if token:
        ModelService.add_asgi_middleware(BearerAuth, token=token)  # first: nothing unauthenticated is read
    else:
        log.warning("%s: no %s: the endpoint answers without a token", spec.name, TOKEN_VARIABLE)
    refused = bentoml.metrics.Counter(
        name="requests_refused",
        documentation="requests refused as overloaded, with Retry-After (429: past deploy.max_concurrency; "
        "503: past the batch latency budget)",
        labelnames=["status", "route"],
    )
    ModelService.add_asgi_middleware(
        Overload,
        max_concurrency=limit,
        on_refused=lambda status, route: refused.labels(status=str(status), route=route).inc(),
    )
    ModelService.add_asgi_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return ModelService


def _errors(exc: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_context=False, include_input=False)
    ]


__all__ = ["MAX_ROWS", "BodyLimit", "build_service"]
