"""The ``sagemaker`` deploy target against a SageMaker API on loopback.

No AWS is reachable from the machines this project is built on, so AWS is faked by moto's real server
(``moto_server``, started here on 127.0.0.1 and a free port, stopped by its process id). The target
talks to it exactly as it would to AWS: through the Amazon provider's ``SageMakerHook`` and the Airflow
connection ``aws_default`` (given as ``AIRFLOW_CONN_AWS_DEFAULT`` with moto's ``endpoint_url``).

What moto lacks, and how these tests deal with it:

* no ``UpdateEndpoint`` (moto's server answers HTTP 500): the second deployment's request is captured on
  the wire (botocore ``before-call`` event on the target's own client) and its blue/green
  ``DeploymentConfig`` and rollback alarms are asserted; the test then checks that the target reports the
  failure clearly and leaves everything as it was. To go on to commit and rollback after an update, one
  test answers UpdateEndpoint itself and applies its *outcome* to moto (the endpoint now serves the new
  config), i.e. it assumes SageMaker completes the update.
* ``DeploymentConfig`` is neither stored nor simulated: no canary, no baking, no alarm-driven auto
  rollback, no failed update can be shown; endpoints are ``InService`` at once, never ``Failed``.
* ``InvokeEndpoint`` returns canned bodies: the answer is queued through moto's API, so only the request
  path and the JSON parsing are checked, not the bento container behind ``/invocations``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from airflow_mlops.deploy.base import Bento, DeployError, Deployment
from airflow_mlops.deploy.sagemaker import SageMakerTarget, endpoint_name, resource_name, version_name
from airflow_mlops.deploy.targets import get_target
from airflow_mlops.processes import free_port
from airflow_mlops.settings import PROJECT_ROOT
from airflow_mlops.specs import ModelSpec

pytestmark = pytest.mark.integration

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/mlops-sagemaker"
REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/flight-delay"
ALARMS = ["flight-delay-5xx", "flight-delay-p99-latency"]
ENDPOINT = "flight-delay"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server on a free loopback port for the module; stopped by its process id."""
    port = free_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url} (exit code {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty moto and the Airflow connection ``aws_default`` pointing at it."""
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    connection = {
        "conn_type": "aws",
        "extra": {
            "endpoint_url": moto_url,
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    return moto_url


@pytest.fixture
def sm(aws: str) -> Any:
    """A plain boto3 client on moto, independent of the code under test, to look at what it did."""
    return boto3.client(
        "sagemaker",
        endpoint_url=aws,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def spec() -> ModelSpec:
    """The shipped flight_delay spec, deployed to SageMaker."""
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "models" / "flight_delay.yaml").read_text())
    raw["deploy"] = {
        "target": "sagemaker",
        "sagemaker": {
            "region": REGION,
            "image_repository": REPOSITORY,
            "execution_role_arn": ROLE,
            "instance_type": "ml.c5.xlarge",
            "instance_count": 2,
            "rollback_alarms": ALARMS,
            "wait_minutes": 1,
        },
    }
    return ModelSpec.model_validate(raw)


@pytest.fixture
def target() -> SageMakerTarget:
    return SageMakerTarget(poll_seconds=1)


def make_bento(tmp_path: Path, version: int, bento_version: str) -> Bento:
    archive = tmp_path / f"flight_delay_service-{bento_version}.bento"
    archive.write_bytes(b"bento archive " + bento_version.encode())
    return Bento(
        model="flight_delay",
        version=version,
        tag=f"flight_delay_service:{bento_version}",
        archive=str(archive),
        digest="0" * 64,
        image=f"flight_delay_service:{bento_version}",
    )


def capture(target: SageMakerTarget, operation: str, answer: Any = None) -> list[dict[str, Any]]:
    """Record the JSON body of every ``operation`` request the target's SageMaker client sends.

    With ``answer`` (a function of the body returning the parsed response), the request is answered here
    instead of being sent (for what moto lacks).
    """
    sent: list[dict[str, Any]] = []

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        sent.append(body)
        if answer is None:
            return None
        return AWSResponse(params["url"], 200, {}, None), answer(body)

    client = target.sagemaker_hook("aws_default", REGION).conn
    client.meta.events.register(f"before-call.sagemaker.{operation}", before_call)
    return sent


def names(sm: Any) -> dict[str, list[str]]:
    """Every model, endpoint config and endpoint on moto."""
    return {
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
    }


def test_names_are_valid_sagemaker_names() -> None:
    assert endpoint_name("flight_delay") == ENDPOINT
    assert version_name("flight_delay", 3, "ab12cd34ef") == "flight-delay-v3-ab12cd34ef"
    long_a = version_name("a" * 63, 1, "x" * 20)
    long_b = version_name("a" * 63, 1, "y" * 20)
    assert len(long_a) == 63 and long_a != long_b
    assert resource_name("a_b", "c.d") == "a-b-c-d"


def test_first_deploy_creates_model_config_and_endpoint(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    assert isinstance(get_target(spec), SageMakerTarget)
    bento = make_bento(tmp_path, 1, "aaaa1111")
    deployment = target.deploy(spec, bento)

    name = "flight-delay-v1-aaaa1111"
    model = sm.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["Image"] == f"{REPOSITORY}:aaaa1111"
    # No endpoint token in the container: AWS authenticates InvokeEndpoint (IAM), the container says so.
    assert model["PrimaryContainer"]["Environment"] == {
        "MLOPS_PROFILE": "production",
        "BENTOML_PORT": "8080",
        "MLOPS_ENDPOINT_AUTH": "platform",
    }
    assert model["ExecutionRoleArn"] == ROLE
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == name
    assert variant["InstanceType"] == "ml.c5.xlarge"
    assert variant["InitialInstanceCount"] == 2
    endpoint = sm.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == name
    assert endpoint["EndpointStatus"] == "InService"
    assert names(sm) == {"models": [name], "configs": [name], "endpoints": [ENDPOINT]}

    assert deployment.endpoint == ENDPOINT
    assert deployment.previous is None
    assert deployment.details["operation"] == "CreateEndpoint"
    assert deployment.details["calls"] == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert deployment.details["endpoint_arn"] == endpoint["EndpointArn"]
    # Airflow passes it along as JSON.
    assert Deployment.from_dict(json.loads(json.dumps(deployment.to_dict()))) == deployment


def test_redeploying_the_same_bento_is_idempotent(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    bento = make_bento(tmp_path, 1, "aaaa1111")
    first = target.deploy(spec, bento)
    creates = capture(target, "CreateEndpoint")
    updates = capture(target, "UpdateEndpoint")
    models = capture(target, "CreateModel")

    again = target.deploy(spec, bento)

    assert creates == updates == models == []
    assert again.details["operation"] == "unchanged"
    assert again.details["calls"] == []
    assert again.details["reused"] == [
        f"model/{first.details['model_name']}",
        f"endpoint-config/{first.details['endpoint_config']}",
    ]
    assert (again.endpoint, again.details["endpoint_config"], again.previous) == (
        ENDPOINT,
        first.details["endpoint_config"],
        None,
    )
    assert names(sm) == {
        "models": [first.details["model_name"]],
        "configs": [first.details["endpoint_config"]],
        "endpoints": [ENDPOINT],
    }


def test_second_deploy_sends_blue_green_update_and_reports_that_moto_lacks_it(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    before = names(sm)
    updates = capture(target, "UpdateEndpoint")

    with pytest.raises(DeployError) as failure:
        target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))

    [request] = updates
    assert request == {
        "EndpointName": ENDPOINT,
        "EndpointConfigName": "flight-delay-v2-bbbb2222",
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "WaitIntervalInSeconds": 15,  # a quarter of wait_minutes=1
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                },
                "TerminationWaitInSeconds": 15,
                "MaximumExecutionTimeoutInSeconds": 600,
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in ALARMS]},
        },
    }
    message = str(failure.value)
    assert "UpdateEndpoint of endpoint 'flight-delay' to endpoint config 'flight-delay-v2-bbbb2222' failed" in message
    assert "HTTP 500" in message
    assert "nothing changed" in message
    # Nothing changed: the endpoint serves v1, the v2 model and config are gone again.
    assert names(sm) == before
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "flight-delay-v1-aaaa1111"


def test_update_without_alarms_is_all_at_once(
    aws: str, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    sagemaker = spec.deploy.sagemaker.model_copy(update={"rollback_alarms": [], "wait_minutes": 30})
    spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"sagemaker": sagemaker})})
    target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    updates = capture(target, "UpdateEndpoint")
    with pytest.raises(DeployError):
        target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))
    assert updates[0]["DeploymentConfig"] == {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": 1800,
        }
    }


def simulate_update(sm: Any) -> Any:
    """Stand-in for SageMaker completing an UpdateEndpoint: moto's endpoint now serves the new config."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        created = sm.create_endpoint(EndpointName=body["EndpointName"], EndpointConfigName=body["EndpointConfigName"])
        return {"EndpointArn": created["EndpointArn"], "ResponseMetadata": {"HTTPStatusCode": 200}}

    return answer


def test_update_then_commit_retires_the_previous_version(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    updates = capture(target, "UpdateEndpoint", simulate_update(sm))

    deployment = target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))

    assert len(updates) == 1
    assert deployment.details["operation"] == "UpdateEndpoint"
    assert deployment.previous == {
        "endpoint_config": "flight-delay-v1-aaaa1111",
        "models": ["flight-delay-v1-aaaa1111"],
    }
    # A re-run of the same deploy finds the endpoint already updated, and still knows what served before.
    again = target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))
    assert again.details["operation"] == "unchanged" and len(updates) == 1
    assert again.previous == deployment.previous

    committed = target.commit(Deployment.from_dict(deployment.to_dict()))

    assert committed.details["retired"] == [
        "endpoint-config/flight-delay-v1-aaaa1111",
        "model/flight-delay-v1-aaaa1111",
    ]
    assert names(sm) == {
        "models": ["flight-delay-v2-bbbb2222"],
        "configs": ["flight-delay-v2-bbbb2222"],
        "endpoints": [ENDPOINT],
    }
    assert target.commit(committed).details["retired"] == []  # a re-run retires nothing more


