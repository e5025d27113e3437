"""The Airflow plugin of airflow-mlops: monitoring reports in the Airflow UI.

- ``/mlops/reports/<model>/<YYYY-MM-DD>/<file>`` (a FastAPI app mounted by the API server) serves the
  Evidently reports that ``monitor_<model>`` writes under ``$MLOPS_HOME/reports`` (``drift.html``,
  ``quality.html``, their JSON and ``summary.json``).
- A **Drift report** extra link on the ``report`` task of every ``monitor_<model>`` run opens that run's
  drift report (from the run's logical date; empty until the report exists).
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

REPORT_FILES = {"drift.html", "drift.json", "quality.html", "quality.json", "summary.json"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RUN_DAY = re.compile(r"__(\d{4}-\d{2}-\d{2})T")


class DriftReportLink(BaseOperatorLink):
    """The drift report of a ``monitor_<model>`` run's ``report`` task (empty for every other task)."""

    name = "Drift report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        """Resolved by the API server from the task key: the monitored day is the run's logical date."""
        if not ti_key.dag_id.startswith("monitor_") or ti_key.task_id != "report":
            return ""
        day = _logical_day(ti_key.dag_id, ti_key.run_id)
        if day is None:
            return ""
        from airflow_mlops.settings import get_settings

        model = ti_key.dag_id.removeprefix("monitor_")
        if not (get_settings().home / "reports" / model / f"date={day}" / "drift.html").is_file():
            return ""
        return f"/mlops/reports/{model}/{day}/drift.html"


def _logical_day(dag_id: str, run_id: str) -> str | None:
    """The logical date (ISO day) of a run, from the metadata database (or the run id of a scheduled run)."""
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            logical = session.scalar(
                select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
        if logical is not None:
            return logical.date().isoformat()
    except Exception:  # no database here: fall back on the run id
        log.debug("no metadata database to read the day of %s %s from", dag_id, run_id, exc_info=True)
    match = _RUN_DAY.search(run_id)
    return match.group(1) if match else None


def _reports_app() -> Any:
    """The report files behind the "Drift report" link, behind Airflow's own authentication and DAG access check.

    Airflow does not authenticate plugin apps by itself: every route here depends on
    :func:`_reports_dependency`, Airflow's ``requires_access_dag`` for the runs of ``monitor_<model>``. The caller
    is the user of the request's bearer token or, from the UI, of its session cookie; no credential gets 401, an
    invalid token 403 (Airflow's answers), and so does a user the auth manager does not allow to read those runs.
    """
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    from airflow_mlops.settings import get_settings

    app = FastAPI(title="airflow-mlops reports", docs_url=None, redoc_url=None)

    @app.get("/reports/{model}/{day}/{name}", dependencies=[Depends(_reports_dependency())])
    def report(model: str, day: str, name: str) -> FileResponse:
        """One report file of a monitored day."""
        if not _NAME.match(model) or not _DAY.match(day) or name not in REPORT_FILES:
            raise HTTPException(status_code=404, detail="no such report")
        path = get_settings().home / "reports" / model / f"date={day}" / name
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"no {name} for {model} on {day}; has monitor_{model} run?")
        return FileResponse(path)

    return app


def _reports_dependency() -> Any:
    """Airflow's access check for reading the runs of ``monitor_<model>`` (the model of the request's path).

    The user is resolved by Airflow's ``GetUserDep`` (bearer token, else the UI's session cookie). The annotations
    are set as objects: this module's annotations are strings (``from __future__ import annotations``), which
    FastAPI could not resolve for names imported here, inside the function.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from fastapi import Request

    def may_read_reports(request, user):  # type: ignore[no-untyped-def]
        model = request.path_params.get("model", "")
        requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=f"monitor_{model}")(request, user)

    may_read_reports.__annotations__ = {"request": Request, "user": GetUserDep, "return": None}
    return may_read_reports


class MlopsPlugin(AirflowPlugin):
    name = "airflow_mlops"
    global_operator_extra_links: ClassVar[list[Any]] = [DriftReportLink()]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": _reports_app(), "url_prefix": "/mlops", "name": "airflow-mlops reports"}
    ]
