"""``airflow-mlops``: the platform's operations outside Airflow, and the demo.

Run ``airflow-mlops --help`` for the commands. Every command works on the state folder of the
current environment (``MLOPS_HOME``, default ``.mlops/`` in the checkout).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from airflow_mlops.settings import DATABASE_VARIABLES, Settings, SettingsError, get_settings, mask_url

console = Console(stderr=True)


def _only(kind: str, names: list[str], option: str) -> str:
    """The one configured name of ``kind``; a usage error listing them when there are several (or none)."""
    if len(names) == 1:
        return names[0]
    raise click.UsageError(f"give {option}: {len(names)} {kind} are configured ({', '.join(sorted(names)) or 'none'})")


def _one_dataset(dataset: str | None) -> str:
    """``--dataset``, or the only dataset file of the project."""
    from airflow_mlops.datasets import get_datasets

    return dataset or _only("datasets", sorted(get_datasets()), "--dataset")


def _one_model(model: str | None) -> str:
    """``--model``, or the only model spec of the project."""
    from airflow_mlops.specs import load_specs

    return model or _only("model specs", sorted(load_specs().specs), "--model")


def _spec_of(model: str) -> Any:
    from airflow_mlops.pipeline import model_spec

    return model_spec(model)


def _parse_day(_ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD", param=param) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        refresh_per_second=1,  # the states change every few seconds; rich's default 10 Hz costs CPU the runs need
    )


@click.group()
def main() -> None:
    """airflow-mlops: land, validate, train, serve and monitor tabular models on Airflow 3."""
    try:
        get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--start", required=True, callback=_parse_day, help="first day, YYYY-MM-DD")
@click.option("--end", required=True, callback=_parse_day, help="last day (included), YYYY-MM-DD")
@click.option("--dataset", default=None, help="dataset to land (default: the only one configured)")
def ingest(start: date, end: date, dataset: str | None) -> None:
    """Land the days START..END of a dataset into the landing zone (same code as the ingest DAG)."""
    from airflow_mlops.ingest import IngestError, LandingResult, land_range

    dataset = _one_dataset(dataset)

    if end < start:
        raise click.BadParameter(f"--end {end} is before --start {start}", param_hint="--end")
    total = (end - start).days + 1
    with _progress() as progress:
        bar = progress.add_task(f"ingest {dataset}", total=total, detail="")

        def on_day(result: LandingResult) -> None:
            rows = ", ".join(f"{k}={v}" for k, v in result.rows.items())
            progress.update(bar, advance=1, detail=f"{result.partition}: {rows}")

        try:
            results = land_range(dataset, start, end, on_day=on_day)
        except (IngestError, SettingsError) as exc:
            raise click.ClickException(str(exc)) from None
    from airflow_mlops.datasets import dataset_spec

    main_table = dataset_spec(dataset).main_table
    landed = sum(r.rows.get(main_table, 0) for r in results)
    console.print(f"Landed {len(results)} day(s), {landed} {main_table} rows into {get_settings().landing_dir}")


def status_report() -> dict[str, Any]:
    """What ``airflow-mlops status`` shows: state folder, databases (masked), models, endpoints, data."""
    from airflow_mlops.airflow_runtime import running_airflow
    from airflow_mlops.datasets import all_sources, load_datasets
    from airflow_mlops.embedded_db import embedded
    from airflow_mlops.gate import list_quarantine
    from airflow_mlops.mlflow_runtime import running_mlflow
    from airflow_mlops.specs import load_specs
    from airflow_mlops.zones import partition_days

    settings = get_settings()
    specs = load_specs()
    datasets = load_datasets(settings.datasets_dir)
    airflow = running_airflow(settings)
    partitions = {}
    for name, dataset in sorted(datasets.datasets.items()):
        for table in dataset.table_names:
            days = partition_days(settings.landing_dir, name, table)
            partitions[f"{name}.{table}"] = {
                "count": len(days),
                "first": days[0].isoformat() if days else None,
                "last": days[-1].isoformat() if days else None,
            }
    endpoints: dict[str, str] = {}
    if airflow is not None:
        endpoints["airflow"] = airflow.url
    mlflow_server = running_mlflow(settings)
    if mlflow_server is not None:
        endpoints["mlflow"] = mlflow_server.url
    from airflow_mlops.deploy.local import status as local_status

    for name in specs.specs:
        router = local_status(name, settings).get("router")
        if router and router.get("running"):
            endpoints[name] = router["url"]
    databases = {}
    for role in DATABASE_VARIABLES:
        try:
            databases[role] = mask_url(settings.database_url(role))
        except SettingsError as exc:
            databases[role] = f"unavailable: {exc}"
    db = embedded(settings.home).status().to_dict() if settings.uses_embedded_db() else None
    return {
        "profile": settings.profile.value,
        "mlops_home": str(settings.home),
        "airflow_home": str(settings.airflow_home),
        "databases": databases,
        "embedded_postgres": db,
        "sources": all_sources(settings),
        "dataset_errors": [str(e) for e in datasets.errors],
        "models": {
            name: {"dataset": s.dataset, "feature_service": s.feature_service, "deploy_target": s.deploy.target}
            for name, s in specs.specs.items()
        },
        "spec_errors": [str(e) for e in specs.errors],
        "endpoints": endpoints,
        "airflow": {"pid": airflow.pid, "url": airflow.url, "log": str(airflow.log_path)} if airflow else None,
        "landing": partitions,
        "quarantine": [f"{b.dataset} date={b.partition}" for b in list_quarantine(settings=settings)],
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(as_json: bool) -> None:
    """Show the state folder, MLflow tracking URI, models, endpoints and landed data."""
    report = status_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console.print(f"[bold]profile[/]            {report['profile']}")
    console.print(f"[bold]state folder[/]       {report['mlops_home']}")
    console.print(f"[bold]airflow home[/]       {report['airflow_home']}")
    for role, url in report["databases"].items():
        console.print(f"[bold]database {role:<12}[/]{url}")
    db = report["embedded_postgres"]
    if db is not None:
        state = f"running, pid {db['pid']}" if db["running"] else "[red]not running[/] (airflow-mlops db start)"
        console.print(f"[bold]embedded postgres[/]  {state}; data {db['root']}")
    for dataset, source in report["sources"].items():
        console.print(f"[bold]source {dataset}[/]     {source}")
    for error in report["dataset_errors"]:
        console.print(f"  [red]invalid dataset[/] {error}")
    console.print("[bold]models[/]             " + (", ".join(report["models"]) or "none"))
    for error in report["spec_errors"]:
        console.print(f"  [red]invalid spec[/] {error}")
    for name, url in report["endpoints"].items():
        console.print(f"[bold]endpoint {name}[/]   {url}")
    for table, info in report["landing"].items():
        console.print(f"[bold]landed {table}[/]     {info['count']} day(s), {info['first']} .. {info['last']}")
    if report["quarantine"]:
        console.print("[bold red]quarantined[/]        " + ", ".join(report["quarantine"]))


@main.command()
def check() -> None:
    """Validate every dataset, suite, feature definition and model spec; list every problem (exit 1 if any)."""
    from airflow_mlops.project_check import check_project

    report = check_project()
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command("compose-env")
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="env file to write (default: docker/.env, which docker/compose.yaml reads)",
)
def compose_env(path: Path | None) -> None:
    """Generate the secrets docker/compose.yaml requires into its env file (mode 0600); existing values are kept."""
    from airflow_mlops.compose_env import ENV_FILE, SECRETS, write_env_file

    target = path or ENV_FILE
    added = write_env_file(target)
    kept = [name for name in SECRETS if name not in added]
    click.echo(f"{target}: generated {', '.join(added) or 'nothing'}; kept {', '.join(kept) or 'nothing'} (mode 0600)")


@main.group()
def new() -> None:
    """Write the skeleton of a new dataset or model: every file to fill, each saying what to change."""


@new.command("dataset")
@click.argument("name")
@click.option("--start", callback=_parse_day, default=None, help="first day the ingest DAG covers (default: today)")
def new_dataset_cmd(name: str, start: date | None) -> None:
    """Dataset NAME: its file, a suite per table, the feature function and the Feast module."""
    from airflow_mlops.scaffold import ScaffoldError, new_dataset

    try:
        written = new_dataset(name, start_date=start)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: fill them in, then `airflow-mlops check`; `airflow-mlops new model NAME --dataset {name}`")


@new.command("model")
@click.argument("name")
@click.option("--dataset", required=True, help="the dataset that feeds it")
@click.option(
    "--task",
    type=click.Choice(["binary_classification", "regression"]),
    default="binary_classification",
    show_default=True,
)
def new_model_cmd(name: str, dataset: str, task: str) -> None:
    """Model NAME on DATASET: its spec, with the dataset's keys, label column and feature service filled in."""
    from airflow_mlops.scaffold import ScaffoldError, new_model

    try:
        written = new_model(name, dataset, task)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: fill it in, then `airflow-mlops check`; the DAG train_{name} appears at the next parse")


