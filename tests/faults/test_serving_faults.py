"""Serving on a bad day: the model server killed under traffic behind the router, and a rollout under load.

A real champion (14 January 2013 days, trained, packaged as a bento) is deployed on the ``local`` target:
``bentoml serve`` behind the router, both started here on free ports and stopped by process id. Four clients keep
the router busy with real flights while the fault happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import httpx
import psutil
import pytest
import redis

from airflow_mlops import registry
from airflow_mlops.deploy.local import alive, start_bento_server, stop_tree
from airflow_mlops.endpoint_auth import TOKEN_VARIABLE
from airflow_mlops.features import materialize_day
from airflow_mlops.packaging import package
from airflow_mlops.pipeline import deploy_bento, smoke_and_commit
from airflow_mlops.processes import free_port
from airflow_mlops.settings import Settings, load_settings
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import fresh_postgres_database
from tests.integration.test_feast import REDIS_DB, REDIS_PORT
from tests.integration.test_serving import MODEL, Served, auth, flights, flights_payload, served
from tests.unit.test_training import DAYS, WINDOW_END

__all__ = ["served"]  # the module-scoped fixture of the serving tests: a home, a champion and its bento

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning"),
]

#: What a client waits at most: an answer, even an error, must come well before.
CLIENT_TIMEOUT = 20.0
CLIENTS = 4


@dataclass
class Traffic:
    """What the clients saw: per answer, (time sent, seconds taken, status or exception name, version)."""

    answers: list[tuple[float, float, str, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def since(self, start: float) -> list[tuple[float, float, str, int | None]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= start]


@contextlib.contextmanager
def steady_load(url: str) -> Generator[Traffic]:
    """``CLIENTS`` threads posting one real flight each, back to back, until the block ends."""
    body = flights_payload(flights(1))
    traffic, stop = Traffic(), threading.Event()

    def client() -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT, headers=auth()) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post(f"{url}/predict", json=body)
                    status = str(response.status_code)
                    version = response.json()["predictions"][0]["model_version"] if status == "200" else None
                    if status not in ("200", "502", "503", "504"):
                        status += f" {response.text[:100]}"
                except httpx.HTTPError as exc:
                    status, version = type(exc).__name__, None
                with traffic.lock:
                    traffic.answers.append((sent, time.monotonic() - sent, status, version))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        yield traffic
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)


def deploy(served: Served, bento: dict[str, object]) -> dict[str, object]:
    """Stage, smoke-test and commit ``bento`` on the local target (the train DAG's deploy and smoke_test)."""
    staged = deploy_bento(MODEL, bento, settings=served.settings)
    return smoke_and_commit(MODEL, staged, served.prepared, settings=served.settings)["deployment"]


def p99(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=100)[98] if len(seconds) >= 2 else max(seconds, default=0.0)


def server_processes(pid: int) -> list[psutil.Process]:
    """The bento server's processes: BentoML's arbiter (``pid``) and the workers it spawned."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_model_server_killed_under_traffic_the_router_answers_502_at_once_and_the_next_deployment_serves(
    served: Served, observed: Callable[[str, str, str], None]
) -> None:
    deployment = deploy(served, served.bento.to_dict())
    url, pid = deployment["details"]["url"], deployment["details"]["server"]["pid"]
    workers = server_processes(pid)[1:]
    assert workers, "bentoml serve started no worker process"

    with steady_load(url) as traffic:
        time.sleep(2)
        # 1. The API worker killed (an OOM kill): BentoML's arbiter starts a new one, nobody else acts.
        worker_killed = time.monotonic()
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)
        deadline = worker_killed + 120
        while time.monotonic() < deadline and not any(
            a[2] == "200" for a in traffic.since(worker_killed + 0.2) if a[0] > worker_killed + 0.5
        ):
            time.sleep(0.2)
        worker_back = time.monotonic()
        arbiter_survived = alive(pid)
        time.sleep(1)
        # 2. Every process of the server killed at once (the machine or its container gone).
        killed_at = time.monotonic()
        for process in reversed(server_processes(pid)):
            os.kill(process.pid, signal.SIGKILL)
        time.sleep(3)
        redeploy_at = time.monotonic()
        again = deploy(served, served.bento.to_dict())
        resumed_at = time.monotonic()
        time.sleep(2)

    unclear = [a for a in traffic.answers if a[2] not in ("200", "502", "503", "504")]
    assert unclear == [], f"answers that were neither 200 nor a clear 502/503/504: {unclear[:5]}"
    before = [a for a in traffic.answers if a[0] < worker_killed - 0.5]
    assert before and all(a[2] == "200" for a in before)
    respawn = [a for a in traffic.answers if worker_killed <= a[0] < worker_back]
    assert worker_back < deadline, "the arbiter did not bring a worker back within 120 s"
    assert arbiter_survived, "the worker's death took BentoML's arbiter down"

    assert not alive(pid)
    down = [a for a in traffic.since(killed_at + 0.5) if a[0] < redeploy_at]
    assert down, "no request was sent while the model server was down"
    statuses = {a[2] for a in down}
    assert statuses <= {"502", "503"}, f"while the model server was down the router answered {statuses}"
    slowest_error = max(a[1] for a in down)
    assert slowest_error < CLIENT_TIMEOUT / 2, f"an error answer took {slowest_error:.1f} s"
    after = [a for a in traffic.answers if a[0] >= resumed_at]
    assert after and all(a[2] == "200" for a in after), {a[2] for a in after}
    assert again["details"]["server"]["pid"] != pid

    refused = sum(a[2] != "200" for a in respawn)
    observed(
        "model server's worker killed (SIGKILL) under traffic",
        "BentoML's arbiter starts a new worker; the router answers 502/503 meanwhile, never hangs",
        f"serving again after {worker_back - worker_killed:.1f} s with no action; {refused} of {len(respawn)} "
        "requests meanwhile got 502/503",
    )
    observed(
        "model server killed (SIGKILL, every process) under traffic behind the router",
        "the router answers 502/503 at once, never hangs; the next deployment serves",
        f"{len(down)} requests while it was down, all {'/'.join(sorted(statuses))}, slowest in "
        f"{slowest_error * 1000:.0f} ms; redeployed (stage, smoke test, switch) in {resumed_at - redeploy_at:.1f} s; "
        f"{len(after)} requests after it, all 200",
    )


def test_a_rollout_under_steady_load_fails_no_request(
    served: Served, observed: Callable[[str, str, str], None]
) -> None:
    first = deploy(served, served.bento.to_dict())
    url = first["details"]["url"]
    second = registry.train(MODEL, WINDOW_END, force=True, settings=served.settings)
    bento2 = package(served.spec, second.ref, settings=served.settings)

    with steady_load(url) as traffic:
        time.sleep(2)
        started = time.monotonic()
        deploy(served, bento2.to_dict())
        switched = time.monotonic()
        time.sleep(2)

    failed = [a for a in traffic.answers if a[2] != "200"]
    assert failed == []
    versions = {a[3] for a in traffic.answers}
    assert {served.champion.version, second.ref.version} <= versions
    during = [a[1] for a in traffic.answers if started <= a[0] <= switched]
    steady = [a[1] for a in traffic.answers if a[0] < started]
    observed(
        "rollout: a new version deployed and switched under steady load",
        "zero failed requests",
        f"{len(traffic.answers)} requests from {CLIENTS} clients, 0 failed; during the rollout "
        f"({switched - started:.1f} s, {len(during)} requests) p99 {p99(during) * 1000:.0f} ms, before it p99 "
        f"{p99(steady) * 1000:.0f} ms",
    )


@pytest.fixture
def production_feast(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, FaultProxy]]:
    """Feast's production profile for the served home: the registry in a fresh PostgreSQL database, the online
    store in the machine's Redis (a database and a Feast project of this test's own) behind a :class:`FaultProxy`;
    the days materialized into it. The variables stay set, so a bento server started here serves from it."""
    suffix = uuid.uuid4().hex[:10]
    project = f"mlops_fault_{suffix}"
    proxy = FaultProxy(REDIS_PORT).start()
    with fresh_postgres_database() as registry_url:
        variables = {
            "MLOPS_PROFILE": "production",
            "MLOPS_FEAST_REGISTRY_URL": registry_url,
            "MLOPS_FEAST_REDIS_URL": f"127.0.0.1:{proxy.port},db={REDIS_DB}",
            "MLOPS_FEAST_PROJECT": project,
            "MLOPS_PREDICTION_LOG_URL": f"file://{served.settings.home / 'predictions-production'}",
            TOKEN_VARIABLE: served.settings.endpoint_token(),
        }
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        try:
            for day in DAYS:
                materialize_day("flights", day, settings=settings)
            yield settings, proxy
        finally:
            proxy.stop()
            client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=REDIS_DB)
            for key in client.scan_iter(match=b"*" + project.encode()):
                client.delete(key)
            client.close()


def test_online_store_unreachable_gives_503_with_the_reason_and_serving_recovers_without_restart(
    served: Served, production_feast: tuple[Settings, FaultProxy], observed: Callable[[str, str, str], None]
) -> None:
    settings, proxy = production_feast
    record = start_bento_server(served.bento.tag, free_port(), settings, name="online-store-fault")
    url, body = record["url"], flights_payload(flights(3))
    seen: dict[str, list[tuple[int, float, str]]] = {}
    try:
        with httpx.Client(timeout=CLIENT_TIMEOUT, headers=auth()) as http:

            def ask(phase: str, times: int) -> None:
                for _ in range(times):
                    sent = time.monotonic()
                    response = http.post(f"{url}/predict", json=body)
                    seen.setdefault(phase, []).append((response.status_code, time.monotonic() - sent, response.text))

            ask("up", 3)
            proxy.set_mode("blackhole")  # Redis stops answering: reads wait for the socket timeout
            ask("hanging", 3)
            proxy.set_mode("refuse")  # Redis gone: connections refused
            ask("refused", 3)
            proxy.set_mode("pass")
            ask("back", 3)
    finally:
        stop_tree(record["pid"])

    assert [s for s, _, _ in seen["up"]] == [200] * 3, seen["up"]
    assert [s for s, _, _ in seen["back"]] == [200] * 3, seen["back"]  # the same server process, no restart
    for phase in ("hanging", "refused"):
        for status, seconds, text in seen[phase]:
            assert status == 503, f"{phase}: {status} {text[:300]}"
            assert "online store" in text, text
            assert seconds < CLIENT_TIMEOUT / 2, f"{phase}: the 503 took {seconds:.1f} s"
    slowest = {phase: max(s for _, s, _ in seen[phase]) for phase in ("hanging", "refused")}
    reason = json.loads(seen["refused"][0][2]).get("error", seen["refused"][0][2])

    observed(
        "online store (Redis, production profile) unreachable while serving: it hangs, then refuses connections",
        "a clear 503 with the reason within the request timeout, never a hang; recovery without restart",
        f"Redis hanging: 503 in at most {slowest['hanging']:.1f} s (the socket timeout); refusing: 503 in at most "
        f"{slowest['refused'] * 1000:.0f} ms, `{str(reason)[:100]}`; back: 200 from the same server process",
    )
