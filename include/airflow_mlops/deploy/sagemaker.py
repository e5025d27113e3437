"""The ``sagemaker`` deploy target: one real-time endpoint per model, updated blue/green.

Each bento version becomes a SageMaker *model* (the bento's container image, pushed to ECR as
``<deploy.sagemaker.image_repository>:<bento version>``) and an *endpoint config* of the same name,
``<model-with-dashes>-v<version>-<bento version>``. The endpoint itself keeps a stable name,
``<model-with-dashes>``, so clients never change:

- :meth:`SageMakerTarget.deploy` creates the endpoint on a first deployment, otherwise calls UpdateEndpoint
  with a blue/green ``DeploymentConfig`` (canary when CloudWatch ``rollback_alarms`` are set, else all at
  once) and ``AutoRollbackConfiguration``; SageMaker shifts the traffic and rolls back by itself when an
  alarm fires. The call waits until the endpoint is ``InService`` *with the new config*; anything else is
  a :class:`~airflow_mlops.deploy.base.DeployError` and the new model and config are removed again.
- :meth:`SageMakerTarget.commit` retires the superseded endpoint config and model.
- :meth:`SageMakerTarget.rollback` updates the endpoint back to the previous config (or deletes the
  endpoint after a first deployment) and removes the new model and config.

Re-runs are safe: a model or endpoint config of the same name is reused, and an endpoint that already
serves the new config is left alone (the previous config is read back from a tag on the new one).

All AWS calls go through the Amazon provider (:class:`SageMakerHook`, its waiters, and an
:class:`AwsBaseHook` for ``sagemaker-runtime``) with the Airflow connection ``deploy.sagemaker.aws_conn_id``.
boto3 and the provider are imported inside the methods, so importing this module stays cheap.
The container contract and the image build are in ``docs/serving-and-deploy.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_mlops.deploy.base import Bento, DeployError, Deployment
from airflow_mlops.endpoint_auth import AUTH_VARIABLE
from airflow_mlops.specs import ModelSpec, SageMakerDeploy

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

log = logging.getLogger(__name__)

#: The one production variant of every endpoint config.
VARIANT = "AllTraffic"
#: Port the bento container listens on (SageMaker calls ``/ping`` and ``/invocations`` there).
CONTAINER_PORT = 8080
#: Tag on an endpoint config naming the config the endpoint served before it (absent on a first deployment).
PREVIOUS_CONFIG_TAG = "airflow-mlops:previous-endpoint-config"
#: Endpoint states in which the endpoint answers requests with its current config.
SERVING_STATES = frozenset({"InService", "Updating", "SystemUpdating"})
#: Longest SageMaker model, endpoint config or endpoint name.
MAX_NAME = 63
#: Longest canary bake and old-fleet bake (seconds) of a blue/green update with rollback alarms.
MAX_BAKE_SECONDS = 300


def resource_name(*parts: str) -> str:
    """A SageMaker name from ``parts``: alphanumerics and hyphens, at most 63 characters.

    Anything else becomes a hyphen; a name too long keeps its start and ends with a digest of the whole,
    so two long names never collide.
    """
    raw = "-".join(parts)
    name = re.sub(r"[^A-Za-z0-9]+", "-", raw).strip("-")
    if not name:
        raise DeployError(f"sagemaker: cannot make a resource name from {parts!r}")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - len(digest) - 1].rstrip('-')}-{digest}"
    return name


def endpoint_name(model: str) -> str:
    """The stable endpoint name of a model: ``basket_value`` -> ``basket-value``."""
    return resource_name(model)


def version_name(model: str, version: int, bento_version: str) -> str:
    """Name of the SageMaker model and endpoint config of one bento: ``basket-value-v3-<bento version>``."""
    return resource_name(model, f"v{version}", bento_version)


def image_uri(settings: SageMakerDeploy, bento: Bento) -> str:
    """The container image the model runs: ``<image_repository>:<bento version>``, else the bento's image."""
    if settings.image_repository:
        return f"{settings.image_repository}:{bento.bento_version}"
    return bento.image


