"""When new data makes a train run due, which window a run uses for each trigger, and what holds it back."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from airflow_mlops import pipeline
from airflow_mlops.monitoring import MonitorResult, _drifted
from airflow_mlops.pipeline import (
    Skip,
    announce_new_window,
    latest_complete_window_end,
    new_window_due,
    resolve_window_end,
)
from airflow_mlops.settings import PROJECT_ROOT, Settings, load_settings
from airflow_mlops.specs import ModelSpec, load_spec
from airflow_mlops.zones import partition_path


@pytest.fixture
def spec() -> ModelSpec:
    raw = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").model_dump()
    raw["training"].update(window_days=10, holdout_days=2, retrain_every_days=5)
    return ModelSpec.model_validate(raw)


def validated(settings: Settings, first: date, last: date) -> None:
    """Mark the days first..last as validated (the window checks only look at the partition files)."""
    day = first
    while day <= last:
        path = partition_path(settings.validated_dir, "flights", "flights", day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        day += timedelta(days=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    validated(settings, date(2013, 1, 1), date(2013, 3, 31))
    validated(settings, date(2013, 7, 1), date(2013, 7, 7))  # a summer week landed for its outcomes
    return settings


def test_a_request_uses_its_param(spec: ModelSpec, settings: Settings) -> None:
    assert resolve_window_end(spec, "2013-02-10", [], settings) == date(2013, 2, 10)
    with pytest.raises(pipeline.PipelineError, match="not a date"):
        resolve_window_end(spec, "yesterday", [], settings)


def test_drift_retrains_on_the_most_recent_trainable_window(
    spec: ModelSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_champion_window_end", lambda spec, settings: None)
    # July 7's window (Jun 28 .. Jul 7) has 7 of its 10 days and its whole holdout: the new regime trains.
    drift = [{"status": "drift", "window_end": "2013-07-07", "reasons": ["..."]}]
    assert resolve_window_end(spec, None, drift, settings) == date(2013, 7, 7)
    # July 3's holds only 3 of 10: the latest complete window before it, March 31's.
    july3 = [{"status": "drift", "window_end": "2013-07-03"}]
    assert resolve_window_end(spec, None, july3, settings) == date(2013, 3, 31)
    assert latest_complete_window_end(spec, date(2013, 1, 9), settings) is None
    early = [{"status": "drift", "window_end": "2013-01-03"}]  # 3 of 10 days, no complete window
    assert isinstance(resolve_window_end(spec, None, early, settings), Skip)
    # A holdout day missing makes the drifted day's window untrainable as well.
    partition_path(settings.validated_dir, "flights", "flights", date(2013, 7, 6)).unlink()
    assert resolve_window_end(spec, None, drift, settings) == date(2013, 3, 31)
    # ... and when that complete window is the champion's own, retraining would only repeat the champion.
    monkeypatch.setattr(pipeline, "_champion_window_end", lambda spec, settings: date(2013, 3, 31))
    skip = resolve_window_end(spec, None, drift, settings)
    assert isinstance(skip, Skip) and "no data newer than the champion's window (ends 2013-03-31)" in skip.reason


def test_new_data_waits_for_a_complete_window_and_the_retrain_interval(
    spec: ModelSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_champion_window_end", lambda spec, settings: None)
    assert resolve_window_end(spec, None, [{"partition": "2013-03-10"}], settings) == date(2013, 3, 10)
    skip = resolve_window_end(spec, None, [{"partition": "2013-07-03"}], settings)
    assert isinstance(skip, Skip) and "not complete yet" in skip.reason

    monkeypatch.setattr(pipeline, "_champion_window_end", lambda spec, settings: date(2013, 3, 10))
    held = resolve_window_end(spec, None, [{"partition": "2013-03-12"}], settings)
    assert isinstance(held, Skip) and "every 5 days" in held.reason and "2013-03-15" in held.reason
    assert resolve_window_end(spec, None, [{"partition": "2013-03-15"}], settings) == date(2013, 3, 15)
    # Several events in one run (a burst): one training, on the newest partition.
    burst = [{"partition": f"2013-03-{d}"} for d in (16, 18, 17)]
    assert resolve_window_end(spec, None, burst, settings) == date(2013, 3, 18)


def _ingest(spec: ModelSpec, first: date, last: date, settings: Settings) -> list[date]:
    """Days first..last ingested in order, as ingest's ``features`` task sees them: the days it announced."""
    announced: list[dict[str, object]] = []  # the extras of the model's new_window events so far
    day = first
    while day <= last:
        decided = new_window_due(spec, day, announced, settings)
        if decided.due:
            announced.append(decided.event_extra())
        day += timedelta(days=1)
    return [date.fromisoformat(str(extra["partition"])) for extra in announced]


