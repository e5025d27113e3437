"""An ASGI middleware that says "come back later" properly: bounded admission, ``Retry-After``, counted.

A model server takes at most ``max_concurrency`` requests at once (answering or queued for a batch); one more gets
**429** at once, before its body is read, rather than a slow answer or a timeout. A request the server admitted but
could not answer because it is overloaded (BentoML's batching dispatcher cancels a queued request whose
estimated latency exceeds the route's ``max_latency_ms``: **503** ``process is overloaded``) keeps its status.
Both carry ``Retry-After`` (seconds) so that clients and load balancers back off instead of retrying at once, and
both are counted by ``on_refused(status, path)`` (the bento service counts them in ``/metrics``). The health
checks are never refused.

A request the application cannot answer for another reason (the online store is down) may say why with
:func:`unavailable` before it fails with 503: the client then gets ``{"error": <reason>}`` instead of the
framework's generic "unexpected error" (BentoML hides the message of every 5xx), with ``Retry-After``; it is not
counted as overload.

Only the standard library (and :mod:`airflow_mlops.endpoint_auth`'s open paths).
"""

from __future__ import annotations

import contextlib
import contextvars
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


#: The reason the current request is answered 503, as :func:`unavailable` records it (a box per request).
_UNAVAILABLE: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("mlops_unavailable", default=None)


def unavailable(reason: str) -> None:
    """Say why this request is about to fail with 503; :class:`Overload` sends ``{"error": reason}``.

    Callable from the request's worker thread: the thread runs in a copy of the request's context, and the box
    that copy holds is the request's own.
    """
    box = _UNAVAILABLE.get()
    if box is not None:
        box["reason"] = reason


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
        box: dict[str, str] = {}
        held: dict[str, Any] = {}

        async def send_with_retry_after(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] in REFUSED:
                if message["status"] == 503 and "reason" in box:
                    held["start"] = message  # its body is replaced by the reason below
                    return
                message = {**message, "headers": [*message.get("headers", []), (b"retry-after", self.retry_after)]}
                self._count(message["status"], path)
            elif message["type"] == "http.response.body" and "start" in held:
                if message.get("more_body"):
                    return
                await self._explain(send, held["start"], box["reason"])
                return
            await send(message)

        token = _UNAVAILABLE.set(box)
        try:
            await self.app(scope, receive, send_with_retry_after)
        finally:
            _UNAVAILABLE.reset(token)
            self.active -= 1

    async def _explain(self, send: Any, start: dict[str, Any], reason: str) -> None:
        """The held 503 with ``{"error": reason}`` as its body."""
        body = json.dumps({"error": reason}).encode()
        dropped = (b"content-length", b"content-type", b"retry-after")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in dropped]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", self.retry_after),
        ]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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
