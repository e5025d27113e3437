"""Model specs: one YAML file per model under ``include/models/``, validated by pydantic.

A spec says everything the platform needs to run a model's life: which dataset feeds it, which
entities and Feast feature service it uses, how the target is derived, which algorithm to fit, the
training window, the quality gate, the drift policy and where to deploy. A new model is a new spec
file (plus its feature views), never new DAG code.

:func:`load_specs` never lets one bad file hide the others: it returns the valid specs and, for each
invalid file, an error naming the file, the field and the reason.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from airflow_mlops.config_files import ConfigError, ConfigFileError, load_model_file, load_model_folder
from airflow_mlops.settings import get_settings
from airflow_mlops.user_code import is_dotted_path

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_TARGET_RULE = re.compile(r"^\s*(?P<column>[A-Za-z_]\w*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>-?\d+(\.\d+)?)\s*$")
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


CLASSIFICATION, REGRESSION = "binary_classification", "regression"
Task = Literal["binary_classification", "regression"]


@dataclass(frozen=True)
class Metric:
    """A metric the gate and monitoring can judge on: its name, how people write it, its task and direction."""

    name: str
    title: str
    task: str
    higher_is_better: bool
    no_skill: float  #: what a model without skill scores (the bar when the spec sets none)

    def better(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` (negative: worse), whatever the metric's direction."""
        return new - old if self.higher_is_better else old - new


