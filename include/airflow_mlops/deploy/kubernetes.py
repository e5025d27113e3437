"""The ``kubernetes`` deploy target: a rolling update of the bento image in a namespace.

:meth:`KubernetesTarget.render` turns the spec (``deploy.kubernetes``) and the bento into five manifests:

* ``apps/v1 Deployment`` ``<model with - for _>``: the bento image (``<image_repository>:<bento version>``
  when ``image_repository`` is set, else the bento's own image name), port ``http`` = 8080 (the image's
  ``BENTOML_PORT``), readiness ``/readyz``, liveness ``/livez``, resources from the spec,
  ``MLOPS_PROFILE=production``, annotations recording the model version, bento tag and archive digest, and a
  rolling update that never takes a serving pod away before its replacement is ready (``maxUnavailable: 0``);
* ``v1 Service``: port 80 to the pods' ``http`` port;
* ``autoscaling/v2 HorizontalPodAutoscaler``: ``replicas`` .. ``max_replicas`` on CPU utilization;
* ``policy/v1 PodDisruptionBudget``: at most one pod down during voluntary disruptions;
* ``networking.k8s.io/v1 NetworkPolicy``: the pods admit ingress on their ``http`` port only.

The pods require the endpoint token (:mod:`airflow_mlops.endpoint_auth`): ``MLOPS_ENDPOINT_TOKEN`` comes from the
Secret ``<name>-endpoint-token`` (:func:`token_secret_name`), which :meth:`~KubernetesTarget.deploy` creates from
the settings' token when it does not exist (an existing Secret is the operator's and is kept). The smoke call
goes through the API server's service proxy, which keeps ``Authorization`` for itself, so it sends the token in
``X-Endpoint-Token``.

The pods run hardened: as the image's non-root user (BentoML's ``bentoml``, uid :data:`BENTO_UID`), with a
read-only root filesystem (``/tmp`` and ``MLOPS_HOME`` are ``emptyDir`` volumes), every capability dropped, no
privilege escalation, the runtime's default seccomp profile and no service-account token.

:meth:`~KubernetesTarget.validate` checks them against the official Kubernetes JSON schemas (the
``kubernetes-validate`` package, :data:`KUBERNETES_VERSION`, strict: unknown fields are errors) before anything
reaches a cluster. :meth:`~KubernetesTarget.deploy` applies them through the cncf-kubernetes provider's
:class:`KubernetesHook` (Airflow connection ``deploy.kubernetes.kubernetes_conn_id``): read each object, create it
on 404, else merge-patch it, remembering what it was (the Deployment's pod template and image) in
:attr:`Deployment.previous`; then it watches the rollout like ``kubectl rollout status``. A failed rollout is
undone at once (the previous template patched back, or the new objects deleted on a first deployment) and
raises :class:`DeployError`. The rolling update already moves traffic, so :meth:`~KubernetesTarget.commit` only
records the committed version on the Deployment; :meth:`~KubernetesTarget.rollback` restores the previous
template (or deletes what the first deployment created) and waits for that rollout.

Objects are exchanged with the API server as raw JSON (``_preload_content=False``), never through the client's
model classes, so fields a newer server knows and this client does not survive a read-and-restore.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.deploy.base import Bento, DeployError, Deployment
from airflow_mlops.endpoint_auth import TOKEN_HEADER, TOKEN_VARIABLE
from airflow_mlops.settings import get_settings
from airflow_mlops.specs import ModelSpec

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

#: Kubernetes version whose schemas (shipped by ``kubernetes-validate``) the manifests must match.
KUBERNETES_VERSION = "1.37.0"
#: Port the bento container listens on (``BENTOML_PORT``) and the name the Service targets.
CONTAINER_PORT = 8080
PORT_NAME = "http"
#: Port the Service exposes inside the cluster.
SERVICE_PORT = 80
CONTAINER_NAME = "bento"
#: uid and gid of the user BentoML's generated Dockerfile creates and runs as (``bentoml``).
BENTO_UID = 1034
#: The writable paths of a pod whose root filesystem is read-only: ``emptyDir`` volume name -> mount path.
WRITABLE = {"tmp": "/tmp", "state": "/var/lib/mlops"}  # ruff: ignore[hardcoded-temp-file] - a pod-private emptyDir
#: Prefix of the annotations this target writes.
ANNOTATION_PREFIX = "mlops/"
#: ``fieldManager`` recorded by the API server for every write of this target.
FIELD_MANAGER = "airflow-mlops"
#: The key of the endpoint token in its Secret (:func:`token_secret_name`).
TOKEN_KEY = "token"  # ruff: ignore[hardcoded-password-string] - a key name
#: Order in which the manifests are rendered, applied and (reversed) undone.
KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy")

#: DNS-1035 label: what a Service name must be (and so every name this target derives).
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: kind -> (API class of ``kubernetes.client``, suffix of its ``read_``/``create_``/``patch_``/``delete_`` methods)
_APIS: dict[str, tuple[str, str]] = {
    "Deployment": ("AppsV1Api", "namespaced_deployment"),
    "Service": ("CoreV1Api", "namespaced_service"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
    "PodDisruptionBudget": ("PolicyV1Api", "namespaced_pod_disruption_budget"),
    "NetworkPolicy": ("NetworkingV1Api", "namespaced_network_policy"),
    "Secret": ("CoreV1Api", "namespaced_secret"),
}
_MERGE_PATCH = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"


def resource_name(spec: ModelSpec) -> str:
    """Name of the Deployment, Service, HPA and PDB of a model: its name with ``-`` for ``_``."""
    name = spec.name.replace("_", "-")
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise DeployError(f"kubernetes: {name!r} (from model {spec.name!r}) is not a valid DNS-1035 label")
    return name


def token_secret_name(spec: ModelSpec) -> str:
    """The Secret holding the endpoint token the pods require (key :data:`TOKEN_KEY`)."""
    return f"{resource_name(spec)}-endpoint-token"


def image_for(spec: ModelSpec, bento: Bento) -> str:
    """The image to run: ``<deploy.kubernetes.image_repository>:<bento version>``, else the bento's image."""
    repository = spec.deploy.kubernetes.image_repository.strip()
    return f"{repository}:{bento.bento_version}" if repository else bento.image


