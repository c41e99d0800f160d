"""`kubectl apply -k manifests/` installs a restricted-compliant operator with least-privilege RBAC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import ROOT, Kubectl
from tests.integration.operator_fixtures import OperatorFactory
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture

SA = "system:serviceaccount:vestige-system:vestige-operator"
WATCHED = "agents"  # the namespace the namespaced overlay watches


def can(kubectl: Kubectl, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    resource, _, sub = resource.partition("/")
    subresource = [f"--subresource={sub}"] if sub else []
    res = kubectl("auth", "can-i", verb, resource, *subresource, *scope, f"--as={SA}", check=False)
    answer = res.stdout.strip()
    assert answer in ("yes", "no"), res.stderr
    return answer == "yes"


# What the operator must be able to do in a namespace it watches.
NEEDED = [
    ("patch", "vestigememories.vestige.dev/status"),
    ("update", "vestigememories.vestige.dev/finalizers"),
    ("get", "vestigememories.vestige.dev"),
    ("watch", "vestigememories.vestige.dev"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("create", "services"),
    ("create", "secrets"),
    ("update", "secrets"),  # its own token Secrets only (code-enforced): vestige-token, rotation
    # Secrets: list/watch for the label-selected watch of its own token Secrets, get for
    # auth.existingSecret by name. RBAC cannot narrow these by label (docs/operator.md).
    ("list", "secrets"),
    ("watch", "secrets"),
    ("get", "secrets"),
    ("create", "persistentvolumeclaims"),
    ("patch", "persistentvolumeclaims"),
    ("create", "networkpolicies.networking.k8s.io"),
    ("delete", "networkpolicies.networking.k8s.io"),
    ("create", "ingresses.networking.k8s.io"),
    ("create", "events"),
    # backups (docs/backup.md)
    ("create", "vestigebackups.vestige.dev"),
    ("delete", "vestigebackups.vestige.dev"),
    ("watch", "vestigebackups.vestige.dev"),
    ("patch", "vestigebackups.vestige.dev/status"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("watch", "jobs.batch"),
    ("list", "pods"),
    ("get", "pods"),
]
# What it must never be able to do, anywhere.
FORBIDDEN = [
    ("delete", "persistentvolumeclaims"),
    ("delete", "secrets"),
    ("patch", "secrets"),
    ("delete", "vestigememories.vestige.dev"),
    ("patch", "vestigememories.vestige.dev"),
    ("update", "vestigememories.vestige.dev"),
    ("create", "pods"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("escalate", "roles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
    ("create", "serviceaccounts/token"),
    ("get", "configmaps"),
    ("delete", "namespaces"),
    # backups: read results, never run code in or read logs of other pods, never edit a Job
    ("patch", "vestigebackups.vestige.dev"),
    ("update", "vestigebackups.vestige.dev"),
    ("patch", "jobs.batch"),
    ("watch", "pods"),
    ("delete", "pods"),
    ("get", "pods/log"),
    ("create", "pods/exec"),
    ("create", "pods/portforward"),
]


POLICY = "vestige-operator-policy"
#: The admission policy of the default install (docs/admission.md), cluster-scoped.
POLICY_OBJECTS = [("validatingadmissionpolicybinding", POLICY), ("validatingadmissionpolicy", POLICY)]
FOREIGN_IMAGE = {"vestige": {"image": "docker.io/evil/vestige:3"}}


def expect_policy(kubectl: Kubectl, namespace: str, spec: dict, refused: bool, timeout: float = 60) -> None:
    """The installed policy refuses (or admits) ``spec`` in ``namespace`` (a server-side dry run),
    once a change of the install is in force (within ``timeout``)."""
    doc = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeMemory", "metadata": {"name": "probe"}}
    doc["spec"] = spec
    deadline = time.monotonic() + timeout
    while True:
        res = kubectl(
            "-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False
        )
        if (res.returncode != 0) == refused:
            assert not refused or POLICY in res.stderr, res.stderr
            return
        assert time.monotonic() < deadline, f"{spec} in {namespace}: refused={not refused}: {res.stderr}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cleanup(kubectl: Kubectl) -> Iterator[None]:
    for ns in ("vestige-system", WATCHED):  # left over by an interrupted earlier run
        _delete_namespace(kubectl, ns)
    yield
    # Remove what the install created, except the CRD (shared by the rest of the session). The
    # policy binding first: without its params (in vestige-system) it refuses every VestigeMemory.
    for kind, name in [
        *POLICY_OBJECTS,
        ("clusterrolebinding", "vestige-operator"),
        ("clusterrolebinding", "vestige-operator-discovery"),
        ("clusterrole", "vestige-operator"),
        ("clusterrole", "vestige-operator-discovery"),
    ]:
        kubectl("delete", kind, name, "--ignore-not-found", check=False)
    for ns in ("vestige-system", WATCHED):
        _delete_namespace(kubectl, ns)


def _delete_namespace(kubectl: Kubectl, name: str) -> None:
    """Delete a namespace and wait until it is gone (a later install must not meet it Terminating)."""
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=180s", timeout=200)


def _wait_available(kubectl: Kubectl, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = json.loads(
            kubectl("get", "deployment", "vestige-operator", "-n", "vestige-system", "-o", "json").stdout
        )
        conds = {c["type"]: c["status"] for c in dep.get("status", {}).get("conditions", [])}
        if conds.get("Available") == "True" and dep["status"].get("readyReplicas") == 2:  # leader, standby
            return dep
        time.sleep(0.5)
    raise AssertionError("the operator Deployment did not become Available")


@pytest.mark.usefixtures("crd_installed", "cleanup")
def test_namespaced_overlay_grants_rights_only_where_it_watches(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "namespace", WATCHED)
    rendered = list(
        yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests/overlays/namespaced")).stdout)
    )
    bindings = [d["metadata"]["name"] for d in rendered if d["kind"] == "ClusterRoleBinding"]
    assert bindings == ["vestige-operator-discovery"]  # read-only discovery, nothing else cluster-wide
    kubectl("apply", "-k", str(ROOT / "manifests/overlays/namespaced"))
    dep = _wait_available(kubectl)
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VESTIGE_NAMESPACES"] == WATCHED

    # The admission policy applies where this operator acts: in the watched namespace only.
    expect_policy(kubectl, WATCHED, FOREIGN_IMAGE, refused=True)
    expect_policy(kubectl, namespace, FOREIGN_IMAGE, refused=False)
    for verb, resource in NEEDED:
        assert can(kubectl, verb, resource, WATCHED), f"cannot {verb} {resource} in {WATCHED}"
        assert not can(kubectl, verb, resource, namespace), f"can {verb} {resource} in unwatched {namespace}"
    assert not can(kubectl, "list", "vestigememories.vestige.dev", None)
    # No Secret outside the watched namespaces: not listable cluster-wide, not readable by name.
    assert not can(kubectl, "list", "secrets", None)
    assert not can(kubectl, "get", "secrets", "kube-system")
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
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Running"}
    pdb = json.loads(kubectl("get", "pdb", "vestige-operator", "-n", "vestige-system", "-o", "json").stdout)
    assert pdb["spec"]["minAvailable"] == 1
    # Leader election: Leases in its own namespace only, and only what the election needs.
    for verb in ("get", "create", "update"):
        assert can(kubectl, verb, "leases.coordination.k8s.io", "vestige-system"), verb
        assert not can(kubectl, verb, "leases.coordination.k8s.io", namespace), (
            f"{verb} leases in {namespace}"
        )
        assert not can(kubectl, verb, "leases.coordination.k8s.io", None), f"{verb} leases cluster-wide"
    for verb in ("delete", "list", "watch", "patch"):
        assert not can(kubectl, verb, "leases.coordination.k8s.io", "vestige-system"), f"may {verb} leases"
    warn = kubectl(
        "label",
        "--dry-run=server",
        "--overwrite",
        "namespace",
        "vestige-system",
        "pod-security.kubernetes.io/enforce=restricted",
    )
    assert "violate" not in warn.stderr

    # The admission policy is part of the install, in every namespace (docs/admission.md; each
    # rule: test_admission.py): a foreign image is refused, naming the param that allows it.
    expect_policy(kubectl, namespace, FOREIGN_IMAGE, refused=True)
    res = kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", str(ROOT / "manifests/examples/minimal.yaml")
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for verb, resource in NEEDED:
        assert can(kubectl, verb, resource, namespace), f"cannot {verb} {resource}"
    assert can(kubectl, "list", "vestigememories.vestige.dev", None)
    assert can(kubectl, "watch", "deployments.apps", None)
    assert can(kubectl, "get", "storageclasses.storage.k8s.io", None)
    assert not can(kubectl, "list", "storageclasses.storage.k8s.io", None)
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


def _sa_kubeconfig(kubectl: Kubectl, kubeconfig: str, path: Path) -> str:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a bound token)."""
    token = kubectl(
        "create", "token", "vestige-operator", "-n", "vestige-system", "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "vestige-operator", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "vestige-operator"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(doc))
    return str(path)


def _run_operator_as_sa(
    operator_factory: OperatorFactory, kubectl: Kubectl, sa_kubeconfig: str, namespace: str, *scope: str
) -> None:
    # With leader election, as in its pod: the Lease in vestige-system through the shipped Role.
    env = {
        "KUBECONFIG": sa_kubeconfig,
        "VESTIGE_LEADER_ELECTION": "true",
        "VESTIGE_LEASE_NAMESPACE": "vestige-system",
        "POD_NAME": "test-install",
    }
    op = operator_factory(*scope, env=env)
    try:
        kubectl("apply", "-n", namespace, "-f", str(ROOT / "manifests/examples/minimal.yaml"))
        kubectl(
            "wait", "--for=condition=Ready", "vmem/my-agent", "-n", namespace, "--timeout=120s", timeout=150
        )
        for kind in (
            "secret/my-agent-auth",
            "pvc/my-agent-data",
            "deployment/my-agent",
            "service/my-agent",
            "networkpolicy/my-agent",
        ):
            kubectl("get", kind, "-n", namespace)
        denied = [
            line for line in op.log_path.read_text().splitlines() if "Forbidden" in line or " 403 " in line
        ]
        assert not denied, "\n".join(denied)
        assert any(line.get("message") == "took the lead (test-install)" for line in op.log_lines())
    finally:
        kubectl("delete", "vmem", "my-agent", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
        assert op.stop() == 0


@pytest.mark.usefixtures("crd_installed", "cleanup")
def test_operator_works_with_exactly_its_rbac(
    kubectl: Kubectl, kubeconfig: str, operator_factory: OperatorFactory, namespace: str, tmp_path: Path
) -> None:
    """The operator, authenticated as its ServiceAccount, brings an agent to Ready: the RBAC is enough."""
    kubectl("apply", "-k", str(ROOT / "manifests"))
    sa_kc = _sa_kubeconfig(kubectl, kubeconfig, tmp_path / "sa.kubeconfig")
    _run_operator_as_sa(operator_factory, kubectl, sa_kc, namespace)  # cluster-wide (--all-namespaces)

    # Namespaced: a RoleBinding in the watched namespace and the read-only discovery binding only.
    kubectl("delete", "clusterrolebinding", "vestige-operator")
    kubectl("create", "namespace", WATCHED, check=False)
    kubectl("apply", "-k", str(ROOT / "manifests/overlays/namespaced"))
    _run_operator_as_sa(operator_factory, kubectl, sa_kc, WATCHED, WATCHED)
    kubectl("delete", "rolebinding", "vestige-operator", "-n", WATCHED)
