"""The deploy target a spec chooses: the one module that knows every target (they only know :mod:`.base`)."""

from __future__ import annotations

from airflow_mlops.deploy.base import DeployError, DeployTarget
from airflow_mlops.specs import ModelSpec


def get_target(spec: ModelSpec) -> DeployTarget:
    """The deploy target the spec chooses (``deploy.target``)."""
    name = spec.deploy.target
    if name == "local":
        from airflow_mlops.deploy.local import LocalTarget

        return LocalTarget()
    if name == "sagemaker":
        from airflow_mlops.deploy.sagemaker import SageMakerTarget

        return SageMakerTarget()
    if name == "kubernetes":
        from airflow_mlops.deploy.kubernetes import KubernetesTarget

        return KubernetesTarget()
    raise DeployError(f"{spec.name}: unknown deploy target {name!r} (local, sagemaker, kubernetes)")
