"""The ``local`` deploy target: bento servers on this machine behind one stable URL.

The stable URL (``http://127.0.0.1:<deploy.local.port>``, 3000 by default) is the router
(:mod:`airflow_mlops.router`), which forwards to the *active* bento server named in the state file
``$MLOPS_HOME/run/serve/<model>.json``. A deployment:

1. :meth:`LocalTarget.deploy` starts ``bentoml serve <bento>`` on a free port beside the active one and waits
   for ``/readyz`` (the model loaded, the service up); the router is started first if it is not running.
2. The smoke test calls the new server directly (:meth:`LocalTarget.invoke`).
3. :meth:`LocalTarget.commit` switches the router to the new server (atomic replace of the state file), waits
   until the old server has no request pending, then stops it. No request is lost during the switch.
   :meth:`LocalTarget.rollback` stops the new server instead; the old one never stopped serving.

Servers run in their own sessions, so they outlive the Airflow task that started them; ``airflow-mlops
endpoint status|stop`` shows and stops them. Router and servers require the settings' endpoint token
(:meth:`~airflow_mlops.settings.Settings.endpoint_token`, see :mod:`airflow_mlops.endpoint_auth`), which every
call made here sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess  # ruff: ignore[suspicious-subprocess-import] - starts the project's own servers and tools, argument lists only
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from airflow_mlops.deploy.base import Bento, DeployError, Deployment
from airflow_mlops.endpoint_auth import TOKEN_VARIABLE, auth_headers
from airflow_mlops.model_files import SAFE_ENV
from airflow_mlops.router import router_id
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec
from airflow_mlops.zones import write_text_atomic

log = logging.getLogger(__name__)

READY_TIMEOUT = 180.0
DRAIN_TIMEOUT = 60.0


def state_file(settings: Settings, model: str) -> Path:
    return settings.run_dir / "serve" / f"{model}.json"


def read_state(settings: Settings, model: str) -> dict[str, Any]:
    """The local endpoint's state: ``router`` and ``active`` server (pid, port, url, bento, version)."""
    path = state_file(settings, model)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise DeployError(f"local endpoint state {path} is not JSON ({exc}); remove it and redeploy") from exc


def write_state(settings: Settings, model: str, state: dict[str, Any]) -> None:
    """Replace the state file atomically (the router never reads half a file)."""
    write_text_atomic(json.dumps(state, indent=2), state_file(settings, model))


def alive(pid: int | None) -> bool:
    """True when process ``pid`` exists (and is not a zombie)."""
    if not pid:
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_tree(pid: int, timeout: float = 30.0) -> None:
    """Stop process ``pid`` and all its descendants (BentoML's circus arbiter spawns workers in new sessions)."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, remaining = psutil.wait_procs(procs, timeout=timeout)
    for proc in remaining:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(remaining, timeout=5)


def _server_env(settings: Settings) -> dict[str, str]:
    """The environment of a bento server or router started here (also ``airflow-mlops serve``)."""
    from airflow_mlops.packaging import bentoml_home

    env = dict(os.environ)
    env["BENTOML_HOME"] = str(bentoml_home(settings))
    env["MLOPS_HOME"] = str(settings.home)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("OMP_NUM_THREADS", "1")  # as the bento's container sets it
    env.update(SAFE_ENV)  # as the bento's container sets it: models load through airflow_mlops.model_files only
    env.pop("BENTOML_PORT", None)
    env[TOKEN_VARIABLE] = settings.endpoint_token()
    return env


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(  # ruff: ignore[subprocess-without-shell-equals-true] - bentoml/router from this venv, arguments built here
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float, path: str, headers: dict[str, str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(
                f"server for {url} exited with code {proc.returncode}; log {log_path}:\n{_tail(log_path)}"
            )
        try:
            if httpx.get(url + path, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DeployError(f"server for {url} not ready within {timeout:.0f} s; log {log_path}:\n{_tail(log_path)}")


def start_bento_server(bento_tag: str, port: int, settings: Settings, *, name: str) -> dict[str, Any]:
    """Start ``bentoml serve <bento_tag>`` on ``127.0.0.1:port``; return its record once ``/readyz`` answers."""
    from airflow_mlops.packaging import use_bentoml_home

    use_bentoml_home(settings)
    log_path = settings.run_dir / "serve" / f"{name}-{port}.log"
    bentoml = Path(sys.executable).with_name("bentoml")
    args = [str(bentoml), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)]
    proc = _spawn(args, log_path, _server_env(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log_path, READY_TIMEOUT, "/readyz", {})
    except DeployError:
        stop_tree(proc.pid)
        raise
    return {"pid": proc.pid, "port": port, "url": url, "bento_tag": bento_tag, "log": str(log_path)}


def ensure_router(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """The router of ``spec``'s stable URL, started if it is not running."""
    state = read_state(settings, spec.name)
    router = state.get("router") or {}
    if alive(router.get("pid")):
        return router
    port = spec.deploy.local.port
    host = spec.deploy.local.host
    if not state:
        write_state(settings, spec.name, {})
    log_path = settings.run_dir / "serve" / f"{spec.name}-router.log"
    args = [sys.executable, "-m", "airflow_mlops.router", "--state", str(state_file(settings, spec.name))]
    proc = _spawn([*args, "--host", host, "--port", str(port)], log_path, _server_env(settings))
    url = f"http://{host}:{port}"
    headers = auth_headers(settings.endpoint_token())
    try:
        _wait_ready(url, proc, log_path, 60, "/-/router", headers)
        answering = httpx.get(f"{url}/-/router", headers=headers, timeout=5).json().get("router")
        if proc.poll() is not None or answering != router_id(state_file(settings, spec.name)):
            raise DeployError(
                f"port {port} answers for another router ({answering}), not this model's; stop it or set "
                f"deploy.local.port in the spec"
            )
    except DeployError as exc:
        stop_tree(proc.pid)
        raise DeployError(f"{spec.name}: the router for the stable URL {url} did not start: {exc}") from exc
    router = {"pid": proc.pid, "port": port, "url": url, "log": str(log_path)}
    state = read_state(settings, spec.name)
    write_state(settings, spec.name, {**state, "router": router})
    return router


