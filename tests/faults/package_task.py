"""Package one registered model version in this process, as the train DAG's ``package`` task does.

``python -m tests.faults.package_task MODEL VERSION RUN_ID`` with the settings of the environment (``MLOPS_HOME``,
``MLOPS_MLFLOW_TRACKING_URI`` ...). On success it prints the bento as JSON and exits 0; on a
:class:`~airflow_mlops.packaging.PackagingError` it prints ``PackagingError: <message>`` to stderr and exits 1.

A process of its own because BentoML fixes its store (``BENTOML_HOME``) the first time it is used in a process, as
each Airflow task process does.
"""

from __future__ import annotations

import json
import sys

from airflow_mlops.packaging import PackagingError, package
from airflow_mlops.registry import ModelVersionRef
from airflow_mlops.settings import load_settings
from airflow_mlops.specs import load_spec


def main(argv: list[str]) -> int:
    model, version, run_id = argv
    settings = load_settings()
    spec = load_spec(settings.models_dir / f"{model}.yaml")
    ref = ModelVersionRef(name=model, version=int(version), run_id=run_id)
    try:
        bento = package(spec, ref, settings=settings)
    except PackagingError as exc:
        print(f"PackagingError: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(bento.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
