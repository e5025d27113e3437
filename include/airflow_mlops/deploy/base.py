"""The one interface every deploy target implements (``local``, ``sagemaker``, ``kubernetes``).

A deployment goes through three steps, each a task of ``train_<model>``:

1. :meth:`DeployTarget.deploy` stages the new bento *beside* what serves now (a second local server, a new
   SageMaker endpoint config rolled out blue/green, a Kubernetes rollout) and returns a :class:`Deployment`.
2. The smoke test (:mod:`airflow_mlops.deploy.smoke`) sends holdout requests through
   :meth:`DeployTarget.invoke` and compares the answers with the offline predictions of the same version.
3. On success :meth:`DeployTarget.commit` makes the new bento the one that serves (switches traffic, retires
   the old one); on failure :meth:`DeployTarget.rollback` restores what served before, untouched.

Deployments are plain JSON (:meth:`Deployment.to_dict`) so Airflow tasks can pass them along.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from airflow_mlops.specs import ModelSpec


class DeployError(RuntimeError):
    """A deployment step failed; the message names the target, the resource and the reason."""


@dataclass(frozen=True)
class Bento:
    """A packaged model version: the bento in the local BentoML store and its exported archive."""

    model: str  #: registered model name (the spec's name)
    version: int  #: MLflow model version
    tag: str  #: bento tag, ``<service name>:<bento version>``
    archive: str  #: path of the exported ``.bento`` archive
    digest: str  #: sha256 of the archive
    image: str  #: container image name the generated Dockerfile builds, ``<repository>:<bento version>``

    @property
    def bento_version(self) -> str:
        return self.tag.split(":", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Bento:
        return cls(**{k: raw[k] for k in ("model", "version", "tag", "archive", "digest", "image")})


@dataclass
class Deployment:
    """What :meth:`DeployTarget.deploy` staged, enough for the smoke test, commit and rollback."""

    target: str  #: ``local``, ``sagemaker`` or ``kubernetes``
    model: str
    version: int
    bento_tag: str
    #: Where the staged bento answers (URL, endpoint name or service), for :meth:`DeployTarget.invoke`.
    endpoint: str
    #: What served before (target specific), so a rollback can restore it; None for a first deployment.
    previous: dict[str, Any] | None = None
    #: Target specific facts (resource names, process ids, ARNs, API calls made...).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Deployment:
        return cls(
            target=raw["target"],
            model=raw["model"],
            version=int(raw["version"]),
            bento_tag=raw["bento_tag"],
            endpoint=raw["endpoint"],
            previous=raw.get("previous"),
            details=dict(raw.get("details") or {}),
        )


class DeployTarget(Protocol):
    """A place where bentos serve. Implementations: :mod:`.local`, :mod:`.sagemaker`, :mod:`.kubernetes`."""

    name: str

    def deploy(self, spec: ModelSpec, bento: Bento) -> Deployment:
        """Stage ``bento`` beside what serves now; raise :class:`DeployError` (nothing changed) on failure."""
        ...

    def invoke(self, deployment: Deployment, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one ``/predict`` body (``{"<main table>": [...]}``) to the staged bento; return the JSON answer."""
        ...

    def commit(self, deployment: Deployment) -> Deployment:
        """Make the staged bento the one that serves; retire the old one."""
        ...

    def rollback(self, deployment: Deployment) -> None:
        """Remove the staged bento; what served before keeps serving, unchanged."""
        ...