def rollout_state(deployment: dict[str, Any]) -> tuple[str, str]:
    """Where a Deployment's rollout stands, as ``kubectl rollout status`` decides: ``(state, message)``.

    ``state`` is ``done``, ``waiting`` or ``failed`` (the ``Progressing`` condition is ``False``, e.g.
    ``ProgressDeadlineExceeded``). ``deployment`` is the object as the API server returns it.
    """
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = int(metadata.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return "waiting", f"the controller has not observed generation {generation} yet (at {observed})"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded" or condition.get("status") == "False"
        ):
            message = condition.get("message") or ""
            return "failed", f"Progressing={condition.get('status')} {condition.get('reason')}: {message}"
    wanted = int(spec.get("replicas", 1) or 0)
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return "waiting", f"{updated} of {wanted} replicas updated"
    if replicas > updated:
        return "waiting", f"{replicas - updated} old replicas pending termination"
    if available < updated:
        return "waiting", f"{available} of {updated} updated replicas available"
    return "done", f"{updated} replicas updated and available"


@dataclass
class _Cluster:
    """The four typed APIs on one ApiClient, speaking raw JSON, and a log of the calls made."""

    api_client: ApiClient
    namespace: str
    calls: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def connect(cls, conn_id: str, namespace: str) -> _Cluster:
        """Build the client from the Airflow connection ``conn_id`` through the provider's hook."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        try:
            api_client = KubernetesHook(conn_id=conn_id).api_client
        except Exception as exc:  # the hook raises AirflowException, ConfigException, OSError...
            raise DeployError(f"kubernetes: cannot configure a client from connection {conn_id!r}: {exc}") from exc
        return cls(api_client=api_client, namespace=namespace)

    def _call(self, verb: str, kind: str, name: str, *, method: str = "", **kwargs: Any) -> dict[str, Any] | None:
        """``<verb>_<kind>`` (or ``method``) on the kind's API: the JSON answer, or None on 404 for read/delete."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        api_class, suffix = _APIS[kind]
        call = getattr(getattr(client, api_class)(api_client=self.api_client), method or f"{verb}_{suffix}")
        self.calls.append({"verb": verb, "kind": kind, "name": name})
        if verb != "create":
            kwargs["name"] = name
        try:
            response = call(namespace=self.namespace, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and verb in {"read", "delete"}:
                return None
            raise DeployError(
                f"kubernetes: {verb} {kind} {self.namespace}/{name} failed: "
                f"HTTP {exc.status} {exc.reason}: {_api_message(exc.body)}"
            ) from exc
        except HTTPError as exc:
            host = self.api_client.configuration.host
            raise DeployError(f"kubernetes: {verb} {kind} {self.namespace}/{name}: API server {host}: {exc}") from exc
        return json.loads(response.data or b"{}")

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        return self._call("read", kind, name)

    def read_status(self, name: str) -> dict[str, Any]:
        """The Deployment with its status (``read_namespaced_deployment_status``)."""
        answer = self._call("read_status", "Deployment", name, method="read_namespaced_deployment_status")
        if answer is None:
            raise DeployError(f"kubernetes: Deployment {self.namespace}/{name} disappeared during its rollout")
        return answer

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        answer = self._call(
            "create", manifest["kind"], manifest["metadata"]["name"], body=manifest, field_manager=FIELD_MANAGER
        )
        return answer or {}

    def merge_patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._call("patch", kind, name, body=body, field_manager=FIELD_MANAGER, _content_type=_MERGE_PATCH)
        return answer or {}

    def json_patch(self, kind: str, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        answer = self._call(
            "patch", kind, name, body=operations, field_manager=FIELD_MANAGER, _content_type=_JSON_PATCH
        )
        return answer or {}

    def delete(self, kind: str, name: str) -> bool:
        """Delete (pods and ReplicaSets are garbage collected in the background); False if already gone."""
        return self._call("delete", kind, name, propagation_policy="Background") is not None


def _api_message(body: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` answer, else the raw body (shortened)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        return str(json.loads(text).get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500]


class KubernetesTarget:
    """Deploy bentos to a Kubernetes cluster (see the module docstring)."""

    name = "kubernetes"

    def __init__(self, poll_seconds: float = 2.0) -> None:
        #: Pause between two reads of the Deployment status while a rollout runs.
        self.poll_seconds = poll_seconds

    # ------------------------------------------------------------------ manifests

    def render(self, spec: ModelSpec, bento: Bento) -> list[dict[str, Any]]:
        """The Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget and NetworkPolicy for ``bento``."""
        settings = spec.deploy.kubernetes
        if settings.max_replicas < settings.replicas:
            raise DeployError(
                f"kubernetes: {spec.name}: deploy.kubernetes.max_replicas ({settings.max_replicas}) "
                f"is below deploy.kubernetes.replicas ({settings.replicas})"
            )
        name = resource_name(spec)
        namespace = settings.namespace
        selector = {"app": name}
        labels = {
            "app": name,
            "model": spec.name,
            "version": str(bento.version),
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
        }
        annotations = {
            f"{ANNOTATION_PREFIX}model": spec.name,
            f"{ANNOTATION_PREFIX}model-version": str(bento.version),
            f"{ANNOTATION_PREFIX}bento-tag": bento.tag,
            f"{ANNOTATION_PREFIX}bento-digest": bento.digest,
        }

        def metadata() -> dict[str, Any]:
            return {"name": name, "namespace": namespace, "labels": dict(labels)}

        probe_port = {"port": PORT_NAME, "scheme": "HTTP"}
        container = {
            "name": CONTAINER_NAME,
            "image": image_for(spec, bento),
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
            "env": [
                {"name": "MLOPS_PROFILE", "value": "production"},
                {"name": "BENTOML_PORT", "value": str(CONTAINER_PORT)},
                {"name": "MLOPS_HOME", "value": WRITABLE["state"]},
                {"name": "TMPDIR", "value": WRITABLE["tmp"]},
                {
                    "name": TOKEN_VARIABLE,
                    "valueFrom": {"secretKeyRef": {"name": token_secret_name(spec), "key": TOKEN_KEY}},
                },
            ],
            "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in WRITABLE.items()],
            "resources": {
                "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
            },
            # Loading the model can take a while: the startup probe holds the other two back until /livez answers.
            "startupProbe": {"httpGet": {"path": "/livez", **probe_port}, "periodSeconds": 5, "failureThreshold": 60},
            "readinessProbe": {
                "httpGet": {"path": "/readyz", **probe_port},
                "periodSeconds": 5,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "livenessProbe": {
                "httpGet": {"path": "/livez", **probe_port},
                "periodSeconds": 10,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        pod_spec = {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": BENTO_UID,
                "runAsGroup": BENTO_UID,
                "fsGroup": BENTO_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": volume, "emptyDir": {}} for volume in WRITABLE],
            "terminationGracePeriodSeconds": 30,
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**metadata(), "annotations": dict(annotations)},
            "spec": {
                "replicas": settings.replicas,
                "revisionHistoryLimit": 5,
                "progressDeadlineSeconds": settings.rollout_timeout_seconds,
                "selector": {"matchLabels": dict(selector)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                    "spec": pod_spec,
                },
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(),
            "spec": {
                "type": "ClusterIP",
                "selector": dict(selector),
                "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
            },
        }
        autoscaler = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": settings.replicas,
                "maxReplicas": settings.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": settings.target_cpu_utilization},
                        },
                    }
                ],
            },
        }
        budget = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
        }
        network_policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(),
            "spec": {
                "podSelector": {"matchLabels": dict(selector)},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": PORT_NAME, "protocol": "TCP"}]}],
            },
        }
        return [deployment, service, autoscaler, budget, network_policy]

    def validate(self, manifests: list[dict[str, Any]]) -> None:
        """Check every manifest against the official schemas of :data:`KUBERNETES_VERSION` (strict)."""
        import kubernetes_validate
        from kubernetes_validate.utils import VersionNotSupportedError

        for manifest in manifests:
            meta = manifest.get("metadata") if isinstance(manifest.get("metadata"), dict) else {}
            where = f"{manifest.get('kind', '<no kind>')}/{meta.get('name', '<no name>')}"
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.absolute_path) or "<root>"
                raise DeployError(
                    f"kubernetes: {where} does not match the Kubernetes {exc.version} schema at {path}: {exc.message}"
                ) from exc
            except (kubernetes_validate.SchemaNotFoundError, VersionNotSupportedError) as exc:
                raise DeployError(f"kubernetes: {where}: {exc.message}") from exc
            except KeyError as exc:
                raise DeployError(f"kubernetes: {where}: manifest has no {exc.args[0]!r}") from exc

    # ------------------------------------------------------------------ the protocol

    def deploy(self, spec: ModelSpec, bento: Bento) -> Deployment:
        """Render, validate, apply and watch the rollout; undo and raise :class:`DeployError` if it fails."""
        settings = spec.deploy.kubernetes
        manifests = self.render(spec, bento)
        self.validate(manifests)
        name = resource_name(spec)
        timeout = settings.rollout_timeout_seconds
        cluster = _Cluster.connect(settings.kubernetes_conn_id, settings.namespace)
        self._ensure_token_secret(cluster, spec)
        created: list[str] = []
        previous: dict[str, Any] | None = None  # the Deployment serving now, None on a first deployment
        previous_specs: dict[str, Any] = {}  # spec of each other object this deployment patches
        try:
            for manifest in manifests:
                kind = manifest["kind"]
                current = cluster.read(kind, name)
                if current is None:
                    cluster.create(manifest)
                    created.append(kind)
                    continue
                cluster.merge_patch(kind, name, self._update_patch(manifest, current))
                # Recorded once patched: an object the patch did not change needs no restoring.
                if kind == "Deployment":
                    previous = self._remember(current)
                else:
                    previous_specs[kind] = current.get("spec")
            state, message = self._watch(cluster, name, timeout)
            if state != "done":
                raise DeployError(f"kubernetes: rollout of Deployment {settings.namespace}/{name} failed: {message}")
        except Exception as exc:  # undo whatever went wrong, then report it as a DeployError
            undone = self._undo(cluster, name, created, previous, previous_specs, timeout)
            reason = str(exc) if isinstance(exc, DeployError) else f"kubernetes: {type(exc).__name__}: {exc}"
            raise DeployError(f"{reason}; undone: {undone}") from exc
        log.info("kubernetes: %s rolled out to %s/%s (%s)", bento.tag, settings.namespace, name, message)
        return Deployment(
            target=self.name,
            model=spec.name,
            version=bento.version,
            bento_tag=bento.tag,
            endpoint=f"{name}.{settings.namespace}.svc",
            previous=previous,
            details={
                "namespace": settings.namespace,
                "conn_id": settings.kubernetes_conn_id,
                "deployment": name,
                "service": name,
                "image": image_for(spec, bento),
                "kubernetes_version": KUBERNETES_VERSION,
                "rollout_timeout_seconds": timeout,
                "created": created,
                "previous_specs": previous_specs,
                "rollout": message,
                "calls": cluster.calls,
            },
        )

    def invoke(self, deployment: Deployment, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to the Service's ``/predict`` through the API server's service proxy."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        details = deployment.details
        namespace, service = details["namespace"], details["service"]
        api_client = _Cluster.connect(details["conn_id"], namespace).api_client
        # CoreV1Api.connect_post_namespaced_service_proxy_with_path sends no body, so call its route directly.
        try:
            response = api_client.call_api(
                "/api/v1/namespaces/{namespace}/services/{name}/proxy/{path}",
                "POST",
                path_params={"namespace": namespace, "name": f"{service}:{PORT_NAME}", "path": "predict"},
                # The API server consumes `Authorization` (its own bearer token): the endpoint's goes in its header.
                header_params={
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    TOKEN_HEADER: get_settings().endpoint_token(),
                },
                body=payload,
                auth_settings=["BearerToken"],
                response_types_map={},
                _return_http_data_only=True,
                _preload_content=False,
            )
        except ApiException as exc:
            raise DeployError(
                f"kubernetes: POST /predict to Service {namespace}/{service} failed: "
                f"HTTP {exc.status} {exc.reason}: {_api_message(exc.body)}"
            ) from exc
        except HTTPError as exc:
            raise DeployError(f"kubernetes: POST /predict to Service {namespace}/{service}: {exc}") from exc
        try:
            answer = json.loads(response.data)
        except ValueError as exc:
            raise DeployError(
                f"kubernetes: Service {namespace}/{service} /predict answered non-JSON: {response.data[:200]!r}"
            ) from exc
        if not isinstance(answer, dict):
            raise DeployError(f"kubernetes: Service {namespace}/{service} /predict answered {type(answer).__name__}")
        return answer

    @staticmethod
    def _ensure_token_secret(cluster: _Cluster, spec: ModelSpec) -> None:
        """Create the endpoint token's Secret from the settings' token unless it exists (an existing one is kept).

        The pods read it as ``MLOPS_ENDPOINT_TOKEN``; rotating the token is replacing the Secret's value and
        restarting the pods (``kubectl rollout restart``), and setting the same value where the clients run.
        """
        name = token_secret_name(spec)
        if cluster.read("Secret", name) is not None:
            return
        cluster.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": cluster.namespace,
                    "labels": {"model": spec.name, "app.kubernetes.io/managed-by": FIELD_MANAGER},
                },
                "type": "Opaque",
                "stringData": {TOKEN_KEY: get_settings().endpoint_token()},
            }
        )
        log.info("kubernetes: created Secret %s/%s with the endpoint token", cluster.namespace, name)

    def commit(self, deployment: Deployment) -> Deployment:
        """The rolling update already moved traffic: annotate the Deployment with the committed version."""
        details = deployment.details
        cluster = _Cluster.connect(details["conn_id"], details["namespace"])
        annotations = {
            f"{ANNOTATION_PREFIX}committed-version": str(deployment.version),
            f"{ANNOTATION_PREFIX}committed-bento": deployment.bento_tag,
        }
        cluster.merge_patch("Deployment", details["deployment"], {"metadata": {"annotations": annotations}})
        committed = {**details, "committed": True, "calls": [*details.get("calls", []), *cluster.calls]}
        return dataclasses.replace(deployment, details=committed)

    def rollback(self, deployment: Deployment) -> None:
        """Restore the previous pod template (and the other objects' specs), or delete a first deployment."""
        details = deployment.details
        cluster = _Cluster.connect(details["conn_id"], details["namespace"])
        undone = self._undo(
            cluster,
            details["deployment"],
            list(details.get("created") or []),
            deployment.previous,
            dict(details.get("previous_specs") or {}),
            float(details.get("rollout_timeout_seconds") or 600),
        )
        if undone.startswith("FAILED"):
            raise DeployError(f"kubernetes: rollback of {deployment.bento_tag}: {undone}")
        log.info("kubernetes: rolled back %s: %s", deployment.bento_tag, undone)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _remember(current: dict[str, Any]) -> dict[str, Any]:
        """What a rollback needs of the Deployment that serves now: its pod template and image."""
        template = (current.get("spec") or {}).get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        return {
            "template": template,
            "image": containers[0].get("image") if containers else None,
            "bento_tag": annotations.get(f"{ANNOTATION_PREFIX}bento-tag"),
            "model_version": annotations.get(f"{ANNOTATION_PREFIX}model-version"),
            "revision": annotations.get("deployment.kubernetes.io/revision"),
            "resource_version": (current.get("metadata") or {}).get("resourceVersion"),
        }

    @staticmethod
    def _update_patch(manifest: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """The merge patch turning ``current`` into ``manifest``.

        Lists (containers, env, ports, metrics) are replaced whole. A Deployment's ``replicas`` is left to
        the HPA, and its ``resourceVersion`` makes the API server refuse the patch (409) if the object
        changed since it was read, so :attr:`Deployment.previous` is exactly what was replaced.
        """
        spec = dict(manifest["spec"])
        metadata: dict[str, Any] = {
            "labels": manifest["metadata"].get("labels", {}),
            "annotations": manifest["metadata"].get("annotations", {}),
        }
        if manifest["kind"] == "Deployment":
            spec.pop("replicas", None)
            metadata["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        if manifest["kind"] == "PodDisruptionBudget":
            spec.setdefault("minAvailable", None)  # null deletes: only one of the two may be set
        return {"metadata": metadata, "spec": spec}

    def _watch(self, cluster: _Cluster, name: str, timeout: float) -> tuple[str, str]:
        """Poll the Deployment status until the rollout is done or failed, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            state, message = rollout_state(cluster.read_status(name))
            if state != "waiting":
                return state, message
            if time.monotonic() >= deadline:
                return "failed", f"not finished after {timeout:g} s: {message}"
            time.sleep(self.poll_seconds)

    def _undo(
        self,
        cluster: _Cluster,
        name: str,
        created: list[str],
        previous: dict[str, Any] | None,
        previous_specs: dict[str, Any],
        timeout: float,
    ) -> str:
        """Delete what was created and patch back what was changed, in reverse order; a summary of it.

        The Deployment gets its previous pod template back (a JSON patch replacing ``/spec/template``, which
        starts a rollout back, watched until done); the other objects their previous ``spec``. Never raises: a
        failed step is reported in the summary, which then starts with ``FAILED``.
        """
        done: list[str] = []
        failed: list[str] = []
        for kind in reversed(KINDS):
            try:
                if kind in created:
                    cluster.delete(kind, name)
                    done.append(f"deleted {kind}")
                elif kind == "Deployment" and previous is not None:
                    operation = {"op": "replace", "path": "/spec/template", "value": previous["template"]}
                    cluster.json_patch(kind, name, [operation])
                    done.append(f"restored the Deployment template (image {previous.get('image')})")
                elif previous_specs.get(kind) is not None:
                    cluster.json_patch(kind, name, [{"op": "replace", "path": "/spec", "value": previous_specs[kind]}])
                    done.append(f"restored the {kind} spec")
            except DeployError as exc:
                failed.append(str(exc))
        if previous is not None and "Deployment" not in created:
            try:
                state, message = self._watch(cluster, name, timeout)
            except DeployError as exc:
                state, message = "failed", str(exc)
            if state == "done":
                done.append(f"rolled back ({message})")
            else:
                failed.append(f"rollout back to the previous template: {message}")
        summary = ", ".join(done) or "nothing to undo"
        return f"FAILED: {'; '.join(failed)} (done: {summary})" if failed else summary
