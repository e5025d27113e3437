"""Validation gate: check one landed partition against its dataset's Great Expectations suites.

:func:`validate_partition` reads each landed table of a day (``zones.partition_path``), validates it with
the suite of that table (``<datasets>/suites/<dataset>/<table>.yaml``, GX's own expectation types and
arguments as data: :func:`load_suite`) in an ephemeral GX context, and returns a
:class:`ValidationReport`: success, a per-table summary and, for each failed expectation, the table,
expectation type, column, unexpected count and a few sample values. :meth:`ValidationReport.summary_text`
is what a failing task prints.

The full GX result (plus the report) is written per partition, atomically, with the GX Data Docs page
of each table (rendered by GX's own renderer) beside it::

    $MLOPS_DATA_DIR/validation/<dataset>/date=YYYY-MM-DD/result.json
    $MLOPS_DATA_DIR/validation/<dataset>/date=YYYY-MM-DD/<table>.html

A file that cannot be read (missing, truncated, not parquet) gives a failed report naming the file and the
reason, never a bare stack trace. This module moves no data: publishing to the validated zone and
quarantining are :mod:`airflow_mlops.gate`'s.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.config_files import parse_yaml
from airflow_mlops.datasets import get_datasets
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.zones import partition_path, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

log = logging.getLogger(__name__)
# GX logs the registration of its own internals at INFO when imported: keep task logs about the data.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

#: How many unexpected values a failure keeps as samples.
SAMPLE_SIZE = 5
RESULT_FILE = "result.json"


class ValidationError(RuntimeError):
    """Validation could not be run at all (unknown dataset, no suite)."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation (or an unreadable table) of a partition."""

    table: str
    expectation: str
    column: str | None
    unexpected_count: int | None
    sample: list[Any] = field(default_factory=list)
    message: str = ""

    def line(self) -> str:
        """One readable line: where, what, how many, examples."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        parts = [f"{where}: {self.expectation}"]
        if self.unexpected_count is not None:
            parts.append(f"{self.unexpected_count} unexpected rows")
        if self.sample:
            parts.append("e.g. " + ", ".join(repr(value) for value in self.sample))
        if self.message:
            parts.append(self.message)
        return " - ".join(parts)


@dataclass(frozen=True)
class TableSummary:
    """Outcome of one table's suite."""

    table: str
    rows: int | None
    evaluated: int
    failed: int
    success: bool


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_partition` found for one partition of a dataset."""

    dataset: str
    partition: str
    success: bool
    tables: tuple[TableSummary, ...]
    failures: tuple[Failure, ...]
    result_path: str
    #: GX Data Docs page (HTML) of each validated table, keyed by table.
    docs: dict[str, str] = field(default_factory=dict)

    def summary_text(self) -> str:
        """A multi-line summary for task logs and error messages."""
        status = "PASSED" if self.success else "FAILED"
        lines = [f"validation of {self.dataset} date={self.partition}: {status}"]
        for table in self.tables:
            rows = "unreadable" if table.rows is None else f"{table.rows} rows"
            lines.append(
                f"  {table.table}: {rows}, {table.evaluated - table.failed}/{table.evaluated} expectations met"
            )
        if self.failures:
            lines.append(f"  {len(self.failures)} failed:")
            lines += [f"  - {failure.line()}" for failure in self.failures]
        lines.append(f"  result: {self.result_path}")
        lines += [f"  data docs ({table}): {path}" for table, path in self.docs.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SuiteError(ValidationError):
    """A suite file does not load; the message names the file, the item and the reason."""


#: Placeholders a suite may use for the day being validated.
PARTITION_VALUES = {
    "$partition.year": lambda day: day.year,
    "$partition.month": lambda day: day.month,
    "$partition.day": lambda day: day.day,
    "$partition.date": lambda day: day.isoformat(),
}

_suite_cache: dict[Path, tuple[tuple[int, int], list[tuple[str, dict[str, Any]]]]] = {}


def suite_path(settings: Settings, dataset: str, table: str) -> Path:
    """The suite file of one table: ``<datasets>/suites/<dataset>/<table>.yaml``."""
    return settings.datasets_dir / "suites" / dataset / f"{table}.yaml"


def _suite_items(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The ``(type, kwargs)`` items of a suite file, parsed once per version of the file."""
    import yaml

    try:
        stat = path.stat()
    except FileNotFoundError:
        raise SuiteError(f"{path}: no such suite file (one per table of the dataset)") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    hit = _suite_cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise SuiteError(f"{path}: expected a mapping with an `expectations:` list")
    unknown = sorted(set(raw) - {"expectations", "definitions", "description"})
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key(s) {', '.join(unknown)} (expectations, definitions)")
    items = []
    for index, item in enumerate(raw["expectations"]):
        if not (isinstance(item, dict) and len(item) == 1):
            raise SuiteError(f"{path}, expectations[{index}]: one `expectation_type: {{arguments}}` per item")
        ((kind, kwargs),) = item.items()
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{path}, expectations[{index}] ({kind}): its arguments must be a mapping")
        items.append((str(kind), kwargs))
    _suite_cache[path] = (stamp, items)
    return items


def _for_day(value: Any, day: date) -> Any:
    """``value`` with every ``$partition.*`` placeholder replaced by the day's value."""
    if isinstance(value, str) and value in PARTITION_VALUES:
        return PARTITION_VALUES[value](day)
    if isinstance(value, list):
        return [_for_day(item, day) for item in value]
    if isinstance(value, dict):
        return {key: _for_day(item, day) for key, item in value.items()}
    return value


def load_suite(path: Path, name: str, day: date) -> ExpectationSuite:
    """The GX suite of a suite file for ``day``: each item becomes GX's own expectation of that type."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for index, (kind, kwargs) in enumerate(_suite_items(path)):
        try:
            configuration = ExpectationConfiguration(type=kind, kwargs=_for_day(kwargs, day))
            expectations.append(configuration.to_domain_obj())
        except Exception as exc:  # unknown type, missing or misspelled argument: GX says which
            reason = " ".join(str(exc).split())
            raise SuiteError(f"{path}, expectations[{index}] ({kind}): {type(exc).__name__}: {reason}") from None
    return gx.ExpectationSuite(name=name, expectations=expectations)


def build_suites(dataset: str, day: date, settings: Settings | None = None) -> dict[str, ExpectationSuite]:
    """The suites of ``dataset`` for ``day``, one per table, from its suite files (:func:`suite_path`)."""
    settings = settings or get_settings()
    known = get_datasets(settings)
    if dataset not in known:
        raise ValidationError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(known)) or 'none'}")
    return {
        table: load_suite(suite_path(settings, dataset, table), f"{dataset}.{table}.{day.isoformat()}", day)
        for table in known[dataset].table_names
    }


def result_path(settings: Settings, dataset: str, day: date) -> Path:
    """Where the validation result JSON of a partition is kept."""
    return settings.validation_dir / dataset / f"date={day.isoformat()}" / RESULT_FILE


def _context() -> AbstractDataContext:
    """An in-memory GX context without analytics or progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _read(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON written is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    """Samples as plain JSON values (numpy scalars and timestamps become Python values or text; NaN None)."""
    try:
        return _strict(json.loads(json.dumps(value, default=str)))
    except (TypeError, ValueError):
        return str(value)


def _failures(table: str, result: ExpectationSuiteValidationResult) -> list[Failure]:
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        kwargs = config.kwargs if config is not None else {}
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
        details = item.result or {}
        message = ""
        exception = item.exception_info or {}
        if exception.get("raised_exception"):
            message = f"could not be evaluated: {exception.get('exception_message')}"
        else:  # several metrics failed: exception_info is keyed by metric
            messages = {
                info.get("exception_message")
                for info in exception.values()
                if isinstance(info, dict) and info.get("raised_exception")
            }
            if messages:
                message = "could not be evaluated: " + "; ".join(sorted(str(m) for m in messages))
        if not message and "observed_value" in details and details.get("unexpected_count") is None:
            message = f"observed {details['observed_value']!r}"
        failures.append(
            Failure(
                table=table,
                expectation=config.type if config is not None else "unknown",
                column=column,
                unexpected_count=details.get("unexpected_count"),
                sample=[_jsonable(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]],
                message=message,
            )
        )
    return failures


def _validate_table(
    context: AbstractDataContext, table: str, frame: pd.DataFrame, suite: ExpectationSuite
) -> ExpectationSuiteValidationResult:
    source = context.data_sources.add_pandas(name=f"{table}-{uuid.uuid4().hex}")
    asset = source.add_dataframe_asset(name=table)
    batch = asset.add_batch_definition_whole_dataframe("partition").get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(suite, result_format={"result_format": "BASIC"})


def _data_docs_html(result: ExpectationSuiteValidationResult) -> str:
    """The GX Data Docs page of one validation result, rendered by GX's own renderer."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return str(DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result)))


def validate_partition(dataset: str, day: date, *, settings: Settings | None = None) -> ValidationReport:
    """Validate every landed table of ``dataset`` for ``day``; write and return the result.

    Never raises for bad data or unreadable files (the report fails instead); raises
    :class:`ValidationError` only if the dataset or its suites are unknown.
    """
    settings = settings or get_settings()
    known = get_datasets(settings)
    layout = known.get(dataset)
    if layout is None:
        raise ValidationError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(known)) or 'none'}")
    context = _context()
    suites = build_suites(dataset, day, settings)

    out = result_path(settings, dataset, day)
    summaries: list[TableSummary] = []
    failures: list[Failure] = []
    raw: dict[str, Any] = {}
    docs: dict[str, str] = {}
    for table in layout.table_names:
        path = partition_path(settings.landing_dir, dataset, table, day)
        try:
            frame = _read(path)
        except FileNotFoundError:
            message = f"not landed: {path} does not exist"
        except Exception as exc:  # truncated, garbled or not parquet: say which file and why
            message = f"cannot read {path}: {type(exc).__name__}: {exc}"
        else:
            message = ""
        if message:
            failures.append(
                Failure(table=table, expectation="readable_file", column=None, unexpected_count=None, message=message)
            )
            summaries.append(TableSummary(table=table, rows=None, evaluated=1, failed=1, success=False))
            raw[table] = {"success": False, "error": message}
            continue
        result = _validate_table(context, table, frame, suites[table])
        html_path = out.with_name(f"{table}.html")
        write_text_atomic(_data_docs_html(result), html_path)
        docs[table] = str(html_path)
        table_failures = _failures(table, result)
        failures += table_failures
        summaries.append(
            TableSummary(
                table=table,
                rows=len(frame),
                evaluated=len(result.results),
                failed=len(table_failures),
                success=bool(result.success),
            )
        )
        raw[table] = result.to_json_dict()

    report = ValidationReport(
        dataset=dataset,
        partition=day.isoformat(),
        success=all(summary.success for summary in summaries),
        tables=tuple(summaries),
        failures=tuple(failures),
        result_path=str(out),
        docs=docs,
    )
    payload = _strict(json.loads(json.dumps({"report": report.to_dict(), "great_expectations": raw}, default=str)))
    write_text_atomic(json.dumps(payload, indent=2, allow_nan=False), out)
    log.info("%s", report.summary_text())
    return report
