"""The local target's stable URL refuses a port that another router (another home, another model) holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from airflow_mlops.deploy.base import DeployError
from airflow_mlops.deploy.local import ensure_router, stop_tree
from airflow_mlops.processes import free_port
from airflow_mlops.router import router_id
from airflow_mlops.settings import PROJECT_ROOT, load_settings
from airflow_mlops.specs import load_spec

pytestmark = pytest.mark.integration


def test_a_port_held_by_another_router_is_refused(tmp_path: Path) -> None:
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "airflow_mlops.router", "--state", str(tmp_path / "other.json"), "--port", str(port)],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/router", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        spec = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")
        spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"local": {"port": port}})})
        spec = spec.model_validate(spec.model_dump())
        settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
        with pytest.raises(DeployError, match=f"port {port} answers for another router"):
            ensure_router(spec, settings)
        answer = httpx.get(f"http://127.0.0.1:{port}/-/router", timeout=5).json()
        assert answer["router"] == router_id(tmp_path / "other.json") and str(tmp_path) not in json.dumps(answer)
    finally:
        stop_tree(other.pid)