@main.group()
def quarantine() -> None:
    """Batches that failed validation: list them, release them after a fix."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def quarantine_list(as_json: bool) -> None:
    """Every quarantined partition with its files and failed expectations."""
    from dataclasses import asdict

    from airflow_mlops.gate import list_quarantine

    batches = list_quarantine()
    if as_json:
        click.echo(json.dumps([asdict(batch) for batch in batches], indent=2))
        return
    if not batches:
        console.print("Quarantine is empty.")
    for batch in batches:
        console.print(f"[bold]{batch.dataset} date={batch.partition}[/]  {batch.path}  ({', '.join(batch.files)})")
        for failure in batch.failures:
            console.print(f"  [red]-[/] {failure}")


@quarantine.command("release")
@click.argument("dataset")
@click.argument("day", metavar="DATE", callback=_parse_day)
def quarantine_release(dataset: str, day: date) -> None:
    """Validate a fixed quarantined batch again; publish it to the validated zone if it passes.

    Fix the files in the quarantine folder first (see `airflow-mlops quarantine list`). Afterwards clear
    the day's `features` task in the Airflow UI so the feature tables and the online store follow.
    """
    from airflow_mlops.gate import BatchRejected, release
    from airflow_mlops.validation import ValidationError

    try:
        published = release(dataset, day)
    except (BatchRejected, ValidationError) as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"Released {dataset} date={day.isoformat()}: published {published.rows} to the validated zone.")
    console.print(f"Next: clear build_features of ingest_{dataset} for {day.isoformat()} (downstream included).")


@main.group()
def airflow() -> None:
    """Start, stop and reach the project's own Airflow (local profile)."""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@airflow.command("start")
