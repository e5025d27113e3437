"""The validation gate: a landed partition is either published to the validated zone or quarantined.

:func:`check_partition` validates a day's landed tables (:func:`airflow_mlops.validation.validate_partition`)
and then, for each table of the dataset:

* **pass**: copies the landed file into the validated zone, every table written aside first and renamed
  into place together, so feature building only ever reads complete, validated days::

      $MLOPS_DATA_DIR/validated/<table>/date=YYYY-MM-DD/part-0.parquet

* **fail**: moves the landed files into the quarantine zone with the validation result (JSON and the
  GX Data Docs HTML) and raises :class:`BatchRejected` with a readable summary. The validated zone, the
  feature tables and the online store are not touched, so whatever was good before stays as it was::

      $MLOPS_DATA_DIR/quarantine/<dataset>/date=YYYY-MM-DD/{<table>.parquet, result.json, <table>.html}

A delivery that cannot even be read (truncated, garbled, wrong format) is quarantined by the land step
with :func:`quarantine_unreadable`, as it arrived, under ``raw/`` of the same folder, and fails the same
way. A day that passes later (fixed delivery, or release) clears its quarantine folder.

After fixing a batch, :func:`release` moves it back to the landing zone and runs the gate again: it is
published if it now passes, or quarantined again with the new result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from airflow_mlops.datasets import get_datasets
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.validation import RESULT_FILE, ValidationError, ValidationReport, validate_partition
from airflow_mlops.zones import aside, partition_path

log = logging.getLogger(__name__)

#: Subfolder of a quarantine holding a delivery exactly as it arrived because it could not be read.
RAW_DIR = "raw"


class BatchRejected(RuntimeError):
    """A batch failed validation (or could not be read) and was quarantined; the message says why and where."""

    def __init__(self, message: str, quarantine: Path) -> None:
        super().__init__(message)
        self.quarantine = quarantine


@dataclass(frozen=True)
class Published:
    """A partition that passed the gate; ``extra`` is what the ``validated`` asset event carries."""

    dataset: str
    partition: str
    rows: dict[str, int]
    paths: dict[str, str]
    result_path: str
    docs: dict[str, str]

    @property
    def extra(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "partition": self.partition,
            "rows": self.rows,
            "paths": self.paths,
            "validation_result": self.result_path,
        }


def quarantine_path(settings: Settings, dataset: str, day: date) -> Path:
    """The quarantine folder of one partition."""
    return settings.quarantine_dir / dataset / f"date={day.isoformat()}"


def _layout_tables(dataset: str) -> tuple[str, ...]:
    known = get_datasets()
    layout = known.get(dataset)
    if layout is None:
        raise ValidationError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(known)) or 'none'}")
    return layout.table_names


def _replace_dir(staging: Path, target: Path) -> None:
    """Put the folder ``staging`` in place of ``target`` (renames only; the old folder is removed after)."""
    old = None
    if target.exists():
        old = aside(target, "old")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _stage_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = aside(target)
    staging.mkdir()
    return staging


def publish(dataset: str, day: date, report: ValidationReport, *, settings: Settings | None = None) -> Published:
    """Copy a validated day from the landing zone into the validated zone, all tables or none."""
    settings = settings or get_settings()
    staged: list[tuple[Path, Path]] = []
    try:
        for table in _layout_tables(dataset):
            source = partition_path(settings.landing_dir, dataset, table, day)
            target = partition_path(settings.validated_dir, dataset, table, day)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = aside(target)
            staged.append((tmp, target))
            shutil.copyfile(source, tmp)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    stale = quarantine_path(settings, dataset, day)
    if stale.exists():  # an earlier rejected delivery of this day, now superseded by a good one
        shutil.rmtree(stale)
        log.info("removed the superseded quarantine %s", stale)
    rows = {table.table: int(table.rows or 0) for table in report.tables}
    log.info("published %s date=%s to %s: %s", dataset, day, settings.validated_dir, rows)
    return Published(
        dataset=dataset,
        partition=day.isoformat(),
        rows=rows,
        paths={table: str(target) for table, (_, target) in zip(_layout_tables(dataset), staged, strict=True)},
        result_path=report.result_path,
        docs=dict(report.docs),
    )


def quarantine(dataset: str, day: date, report: ValidationReport, *, settings: Settings | None = None) -> Path:
    """Move a rejected day's landed files into quarantine with its validation result; return the folder."""
    settings = settings or get_settings()
    target = quarantine_path(settings, dataset, day)
    staging = _stage_dir(target)
    for table in _layout_tables(dataset):
        landed = partition_path(settings.landing_dir, dataset, table, day)
        if landed.exists():
            os.replace(landed, staging / f"{table}.parquet")
        with contextlib.suppress(OSError):  # the day's folder, if now empty
            landed.parent.rmdir()
    result = Path(report.result_path)
    if result.exists():
        shutil.copyfile(result, staging / RESULT_FILE)
    for doc in report.docs.values():
        if Path(doc).exists():
            shutil.copyfile(doc, staging / Path(doc).name)
    _replace_dir(staging, target)
    log.warning("quarantined %s date=%s in %s", dataset, day, target)
    return target


