"""The local control plane behaves like a real cluster (issue: test environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests import cluster
from tests.integration.conftest import ROOT, Kubectl

RESTRICTED_POD = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "automountServiceAccountToken": False,
    "containers": [
        {
            "name": "app",
            "image": "registry.example/app:1",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
}


def _wait_for(check, timeout: float = 90, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def test_version_and_node_ready(api_client: client.ApiClient) -> None:
    info = client.VersionApi(api_client).get_code()
    assert info.git_version == cluster.K8S_VERSION
    node = client.CoreV1Api(api_client).read_node("kwok-node-0")
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"


def test_restricted_deployment_available_and_garbage_collected(
    api_client: client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    labels = {"app": "probe"}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": RESTRICTED_POD},
        },
    }
    apps.create_namespaced_deployment(namespace, dep)

    def available() -> bool:
        d = apps.read_namespaced_deployment_status("probe", namespace)
        conds = {c.type: c.status for c in (d.status.conditions or [])}
        return conds.get("Available") == "True" and d.status.ready_replicas == 2

    _wait_for(available, what="Deployment Available")
    assert len(apps.list_namespaced_replica_set(namespace).items) == 1
    pods = core.list_namespaced_pod(namespace).items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    assert all(p.spec.node_name == "kwok-node-0" for p in pods)

    apps.delete_namespaced_deployment("probe", namespace, propagation_policy="Background")
    _wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        what="ReplicaSet and Pods garbage-collected",
    )


def test_privileged_pod_rejected_under_restricted(kubectl: Kubectl, namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "evil"},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
    }
    res = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False)
    assert res.returncode != 0
    assert "violates PodSecurity" in res.stderr and "restricted" in res.stderr
    assert "privileged" in res.stderr

    ok = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine"}, "spec": RESTRICTED_POD}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ok))


def test_pvc_binds_and_resize_is_accepted(api_client: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    core.create_namespaced_persistent_volume_claim(namespace, pvc)
    bound = _wait_for(
        lambda: (
            (c := core.read_namespaced_persistent_volume_claim(namespace=namespace, name="data"))
            and c.status.phase == "Bound"
            and c
        ),
        what="PVC Bound",
    )
    assert bound.spec.storage_class_name == "standard"
    assert bound.status.capacity["storage"] == "1Gi"
    # Growth is accepted by the API server (allowVolumeExpansion) and recorded in the claim's spec;
    # the host-path plugin cannot expand volumes, so the capacity stays (documented in the README).
    core.patch_namespaced_persistent_volume_claim(
        "data", namespace, {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    )
    after = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert after.spec.resources.requests["storage"] == "2Gi"
    assert after.status.capacity["storage"] == "1Gi"


def test_rbac_is_enforced(api_client: client.ApiClient, kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    sa = f"system:serviceaccount:{namespace}:nobody"
    res = kubectl("auth", "can-i", "list", "secrets", "-n", namespace, f"--as={sa}", check=False)
    assert res.stdout.strip() == "no" and res.returncode != 0
    review = client.AuthorizationV1Api(api_client).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": sa,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                "resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "pods"},
            },
        }
    )
    assert review.status.allowed is False
    res = kubectl("get", "pods", "-n", namespace, as_user=sa, check=False)
    assert res.returncode != 0 and "Forbidden" in res.stderr
    # ... and a role grants exactly what it says.
    kubectl("create", "role", "reader", "--verb=list", "--resource=pods", "-n", namespace)
    kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=reader",
        f"--serviceaccount={namespace}:nobody",
        "-n",
        namespace,
    )
    assert kubectl("auth", "can-i", "list", "pods", "-n", namespace, f"--as={sa}").stdout.strip() == "yes"
    assert (
        kubectl("auth", "can-i", "delete", "pods", "-n", namespace, f"--as={sa}", check=False).stdout.strip()
        == "no"
    )


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # kwok only: the real node is one per machine, and the session cluster already runs it.
    env = {**os.environ, "VESTIGE_CLUSTER_STATE": str(state), "VESTIGE_CLUSTER_NODE": "kwok"}
    return subprocess.run(
        [sys.executable, "-m", "tests.cluster", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.usefixtures("cluster_state")
def test_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    """A second, independent cluster: up, up again (fast, same line), down, up after down, down."""
    state = tmp_path / "second"
    first = _cli(state, "up")
    assert first.returncode == 0, first.stderr
    line = first.stdout.strip().splitlines()[-1]
    assert line == f"export KUBECONFIG={state / 'admin.kubeconfig'}"

    pids = [c["pid"] for c in json.loads((state / "cluster.json").read_text())["components"].values()]
    again = _cli(state, "up")
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == line
    # reused, not restarted: the very same processes
    assert [c["pid"] for c in json.loads((state / "cluster.json").read_text())["components"].values()] == pids

    assert _cli(state, "down").returncode == 0
    assert not state.exists()
    assert all(
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        for pid in pids
    )

    assert _cli(state, "up").returncode == 0
    status = json.loads(_cli(state, "status").stdout)
    assert status["up"] is True
    assert _cli(state, "down").returncode == 0
    assert _cli(state, "status").returncode == 1