@click.option("--port", type=int, default=8080, show_default=True, help="API server and UI port on 127.0.0.1")
@click.option(
    "--celery",
    is_flag=True,
    help="the production executor: CeleryExecutor components instead of `airflow standalone` (needs "
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN on PostgreSQL and AIRFLOW__CELERY__BROKER_URL)",
)
def airflow_start(port: int, celery: bool) -> None:
    """Start Airflow in the background with this project's DAGs and state folder (`airflow standalone`)."""
    _ensure_airflow(port, celery=celery)


def _ensure_airflow(port: int, celery: bool = False) -> Any:
    from airflow_mlops.airflow_runtime import AirflowRuntimeError, running_airflow, start_airflow
    from airflow_mlops.processes import free_port

    settings = get_settings()
    server = running_airflow(settings)
    if server is not None:
        console.print(f"Airflow already running at {server.url} (pid {server.pid})")
        return server
    if not _port_free(port):
        new_port = free_port()
        console.print(f"[yellow]port {port} is busy; using {new_port}[/]")
        port = new_port
    from airflow_mlops.datasets import get_datasets

    console.print(f"Starting Airflow on http://127.0.0.1:{port} (home {settings.airflow_home}) ...")
    with console.status("starting Airflow") as spinner:
        try:
            server = start_airflow(
                port,
                settings,
                wait_for_dags=tuple(f"ingest_{name}" for name in sorted(get_datasets(settings))),
                progress=lambda msg: spinner.update(msg),
                celery=celery,
            )
        except AirflowRuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    console.print(f"Airflow is up at {server.url} (pid {server.pid}, log {server.log_path})")
    return server


@airflow.command("stop")
def airflow_stop() -> None:
    """Stop the Airflow started by `airflow-mlops airflow start` or the demo."""
    from airflow_mlops.airflow_runtime import running_airflow, stop_airflow

    server = running_airflow()
    if server is None:
        console.print("No Airflow of this state folder is running.")
        return
    stop_airflow(server.pid)
    console.print(f"Stopped Airflow (pid {server.pid}).")


@airflow.command("env")
@click.option("--port", type=int, default=8080, show_default=True)
def airflow_env_cmd(port: int) -> None:
    """Print `export` lines so the plain `airflow` CLI works on this project's home."""
    from airflow_mlops.airflow_runtime import airflow_env

    _databases()
    env = airflow_env(port, base={})
    secret = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"  # ruff: ignore[hardcoded-password-string] - the variable's name, not its value
    for key in sorted(env):
        if key == secret:  # the URL carries the database password: resolved when the line runs, never printed
            home = shlex.quote(env["MLOPS_HOME"])
            click.echo(f'export {key}="$(MLOPS_HOME={home} {shlex.quote(sys.argv[0])} db url airflow --show-password)"')
        elif key.startswith(("AIRFLOW", "MLOPS")):
            click.echo(f"export {key}={env[key]!r}")


@main.command()
@click.option("--dag", "dag_id", default=None, help="DAG id (default: the ingest DAG of the only dataset)")
@click.option("--start", required=True, callback=_parse_day, help="first day, YYYY-MM-DD")
@click.option("--end", required=True, callback=_parse_day, help="last day (included), YYYY-MM-DD")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait for the runs and show progress")
def backfill(dag_id: str | None, start: date, end: date, wait: bool) -> None:
    """Backfill a DAG over START..END through the running Airflow's REST API."""
    dag_id = dag_id or f"ingest_{_one_dataset(None)}"
    server = _running_or_fail()
    _backfill(server, dag_id, start, end, wait)


def _running_or_fail() -> Any:
    from airflow_mlops.airflow_runtime import running_airflow

    server = running_airflow()
    if server is None:
        raise click.ClickException("Airflow is not running: start it with `airflow-mlops airflow start`")
    return server


def _backfill(server: Any, dag_id: str, start: date, end: date, wait: bool) -> dict[str, str]:
    from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, AirflowRuntimeError

    api = AirflowApi.login(server.url, ADMIN_USER, server.password())
    try:
        # One backfill per DAG at a time, and Airflow marks one complete up to half a minute after its last
        # run: wait here, before creating the next, rather than after each (the demo trains meanwhile).
        api.wait_for_backfills(dag_id)
        backfill_id = api.create_backfill(dag_id, start, end)
    except AirflowRuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"Backfill {backfill_id} of {dag_id} for {start} .. {end} created: {server.url}/dags/{dag_id}")
    if not wait:
        return {}
    return _wait_backfill(api, dag_id, start, end)