def _free_port() -> int:
    from airflow_mlops.processes import free_port

    return free_port()


class LocalTarget:
    """See the module doc."""

    name = "local"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.headers = auth_headers(self.settings.endpoint_token())

    def deploy(self, spec: ModelSpec, bento: Bento) -> Deployment:
        router = ensure_router(spec, self.settings)
        active = read_state(self.settings, spec.name).get("active")
        previous = active if active and alive(active.get("pid")) else None
        server = start_bento_server(bento.tag, _free_port(), self.settings, name=spec.name)
        server["version"] = bento.version
        log.info("%s: staged bento %s (version %s) at %s", spec.name, bento.tag, bento.version, server["url"])
        return Deployment(
            target=self.name,
            model=spec.name,
            version=bento.version,
            bento_tag=bento.tag,
            endpoint=server["url"],
            previous=previous,
            details={"server": server, "router": router, "url": router["url"]},
        )

    def invoke(self, deployment: Deployment, payload: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{deployment.endpoint}/predict", json=payload, headers=self.headers, timeout=60)
        if response.status_code != 200:
            raise DeployError(
                f"POST {deployment.endpoint}/predict answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def commit(self, deployment: Deployment) -> Deployment:
        server = deployment.details["server"]
        state = read_state(self.settings, deployment.model)
        old = state.get("active")
        write_state(self.settings, deployment.model, {**state, "active": server})
        router_url = deployment.details["router"]["url"]
        try:
            self._wait_switched(router_url, server["url"])
        except Exception:
            write_state(self.settings, deployment.model, state)  # the old server stays the active one
            raise
        if old and old.get("pid") != server["pid"]:
            self._wait_drained(router_url, old["url"])
            stop_tree(old["pid"])
            log.info(
                "%s: stopped the previous server %s (version %s)", deployment.model, old["url"], old.get("version")
            )
        deployment.details["committed"] = True
        return deployment

    def rollback(self, deployment: Deployment) -> None:
        server = deployment.details.get("server") or {}
        state = read_state(self.settings, deployment.model)
        if (state.get("active") or {}).get("pid") == server.get("pid"):  # committed already: restore the old one
            raise DeployError(
                f"{deployment.model}: version {deployment.version} already serves; deploy the previous one"
            )
        if server.get("pid"):
            stop_tree(server["pid"])
        log.info(
            "%s: rolled back version %s; %s keeps serving", deployment.model, deployment.version, state.get("active")
        )

    def _router_status(self, router_url: str) -> dict[str, Any]:
        response = httpx.get(f"{router_url}/-/router", headers=self.headers, timeout=5)
        if response.status_code != 200:
            raise DeployError(f"GET {router_url}/-/router answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def _wait_switched(self, router_url: str, url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._router_status(router_url).get("active") == url:
                return
            time.sleep(0.05)
        raise DeployError(f"the router at {router_url} did not switch to {url} within 30 s")

    def _wait_drained(self, router_url: str, url: str) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            if not self._router_status(router_url).get("pending", {}).get(url):
                return
            time.sleep(0.05)
        log.warning("%s still had requests pending after %.0f s; stopping it anyway", url, DRAIN_TIMEOUT)


def status(model: str, settings: Settings | None = None) -> dict[str, Any]:
    """The local endpoint of ``model``: router and active server, each with ``running``."""
    settings = settings or get_settings()
    state = read_state(settings, model)
    return {
        role: {**record, "running": alive(record.get("pid"))}
        for role, record in state.items()
        if isinstance(record, dict) and record
    }


def stop(model: str, settings: Settings | None = None) -> list[str]:
    """Stop the router and the active server of ``model``; return what was stopped."""
    settings = settings or get_settings()
    stopped = []
    for role, record in read_state(settings, model).items():
        if isinstance(record, dict) and alive(record.get("pid")):
            stop_tree(int(record["pid"]))
            stopped.append(f"{role} {record.get('url')} (pid {record['pid']})")
    path = state_file(settings, model)
    if path.exists():
        path.unlink()
    return stopped


def restore(spec: ModelSpec, settings: Settings | None = None) -> dict[str, Any] | None:
    """Serve ``spec``'s ``@champion`` at its stable URL again (after ``make stop`` or a reboot).

    Nothing is done when the router and its active server still run. Otherwise the champion's bento (built
    when it was deployed, rebuilt from the registry if it is gone) starts behind the router, exactly as a
    deployment commits it; it passed its smoke test when it was promoted. Returns the active server's record
    (``url`` is the stable URL), or None when the model has no champion yet.
    """
    from airflow_mlops.packaging import package
    from airflow_mlops.registry import champion

    settings = settings or get_settings()
    state = read_state(settings, spec.name)
    router, active = state.get("router") or {}, state.get("active") or {}
    if alive(router.get("pid")) and alive(active.get("pid")):
        return {**active, "url": router["url"]}
    ref = champion(spec, settings)
    if ref is None:
        return None
    target = LocalTarget(settings)
    committed = target.commit(target.deploy(spec, package(spec, ref, settings=settings)))
    log.info("%s: version %s restored at %s", spec.name, committed.version, committed.details["url"])
    return {**committed.details["server"], "url": committed.details["url"]}
