"""The production auth manager (FAB) with per-DAG permissions in front of the plugin's report pages.

The simple auth manager of the local profile lets every user read every DAG's runs, so "authenticated but not
allowed" can only be seen with a real one: Airflow's API server runs here with the FAB auth manager (as
``docker/compose.yaml`` configures it) on a PostgreSQL database of its own, with three users made through FAB's
security manager: ``admin`` (role Admin), ``reader`` (may read the runs of ``monitor_flight_delay``) and
``outsider`` (may read the runs of ``ingest_flights`` only). Only the API server runs: the report pages need no
scheduler. Passwords are generated here, test fixtures.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from airflow_mlops.airflow_runtime import airflow_env
from airflow_mlops.processes import free_port, stop_process_group
from airflow_mlops.settings import load_settings
from tests.integration.conftest import fresh_postgres_database

pytestmark = pytest.mark.integration

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
DAY = "2013-01-09"

# Run with the API server's environment: roles and users through FAB's own security manager.
USERS = """
import os
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    for role_name, dag_id in (("MonitorReader", "monitor_flight_delay"), ("IngestReader", "ingest_flights")):
        role = sm.find_role(role_name) or sm.add_role(role_name)
        for resource in ("DAG Runs", f"DAG:{dag_id}"):
            sm.add_permission_to_role(role, sm.create_permission("can_read", resource))
    for user, role_name in (("admin", "Admin"), ("reader", "MonitorReader"), ("outsider", "IngestReader")):
        password = os.environ["TEST_PASSWORD_" + user.upper()]
        assert sm.add_user(user, user, "test", f"{user}@localhost", sm.find_role(role_name), password), user
"""


def _token(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=30)


def test_a_user_without_access_to_the_monitor_dag_gets_403(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    passwords = {user: secrets.token_urlsafe(16) for user in ("admin", "reader", "outsider")}
    port = free_port()
    with fresh_postgres_database() as database:
        base = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database}
        env = airflow_env(port, settings, base=base)
        env.update(
            AIRFLOW__CORE__AUTH_MANAGER=FAB_AUTH_MANAGER,
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            **{f"TEST_PASSWORD_{user.upper()}": password for user, password in passwords.items()},
        )
        airflow = str(Path(sys.executable).parent / "airflow")
        migrated = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
        made = subprocess.run([sys.executable, "-c", USERS], env=env, capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr[-3000:]

        report = settings.home / "reports" / "flight_delay" / f"date={DAY}" / "drift.html"
        report.parent.mkdir(parents=True)
        report.write_text("<html>drift of the day</html>")
        log_path = tmp_path / "api-server.log"
        with log_path.open("wb") as out:
            server = subprocess.Popen(
                [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                assert server.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            else:
                pytest.fail(f"the API server never answered: {log_path.read_text()[-3000:]}")

            page = f"{url}/mlops/reports/flight_delay/{DAY}/drift.html"
            tokens = {}
            for user, password in passwords.items():
                answer = _token(url, user, password)
                assert answer.status_code in (200, 201), (user, answer.text)
                tokens[user] = answer.json()["access_token"]
            assert _token(url, "reader", passwords["reader"][::-1]).status_code == 401

            def get(user: str | None) -> httpx.Response:
                headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
                return httpx.get(page, headers=headers, timeout=30)

            assert get(None).status_code == 401
            forged = httpx.get(page, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
            assert forged.status_code in (401, 403)
            for allowed in ("admin", "reader"):
                answer = get(allowed)
                assert answer.status_code == 200 and answer.text == "<html>drift of the day</html>", allowed
            refused = get("outsider")
            assert refused.status_code == 403, refused.text
            assert "drift of the day" not in refused.text + forged.text
        finally:
            stop_process_group(server.pid)
    for password in passwords.values():
        assert password not in log_path.read_text(errors="replace")
