"""Model specs: the shipped spec loads, and each kind of bad spec is reported precisely without
hiding the good specs next to it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.settings import PROJECT_ROOT
from airflow_mlops.specs import ModelSpec, SpecError, SpecFileError, TargetRule, load_spec, load_specs

SHIPPED = PROJECT_ROOT / "include" / "models" / "flight_delay.yaml"

#: A small valid spec (name must match the file stem); bad variants are derived from it.
VALID = """\
name: {name}
dataset: flights
entity_keys: [origin, carrier]
feature_service: {name}_v1
target:
  rule: dep_delay >= 15
algorithm:
  name: logistic_regression
training:
  window_days: 30
  holdout_days: 7
"""


def _write(folder: Path, stem: str, text: str) -> Path:
    path = folder / f"{stem}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped spec ---------------------------------------------------------------------------


def test_shipped_flight_delay_spec_loads() -> None:
    """``include/models/flight_delay.yaml`` is valid and says what the reference use case needs."""
    spec = load_spec(SHIPPED)

    assert spec.name == "flight_delay"
    assert spec.dataset == "flights"
    assert spec.feature_service == "flight_delay_v1"
    assert spec.entity_keys == ["origin", "carrier", "tailnum"]
    assert spec.target.rule == "dep_delay >= 15"
    assert spec.target.name == "delayed"
    assert (spec.target.column, spec.target.op, spec.target.threshold) == ("dep_delay", ">=", 15.0)
    assert spec.algorithm.name == "hist_gradient_boosting"
    assert spec.algorithm.seed == 42
    assert spec.training.holdout_days < spec.training.window_days
    assert spec.deploy.target == "local"


def test_shipped_models_folder_has_no_errors() -> None:
    """The default models folder (from settings) loads cleanly: the two shipped examples."""
    result = load_specs()
    assert result.errors == []
    assert {"flight_delay", "electricity_demand"} <= set(result.specs)
    assert result.datasets == ["flights", "vic_electricity"]


def test_target_rule_on_a_series_with_missing_values() -> None:
    """``dep_delay >= 15``: the boundary counts as delayed, NaN (cancelled flight) is not delayed."""
    spec = load_spec(SHIPPED)
    dep_delay = pd.Series([-5.0, 0.0, 14.0, 14.999, 15.0, 15.5, 120.0, math.nan])

    labels = spec.target.apply(dep_delay)

    assert labels.dtype == bool
    assert labels.tolist() == [False, False, False, False, True, True, True, False]


def test_target_rule_on_scalars() -> None:
    """The same rule works on a single value (serving a single request)."""
    rule = TargetRule(rule="  arr_delay <  -2.5 ")
    assert rule.rule == "arr_delay <  -2.5"
    assert (rule.column, rule.op, rule.threshold) == ("arr_delay", "<", -2.5)
    assert rule.apply(-3) is True
    assert rule.apply(-2.5) is False
    assert bool(rule.apply(math.nan)) is False


def test_target_rule_treats_pandas_na_as_false() -> None:
    """Nullable columns (e.g. from ``dtype_backend='numpy_nullable'``) must label missing as False too."""
    rule = TargetRule(rule="dep_delay >= 15")
    labels = rule.apply(pd.Series([3.0, None, 20.0], dtype="Float64"))
    assert labels.tolist() == [False, False, True]
    assert rule.apply(None) is False


def test_defaults_fill_optional_sections(tmp_path: Path) -> None:
    """A minimal spec gets the documented defaults for the sections it leaves out."""
    spec = load_spec(_write(tmp_path, "minimal", VALID.format(name="minimal")))
    assert isinstance(spec, ModelSpec)
    assert spec.target.name == "label"
    assert spec.task == "binary_classification" and spec.metric.name == "auc"
    assert spec.quality.bar is None  # no bar: the gate asks for better than no skill (AUC above 0.5)
    assert spec.quality.slices == []  # no slice checks unless the spec names columns
    assert spec.drift.drift_share == pytest.approx(0.3)
    assert spec.deploy.target == "local"


# --- invalid specs ------------------------------------------------------------------------------

#: (case id, bad spec text for stem "broken", expected field, words the reason must contain)
INVALID_CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "unknown-top-level-field",
        VALID.format(name="broken") + "owner: alice\n",
        "owner",
        ("not permitted",),
    ),
    (
        "unknown-nested-field",
        VALID.format(name="broken").replace("  holdout_days: 7\n", "  holdout_days: 7\n  window: 3\n"),
        "training.window",
        ("not permitted",),
    ),
    (
        "algorithm-not-allowed",
        VALID.format(name="broken").replace("name: logistic_regression", "name: xgboost"),
        "algorithm.name",
        ("hist_gradient_boosting", "logistic_regression", "random_forest"),
    ),
    (
        "window-days-not-an-integer",
        VALID.format(name="broken").replace("window_days: 30", 'window_days: "abc"'),
        "training.window_days",
        ("integer",),
    ),
    (
        "window-days-out-of-range",
        VALID.format(name="broken").replace("window_days: 30", "window_days: 3"),
        "training.window_days",
        ("greater than or equal to 7",),
    ),
    (
        "bad-target-rule",
        VALID.format(name="broken").replace("rule: dep_delay >= 15", "rule: dep_delay is late"),
        "target.rule",
        ("'dep_delay is late'", "not a target rule", "'<column> <op> <number>'"),
    ),
    (
        "holdout-not-inside-window",
        VALID.format(name="broken").replace("holdout_days: 7", "holdout_days: 30"),
        "training.holdout_days",
        ("holdout_days (30)", "window_days (30)"),
    ),
    (
        "unknown-dataset",
        VALID.format(name="broken").replace("dataset: flights", "dataset: trains"),
        "dataset",
        ("'trains'", "flights"),
    ),
    (
        "missing-required-field",
        VALID.format(name="broken").replace("feature_service: broken_v1\n", ""),
        "feature_service",
        ("required",),
    ),
    (
        "name-does-not-match-file",
        VALID.format(name="other_name"),
        "name",
        ("'other_name'", "'broken'"),
    ),
    (
        "not-a-mapping",
        "- just\n- a list\n",
        "<root>",
        ("mapping", "list"),
    ),
]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [case[1:] for case in INVALID_CASES],
    ids=[case[0] for case in INVALID_CASES],
)
def test_invalid_spec_is_reported_and_does_not_hide_the_valid_one(
    tmp_path: Path, text: str, field: str, words: tuple[str, ...]
) -> None:
    """Each bad file gives a SpecError with file, dotted field and reason; the good spec still loads."""
    good = _write(tmp_path, "good", VALID.format(name="good"))
    bad = _write(tmp_path, "broken", text)

    with pytest.raises(SpecFileError) as info:
        load_spec(bad)
    assert [e.field for e in info.value.errors] == [field]
    error = info.value.errors[0]
    assert error.path == bad
    for word in words:
        assert word in error.reason, f"{word!r} not in {error.reason!r}"
    # The exception text is what a user sees: file, field and reason on one line.
    assert str(info.value) == f"{bad}: {field}: {error.reason}"

    result = load_specs(tmp_path)
    assert list(result.specs) == ["good"]
    assert result.specs["good"] == load_spec(good)
    assert result.errors == info.value.errors


def test_bad_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    """A YAML syntax error points at the line (1-based) and column, and names the file."""
    _write(tmp_path, "good", VALID.format(name="good"))
    text = VALID.format(name="broken").replace("  rule: dep_delay >= 15\n", '  rule: "dep_delay >= 15\n')
    bad = _write(tmp_path, "broken", text + "extra: [unclosed\n")

    with pytest.raises(SpecFileError) as info:
        load_spec(bad)
    [error] = info.value.errors
    assert error.path == bad
    assert error.field.startswith("line ")
    assert "column" in error.field
    assert error.reason.startswith("not valid YAML")
    assert str(bad) in str(info.value)

    # Pin the reported line against a simpler, unambiguous syntax error.
    tab = _write(tmp_path, "tabbed", "name: tabbed\ndataset: flights\ntarget:\n\trule: x >= 1\n")
    with pytest.raises(SpecFileError) as tab_info:
        load_spec(tab)
    assert tab_info.value.errors[0].field == "line 4, column 1"

    result = load_specs(tmp_path)
    assert list(result.specs) == ["good"]
    assert {e.path for e in result.errors} == {bad, tab}


def test_every_problem_in_one_file_is_reported(tmp_path: Path) -> None:
    """Fixing one field at a time is tedious: all validation problems of a file come back together."""
    text = (
        VALID.format(name="broken")
        .replace("name: logistic_regression", "name: xgboost")
        .replace("window_days: 30", 'window_days: "abc"')
    )
    with pytest.raises(SpecFileError) as info:
        load_spec(_write(tmp_path, "broken", text))
    assert sorted(e.field for e in info.value.errors) == ["algorithm.name", "training.window_days"]


def test_empty_file_is_reported(tmp_path: Path) -> None:
    """An empty YAML file is not silently skipped."""
    empty = _write(tmp_path, "empty", "")
    result = load_specs(tmp_path)
    assert result.specs == {}
    assert result.errors == [SpecError(empty, "<root>", "expected a mapping of fields, got NoneType")]


def test_yml_extension_is_loaded_too(tmp_path: Path) -> None:
    """``*.yml`` specs are picked up like ``*.yaml``; other files in the folder are ignored."""
    (tmp_path / "short.yml").write_text(VALID.format(name="short"), encoding="utf-8")
    (tmp_path / "README.md").write_text("not a spec", encoding="utf-8")
    result = load_specs(tmp_path)
    assert list(result.specs) == ["short"]
    assert result.errors == []


def test_missing_models_folder_is_an_error_not_an_empty_set(tmp_path: Path) -> None:
    """A wrong ``MLOPS_MODELS_DIR`` is reported, so no one wonders why there are no DAGs."""
    missing = tmp_path / "nope"
    result = load_specs(missing)
    assert result.specs == {}
    assert result.errors == [SpecError(missing, "<folder>", "models folder does not exist")]


def test_load_specs_defaults_to_the_settings_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``MLOPS_MODELS_DIR`` chooses the folder ``load_specs()`` reads."""
    shutil.copy(SHIPPED, tmp_path / SHIPPED.name)
    _write(tmp_path, "second", VALID.format(name="second"))
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    result = load_specs()
    assert sorted(result.specs) == ["flight_delay", "second"]
    assert result.datasets == ["flights"]


