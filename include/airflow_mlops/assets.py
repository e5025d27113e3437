"""Every Airflow Asset of the platform, in one registry.

Assets are named ``<dataset>.<stage>`` (data) or ``<model>.<stage>`` (models) and carry an
``x-mlops://`` URI, so they are stable across machines and state folders. Events carry small,
JSON-able extras: the partition, row counts and paths, never data.

This module imports only ``airflow.sdk``: DAG files import it at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

GROUP = "mlops"


class _Asset(Asset):
    """An :class:`~airflow.sdk.Asset` that computes its hash once.

    Airflow hashes a DAG, its schedule included, every time it sets a dependency between two of the DAG's tasks
    (``DAG.__hash__``), and ``Asset.__hash__`` serializes the asset to JSON each time: for ``train_<model>``,
    scheduled on two assets, that was a sixth of its parse (``make bench``, ``parse_cost``). The value is the
    one ``Asset`` computes, so an asset of this class and an equal plain ``Asset`` still meet in sets and
    dicts; it is kept in the instance, and the platform never changes an asset after making it. Airflow
    serializes it as a plain asset (``encode_asset_like`` matches ``Asset()``).
    """

    def __hash__(self) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = super().__hash__()
        return cached


def _asset(subject: str, stage: str) -> Asset:
    return _Asset(name=f"{subject}.{stage}", uri=f"x-mlops://{subject}/{stage}", group=GROUP)


def landed(dataset: str) -> Asset:
    """A day of ``dataset`` landed in the landing zone (extra: partition, rows, paths)."""
    return _asset(dataset, "landed")


def validated(dataset: str) -> Asset:
    """A day of ``dataset`` passed its suites and is in the validated zone (extra: partition, rows, result)."""
    return _asset(dataset, "validated")


def features(dataset: str) -> Asset:
    """A day's feature tables of ``dataset`` were built and materialized online (extra: partition, rows)."""
    return _asset(dataset, "features")


def new_window(model: str) -> Asset:
    """New data made a training window of ``model`` due: ``ingest_<dataset>`` announces it, ``train_<model>`` runs.

    Unlike ``<dataset>.features`` (one event per ingested day), this event is folded before any run exists:
    only a day whose window is complete and that is ``training.retrain_every_days`` past the last announced
    one emits it (extra: partition = the window's last day, window_start, reason; see
    :func:`airflow_mlops.pipeline.new_window_due`).
    """
    return _asset(model, "new_window")


def new_window_alias(model: str) -> AssetAlias:
    """The alias through which ``ingest_<dataset>``'s ``features`` task emits :func:`new_window` only when due.

    A task emits an event for every Asset in its outlets whenever it succeeds; through an alias it emits one
    only for what it adds at run time (``outlet_events[alias].add(new_window(model), extra=...)``), so one task
    can build the day's features every day and announce a window on the few days one is due.
    ``train_<model>`` schedules on the asset itself, which the alias resolves to.
    """
    return AssetAlias(name=f"{model}.new_window.announce", group=GROUP)


def drift(model: str) -> Asset:
    """Monitoring of ``model`` says retrain (extra: reasons, report path, figures)."""
    return _asset(model, "drift")


def trained(model: str) -> Asset:
    """A new version of ``model`` was registered and gated (extra: version, decision, reasons)."""
    return _asset(model, "trained")


def deployed(model: str) -> Asset:
    """A version of ``model`` passed its smoke test, serves, and is @champion (extra: version, target, URL)."""
    return _asset(model, "deployed")
