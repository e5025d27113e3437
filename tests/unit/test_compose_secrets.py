"""``docker/compose.yaml`` names no credential and publishes on loopback; ``airflow-mlops compose-env`` makes them.

No Docker engine runs here, so the stack itself is not started: the compose file is read as YAML (anchors
resolved) and every secret-bearing value is checked to be a required interpolation (``${VAR:?...}``).
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import yaml
from click.testing import CliRunner
from cryptography.fernet import Fernet

from airflow_mlops.cli import main
from airflow_mlops.compose_env import SECRETS, read_env_file, write_env_file
from airflow_mlops.settings import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker" / "compose.yaml"
SECRET_NAME = re.compile(r"PASSWORD$|SECRET|_KEY$|_CONN$|BROKER_URL$|RESULT_BACKEND$|CLI_AUTH$|TOKEN$")
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")


def _services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_secret_in_the_compose_file_is_required_from_the_environment() -> None:
    checked = 0
    for name, service in _services().items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                checked += 1
                assert REQUIRED.search(str(value)), f"{name}: {variable} is not ${{VAR:?...}}: {value}"
    assert checked >= 8
    text = COMPOSE.read_text()
    assert set(REQUIRED.findall(text)) == set(SECRETS)
    for default in ("change-me", "airflow:airflow@", '"admin":"admin"', "POSTGRES_PASSWORD: airflow"):
        assert default not in text


def test_published_ports_are_on_loopback_and_redis_requires_its_password() -> None:
    services = _services()
    ports = [port for service in services.values() for port in service.get("ports", [])]
    assert ports and all(str(port).startswith("127.0.0.1:") for port in ports)
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")


def test_compose_env_generates_each_secret_once_into_a_private_file(tmp_path: Path) -> None:
    env_file = tmp_path / "docker" / ".env"
    result = CliRunner().invoke(main, ["compose-env", "--path", str(env_file)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    first = read_env_file(env_file)
    assert list(first) == list(SECRETS)
    assert len(set(first.values())) == len(first) and all(len(value) >= 32 for value in first.values())
    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a valid key, or this raises

    assert write_env_file(env_file) == []  # nothing missing: nothing changes
    assert read_env_file(env_file) == first

    kept = env_file.read_text().replace(f"REDIS_PASSWORD={first['REDIS_PASSWORD']}\n", "")
    env_file.write_text(kept)  # rotating one secret: delete its line, run again
    assert write_env_file(env_file) == ["REDIS_PASSWORD"]
    again = read_env_file(env_file)
    assert again["REDIS_PASSWORD"] != first["REDIS_PASSWORD"]
    assert {k: v for k, v in again.items() if k != "REDIS_PASSWORD"} == {
        k: v for k, v in first.items() if k != "REDIS_PASSWORD"
    }
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_the_generated_env_file_is_never_committed() -> None:
    assert "docker/.env" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()
