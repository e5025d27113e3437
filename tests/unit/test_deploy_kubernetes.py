"""The ``kubernetes`` deploy target: manifests, schemas, and the exact API calls of deploy and rollback.

No Kubernetes cluster can run on the machines this project is built on (no container engine), so, as
ARCHITECTURE.md allows, this module checks the two things that can be checked without one:

* the manifests rendered from the real spec (``include/models/flight_delay.yaml``) against the official
  Kubernetes JSON schemas (generated from the Kubernetes OpenAPI, shipped by ``kubernetes-validate``), strict,
  for the version the target pins, and that a broken manifest is refused with a message naming where;
* the requests the real ``kubernetes`` client makes, configured by the real cncf-kubernetes provider hook from
  the Airflow connection ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` (a kubeconfig pointing at loopback), against
  :class:`FakeApiServer`: a **fake** Kubernetes API server on 127.0.0.1 that records method, path, content type
  and body, answers 404 to reads of missing objects and 201 to creates, applies merge and JSON patches, and
  reports Deployment status as a finished rollout or, for images listed in ``failing_images``, a
  ``ProgressDeadlineExceeded`` condition. It checks nothing the real API server would (admission, scheduling,
  pulling images): the schemas stand in for the first, and nothing here for the others.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from airflow_mlops.deploy.base import Bento, DeployError
from airflow_mlops.deploy.kubernetes import KUBERNETES_VERSION, KubernetesTarget, rollout_state
from airflow_mlops.deploy.targets import get_target
from airflow_mlops.settings import load_settings
from airflow_mlops.specs import ModelSpec, load_spec

SPEC_PATH = Path(__file__).resolve().parents[2] / "include" / "models" / "flight_delay.yaml"
NS = "mlops"
NAME = "flight-delay"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
HPAS = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
PDBS = f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"
NETPOLS = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
TOKEN_SECRET = f"{NAME}-endpoint-token"
REPOSITORY = "registry.example.com/mlops/flight-delay"


# --------------------------------------------------------------------------- the fake API server


@dataclass
class Recorded:
    """One request the fake API server received."""

    method: str
    path: str  #: decoded path, without the query
    raw_path: str  #: path as sent (percent-encoded)
    query: str
    content_type: str
    body: Any
    endpoint_token: str | None = None  #: the ``X-Endpoint-Token`` header (the model endpoint's token)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 JSON patch, the ``add``/``replace``/``test`` operations on object members."""
    result = copy.deepcopy(target)
    for operation in operations:
        keys = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        parent = result
        for key in keys[:-1]:
            parent = parent[key]
        if operation["op"] == "test":
            assert parent[keys[-1]] == operation["value"]
        elif operation["op"] in {"add", "replace"}:
            if operation["op"] == "replace" and keys[-1] not in parent:
                raise KeyError(operation["path"])
            parent[keys[-1]] = copy.deepcopy(operation["value"])
        else:
            raise ValueError(f"unsupported op {operation['op']}")
    return result