#: The metrics a spec may name in ``quality.metric``.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("auc", "AUC", CLASSIFICATION, True, 0.5),
        Metric("log_loss", "log loss", CLASSIFICATION, False, math.log(2)),
        Metric("rmse", "RMSE", REGRESSION, False, math.inf),
        Metric("mae", "MAE", REGRESSION, False, math.inf),
        Metric("r2", "R2", REGRESSION, True, 0.0),
    )
}
#: The primary metric of a task when the spec names none.
DEFAULT_METRIC = {CLASSIFICATION: "auc", REGRESSION: "rmse"}
#: The algorithms of each task.
ALGORITHMS = {
    CLASSIFICATION: ("hist_gradient_boosting", "random_forest", "logistic_regression"),
    REGRESSION: ("hist_gradient_boosting", "random_forest", "ridge"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetRule(_Strict):
    """The label: a rule or a column of the example's row, or a function that may look ahead.

    ``rule`` thresholds a column of the example's own row (``amount >= 100``: a yes/no label, for
    classification); ``value`` takes a numeric column as it is (regression). ``function`` (``module:function``,
    looked up beside the dataset files) is called with the window's examples and the dataset's tables up to
    ``horizon_days`` after the window (:class:`airflow_mlops.training.LabelInputs`), for labels such as "no order
    in the next 30 days" or "units sold over the next week"; a training set then waits until those days are
    validated. Give exactly one of the three.
    """

    rule: str | None = Field(default=None, description="'<column> <op> <number>', op one of >=, <=, >, <, ==, !=")
    value: str | None = Field(default=None, description="numeric column of the example whose value is the label")
    function: str | None = Field(default=None, description="module:function computing the label (may look ahead)")
    horizon_days: int = Field(default=0, ge=0, le=366, description="days after an example its label looks at")
    name: str = Field(default="label", pattern=_NAME, description="name of the derived label column")

    @field_validator("rule")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET_RULE.match(value):
            raise ValueError(
                f"{value!r} is not a target rule; write '<column> <op> <number>', for example 'amount >= 100'"
            )
        return value.strip() if value else value

    @field_validator("function")
    @classmethod
    def _function(cls, value: str | None) -> str | None:
        if value is not None and not is_dotted_path(value):
            raise ValueError(f"{value!r} is not a dotted path module:function (for example my_labels:churned)")
        return value

    @field_validator("value")
    @classmethod
    def _column_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_]\w*", value.strip()):
            raise ValueError(f"{value!r} is not a column name")
        return value.strip() if value else value

    @model_validator(mode="after")
    def _one_of(self) -> TargetRule:
        given = [name for name in ("rule", "value", "function") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give the label exactly one of `rule` (yes/no), `value` (a numeric column) or `function` "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.function is None and self.horizon_days:
            raise ValueError("horizon_days is for label functions; a rule or a value reads the example's own row")
        return self

    @property
    def described(self) -> str:
        """How the label is derived, for people (model cards, run tags)."""
        if self.function is not None:
            ahead = f", looking {self.horizon_days} day(s) ahead" if self.horizon_days else ""
            return f"{self.function}(...){ahead}"
        return str(self.rule if self.rule is not None else self.value)

    def _match(self) -> re.Match[str]:
        if self.rule is None:
            raise ValueError(f"the label {self.name!r} is computed by {self.function}, not by a rule")
        match = _TARGET_RULE.match(self.rule)
        if match is None:  # the validator refuses such rules: only a spec built without validation gets here
            raise ValueError(f"the label rule {self.rule!r} is not '<column> <op> <number>'")
        return match

    @property
    def column(self) -> str | None:
        """The column a rule or a value reads (None for a label function)."""
        if self.value is not None:
            return self.value
        return self._match()["column"] if self.rule is not None else None

    @property
    def op(self) -> str:
        return self._match()["op"]

    @property
    def threshold(self) -> float:
        return float(self._match()["value"])

    def apply(self, values: Any) -> Any:
        """Apply the rule to a scalar or a pandas Series; missing values (None, NaN, NA) give False."""
        if values is None:
            return False
        if not hasattr(values, "fillna"):  # a scalar
            return bool(values == values and _OPS[self.op](values, self.threshold))  # NaN != NaN
        return _OPS[self.op](values, self.threshold).fillna(False).astype(bool)


class Algorithm(_Strict):
    """The scikit-learn estimator to fit and its hyper-parameters."""

    name: Literal["hist_gradient_boosting", "random_forest", "logistic_regression", "ridge"]
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42


class Training(_Strict):
    """Training window: the last ``window_days`` before the window end; the last ``holdout_days`` are
    the holdout (time-based split, never random). ``schedule`` is an optional cron for time-based
    retraining on top of the data and drift triggers."""

    window_days: int = Field(default=59, ge=7, le=366)
    holdout_days: int = Field(default=7, ge=1)
    schedule: str | None = None
    decision_threshold: float = Field(default=0.5, gt=0, lt=1, description="classification: yes when p >= this")
    #: New data (the features asset) retrains only when the window end is this many days past the champion's;
    #: drift events, the cron and requests are not held back by it.
    retrain_every_days: int = Field(default=7, ge=1, le=366)

    @field_validator("holdout_days")
    @classmethod
    def _holdout_inside_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("window_days")
        if window is not None and value >= window:
            raise ValueError(f"holdout_days ({value}) must be smaller than window_days ({window})")
        return value


class Quality(_Strict):
    """The champion/challenger gate, on the spec's primary metric (see :data:`METRICS`).

    ``bar`` is the absolute bar every version must clear (``AUC >= 0.65``, ``RMSE <= 12``); without one, a
    version must beat the no-skill baseline (AUC above 0.5, R2 above 0: better than predicting the mean).
    ``min_improvement`` and ``max_slice_drop`` are in the metric's units, in its better direction.
    """

    metric: str | None = Field(default=None, description="primary metric; default auc (classification), rmse")
    bar: float | None = Field(default=None, description="absolute bar on the metric (>= or <= by its direction)")
    min_improvement: float = Field(default=0.0, description="how much better than the champion, in the metric")
    max_slice_drop: float = Field(default=0.05, ge=0, description="how much worse any slice may get")
    slices: list[str] = Field(default_factory=list, description="columns each of whose values is scored alone")


class DriftPolicy(_Strict):
    """When monitoring asks for retraining."""

    drift_share: float = Field(default=0.3, gt=0, le=1)
    feature_thresholds: dict[str, float] = Field(default_factory=dict)
    #: How much worse than the champion's holdout the served traffic may score, in the primary metric.
    max_quality_drop: float = Field(default=0.05, ge=0)
    min_rows: int = Field(default=500, ge=1)
    #: Current data of the run for day D: the served traffic of D and the days before it (a week smooths the
    #: features that are constant within a day, such as an hourly reading or the day of week).
    current_days: int = Field(default=7, ge=1, le=90)
    cooldown_hours: float = Field(default=24, ge=0)
    #: Evidently stat tests: distances by default (their threshold means the same at every sample size;
    #: p-value tests flag any difference once a day has enough rows).
    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float = Field(default=0.1, gt=0, le=1, description="drift threshold of every feature's method")


class LocalDeploy(_Strict):
    """The ``local`` target: bento servers on this machine behind a stable URL."""

    port: Annotated[int, Field(ge=1, le=65535)] = 3000
    host: str = Field(default="127.0.0.1", description="address of the stable URL: loopback unless allow_remote")
    allow_remote: bool = Field(default=False, description="let host be a non-loopback address (no auth on it)")

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> LocalDeploy:
        import ipaddress

        try:
            loopback = self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            raise ValueError(f"deploy.local.host: {self.host!r} is not an IP address or localhost") from None
        if not loopback and not self.allow_remote:
            raise ValueError(
                f"deploy.local.host: {self.host!r} is not a loopback address; the local endpoint takes no token, "
                "so set deploy.local.allow_remote: true to expose it anyway"
            )
        return self


class SageMakerDeploy(_Strict):
    """The ``sagemaker`` target: a real-time endpoint updated blue/green with auto-rollback alarms."""

    region: str = "us-east-1"
    image_repository: str = Field(default="", description="ECR repository the bento image is pushed to")
    execution_role_arn: str = ""
    instance_type: str = "ml.m5.large"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    aws_conn_id: str = "aws_default"
    rollback_alarms: list[str] = Field(default_factory=list, description="CloudWatch alarms that roll back")
    wait_minutes: Annotated[int, Field(ge=1, le=240)] = 30


class KubernetesDeploy(_Strict):
    """The ``kubernetes`` target: Deployment, Service, HPA and PodDisruptionBudget in a namespace."""

    namespace: str = "mlops"
    image_repository: str = Field(default="", description="registry/repository the bento image is pushed to")
    replicas: Annotated[int, Field(ge=1, le=100)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 6
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = 70
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    kubernetes_conn_id: str = "kubernetes_default"
    rollout_timeout_seconds: Annotated[int, Field(ge=10, le=3600)] = 600


class Deploy(_Strict):
    """Where the model is served, and each target's settings (only the chosen target's are used)."""

    target: Literal["local", "sagemaker", "kubernetes"] = "local"
    local: LocalDeploy = Field(default_factory=LocalDeploy)
    sagemaker: SageMakerDeploy = Field(default_factory=SageMakerDeploy)
    kubernetes: KubernetesDeploy = Field(default_factory=KubernetesDeploy)
    smoke_rows: Annotated[int, Field(ge=1, le=1000)] = 50
    smoke_tolerance: Annotated[float, Field(ge=0, le=1)] = 1e-6
    max_concurrency: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=128,
        description="requests one model server answers or queues at once; more get 429 with Retry-After",
    )
    batch_latency_ms: Annotated[int, Field(ge=10, le=60_000)] = Field(
        default=1000,
        description="how long a /predict_batch request may wait for its batch before 503 with Retry-After "
        "(keep it above max_concurrency times the cost of one call)",
    )


class Output(_Strict):
    """The names of a prediction's fields in the endpoint's answer."""

    probability: str = Field(default="probability", pattern=_NAME, description="classification: P(yes)")
    label: str | None = Field(
        default=None,
        pattern=_NAME,
        description="classification: the decision (probability >= threshold); default: the target's name",
    )
    value: str = Field(default="prediction", pattern=_NAME, description="regression: the predicted value")


class ModelSpec(_Strict):
    """One model's contract with the platform (``include/models/<name>.yaml``)."""

    name: str = Field(pattern=_NAME, description="registered model name in MLflow")
    description: str = ""
    task: Task = Field(default=CLASSIFICATION, description="binary_classification or regression")
    dataset: str = Field(pattern=_NAME)
    entity_keys: list[str] = Field(min_length=1)
    feature_service: str = Field(pattern=_NAME)
    target: TargetRule
    features: list[str] = Field(default_factory=list, description="request-time columns used as features")
    algorithm: Algorithm
    training: Training = Field(default_factory=Training)
    quality: Quality = Field(default_factory=Quality)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    deploy: Deploy = Field(default_factory=Deploy)
    output: Output = Field(default_factory=Output)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from airflow_mlops.datasets import get_datasets

        known = get_datasets()
        if value not in known:
            raise ValueError(f"unknown dataset {value!r}; known datasets: {', '.join(sorted(known)) or 'none'}")
        return value

    @model_validator(mode="after")
    def _fits_task(self) -> ModelSpec:
        task = self.task
        if task == REGRESSION and self.target.rule is not None:
            raise ValueError(
                f"target: a rule makes a yes/no label; for regression give `value: <numeric column>` "
                f"or a `function` (rule {self.target.rule!r})"
            )
        if task == CLASSIFICATION and self.target.value is not None:
            raise ValueError(
                f"target: `value` is for regression; set `task: regression`, or write a yes/no `rule` "
                f"such as '{self.target.value} >= 15'"
            )
        if self.algorithm.name not in ALGORITHMS[task]:
            raise ValueError(
                f"algorithm.name: {self.algorithm.name!r} is not a {task} algorithm; "
                f"choose one of {', '.join(ALGORITHMS[task])}"
            )
        metric = self.quality.metric
        if metric is not None and (metric not in METRICS or METRICS[metric].task != task):
            choices = [m.name for m in METRICS.values() if m.task == task]
            raise ValueError(f"quality.metric: {metric!r} is not a {task} metric; choose one of {', '.join(choices)}")
        return self

    @property
    def metric(self) -> Metric:
        """The primary metric: the gate's, the slices' and monitoring's (``quality.metric`` or the task's)."""
        return METRICS[self.quality.metric or DEFAULT_METRIC[self.task]]

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION

    @property
    def label_field(self) -> str | None:
        """The decision's field in a prediction (``output.label``, else the target's name); None for regression."""
        return (self.output.label or self.target.name) if self.is_classifier else None

    @property
    def score_field(self) -> str:
        """The prediction's main field: the probability (classification) or the predicted value (regression)."""
        return self.output.probability if self.is_classifier else self.output.value


#: Why one spec file could not be loaded (file, dotted field, reason).
SpecError = ConfigError
#: A spec file is invalid; ``errors`` holds one entry per problem.
SpecFileError = ConfigFileError


@dataclass
class SpecSet:
    """The result of loading a folder of specs: the valid ones by name, and the errors of the rest."""

    specs: dict[str, ModelSpec] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        """The datasets the valid specs use, sorted."""
        return sorted({spec.dataset for spec in self.specs.values()})


def load_spec(path: Path) -> ModelSpec:
    """Load and validate one spec file; raise :class:`SpecFileError` naming the file, field and reason."""
    return load_model_file(path, ModelSpec)


def load_specs(models_dir: Path | None = None) -> SpecSet:
    """Load every ``*.yaml`` spec in ``models_dir`` (default: settings); bad files do not hide good ones."""
    specs, errors = load_model_folder(models_dir or get_settings().models_dir, ModelSpec, "models")
    return SpecSet(specs=specs, errors=errors)