def _wait_backfill(api: Any, dag_id: str, start: date, end: date) -> dict[str, str]:
    """Wait for the runs of ``start``..``end`` with a progress bar."""
    from airflow_mlops.airflow_runtime import AirflowRuntimeError

    total = (end - start).days + 1
    with _progress() as progress:
        bar = progress.add_task(f"backfill {dag_id}", total=total, detail="")

        def show(states: dict[str, str]) -> None:
            done = sum(1 for s in states.values() if s in ("success", "failed"))
            counts: dict[str, int] = {}
            for state in states.values():
                counts[state] = counts.get(state, 0) + 1
            progress.update(bar, completed=done, detail=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))

        try:
            states = api.wait_for_runs(dag_id, start, end, progress=show)
        except AirflowRuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    return states


def _show_features(settings: Any, model: str, day: date) -> None:
    """Print the online lookup of the model's feature service for the first example of ``day`` (what serving sees)."""
    import pandas as pd

    from airflow_mlops.datasets import validated_examples
    from airflow_mlops.features import FeatureError, online_features
    from airflow_mlops.pipeline import model_spec

    spec = model_spec(model, settings)
    path = validated_examples(spec.dataset, day, settings)
    if not path.exists():
        return
    entity = pd.read_parquet(path, columns=list(spec.entity_keys)).dropna().iloc[0].to_dict()
    try:
        [row] = online_features([entity], service=spec.feature_service, settings=settings)
    except FeatureError as exc:
        console.print(f"[yellow]Online features not available yet:[/] {exc}")
        return
    shown = {key: value for key, value in row.items() if key not in entity}
    console.print(f"Features       {spec.feature_service} for {entity}: {dict(list(shown.items())[:4])}")
    console.print(f"Feature tables {settings.features_dir}  (see feature_repo/README.md for lookups over HTTP)")


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Airflow UI port (a free one if busy)")
@click.option("--start", default="2013-01-01", callback=_parse_day, show_default=True, help="first day of history")
@click.option("--end", default="2013-03-31", callback=_parse_day, show_default=True, help="last day of history")
@click.option(
    "--summer-start",
    default="2013-06-01",
    callback=_parse_day,
    show_default=True,
    help="first day of the summer data landed before the replayed week (what a retraining after drift learns from)",
)
@click.option(
    "--replay-start", default="2013-07-01", callback=_parse_day, show_default=True, help="summer week: first day"
)
@click.option(
    "--replay-end", default="2013-07-07", callback=_parse_day, show_default=True, help="summer week: last day"
)
@click.option("--model", default=None, help="model spec (default: the only one configured)")
@click.option(
    "--stop/--keep-running", default=False, show_default=True, help="stop Airflow and the endpoint at the end"
)
def demo(
    port: int,
    start: date,
    end: date,
    summer_start: date,
    replay_start: date,
    replay_end: date,
    model: str | None,
    stop: bool,
) -> None:
    """The whole loop, unattended: history -> champion -> live traffic -> drift -> retraining -> deployment."""
    from airflow_mlops.airflow_runtime import ADMIN_USER, AirflowApi, AirflowRuntimeError, day_start, stop_airflow

    settings = get_settings()
    began = datetime.now()

    record: dict[str, Any] = {"began": began.isoformat(timespec="seconds"), "steps": []}

    def step(text: str) -> None:
        minutes = (datetime.now() - began).total_seconds() / 60
        record["steps"].append({"step": text.split(":")[0], "started_min": round(minutes, 2)})
        console.rule(f"[bold]{text}[/bold]  [dim]{minutes:.1f} min[/dim]")

    model = _one_model(model)
    ingest_dag = f"ingest_{_spec_of(model).dataset}"
    step("1/6 Database and Airflow")
    _databases()
    server = _ensure_airflow(port)
    api = AirflowApi.login(server.url, ADMIN_USER, server.password())
    train_dag, monitor_dag = f"train_{model}", f"monitor_{model}"
    try:
        step(f"2/6 History: {ingest_dag} backfilled over {start} .. {end} (validate, features, online store)")
        history_began = time.monotonic()
        states = _backfill(server, ingest_dag, start, end, wait=True)
        landed = sum(1 for s in states.values() if s == "success")
        history_minutes = (time.monotonic() - history_began) / 60
        record["history"] = {"days": landed, "minutes": round(history_minutes, 2)}
        console.print(
            f"{landed} days landed, validated and materialized in {history_minutes:.1f} min "
            f"({landed / max(history_minutes, 1e-9):.0f} days per minute)"
        )

        step(f"3/6 First champion: {train_dag} runs on the new data by itself (asset), then deploys and smoke-tests")
        history_runs = api.wait_until_idle(train_dag, timeout=1800)
        record["train_runs_during_history"] = len(history_runs)
        console.print(f"{train_dag}: {len(history_runs)} run(s) started by the history's new data")
        if _champion_version(model) is None:  # the data trigger skipped (e.g. an incomplete window): ask for it
            run_id = api.trigger(train_dag, day_start(end + timedelta(days=1)), conf={"window_end": end.isoformat()})
            api.wait_for_run(train_dag, run_id, timeout=1800)
        first = _champion_version(model)
        if first is None:
            raise click.ClickException(f"no champion after training; see {server.url}/dags/{train_dag}/runs")
        console.print(_champion_text(model))
        _show_features(settings, model, end)
        _show_predictions(model, end)

        step(f"4/6 Summer: {summer_start} .. {replay_end} lands; the week from {replay_start} is live traffic")
        _backfill(server, ingest_dag, summer_start, replay_end, wait=True)
        api.wait_until_idle(train_dag, timeout=1800)  # no new window is due (see the features task of ingest)
        replayed = _replay(model, replay_start, replay_end, batch=100)
        console.print(f"{replayed['predicted']} predictions served in {replayed['seconds']:.0f} s (prediction log)")

        step(f"5/6 Monitoring: {monitor_dag} judges the week ending {replay_end} (Evidently)")
        monitor_run = api.trigger(monitor_dag, day_start(replay_end))
        api.wait_for_run(monitor_dag, monitor_run, timeout=1800)
        verdict = _monitor_summary(settings, model, replay_end)
        console.print(f"status {verdict['status']}; retrain: {verdict['retrain']}")
        for reason in verdict["reasons"]:
            console.print(f"  - {reason}")
        console.print(f"Report         {verdict['reports'].get('drift_html', verdict['reports'].get('summary'))}")

        step(f"6/6 Retraining: the drift event schedules {train_dag}; gate, package, deploy, smoke test")
        if verdict["retrain"]:
            run = _wait_triggered(api, train_dag, monitor_dag, monitor_run)
            console.print(f"{train_dag} run {run['run_id']}: started by the drift event of {monitor_run}")
            state = api.wait_for_run(train_dag, run["run_id"], timeout=1800)
            tasks = api.task_states(train_dag, run["run_id"])
            console.print(f"  {state}: " + ", ".join(f"{task} {s}" for task, s in tasks.items()))
            console.print(_retraining_text(model, run["run_id"]))
        else:
            console.print("the policy did not ask for retraining (see the reasons above)")
        final = _champion_version(model)
        moved = "promoted" if final != first else "kept out by the gate or the smoke test (see its run)"
        console.print(f"{model}: first champion version {first}; now version {final} ({moved})")
    except AirflowRuntimeError as exc:
        raise click.ClickException(str(exc)) from None

    minutes = (datetime.now() - began).total_seconds() / 60
    step(f"Summary: the whole loop took {minutes:.1f} min")
    record["runs"] = _demo_summary(api, server, settings, model, replay_end)
    record["total_min"] = round(minutes, 2)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / "demo.json").write_text(json.dumps(record, indent=2) + "\n")  # read by `make bench`
    if stop:
        from airflow_mlops.deploy.local import stop as stop_endpoint

        stop_endpoint(model, settings)
        stop_airflow(server.pid)
        console.print("Airflow and the endpoint stopped.")
    else:
        console.print("Stop           make stop   (endpoints, Airflow, MLflow, database); make up brings them back")


