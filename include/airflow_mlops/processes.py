"""Processes and ports of the servers the project starts: the one place for a port probe and a stop.

A leaf module (standard library only), used by every runtime (Airflow, MLflow, the embedded PostgreSQL, the
bento servers and the router).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something listens on ``127.0.0.1:port`` (a bind the server would make fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def stop_process_group(pid: int, timeout: float = 60) -> None:
    """Stop a server the project started in its own session (process group ``pid``): SIGTERM, then SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):  # reap our child so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