def test_update_rolled_back_by_sagemaker_is_a_deploy_error(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    """SageMaker accepts the update, then an alarm rolls it back: InService again, with the old config."""
    target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    before = names(sm)
    capture(target, "UpdateEndpoint", lambda body: {"EndpointArn": "arn", "ResponseMetadata": {"HTTPStatusCode": 200}})

    with pytest.raises(DeployError, match=r"InService with endpoint config 'flight-delay-v1-aaaa1111', not 'flight-de"):
        target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))

    assert names(sm) == before


def test_rollback_after_update_restores_the_previous_config(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    updates = capture(target, "UpdateEndpoint", simulate_update(sm))
    deployment = target.deploy(spec, make_bento(tmp_path, 2, "bbbb2222"))

    target.rollback(deployment)

    assert updates[-1] == {
        "EndpointName": ENDPOINT,
        "EndpointConfigName": "flight-delay-v1-aaaa1111",
        "RetainAllVariantProperties": True,
    }
    assert sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == "flight-delay-v1-aaaa1111"
    assert names(sm) == {
        "models": ["flight-delay-v1-aaaa1111"],
        "configs": ["flight-delay-v1-aaaa1111"],
        "endpoints": [ENDPOINT],
    }
    with pytest.raises(DeployError, match="cannot commit 'flight-delay-v2-bbbb2222'"):
        target.commit(deployment)


def test_rollback_of_a_first_deployment_deletes_the_endpoint(
    aws: str, sm: Any, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    deployment = target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))

    target.rollback(deployment)

    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName=ENDPOINT)
    assert names(sm) == {"models": [], "configs": [], "endpoints": []}
    target.rollback(deployment)  # safe to repeat


