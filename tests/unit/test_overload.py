"""The admission middleware (:mod:`airflow_mlops.overload`) in front of a real ASGI app, through httpx.

The app under it holds every request until the test releases it, so "in flight" is exact; the real bento server
with the middleware is exercised by ``tests/integration/test_serving.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from airflow_mlops.overload import MAX_CONCURRENCY_VARIABLE, Overload, max_concurrency


def _app(release: asyncio.Event) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"ok": True})

    def shed(request: Request) -> JSONResponse:
        return JSONResponse({"error": "process is overloaded"}, status_code=503)

    def livez(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    routes = [Route("/predict", predict, methods=["POST"]), Route("/shed", shed, methods=["POST"])]
    return Starlette(routes=[*routes, Route("/livez", livez)])


def test_past_the_limit_a_request_gets_429_with_retry_after_and_is_counted() -> None:
    refused: list[tuple[int, str]] = []

    async def scenario() -> dict[str, Any]:
        release = asyncio.Event()
        app = Overload(
            _app(release), max_concurrency=3, retry_after_seconds=2, on_refused=lambda s, p: refused.append((s, p))
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            held = [asyncio.create_task(client.post("/predict", json={})) for _ in range(3)]
            while app.active < 3:
                await asyncio.sleep(0.001)
            extra = await client.post("/predict", json={})
            health = await client.get("/livez")  # never refused
            release.set()
            answered = await asyncio.gather(*held)
            shed = await client.post("/shed", json={})
            after = await client.post("/predict", json={})
            return {"extra": extra, "health": health, "shed": shed, "answered": answered, "after": after, "app": app}

    seen = asyncio.run(scenario())
    extra = seen["extra"]
    assert extra.status_code == 429 and extra.headers["retry-after"] == "2"
    assert "3 at once" in extra.json()["error"]
    assert seen["health"].status_code == 200
    assert [r.status_code for r in seen["answered"]] == [200, 200, 200]
    assert all("retry-after" not in r.headers for r in seen["answered"])
    # A 503 from inside (BentoML's dispatcher shedding) keeps its status and body, and gains Retry-After.
    assert seen["shed"].status_code == 503 and seen["shed"].headers["retry-after"] == "2"
    assert seen["shed"].json() == {"error": "process is overloaded"}
    assert seen["after"].status_code == 200 and seen["app"].active == 0  # the slots came back
    assert refused == [(429, "/predict"), (503, "/shed")]


def test_a_failing_counter_never_fails_the_answer() -> None:
    def broken(status: int, path: str) -> None:
        raise RuntimeError("metrics down")

    async def scenario() -> httpx.Response:
        app = Overload(_app(asyncio.Event()), max_concurrency=1, on_refused=broken)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as client:
            return await client.post("/shed", json={})

    answer = asyncio.run(scenario())
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_the_environment_sets_the_limit_and_a_bad_value_is_named() -> None:
    assert max_concurrency({}, 128, "model endpoint m") == 128
    assert max_concurrency({MAX_CONCURRENCY_VARIABLE: " 8 "}, 128, "model endpoint m") == 8
    for bad in ("0", "-3", "many", "2.5"):
        with pytest.raises(ValueError, match=rf"model endpoint m: MLOPS_MAX_CONCURRENCY='{bad}' is not a positive"):
            max_concurrency({MAX_CONCURRENCY_VARIABLE: bad}, 128, "model endpoint m")


def test_a_503_whose_reason_the_app_gave_carries_it_with_retry_after_and_is_not_counted_as_overload() -> None:
    """What the bento does when the online store is down: :func:`unavailable` from the worker thread, then a 503
    whose framework body hides the reason (BentoML's "unexpected error")."""
    from starlette.concurrency import run_in_threadpool

    from airflow_mlops.overload import unavailable

    refused: list[tuple[int, str]] = []

    def lookup() -> None:
        unavailable("online store (redis) unavailable for svc: TimeoutError: Timeout reading")

    async def down(request: Request) -> JSONResponse:
        await run_in_threadpool(lookup)  # the sync API runs in a worker thread, as BentoML runs it
        return JSONResponse({"error": "An unexpected error has occurred, please check the server log."}, 503)

    def shed(request: Request) -> JSONResponse:
        return JSONResponse({"error": "process is overloaded"}, status_code=503)

    app = Overload(
        Starlette(routes=[Route("/down", down, methods=["POST"]), Route("/shed", shed, methods=["POST"])]),
        max_concurrency=4,
        on_refused=lambda s, p: refused.append((s, p)),
    )

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model") as client:
            return await client.post("/down", json={}), await client.post("/shed", json={})

    down_answer, shed_answer = asyncio.run(scenario())
    assert down_answer.status_code == 503 and down_answer.headers["retry-after"] == "1"
    assert down_answer.json() == {"error": "online store (redis) unavailable for svc: TimeoutError: Timeout reading"}
    assert int(down_answer.headers["content-length"]) == len(down_answer.content)
    assert shed_answer.status_code == 503 and shed_answer.json() == {"error": "process is overloaded"}
    assert refused == [(503, "/shed")]  # the store being down is not overload
    assert app.active == 0