def test_unreadable_path_is_reported(tmp_path: Path) -> None:
    """A path that cannot be read (here: a folder) gives an error naming it, not a traceback."""
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(SpecFileError) as info:
        load_spec(folder)
    [error] = info.value.errors
    assert error.path == folder
    assert error.field == "<file>"
    assert error.reason.startswith("cannot be read")


def test_specs_are_immutable() -> None:
    """Specs are shared by every task of a DAG: nobody may change one in place."""
    spec = load_spec(SHIPPED)
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("  rule: dep_delay >= 15\n  function: my_labels:late\n", "exactly one of `rule`"),
        ("  name: late\n", "(got none)"),
        ("  rule: dep_delay >= 15\n  horizon_days: 3\n", "horizon_days is for label functions"),
        ("  function: my_labels/late.py\n", "is not a dotted path module:function"),
    ],
)
def test_a_label_is_a_rule_or_a_function(tmp_path: Path, target: str, reason: str) -> None:
    text = VALID.format(name="labels").replace("  rule: dep_delay >= 15\n", target)
    _write(tmp_path, "labels", text)
    result = load_specs(tmp_path)
    [error] = result.errors
    assert error.field.startswith("target") and reason in error.reason


def test_a_label_function_may_look_ahead(tmp_path: Path) -> None:
    text = VALID.format(name="churn").replace(
        "  rule: dep_delay >= 15\n", "  function: my_labels:churned\n  horizon_days: 30\n  name: churned\n"
    )
    spec = load_spec(_write(tmp_path, "churn", text))
    assert (spec.target.function, spec.target.horizon_days, spec.target.column) == ("my_labels:churned", 30, None)
    assert spec.target.described == "my_labels:churned(...), looking 30 day(s) ahead"


def test_the_local_endpoint_binds_loopback_unless_allowed(tmp_path: Path) -> None:
    base = VALID.format(name="local_bind") + "deploy:\n  target: local\n  local:\n"
    assert load_spec(_write(tmp_path, "local_bind", base + "    host: ::1\n")).deploy.local.host == "::1"
    with pytest.raises(SpecFileError, match=r"deploy\.local.*'0\.0\.0\.0' is not a loopback address.*allow_remote"):
        load_spec(_write(tmp_path, "local_bind", base + "    host: 0.0.0.0\n"))
    with pytest.raises(SpecFileError, match=r"'my laptop' is not an IP address or localhost"):
        load_spec(_write(tmp_path, "local_bind", base + "    host: my laptop\n"))
    remote = load_spec(_write(tmp_path, "local_bind", base + "    host: 0.0.0.0\n    allow_remote: true\n"))
    assert remote.deploy.local.host == "0.0.0.0" and remote.deploy.local.allow_remote
