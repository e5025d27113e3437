"""The stable URL of the ``local`` deploy target: a small reverse proxy in front of the active bento server.

``python -m airflow_mlops.router --state FILE --port P`` forwards every request to the ``active`` backend named
in the JSON state file that :mod:`airflow_mlops.deploy.local` maintains. The file is re-read when it changes
(one ``stat`` per request), so a deployment switches traffic by replacing the file atomically: requests
already sent to the old backend finish there, new ones go to the new backend. ``GET /-/router`` tells the
active backend and the requests pending per backend, which the deployer watches to stop the old server only
once it is drained, and the router's id (:func:`router_id`, a digest of its state file: the deployer recognizes its
own router without the router revealing a path). With no active backend the router answers 503; when the active
backend cannot be reached, or takes a request and closes the connection without an answer (it died), 502; when
it does not answer within 60 s, 504 (each with ``Retry-After``; a request never sent is tried once on the new
active backend, one that was sent is not, since it may have run). After such a failure the backend gets no
request until its ``/readyz`` answers again (probed every half second): meanwhile requests get 503 at once, so
none waits on a server whose worker BentoML is restarting. A request body
over :data:`~airflow_mlops.body_limit.MAX_BODY_BYTES` gets 413 before anything is forwarded. With
``MLOPS_ENDPOINT_TOKEN`` in its environment (always, when the local deployer starts it) the router requires
the same bearer token as the bento servers on every route, ``/-/router`` included, except the health checks
(:mod:`airflow_mlops.endpoint_auth`), and forwards the header to the backend, which checks it again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from airflow_mlops.body_limit import MAX_BODY_BYTES, BodyLimit
from airflow_mlops.endpoint_auth import TOKEN_VARIABLE, BearerAuth, required_token

log = logging.getLogger(__name__)

#: How often a failed backend is probed (``GET /readyz``), and how long a probe may take, in seconds.
PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 1.0

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer", "host"}


def router_id(state: Path) -> str:
    """What ``GET /-/router`` answers as ``router``: a digest of the state file's absolute path."""
    return hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:16]


class Backends:
    """The active backend from the state file, re-read when the file changes."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self._stamp: tuple[int, int] | None = None
        self.active: str | None = None
        self.version: int | None = None
        self.pending: Counter[str] = Counter()
        self.switches = 0
        #: Backends whose last request failed in transport, with when they were last probed (monotonic seconds).
        self.failed: dict[str, float] = {}

    def current(self) -> str | None:
        try:
            stat = self.state.stat()
        except FileNotFoundError:
            return self.active
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            try:
                raw = json.loads(self.state.read_text())
            except (OSError, ValueError):
                return self.active  # a half-written file is never read (it is replaced atomically); keep going
            self._stamp = stamp
            active = (raw.get("active") or {}).get("url")
            if active != self.active:
                log.info("router: traffic now goes to %s (was %s)", active, self.active)
                self.switches += self.active is not None
                self.active = active
                self.version = (raw.get("active") or {}).get("version")
        return self.active


def _upstream_failed(status: int, what: str, exc: Exception) -> Any:
    """A clear 502/504 for a request the backend took and did not answer (it died, or was too slow)."""
    from starlette.responses import JSONResponse

    log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    return JSONResponse({"error": f"{what}: {type(exc).__name__}"}, status_code=status, headers={"Retry-After": "1"})


def create_app(state: Path, token: str | None = None) -> Any:
    """The router as a Starlette app (httpx forwards, with keep-alive connections to the backends).

    ``token``: the bearer token every request but the health checks must carry (None: no authentication).
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    backends = Backends(state)
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), limits=httpx.Limits(max_connections=512))

    async def answering(backend: str) -> bool:
        """False while a backend whose last request failed does not pass ``/readyz`` (probed at most every
        :data:`PROBE_INTERVAL` seconds, waiting :data:`PROBE_TIMEOUT`): requests get a 503 at once instead of
        queueing on a server that is gone or restarting its worker (whose socket still accepts connections)."""
        probed = backends.failed.get(backend)
        if probed is None:
            return True
        now = time.monotonic()
        if now - probed < PROBE_INTERVAL:
            return False
        backends.failed[backend] = now
        try:
            ready = (await client.get(backend + "/readyz", timeout=PROBE_TIMEOUT)).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready:
            backends.failed.pop(backend, None)
            log.info("router: %s answers again", backend)
        return ready

    def failed(backend: str) -> None:
        backends.failed.setdefault(backend, time.monotonic() - PROBE_INTERVAL)

    def status(_: Request) -> Response:
        backends.current()
        return JSONResponse(
            {
                "router": router_id(state),
                "active": backends.active,
                "version": backends.version,
                "pending": {url: n for url, n in backends.pending.items() if n},
                "switches": backends.switches,
            }
        )

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        last_error: Exception | None = None
        tried: set[str] = set()
        for _ in range(2):  # a backend retired between lookup and connect: try the new active one once
            backend = backends.current()
            if backend is None:
                return JSONResponse({"error": "no model deployed behind this endpoint yet"}, status_code=503)
            if backend in tried:
                break
            tried.add(backend)
            if not await answering(backend):
                return JSONResponse(
                    {"error": "model server is not answering (restarting or gone); try again shortly"},
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
            backends.pending[backend] += 1
            try:
                upstream = await client.request(
                    request.method,
                    backend + request.url.path,
                    params=request.query_params,
                    content=body,
                    headers=headers,
                )
            except httpx.ConnectError as exc:  # nothing was sent: the next active backend may take it
                failed(backend)
                last_error = exc
                continue
            except httpx.TimeoutException as exc:
                failed(backend)
                return _upstream_failed(504, "model server did not answer in time", exc)
            except httpx.TransportError as exc:  # sent, then the connection broke: not retried (it may have run)
                failed(backend)
                return _upstream_failed(502, "model server closed the connection", exc)
            finally:
                backends.pending[backend] -= 1
            response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            response_headers.pop("content-length", None)
            response_headers.pop("content-encoding", None)
            return Response(upstream.content, status_code=upstream.status_code, headers=response_headers)
        return JSONResponse({"error": f"model server unreachable: {last_error}"}, status_code=502)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    routes = [Route("/-/router", status), Route("/{path:path}", forward, methods=methods)]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = BodyLimit(Starlette(routes=routes, lifespan=lifespan), max_bytes=MAX_BODY_BYTES)
    return BearerAuth(app, token) if token else app


def main(argv: list[str] | None = None) -> None:
    """Run the router under uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True, type=Path, help="JSON state file naming the active backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MLOPS_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    token = required_token(dict(os.environ), "router")
    if token is None:
        log.warning("router: no %s: the endpoint answers without authentication", TOKEN_VARIABLE)
    uvicorn.run(create_app(args.state, token), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
