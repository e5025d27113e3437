"""The disk full while a day lands: the day fails clearly, nothing landed earlier is damaged.

The home's data folder is a small tmpfs mounted for the test (``mount -t tmpfs -o size=...``; it needs the right
to mount, which CI's machine gives: elsewhere the test is skipped and says why). One real day lands; a filler file
then takes all but a few kilobytes; the next day's landing must fail naming the day and the full disk, leave the
first day byte for byte as it was, leave no visible file of its own, and land once the space is back.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Generator
from datetime import date
from pathlib import Path

import pytest

from airflow_mlops.ingest import land_partition
from airflow_mlops.settings import Settings
from airflow_mlops.zones import file_sha256
from tests.unit.test_features import make_home

FIRST, SECOND = date(2013, 1, 2), date(2013, 1, 3)
SIZE = "4m"
#: What the filler leaves free: less than one landed day needs (about 35 KB of parquet here).
LEFT_FREE = 8 * 1024


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Generator[None]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path, leave: int) -> Path:
    """A file that takes all of ``where``'s free space but ``leave`` bytes."""
    filler = where / "filler.bin"
    free = shutil.disk_usage(where).free
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def landed_files(settings: Settings) -> dict[str, str]:
    """Every visible landed file (relative path) with its sha256."""
    root = settings.landing_dir
    return {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*.parquet"))
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_a_full_disk_fails_the_day_clearly_and_damages_nothing_landed(
    tmp_path: Path, nyc_cache_dir: Path, observed: Callable[[str, str, str], None]
) -> None:
    settings = make_home(tmp_path, nyc_cache_dir)
    with small_tmpfs(settings.data_dir):
        land_partition("flights", FIRST, settings=settings)
        before = landed_files(settings)
        assert before and all(f"date={FIRST.isoformat()}" in path for path in before)

        filler = fill(settings.data_dir, LEFT_FREE)
        free = shutil.disk_usage(settings.data_dir).free
        with pytest.raises(OSError) as failure:
            land_partition("flights", SECOND, settings=settings)
        message = str(failure.value).replace(f"{settings.home}/", "")
        assert "No space left on device" in message or "ENOSPC" in message or failure.value.errno == 28, message
        assert SECOND.isoformat() in message, f"the error does not name the day: {message}"

        assert landed_files(settings) == before  # the first day byte for byte, no file of the second visible
        hidden = [p for p in settings.landing_dir.rglob(".*") if p.is_file()]
        assert hidden == [], f"temporary files left behind: {hidden}"

        filler.unlink()
        land_partition("flights", SECOND, settings=settings)
        after = landed_files(settings)
        assert {k: v for k, v in after.items() if f"date={FIRST.isoformat()}" in k} == before
        assert any(f"date={SECOND.isoformat()}" in k for k in after)

    observed(
        "disk full while a day lands (a 4 MB tmpfs, filled)",
        "the day fails clearly; nothing landed earlier is damaged",
        f"{free // 1024} KB free: `{type(failure.value).__name__}: {message.splitlines()[0][:120]}`; "
        f"{len(before)} files of {FIRST} unchanged (sha256), no file of {SECOND} visible, no temp file left; "
        "landed once the space was back",
    )
