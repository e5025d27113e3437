"""The local router's app in process: body limit and an identity that reveals no path (no backend needed)."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from airflow_mlops.body_limit import MAX_BODY_BYTES
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
