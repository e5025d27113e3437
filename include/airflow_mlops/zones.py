"""Zones and partitions: where every day of every dataset's tables lives, and the one atomic write.

A leaf module (standard library only; pyarrow is imported inside the writer): every stage asks it for
paths, so the layout is written once. Each zone (``Settings.landing_dir``, ``validated_dir``,
``features_dir``) holds one folder per dataset, one per table, one Hive-style partition per day::

    <zone>/<dataset>/<table>/date=YYYY-MM-DD/part-0.parquet

Keyed by dataset first, so two datasets with a table of the same name never touch each other's files.
DuckDB, Feast's offline store and pandas read the layout as it is.

Writes go to a hidden file next to their target and are renamed into place (``os.replace``), so a reader
never sees half a file and a failed write leaves the previous file as it was. A write the file system refuses
(a full disk, a read-only mount) raises an ``OSError`` that names the target and, for a full disk, the space
left; a process killed mid-write leaves at most a hidden ``.<name>.<hex>.tmp`` file, which no reader sees.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PART_FILE = "part-0.parquet"


def table_dir(zone_dir: Path, dataset: str, table: str) -> Path:
    """The folder of one table of ``dataset`` in a zone: its ``date=`` partitions live below it."""
    return zone_dir / dataset / table


def partition_path(zone_dir: Path, dataset: str, table: str, day: date) -> Path:
    """The file of ``table`` of ``dataset`` for ``day`` in a zone."""
    return table_dir(zone_dir, dataset, table) / f"date={day.isoformat()}" / PART_FILE


def partition_days(zone_dir: Path, dataset: str, table: str) -> list[date]:
    """The days that have a file of ``table`` in a zone, oldest first (hidden temporary files ignored)."""
    folder = table_dir(zone_dir, dataset, table)
    if not folder.is_dir():
        return []
    return sorted(date.fromisoformat(p.parent.name.removeprefix("date=")) for p in folder.glob(f"date=*/{PART_FILE}"))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks (landed partitions, feature tables, bento archives)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def aside(path: Path, suffix: str = "tmp") -> Path:
    """A hidden, unique name next to ``path`` (same folder, so a rename onto ``path`` is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.{suffix}")


def _refused(exc: OSError, path: Path) -> OSError:
    """``exc`` again, its message naming the file being written (and the space left, when the disk is full)."""
    detail = f"cannot write {path}: {exc.strerror or exc}"
    if exc.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        detail += f" ({free:,} bytes free on its file system)" if free is not None else ""
    return OSError(exc.errno, detail)


def write_text_atomic(text: str, path: Path, *, private: bool = False) -> None:
    """Write ``text`` (UTF-8) next to ``path`` and rename it into place.

    ``private``: the file is created with mode 0600 (secrets), so it is never readable by others, not even
    for the moment before a ``chmod``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _refused(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet_aside(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to a hidden temporary file next to ``path``; return the temporary file.

    For writes of several files that must land together: write each aside, then rename them all.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(path)
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp, compression="zstd")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _refused(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` next to ``path`` and rename it into place, so readers never see half a file."""
    os.replace(write_parquet_aside(frame, path), path)


def write_parquet_together(files: Mapping[Path, pd.DataFrame]) -> None:
    """Write several files so they land together: all written aside first, then all renamed into place.

    If any write fails, the temporary files are removed and every target stays as it was.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, frame in files.items():
            staged.append((write_parquet_aside(frame, path), path))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