def _wait_triggered(api: Any, dag_id: str, source_dag_id: str, source_run_id: str, timeout: float = 300) -> dict:
    """The run of ``dag_id`` that an asset event of ``source_run_id`` started (waits for the scheduler)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.runs_triggered_by(dag_id, source_dag_id, source_run_id)
        if runs:
            return runs[-1]
        api.check_scheduler()
        time.sleep(2)
    raise click.ClickException(
        f"no {dag_id} run consumed the asset event of {source_dag_id} run {source_run_id} within {timeout:.0f}s"
    )


def _retraining_text(model: str, run_id: str) -> str:
    """What the training of Airflow run ``run_id`` registered and what the gate decided, with its reasons."""
    from airflow_mlops.registry import mlflow_client

    client = mlflow_client(get_settings())
    for version in client.search_model_versions(f"name='{model}'"):
        tags = client.get_run(version.run_id).data.tags
        if tags.get("airflow.run_id") == run_id:
            reasons = "\n".join(f"    - {r}" for r in tags.get("gate.reasons", "").splitlines())
            window = f"{tags.get('data.window_start', '?')} .. {tags.get('data.window_end', '?')}"
            decision = tags.get("gate.decision", "no decision recorded")
            return f"  version {version.version} (window {window}): {decision}\n{reasons}"
    return f"  no model version registered by {run_id} (see its training_set task log)"


def _champion_version(model: str) -> int | None:
    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.registry import champion

    ref = champion(model_spec(model))
    return ref.version if ref else None


def _monitor_summary(settings: Any, model: str, day: date) -> dict[str, Any]:
    from airflow_mlops.monitoring import reports_dir

    path = reports_dir(settings, model, day) / "summary.json"
    if not path.exists():
        raise click.ClickException(f"monitoring wrote no summary at {path}; see the monitor run's log")
    return json.loads(path.read_text())


def _demo_summary(api: Any, server: Any, settings: Any, model: str, day: date) -> dict[str, dict[str, int]]:
    """Print where everything is; return the count of runs per DAG and ``type/state``."""
    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.registry import aliases

    all_counts: dict[str, dict[str, int]] = {}
    for dag_id in (f"ingest_{model_spec(model).dataset}", f"train_{model}", f"monitor_{model}"):
        runs = api.dag_runs(dag_id)
        counts = all_counts.setdefault(dag_id, {})
        for run in runs:
            key = f"{run['run_type']}/{run['state']}"
            counts[key] = counts.get(key, 0) + 1
        failed = sum(n for key, n in counts.items() if key.endswith("/failed"))
        flag = f"  [red]{failed} failed[/red]" if failed else ""
        console.print(f"Runs           {dag_id}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + flag)
    console.print(f"Versions       {model}: aliases {aliases(model_spec(model))}")
    console.print(f"Reports        {settings.home / 'reports' / model}  (drift.html, quality.html per day)")
    console.print(
        f"Airflow UI     {server.url}  (user admin, password in "
        f"{settings.airflow_home / 'simple_auth_manager_passwords.json.generated'})"
    )
    console.print("MLflow UI      .venv/bin/airflow-mlops mlflow start   then http://127.0.0.1:5000")
    _show_predictions(model, day)
    console.print("Status         .venv/bin/airflow-mlops status")
    return all_counts


def _token_source(settings: Settings) -> str:
    """Where the endpoint token comes from, for messages (never the token itself)."""
    return "MLOPS_ENDPOINT_TOKEN" if settings.endpoint_token_override else str(settings.endpoint_token_file)


def _show_predictions(model: str, day: date) -> None:
    """Send a few real examples of ``day`` to the deployed endpoint and print the answers."""
    try:
        answer = _predict(model, day, 3, None)
    except click.ClickException as exc:
        console.print(f"Endpoint       not answering: {exc.message}")
        return
    console.print(f'Endpoint       {answer["url"]}  (POST {{"{answer["collection"]}": [...]}})')
    console.print(f"               with 'Authorization: Bearer <token>', the token in {_token_source(get_settings())}")
    for p in answer["predictions"]:
        console.print(f"  {p['row']}: {p['answer']}")


def _champion_text(model: str) -> str:
    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.registry import RegistryError, aliases, champion

    try:
        spec = model_spec(model)
        ref = champion(spec)
        if ref is None:
            return f"Champion       none yet for {model} (the gate kept the challenger out; see its model card)"
        from airflow_mlops.registry import mlflow_client

        client = mlflow_client(get_settings())
        run = client.get_run(ref.run_id)
        figure = run.data.metrics.get(f"holdout.{spec.metric.name}")
        shown = f"holdout {spec.metric.title} {figure:.3f}; " if figure is not None else ""
        where = f"{shown}run {ref.run_id}; aliases {aliases(spec)}"
        return f"Champion       {model}@champion = version {ref.version} ({where})"
    except RegistryError as exc:
        return f"Champion       unknown: {exc}"


@main.command()
@click.argument("model")
@click.option("--window-end", callback=_parse_day, default=None, help="last day of the window (default: latest)")
@click.option("--force", is_flag=True, help="train again even if this data and spec were already trained")
def train(model: str, window_end: date | None, force: bool) -> None:
    """Train MODEL in this process through every stage of the train DAG: set, register, gate, package, deploy,
    smoke test, promote. @champion moves only once the new version serves and passed its smoke test."""
    from airflow_mlops.deploy.base import DeployError
    from airflow_mlops.deploy.smoke import SmokeTestFailed
    from airflow_mlops.packaging import PackagingError
    from airflow_mlops.pipeline import PipelineError, train_and_deploy
    from airflow_mlops.registry import RegistryError
    from airflow_mlops.training import TrainingError

    _databases()
    try:
        with console.status(f"training {model}") as status:
            result = train_and_deploy(
                model,
                window_end.isoformat() if window_end else None,
                force=force,
                tags={"trained_by": "airflow-mlops train"},
                progress=lambda stage: status.update(f"training {model}: {stage}"),
            )
    except SmokeTestFailed as exc:
        raise click.ClickException(f"{exc}") from None
    except (PipelineError, RegistryError, TrainingError, PackagingError, DeployError) as exc:
        raise click.ClickException(str(exc)) from None
    if "skipped" in result:
        raise click.ClickException(f"nothing to train: {result['skipped']}")
    version, decision = result["version"], result["decision"]
    if "promoted" in result:
        url = result["released"]["deployment"]["details"].get("url", result["released"]["deployment"]["endpoint"])
        console.print(f"{model} version {version['version']}: promoted to @champion, serving at {url}")
    else:
        console.print(f"{model} version {version['version']}: not promoted (the gate kept it out; nothing deployed)")
    for reason in decision.reasons:
        console.print(f"  - {reason}")
    console.print(_champion_text(model))


@main.command()
@click.argument("model")
@click.option("--port", type=int, default=3000, show_default=True, help="port on 127.0.0.1")
@click.option("--host", default="127.0.0.1", show_default=True)
def serve(model: str, port: int, host: str) -> None:
    """Serve MODEL's current @champion with BentoML in the foreground (packaging its bento first if needed)."""
    from airflow_mlops.packaging import PackagingError, package
    from airflow_mlops.pipeline import PipelineError, model_spec
    from airflow_mlops.registry import RegistryError, champion

    settings = get_settings()
    _databases()
    try:
        spec = model_spec(model, settings)
        ref = champion(spec, settings)
        if ref is None:
            raise click.ClickException(
                f"{model} has no @champion yet: train one first (make demo, or airflow-mlops train)"
            )
        with console.status(f"packaging {model} version {ref.version}"):
            bento = package(spec, ref, settings=settings)
    except (PipelineError, RegistryError, PackagingError) as exc:
        raise click.ClickException(str(exc)) from None
    from airflow_mlops.deploy.local import _server_env

    env = _server_env(settings)  # as a deployment starts it: trusted model types only, the endpoint token
    console.print(f"Serving {model}@champion = version {ref.version} ({bento.tag}) on http://{host}:{port}")
    console.print(
        f"  requests need 'Authorization: Bearer <token>', the token in {_token_source(settings)}; for example"
    )
    console.print(
        f'  curl -X POST http://{host}:{port}/predict -H "Authorization: Bearer $MLOPS_ENDPOINT_TOKEN" '
        "-H 'content-type: application/json' -d @request.json"
    )
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.execve(bentoml, [bentoml, "serve", bento.tag, "--host", host, "--port", str(port)], env)  # ruff: ignore[start-process-with-no-shell] - bentoml from this venv


