"""`kubectl apply -k manifests/` installs a restricted-compliant operator with least-privilege RBAC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ROOT, Kubectl

SA = "system:serviceaccount:vestige-system:vestige-operator"
WATCHED = "agents"  # the namespace the namespaced overlay watches


def can(kubectl: Kubectl, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    res = kubectl("auth", "can-i", verb, resource, *scope, f"--as={SA}", check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stderr
    return answer == "yes"


# What the operator must be able to do in a namespace it watches.
NEEDED = [
    ("patch", "vestigememories.vestige.dev/status"),
    ("get", "vestigememories.vestige.dev"),
    ("watch", "vestigememories.vestige.dev"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("create", "services"),
    ("create", "secrets"),
    ("create", "persistentvolumeclaims"),
    ("patch", "persistentvolumeclaims"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("delete", "networkpolicies.networking.k8s.io"),
    ("create", "ingresses.networking.k8s.io"),
    ("create", "events"),
]
# What it must never be able to do, anywhere.
FORBIDDEN = [
    ("delete", "persistentvolumeclaims"),
    ("delete", "secrets"),
    ("update", "secrets"),
    ("patch", "secrets"),
    ("list", "secrets"),
    ("delete", "vestigememories.vestige.dev"),
    ("create", "pods"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("get", "configmaps"),
    ("delete", "namespaces"),
]


@pytest.fixture(scope="module")
def cleanup(kubectl: Kubectl) -> Iterator[None]:
    yield
    # Remove what the install created, except the CRD (shared by the rest of the session).
    for kind, name in [
        ("clusterrolebinding", "vestige-operator"),
        ("clusterrolebinding", "vestige-operator-discovery"),
        ("clusterrole", "vestige-operator"),
        ("clusterrole", "vestige-operator-discovery"),
    ]:
        kubectl("delete", kind, name, "--ignore-not-found", check=False)
    for ns in ("vestige-system", WATCHED):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def _wait_available(kubectl: Kubectl, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = json.loads(
            kubectl("get", "deployment", "vestige-operator", "-n", "vestige-system", "-o", "json").stdout
        )
        conds = {c["type"]: c["status"] for c in dep.get("status", {}).get("conditions", [])}
        if conds.get("Available") == "True" and dep["status"].get("readyReplicas") == 1:
            return dep
        time.sleep(0.5)
    raise AssertionError("the operator Deployment did not become Available")


@pytest.mark.usefixtures("crd_installed", "cleanup")
def test_namespaced_overlay_grants_rights_only_where_it_watches(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "namespace", WATCHED)
    rendered = kubectl("kustomize", str(ROOT / "manifests/overlays/namespaced")).stdout
    assert "kind: ClusterRoleBinding" not in rendered
    kubectl("apply", "-k", str(ROOT / "manifests/overlays/namespaced"))
    dep = _wait_available(kubectl)
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VESTIGE_NAMESPACES"] == WATCHED

    for verb, resource in NEEDED:
        assert can(kubectl, verb, resource, WATCHED), f"cannot {verb} {resource} in {WATCHED}"
        assert not can(kubectl, verb, resource, namespace), f"can {verb} {resource} in unwatched {namespace}"
    assert not can(kubectl, "list", "vestigememories.vestige.dev", None)
    for verb, resource in FORBIDDEN:
        assert not can(kubectl, verb, resource, WATCHED), f"may {verb} {resource}"
    kubectl("delete", "rolebinding", "vestige-operator", "-n", WATCHED)


@pytest.mark.usefixtures("crd_installed", "cleanup")
def test_cluster_install_is_restricted_and_least_privilege(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-k", str(ROOT / "manifests"))
    ns = json.loads(kubectl("get", "namespace", "vestige-system", "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl("wait", "--for=condition=Established", "crd/vestigememories.vestige.dev", "--timeout=60s")

    dep = _wait_available(kubectl)  # its pod was admitted by PodSecurity `restricted`
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pods = json.loads(
        kubectl(
            "get",
            "pods",
            "-n",
            "vestige-system",
            "-l",
            "app.kubernetes.io/name=vestige-operator",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
    warn = kubectl(
        "label",
        "--dry-run=server",
        "--overwrite",
        "namespace",
        "vestige-system",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    assert "violate" not in warn.stderr

    for verb, resource in NEEDED:
        assert can(kubectl, verb, resource, namespace), f"cannot {verb} {resource}"
    assert can(kubectl, "list", "vestigememories.vestige.dev", None)
    assert can(kubectl, "watch", "deployments.apps", None)
    for verb, resource in FORBIDDEN:
        assert not can(kubectl, verb, resource, namespace), f"may {verb} {resource} in a namespace"
        assert not can(kubectl, verb, resource, None), f"may {verb} {resource} cluster-wide"
    for verb, resource in [
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "nodes"),
        ("create", "namespaces"),
        ("create", "persistentvolumes"),
    ]:
        assert not can(kubectl, verb, resource, None), f"may {verb} {resource}"
    # The SubjectAccessReview path agrees with can-i on the headline rule.
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": SA,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:vestige-system"],
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "delete",
                "resource": "persistentvolumeclaims",
            },
        },
    }
    out = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)
    assert out["status"]["allowed"] is False
