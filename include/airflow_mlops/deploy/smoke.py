"""The smoke test after every deployment: the endpoint must answer like the registry's model.

Holdout examples of the version's training window (real validated rows) go through the staged deployment
(:meth:`DeployTarget.invoke`). The same examples are scored offline by the same registered version loaded
from MLflow, with the same online feature lookup (:class:`airflow_mlops.serving.Predictor`). The test passes
when every answer carries the version being deployed and every score (probability or predicted value) matches
within the spec's ``deploy.smoke_tolerance``. A failure names the rows that differ.

The offline lookup is made just before and just after the endpoint call: when the two differ, a
materialization (a day of a running backfill, say) changed the online store in between, the endpoint may
have seen either state, and the call is made again (up to ``STABLE_ATTEMPTS`` times) instead of failing a
good model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.deploy.base import Deployment, DeployTarget
from airflow_mlops.settings import Settings, get_settings
from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


#: How many times the endpoint call is repeated while the online store changes under it.
STABLE_ATTEMPTS = 10


class SmokeTestFailed(RuntimeError):
    """The endpoint's answers differ from the registry model's; the message says how."""


@dataclass
class SmokeResult:
    passed: bool
    rows: int
    max_abs_diff: float
    wrong_version: int
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def holdout_examples(
    spec: ModelSpec, training_set_dir: str | Path, rows: int, settings: Settings | None = None
) -> pd.DataFrame:
    """``rows`` validated examples of the holdout of the training set in ``training_set_dir`` (spread evenly)."""
    import pandas as pd

    from airflow_mlops.datasets import validated_examples
    from airflow_mlops.training import HOLDOUT, PARTITION, ROW_ID, ROW_ID_DAY_FACTOR, SPLIT, TrainingSet

    settings = settings or get_settings()
    training_set = TrainingSet.load(training_set_dir)
    holdout = training_set.frame[training_set.frame[SPLIT] == HOLDOUT]
    if holdout.empty:
        raise SmokeTestFailed(f"{spec.name}: the training set in {training_set_dir} has no holdout rows")
    step = max(1, len(holdout) // rows)
    chosen = holdout.iloc[::step].head(rows)
    frames = []
    for day, group in chosen.groupby(PARTITION):
        examples = pd.read_parquet(validated_examples(spec.dataset, date.fromisoformat(str(day)), settings))
        positions = (group[ROW_ID] % ROW_ID_DAY_FACTOR).to_numpy()
        frames.append(examples.iloc[positions])
    return pd.concat(frames, ignore_index=True)


def smoke_test(
    spec: ModelSpec,
    target: DeployTarget,
    deployment: Deployment,
    examples: pd.DataFrame,
    *,
    settings: Settings | None = None,
) -> SmokeResult:
    """Compare the deployment's answers for ``examples`` with the registered version's offline predictions."""
    from airflow_mlops.registry import ModelVersionRef, load_model
    from airflow_mlops.serving import Predictor, payload, request_frame

    settings = settings or get_settings()
    started = time.perf_counter()
    ref = ModelVersionRef(name=spec.name, version=deployment.version, run_id="", created=False)
    # The reference: the registry's scikit-learn model, whatever form the endpoint serves.
    predictor = Predictor(spec, load_model(ref, settings), deployment.version, settings=settings, compiled=False)
    schema = predictor.schema
    body = payload(schema, examples)
    rows = getattr(schema.request.model_validate(body), schema.collection)
    frame = request_frame(schema, rows)
    failures: list[str] = []
    for attempt in range(1, STABLE_ATTEMPTS + 1):
        served = predictor.lookup(frame)
        try:
            online = target.invoke(deployment, body)["predictions"]
        except Exception as exc:
            return SmokeResult(
                False, len(examples), float("nan"), 0, [f"endpoint call failed: {exc}"], time.perf_counter() - started
            )
        if predictor.lookup(frame).equals(served):
            break
        log.info("%s: the online store changed during smoke call %s (a materialization); again", spec.name, attempt)
        time.sleep(1)
    else:
        failures.append(f"the online store changed during each of {STABLE_ATTEMPTS} calls: nothing to compare with")
    if len(online) != len(rows):
        failures.append(f"{len(online)} predictions for {len(rows)} rows")
    expected = predictor.scores(frame, served)
    wrong_version = sum(1 for p in online if int(p.get("model_version", -1)) != deployment.version)
    if wrong_version:
        failures.append(f"{wrong_version} answers are not from version {deployment.version}")
    max_diff = 0.0
    for index, (p, want) in enumerate(zip(online, expected, strict=False)):
        diff = abs(float(p[schema.score]) - float(want))
        max_diff = max(max_diff, diff)
        if diff > spec.deploy.smoke_tolerance and len(failures) < 10:
            shown = ", ".join(f"{name}={getattr(rows[index], name)}" for name in schema.columns)
            failures.append(
                f"row {index} ({shown}): endpoint {float(p[schema.score]):.6f} vs offline {float(want):.6f}"
            )
    return SmokeResult(
        passed=not failures,
        rows=len(online),
        max_abs_diff=max_diff,
        wrong_version=wrong_version,
        failures=failures,
        seconds=time.perf_counter() - started,
    )