@main.group()
def endpoint() -> None:
    """The local endpoints that deployments start (router on the stable URL, active bento server)."""


def _models(model: str | None) -> list[str]:
    from airflow_mlops.specs import load_specs

    return [model] if model else sorted(load_specs(get_settings().models_dir).specs)


@endpoint.command("status")
@click.argument("model", required=False)
def endpoint_status(model: str | None) -> None:
    """Router and active server of MODEL (default: every model)."""
    from airflow_mlops.deploy.local import status as local_status

    for name in _models(model):
        state = local_status(name)
        if not state:
            console.print(f"{name}: no local endpoint")
            continue
        for role, record in state.items():
            running = "running" if record.get("running") else "[red]not running[/red]"
            version = f" version {record['version']}" if record.get("version") else ""
            console.print(f"{name} {role:7} {record.get('url')}{version} pid {record.get('pid')} {running}")


@endpoint.command("stop")
@click.argument("model", required=False)
def endpoint_stop(model: str | None) -> None:
    """Stop the router and the active server of MODEL (default: every model)."""
    from airflow_mlops.deploy.local import stop as local_stop

    for name in _models(model):
        stopped = local_stop(name)
        console.print(f"{name}: stopped {', '.join(stopped)}" if stopped else f"{name}: nothing running")