def deployment_config(settings: SageMakerDeploy) -> dict[str, Any]:
    """The blue/green ``DeploymentConfig`` of an UpdateEndpoint.

    With ``rollback_alarms``: a 10 % canary bakes, then all traffic shifts and the old fleet is kept for a
    while, any alarm in alarm state meanwhile rolls back. Without alarms: all at once, old fleet retired
    right away. Every wait fits inside ``wait_minutes``.
    """
    budget = settings.wait_minutes * 60
    bake = min(MAX_BAKE_SECONDS, budget // 4) if settings.rollback_alarms else 0
    routing: dict[str, Any] = (
        {"Type": "CANARY", "WaitIntervalInSeconds": bake, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
        if settings.rollback_alarms
        else {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
    )
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": bake,
            # SageMaker accepts 600..28800 seconds.
            "MaximumExecutionTimeoutInSeconds": max(600, min(28800, budget)),
        }
    }
    if settings.rollback_alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in settings.rollback_alarms]}
    return config


def _aws_reason(exc: BaseException) -> str:
    """A one-line reason from a botocore or provider error (HTML error pages reduced to their text)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = re.sub(r"<[^>]+>", " ", str(error.get("Message", "")))
        message = " ".join(message.split())[:300]
        return f"{error.get('Code', '?')} (HTTP {status}): {message}"
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def _is_missing(exc: BaseException) -> bool:
    """Whether a SageMaker error says the resource does not exist."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    error = response.get("Error", {})
    return error.get("Code") == "ValidationException" and "Could not find" in str(error.get("Message", ""))


