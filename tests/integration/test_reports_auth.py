"""The plugin's report pages sit behind Airflow's own authentication (a real ``airflow standalone``).

Airflow mounts plugin apps without authenticating them; the reports route depends on Airflow's
``requires_access_dag`` for the runs of ``monitor_<model>``. The simple auth manager of the local profile
lets every authenticated user read DAG runs, so the "authenticated but not allowed" case (403) needs
another auth manager and is not exercised here.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from airflow_mlops.airflow_runtime import AirflowServer, get_token

DAY = "2013-01-08"


@pytest.mark.integration
def test_reports_need_an_airflow_user(
    airflow_server: AirflowServer, airflow_user: str, airflow_password: str, mlops_home: Path
) -> None:
    folder = mlops_home / "reports" / "flight_delay" / f"date={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drift.html").write_text("<html>drift of the day</html>")
    url = f"{airflow_server.url}/mlops/reports/flight_delay/{DAY}/drift.html"
    token = get_token(airflow_server.url, airflow_user, airflow_password)

    anonymous = httpx.get(url, timeout=30)
    forged = httpx.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
    # Airflow's answers: 401 "Not authenticated" without a credential, 403 "Invalid JWT token" for a bad one.
    assert (anonymous.status_code, forged.status_code) == (401, 403), (anonymous.text, forged.text)
    assert "drift of the day" not in anonymous.text + forged.text

    with_token = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert with_token.status_code == 200 and with_token.text == "<html>drift of the day</html>"
    from_the_ui = httpx.get(url, cookies={"_token": token}, timeout=30)  # the UI's session cookie
    assert from_the_ui.status_code == 200 and from_the_ui.text == with_token.text

    # The REST API the plugin sits on: the same matrix, and a wrong password gets no token.
    api = f"{airflow_server.url}/api/v2/dags"
    assert httpx.get(api, timeout=30).status_code == 401
    assert httpx.get(api, headers={"Authorization": "Bearer not-a-token"}, timeout=30).status_code in (401, 403)
    assert httpx.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    wrong = {"username": airflow_user, "password": airflow_password[::-1]}
    assert httpx.post(f"{airflow_server.url}/auth/token", json=wrong, timeout=30).status_code == 401

    missing = httpx.get(url.replace(DAY, "2013-01-09"), headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert missing.status_code == 404 and "has monitor_flight_delay run?" in missing.text