@main.command()
@click.argument("model")
@click.option("--date", "day", required=True, callback=_parse_day, help="validated day whose examples to send")
@click.option("--rows", type=int, default=5, show_default=True, help="how many rows")
@click.option("--url", default=None, help="endpoint (default: the model's local stable URL)")
def predict(model: str, day: date, rows: int, url: str | None) -> None:
    """Send ROWS real examples of a validated day to MODEL's endpoint and print the predictions."""
    console.print_json(data=_predict(model, day, rows, url))


def _predict(model: str, day: date, rows: int, url: str | None) -> dict[str, Any]:
    import httpx
    import pandas as pd

    from airflow_mlops.datasets import validated_examples
    from airflow_mlops.endpoint_auth import auth_headers
    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.serving import payload, request_schema

    settings = get_settings()
    spec = model_spec(model, settings)
    schema = request_schema(spec, settings)
    url = url or f"http://{spec.deploy.local.host}:{spec.deploy.local.port}"
    path = validated_examples(spec.dataset, day, settings)
    if not path.exists():
        raise click.ClickException(f"no validated {spec.dataset} data for {day}: {path} is missing")
    body = payload(schema, pd.read_parquet(path).head(rows))
    try:
        response = httpx.post(f"{url}/predict", json=body, headers=auth_headers(settings.endpoint_token()), timeout=60)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"{url}/predict unreachable: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"{url}/predict answered {response.status_code}: {response.text[:500]}")
    answers = response.json()["predictions"]
    return {
        "url": f"{url}/predict",
        "collection": schema.collection,
        "predictions": [
            {"row": row, "answer": answer} for row, answer in zip(body[schema.collection], answers, strict=True)
        ],
    }


@main.command()
@click.option("--start", required=True, callback=_parse_day, help="first day, YYYY-MM-DD")
@click.option("--end", required=True, callback=_parse_day, help="last day (included), YYYY-MM-DD")
@click.option("--rate", type=float, default=0.0, show_default=True, help="rows per second (0: as fast as it answers)")
@click.option("--batch", type=int, default=50, show_default=True, help="rows per request")
@click.option("--model", default=None, help="model spec (default: the only one configured)")
@click.option("--url", default=None, help="endpoint (default: the model's local stable URL)")
def replay(start: date, end: date, rate: float, batch: int, model: str | None, url: str | None) -> None:
    """Send the real examples of START..END to MODEL's endpoint as live traffic (fills the prediction log)."""
    console.print_json(data=_replay(_one_model(model), start, end, rate=rate, batch=batch, url=url))


