"""Registry: the MLflow run of a training, the model version, the gate decision, the aliases, the model card.

One training is one MLflow run in the experiment named after the model, with:

* params: task, primary metric, algorithm, seed, the estimator's effective hyper-parameters (``model.<name>``),
  window and holdout days, decision threshold (classification), target, feature service and feature lists;
* metrics, logged in batches (``MlflowClient.log_batch``): holdout scores (``holdout.auc``, ``holdout.brier`` ...
  or ``holdout.rmse``, ``holdout.mae``, ``holdout.r2`` ..., per slice ``holdout.slice.<column>.<value>.<metric>``),
  train scores (``train.*``), fit seconds, rows;
* tags: data window, holdout start, dataset digests, validation summary, feature service, git sha
  (``mlflow.source.git.commit``), the idempotency key ``training_key``, and the caller's tags (Airflow dag and
  run id);
* the model (``mlflow.sklearn.log_model``): skops format, only with types of the project's allowlist
  (:mod:`airflow_mlops.model_files`; the sha256 of the stored file is the version tag ``model.sha256``), a
  signature (numeric inputs as double, categorical as string; output: the two class probabilities, the pyfunc
  flavour calling ``predict_proba``, or the predicted value, ``predict``) and an input example.

The version is registered under ``spec.name`` with the tag ``training_key`` (a hash of the training-relevant
spec content, window, dataset digests and seed) and gets the alias ``@challenger``. Registering is idempotent: if
a version with the same key exists it is returned (``created=False``); if a previous attempt registered it but
died before finishing (MLflow outage), the re-run completes that version instead of registering a duplicate.

:func:`decide` scores the challenger and ``@champion`` on the same holdout, applies
:func:`airflow_mlops.evaluation.gate`, records the decision (tags ``gate.decision``, ``gate.reasons``, metrics
``gate.challenger.*``/``gate.champion.*``) and writes ``model_card.md`` and ``gate_decision.json`` to the
challenger's run. :func:`promote` moves ``@champion`` to a version whose gate passed (the old champion keeps
``@previous``); it refuses versions that were not gated, were rejected, or were gated against another champion
than the current one. Aliases only, never the deprecated stages.

Tracking: ``Settings.mlflow_tracking_uri`` (default: the ``mlflow`` database of the embedded PostgreSQL;
stores reached without a tracking server keep their artifacts under ``$MLOPS_HOME/mlflow/artifacts``). An
unreachable or failing MLflow raises :class:`RegistryError` naming the URI; the Airflow task retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import subprocess  # ruff: ignore[suspicious-subprocess-import] - starts the project's own servers and tools, argument lists only
import tempfile
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.evaluation import GateDecision, Scores, gate, score
from airflow_mlops.locks import file_lock
from airflow_mlops.model_files import DIGEST_TAG, load_trusted, model_file, trusted_types_of
from airflow_mlops.settings import PROJECT_ROOT, Settings, get_settings
from airflow_mlops.specs import ModelSpec, SpecFileError, load_spec
from airflow_mlops.training import FitResult, TrainingSet, build_training_set, fit, model_input
from airflow_mlops.zones import file_sha256

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
TRAINING_KEY = "training_key"
DECISION_TAG = "gate.decision"
GATED_AGAINST_TAG = "gate.champion_version"
CARD_FILE = "model_card.md"
DECISION_FILE = "gate_decision.json"
MODEL_ARTIFACT = "model"
#: MLflow's limits per ``log_batch`` call.
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}
_TAG_LIMIT = 5000


class RegistryError(RuntimeError):
    """MLflow is unreachable or refused an operation, or a registry rule was broken; the message says which."""


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version: ``created`` is False when an existing version was returned."""

    name: str
    version: int
    run_id: str
    created: bool = False

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "created": self.created}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelVersionRef:
        return cls(
            name=str(raw["name"]),
            version=int(raw["version"]),
            run_id=str(raw["run_id"]),
            created=bool(raw.get("created")),
        )


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train` did: the version, the decision, the aliases before and after, the timings."""

    model: str
    ref: ModelVersionRef
    decision: GateDecision
    promoted: bool
    champion_before: ModelVersionRef | None
    champion_after: ModelVersionRef | None
    training_set: dict[str, Any]
    scores: Scores | None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ref": self.ref.to_dict(),
            "decision": self.decision.to_dict(),
            "promoted": self.promoted,
            "champion_before": self.champion_before.to_dict() if self.champion_before else None,
            "champion_after": self.champion_after.to_dict() if self.champion_after else None,
            "training_set": self.training_set,
            "holdout": self.scores.metrics() if self.scores else None,
            "seconds": self.seconds,
        }


# ----------------------------------------------------------------------------------------------------------
# Connection
# ----------------------------------------------------------------------------------------------------------


def _is_local(uri: str) -> bool:
    """True for stores without a tracking server (a database URL): the client writes the artifacts itself."""
    return not uri.startswith(("http://", "https://", "databricks"))


def _prepare_local_store(settings: Settings) -> None:
    if _is_local(settings.mlflow_tracking_uri):
        artifacts_root(settings).mkdir(parents=True, exist_ok=True)


def artifacts_root(settings: Settings) -> Path:
    """Where stores without a tracking server keep artifacts: ``$MLOPS_HOME/mlflow/artifacts`` (never ./mlruns)."""
    return settings.home / "mlflow" / "artifacts"


@contextlib.contextmanager
def _errors(settings: Settings, action: str) -> Generator[None]:
    """Turn MLflow and connection failures into :class:`RegistryError` naming the tracking URI."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, requests.RequestException, ConnectionError, TimeoutError) as exc:
        raise RegistryError(
            f"MLflow at {settings.mlflow_tracking_uri}: {action} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _client(settings: Settings) -> MlflowClient:
    """A client of the configured tracking server/registry, checked to answer (:class:`RegistryError` if not)."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    _prepare_local_store(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _errors(settings, "connecting"):
        client.search_experiments(max_results=1)
    # log_model, register_model and load_model use the process-wide URIs.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client


def _experiment_id(client: MlflowClient, spec: ModelSpec, settings: Settings) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(spec.name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    location = None
    if _is_local(settings.mlflow_tracking_uri):
        location = (artifacts_root(settings) / spec.name).as_uri()
    try:
        return str(client.create_experiment(spec.name, artifact_location=location, tags={"dataset": spec.dataset}))
    except MlflowException:  # created concurrently
        found = client.get_experiment_by_name(spec.name)
        if found is None:
            raise
        return str(found.experiment_id)


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def _ref(version: ModelVersion, created: bool = False) -> ModelVersionRef:
    return ModelVersionRef(
        name=version.name, version=int(version.version), run_id=version.run_id or "", created=created
    )


# ----------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------


def git_sha() -> str:
    """The checkout's commit (``git rev-parse HEAD``), or ``unknown`` outside a git checkout."""
    try:
        # The user's git, found on PATH, with fixed arguments.
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # ruff: ignore[start-process-with-partial-path]
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def training_key(spec: ModelSpec, training_set: TrainingSet) -> str:
    """Idempotency key: sha256 of the training-relevant spec content, window, data digests, features and seed.

    Description, quality gate, drift policy, deploy target and the retraining schedule do not change the
    model, so they are not part of the key.
    """
    content = spec.model_dump(
        mode="json",
        exclude={"description": True, "quality": True, "drift": True, "deploy": True, "training": {"schedule"}},
    )
    payload = {
        "spec": content,
        "window": [
            training_set.window_start.isoformat(),
            training_set.window_end.isoformat(),
            training_set.holdout_start.isoformat(),
        ],
        "digests": [training_set.train_digest, training_set.holdout_digest],
        "features": [list(training_set.numeric), list(training_set.categorical)],
        "seed": spec.algorithm.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _versions_with_key(client: MlflowClient, name: str, key: str) -> list[ModelVersion]:
    versions = client.search_model_versions(f"name = '{name}' and tags.{TRAINING_KEY} = '{key}'")
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def _finished(client: MlflowClient, version: ModelVersion) -> bool:
    """A version is finished when it is READY and its run ended well (the run ends after the alias is set)."""
    if version.status != "READY" or not version.run_id:
        return False
    return client.get_run(version.run_id).info.status == "FINISHED"


def existing_version(
    spec: ModelSpec, training_set: TrainingSet, *, settings: Settings | None = None
) -> ModelVersionRef | None:
    """The finished version registered for the same training (same :func:`training_key`), if any."""
    settings = settings or get_settings()
    client = _client(settings)
    key = training_key(spec, training_set)
    with _errors(settings, "searching model versions"):
        for version in _versions_with_key(client, spec.name, key):
            if _finished(client, version):
                return _ref(version)
    return None


def _batches(
    client: MlflowClient, run_id: str, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str]
) -> None:
    """Log params, metrics and tags with ``log_batch``, in chunks within MLflow's per-request limits."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
    metric_list = [Metric(k, float(v), now, 0) for k, v in metrics.items() if not math.isnan(float(v))]
    tag_list = [RunTag(k, str(v)[:_TAG_LIMIT]) for k, v in tags.items()]
    for start in range(0, len(param_list), _BATCH["params"]):
        client.log_batch(run_id, params=param_list[start : start + _BATCH["params"]])
    for start in range(0, len(metric_list), _BATCH["metrics"]):
        client.log_batch(run_id, metrics=metric_list[start : start + _BATCH["metrics"]])
    for start in range(0, len(tag_list), _BATCH["tags"]):
        client.log_batch(run_id, tags=tag_list[start : start + _BATCH["tags"]])


@contextlib.contextmanager
def _quiet_module_scan() -> Generator[None]:
    """Silence Airflow's deprecated-attribute warnings while skops saves or loads a model.

    skops finds the module of each function it (de)serializes by ``getattr`` on every module in ``sys.modules``;
    inside an Airflow task those include Airflow's deprecation shims, and each lookup logged a warning (a
    thousand lines per task log). Only those warnings are ignored.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The `airflow\.[^`]*` (attribute )?is deprecated")
        yield


def _trusted_types(model: Any) -> list[str]:
    """The skops types to trust for ``model`` (refused: types outside :data:`model_files.TRUSTED_TYPES`)."""
    with _quiet_module_scan():
        return trusted_types_of(model)


def _download_model(uri: str, dst: Path) -> Path:
    """The MLflow model at ``uri`` (``models:/...``) downloaded into ``dst``; its local directory."""
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("scikit-learn", "skops", "numpy", "pandas", "scipy")]


