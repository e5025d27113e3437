"""An HTTP proxy on loopback that fails chosen routes of its upstream while passing the rest: the suite's 5xx faults.

``HttpFaultProxy(upstream_url).start()`` listens on a free port of 127.0.0.1 and forwards every request, method,
path, query, headers and body, to ``upstream_url``. :meth:`HttpFaultProxy.fail` picks the requests to fail (those
whose path contains given strings, for example ``/mlflow-artifacts/`` and ``/models/``: MLflow's artifact routes for
logged models) and how:

- ``error``: answer ``503 Service Unavailable`` at once (a store behind a gateway that is down);
- ``hang``: read the request, then answer nothing for :attr:`HttpFaultProxy.hang_seconds` (a store that times out),
  then close the connection.

:meth:`HttpFaultProxy.heal` passes everything again (and closes the requests still held). Every failed request is
counted in :attr:`failed` by method. It runs an aiohttp server and client in an asyncio loop in a daemon thread of
the test process; :meth:`stop` closes both.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Literal

from aiohttp import ClientSession, ClientTimeout, web

from airflow_mlops.processes import free_port

HttpMode = Literal["error", "hang"]
#: Headers that describe one hop's connection, not the message (RFC 9110 7.6.1), and those aiohttp recomputes.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


class HttpFaultProxy:
    """See the module doc."""

    def __init__(self, upstream_url: str, hang_seconds: float = 60) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hang_seconds = hang_seconds
        self.rule: tuple[tuple[str, ...], HttpMode] | None = None
        self.failed: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._release = asyncio.Event()  # set: the requests held by ``hang`` are let go
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"http-proxy-{self.port}")

    def start(self) -> HttpFaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def fail(self, mode: HttpMode, *path_parts: str) -> None:
        """Fail every request whose path contains each of ``path_parts``, from now on (see the module doc)."""
        self.rule = (path_parts, mode)

    def heal(self) -> None:
        """Forward every request again."""
        self.rule = None
        self._loop.call_soon_threadsafe(self._release.set)

    def stop(self) -> None:
        self.heal()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _start(self) -> None:
        # No timeout of its own: the client's timeout is what is under test.
        self._session = ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rule = self.rule
        if rule is not None and all(part in request.path for part in rule[0]):
            self.failed[request.method] += 1
            if rule[1] == "hang":
                self._release.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), self.hang_seconds)
                raise ConnectionResetError("the fault proxy closes a request it held")
            return web.Response(status=503, text=f"fault proxy: {request.path} is failing on purpose")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream_url + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            return web.Response(status=upstream.status, headers=kept, body=payload)
