"""`helm install / upgrade / uninstall` of manifests/helm/vestige-operator on the real API server.

What is real on this control plane: every object of the chart, its RBAC (checked with
impersonation and by running the operator process under the chart's ServiceAccount token until it
reconciles an agent and reports it on /metrics), the upgrade's effect on the Deployment and the
RBAC, and what `helm uninstall` leaves (CRDs, agents and their PVCs). The operator *pod* itself
runs on kwok's simulated node (marked Ready, never executed); tests/node/test_operator_pod.py runs
it in a pod on the real node.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tools
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorFactory
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture
from tests.integration.test_install import (
    FORBIDDEN,
    FOREIGN_IMAGE,
    NEEDED,
    POLICY_OBJECTS,
    _sa_kubeconfig,
    can,
    expect_policy,
)

CHART = ROOT / "manifests" / "helm" / "vestige-operator"
RELEASE = "vestige-operator"
SYSTEM = "vestige-system"
WATCHED = "agents"
CRD = "vestigememories.vestige.dev"
CLUSTER_OBJECTS = [
    *POLICY_OBJECTS,  # the binding first: without its params it refuses every VestigeMemory
    ("clusterrolebinding", "vestige-operator"),
    ("clusterrolebinding", "vestige-operator-discovery"),
    ("clusterrole", "vestige-operator"),
    ("clusterrole", "vestige-operator-discovery"),
]


@pytest.fixture(scope="module")
def helm(kubeconfig: str) -> Any:
    binary = str(tools.helm_binary())

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def _delete_namespace(kubectl: Kubectl, name: str) -> None:
    kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=180s", timeout=200)


@pytest.fixture
def clean(kubectl: Kubectl, helm: Any, crd_installed: None) -> Iterator[None]:
    def remove() -> None:
        helm("uninstall", RELEASE, "-n", SYSTEM, "--ignore-not-found", "--wait", check=False)
        for kind, name in CLUSTER_OBJECTS:
            kubectl("delete", kind, name, "--ignore-not-found", check=False)
        for ns in (SYSTEM, WATCHED):
            _delete_namespace(kubectl, ns)

    remove()  # leftovers of an interrupted run or of the kustomize install tests
    yield
    remove()
    # The session's CRD goes back to the test fixture's manager (helm's ownership marks removed).
    crd_file = ROOT / "crds" / "vestige.dev_vestigememories.yaml"
    kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=vestige-tests", "-f", str(crd_file)
    )


def _deployment(kubectl: Kubectl) -> dict[str, Any]:
    return must_get(kubectl, SYSTEM, "deployment", RELEASE)


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def _rolled_out(kubectl: Kubectl) -> dict[str, Any] | None:
    dep = _deployment(kubectl)
    status = dep.get("status") or {}
    done = (
        status.get("observedGeneration") == dep["metadata"]["generation"]
        and status.get("updatedReplicas") == dep["spec"]["replicas"] == 2  # one leads, one stands by
        and status.get("availableReplicas") == 2
        and status.get("replicas") == 2
    )
    return dep if done else None


@pytest.mark.usefixtures("clean")
def test_helm_install_upgrade_uninstall(
    kubectl: Kubectl,
    helm: Any,
    kubeconfig: str,
    operator_factory: OperatorFactory,
    namespace: str,
    tmp_path: Path,
) -> None:
    # The release namespace exists first (Helm stores the release there), restricted like the base.
    kubectl("create", "namespace", SYSTEM)
    kubectl("label", "namespace", SYSTEM, "pod-security.kubernetes.io/enforce=restricted")
    # The CRD is already there (the session applied it, as a kustomize install would have):
    # the release takes it over; --force-conflicts lets Helm's server-side apply own the fields
    # the earlier field manager set. helm v4 --wait uses kstatus: every object must be Current.
    helm(
        "install", RELEASE, str(CHART), "-n", SYSTEM, "--take-ownership", "--force-conflicts",
        "--wait", "--timeout=5m",
    )  # fmt: skip

    dep = wait_until(lambda: _rolled_out(kubectl), 120, "the operator Deployment to roll out")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["--all-namespaces"]
    assert _env(dep)["VESTIGE_METRICS_PORT"] == "8080"
    crd = must_get(kubectl, "default", "crd", CRD)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    svc = must_get(kubectl, SYSTEM, "service", f"{RELEASE}-metrics")
    assert svc["spec"]["ports"][0]["port"] == 8080
    # The metrics Service selects the operator pod (the EndpointSlice controller found it).
    wait_until(
        lambda: any(
            ep.get("conditions", {}).get("ready")
            for s in json.loads(
                kubectl(
                    "-n",
                    SYSTEM,
                    "get",
                    "endpointslices",
                    "-l",
                    f"kubernetes.io/service-name={RELEASE}-metrics",
                    "-o",
                    "json",
                ).stdout
            )["items"]
            for ep in s.get("endpoints") or []
        ),
        60,
        "a ready endpoint behind the metrics Service",
    )
    for verb, resource in NEEDED:
        assert can(kubectl, verb, resource, namespace), f"cannot {verb} {resource}"
    for verb, resource in FORBIDDEN:
        assert not can(kubectl, verb, resource, None), f"may {verb} {resource} cluster-wide"
    # The admission policy is on by default, in every namespace (docs/admission.md).
    assert must_get(kubectl, SYSTEM, "configmap", f"{RELEASE}-policy")["data"]["images"] == (
        "ghcr.io/vestige-operator/*"
    )
    expect_policy(kubectl, namespace, FOREIGN_IMAGE, refused=True)

    # The operator, authenticated as the chart's ServiceAccount, reconciles an agent to Ready and
    # reports it on /metrics (the process runs here, with exactly the chart's RBAC).
    sa_kc = _sa_kubeconfig(kubectl, kubeconfig, tmp_path / "sa.kubeconfig")
    op = operator_factory(env={"KUBECONFIG": sa_kc})
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "manifests/examples/minimal.yaml"))
    kubectl("wait", "--for=condition=Ready", "vmem/my-agent", "-n", namespace, "--timeout=120s", timeout=150)
    metrics = op.metrics()
    assert 'vestige_operator_resources{phase="Ready"} 1.0' in metrics
    # The counter has no namespace label: the all-namespaces operator also counts its work on
    # other tests' agents whose namespaces are still being deleted, so at least our one create.
    secret_creates = r'^vestige_operator_api_requests_total\{kind="Secret",verb="create"\} (\S+)$'
    creates = re.search(secret_creates, metrics, re.M)
    assert creates is not None and float(creates.group(1)) >= 1, metrics
    log = op.log_path.read_text()
    assert f"created Secret {namespace}/my-agent-auth" in log
    # Nothing denied by RBAC (a namespace being terminated refuses new objects with a 403 too).
    denied = [
        line
        for line in log.splitlines()
        if ("Forbidden" in line or " 403 " in line) and "because it is being terminated" not in line
    ]
    assert not denied, "\n".join(denied)
    assert op.stop() == 0

    # Upgrade: watch only `agents`, another resync interval and a pod annotation. It takes effect:
    # a new pod template rolls out, the cluster-wide binding goes, a RoleBinding appears.
    kubectl("create", "namespace", WATCHED)
    before = _deployment(kubectl)
    helm(
        "upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--wait", "--timeout=5m",
        "--set", f"watch.namespaces={{{WATCHED}}}",
        "--set", "operator.resyncSeconds=30",
        "--set", "podAnnotations.example\\.org/upgraded=yes",
        "--set", "admissionPolicy.params.images={ghcr.io/vestige-operator/*,docker.io/evil/*}",
    )  # fmt: skip
    dep = wait_until(lambda: _rolled_out(kubectl), 120, "the upgraded Deployment to roll out")
    assert dep["metadata"]["generation"] > before["metadata"]["generation"]
    env = _env(dep)
    assert env["VESTIGE_NAMESPACES"] == WATCHED and env["VESTIGE_RESYNC_SECONDS"] == "30"
    assert dep["spec"]["template"]["spec"]["containers"][0].get("args", []) == []  # no --all-namespaces
    assert dep["spec"]["template"]["metadata"]["annotations"]["example.org/upgraded"] == "yes"
    pods = json.loads(
        kubectl(
            "-n", SYSTEM, "get", "pods", "-l", "app.kubernetes.io/name=vestige-operator", "-o", "json"
        ).stdout
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["metadata"]["annotations"].get("example.org/upgraded") for p in live] == ["yes", "yes"]
    assert get(kubectl, "default", "clusterrolebinding", RELEASE) is None
    assert must_get(kubectl, WATCHED, "rolebinding", RELEASE)["roleRef"]["name"] == RELEASE
    assert can(kubectl, "create", "deployments.apps", WATCHED)
    assert not can(kubectl, "create", "deployments.apps", namespace)
    # The policy follows the scope (only the watched namespace) and the loosened param.
    twin = {"vestige": {"image": "docker.io/evil-twin/vestige:3"}}
    expect_policy(kubectl, WATCHED, FOREIGN_IMAGE, refused=False)
    expect_policy(kubectl, WATCHED, twin, refused=True)
    expect_policy(kubectl, namespace, twin, refused=False)
    history = json.loads(helm("history", RELEASE, "-n", SYSTEM, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

    # Uninstall: the operator's objects go; the CRD, the agent and its data volume stay.
    pvc_uid = must_get(kubectl, namespace, "pvc", "my-agent-data")["metadata"]["uid"]
    helm("uninstall", RELEASE, "-n", SYSTEM, "--wait")
    assert get(kubectl, SYSTEM, "deployment", RELEASE) is None
    assert get(kubectl, SYSTEM, "serviceaccount", RELEASE) is None
    assert get(kubectl, "default", "clusterrole", RELEASE) is None
    assert get(kubectl, WATCHED, "rolebinding", RELEASE) is None
    for kind, name in POLICY_OBJECTS:
        assert get(kubectl, "default", kind, name) is None
    crd = must_get(kubectl, "default", "crd", CRD)
    assert "deletionTimestamp" not in crd["metadata"]
    assert must_get(kubectl, namespace, "vmem", "my-agent")
    assert must_get(kubectl, namespace, "pvc", "my-agent-data")["metadata"]["uid"] == pvc_uid
    kubectl("delete", "vmem", "my-agent", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