class SageMakerTarget:
    """Deploys bentos to a SageMaker real-time endpoint (see the module docstring).

    ``poll_seconds`` is the pause between two DescribeEndpoint calls while waiting; the number of calls
    is bounded by ``deploy.sagemaker.wait_minutes``.
    """

    name = "sagemaker"

    def __init__(self, poll_seconds: int = 30) -> None:
        self.poll_seconds = max(1, poll_seconds)
        self._hooks: dict[tuple[str, str], SageMakerHook] = {}
        self._runtimes: dict[tuple[str, str], Any] = {}

    # -- clients ---------------------------------------------------------------------------------------

    def sagemaker_hook(self, aws_conn_id: str, region: str) -> SageMakerHook:
        """The provider's SageMaker hook for a connection and region (one per target, its client cached)."""
        key = (aws_conn_id, region)
        if key not in self._hooks:
            from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

            self._hooks[key] = SageMakerHook(aws_conn_id=aws_conn_id, region_name=region)
        return self._hooks[key]

    def runtime_client(self, aws_conn_id: str, region: str) -> Any:
        """A ``sagemaker-runtime`` client (the provider has no SageMaker runtime hook: :class:`AwsBaseHook`)."""
        key = (aws_conn_id, region)
        if key not in self._runtimes:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            hook = AwsBaseHook(aws_conn_id=aws_conn_id, region_name=region, client_type="sagemaker-runtime")
            self._runtimes[key] = hook.conn
        return self._runtimes[key]

    def _hook_for(self, deployment: Deployment) -> SageMakerHook:
        details = deployment.details
        return self.sagemaker_hook(details["aws_conn_id"], details["region"])

    # -- the protocol ----------------------------------------------------------------------------------

    def deploy(self, spec: ModelSpec, bento: Bento) -> Deployment:
        """Create or blue/green-update the model's endpoint to serve ``bento``; wait until it is InService.

        Raises :class:`DeployError` naming the resource and AWS's reason; the endpoint then serves what it
        served before and the new model and endpoint config are removed.
        """
        from botocore.exceptions import ClientError

        settings = spec.deploy.sagemaker
        if bento.model != spec.name:
            raise DeployError(f"sagemaker: bento {bento.tag} is of model {bento.model!r}, not {spec.name!r}")
        if not settings.execution_role_arn:
            raise DeployError(
                f"sagemaker: {spec.name}: deploy.sagemaker.execution_role_arn is empty; SageMaker needs an IAM "
                "execution role to pull the image (see docs/serving-and-deploy.md)"
            )
        hook = self.sagemaker_hook(settings.aws_conn_id, settings.region)
        endpoint = endpoint_name(spec.name)
        name = version_name(spec.name, bento.version, bento.bento_version)
        image = image_uri(settings, bento)
        deployment = Deployment(
            target=self.name,
            model=spec.name,
            version=bento.version,
            bento_tag=bento.tag,
            endpoint=endpoint,
            details={
                "region": settings.region,
                "aws_conn_id": settings.aws_conn_id,
                "model_name": name,
                "endpoint_config": name,
                "image": image,
                "wait_minutes": settings.wait_minutes,
                "calls": [],
                "reused": [],
            },
        )
        calls: list[str] = deployment.details["calls"]
        try:
            current = self._settled_endpoint(hook, endpoint, settings.wait_minutes)
            deployment.previous = self._previous(hook, current, name)
            self._ensure_model(hook, deployment, spec, settings, image)
            self._ensure_endpoint_config(hook, deployment, spec, settings)
        except ClientError as exc:
            message = f"sagemaker: {spec.name}: preparing {name!r} failed: {_aws_reason(exc)}"
            raise DeployError(self._discard_created(hook, deployment, message)) from exc

        if current is None:
            operation, request = "CreateEndpoint", {"EndpointName": endpoint, "EndpointConfigName": name}
        elif current["EndpointConfigName"] != name:
            operation = "UpdateEndpoint"
            request = {
                "EndpointName": endpoint,
                "EndpointConfigName": name,
                "DeploymentConfig": deployment_config(settings),
            }
            deployment.details["deployment_config"] = request["DeploymentConfig"]
        else:
            operation, request = "", {}
            log.info("Endpoint %s already serves %s: nothing to update", endpoint, name)
        deployment.details["operation"] = operation or "unchanged"

        if operation:
            log.info("%s %s -> endpoint config %s", operation, endpoint, name)
            call = hook.create_endpoint if operation == "CreateEndpoint" else hook.update_endpoint
            try:
                response = call(request, wait_for_completion=False)
            except ClientError as exc:
                reason = f"{operation} of endpoint {endpoint!r} to endpoint config {name!r} failed: {_aws_reason(exc)}"
                raise DeployError(self._undo(deployment, f"sagemaker: {spec.name}: {reason}")) from exc
            calls.append(operation)
            deployment.details["endpoint_arn"] = response.get("EndpointArn", "")

        try:
            described = self._wait_in_service(hook, endpoint, settings.wait_minutes)
        except (DeployError, ClientError) as exc:
            reason = str(exc) if isinstance(exc, DeployError) else _aws_reason(exc)
            raise DeployError(self._undo(deployment, f"sagemaker: {spec.name}: {reason}")) from exc
        if described["EndpointConfigName"] != name:
            reason = described.get("FailureReason") or "no FailureReason given"
            message = (
                f"sagemaker: {spec.name}: endpoint {endpoint!r} is InService with endpoint config "
                f"{described['EndpointConfigName']!r}, not {name!r}: the update was rolled back ({reason})"
            )
            raise DeployError(self._undo(deployment, message))
        deployment.details["endpoint_arn"] = described.get("EndpointArn", "")
        log.info("Endpoint %s is InService with %s (%s)", endpoint, name, image)
        return deployment

    def invoke(self, deployment: Deployment, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` as JSON to the endpoint's ``/invocations`` (InvokeEndpoint); return the JSON answer."""
        from botocore.exceptions import ClientError

        runtime = self.runtime_client(deployment.details["aws_conn_id"], deployment.details["region"])
        try:
            response = runtime.invoke_endpoint(
                EndpointName=deployment.endpoint,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(payload).encode(),
            )
        except ClientError as exc:
            raise DeployError(f"sagemaker: InvokeEndpoint {deployment.endpoint!r} failed: {_aws_reason(exc)}") from exc
        body = response["Body"].read()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            shown = body[:200].decode(errors="replace")
            raise DeployError(
                f"sagemaker: endpoint {deployment.endpoint!r} answered {response.get('ContentType')!r} "
                f"that is not a JSON object: {shown!r}"
            )
        return answer

    def commit(self, deployment: Deployment) -> Deployment:
        """Retire the superseded endpoint config and model; the blue/green update already moved the traffic.

        Refuses (:class:`DeployError`) unless the endpoint serves the deployment's config (InService, or
        busy with an update of its own such as scaling or patching).
        """
        from botocore.exceptions import ClientError

        hook = self._hook_for(deployment)
        new_config, new_model = deployment.details["endpoint_config"], deployment.details["model_name"]
        try:
            described = self._describe(hook.describe_endpoint, deployment.endpoint)
            if described is None or described["EndpointStatus"] not in SERVING_STATES:
                status = "missing" if described is None else described["EndpointStatus"]
                raise DeployError(
                    f"sagemaker: cannot commit {new_config!r}: endpoint {deployment.endpoint!r} is {status}"
                )
            if described["EndpointConfigName"] != new_config:
                raise DeployError(
                    f"sagemaker: cannot commit {new_config!r}: endpoint {deployment.endpoint!r} serves "
                    f"{described['EndpointConfigName']!r}"
                )
            retired: list[str] = []
            previous = deployment.previous or {}
            old_config = previous.get("endpoint_config")
            if old_config and old_config != new_config:
                if self._delete_endpoint_config(hook, old_config):
                    retired.append(f"endpoint-config/{old_config}")
                for model in previous.get("models", []):
                    if model != new_model and self._delete_model(hook, model):
                        retired.append(f"model/{model}")
        except ClientError as exc:
            raise DeployError(f"sagemaker: commit of {new_config!r} failed: {_aws_reason(exc)}") from exc
        log.info("Committed %s on %s; retired %s", new_config, deployment.endpoint, retired or "nothing")
        deployment.details["committed"] = True
        deployment.details["retired"] = retired
        return deployment

    def rollback(self, deployment: Deployment) -> None:
        """Restore what served before: UpdateEndpoint back to the previous config (and wait), or delete the
        endpoint after a first deployment; then delete the new endpoint config and model. Safe to repeat."""
        from botocore.exceptions import ClientError

        hook = self._hook_for(deployment)
        endpoint = deployment.endpoint
        new_config, new_model = deployment.details["endpoint_config"], deployment.details["model_name"]
        old_config = (deployment.previous or {}).get("endpoint_config")
        wait_minutes = int(deployment.details.get("wait_minutes", 30))
        try:
            described = self._describe(hook.describe_endpoint, endpoint)
            if described is not None and described["EndpointStatus"] in hook.endpoint_non_terminal_states:
                # An update still running: let it finish (or roll itself back) before deciding.
                with contextlib.suppress(DeployError):
                    self._wait_in_service(hook, endpoint, wait_minutes)
                described = self._describe(hook.describe_endpoint, endpoint)
            serves_new = described is not None and described["EndpointConfigName"] == new_config
            if serves_new and old_config:
                log.info("Rolling endpoint %s back to %s", endpoint, old_config)
                hook.update_endpoint(
                    {"EndpointName": endpoint, "EndpointConfigName": old_config, "RetainAllVariantProperties": True},
                    wait_for_completion=False,
                )
                restored = self._wait_in_service(hook, endpoint, wait_minutes)
                if restored["EndpointConfigName"] != old_config:
                    raise DeployError(
                        f"sagemaker: rollback of {endpoint!r} to {old_config!r} did not take: it serves "
                        f"{restored['EndpointConfigName']!r} ({restored.get('FailureReason') or 'no reason given'})"
                    )
            elif serves_new:
                log.info("Deleting endpoint %s (first deployment rolled back)", endpoint)
                hook.conn.delete_endpoint(EndpointName=endpoint)
                self._wait_deleted(hook, endpoint, wait_minutes)
            self._delete_endpoint_config(hook, new_config)
            self._delete_model(hook, new_model)
        except ClientError as exc:
            raise DeployError(
                f"sagemaker: rollback of {endpoint!r} from {new_config!r} failed: {_aws_reason(exc)}"
            ) from exc
        log.info("Rolled back %s: %s removed", endpoint, new_config)

    # -- steps -----------------------------------------------------------------------------------------

    def _undo(self, deployment: Deployment, message: str) -> str:
        """Roll a failed deployment back as far as possible; return ``message`` plus what the undo left."""
        try:
            self.rollback(deployment)
        except Exception as exc:  # the deploy error matters most; report the undo's failure beside it
            log.exception("Undoing %s failed", deployment.details["endpoint_config"])
            return f"{message}; undoing it failed too, clean up by hand: {exc}"
        return f"{message}; nothing changed (new model and endpoint config removed)"

    def _discard_created(self, hook: SageMakerHook, deployment: Deployment, message: str) -> str:
        """Delete the model and endpoint config this run created (nothing serves them yet); return ``message``."""
        calls = deployment.details["calls"]
        try:
            if "CreateEndpointConfig" in calls:
                self._delete_endpoint_config(hook, deployment.details["endpoint_config"])
            if "CreateModel" in calls:
                self._delete_model(hook, deployment.details["model_name"])
        except Exception as exc:  # the first error matters most; report this one beside it
            log.exception("Removing the new model and endpoint config failed")
            return f"{message}; removing what this run created failed too, clean up by hand: {exc}"
        return message

    def _describe(self, describe: Callable[[str], dict[str, Any]], name: str) -> dict[str, Any] | None:
        """``describe(name)``, or None when the resource does not exist."""
        from botocore.exceptions import ClientError

        try:
            return describe(name)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise

    def _settled_endpoint(self, hook: SageMakerHook, endpoint: str, wait_minutes: int) -> dict[str, Any] | None:
        """The endpoint's description once no operation runs on it; None if it does not exist.

        A ``Failed`` endpoint serves nothing and accepts only DeleteEndpoint: it is deleted, as if absent.
        """
        described = self._describe(hook.describe_endpoint, endpoint)
        if described is None:
            return None
        if described["EndpointStatus"] in hook.endpoint_non_terminal_states:
            log.info("Endpoint %s is %s; waiting for it to settle", endpoint, described["EndpointStatus"])
            try:
                described = self._wait_in_service(hook, endpoint, wait_minutes)
            except DeployError:
                described = self._describe(hook.describe_endpoint, endpoint)
                if described is None or described["EndpointStatus"] != "Failed":
                    raise
        if described["EndpointStatus"] == "Failed":
            log.warning(
                "Endpoint %s is Failed (%s); deleting it to create it anew", endpoint, described.get("FailureReason")
            )
            hook.conn.delete_endpoint(EndpointName=endpoint)
            self._wait_deleted(hook, endpoint, wait_minutes)
            return None
        return described

    def _previous(self, hook: SageMakerHook, current: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
        """What the endpoint served before ``name``: its current config, or, on a re-run where it already
        serves ``name``, the config recorded in ``name``'s tag; None for a first deployment."""
        if current is None:
            return None
        config = current["EndpointConfigName"]
        if config == name:
            described = hook.describe_endpoint_config(name)
            tags = hook.conn.list_tags(ResourceArn=described["EndpointConfigArn"]).get("Tags", [])
            config = next((t["Value"] for t in tags if t["Key"] == PREVIOUS_CONFIG_TAG), "")
            if not config:
                return None
        described = self._describe(hook.describe_endpoint_config, config)
        models = [v["ModelName"] for v in (described or {}).get("ProductionVariants", [])]
        return {"endpoint_config": config, "models": models}

    def _ensure_model(
        self, hook: SageMakerHook, deployment: Deployment, spec: ModelSpec, settings: SageMakerDeploy, image: str
    ) -> None:
        """CreateModel for the bento's image, or reuse the model of that name if it runs the same image."""
        name = deployment.details["model_name"]
        existing = self._describe(hook.describe_model, name)
        if existing is not None:
            existing_image = existing.get("PrimaryContainer", {}).get("Image")
            if existing_image != image:
                raise DeployError(
                    f"sagemaker: {spec.name}: model {name!r} exists with image {existing_image!r}, not {image!r}; "
                    "delete it or deploy a new bento"
                )
            log.info("Reusing SageMaker model %s", name)
            deployment.details["reused"].append(f"model/{name}")
            return
        hook.create_model(
            {
                "ModelName": name,
                "ExecutionRoleArn": hook.expand_role(settings.execution_role_arn),
                "PrimaryContainer": {
                    "Image": image,
                    "Mode": "SingleModel",
                    "Environment": {
                        "MLOPS_PROFILE": "production",
                        "BENTOML_PORT": str(CONTAINER_PORT),
                        # InvokeEndpoint is authenticated by IAM; the runtime calls the container without a token.
                        AUTH_VARIABLE: "platform",
                    },
                },
                "Tags": self._tags(deployment),
            }
        )
        deployment.details["calls"].append("CreateModel")

    def _ensure_endpoint_config(
        self, hook: SageMakerHook, deployment: Deployment, spec: ModelSpec, settings: SageMakerDeploy
    ) -> None:
        """CreateEndpointConfig (one variant, all traffic), or reuse the config of that name."""
        name = deployment.details["endpoint_config"]
        if self._describe(hook.describe_endpoint_config, name) is not None:
            log.info("Reusing SageMaker endpoint config %s", name)
            deployment.details["reused"].append(f"endpoint-config/{name}")
            return
        tags = self._tags(deployment)
        if deployment.previous:
            tags.append({"Key": PREVIOUS_CONFIG_TAG, "Value": deployment.previous["endpoint_config"]})
        hook.create_endpoint_config(
            {
                "EndpointConfigName": name,
                "ProductionVariants": [
                    {
                        "VariantName": VARIANT,
                        "ModelName": deployment.details["model_name"],
                        "InstanceType": settings.instance_type,
                        "InitialInstanceCount": settings.instance_count,
                        "InitialVariantWeight": 1.0,
                    }
                ],
                "Tags": tags,
            }
        )
        deployment.details["calls"].append("CreateEndpointConfig")

    @staticmethod
    def _tags(deployment: Deployment) -> list[dict[str, str]]:
        return [
            {"Key": "airflow-mlops:model", "Value": deployment.model},
            {"Key": "airflow-mlops:version", "Value": str(deployment.version)},
            {"Key": "airflow-mlops:bento", "Value": deployment.bento_tag},
        ]

    def _wait(self, hook: SageMakerHook, waiter: str, endpoint: str, wait_minutes: int, what: str) -> None:
        """Poll with the provider's waiter helper, at most ``wait_minutes``; DeployError on failure or timeout."""
        from airflow.providers.amazon.aws.utils.waiter_with_logging import wait
        from airflow.providers.common.compat.sdk import AirflowException

        attempts = math.ceil(wait_minutes * 60 / self.poll_seconds) + 1
        try:
            wait(
                waiter=hook.get_waiter(waiter),
                waiter_delay=self.poll_seconds,
                waiter_max_attempts=attempts,
                args={"EndpointName": endpoint},
                failure_message=f"endpoint {endpoint!r} did not become {what}",
                status_message=f"endpoint {endpoint!r} status",
                status_args=["EndpointStatus", "FailureReason"],
            )
        except AirflowException as exc:
            last = getattr(exc, "last_response", None) or {}
            status = last.get("EndpointStatus")
            if status is None:
                described = self._describe(hook.describe_endpoint, endpoint) or {}
                status, last = described.get("EndpointStatus", "missing"), described
            reason = last.get("FailureReason") or _aws_reason(exc)
            raise DeployError(
                f"endpoint {endpoint!r} is {status}, not {what} after waiting up to {wait_minutes} min: {reason}"
            ) from exc

    def _wait_in_service(self, hook: SageMakerHook, endpoint: str, wait_minutes: int) -> dict[str, Any]:
        self._wait(hook, "endpoint_in_service", endpoint, wait_minutes, "InService")
        return hook.describe_endpoint(endpoint)

    def _wait_deleted(self, hook: SageMakerHook, endpoint: str, wait_minutes: int) -> None:
        self._wait(hook, "endpoint_deleted", endpoint, wait_minutes, "deleted")

    def _delete_endpoint_config(self, hook: SageMakerHook, name: str) -> bool:
        """Delete an endpoint config; False if it did not exist."""
        if self._describe(hook.describe_endpoint_config, name) is None:
            return False
        hook.conn.delete_endpoint_config(EndpointConfigName=name)
        return True

    def _delete_model(self, hook: SageMakerHook, name: str) -> bool:
        """Delete a model; False if it did not exist."""
        if self._describe(hook.describe_model, name) is None:
            return False
        hook.delete_model(name)
        return True
