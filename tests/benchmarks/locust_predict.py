"""Locust user of the endpoint benchmark: each request posts one real flight, no think time.

Run by ``bench_endpoint`` as ``locust -f tests/benchmarks/locust_predict.py --headless -u N -r N -t 20s --host URL``
with three environment variables:

- ``BENCH_LOCUST_BODIES``: a JSON file holding a list of ``/predict`` bodies (one flight each, real validated rows);
- ``BENCH_LOCUST_PATH``: the route to post to (``/predict`` or ``/predict_batch``);
- ``BENCH_LOCUST_OUT``: where to write, when locust quits, every request as ``[start (epoch s), response time
  (ms, unrounded), ok]`` plus locust's own CPU time (locust rounds the response times of its statistics to whole
  milliseconds, too coarse for a few-millisecond endpoint), and the failures counted by message.

A response counts as ok when it is a 200 carrying a ``delay_probability``.
"""

from __future__ import annotations

import json
import os
import random
import resource
from collections import Counter
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

from airflow_mlops.endpoint_auth import TOKEN_VARIABLE, auth_headers

BODIES: list[bytes] = [json.dumps(b).encode() for b in json.loads(Path(os.environ["BENCH_LOCUST_BODIES"]).read_text())]
PATH = os.environ.get("BENCH_LOCUST_PATH", "/predict")
OUT = os.environ.get("BENCH_LOCUST_OUT")
# The endpoint's bearer token (the bare app ignores it), from the environment the benchmark sets.
HEADERS = {"Content-Type": "application/json", **auth_headers(os.environ.get(TOKEN_VARIABLE))}

_samples: list[tuple[float, float, bool]] = []
_errors: Counter[str] = Counter()


@events.request.add_listener
def _record(response_time: float, start_time: float | None = None, exception: Any = None, **_: Any) -> None:
    _samples.append((start_time or 0.0, response_time, exception is None))
    if exception is not None:
        _errors[str(exception)[:300]] += 1


@events.quitting.add_listener
def _dump(**_: Any) -> None:
    if OUT:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        Path(OUT).write_text(
            json.dumps({"samples": _samples, "errors": _errors, "cpu_s": usage.ru_utime + usage.ru_stime})
        )


class PredictUser(FastHttpUser):
    """One client with a keep-alive connection, posting back to back."""

    wait_time = constant(0)

    @task
    def predict(self) -> None:
        with self.client.post(PATH, data=random.choice(BODIES), headers=HEADERS, catch_response=True) as response:
            if response.status_code != 200 or b"delay_probability" not in (response.content or b""):
                response.failure(f"{response.status_code}: {(response.content or b'')[:200]!r}")
