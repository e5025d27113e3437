"""An ASGI middleware that says "come back later" properly: bounded admission, ``Retry-After``, counted.

A model server takes at most ``max_concurrency`` requests at once (answering or queued for a batch); one more gets
**429** at once, before its body is read, rather than a slow answer or a timeout. A request the server admitted but
could not answer because it is overloaded (BentoML's batching dispatcher cancels a queued request whose
estimated latency exceeds the route's ``max_latency_ms``: **503** ``process is overloaded``) keeps its status.
Both carry ``Retry-After`` (seconds) so that clients and load balancers back off instead of retrying at once, and
both are counted by ``on_refused(status, path)`` (the bento service counts them in ``/metrics``). The health
checks are never refused.

Only the standard library (and :mod:`airflow_mlops.endpoint_auth`'s open paths).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow_mlops.endpoint_auth import OPEN_PATHS

#: Statuses that mean "overloaded, try again": what gets ``Retry-After`` and is counted.
REFUSED = (429, 503)
#: The server's environment may set the admission limit without a new bento (it wins over ``deploy.max_concurrency``).
MAX_CONCURRENCY_VARIABLE = "MLOPS_MAX_CONCURRENCY"


def max_concurrency(environ: Mapping[str, str], default: int, what: str) -> int:
    """The admission limit of ``what``: ``MLOPS_MAX_CONCURRENCY`` when set, else ``default`` (the spec's)."""
    raw = (environ.get(MAX_CONCURRENCY_VARIABLE) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"{what}: {MAX_CONCURRENCY_VARIABLE}={raw!r} is not a positive whole number of requests "
            f"(unset it to use deploy.max_concurrency, {default})"
        )
    return int(raw)


class Overload:
    """ASGI middleware: 429 past ``max_concurrency`` requests at once; ``Retry-After`` on every 429 and 503."""

    def __init__(
        self,
        app: Any,
        *,
        max_concurrency: int,
        retry_after_seconds: int = 1,
        on_refused: Callable[[int, str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.retry_after = str(retry_after_seconds).encode()
        self.on_refused = on_refused
        self.active = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.active >= self.max_concurrency:
            await self._refuse(send, path)
            return
        self.active += 1

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in REFUSED:
                message = {**message, "headers": [*message.get("headers", []), (b"retry-after", self.retry_after)]}
                self._count(message["status"], path)
            await send(message)

        try:
            await self.app(scope, receive, send_with_retry_after)
        finally:
            self.active -= 1

    async def _refuse(self, send: Any, path: str) -> None:
        body = json.dumps(
            {
                "error": f"too many requests: this server takes {self.max_concurrency} at once; retry after "
                f"{self.retry_after.decode()} s"
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"retry-after", self.retry_after)]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._count(429, path)

    def _count(self, status: int, path: str) -> None:
        if self.on_refused is not None:
            with contextlib.suppress(Exception):  # counting never fails a response
                self.on_refused(status, path)