def _training_tags(spec: ModelSpec, training_set: TrainingSet, key: str, sha: str) -> dict[str, str]:
    return {
        "model": spec.name,
        "dataset": spec.dataset,
        "algorithm": spec.algorithm.name,
        "feature_service": training_set.feature_service,
        TRAINING_KEY: key,
        "data.window_start": training_set.window_start.isoformat(),
        "data.window_end": training_set.window_end.isoformat(),
        "data.holdout_start": training_set.holdout_start.isoformat(),
        "data.train_digest": training_set.train_digest,
        "data.holdout_digest": training_set.holdout_digest,
        "data.missing_days": ",".join(training_set.missing_days) or "none",
        "data.rows_without_target": str(training_set.rows_without_target),
        "data.validation": json.dumps(training_set.validation, sort_keys=True),
        "git_sha": sha,
        "mlflow.source.git.commit": sha,
    }


def train_and_register(
    spec: ModelSpec,
    training_set: TrainingSet,
    fit_result: FitResult,
    *,
    tags: dict[str, str] | None = None,
    force: bool = False,
    settings: Settings | None = None,
) -> ModelVersionRef:
    """Log the training as one MLflow run, register the model version as ``@challenger`` (see the module doc).

    Idempotent: a finished version with the same :func:`training_key` is returned as is (``created=False``); one
    left unfinished by a failed attempt is completed. ``force`` registers a new version even if one exists.
    """
    import mlflow.sklearn
    from mlflow.models import infer_signature

    settings = settings or get_settings()
    client = _client(settings)
    key = training_key(spec, training_set)
    with _errors(settings, f"registering {spec.name}"):
        if not force:
            for version in _versions_with_key(client, spec.name, key):
                if version.status != "READY":
                    continue
                if _finished(client, version):
                    log.info(
                        "%s: training %s is already version %s; not registering again",
                        spec.name,
                        key[:12],
                        version.version,
                    )
                    return _ref(version)
                log.warning(
                    "%s: completing version %s left unfinished by an earlier attempt", spec.name, version.version
                )
                client.set_registered_model_alias(spec.name, CHALLENGER, version.version)
                if version.run_id:
                    client.set_terminated(version.run_id, "FINISHED")
                return _ref(version)

        experiment_id = _experiment_id(client, spec, settings)
        sha = git_sha()
        run_tags = {**_training_tags(spec, training_set, key, sha), **(tags or {})}
        params: dict[str, Any] = {
            "algorithm": fit_result.algorithm,
            "seed": fit_result.seed,
            "window_days": spec.training.window_days,
            "holdout_days": spec.training.holdout_days,
            "task": spec.task,
            "metric": spec.metric.name,
            **({"decision_threshold": spec.training.decision_threshold} if spec.is_classifier else {}),
            "target_rule": f"{spec.target.name} = {spec.target.described}",
            "feature_service": training_set.feature_service,
            "features.numeric": ",".join(training_set.numeric),
            "features.categorical": ",".join(training_set.categorical),
            **{f"model.{k}": v for k, v in sorted(fit_result.params.items())},
        }
        meta = training_set.meta()
        metrics = {
            **fit_result.scores.metrics("holdout."),
            **fit_result.train_scores.metrics("train."),
            "fit_seconds": fit_result.fit_seconds,
            "rows.train": meta["rows"]["train"],
            "rows.holdout": meta["rows"]["holdout"],
        }
        holdout = training_set.holdout
        example = model_input(holdout.head(5), training_set.numeric, training_set.categorical)
        predict_fn = "predict_proba" if spec.is_classifier else "predict"
        signature = infer_signature(example, getattr(fit_result.model, predict_fn)(example))
        trusted = _trusted_types(fit_result.model)
        run_name = f"{spec.name}-{training_set.window_end.isoformat()}"
        run_id = client.create_run(experiment_id, tags=run_tags, run_name=run_name).info.run_id
        try:
            _batches(client, run_id, params, metrics, {})
            client.log_dict(run_id, meta, "training_set.json")
            client.log_dict(run_id, fit_result.scores.to_dict(), "holdout_scores.json")
            # The logged model is created in the run's experiment explicitly: MLflow would otherwise put a model
            # logged with ``run_id`` and no active run into the default experiment (artifacts under ./mlruns).
            logged = client.create_logged_model(
                experiment_id,
                name=MODEL_ARTIFACT,
                source_run_id=run_id,
                params={k: str(v)[:6000] for k, v in params.items()},
                tags={TRAINING_KEY: key},
            )
            with _quiet_module_scan():
                info = mlflow.sklearn.log_model(
                    fit_result.model,
                    name=MODEL_ARTIFACT,
                    model_id=logged.model_id,
                    serialization_format="skops",
                    skops_trusted_types=trusted,
                    signature=signature,
                    input_example=example,
                    pyfunc_predict_fn=predict_fn,
                    pip_requirements=_pip_requirements(),
                    run_id=run_id,
                )
            with tempfile.TemporaryDirectory(prefix="model-") as tmp:  # the file as stored, digest at birth
                digest = file_sha256(model_file(_download_model(info.model_uri, Path(tmp))))
            version = mlflow.register_model(
                info.model_uri,
                spec.name,
                tags={
                    TRAINING_KEY: key,
                    DIGEST_TAG: digest,
                    "data.window": f"{training_set.window_start.isoformat()}..{training_set.window_end.isoformat()}",
                    "data.train_digest": training_set.train_digest,
                    "data.holdout_digest": training_set.holdout_digest,
                    "feature_service": training_set.feature_service,
                    "git_sha": sha,
                    **(tags or {}),
                },
            )
            client.update_model_version(
                spec.name,
                version.version,
                description=(
                    f"{fit_result.algorithm} on {training_set.window_start}..{training_set.window_end} "
                    f"(holdout from {training_set.holdout_start}): "
                    f"holdout {spec.metric.title} {fit_result.scores.primary:.4f}"
                ),
            )
            if spec.description:
                client.update_registered_model(spec.name, description=spec.description.strip())
            client.set_registered_model_alias(spec.name, CHALLENGER, version.version)
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):  # MLflow may be the reason we are here
                client.set_terminated(run_id, "FAILED")
            raise
        log.info("%s: registered version %s (run %s) as @%s", spec.name, version.version, run_id, CHALLENGER)
        return ModelVersionRef(name=spec.name, version=int(version.version), run_id=run_id, created=True)


