"""Shared DAG defaults, so every DAG file states its policy the same way. Imports only the stdlib."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

OWNER = "mlops"


def default_args(**overrides: Any) -> dict[str, Any]:
    """Task defaults: an owner, retries with exponential backoff, no e-mail."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }
    args.update(overrides)
    return args
