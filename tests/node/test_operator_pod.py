"""The operator really running in a pod on the real node, installed with the Helm chart.

``helm install`` into a namespace of its own (PSA ``restricted``) with the image built here
(``IfNotPresent``), the real node's nodeSelector/toleration, a watch scope of one agent namespace
of its own (so it never competes with the operators other tests run) and metrics on. Then: the pod
becomes Ready (the kubelet probes kopf's liveness endpoint), it reaches the API server through the
``kubernetes`` Service (10.96.0.1 -> kube-proxy -> the node's API forwarder) with its projected
ServiceAccount token and CA, reconciles an agent whose pod runs on the node too, ``/metrics`` read
through ``kubectl port-forward`` of the metrics Service counts that, ``helm upgrade`` with a changed
value takes effect in the running pod, and ``helm uninstall`` leaves the CRD and the agent's PVC.
The CRDs are shared with the other tests on this cluster: the release does not install them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import images as image_builds
from tests.cluster import node
from tests.integration.helpers import wait_until
from tests.node.helpers import READY_TIMEOUT, RealNode
from tests.node.release import CHART, CRD, Release


@pytest.fixture
def release(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    crd_installed: None,
) -> Iterator[Release]:
    with Release.opened(real_node, built_images) as made:
        yield made


def _restarts(pod: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: int(s.get("restartCount", 0)) for s in pod["status"].get("containerStatuses", [])}


def test_helm_installed_operator_pod_on_the_real_node(release: Release) -> None:
    rn = release.rn
    release.helm("install", release.name, str(CHART), *release.values(), "--wait", "--timeout=5m")

    # Ready: the kubelet's probe of kopf's liveness endpoint passes, on the real node.
    pod = release.wait_ready("the operator pod Ready")
    assert pod["spec"]["nodeName"] == node.NODE_NAME
    assert pod["spec"]["containers"][0]["image"] == release.refs.operator
    assert pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] == "health"
    assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == "health"
    # In the pod the client is the in-cluster one: the kubelet's KUBERNETES_SERVICE_HOST (the
    # `kubernetes` Service's ClusterIP) and the projected ServiceAccount token and CA.
    seen = rn.kubectl(
        "-n", release.namespace, "exec", pod["metadata"]["name"], "--", "python", "-c",
        "import os; print(os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'],"
        " os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'))",
    )  # fmt: skip
    assert seen.stdout.split() == ["10.96.0.1", "443", "True"], seen.stdout

    # It reaches the API server through the `kubernetes` Service: it reconciles an agent in the
    # namespace it watches, whose pod runs on the node too.
    agent = release.agent("helm-agent")
    try:
        ready = agent.wait_ready()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{release.diagnose()}") from None
    assert ready["status"]["phase"] == "Ready"
    assert agent.pod()["spec"]["nodeName"] == node.NODE_NAME
    with agent.client() as http:
        assert http.get("/health").status_code == 200

    # /metrics through `kubectl port-forward` of the metrics Service counts what it did.
    def counted() -> str | None:
        text = release.metrics()
        ok = 'vestige_operator_resources{phase="Ready"} 1.0' in text and (
            'vestige_operator_reconciles_total{result="success"}' in text
        )
        return text if ok else None

    text = wait_until(counted, timeout=90, what="the reconcile counted on /metrics", interval=3)
    successes = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('vestige_operator_reconciles_total{result="success"}')
    ]
    assert successes and successes[0] >= 1, text
    assert 'vestige_operator_api_requests_total{kind="Secret",verb="create"} 1.0' in text, text
    assert "vestige_operator_api_errors_total{" not in text or "Forbidden" not in text
    assert "Forbidden" not in release.logs()
    first = release.pod()
    assert set(_restarts(first).values()) == {0}, _restarts(first)

    # helm upgrade with a changed value: a new pod with it, which still reconciles.
    release.helm(
        "upgrade", release.name, str(CHART), *release.values(), "--wait", "--timeout=5m",
        "--set", "operator.resyncSeconds=30",
        "--set", "podAnnotations.example\\.org/upgraded=yes",
    )  # fmt: skip
    upgraded = wait_until(
        lambda: (p := release.ready_pod()) and p["metadata"]["uid"] != first["metadata"]["uid"] and p,
        timeout=READY_TIMEOUT,
        what="the upgraded operator pod Ready",
        interval=1.0,
    )
    assert upgraded["metadata"]["annotations"]["example.org/upgraded"] == "yes"
    env = {e["name"]: e.get("value") for e in upgraded["spec"]["containers"][0]["env"]}
    assert env["VESTIGE_RESYNC_SECONDS"] == "30"
    # The running process has it (its environment, read inside the container).
    live_env = rn.kubectl(
        "-n", release.namespace, "exec", upgraded["metadata"]["name"], "--", "python", "-c",
        "import os; print(os.environ['VESTIGE_RESYNC_SECONDS'])",
    )  # fmt: skip
    assert live_env.stdout.strip() == "30"
    # The new pod reconciles the existing agent on its start (kopf lists, then watches).
    wait_until(
        lambda: 'vestige_operator_reconciles_total{result="success"}' in release.metrics() or None,
        timeout=120,
        what="the upgraded operator's first reconcile on /metrics",
        interval=3,
    )
    assert set(_restarts(release.pod()).values()) == {0}
    assert set(agent.restart_counts().values()) == {0}, agent.restart_counts()

    # helm uninstall: the operator goes; the CRD, the agent and its PVC stay.
    pvc_uid = rn.get(release.agents, "pvc", f"{agent.name}-data")["metadata"]["uid"]  # type: ignore[index]
    release.helm("uninstall", release.name, "--wait", "--timeout=3m")
    assert rn.get(release.namespace, "deployment", release.name) is None
    assert rn.get("", "clusterrole", release.name) is None
    crd = rn.get("", "crd", CRD)
    assert crd is not None and "deletionTimestamp" not in crd["metadata"]
    assert rn.get(release.agents, "vestigememory", agent.name) is not None
    pvc = rn.get(release.agents, "pvc", f"{agent.name}-data")
    assert pvc is not None and pvc["metadata"]["uid"] == pvc_uid