# ----------------------------------------------------------------------------------------------------------
# Aliases, loading
# ----------------------------------------------------------------------------------------------------------


def champion(spec: ModelSpec, settings: Settings | None = None) -> ModelVersionRef | None:
    """The version holding ``@champion``, or None when there is none yet."""
    settings = settings or get_settings()
    client = _client(settings)
    with _errors(settings, f"reading @{CHAMPION} of {spec.name}"):
        version = _alias(client, spec.name, CHAMPION)
    return _ref(version) if version is not None else None


def aliases(spec: ModelSpec, settings: Settings | None = None) -> dict[str, int]:
    """``alias -> version`` of the registered model (empty if it does not exist)."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    client = _client(settings)
    with _errors(settings, f"reading the aliases of {spec.name}"):
        try:
            model = client.get_registered_model(spec.name)
        except MlflowException as exc:
            if _not_found(exc):
                return {}
            raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def load_model(ref: ModelVersionRef, settings: Settings | None = None) -> Any:
    """The fitted scikit-learn pipeline of a registered version, loaded from its skops file only if it is the
    registered file (:data:`model_files.DIGEST_TAG`) holding trusted types (:func:`model_files.load_trusted`)."""
    settings = settings or get_settings()
    digest = model_digest(ref, settings)  # also points the process-wide MLflow URIs at the store
    with _errors(settings, f"loading {ref.uri}"), tempfile.TemporaryDirectory(prefix="model-") as tmp:
        model_dir = _download_model(ref.uri, Path(tmp))
        with _quiet_module_scan():
            return load_trusted(model_dir, digest, f"{ref.name} v{ref.version}")


def download_model(ref: ModelVersionRef, dst: Path, settings: Settings | None = None) -> Path:
    """The registered version's MLflow model folder downloaded into ``dst`` (:class:`RegistryError` if it cannot be)."""
    settings = settings or get_settings()
    _client(settings)  # points the process-wide MLflow URIs at the store
    with _errors(settings, f"downloading {ref.uri}"):
        return _download_model(ref.uri, dst)


