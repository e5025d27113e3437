"""The endpoint token: where it comes from (generated, given, required) and who may start without one."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from airflow_mlops.endpoint_auth import AUTH_VARIABLE, TOKEN_VARIABLE, BearerAuth, required_token
from airflow_mlops.settings import SettingsError, load_settings


def test_the_local_profile_generates_one_private_token_per_home(tmp_path: Path) -> None:
    settings = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    with ThreadPoolExecutor(8) as pool:  # first uses racing: all of them agree on one token
        tokens = set(pool.map(lambda _: settings.endpoint_token(), range(16)))
    assert len(tokens) == 1
    token = tokens.pop()
    assert len(token) >= 40
    path = settings.endpoint_token_file
    assert path == tmp_path / "home" / "secrets" / "endpoint-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert load_settings({"MLOPS_HOME": str(tmp_path / "home")}).endpoint_token() == token
    assert load_settings({"MLOPS_HOME": str(tmp_path / "other")}).endpoint_token() != token
    assert token not in repr(settings)


def test_the_environment_wins_and_production_requires_it(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    assert load_settings({"MLOPS_HOME": home, TOKEN_VARIABLE: " given "}).endpoint_token() == "given"
    assert not (tmp_path / "home" / "secrets").exists()
    production = load_settings({"MLOPS_HOME": home, "MLOPS_PROFILE": "production"})
    with pytest.raises(SettingsError, match="MLOPS_PROFILE=production needs MLOPS_ENDPOINT_TOKEN"):
        production.endpoint_token()
    empty = load_settings({"MLOPS_HOME": home})
    empty.endpoint_token_file.parent.mkdir(parents=True)
    empty.endpoint_token_file.write_text("\n")
    with pytest.raises(SettingsError, match="endpoint-token is empty"):
        empty.endpoint_token()


def test_a_production_server_never_starts_open() -> None:
    assert required_token({TOKEN_VARIABLE: "t"}, "x") == "t"
    assert required_token({}, "x") is None  # local profile: open, with a warning from the caller
    assert required_token({"MLOPS_PROFILE": "production", AUTH_VARIABLE: "platform"}, "x") is None
    with pytest.raises(RuntimeError, match=f"model endpoint m: MLOPS_PROFILE=production needs {TOKEN_VARIABLE}"):
        required_token({"MLOPS_PROFILE": "production"}, "model endpoint m")
    with pytest.raises(ValueError, match="non-empty token"):
        BearerAuth(object(), "")
