"""deploy/k8s renders offline, passes the Kubernetes schemas and keeps its invariants;
and the check that says so fails on a broken copy (tools/k8s.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import k8s  # tools/ is not a package: imported from its folder


def test_manifests_validate_and_keep_their_invariants():
    objects = k8s.render()
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    assert ("StatefulSet", "redis") in kinds
    assert {
        ("Deployment", name) for name in ("monitor", "splitter", "broadcaster", "orchestrator", "gateway")
    } <= kinds
    assert {("DaemonSet", name) for name in ("worker", "worker-trusted", "worker-gpu")} <= kinds
    assert all(obj["metadata"].get("namespace") == "resplit" for obj in objects if obj["kind"] != "Namespace")
    assert k8s.problems_in() == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl binary to compare with")
def test_the_renderer_agrees_with_kubectl_kustomize():
    out = subprocess.run(
        ["kubectl", "kustomize", str(k8s.DEFAULT_DIR)], capture_output=True, text=True, timeout=60, check=True
    ).stdout

    def key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    theirs = sorted(yaml.safe_load_all(out), key=key)
    assert sorted(k8s.render(), key=key) == theirs


# --------------------------------------------------------------------------- broken copies

Obj = dict[str, Any]


def _container(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _drop_readiness_probe(obj: Obj) -> None:
    del _container(obj)["readinessProbe"]


def _tcp_liveness(obj: Obj) -> None:
    _container(obj)["livenessProbe"] = {"tcpSocket": {"port": 50051}}


def _no_limits(obj: Obj) -> None:
    del _container(obj)["resources"]["limits"]


def _trust_untrusted_pool(obj: Obj) -> None:
    _container(obj)["env"].append({"name": "RESPLIT_TRUSTED", "value": "true"})


def _trust_by_flag(obj: Obj) -> None:
    _container(obj)["args"] = ["--trusted"]


def _drop_trust_label(obj: Obj) -> None:
    for term in obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]:
        term["matchExpressions"] = [e for e in term["matchExpressions"] if e["key"] != k8s.TRUST_LABEL]


def _trust_from_pod_annotation(obj: Obj) -> None:
    env = _container(obj)["env"]
    env[:] = [item for item in env if item["name"] != "RESPLIT_TRUSTED"]
    field = {"fieldRef": {"fieldPath": "metadata.annotations['resplit.io/trusted']"}}
    env.append({"name": "RESPLIT_TRUSTED", "valueFrom": field})


def _open_worker_port(obj: Obj) -> None:
    del obj["spec"]["ingress"][0]["from"]


def _tls_from_host(obj: Obj) -> None:
    for item in _container(obj)["env"]:
        if item["name"] == "RESPLIT_TLS_KEY":
            item["value"] = "/etc/resplit/tls.key"


def _unknown_field(obj: Obj) -> None:
    _container(obj)["livenesProbe"] = _container(obj)["livenessProbe"]


BROKEN = {
    "probe removed": ("control.yaml", "Deployment", "monitor", _drop_readiness_probe, "no readinessProbe"),
    "probe not gRPC": ("control.yaml", "Deployment", "monitor", _tcp_liveness, "not a native gRPC probe"),
    "no limits": ("workers.yaml", "DaemonSet", "worker", _no_limits, "no limits for cpu, memory"),
    "trust without label": ("workers.yaml", "DaemonSet", "worker", _trust_untrusted_pool, "trusted, but not"),
    "--trusted without label": (
        "workers.yaml",
        "DaemonSet",
        "worker-gpu",
        _trust_by_flag,
        "trusted, but not",
    ),
    "label dropped from trusted": (
        "workers.yaml",
        "DaemonSet",
        "worker-trusted",
        _drop_trust_label,
        "trusted, but",
    ),
    "trust from the pod": (
        "workers.yaml",
        "DaemonSet",
        "worker-trusted",
        _trust_from_pod_annotation,
        "not set by the manifest",
    ),
    "worker port open": ("network-policy.yaml", "NetworkPolicy", "worker-grpc", _open_worker_port, "opens"),
    "key not from a Secret": (
        "gateway.yaml",
        "Deployment",
        "gateway",
        _tls_from_host,
        "not a file from a Secret",
    ),
    "schema": ("control.yaml", "Deployment", "splitter", _unknown_field, "schema"),
}


def _broken_copy(tmp_path: Path, file: str, kind: str, name: str, change: Callable[[Obj], None]) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(k8s.DEFAULT_DIR, copy)
    docs = list(yaml.safe_load_all((copy / file).read_text()))
    [target] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    change(target)
    (copy / file).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return copy


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_copy_fails(tmp_path, case):
    file, kind, name, change, expected = BROKEN[case]
    problems = k8s.problems_in(_broken_copy(tmp_path, file, kind, name, change))
    assert any(expected in line for line in problems), problems


def test_the_command_line_exits_1_on_a_broken_copy(tmp_path, capsys):
    file, kind, name, change, expected = BROKEN["trust without label"]
    assert k8s.main([str(_broken_copy(tmp_path, file, kind, name, change))]) == 1
    assert expected in capsys.readouterr().err


# --------------------------------------------------------------------------- the settings the pods get

POD = {"metadata.name": "worker-trusted-x7k2p", "metadata.namespace": "resplit", "spec.nodeName": "box-1"}
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# Where a service that dials another is told to find it: the Service names.
DIALS = {p: f"{p}:{port}" for p, port in (("monitor", 50051), ("orchestrator", 50052), ("splitter", 50053))}
DIALS["broadcaster"] = "broadcaster:50054"


def _quantity(text: str) -> int:
    return int(text[:-2]) * UNITS[text[-2:]] if text[-2:] in UNITS else int(text)


def _pod_env(container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet makes it (valueFrom resolved, $(VAR) expanded)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = "s3cr3t"
        elif "fieldRef" in source:
            value = POD[source["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in source:
            value = str(
                _quantity(container["resources"]["limits"][source["resourceFieldRef"]["resource"][7:]])
            )
        else:
            value = item["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
        env[item["name"]] = value
    return env


def test_every_pod_environment_parses_into_the_settings_meant(monkeypatch):
    """What the manifests set reaches each service's settings as meant (a typo in a RESPLIT_
    name or value would be ignored or refused at start on a real cluster)."""
    from resplit.config import parse_settings, transport_problem

    classes = {
        "resplit-monitor": "services.monitor.config:MonitorSettings",
        "resplit-splitter": "services.splitter.config:SplitterSettings",
        "resplit-broadcaster": "services.broadcaster.config:BroadcasterSettings",
        "resplit-orchestrator": "services.orchestrator.config:OrchestratorSettings",
        "resplit-gateway": "services.gateway.config:GatewaySettings",
        "resplit-worker": "services.worker.config:WorkerSettings",
    }
    seen = set()
    for obj in k8s.render():
        for container in k8s._containers(obj):
            if not k8s._is_resplit(container):
                continue
            command = container["command"][0]
            module, name = classes[command].split(":")
            cls = getattr(__import__(module, fromlist=[name]), name)
            for key in [k for k in os.environ if k.startswith("RESPLIT_")]:
                monkeypatch.delenv(key)
            env = _pod_env(container)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            settings = parse_settings(cls, [])
            where = k8s._id(obj)
            assert transport_problem(settings) is None, where
            assert settings.host == "0.0.0.0" and settings.health_port == 50099, where
            assert settings.redis_url == "redis://:s3cr3t@redis:6379/0", where
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert (settings.port, settings.http_port) == (ports["grpc"], ports["http"]), where
            if command == "resplit-worker":
                assert settings.trusted == (obj["metadata"]["name"] == "worker-trusted"), where
                assert settings.node_id == "box-1", where
                assert settings.advertise_host == "worker-trusted-x7k2p.worker.resplit.svc.cluster.local", (
                    where
                )
                assert settings.memory_bytes == _quantity(container["resources"]["limits"]["memory"]), where
            else:
                assert settings.advertise_host == obj["metadata"]["name"], where
            dials = {
                "monitor": "monitor:50051",
                "splitter": "splitter:50053",
                "broadcaster": "broadcaster:50054",
            }
            dials["orchestrator"] = "orchestrator:50052"
            for peer, address in dials.items():
                assert getattr(settings, f"{peer}_address", address) == address, (where, peer)
            seen.add(command)
    assert seen == set(classes)


FAKE_KUBECTL = """#!/bin/bash
# Offline stand-in: what would be applied is appended to $APPLIED; nothing exists yet.
case " $* " in
  *" apply "*) { echo "---"; cat; } >> "$APPLIED" ;;
  *" get secret "*) exit 1 ;;
  *" create secret generic resplit-redis "*)
    { echo "---"; "$KUBECTL" "$@" --dry-run=client -o yaml; } >> "$APPLIED" ;;
  *) exec "$KUBECTL" "$@" ;;
