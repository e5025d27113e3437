"""Models loaded only from trusted types, and only the file that was registered.

A scikit-learn model is code as much as data: loading one may call whatever its file names. MLflow's
``mlflow.sklearn.load_model`` trusts the types listed in the model's own ``MLmodel`` file, so whoever can write
an artifact decides what is trusted. Every process the project starts therefore runs with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (MLflow then refuses to deserialize any model, skops included),
and the engine loads models here instead:

1. the model directory's ``MLmodel`` must name the skops format (never pickle or cloudpickle);
2. the model file's sha256 must equal the digest recorded on the model version at registration
   (``model.sha256``): a replaced file is refused with both digests;
3. every type in the file that skops does not trust by default must be in :data:`TRUSTED_TYPES`, the project's
   own allowlist of exact names (no prefixes: ``numpy.`` would admit ``numpy.testing._private.utils.runstring``,
   a plain ``exec``); anything else is refused with the types named;
4. only then ``skops.io.load`` runs, trusting exactly those types.

:data:`TRUSTED_TYPES` covers the pipelines :func:`airflow_mlops.training.build_pipeline` builds for every
algorithm in :data:`airflow_mlops.specs.ALGORITHMS`; ``tests/unit/test_model_files.py`` fits each and checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from airflow_mlops.zones import file_sha256

#: Types beyond skops' own default-trusted ones that the project's fitted pipelines hold: exact names only.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
        "sklearn.utils.validation.check_array",
    }
)
#: The model version tag holding the sha256 of the model file, set at registration.
DIGEST_TAG = "model.sha256"
#: What every process the project starts gets in its environment (see the module doc).
SAFE_ENV = {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
SKOPS = "skops"


class UntrustedModelError(RuntimeError):
    """A model file is not what was registered, not in the skops format, or holds types the project does not trust."""


def refused_types(types: Iterable[str]) -> list[str]:
    """The names among ``types`` (skops' untrusted types of a model) that :data:`TRUSTED_TYPES` does not admit."""
    return sorted(t for t in set(types) if t not in TRUSTED_TYPES)


def trusted_types_of(model: Any) -> list[str]:
    """The types to trust when saving ``model`` in the skops format; refuses a model holding any other type."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = refused_types(untrusted)
    if refused:
        raise UntrustedModelError(
            f"the model holds types the project does not trust: {', '.join(refused)} "
            "(airflow_mlops.model_files.TRUSTED_TYPES lists the exact types it admits)"
        )
    return sorted(untrusted)


def model_file(model_dir: Path) -> Path:
    """The skops file of the MLflow model in ``model_dir`` (its ``MLmodel`` must say skops)."""
    mlmodel = model_dir / "MLmodel"
    try:
        flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["sklearn"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UntrustedModelError(f"{mlmodel}: not an MLflow scikit-learn model ({type(exc).__name__}: {exc})") from exc
    fmt = flavor.get("serialization_format")
    if fmt != SKOPS:
        raise UntrustedModelError(f"{mlmodel}: serialization_format is {fmt!r}; only {SKOPS!r} models are loaded")
    path = (model_dir / str(flavor.get("pickled_model", ""))).resolve()
    if not path.is_file() or not path.is_relative_to(model_dir.resolve()):
        raise UntrustedModelError(f"{mlmodel}: model file {flavor.get('pickled_model')!r} is not a file of {model_dir}")
    return path


def load_trusted(model_dir: Path, expected_sha256: str | None, what: str) -> Any:
    """Load the model in ``model_dir`` after checking its digest and its types (see the module doc).

    ``what`` names the model in errors (``<model> v<version>``).
    """
    import skops.io

    if not expected_sha256:
        raise UntrustedModelError(
            f"{what}: no {DIGEST_TAG} was recorded at registration, so its model file cannot be verified; "
            "train it again (versions registered before digests were recorded are not loaded)"
        )
    path = model_file(model_dir)
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise UntrustedModelError(
            f"{what}: {path.name} has sha256 {actual}, but {expected_sha256} was recorded at registration: "
            "the file was changed after registration and is not loaded"
        )
    untrusted = skops.io.get_untrusted_types(file=path)
    refused = refused_types(untrusted)
    if refused:
        raise UntrustedModelError(f"{what}: {path.name} holds types the project does not trust: {', '.join(refused)}")
    return skops.io.load(path, trusted=untrusted)
