"""One helper: an exclusive advisory lock on a file, shared by every process of a state folder."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Generator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Generator[None]:
    """Hold ``fcntl.flock(LOCK_EX)`` on ``path`` (created if missing, its folder too) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