def quarantine_unreadable(
    dataset: str,
    day: date,
    table: str,
    raw: bytes,
    filename: str,
    reason: str,
    *,
    settings: Settings | None = None,
) -> Path:
    """Quarantine a delivered file that could not be read at all, with a result saying why."""
    settings = settings or get_settings()
    target = quarantine_path(settings, dataset, day)
    staging = _stage_dir(target)
    (staging / RAW_DIR).mkdir()
    (staging / RAW_DIR / filename).write_bytes(raw)
    result = {
        "report": {
            "dataset": dataset,
            "partition": day.isoformat(),
            "success": False,
            "failures": [{"table": table, "expectation": "readable_file", "message": reason}],
        }
    }
    (staging / RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    _replace_dir(staging, target)
    log.warning("quarantined unreadable %s (%s) of %s date=%s in %s", filename, reason, dataset, day, target)
    return target


def check_partition(dataset: str, day: date, *, settings: Settings | None = None) -> Published:
    """Validate a landed day; publish it, or quarantine it and raise :class:`BatchRejected`."""
    settings = settings or get_settings()
    report = validate_partition(dataset, day, settings=settings)
    if report.success:
        return publish(dataset, day, report, settings=settings)
    where = quarantine(dataset, day, report, settings=settings)
    raise BatchRejected(
        f"{report.summary_text()}\n"
        f"  quarantined in {where}; the validated zone, features and online store were not touched.\n"
        "  Fix the delivery and clear this run, or fix the files there and run "
        f"`airflow-mlops quarantine release {dataset} {day.isoformat()}`.",
        where,
    )


@dataclass(frozen=True)
class QuarantinedBatch:
    """One quarantined partition and why it is there."""

    dataset: str
    partition: str
    path: str
    files: tuple[str, ...]
    failures: tuple[str, ...]


def list_quarantine(*, settings: Settings | None = None) -> list[QuarantinedBatch]:
    """Every quarantined partition, oldest day first, with the failed expectations of its result."""
    settings = settings or get_settings()
    batches = []
    for folder in sorted(settings.quarantine_dir.glob("*/date=*")):
        failures: list[str] = []
        try:
            result: dict[str, Any] = json.loads((folder / RESULT_FILE).read_text())
            for failure in result.get("report", {}).get("failures", []):
                where = ".".join(str(p) for p in (failure.get("table"), failure.get("column")) if p)
                failures.append(f"{where}: {failure.get('expectation')} {failure.get('message', '')}".strip())
        except (OSError, ValueError):
            failures.append("no readable result.json")
        batches.append(
            QuarantinedBatch(
                dataset=folder.parent.name,
                partition=folder.name.removeprefix("date="),
                path=str(folder),
                files=tuple(
                    sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in (".parquet", ".csv"))
                ),
                failures=tuple(failures),
            )
        )
    return batches


def release(dataset: str, day: date, *, settings: Settings | None = None) -> Published:
    """Put a fixed quarantined batch back through the gate: publish it, or quarantine it again.

    The quarantined ``<table>.parquet`` files (fixed in place by the user) go back to the landing zone
    and are validated again. Raises :class:`BatchRejected` if they still fail.
    """
    settings = settings or get_settings()
    folder = quarantine_path(settings, dataset, day)
    if not folder.is_dir():
        raise ValidationError(f"nothing quarantined for {dataset} date={day.isoformat()} ({folder} does not exist)")
    tables = _layout_tables(dataset)
    present = {table for table in tables if (folder / f"{table}.parquet").exists()}
    if not present:
        raw = sorted(p.name for p in (folder / RAW_DIR).glob("*"))
        raise ValidationError(
            f"{folder} holds no landed parquet ({', '.join(raw) or 'nothing'}): the delivery itself could not be "
            "read; put a corrected file in the source and clear the run instead"
        )
    for table in present:
        target = partition_path(settings.landing_dir, dataset, table, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / f"{table}.parquet", target)
    shutil.rmtree(folder)
    log.info("released %s date=%s from quarantine; validating again", dataset, day)
    return check_partition(dataset, day, settings=settings)