def _replay(model: str, start: date, end: date, *, rate: float = 0.0, batch: int = 50, url: str | None = None) -> dict:
    from airflow_mlops.ingest import days
    from airflow_mlops.pipeline import model_spec
    from airflow_mlops.replay import replay as send

    if end < start:
        raise click.BadParameter(f"--end {end} is before --start {start}")
    spec = model_spec(model)
    url = url or f"http://{spec.deploy.local.host}:{spec.deploy.local.port}"
    with _progress() as progress:
        task = progress.add_task(f"replaying {start}..{end} to {url}", total=None, detail="")
        result = send(
            spec,
            url,
            list(days(start, end)),
            rate=rate,
            batch=batch,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if result.predicted == 0:
        raise click.ClickException(f"no prediction from {url}: {'; '.join(result.errors) or 'nothing to send'}")
    return {"url": url, **result.to_dict()}


# --------------------------------------------------------------------------------------------------------
# The embedded PostgreSQL, and the whole local stack up and down
# --------------------------------------------------------------------------------------------------------


def _databases() -> None:
    """Start the embedded PostgreSQL if the settings keep a database on it (no-op otherwise)."""
    from airflow_mlops.embedded_db import EmbeddedDbError, ensure_started

    try:
        ensure_started(get_settings(), progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except EmbeddedDbError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def db() -> None:
    """The embedded PostgreSQL of the local profile (Airflow, MLflow, Feast registry, prediction log)."""


@db.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (initialized on first start; a crashed one is restarted)."""
    from airflow_mlops.embedded_db import EmbeddedDbError, embedded

    settings = get_settings()
    if not settings.uses_embedded_db():
        raise click.ClickException("every database is given by the environment: nothing embedded to start")
    server = embedded(settings.home)
    try:
        started = server.start(progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    except EmbeddedDbError as exc:
        raise click.ClickException(str(exc)) from None
    state = server.status()
    verb = "started" if started else "already running"
    console.print(f"PostgreSQL {verb} on 127.0.0.1:{state.port} (pid {state.pid}, data {server.data_dir})")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (stop Airflow and the endpoints first: `airflow-mlops down` does it all)."""
    from airflow_mlops.embedded_db import EmbeddedDbError, embedded

    try:
        stopped = embedded(get_settings().home).stop()
    except EmbeddedDbError as exc:
        raise click.ClickException(str(exc)) from None
    console.print("PostgreSQL stopped." if stopped else "The embedded PostgreSQL is not running.")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def db_status(as_json: bool) -> None:
    """Whether the embedded PostgreSQL runs, its port, data folder and databases (passwords masked)."""
    from airflow_mlops.embedded_db import embedded

    state = embedded(get_settings().home).status()
    if as_json:
        click.echo(json.dumps(state.to_dict(), indent=2))
        return
    running = f"running (pid {state.pid}, 127.0.0.1:{state.port})" if state.running else "not running"
    console.print(f"[bold]embedded postgres[/]  {running}\n[bold]data[/]               {state.root}")
    console.print(f"[bold]log[/]                {state.log}")
    for name, url in state.urls.items():
        console.print(f"[bold]{name:<19}[/]{url}")


@db.command("url")
@click.argument("database", type=click.Choice(list(DATABASE_VARIABLES)))
@click.option("--show-password", is_flag=True, help="print the password too (for scripts: keep it out of logs)")
def db_url(database: str, show_password: bool) -> None:
    """The SQLAlchemy URL of DATABASE as the settings resolve it (embedded, or from the environment)."""
    try:
        url = get_settings().database_url(database)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(url if show_password else mask_url(url))


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Airflow UI port (a free one if busy)")
def up(port: int) -> None:
    """Start what is not running, in order: the database, Airflow, each model's @champion endpoint."""
    _databases()
    _ensure_airflow(port)
    from airflow_mlops.deploy.base import DeployError
    from airflow_mlops.deploy.local import restore
    from airflow_mlops.packaging import PackagingError
    from airflow_mlops.registry import RegistryError
    from airflow_mlops.specs import load_specs

    settings = get_settings()
    for name, spec in sorted(load_specs(settings.models_dir).specs.items()):
        if spec.deploy.target != "local":
            console.print(f"{name}: deployed on {spec.deploy.target}, not on this machine")
            continue
        try:
            with console.status(f"{name}: bringing its @champion back"):
                served = restore(spec, settings)
        except (DeployError, PackagingError, RegistryError) as exc:
            raise click.ClickException(f"{name}: {exc}") from None
        if served is None:
            console.print(f"{name}: no @champion yet (train one: make demo, or airflow-mlops train {name})")
        else:
            console.print(f"{name}: version {served['version']} serves at {served['url']}")


@main.command()
def down() -> None:
    """Stop the whole local stack: the endpoints, Airflow, MLflow, then the embedded PostgreSQL."""
    from airflow_mlops.airflow_runtime import running_airflow, stop_airflow
    from airflow_mlops.deploy.local import stop as stop_endpoint
    from airflow_mlops.embedded_db import embedded
    from airflow_mlops.mlflow_runtime import running_mlflow, stop_mlflow

    settings = get_settings()
    for name in _models(None):
        stopped = stop_endpoint(name, settings)
        if stopped:
            console.print(f"{name}: stopped {', '.join(stopped)}")
    for label, server, stop in (
        ("Airflow", running_airflow(settings), stop_airflow),
        ("MLflow", running_mlflow(settings), stop_mlflow),
    ):
        if server is not None:
            stop(server.pid)
            console.print(f"Stopped {label} (pid {server.pid}).")
    if embedded(settings.home).stop():
        console.print("Stopped the embedded PostgreSQL.")


def _register_subgroups() -> None:
    from airflow_mlops.mlflow_runtime import mlflow_group

    main.add_command(mlflow_group, "mlflow")


_register_subgroups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