def test_invoke_posts_json_and_parses_the_answer(
    aws: str, spec: ModelSpec, target: SageMakerTarget, tmp_path: Path
) -> None:
    deployment = target.deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
    answer = {"predictions": [{"probability": 0.42, "delayed": False}]}
    httpx.post(
        f"{aws}/moto-api/static/sagemaker/endpoint-results",
        json={"region": REGION, "results": [{"Body": json.dumps(answer), "ContentType": "application/json"}]},
    ).raise_for_status()
    invocations = []
    runtime = target.runtime_client("aws_default", REGION)
    runtime.meta.events.register(
        "before-call.sagemaker-runtime.InvokeEndpoint", lambda params, **_: invocations.append(params) and None
    )

    payload = {"flights": [{"month": 1, "hour": 6, "carrier": "UA", "origin": "EWR", "dest": "IAH"}]}
    assert target.invoke(deployment, payload) == answer

    [sent] = invocations
    assert sent["url_path"] == f"/endpoints/{ENDPOINT}/invocations"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert json.loads(sent["body"]) == payload

    # moto's canned default body is no JSON: said clearly.
    with pytest.raises(DeployError, match="not a JSON object"):
        target.invoke(deployment, {"flights": []})


def test_missing_role_fails_before_any_aws_call(spec: ModelSpec, tmp_path: Path) -> None:
    sagemaker = spec.deploy.sagemaker.model_copy(update={"execution_role_arn": ""})
    spec = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"sagemaker": sagemaker})})
    with pytest.raises(DeployError, match="execution_role_arn is empty"):
        SageMakerTarget().deploy(spec, make_bento(tmp_path, 1, "aaaa1111"))
