"""Write benchmark results into ``BENCHMARKS.md``, one replaceable section per benchmark.

Each benchmark owns the text between ``<!-- bench:<name>:start -->`` and ``<!-- bench:<name>:end -->``
and replaces only that; sections of other benchmarks, and anything written outside the markers, stay
as they are. A missing file is created with a ``# Benchmarks`` header. Usage::

    from tests.benchmarks.report import machine_info, write_section

    write_section("my_bench", "## My bench\\n\\n" + machine_info() + "\\n\\n| ... |")

Standard library only, so any benchmark (and any interpreter) can import it cheaply.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"

HEADER = (
    "# Benchmarks\n\n"
    "Written by `make bench` (`.venv/bin/python -m tests.benchmarks.run`); each section is replaced by the "
    "benchmark that owns it. Benchmarks compare side by side in one run (ratios) and never fail the test suite.\n"
)

_NAME = re.compile(r"^[a-z0-9_.-]+$")


def _markers(name: str) -> tuple[str, str]:
    if not _NAME.match(name):
        raise ValueError(f"benchmark section name {name!r} must match {_NAME.pattern}")
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


@contextmanager
def _locked(path: Path) -> Generator[None]:
    """Serialize writers of ``path`` (benchmarks may run side by side) with an advisory lock.

    The lock file lives in the temporary folder, not in the checkout, so it never shows up in git.
    """
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"airflow-mlops-bench-{digest}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def replace_section(document: str, name: str, markdown: str) -> str:
    """``document`` with the section ``name`` set to ``markdown`` (appended if it has no such section)."""
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: block, document, count=1)
    return document.rstrip("\n") + "\n\n" + block + "\n"


def write_section(name: str, markdown: str, path: Path | None = None) -> None:
    """Replace (or append) the section ``name`` of ``BENCHMARKS.md`` with ``markdown``, atomically."""
    target = path or BENCHMARKS_MD
    with _locked(target):
        document = target.read_text(encoding="utf-8") if target.exists() else HEADER
        updated = replace_section(document, name, markdown)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(updated)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The checkout's commit, and whether files other than BENCHMARKS.md differ from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [line for line in git("status", "--porcelain").splitlines() if not line.endswith("BENCHMARKS.md")]
    return f"`{commit}`" + (" with uncommitted changes" if changed else "")


def machine_info() -> str:
    """One markdown line: date (UTC), commit, CPU count and model, memory, OS, Python and Airflow versions."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {now} on commit {_commit()}, {os.cpu_count()} CPU(s) ({_cpu_model()}), {_memory_gib()} RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"Airflow {_version('apache-airflow')}."
    )