def test_the_history_backfill_announces_one_window_not_one_per_day(tmp_path: Path) -> None:
    """The shipped spec (59-day window, retrain every 35 days) over the demo's history and summer."""
    shipped = load_spec(PROJECT_ROOT / "include" / "models" / "flight_delay.yaml")
    settings = load_settings({"MLOPS_HOME": str(tmp_path)})
    validated(settings, date(2013, 1, 1), date(2013, 3, 31))
    # Jan 1 - Mar 31 (90 daily runs): the first complete window, Jan 1 - Feb 28, and nothing after it.
    assert _ingest(shipped, date(2013, 1, 1), date(2013, 3, 31), settings) == [date(2013, 2, 28)]
    # Summer after a gap (Apr - May never landed): no window ending Jun 1 - Jul 7 is complete.
    validated(settings, date(2013, 6, 1), date(2013, 7, 7))
    assert _ingest(shipped, date(2013, 1, 1), date(2013, 7, 7), settings) == [date(2013, 2, 28)]
    # Had every day landed: the first window, then one every 35 days (about monthly).
    validated(settings, date(2013, 4, 1), date(2013, 5, 31))
    announced = _ingest(shipped, date(2013, 1, 1), date(2013, 7, 7), settings)
    assert announced == [date(2013, 2, 28), date(2013, 4, 4), date(2013, 5, 9), date(2013, 6, 13)]


def test_new_data_is_due_when_its_window_is_complete_and_the_retrain_interval_passed(
    spec: ModelSpec, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing announced yet: the first complete window (Jan 1 .. Jan 10) is due, not the days before it.
    early = new_window_due(spec, date(2013, 1, 9), [], settings)
    assert not early.due and "not complete yet" in early.reason and "first 2012-12-31" in early.reason
    first = new_window_due(spec, date(2013, 1, 10), [], settings)
    assert first.due and first.window_start == date(2013, 1, 1) and first.previous is None
    assert first.event_extra()["partition"] == "2013-01-10"
    # The run it starts trains on that window (resolve_window_end reads the event's partition).
    monkeypatch.setattr(pipeline, "_champion_window_end", lambda spec, settings: None)
    assert resolve_window_end(spec, None, [first.event_extra()], settings) == date(2013, 1, 10)

    # After an announcement: not before retrain_every_days (5) have passed, then due again.
    announced = [first.event_extra()]
    held = new_window_due(spec, date(2013, 1, 14), announced, settings)
    assert not held.due and "every 5 days" in held.reason and "2013-01-15" in held.reason
    again = new_window_due(spec, date(2013, 1, 15), announced, settings)
    assert again.due and again.previous == date(2013, 1, 10) and again.event_extra()["previous"] == "2013-01-10"
    # A re-run of the announced day, or of an older one, never announces again.
    for day in (date(2013, 1, 10), date(2013, 1, 3)):
        rerun = new_window_due(spec, day, announced, settings)
        assert not rerun.due and "announced already" in rerun.reason
    # The newest announced partition counts, in whatever order the events come; unreadable extras are ignored.
    noisy = [{"partition": "2013-03-20"}, None, {}, {"partition": "not a day"}, {"partition": "2013-01-10"}]
    assert not new_window_due(spec, date(2013, 3, 24), noisy, settings).due
    assert new_window_due(spec, date(2013, 3, 25), noisy, settings).due
    # Due by the interval but the window has a gap (Apr - Jun never landed): not due until it is complete.
    gap = new_window_due(spec, date(2013, 7, 7), announced, settings)
    assert not gap.due and "2013-06-28..2013-07-07 is not complete yet: 3 of its 10 days" in gap.reason


def test_the_announce_task_decides_for_the_named_spec(settings: Settings) -> None:
    """``announce_new_window`` is the task's adapter: the shipped spec by name, JSON in and out."""
    assert not announce_new_window("flight_delay", "2013-02-27", [], settings=settings)["due"]
    due = announce_new_window("flight_delay", "2013-02-28", [], settings=settings)
    assert due["due"] and due["event"]["partition"] == "2013-02-28" and due["event"]["window_start"] == "2013-01-01"
    held = announce_new_window("flight_delay", "2013-03-31", [due["event"]], settings=settings)
    assert not held["due"] and "2013-04-04" in held["reason"]
    with pytest.raises(pipeline.PipelineError, match="no valid model spec 'nope'"):
        announce_new_window("nope", "2013-02-28", [], settings=settings)


def test_a_timed_run_uses_the_latest_validated_day(spec: ModelSpec, settings: Settings) -> None:
    assert resolve_window_end(spec, None, [], settings) == date(2013, 7, 7)


@pytest.mark.parametrize(
    ("score", "method", "threshold", "drifted"),
    [
        (0.01, "K-S p_value", 0.05, True),  # a p-value below the threshold: drift
        (0.30, "K-S p_value", 0.05, False),
        (0.12, "Wasserstein distance (normed)", 0.1, True),  # a distance at or above it: drift
        (0.05, "Jensen-Shannon distance", 0.1, False),
        (float("nan"), "Wasserstein distance (normed)", 0.1, False),
    ],
)
def test_drift_reads_p_values_and_distances_the_right_way(
    score: float, method: str, threshold: float, drifted: bool
) -> None:
    assert _drifted(score, method, threshold) is drifted


def test_the_drift_event_carries_reasons_report_and_figures() -> None:
    result = MonitorResult(
        model="m",
        day="2013-07-07",
        status="drift",
        retrain=True,
        reasons=["temp drifted"],
        rows=900,
        drift_share=0.4,
        drifted_features=["temp"],
        reports={"drift_html": "/r/drift.html"},
    )
    extra = result.event_extra()
    assert extra["window_end"] == "2013-07-07" and extra["status"] == "drift"
    assert extra["reasons"] == ["temp drifted"] and extra["report"] == "/r/drift.html"
    assert extra["drift_share"] == pytest.approx(0.4) and extra["rows"] == 900