def model_digest(ref: ModelVersionRef, settings: Settings | None = None) -> str | None:
    """The sha256 of the version's model file recorded at registration (None for versions registered without)."""
    settings = settings or get_settings()
    client = _client(settings)
    with _errors(settings, f"reading {ref.uri}"):
        return client.get_model_version(ref.name, str(ref.version)).tags.get(DIGEST_TAG)


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    """A client whose tracking *and* registry URIs are the configured store (never a process-wide default)."""
    from mlflow import MlflowClient

    uri = (settings or get_settings()).mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def configure_mlflow(settings: Settings | None = None) -> None:
    """Point MLflow's process-wide tracking and registry URIs at the configured store (checked to answer)."""
    _client(settings or get_settings())


def version_tags(ref: ModelVersionRef, settings: Settings | None = None) -> dict[str, str]:
    """The tags of a registered model version."""
    settings = settings or get_settings()
    client = _client(settings)
    with _errors(settings, f"reading the tags of {ref.uri}"):
        return dict(client.get_model_version(ref.name, str(ref.version)).tags or {})


def set_version_tags(ref: ModelVersionRef, tags: dict[str, str], settings: Settings | None = None) -> None:
    """Set tags on a registered model version (for example the bento that packages it)."""
    settings = settings or get_settings()
    client = _client(settings)
    with _errors(settings, f"tagging {ref.uri}"):
        for key, value in tags.items():
            client.set_model_version_tag(ref.name, str(ref.version), key, str(value)[:_TAG_LIMIT])


