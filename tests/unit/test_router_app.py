"""The local router's app in process: body limit and an identity that reveals no path (no backend needed)."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from airflow_mlops.body_limit import MAX_BODY_BYTES
from airflow_mlops.endpoint_auth import TOKEN_HEADER, auth_headers
from airflow_mlops.router import create_app, router_id


def test_router_refuses_large_bodies_and_names_itself_without_a_path(tmp_path: Path) -> None:
    state = tmp_path / "secret-place" / "router.json"
    state.parent.mkdir()
    state.write_text(json.dumps({}))
    with TestClient(create_app(state)) as client:
        status = client.get("/-/router")
        assert status.status_code == 200
        assert status.json()["router"] == router_id(state) and "secret-place" not in status.text
        too_large = client.post("/predict", content=b"x" * (MAX_BODY_BYTES + 1))
        assert too_large.status_code == 413 and str(MAX_BODY_BYTES) in too_large.text
        nothing_deployed = client.post("/predict", json={"rows": []})
        assert nothing_deployed.status_code == 503


def test_router_with_a_token_refuses_every_route_but_the_health_checks_without_it(tmp_path: Path) -> None:
    state = tmp_path / "router.json"
    state.write_text(json.dumps({}))
    with TestClient(create_app(state, token="s3cret-token")) as client:
        for method, route in (("GET", "/-/router"), ("POST", "/predict"), ("GET", "/metrics")):
            missing = client.request(method, route)
            assert missing.status_code == 401 and "missing bearer token" in missing.text, route
            wrong = client.request(method, route, headers={"Authorization": "Bearer s3cret-tokem"})
            assert wrong.status_code == 401 and wrong.json() == {"error": "wrong bearer token"}, route
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert client.get("/-/router", headers=auth_headers("s3cret-token")).status_code == 200
        assert client.get("/-/router", headers={TOKEN_HEADER: "s3cret-token"}).status_code == 200
        # Past the token, the body limit and the routing work as without one; a health check is forwarded.
        authorized = auth_headers("s3cret-token")
        assert client.post("/predict", content=b"x" * (MAX_BODY_BYTES + 1), headers=authorized).status_code == 413
        assert client.post("/predict", json={"rows": []}, headers=authorized).status_code == 503
        assert client.get("/readyz").status_code == 503  # no backend yet, but not 401
        # Unauthenticated, a body past the limit is refused before it is read: 401, not 413.
        assert client.post("/predict", content=b"x" * (MAX_BODY_BYTES + 1)).status_code == 401
