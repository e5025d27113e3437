"""The local router's app in process: body limit, an identity that reveals no path, and a backend that dies."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from pathlib import Path

from starlette.testclient import TestClient

from airflow_mlops.body_limit import MAX_BODY_BYTES
from airflow_mlops.endpoint_auth import TOKEN_HEADER, auth_headers
from airflow_mlops.router import PROBE_INTERVAL, create_app, router_id


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


class _Backend(socketserver.ThreadingTCPServer):
    """A model server on loopback that either answers 200 or takes a request and closes without an answer."""

    daemon_threads = True
    allow_reuse_address = True
    answering = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[list[bytes]] = []  #: method and path of every request taken


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Backend)
        line = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):  # the headers; the bodies here are small
            pass
        server.seen.append(line.split(b" ")[:2])
        if server.answering:
            body = b'{"ok": true}'
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            self.wfile.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        # Not answering: the connection closes with the request taken and no answer, as a dying server's does.


def test_a_backend_that_dies_mid_request_gets_502_then_503_until_its_readyz_answers(tmp_path: Path) -> None:
    backend = _Backend()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    state = tmp_path / "router.json"
    state.write_text(json.dumps({"active": {"url": f"http://127.0.0.1:{backend.server_address[1]}", "version": 3}}))
    try:
        with TestClient(create_app(state)) as client:
            died = client.post("/predict", json={"rows": []})
            assert died.status_code == 502 and died.headers["retry-after"] == "1"
            assert died.json()["error"].startswith("model server closed the connection")
            assert backend.seen == [[b"POST", b"/predict"]]
            # Held out: the next request only probes /readyz, which does not answer, and gets 503 at once.
            held_out = client.post("/predict", json={"rows": []})
            assert held_out.status_code == 503 and "not answering" in held_out.json()["error"]
            assert held_out.headers["retry-after"] == "1"
            assert backend.seen[1:] == [[b"GET", b"/readyz"]]
            within = client.post("/predict", json={"rows": []})  # within PROBE_INTERVAL of the probe: not even that
            assert within.status_code == 503 and len(backend.seen) == 2
            backend.answering = True
            time.sleep(PROBE_INTERVAL + 0.1)
            back = client.post("/predict", json={"rows": []})  # probed, ready: forwarded again
            assert back.status_code == 200 and back.json() == {"ok": True}
            assert backend.seen[2:] == [[b"GET", b"/readyz"], [b"POST", b"/predict"]]
    finally:
        backend.shutdown()
        backend.server_close()
