"""The project's own Python, named from configuration by ``module:attribute``.

A dataset file names its feature function (and, if it replays a package, its source) by dotted path, the
way Databricks MLOps Stacks names a ``features_transform_module``. Modules are looked up in the datasets
folder first (``Settings.datasets_dir``, so ``include/datasets/<module>.py`` needs no installation), then on
``sys.path``. Errors name the path, what was missing and where to look.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from pathlib import Path
from typing import Any

#: ``package.module:attribute`` (the attribute may itself be dotted: ``module:Class.method``).
DOTTED_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_PATH_LOCK = threading.Lock()


class UserCodeError(ImportError):
    """A dotted path from configuration does not name a usable object; the message says which and why."""


def is_dotted_path(value: str) -> bool:
    """Whether ``value`` has the ``module:attribute`` form (not a folder or an ``s3://`` prefix)."""
    return bool(DOTTED_PATH.match(value))


def load_object(dotted: str, search: Path | None = None) -> Any:
    """The object named ``module:attribute``, importing ``module`` with ``search`` first on ``sys.path``."""
    if not is_dotted_path(dotted):
        raise UserCodeError(f"{dotted!r} is not a dotted path of the form module:attribute (e.g. my_features:build)")
    module_name, attribute = dotted.split(":", 1)
    if search is not None and search.is_dir():
        folder = str(search.resolve())
        with _PATH_LOCK:
            if folder not in sys.path:
                sys.path.insert(0, folder)
    try:
        value: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            where = f"{search}/{module_name.replace('.', '/')}.py or an installed module" if search else "sys.path"
            raise UserCodeError(f"{dotted}: no module {module_name!r} (looked for {where})") from exc
        raise UserCodeError(f"{dotted}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: say so, keep the cause
        raise UserCodeError(f"{dotted}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise UserCodeError(f"{dotted}: {module_name!r} has no attribute {attribute!r}")
        value = getattr(value, part)
    return value


def load_callable(dotted: str, search: Path | None = None) -> Any:
    """Like :func:`load_object`, and the object must be callable."""
    value = load_object(dotted, search)
    if not callable(value):
        raise UserCodeError(f"{dotted}: {type(value).__name__} is not callable")
    return value