class FakeApiServer(ThreadingHTTPServer):
    """A recording stand-in for the Kubernetes API server (see the module docstring)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Recorded] = []
        self.objects: dict[str, dict[str, Any]] = {}  #: object path -> object
        self.failing_images: set[str] = set()  #: rollouts of these images exceed their progress deadline
        self.stuck_images: set[str] = set()  #: rollouts of these images never finish
        self.forbidden: set[tuple[str, str]] = set()  #: (method, path) answered 403
        self.status_reads: dict[tuple[str, int], int] = {}
        self._version = 100
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, *, skip_status: bool = False, secrets: bool = False) -> list[tuple[str, str]]:
        """``(method, path)`` of every request, in order (those on Secrets only with ``secrets``)."""
        return [
            (r.method, r.path)
            for r in self.requests
            if not (skip_status and r.path.endswith("/status")) and (secrets or not r.path.startswith(SECRETS))
        ]

    def workloads(self) -> dict[str, Any]:
        """The objects but the endpoint token's Secret, which outlives every deployment (kept on undo)."""
        return {path: obj for path, obj in self.objects.items() if not path.startswith(SECRETS)}

    def bodies(self, method: str, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == method and r.path == path]

    def image(self, name: str = NAME) -> str:
        return self.objects[f"{DEPLOYMENTS}/{name}"]["spec"]["template"]["spec"]["containers"][0]["image"]

    # -- behaviour

    def next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def deployment_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The Deployment with a status: one 'not yet observed' read per generation, then the outcome."""
        generation = obj["metadata"]["generation"]
        key = (obj["metadata"]["name"], generation)
        self.status_reads[key] = self.status_reads.get(key, 0) + 1
        wanted = obj["spec"].get("replicas", 1)
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        if self.status_reads[key] == 1:
            status: dict[str, Any] = {"observedGeneration": generation - 1, "replicas": wanted}
        elif image in self.failing_images:
            status = {
                "observedGeneration": generation,
                "replicas": wanted + 1,
                "updatedReplicas": 1,
                "availableReplicas": wanted,
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{NAME}-7d9" has timed out progressing.',
                    }
                ],
            }
        elif image in self.stuck_images:
            status = {"observedGeneration": generation, "replicas": wanted + 1, "updatedReplicas": 1}
        else:
            status = {
                "observedGeneration": generation,
                "replicas": wanted,
                "updatedReplicas": wanted,
                "availableReplicas": wanted,
                "readyReplicas": wanted,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            }
        return {**obj, "status": status}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        body = json.loads(raw) if raw else None
        server = self.server
        with server.lock:
            server.requests.append(
                Recorded(
                    self.command,
                    path,
                    parts.path,
                    parts.query,
                    self.headers.get("Content-Type", ""),
                    body,
                    self.headers.get("X-Endpoint-Token"),
                )
            )
            if self.headers.get("Authorization") != "Bearer fake-cluster-token":
                return self._answer(401, _status(401, "Unauthorized", "no bearer token"))
            if (self.command, path) in server.forbidden:
                return self._answer(403, _status(403, "Forbidden", f'cannot {self.command.lower()} "{path}"'))
            if path.startswith(f"{SERVICES}/") and "/proxy/" in path:
                service, _, rest = path[len(SERVICES) + 1 :].partition("/proxy/")
                if f"{SERVICES}/{service.split(':')[0]}" not in server.objects:
                    return self._answer(404, _status(404, "NotFound", f'services "{service}" not found'))
                flights = (body or {}).get("flights", [])
                return self._answer(200, {"predictions": [0.25] * len(flights), "path": rest, "service": service})
            if path.endswith("/status"):
                obj = server.objects.get(path.removesuffix("/status"))
                if obj is None:
                    return self._answer(404, _status(404, "NotFound", "not found"))
                return self._answer(200, server.deployment_status(obj))
            if self.command == "POST":
                name = body["metadata"]["name"]
                key = f"{path}/{name}"
                if key in server.objects:
                    return self._answer(409, _status(409, "AlreadyExists", f'"{name}" already exists'))
                obj = copy.deepcopy(body)
                obj["metadata"].update({"generation": 1, "resourceVersion": server.next_version(), "uid": key})
                server.objects[key] = obj
                return self._answer(201, obj)
            obj = server.objects.get(path)
            if obj is None:
                return self._answer(404, _status(404, "NotFound", f"{path} not found"))
            if self.command == "GET":
                return self._answer(200, obj)
            if self.command == "DELETE":
                del server.objects[path]
                return self._answer(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            if self.command == "PATCH":
                content_type = self.headers.get("Content-Type", "")
                if content_type == "application/merge-patch+json":
                    sent = (body.get("metadata") or {}).get("resourceVersion")
                    if sent is not None and sent != obj["metadata"]["resourceVersion"]:
                        return self._answer(409, _status(409, "Conflict", "the object has been modified"))
                    new = _merge(obj, body)
                elif content_type == "application/json-patch+json":
                    new = _json_patch(obj, body)
                else:
                    return self._answer(415, _status(415, "UnsupportedMediaType", content_type))
                if new.get("spec") != obj.get("spec"):
                    new["metadata"]["generation"] = obj["metadata"]["generation"] + 1
                new["metadata"]["resourceVersion"] = server.next_version()
                server.objects[path] = new
                return self._answer(200, new)
            return self._answer(405, _status(405, "MethodNotAllowed", self.command))

    do_GET = do_POST = do_PATCH = do_DELETE = _handle


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def spec() -> ModelSpec:
    """The real flight_delay spec, switched to the kubernetes target."""
    base = load_spec(SPEC_PATH)
    return with_k8s(base.model_copy(update={"deploy": base.deploy.model_copy(update={"target": "kubernetes"})}))


def with_k8s(spec: ModelSpec, **settings: Any) -> ModelSpec:
    """``spec`` with some ``deploy.kubernetes`` settings changed."""
    k8s = spec.deploy.kubernetes.model_copy(update=settings)
    return spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"kubernetes": k8s})})


def make_bento(version: int, bento_version: str | None = None) -> Bento:
    bento_version = bento_version or f"v{version}abcd"
    return Bento(
        model="flight_delay",
        version=version,
        tag=f"flight_delay:{bento_version}",
        archive=f"/tmp/bentos/flight_delay-{bento_version}.bento",
        digest=f"{version:064x}",
        image=f"flight_delay:{bento_version}",
    )


@pytest.fixture
def api_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeApiServer]:
    """The fake API server, and the Airflow connection ``kubernetes_default`` pointing at it."""
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
        "users": [{"name": "airflow", "user": {"token": "fake-cluster-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "airflow", "namespace": NS}}],
        "current-context": "fake",
    }
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))  # if this test is the first to import Airflow
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig}})
    )
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def target() -> KubernetesTarget:
    return KubernetesTarget(poll_seconds=0.01)


# --------------------------------------------------------------------------- rendering and schemas


def test_render_from_the_real_spec(spec: ModelSpec) -> None:
    bento = make_bento(3)
    manifests = KubernetesTarget().render(spec, bento)
    assert [(m["apiVersion"], m["kind"]) for m in manifests] == [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ]
    assert {(m["metadata"]["name"], m["metadata"]["namespace"]) for m in manifests} == {(NAME, NS)}

    deployment, service, hpa, pdb, policy = manifests
    settings = spec.deploy.kubernetes
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "flight_delay:v3abcd" == bento.image  # no image_repository in the spec
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "MLOPS_PROFILE", "value": "production"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http", "scheme": "HTTP"}
    assert container["resources"] == {
        "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
        "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit},
    }
    assert deployment["spec"]["replicas"] == settings.replicas == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": NAME}}
    assert {"app": NAME, "model": "flight_delay", "version": "3"}.items() <= pod["metadata"]["labels"].items()
    assert {
        "mlops/model-version": "3",
        "mlops/bento-tag": "flight_delay:v3abcd",
        "mlops/bento-digest": bento.digest,
    }.items() <= deployment["metadata"]["annotations"].items()

    assert service["spec"]["selector"] == {"app": NAME}
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": NAME}}}
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app": NAME}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}]}],  # the serving port, nothing else
    }


def test_pods_run_hardened(spec: ModelSpec) -> None:
    """Non-root, read-only root filesystem with only emptyDir paths writable, no capability, no token."""
    pod = KubernetesTarget().render(spec, make_bento(3))[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1034,  # the user of BentoML's generated Dockerfile
        "runAsGroup": 1034,
        "fsGroup": 1034,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "state": "/var/lib/mlops"}
    assert pod["volumes"] == [{"name": name, "emptyDir": {}} for name in mounts]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["MLOPS_HOME"] == "/var/lib/mlops" and env["TMPDIR"] == "/tmp"
    # The endpoint token from its Secret, never written into the manifest.
    assert env["MLOPS_ENDPOINT_TOKEN"] == {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}


def test_render_follows_the_spec_settings(spec: ModelSpec) -> None:
    custom = with_k8s(
        spec,
        namespace="serving",
        image_repository=REPOSITORY,
        replicas=3,
        max_replicas=9,
        target_cpu_utilization=55,
        cpu_request="250m",
        memory_limit="3Gi",
    )
    deployment, _, hpa, _, _ = manifests = KubernetesTarget().render(custom, make_bento(4))
    assert {m["metadata"]["namespace"] for m in manifests} == {"serving"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{REPOSITORY}:v4abcd"
    assert (container["resources"]["requests"]["cpu"], container["resources"]["limits"]["memory"]) == ("250m", "3Gi")
    assert deployment["spec"]["replicas"] == 3
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    KubernetesTarget().validate(manifests)

    with pytest.raises(DeployError, match=r"max_replicas \(2\) is below deploy.kubernetes.replicas \(4\)"):
        KubernetesTarget().render(with_k8s(spec, replicas=4, max_replicas=2), make_bento(4))


def test_get_target_chooses_kubernetes(spec: ModelSpec) -> None:
    assert isinstance(get_target(spec), KubernetesTarget)


def test_every_manifest_matches_the_official_schema(spec: ModelSpec) -> None:
    import kubernetes_validate

    manifests = KubernetesTarget().render(spec, make_bento(3))
    KubernetesTarget().validate(manifests)
    assert kubernetes_validate.latest_version() == KUBERNETES_VERSION
    for manifest in manifests:  # straight through the library too, so the wrapper cannot hide a skip
        assert kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True) == "1.37"


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        pytest.param(
            lambda m: m[0]["spec"].__setitem__("replicas", "2"),
            r"Deployment/flight-delay does not match the Kubernetes 1\.37 schema at spec\.replicas: "
            r"'2' is not of type 'integer'",
            id="string-replicas",
        ),
        pytest.param(
            lambda m: m[0]["spec"]["template"]["spec"]["containers"][0].pop("name"),
            r"Deployment/flight-delay .* at spec\.template\.spec\.containers\.0: 'name' is a required property",
            id="container-without-name",
        ),
        pytest.param(
            lambda m: m[1]["spec"]["ports"][0].__setitem__("prot", 80),
            r"Service/flight-delay .* at spec\.ports\.0: Additional properties are not allowed \('prot'",
            id="unknown-field",
        ),
        pytest.param(
            lambda m: m[2].__setitem__("apiVersion", "autoscaling/v9"),
            r"HorizontalPodAutoscaler/flight-delay: Couldn't find schema .* autoscaling/v9",
            id="unknown-api-version",
        ),
    ],
)
def test_broken_manifest_is_refused(spec: ModelSpec, break_it: Any, expected: str) -> None:
    manifests = KubernetesTarget().render(spec, make_bento(3))
    break_it(manifests)
    with pytest.raises(DeployError, match=expected):
        KubernetesTarget().validate(manifests)


def test_rollout_state_reads_status_like_kubectl() -> None:
    def dep(generation: int = 2, replicas: int = 2, **status: Any) -> dict[str, Any]:
        return {"metadata": {"generation": generation}, "spec": {"replicas": replicas}, "status": status}

    assert rollout_state(dep(observedGeneration=1))[0] == "waiting"
    assert rollout_state(dep(observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=2))[0] == "waiting"
    assert rollout_state(dep(observedGeneration=2, replicas=3, updatedReplicas=2, availableReplicas=2))[0] == "waiting"
    assert rollout_state(dep(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=1))[0] == "waiting"
    assert rollout_state(dep(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2))[0] == "done"
    stalled = dep(
        observedGeneration=2,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}],
    )
    assert rollout_state(stalled) == ("failed", "Progressing=False ProgressDeadlineExceeded: x")


# --------------------------------------------------------------------------- API calls against the fake server


def test_first_deploy_creates_everything_then_invoke_and_commit(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    bento = make_bento(3)
    deployment = target.deploy(spec, bento)

    assert api_server.calls(secrets=True) == [
        ("GET", f"{SECRETS}/{TOKEN_SECRET}"),
        ("POST", SECRETS),
        ("GET", f"{DEPLOYMENTS}/{NAME}"),
        ("POST", DEPLOYMENTS),
        ("GET", f"{SERVICES}/{NAME}"),
        ("POST", SERVICES),
        ("GET", f"{HPAS}/{NAME}"),
        ("POST", HPAS),
        ("GET", f"{PDBS}/{NAME}"),
        ("POST", PDBS),
        ("GET", f"{NETPOLS}/{NAME}"),
        ("POST", NETPOLS),
        ("GET", f"{DEPLOYMENTS}/{NAME}/status"),  # generation not observed yet
        ("GET", f"{DEPLOYMENTS}/{NAME}/status"),  # rollout finished
    ]
    # What was created is exactly what was rendered and validated.
    rendered = target.render(spec, bento)
    secret, *created = [r.body for r in api_server.requests if r.method == "POST"]
    assert created == rendered
    token = load_settings().endpoint_token()
    assert secret["metadata"]["name"] == TOKEN_SECRET and secret["stringData"] == {"token": token}
    assert token not in json.dumps(rendered) and token not in json.dumps(deployment.to_dict())
    assert all("fieldManager=airflow-mlops" in r.query for r in api_server.requests if r.method == "POST")
    assert api_server.image() == "flight_delay:v3abcd"

    assert deployment.target == "kubernetes"
    assert deployment.endpoint == f"{NAME}.{NS}.svc"
    assert deployment.previous is None
    assert deployment.details["created"] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]
    assert deployment.details["namespace"] == NS
    assert [(c["verb"], c["kind"]) for c in deployment.details["calls"]][:4] == [
        ("read", "Secret"),
        ("create", "Secret"),
        ("read", "Deployment"),
        ("create", "Deployment"),
    ]
    assert type(deployment).from_dict(json.loads(json.dumps(deployment.to_dict()))) == deployment

    payload = {"flights": [{"origin": "EWR", "carrier": "UA"}, {"origin": "JFK", "carrier": "B6"}]}
    answer = target.invoke(deployment, payload)
    assert answer["predictions"] == [0.25, 0.25]
    proxied = api_server.requests[-1]
    assert (proxied.method, proxied.path) == ("POST", f"{SERVICES}/{NAME}:http/proxy/predict")
    assert proxied.content_type == "application/json"
    assert proxied.body == payload
    assert proxied.endpoint_token == token  # the API server keeps `Authorization` for itself

    committed = target.commit(deployment)
    commit_call = api_server.requests[-1]
    assert (commit_call.method, commit_call.path) == ("PATCH", f"{DEPLOYMENTS}/{NAME}")
    assert commit_call.content_type == "application/merge-patch+json"
    assert commit_call.body == {
        "metadata": {"annotations": {"mlops/committed-version": "3", "mlops/committed-bento": "flight_delay:v3abcd"}}
    }
    assert committed.details["committed"] is True
    assert api_server.objects[f"{DEPLOYMENTS}/{NAME}"]["metadata"]["annotations"]["mlops/committed-version"] == "3"


def test_update_patches_and_rollback_restores_the_previous_template(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    spec = with_k8s(spec, image_repository=REPOSITORY)
    target.deploy(spec, make_bento(3))
    old = copy.deepcopy(api_server.objects)
    old_version = old[f"{DEPLOYMENTS}/{NAME}"]["metadata"]["resourceVersion"]
    api_server.requests.clear()

    staged = target.deploy(with_k8s(spec, max_replicas=8), make_bento(4))

    # The token's Secret exists: read, kept as it is (an operator may have set or rotated it).
    assert [c for c in api_server.calls(secrets=True) if c[1].startswith(SECRETS)] == [
        ("GET", f"{SECRETS}/{TOKEN_SECRET}")
    ]
    assert api_server.calls(skip_status=True) == [
        ("GET", f"{DEPLOYMENTS}/{NAME}"),
        ("PATCH", f"{DEPLOYMENTS}/{NAME}"),
        ("GET", f"{SERVICES}/{NAME}"),
        ("PATCH", f"{SERVICES}/{NAME}"),
        ("GET", f"{HPAS}/{NAME}"),
        ("PATCH", f"{HPAS}/{NAME}"),
        ("GET", f"{PDBS}/{NAME}"),
        ("PATCH", f"{PDBS}/{NAME}"),
        ("GET", f"{NETPOLS}/{NAME}"),
        ("PATCH", f"{NETPOLS}/{NAME}"),
    ]
    assert all(r.content_type == "application/merge-patch+json" for r in api_server.requests if r.method == "PATCH")
    (patch,) = api_server.bodies("PATCH", f"{DEPLOYMENTS}/{NAME}")
    assert patch["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:v4abcd"
    assert patch["metadata"]["resourceVersion"] == old_version  # refused if someone changed it since the read
    assert "replicas" not in patch["spec"]  # the HPA owns the replica count once the Deployment exists
    assert api_server.image() == f"{REPOSITORY}:v4abcd"
    assert api_server.objects[f"{HPAS}/{NAME}"]["spec"]["maxReplicas"] == 8

    assert staged.previous is not None
    assert staged.previous["image"] == f"{REPOSITORY}:v3abcd"
    assert staged.previous["template"] == old[f"{DEPLOYMENTS}/{NAME}"]["spec"]["template"]
    assert staged.previous["bento_tag"] == "flight_delay:v3abcd"
    assert staged.details["created"] == []

    api_server.requests.clear()
    target.rollback(type(staged).from_dict(json.loads(json.dumps(staged.to_dict()))))  # as it comes out of XCom

    assert api_server.calls(skip_status=True) == [
        ("PATCH", f"{NETPOLS}/{NAME}"),
        ("PATCH", f"{PDBS}/{NAME}"),
        ("PATCH", f"{HPAS}/{NAME}"),
        ("PATCH", f"{SERVICES}/{NAME}"),
        ("PATCH", f"{DEPLOYMENTS}/{NAME}"),
    ]
    assert all(r.content_type == "application/json-patch+json" for r in api_server.requests if r.method == "PATCH")
    (undo,) = api_server.bodies("PATCH", f"{DEPLOYMENTS}/{NAME}")
    assert undo == [
        {"op": "replace", "path": "/spec/template", "value": old[f"{DEPLOYMENTS}/{NAME}"]["spec"]["template"]}
    ]
    assert undo[0]["value"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:v3abcd"
    assert api_server.calls()[-1] == ("GET", f"{DEPLOYMENTS}/{NAME}/status")  # watched the rollout back
    assert api_server.image() == f"{REPOSITORY}:v3abcd"
    assert api_server.objects[f"{HPAS}/{NAME}"]["spec"] == old[f"{HPAS}/{NAME}"]["spec"]
    assert (
        api_server.objects[f"{DEPLOYMENTS}/{NAME}"]["spec"]["template"]
        == old[f"{DEPLOYMENTS}/{NAME}"]["spec"]["template"]
    )


def test_failed_rollout_is_undone_to_the_previous_image(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    spec = with_k8s(spec, image_repository=REPOSITORY)
    target.deploy(spec, make_bento(3))
    api_server.failing_images.add(f"{REPOSITORY}:v4abcd")
    api_server.requests.clear()

    with pytest.raises(
        DeployError, match=r"rollout of Deployment mlops/flight-delay failed: .*ProgressDeadlineExceeded"
    ):
        target.deploy(spec, make_bento(4))

    patches = api_server.bodies("PATCH", f"{DEPLOYMENTS}/{NAME}")
    assert patches[0]["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:v4abcd"
    assert patches[-1][0]["path"] == "/spec/template"
    assert patches[-1][0]["value"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:v3abcd"
    assert api_server.image() == f"{REPOSITORY}:v3abcd"
    assert not [c for c in api_server.calls() if c[0] == "DELETE"]


def test_failed_first_rollout_deletes_what_it_created(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    api_server.failing_images.add("flight_delay:v3abcd")
    undone = r"ProgressDeadlineExceeded.*undone: deleted NetworkPolicy, deleted PodDisruptionBudget"
    with pytest.raises(DeployError, match=undone):
        target.deploy(spec, make_bento(3))
    assert [c for c in api_server.calls() if c[0] == "DELETE"] == [
        ("DELETE", f"{NETPOLS}/{NAME}"),
        ("DELETE", f"{PDBS}/{NAME}"),
        ("DELETE", f"{HPAS}/{NAME}"),
        ("DELETE", f"{SERVICES}/{NAME}"),
        ("DELETE", f"{DEPLOYMENTS}/{NAME}"),
    ]
    assert api_server.workloads() == {}


def test_rollout_that_never_finishes_times_out(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    api_server.stuck_images.add("flight_delay:v3abcd")
    with pytest.raises(DeployError, match=r"not finished after 1 s: 1 of 2 replicas updated"):
        target.deploy(with_k8s(spec, rollout_timeout_seconds=1), make_bento(3))
    assert api_server.workloads() == {}


def test_rollback_of_a_first_deployment_deletes_it(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    staged = target.deploy(spec, make_bento(3))
    api_server.requests.clear()
    target.rollback(staged)
    assert api_server.calls() == [
        ("DELETE", f"{NETPOLS}/{NAME}"),
        ("DELETE", f"{PDBS}/{NAME}"),
        ("DELETE", f"{HPAS}/{NAME}"),
        ("DELETE", f"{SERVICES}/{NAME}"),
        ("DELETE", f"{DEPLOYMENTS}/{NAME}"),
    ]
    assert all("propagationPolicy=Background" in r.query for r in api_server.requests)
    assert api_server.workloads() == {}
    target.rollback(staged)  # again: everything is already gone, nothing fails


def test_api_error_names_the_call_and_undoes_what_was_done(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    api_server.forbidden.add(("POST", HPAS))
    with pytest.raises(DeployError) as caught:
        target.deploy(spec, make_bento(3))
    message = str(caught.value)
    assert "create HorizontalPodAutoscaler mlops/flight-delay failed: HTTP 403" in message
    assert f'cannot post "{HPAS}"' in message
    assert "deleted Service, deleted Deployment" in message
    assert api_server.workloads() == {}


def test_invalid_manifest_never_reaches_the_api_server(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    bad = with_k8s(spec, memory_limit={"not": "a quantity"})  # model_copy does not validate: the schema must
    with pytest.raises(
        DeployError, match=r"Deployment/flight-delay .* at spec\.template\.spec\.containers\.0\.resources"
    ):
        target.deploy(bad, make_bento(3))
    assert api_server.requests == []


def test_refused_update_restores_nothing_and_names_the_call(
    spec: ModelSpec, api_server: FakeApiServer, target: KubernetesTarget
) -> None:
    target.deploy(spec, make_bento(3))
    before = copy.deepcopy(api_server.objects)
    api_server.forbidden.add(("PATCH", f"{DEPLOYMENTS}/{NAME}"))
    api_server.requests.clear()
    expected = r"patch Deployment mlops/flight-delay failed: HTTP 403.*undone: nothing to undo"
    with pytest.raises(DeployError, match=expected):
        target.deploy(spec, make_bento(4))
    assert api_server.calls() == [("GET", f"{DEPLOYMENTS}/{NAME}"), ("PATCH", f"{DEPLOYMENTS}/{NAME}")]
    assert api_server.objects == before


def test_module_import_stays_cheap() -> None:
    code = (
        "import sys, airflow_mlops.deploy.kubernetes; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'airflow', 'kubernetes', 'kubernetes_validate'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
