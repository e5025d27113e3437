"""Configuration files (dataset declarations, model specs): YAML validated by pydantic, errors with file, field, reason.

One loader for every kind of configuration file, so each says what is wrong the same way:
``<file>: <dotted field>: <reason>``, every problem of a file at once, and a folder's bad files never hide its
good ones. Leaf module: PyYAML and pydantic only (DAG files import it at parse time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# libyaml's loader parses about ten times faster than the pure-Python one; DAG files read every spec at parse time.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> object:
    """``yaml.safe_load`` with libyaml's C loader when PyYAML was built with it (the same safe subset)."""
    return yaml.load(text, Loader=_LOADER)  # ruff: ignore[unsafe-yaml-load] - _LOADER is CSafeLoader or SafeLoader: plain data only


@dataclass(frozen=True)
class ConfigError:
    """Why one configuration file could not be loaded: the file, the field (dotted path) and the reason."""

    path: Path
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field}: {self.reason}"


class ConfigFileError(ValueError):
    """A configuration file is invalid; ``errors`` holds one entry per problem."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def load_model_file(path: Path, model: type[M]) -> M:
    """Load ``path`` (YAML) as ``model``; its ``name`` field must match the file name.

    Raises :class:`ConfigFileError` naming the file, the field and the reason of every problem found.
    """
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError([ConfigError(path, "<file>", f"cannot be read: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([ConfigError(path, where, f"not valid YAML: {problem}")]) from None
    if not isinstance(raw, dict):
        raise ConfigFileError([ConfigError(path, "<root>", "expected a mapping of fields, got " + type(raw).__name__)])
    try:
        loaded = model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            ConfigError(path, ".".join(str(part) for part in err["loc"]) or "<root>", err["msg"])
            for err in exc.errors()
        ]
        raise ConfigFileError(errors) from None
    name = getattr(loaded, "name", path.stem)
    if name != path.stem:
        raise ConfigFileError([ConfigError(path, "name", f"{name!r} must match the file name {path.stem!r}")])
    return loaded


def load_model_folder(folder: Path, model: type[M], what: str) -> tuple[dict[str, M], list[ConfigError]]:
    """Every ``*.yaml``/``*.yml`` file of ``folder`` as ``model``, by name, and the errors of the files that fail."""
    loaded: dict[str, M] = {}
    errors: list[ConfigError] = []
    if not folder.is_dir():
        return loaded, [ConfigError(folder, "<folder>", f"{what} folder does not exist")]
    for path in sorted(folder.glob("*.y*ml")):
        try:
            item = load_model_file(path, model)
        except ConfigFileError as exc:
            errors.extend(exc.errors)
            continue
        loaded[getattr(item, "name", path.stem)] = item
    return loaded, errors
