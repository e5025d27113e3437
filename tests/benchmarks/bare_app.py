"""The bare baseline of the endpoint benchmark: FastAPI under uvicorn doing the endpoint's lookup and predict.

``POST /predict`` takes the endpoint's body (``{"flights": [...]}``, validated by the same generated models) and
answers ``{"predictions": [...]}`` through the same :class:`airflow_mlops.serving.Predictor` (Feast online lookup,
then the model) for the same registered version, loaded with :func:`airflow_mlops.registry.load_model`. It has
none of the endpoint's other work: no BentoML runtime, no prediction log, no metrics, no body limit. The route is
a plain ``def`` (run in the thread pool, as BentoML runs a sync API). ``GET /readyz`` answers once the model is
loaded. Started by ``bench_endpoint`` as::

    MLOPS_HOME=... MLOPS_MODELS_DIR=... BARE_APP_MODEL=flight_delay BARE_APP_VERSION=1 BARE_APP_RUN_ID=... \\
        python -m uvicorn --factory tests.benchmarks.bare_app:create_app --port N --workers 1
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI


def create_app() -> FastAPI:
    """The app serving the version named by ``BARE_APP_MODEL`` / ``BARE_APP_VERSION`` / ``BARE_APP_RUN_ID``."""
    from airflow_mlops.registry import ModelVersionRef, load_model
    from airflow_mlops.serving import Predictor
    from airflow_mlops.settings import get_settings
    from airflow_mlops.specs import load_spec

    settings = get_settings()
    name = os.environ["BARE_APP_MODEL"]
    spec = load_spec(settings.models_dir / f"{name}.yaml")
    ref = ModelVersionRef(name=name, version=int(os.environ["BARE_APP_VERSION"]), run_id=os.environ["BARE_APP_RUN_ID"])
    predictor = Predictor(spec, load_model(ref, settings), ref.version, settings=settings)

    app = FastAPI(title=f"bare {name} v{ref.version}", docs_url=None, redoc_url=None, openapi_url=None)

    schema = predictor.schema

    def predict(body: Any) -> Any:
        return schema.response(predictions=predictor.score(getattr(body, schema.collection)).predictions)

    # The request model is made at run time: give FastAPI the class itself (with postponed annotations it would
    # see the text "schema.request", which it cannot resolve, and read the body as a query parameter).
    predict.__annotations__["body"] = schema.request
    app.post("/predict", response_model=schema.response)(predict)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ok", "model_version": str(predictor.version)}

    return app