# ----------------------------------------------------------------------------------------------------------
# Gate, card, promotion
# ----------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def model_card(
    spec: ModelSpec,
    ref: ModelVersionRef,
    training_set: TrainingSet,
    decision: GateDecision,
    challenger: Scores,
    champion_ref: ModelVersionRef | None,
    champion_scores: Scores | None,
    run: Any,
) -> str:
    """The Markdown model card of a gated version."""
    meta = training_set.meta()
    params = dict(run.data.params) if run is not None else {}
    run_tags = dict(run.data.tags) if run is not None else {}
    run_metrics = dict(run.data.metrics) if run is not None else {}
    validation = training_set.validation or {}
    lines = [
        f"# Model card: {ref.name} version {ref.version}",
        "",
        spec.description.strip() or "(no description)",
        "",
        f"- Registered model: `{ref.name}`, version **{ref.version}** (`{ref.uri}`), MLflow run `{ref.run_id}`",
        f"- Decision: **{decision.label.upper()}** against "
        + (f"@champion version {champion_ref.version}" if champion_ref else "no champion (first model)"),
        f"- Algorithm: `{spec.algorithm.name}`, seed {spec.algorithm.seed}; "
        f"params {json.dumps(dict(spec.algorithm.params), sort_keys=True)}",
        f"- Code: git `{run_tags.get('git_sha', 'unknown')}`; training key `{run_tags.get(TRAINING_KEY, '-')}`",
        f"- Airflow: dag `{run_tags.get('airflow.dag_id', '-')}`, run `{run_tags.get('airflow.run_id', '-')}`",
        f"- Written {datetime.now(UTC).isoformat(timespec='seconds')}",
        "",
        "## Data",
        "",
        f"- Dataset `{spec.dataset}`, features from Feast service `{training_set.feature_service}` (point-in-time)",
        f"- Window {meta['window_start']} .. {meta['window_end']}; holdout (time-based) from {meta['holdout_start']}",
        f"- Rows: train {meta['rows']['train']}, holdout {meta['rows']['holdout']}; "
        f"{'positive rate' if spec.is_classifier else 'mean label'} train "
        f"{_fmt(meta['label_mean']['train'], 3)}, holdout {_fmt(meta['label_mean']['holdout'], 3)}",
        f"- Target ({spec.task}): `{spec.target.name}` = `{spec.target.described}` "
        f"({training_set.rows_without_target} rows without a value: "
        + ("counted as negative)" if spec.is_classifier else "left out)"),
        f"- Missing days: {', '.join(training_set.missing_days) or 'none'}",
        f"- Digests (sha256): train `{training_set.train_digest}`, holdout `{training_set.holdout_digest}`",
    ]
    if validation:
        failed = validation.get("failed") or []
        lines.append(
            f"- Validation (Great Expectations): {validation.get('passed', 0)} of {validation.get('days', 0)} days "
            f"passed, {len(failed)} failed{(' (' + ', '.join(failed) + ')') if failed else ''}, "
            f"{validation.get('without_result', 0)} without a recorded result"
        )
    lines += [
        "",
        "## Features",
        "",
        f"- Numeric ({len(training_set.numeric)}): {', '.join(training_set.numeric) or 'none'}",
        f"- Categorical ({len(training_set.categorical)}): {', '.join(training_set.categorical) or 'none'} "
        "(unseen or missing categories are treated as missing)",
        "",
        f"## Holdout metrics vs champion ({challenger.rows} rows"
        + (f", threshold {challenger.threshold:g})" if challenger.threshold is not None else ")"),
        "",
        f"| metric | challenger v{ref.version} | "
        + (f"champion v{champion_ref.version} | delta |" if champion_scores and champion_ref else "champion | delta |"),
        "| --- | ---: | ---: | ---: |",
    ]
    for name in challenger.values:
        mine = challenger[name]
        theirs = champion_scores[name] if champion_scores else None
        delta = mine - theirs if theirs is not None else None
        lines.append(f"| {name} | {_fmt(mine)} | {_fmt(theirs)} | {_fmt(delta)} |")
    metric = spec.metric
    if "fit_seconds" in run_metrics:
        train_figure = _fmt(run_metrics.get(f"train.{metric.name}"))
        lines.append(f"\nFit: {run_metrics['fit_seconds']:.1f} s; train {metric.title} {train_figure}.")
    lines += [
        "",
        f"## Slices ({metric.title}; drop = how much worse the challenger is)",
        "",
        "| slice | rows | challenger | champion | drop |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for column, by_value in challenger.slices.items():
        for value, entry in by_value.items():
            other = champion_scores.slices.get(column, {}).get(value) if champion_scores else None
            known = other is not None and other.value is not None and entry.value is not None
            drop = -metric.better(entry.value, other.value) if known else None  # type: ignore[arg-type,union-attr]
            lines.append(
                f"| {column}={value} | {entry.rows} | {_fmt(entry.value)} | {_fmt(other.value if other else None)} "
                f"| {_fmt(drop)} |"
            )
    lines += ["", f"## Decision: {decision.label.upper()}", ""]
    lines += [f"- {reason}" for reason in decision.reasons]
    if challenger.reliability:
        lines += ["", "## Calibration (holdout reliability)", "", "| predicted | rows | mean predicted | observed |"]
        lines.append("| --- | ---: | ---: | ---: |")
    for b in challenger.reliability:
        lines.append(
            f"| {b['lower']:.1f}-{b['upper']:.1f} | {int(b['rows'])} | {b['mean_predicted']:.3f} | "
            f"{b['observed_rate']:.3f} |"
        )
    if params:
        lines += ["", "## Run params", ""]
        lines += [f"- `{k}`: {v}" for k, v in sorted(params.items())]
    return "\n".join(lines) + "\n"


def decide(
    spec: ModelSpec, ref: ModelVersionRef, training_set: TrainingSet, *, settings: Settings | None = None
) -> GateDecision:
    """Gate ``ref`` against ``@champion`` on the holdout of ``training_set``; record the decision and the card."""
    settings = settings or get_settings()
    client = _client(settings)
    holdout = training_set.holdout
    with _errors(settings, f"gating {ref.uri}"):
        version = client.get_model_version(ref.name, str(ref.version))
        current = _alias(client, spec.name, CHAMPION)
        champion_ref = _ref(current) if current is not None else None
        if champion_ref is not None and champion_ref.version == ref.version:
            # A re-run of a training that is already in production: keep its recorded decision and card.
            log.info("%s: version %s is already @%s; its recorded gate stands", spec.name, ref.version, CHAMPION)
            return GateDecision(
                promote=True,
                reasons=(f"version {ref.version} is already @{CHAMPION}",),
                checks=[{"check": "already_champion", "passed": True, "reason": "already champion"}],
            )
        if version.tags.get("data.holdout_digest") not in (None, training_set.holdout_digest):
            log.warning("%s: scoring version %s on another holdout than it was trained with", spec.name, ref.version)
        challenger_scores = score(load_model(ref, settings), holdout, spec)
        champion_scores: Scores | None = None
        note = None
        if champion_ref is not None:
            model = load_model(champion_ref, settings)
            lacking = [c for c in getattr(model, "feature_names_in_", []) if c not in holdout.columns]
            if lacking:
                note = (
                    f"champion version {champion_ref.version} cannot be scored on this holdout (it needs "
                    f"{', '.join(lacking)}): gated on absolute thresholds only"
                )
            else:
                champion_scores = score(model, holdout, spec)
        decision = gate(spec, challenger_scores, champion_scores)
        if note:
            decision = GateDecision(
                promote=decision.promote,
                reasons=(*decision.reasons, note),
                checks=[*decision.checks, {"check": "champion_comparable", "passed": True, "reason": note}],
            )
        against = str(champion_ref.version) if champion_ref else "none"
        metrics = challenger_scores.metrics("gate.challenger.")
        if champion_scores is not None:
            metrics.update(champion_scores.metrics("gate.champion."))
        tags = {
            DECISION_TAG: decision.label,
            "gate.reasons": "\n".join(decision.reasons),
            GATED_AGAINST_TAG: against,
            "gate.holdout_digest": training_set.holdout_digest,
        }
        _batches(client, ref.run_id, {}, metrics, tags)
        client.log_dict(ref.run_id, {**decision.to_dict(), "champion_version": against}, DECISION_FILE)
        run = client.get_run(ref.run_id)
        card = model_card(spec, ref, training_set, decision, challenger_scores, champion_ref, champion_scores, run)
        client.log_text(ref.run_id, card, CARD_FILE)
        for key, value in tags.items():
            client.set_model_version_tag(ref.name, str(ref.version), key, value[:_TAG_LIMIT])
    log.info("%s version %s: %s\n  %s", spec.name, ref.version, decision.label, "\n  ".join(decision.reasons))
    return decision


def promotion_lock(model: str, settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The lock that serializes promotions of ``model``: a file lock in the state folder (``$MLOPS_HOME/locks``).

    It holds among the processes that share the state folder: Airflow's tasks on one machine (LocalExecutor) and
    the CLI. On several machines (CeleryExecutor), the train DAG's ``max_active_runs=1`` keeps two runs of one model
    apart; a CLI training at the same time must run where the workers share the state folder.
    """
    return file_lock(settings.home / "locks" / f"{model}.promote.lock")


def promote(spec: ModelSpec, ref: ModelVersionRef, *, settings: Settings | None = None) -> None:
    """Move ``@champion`` to ``ref`` (the old champion keeps ``@previous``); only for a version whose gate passed.

    Refused with :class:`RegistryError` (nothing moves) when the version was not gated, was rejected, or was gated
    against another champion than the current one (gate again first). Promoting the current champion is a no-op.

    Two promotions of one model never interleave: the check and the two alias writes happen under a lock of the
    state folder (:func:`promotion_lock`), so of two challengers gated against the same champion (a request and a
    drift event trained at once), the first moves ``@champion`` and the second is refused (gated against another
    champion) instead of both "winning" and ``@previous`` losing one of them.
    """
    settings = settings or get_settings()
    client = _client(settings)
    with promotion_lock(spec.name, settings), _errors(settings, f"promoting {ref.uri}"):
        version = client.get_model_version(ref.name, str(ref.version))
        decision = version.tags.get(DECISION_TAG)
        if decision != "promote":
            raise RegistryError(
                f"{ref.name} version {ref.version} cannot be promoted: its gate decision is "
                f"{decision or 'missing (run decide first)'}; @{CHAMPION} stays where it is"
            )
        current = _alias(client, spec.name, CHAMPION)
        if current is not None and int(current.version) == ref.version:
            log.info("%s: version %s is already @%s", spec.name, ref.version, CHAMPION)
            return
        gated_against = version.tags.get(GATED_AGAINST_TAG, "none")
        now = str(current.version) if current is not None else "none"
        if gated_against != now:
            raise RegistryError(
                f"{ref.name} version {ref.version} was gated against champion {gated_against}, but @{CHAMPION} is now "
                f"{now}: gate it again; nothing moved"
            )
        # Each alias move is a single upsert; @previous first, so a failure in between leaves @champion intact.
        if current is not None:
            client.set_registered_model_alias(spec.name, PREVIOUS, current.version)
        client.set_registered_model_alias(spec.name, CHAMPION, str(ref.version))
        client.set_model_version_tag(ref.name, str(ref.version), "promoted_at", datetime.now(UTC).isoformat())
    log.info("%s: @%s -> version %s (@%s -> %s)", spec.name, CHAMPION, ref.version, PREVIOUS, now)


# ----------------------------------------------------------------------------------------------------------
# The whole flow
# ----------------------------------------------------------------------------------------------------------


def _load_named_spec(spec_name: str, settings: Settings) -> ModelSpec:
    path = settings.models_dir / f"{spec_name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in settings.models_dir.glob("*.y*ml")) if settings.models_dir.is_dir() else []
        raise RegistryError(
            f"no model spec {spec_name!r}: {path} does not exist (specs in {settings.models_dir}: "
            f"{', '.join(known) or 'none'})"
        )
    try:
        return load_spec(path)
    except SpecFileError as exc:
        raise RegistryError(f"model spec {path} is invalid:\n{exc}") from exc


def train(
    spec_name: str,
    window_end: date,
    *,
    force: bool = False,
    tags: dict[str, str] | None = None,
    settings: Settings | None = None,
    spec: ModelSpec | None = None,
) -> TrainOutcome:
    """The whole flow in one call: training set -> fit -> register -> gate -> promote if the gate passed.

    The same training (same :func:`training_key`) is not fitted nor registered twice unless ``force``; it is
    gated again (against the current champion). ``force`` never bypasses the gate. ``spec`` overrides the spec
    file (tests, experiments); its name must be ``spec_name``.
    """
    settings = settings or get_settings()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    spec = spec or _load_named_spec(spec_name, settings)
    if spec.name != spec_name:
        raise RegistryError(f"spec {spec.name!r} given for model {spec_name!r}")
    _client(settings)  # fail fast, before the expensive steps, when MLflow is unreachable
    before = champion(spec, settings)

    mark = time.perf_counter()
    training_set = build_training_set(spec, window_end, settings=settings)
    seconds["training_set"] = time.perf_counter() - mark

    ref = None if force else existing_version(spec, training_set, settings=settings)
    scores = None
    if ref is None:
        mark = time.perf_counter()
        result = fit(spec, training_set)
        seconds["fit"] = time.perf_counter() - mark
        scores = result.scores
        mark = time.perf_counter()
        ref = train_and_register(spec, training_set, result, tags=tags, force=force, settings=settings)
        seconds["register"] = time.perf_counter() - mark

    mark = time.perf_counter()
    decision = decide(spec, ref, training_set, settings=settings)
    seconds["decide"] = time.perf_counter() - mark
    promoted = False
    if decision.promote:
        mark = time.perf_counter()
        promote(spec, ref, settings=settings)
        seconds["promote"] = time.perf_counter() - mark
        promoted = before is None or before.version != ref.version
    seconds["total"] = time.perf_counter() - started
    return TrainOutcome(
        model=spec.name,
        ref=ref,
        decision=decision,
        promoted=promoted,
        champion_before=before,
        champion_after=champion(spec, settings),
        training_set=training_set.summary(),
        scores=scores,
        seconds=seconds,
    )


__all__ = [
    "CARD_FILE",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "ModelVersionRef",
    "RegistryError",
    "TrainOutcome",
    "aliases",
    "champion",
    "decide",
    "download_model",
    "existing_version",
    "load_model",
    "model_card",
    "model_digest",
    "promote",
    "train",
    "train_and_register",
    "training_key",
]
