"""Soak of the local endpoint: minutes of steady load, every answer logged, memory flat.

The same state as the endpoint benchmark (:func:`tests.benchmarks.bench_endpoint.prepare_state`: 20 real January
days, a champion, its bento; the home's embedded PostgreSQL holds the prediction log), one real ``bentoml serve``.

1. **Probe**: locust (``FastHttpUser``, keep-alive, no think time) for ``PROBE_SECONDS`` at each of
   ``PROBE_CONCURRENCY``; the soak runs at the highest concurrency whose p99 stays under ``MAX_P99_MS``.
2. **Soak**: ``BENCH_SOAK_SECONDS`` (default 180) at that concurrency. Per minute: requests, p50, p99, failures. The
   server's resident memory (its process tree, RSS) sampled every ``RSS_EVERY`` seconds.
3. **Count in = count out**: the requests the server answered with 200 (its own ``/metrics``) against the records
   of the prediction log, read back from PostgreSQL once the log has flushed.

Nothing here asserts: the figures go to the ``soak`` section of ``BENCHMARKS.md``.
Run: ``.venv/bin/python -m tests.benchmarks.run soak``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from airflow_mlops.endpoint_auth import auth_headers
from tests.benchmarks.bench_endpoint import (
    DAYS,
    MODEL,
    POOL_SIZE,
    Point,
    answered_by,
    check_route,
    isolated_environ,
    locust_round,
    logged_records,
    prepare_state,
    start_endpoint,
)
from tests.benchmarks.report import machine_info, write_section

NAME = "soak"
PROBE_CONCURRENCY = (4, 8, 16, 32)
PROBE_SECONDS = 15
MAX_P99_MS = 100.0
DEFAULT_SOAK_SECONDS = 180
RSS_EVERY = 5.0
FLUSH_WAIT = 10.0


def log(message: str) -> None:
    print(f"[{NAME}] {message}", flush=True)


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class RssSampler(threading.Thread):
    """(seconds since start, RSS bytes) of a process tree every ``RSS_EVERY`` seconds until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._halt.is_set():
            self.samples.append((time.monotonic() - started, tree_rss(self.pid)))
            self._halt.wait(RSS_EVERY)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join(timeout=RSS_EVERY * 2)
        return self.samples


def per_minute(out: Path) -> list[dict[str, Any]]:
    """Requests, p50, p99 and failures per minute of a locust samples file (by answer time)."""
    raw = json.loads(out.read_text())
    samples = [(s + rt / 1000, rt, ok) for s, rt, ok in raw["samples"] if s]
    first = min(d for d, _, _ in samples)
    minutes: dict[int, list[tuple[float, bool]]] = {}
    for done, rt, ok in samples:
        minutes.setdefault(int((done - first) // 60), []).append((rt, ok))
    rows = []
    for minute, answers in sorted(minutes.items()):
        times = sorted(rt for rt, ok in answers if ok)
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(answers),
                "p50": statistics.median(times) if times else float("nan"),
                "p99": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] if times else float("nan"),
                "failed": sum(not ok for _, ok in answers),
            }
        )
    return rows


def run(seconds: int | None = None) -> str:
    """Probe, soak, count; write the ``soak`` section of ``BENCHMARKS.md`` and return its markdown."""
    from airflow_mlops.deploy.local import stop_tree

    seconds = seconds or int(os.environ.get("BENCH_SOAK_SECONDS", DEFAULT_SOAK_SECONDS))
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    env = {"MLOPS_HOME": str(root / "mlops-home"), "MLOPS_MODELS_DIR": str(root / "models")}
    try:
        with isolated_environ(env):
            state = prepare_state(root)
            server = start_endpoint(state)
            try:
                headers = auth_headers(state.settings.endpoint_token())
                check_route(server.url, "/predict", state.bodies[0], 30, headers)
                probes = []
                for users in PROBE_CONCURRENCY:
                    point = Point("probe", users)
                    locust_round(point, server, "/predict", PROBE_SECONDS, state, root / f"probe-{users}.json")
                    probes.append(point)
                fitting = [p for p in probes if p.p99 < MAX_P99_MS and not p.failures]
                users = max((p.users for p in fitting), default=PROBE_CONCURRENCY[0])
                log(f"soak at concurrency {users} for {seconds} s")
                rss_start = tree_rss(server.pid)
                sampler = RssSampler(server.pid)
                sampler.start()
                soak = Point("soak", users)
                out = root / "soak.json"
                locust_round(soak, server, "/predict", seconds, state, out)
                rss = sampler.stop()
                rss_end = tree_rss(server.pid)
                minutes = per_minute(out)
                time.sleep(FLUSH_WAIT)  # the prediction log flushes every second, in the background
                answered = answered_by(server.url, headers)
                logged = logged_records(state)
            finally:
                stop_tree(server.pid)
    finally:
        from airflow_mlops.embedded_db import embedded

        embedded(Path(env["MLOPS_HOME"])).stop()
        shutil.rmtree(root, ignore_errors=True)

    mib = 1024 * 1024
    rss_values = [value for _, value in rss]
    lines = [
        "## Soak: the local endpoint under minutes of steady load",
        "",
        machine_info(),
        "",
        f"The endpoint benchmark's state (20 real January days, {MODEL} v{state.ref.version}, bento "
        f"`{state.bento.tag}`) under one real `bentoml serve`; load from locust (`FastHttpUser`, keep-alive, no think "
        f"time) with one real flight of {DAYS[-1]} per request (pool of {POOL_SIZE}, drawn at random). "
        f"Probes of {PROBE_SECONDS} s at "
        f"concurrency {', '.join(map(str, PROBE_CONCURRENCY))} pick the highest whose p99 stays under "
        f"{MAX_P99_MS:.0f} ms; the soak runs {seconds} s there. Memory: the server's process tree (RSS) every "
        f"{RSS_EVERY:.0f} s. Count in = count out: the 200s the server counted in its own `/metrics` (probes and "
        f"warm-up included) against the prediction log's records in PostgreSQL, read {FLUSH_WAIT:.0f} s after the "
        f"load stopped. Whole benchmark: {time.monotonic() - started:.0f} s.",
        "",
        "| probe concurrency | p50 (ms) | p99 (ms) | req/s | failed |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {p.users} | {p.p50:.1f} | {p.p99:.1f} | {p.throughput:.0f} | {p.failures} |" for p in probes],
        "",
        f"Soak at concurrency **{users}**: {len(soak.times_ms)} requests measured, p50 {soak.p50:.1f} ms, p99 "
        f"{soak.p99:.1f} ms, {soak.throughput:.0f} req/s, **{soak.failures} failed**.",
        "",
        "| minute | requests | p50 (ms) | p99 (ms) | failed |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {m['minute']} | {m['requests']} | {m['p50']:.1f} | {m['p99']:.1f} | {m['failed']} |" for m in minutes],
        "",
        f"Memory (server RSS): {rss_start / mib:.0f} MiB at the start, {rss_end / mib:.0f} MiB at the end "
        f"({(rss_end - rss_start) / mib:+.1f} MiB), between {min(rss_values) / mib:.0f} and "
        f"{max(rss_values) / mib:.0f} MiB over {len(rss_values)} samples.",
        "",
        f"Prediction log: **{logged} records of {answered} answers** "
        f"({'none lost' if logged == answered else f'{answered - logged} missing'}).",
    ]
    markdown = "\n".join(lines)
    write_section(NAME, markdown)
    log(f"done in {time.monotonic() - started:.0f} s; wrote the '{NAME}' section of BENCHMARKS.md")
    print(markdown)
    return markdown
