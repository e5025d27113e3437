"""Bearer tokens on the model endpoints: the bento servers and the local router check the same token.

A server started with ``MLOPS_ENDPOINT_TOKEN`` in its environment answers every route except the health
checks (:data:`OPEN_PATHS`) only to requests carrying ``Authorization: Bearer <token>``: 401 without the
header, 401 with a wrong token (compared in constant time), before the body is read. The token may also come
in :data:`TOKEN_HEADER`, for callers behind a proxy that keeps ``Authorization`` for itself. Where the token comes
from is :meth:`airflow_mlops.settings.Settings.endpoint_token` (generated into ``$MLOPS_HOME/secrets`` in the
local profile, required from the environment in production); the deployers pass it to the servers they start
and every client of the project (CLI, replay, smoke test, demo, benchmarks) sends it with :func:`auth_headers`.

Only the standard library: the router imports it at start.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

#: The environment variable holding the token, in servers (what they require) and clients (what they send).
TOKEN_VARIABLE = "MLOPS_ENDPOINT_TOKEN"  # ruff: ignore[hardcoded-password-string] - a variable name

#: A second header carrying the token, for callers whose proxy consumes ``Authorization`` (the Kubernetes API
#: server's service proxy authenticates the caller with it and drops it before forwarding).
TOKEN_HEADER = "X-Endpoint-Token"  # ruff: ignore[hardcoded-password-string] - a header name

#: Set to ``platform`` where the platform in front authenticates every call itself (SageMaker: ``InvokeEndpoint``
#: is signed with IAM credentials and the runtime calls the container without them): no token is required then,
#: even in the production profile.
AUTH_VARIABLE = "MLOPS_ENDPOINT_AUTH"

#: Routes answered without a token: liveness and readiness (BentoML, Kubernetes probes) and SageMaker's ``/ping``.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/ping"})


def auth_headers(token: str | None) -> dict[str, str]:
    """The request headers that carry ``token`` (none when there is no token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class BearerAuth:
    """ASGI middleware: requests to any path but :data:`OPEN_PATHS` must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ValueError("BearerAuth needs a non-empty token")
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization")
        if given is None and _HEADER in headers:
            given = b"Bearer " + headers[_HEADER]
        if given is None:
            await _refuse(send, "missing bearer token: send the header 'Authorization: Bearer <token>'", "")
        elif not hmac.compare_digest(given, self.expected):
            await _refuse(send, "wrong bearer token", ', error="invalid_token"')
        else:
            await self.app(scope, receive, send)


_HEADER = TOKEN_HEADER.lower().encode()


def required_token(environ: dict[str, str], what: str) -> str | None:
    """The token a server started with ``environ`` must require, or None when it answers without one.

    Raises :class:`RuntimeError` in the production profile (``MLOPS_PROFILE=production``) when there is no token
    and no platform authenticates in front (:data:`AUTH_VARIABLE`): a production endpoint never runs open.
    """
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        return token
    if environ.get(AUTH_VARIABLE, "").strip() == "platform":
        return None
    if environ.get("MLOPS_PROFILE", "").strip() == "production":
        raise RuntimeError(
            f"{what}: MLOPS_PROFILE=production needs {TOKEN_VARIABLE} (the bearer token the endpoint requires), "
            f"or {AUTH_VARIABLE}=platform where the platform in front authenticates every call"
        )
    return None


async def _refuse(send: Any, message: str, error: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", f'Bearer realm="mlops"{error}'.encode())]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