esac
"""


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="secrets.sh needs kubectl (client side only)")
def test_secrets_sh_makes_the_secrets_the_manifests_read(tmp_path):
    """deploy/k8s/secrets.sh, against a kubectl that applies nothing: every Secret a pod reads
    is made, with the keys it reads, and the worker certificate names every worker pod."""
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    applied = tmp_path / "applied.yaml"
    env = {
        **os.environ,
        "PATH": f"{fake.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KUBECTL": shutil.which("kubectl"),
        "APPLIED": str(applied),
        "CERTS": str(tmp_path / "certs"),
    }
    script = k8s.DEFAULT_DIR / "secrets.sh"
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    made = {
        d["metadata"]["name"]: set(d.get("data", {})) for d in yaml.safe_load_all(applied.read_text()) if d
    }
    read: dict[str, set[str]] = {}
    for obj in k8s.render():
        for volume in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "secret" in volume:
                read.setdefault(volume["secret"]["secretName"], set())
        for container in k8s._containers(obj):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    read.setdefault(ref["name"], set()).add(ref["key"])
    for name, keys in read.items():
        assert name in made, f"no Secret {name}"
        assert keys <= made[name], (name, keys, made[name])
    for name in read:
        if name.startswith("resplit-tls-"):
            assert made[name] == {"tls.crt", "tls.key", "ca.crt"}, name
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "worker.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "*.worker.resplit.svc.cluster.local" in names.get_values_for_type(x509.DNSName)
