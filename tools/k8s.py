"""Render deploy/k8s offline, validate it against the Kubernetes schemas, check its invariants.

    python tools/k8s.py [DIR]       # default deploy/k8s; exit 1 with one line a problem

Rendering: the kustomization there uses only ``resources``, ``namespace`` and
``images``, which this renders like ``kubectl kustomize`` does (the test compares the
two where a kubectl binary is at hand), so neither CI nor a developer needs one.
Schemas: the ``kubernetes-validate`` package (a dev dependency) carries them.
Invariants: what deploy/k8s promises beyond the schemas (docs/KUBERNETES.md):

* every container has liveness and readiness probes and cpu/memory requests and
  limits; resplit's own use native gRPC probes on the plaintext health port;
* a worker is trusted (``RESPLIT_TRUSTED``/``--trusted``) only where its pod is
  scheduled on nodes carrying :data:`TRUST_LABEL` (every required node selector term
  demands it), set as a literal in the manifest (never read from the pod's fields);
  an untrusted worker is kept off those nodes; some worker requests a GPU;
* TLS material comes from Secrets; the Prometheus scrape annotations name the HTTP port;
* a NetworkPolicy covers every worker; the gRPC port of an untrusted worker is open to
  the orchestrator, broadcaster, monitor and peer workers alone;
* a PodDisruptionBudget covers every workload's pods.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
TRUST_LABEL = "node-restriction.kubernetes.io/resplit-trusted"
WORKER_PORT = 50060
WORKER_CALLERS = {"orchestrator", "broadcaster", "monitor", "worker"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}

Obj = dict[str, Any]


# --------------------------------------------------------------------------- render


def render(directory: Path = DEFAULT_DIR) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` would print (in file order)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "namespace", "resources", "images"}
    if unsupported:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported fields {sorted(unsupported)}")
    images = {image["name"]: image for image in kustomization.get("images", [])}
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        for obj in yaml.safe_load_all((directory / resource).read_text()):
            if obj is None:
                continue
            if "namespace" in kustomization and obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
            for container in _containers(obj):
                container["image"] = _retag(container["image"], images)
            objects.append(obj)
    return objects


def _retag(image: str, images: dict[str, Obj]) -> str:
    name, _, tag = image.partition(":")
    if name not in images:
        return image
    new = images[name]
    tag = str(new.get("newTag", tag))
    return new.get("newName", name) + (f":{tag}" if tag else "")


# --------------------------------------------------------------------------- validate


def validate(objects: Iterable[Obj], version: str = KUBERNETES_VERSION) -> list[str]:
    """One line per object the Kubernetes schemas (strict: no unknown fields) refuse."""
    from kubernetes_validate import utils

    problems = []
    for obj in objects:
        try:
            utils.validate(obj, version, strict=True)
        except utils.ValidationError as exc:
            problems.append(f"{_id(obj)}: schema: {exc.message} at {'/'.join(map(str, exc.path))}")
    return problems


# --------------------------------------------------------------------------- invariants


def check(objects: list[Obj]) -> list[str]:
    """One line per broken invariant (the module docstring lists them)."""
    problems: list[str] = []
    workloads = [obj for obj in objects if obj["kind"] in WORKLOADS]
    for obj in workloads:
        problems += _check_workload(obj)
    workers = [obj for obj in workloads if _is_worker(obj)]
    if not workers:
        problems.append("no worker workload")
    if not any(_gpus(obj) for obj in workers):
        problems.append("no worker requests nvidia.com/gpu")
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    for obj in workers:
        problems += _check_worker_policy(obj, policies)
    budgets = [obj for obj in objects if obj["kind"] == "PodDisruptionBudget"]
    for obj in workloads:
        labels = _pod_labels(obj)
        if not any(_matches(budget["spec"].get("selector", {}), labels) for budget in budgets):
            problems.append(f"{_id(obj)}: no PodDisruptionBudget selects its pods")
    return problems


def _check_workload(obj: Obj) -> list[str]:
    problems = []
    pod = obj["spec"]["template"]["spec"]
    for container in pod.get("containers", []):
        where = f"{_id(obj)} container {container['name']}"
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"{where}: no {probe}")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(kind, {}))
            if missing:
                problems.append(f"{where}: no {kind} for {', '.join(sorted(missing))}")
        if _is_resplit(container):
            problems += _check_resplit_container(obj, container, where)
    return problems


def _check_resplit_container(obj: Obj, container: Obj, where: str) -> list[str]:
    problems = []
    env = _env(container)
    health_port = env.get("RESPLIT_HEALTH_PORT")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        grpc = container.get(probe, {}).get("grpc")
        if grpc is None:
            problems.append(f"{where}: {probe} is not a native gRPC probe")
        elif str(grpc.get("port")) != health_port:
            problems.append(
                f"{where}: {probe} port {grpc.get('port')} is not RESPLIT_HEALTH_PORT {health_port}"
            )
    secret_mounts = _secret_mounts(obj, container)
    for name in ("RESPLIT_TLS_CA", "RESPLIT_TLS_CERT", "RESPLIT_TLS_KEY", "RESPLIT_TOKEN_FILE"):
        path = env.get(name)
        if not path or not any(path.startswith(mount.rstrip("/") + "/") for mount in secret_mounts):
            problems.append(f"{where}: {name} ({path}) is not a file from a Secret")
    annotations = obj["spec"]["template"].get("metadata", {}).get("annotations", {})
    http_ports = {
        str(port["containerPort"]) for port in container.get("ports", []) if port.get("name") == "http"
    }
    if (
        annotations.get("prometheus.io/scrape") != "true"
        or annotations.get("prometheus.io/port") not in http_ports
    ):
        problems.append(f"{where}: no Prometheus scrape annotations naming its http port")
    if _is_worker(obj):
        problems += _check_trust(obj, container, env, where)
    return problems


def _check_trust(obj: Obj, container: Obj, env: dict[str, str | None], where: str) -> list[str]:
    problems = []
    for item in container.get("env", []):
        if item["name"] == "RESPLIT_TRUSTED" and "valueFrom" in item:
            problems.append(f"{where}: RESPLIT_TRUSTED read at run time (valueFrom), not set by the manifest")
    words = [*container.get("command", []), *container.get("args", [])]
    trusted = (
        str(env.get("RESPLIT_TRUSTED", "")).lower() in ("1", "true", "yes", "on") or "--trusted" in words
    )
    on_trusted_nodes = _requires_trust_label(obj["spec"]["template"]["spec"])
    if trusted and not on_trusted_nodes:
        problems.append(f"{where}: trusted, but not limited to nodes labelled {TRUST_LABEL}=true")
    if not trusted and not _excludes_trust_label(obj["spec"]["template"]["spec"]):
        problems.append(f"{where}: untrusted, but not kept off nodes labelled {TRUST_LABEL}=true")
    return problems


def _node_terms(pod: Obj) -> list[list[Obj]]:
    """The required node selector terms (OR of ANDs), nodeSelector folded into each."""
    selector = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in pod.get("nodeSelector", {}).items()
    ]
    required = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
    )
    terms = [term.get("matchExpressions", []) for term in required.get("nodeSelectorTerms", [])]
    return [selector + term for term in terms] or [selector]


def _requires_trust_label(pod: Obj) -> bool:
    def requires(term: list[Obj]) -> bool:
        return any(
            e["key"] == TRUST_LABEL and e["operator"] == "In" and e.get("values") == ["true"] for e in term
        )

    return all(requires(term) for term in _node_terms(pod))


def _excludes_trust_label(pod: Obj) -> bool:
    def excludes(term: list[Obj]) -> bool:
        return any(
            e["key"] == TRUST_LABEL
            and (
                e["operator"] == "DoesNotExist"
                or (e["operator"] == "NotIn" and "true" in e.get("values", []))
            )
            for e in term
        )

    return all(excludes(term) for term in _node_terms(pod))


def _check_worker_policy(obj: Obj, policies: list[Obj]) -> list[str]:
    labels = _pod_labels(obj)
    selecting = [p for p in policies if _matches(p["spec"].get("podSelector", {}), labels)]
    if not any("Ingress" in p["spec"].get("policyTypes", ["Ingress"]) for p in selecting):
        return [f"{_id(obj)}: no NetworkPolicy limits who reaches its pods"]
    if _is_trusted_pool(obj):
        return []  # also open to their clients (the first hop): see network-policy.yaml
    problems = []
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = {str(port.get("port")) for port in rule.get("ports", [])}
            if ports and str(WORKER_PORT) not in ports:
                continue
            peers = rule.get("from", [])
            if not peers or not all(_only_callers(peer) for peer in peers):
                problems.append(
                    f"{_id(policy)}: opens {_id(obj)}'s gRPC port {WORKER_PORT} to more than "
                    f"{', '.join(sorted(WORKER_CALLERS))}"
                )
    return problems


def _only_callers(peer: Obj) -> bool:
    """Whether a NetworkPolicy peer admits only pods of WORKER_CALLERS (in the policy's namespace)."""
    if set(peer) != {"podSelector"}:
        return False
    selector = peer["podSelector"]
    component = selector.get("matchLabels", {}).get("app.kubernetes.io/component")
    if component is not None:
        return component in WORKER_CALLERS
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In":
            return set(expression["values"]) <= WORKER_CALLERS
    return False


# --------------------------------------------------------------------------- helpers


def _id(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _containers(obj: Obj) -> list[Obj]:
    if obj["kind"] not in WORKLOADS:
        return []
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _is_resplit(container: Obj) -> bool:
    return container["image"].split(":")[0].rsplit("/", 1)[-1] == "resplit"


def _is_worker(obj: Obj) -> bool:
    return any(c.get("command", [None])[0] == "resplit-worker" for c in _containers(obj))


def _is_trusted_pool(obj: Obj) -> bool:
    return any(str(_env(c).get("RESPLIT_TRUSTED", "")).lower() == "true" for c in _containers(obj))


def _gpus(obj: Obj) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in _containers(obj))


def _env(container: Obj) -> dict[str, str | None]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def _pod_labels(obj: Obj) -> dict[str, str]:
    return obj["spec"]["template"].get("metadata", {}).get("labels", {})


def _secret_mounts(obj: Obj, container: Obj) -> list[str]:
    volumes = obj["spec"]["template"]["spec"].get("volumes", [])
    secrets = {v["name"] for v in volumes if "secret" in v}
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in secrets]


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector matches everything)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, operator, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def problems_in(directory: Path = DEFAULT_DIR) -> list[str]:
    """Render ``directory``; every schema error and broken invariant, one line each."""
    objects = render(directory)
    return validate(copy.deepcopy(objects)) + check(objects)


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DEFAULT_DIR
    problems = problems_in(directory)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        count = len(render(directory))
        print(f"{directory}: {count} objects; the schemas ({KUBERNETES_VERSION}) and invariants hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
