"""The operator (a real subprocess) against the real local control plane.

Pods never run here: kwok marks them Ready, so Deployments become Available; PVCs bind through
the controller manager's host-path provisioner (StorageClass ``standard``). Nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.integration import operator_fixtures
from tests.integration.conftest import Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess

# The operator fixtures, made visible to pytest in this module.
operator_factory = operator_fixtures.operator_factory
operator_process = operator_fixtures.operator_process

pytestmark = pytest.mark.timeout(300)

CHILD_KINDS = ("secret", "pvc", "deployment", "service", "networkpolicy")


# -- helpers ------------------------------------------------------------------------------------


def apply_memory(kubectl: Kubectl, ns: str, name: str, spec: dict[str, Any] | None = None) -> None:
    doc = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeMemory", "metadata": {"name": name}}
    if spec is not None:
        doc["spec"] = spec
    kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(doc))


def patch_memory(kubectl: Kubectl, ns: str, name: str, patch: dict[str, Any]) -> None:
    kubectl("-n", ns, "patch", "vmem", name, "--type=merge", "-p", json.dumps({"spec": patch}))


def wait_ready(kubectl: Kubectl, ns: str, name: str, timeout: int = 60) -> dict[str, Any]:
    kubectl("-n", ns, "wait", "--for=condition=Ready", f"vmem/{name}", f"--timeout={timeout}s")
    return wait_settled(kubectl, ns, name, timeout=timeout)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_)


def wait_settled(
    kubectl: Kubectl, ns: str, name: str, phase: str = "Ready", timeout: float = 60
) -> dict[str, Any]:
    """The VestigeMemory once its status reports the current generation in ``phase``, settled."""

    def settled() -> dict[str, Any] | None:
        obj = must_get(kubectl, ns, "vmem", name)
        status = obj.get("status", {})
        if (
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("phase") == phase
            and condition(obj, "Reconciling")["status"] == "False"
        ):
            return obj
        return None

    return wait_until(settled, timeout, f"vmem {ns}/{name} settled in phase {phase}")


def token_of(kubectl: Kubectl, ns: str, secret: str, key: str = "token") -> str:
    return base64.b64decode(must_get(kubectl, ns, "secret", secret)["data"][key]).decode()


def pod_template(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return must_get(kubectl, ns, "deployment", name)["spec"]["template"]


def uid(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"]["uid"]


# -- 1. the minimal example becomes Ready with all its children ---------------------------------


def test_minimal_example_reaches_ready(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    kubectl("-n", namespace, "apply", "-f", "manifests/examples/minimal.yaml")
    memory = wait_ready(kubectl, namespace, "my-agent")
    status = memory["status"]
    assert status["endpoint"] == f"http://my-agent.{namespace}.svc:8000"
    assert status["authSecretRef"] == {"name": "my-agent-auth", "key": "token"}
    assert status["pvcName"] == "my-agent-data"
    assert condition(memory, "StorageReady")["status"] == "True"
    assert condition(memory, "Stalled")["status"] == "False"
    assert {c["observedGeneration"] for c in status["conditions"]} == {memory["metadata"]["generation"]}

    for kind, name in [
        ("secret", "my-agent-auth"),
        ("pvc", "my-agent-data"),
        ("deployment", "my-agent"),
        ("service", "my-agent"),
        ("networkpolicy", "my-agent"),
    ]:
        obj = must_get(kubectl, namespace, kind, name)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "vestige-operator"
    assert len(token_of(kubectl, namespace, "my-agent-auth")) >= 40
    assert must_get(kubectl, namespace, "pvc", "my-agent-data")["status"]["phase"] == "Bound"
    assert get(kubectl, namespace, "ingress", "my-agent") is None
    # kopf leaves no trace on the resource: no finalizer, no kopf annotations, no status.kopf
    assert not memory["metadata"].get("finalizers")
    assert not [a for a in memory["metadata"].get("annotations", {}) if "kopf" in a]
    assert "kopf" not in status

    # The Ingress follows ingress.enabled; switching it off deletes only the operator's own.
    patch_memory(kubectl, namespace, "my-agent", {"ingress": {"enabled": True, "host": "m.example.com"}})
    ingress = wait_until(lambda: get(kubectl, namespace, "ingress", "my-agent"), what="the Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "m.example.com"
    memory = wait_settled(kubectl, namespace, "my-agent")
    assert memory["status"]["url"] == "http://m.example.com/"
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "lookalike",
            "labels": {
                "app.kubernetes.io/managed-by": "vestige-operator",
                "app.kubernetes.io/instance": "my-agent",
            },
        },
        "spec": {"defaultBackend": {"service": {"name": "other", "port": {"number": 80}}}},
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(foreign))
    patch_memory(kubectl, namespace, "my-agent", {"ingress": {"enabled": False}})
    wait_until(lambda: get(kubectl, namespace, "ingress", "my-agent") is None, what="Ingress deletion")
    memory = wait_settled(kubectl, namespace, "my-agent")
    assert "url" not in memory["status"]
    time.sleep(operator_process.resync_seconds + 1)
    assert get(kubectl, namespace, "ingress", "lookalike") is not None, "deleted an Ingress it does not own"


# -- 2. two resources share nothing -----------------------------------------------------------


def test_two_memories_share_nothing(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "alpha")
    apply_memory(kubectl, namespace, "beta")
    wait_ready(kubectl, namespace, "alpha")
    wait_ready(kubectl, namespace, "beta")

    assert token_of(kubectl, namespace, "alpha-auth") != token_of(kubectl, namespace, "beta-auth")
    pvcs = [must_get(kubectl, namespace, "pvc", f"{n}-data") for n in ("alpha", "beta")]
    assert pvcs[0]["spec"]["volumeName"] != pvcs[1]["spec"]["volumeName"]
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_instance.setdefault(pod["metadata"]["labels"]["app.kubernetes.io/instance"], []).append(pod)
    assert {k: len(v) for k, v in by_instance.items()} == {"alpha": 1, "beta": 1}
    for name in ("alpha", "beta"):
        [pod] = by_instance[name]
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [f"{name}-data"]
        secrets = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in pod["spec"]["containers"]
            for e in c.get("env", [])
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
        }
        assert secrets == {f"{name}-auth"}

        service = must_get(kubectl, namespace, "service", name)
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8000, "http")]
        assert service["spec"]["selector"]["app.kubernetes.io/instance"] == name
        policy = must_get(kubectl, namespace, "networkpolicy", name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert [r["ports"] for r in policy["spec"]["ingress"]] == [[{"protocol": "TCP", "port": 8000}]]
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == name


# -- 3. PodSecurity restricted -------------------------------------------------------------------


def test_pods_are_admitted_under_restricted(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    # The namespace really enforces: a pod that breaks the profile is refused.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad"},
        "spec": {
            "containers": [{"name": "c", "image": "example.org/x", "securityContext": {"privileged": True}}]
        },
    }
    refused = kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr

    apply_memory(kubectl, namespace, "strict", {"vestige": {"generation": "v1"}})
    apply_memory(kubectl, namespace, "strict3")
    for name in ("strict", "strict3"):
        wait_ready(kubectl, namespace, name)
        pods = json.loads(
            kubectl(
                "-n", namespace, "get", "pods", "-l", f"app.kubernetes.io/instance={name}", "-o", "json"
            ).stdout
        )["items"]
        assert len(pods) == 1
    events = kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "violates PodSecurity" not in events


# -- 4. drift is repaired -----------------------------------------------------------------------


def test_drift_is_repaired(kubectl: Kubectl, namespace: str, operator_process: OperatorProcess) -> None:
    apply_memory(kubectl, namespace, "drift")
    wait_ready(kubectl, namespace, "drift")
    limit = operator_process.resync_seconds + 10

    old_service = uid(must_get(kubectl, namespace, "service", "drift"))
    kubectl("-n", namespace, "delete", "service", "drift")
    service = wait_until(
        lambda: (s := get(kubectl, namespace, "service", "drift")) and uid(s) != old_service and s,
        limit,
        "the Service to come back",
    )
    assert [p["port"] for p in service["spec"]["ports"]] == [8000]

    kubectl("-n", namespace, "set", "image", "deployment/drift", "vestige=evil.example/vestige:latest")
    wait_until(
        lambda: (
            pod_template(kubectl, namespace, "drift")["spec"]["containers"][0]["image"]
            == "example.org/vestige:3.0.0"
        ),
        limit,
        "the Deployment image to be restored",
    )
    kubectl("-n", namespace, "scale", "deployment/drift", "--replicas=3")
    wait_until(
        lambda: must_get(kubectl, namespace, "deployment", "drift")["spec"]["replicas"] == 1,
        limit,
        "replicas to be restored",
    )

    kubectl("-n", namespace, "delete", "networkpolicy", "drift")
    wait_until(
        lambda: get(kubectl, namespace, "networkpolicy", "drift"), limit, "the NetworkPolicy to come back"
    )
    opened = {"spec": {"ingress": [{"ports": [{"protocol": "TCP", "port": 3100}]}]}}
    kubectl("-n", namespace, "patch", "networkpolicy", "drift", "--type=merge", "-p", json.dumps(opened))
    wait_until(
        lambda: (
            must_get(kubectl, namespace, "networkpolicy", "drift")["spec"]["ingress"][0]["ports"]
            == [{"protocol": "TCP", "port": 8000}]
        ),
        limit,
        "the NetworkPolicy port to be restored",
    )
    wait_settled(kubectl, namespace, "drift")


def test_drift_is_repaired_by_the_resync_alone(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    """Even without the child's watch event (operator restarted after the edit), the next pass repairs."""
    apply_memory(kubectl, namespace, "offline")
    wait_ready(kubectl, namespace, "offline")
    assert operator_process.stop() == 0
    kubectl("-n", namespace, "delete", "service", "offline")
    kubectl("-n", namespace, "set", "image", "deployment/offline", "bridge=evil.example/bridge:1")
    operator_process.restart()
    limit = operator_process.resync_seconds + 15
    wait_until(lambda: get(kubectl, namespace, "service", "offline"), limit, "the Service")
    wait_until(
        lambda: (
            pod_template(kubectl, namespace, "offline")["spec"]["containers"][1]["image"]
            == "example.org/vestige-bridge:0.1.0"
        ),
        limit,
        "the bridge image",
    )
    wait_settled(kubectl, namespace, "offline")


# -- 5. spec changes roll out and show in status ---------------------------------------------------


def test_spec_changes_roll_out(kubectl: Kubectl, namespace: str, operator_process: OperatorProcess) -> None:
    apply_memory(kubectl, namespace, "knobs")
    first = wait_ready(kubectl, namespace, "knobs")
    generation = first["metadata"]["generation"]

    patch_memory(
        kubectl,
        namespace,
        "knobs",
        {
            "vestige": {
                "image": "example.org/vestige:3.1.0",
                "resources": {"requests": {"cpu": "200m", "memory": "600Mi"}, "limits": {"memory": "1Gi"}},
                "env": [{"name": "RUST_LOG", "value": "debug"}],
            },
            "bridge": {"env": [{"name": "LOG_LEVEL", "value": "DEBUG"}]},
        },
    )
    memory = wait_settled(kubectl, namespace, "knobs")
    assert memory["status"]["observedGeneration"] == generation + 1
    assert condition(memory, "Ready")["observedGeneration"] == generation + 1
    vestige, bridge = pod_template(kubectl, namespace, "knobs")["spec"]["containers"]
    assert vestige["image"] == "example.org/vestige:3.1.0"
    assert vestige["resources"] == {
        "requests": {"cpu": "200m", "memory": "600Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert {"name": "RUST_LOG", "value": "debug"} in vestige["env"]
    assert {"name": "LOG_LEVEL", "value": "DEBUG"} in bridge["env"]

    # Removing an env entry removes it from the pod (server-side apply drops fields it owned).
    kubectl(
        "-n", namespace, "patch", "vmem", "knobs", "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/vestige/env"}]),
    )  # fmt: skip
    wait_settled(kubectl, namespace, "knobs")
    vestige = pod_template(kubectl, namespace, "knobs")["spec"]["containers"][0]
    assert "RUST_LOG" not in {e["name"] for e in vestige["env"]}

    # storage.size growth patches the PVC.
    patch_memory(kubectl, namespace, "knobs", {"storage": {"size": "8Gi"}})
    wait_until(
        lambda: (
            must_get(kubectl, namespace, "pvc", "knobs-data")["spec"]["resources"]["requests"]["storage"]
            == "8Gi"
        ),
        30,
        "the PVC request to grow",
    )
    memory = wait_settled(kubectl, namespace, "knobs")
    assert condition(memory, "StorageReady")["status"] == "True"

    # suspend scales to zero and back.
    patch_memory(kubectl, namespace, "knobs", {"suspend": True})
    memory = wait_settled(kubectl, namespace, "knobs", phase="Suspended")
    assert condition(memory, "Ready")["status"] == "False"
    assert condition(memory, "Ready")["reason"] == "Suspended"
    assert must_get(kubectl, namespace, "deployment", "knobs")["spec"]["replicas"] == 0
    wait_until(
        lambda: (
            not json.loads(
                kubectl(
                    "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=knobs", "-o", "json"
                ).stdout
            )["items"]
        ),
        60,
        "the pod to go",
    )
    assert must_get(kubectl, namespace, "pvc", "knobs-data")["status"]["phase"] == "Bound"
    patch_memory(kubectl, namespace, "knobs", {"suspend": False})
    wait_ready(kubectl, namespace, "knobs")
    assert must_get(kubectl, namespace, "deployment", "knobs")["spec"]["replicas"] == 1

    # The NetworkPolicy can be switched off (deleted) and on again.
    patch_memory(kubectl, namespace, "knobs", {"networkPolicy": {"enabled": False}})
    wait_until(
        lambda: get(kubectl, namespace, "networkpolicy", "knobs") is None, 30, "NetworkPolicy deletion"
    )
    patch_memory(kubectl, namespace, "knobs", {"networkPolicy": {"enabled": True}})
    wait_until(lambda: get(kubectl, namespace, "networkpolicy", "knobs"), 30, "the NetworkPolicy")
    memory = wait_settled(kubectl, namespace, "knobs")
    assert memory["status"]["observedGeneration"] == memory["metadata"]["generation"]


# -- 6. deletion, reclaim policy and the token Secret -----------------------------------------------


def test_retain_keeps_and_readopts_the_pvc_delete_removes_it(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "kept")
    apply_memory(kubectl, namespace, "gone", {"storage": {"reclaimPolicy": "Delete"}})
    wait_ready(kubectl, namespace, "kept")
    wait_ready(kubectl, namespace, "gone")
    kept_pvc = must_get(kubectl, namespace, "pvc", "kept-data")
    assert not kept_pvc["metadata"].get("ownerReferences")
    assert (
        must_get(kubectl, namespace, "pvc", "gone-data")["metadata"]["ownerReferences"][0]["kind"]
        == "VestigeMemory"
    )

    kubectl("-n", namespace, "delete", "vmem", "kept", "gone", "--wait=true", "--timeout=60s")
    wait_until(lambda: get(kubectl, namespace, "deployment", "kept") is None, 60, "GC of the Deployment")
    wait_until(lambda: get(kubectl, namespace, "pvc", "gone-data") is None, 90, "GC of the Delete PVC")
    assert uid(get(kubectl, namespace, "pvc", "kept-data")) == uid(kept_pvc)

    apply_memory(kubectl, namespace, "kept")
    wait_ready(kubectl, namespace, "kept")
    readopted = must_get(kubectl, namespace, "pvc", "kept-data")
    assert uid(readopted) == uid(kept_pvc)
    claim = pod_template(kubectl, namespace, "kept")["spec"]["volumes"][0]["persistentVolumeClaim"][
        "claimName"
    ]
    assert claim == "kept-data"


def test_token_secret_is_never_overwritten(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "tok")
    wait_ready(kubectl, namespace, "tok")
    original = token_of(kubectl, namespace, "tok-auth")
    internal = token_of(kubectl, namespace, "tok-auth", "vestige-token")
    assert internal != original  # Vestige's own token is not the agents' (issue 13, item 3)
    template_before = pod_template(kubectl, namespace, "tok")
    generation_before = must_get(kubectl, namespace, "deployment", "tok")["metadata"]["generation"]

    # A user changes the token by hand: the operator keeps the new value, and the pod is NOT
    # restarted for it (the bridge follows its mounted token files; issue 16).
    rotated = base64.b64encode(b"rotated-by-a-human-0123456789").decode()
    kubectl(
        "-n",
        namespace,
        "patch",
        "secret",
        "tok-auth",
        "--type=merge",
        "-p",
        json.dumps({"data": {"token": rotated}}),
    )
    time.sleep(operator_process.resync_seconds * 2 + 1)
    assert token_of(kubectl, namespace, "tok-auth") == "rotated-by-a-human-0123456789"
    assert token_of(kubectl, namespace, "tok-auth", "vestige-token") == internal
    assert original != "rotated-by-a-human-0123456789"
    assert pod_template(kubectl, namespace, "tok") == template_before
    assert must_get(kubectl, namespace, "deployment", "tok")["metadata"]["generation"] == generation_before
    wait_settled(kubectl, namespace, "tok")


def test_existing_secret_is_used_and_never_touched(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(
        kubectl, namespace, "byo", {"auth": {"existingSecret": {"name": "byo-token", "key": "bearer"}}}
    )
    memory = wait_settled(kubectl, namespace, "byo", phase="Failed", timeout=30)
    assert condition(memory, "Stalled")["status"] == "True"
    assert condition(memory, "Stalled")["reason"] == "AuthSecretUnavailable"
    assert get(kubectl, namespace, "deployment", "byo") is None

    kubectl(
        "-n", namespace, "create", "secret", "generic", "byo-token", "--from-literal=bearer=mine-1234567890"
    )
    before = must_get(kubectl, namespace, "secret", "byo-token")
    memory = wait_ready(kubectl, namespace, "byo", timeout=30)
    assert memory["status"]["authSecretRef"] == {"name": "byo-token", "key": "bearer"}
    assert get(kubectl, namespace, "secret", "byo-auth") is None
    template = pod_template(kubectl, namespace, "byo")
    vestige, bridge = template["spec"]["containers"]
    # The agents' token reaches the bridge as files from the user's Secret...
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "auth"]
    assert volume["secret"]["secretName"] == "byo-token"
    assert volume["secret"]["items"][0] == {"key": "bearer", "path": "token"}
    assert all(e["name"] != "VESTIGE_AUTH_TOKEN" for e in bridge["env"])
    # ...and Vestige's internal token lives in the operator's own Secret, never in the user's.
    internal = {"secretKeyRef": {"name": "byo-vestige", "key": "vestige-token"}}
    assert next(e for e in vestige["env"] if e["name"] == "VESTIGE_AUTH_TOKEN")["valueFrom"] == internal
    assert next(e for e in bridge["env"] if e["name"] == "VESTIGE_MCP_TOKEN")["valueFrom"] == internal
    own = must_get(kubectl, namespace, "secret", "byo-vestige")
    assert set(own["data"]) == {"vestige-token"}
    assert own["metadata"]["ownerReferences"][0]["uid"] == memory["metadata"]["uid"]
    after = must_get(kubectl, namespace, "secret", "byo-token")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]


# -- 7. a no-op resync writes nothing -------------------------------------------------------------


def test_noop_resync_changes_no_resource_version(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "still", {"ingress": {"enabled": True}})
    wait_ready(kubectl, namespace, "still")
    time.sleep(1)  # let trailing events settle

    def versions() -> dict[str, str]:
        out = {}
        for kind in (*CHILD_KINDS, "ingress", "vmem"):
            items = json.loads(kubectl("-n", namespace, "get", kind, "-o", "json").stdout)["items"]
            for item in items:
                out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return out

    def resyncs() -> list[dict[str, Any]]:
        return [line for line in operator_process.log_lines() if "resync" in line and "api_requests" in line]

    before = versions()
    seen = len(resyncs())
    # Wait for three more resyncs: each runs a full pass over every resource, and each resync log
    # line carries the operator's cumulative pass and API request counters.
    wait_until(lambda: len(resyncs()) >= seen + 3, 4 * operator_process.resync_seconds + 5, "three resyncs")
    after = versions()
    assert after == before
    window = resyncs()[seen:]
    assert window[-1]["passes"] > window[0]["passes"], "the resyncs ran no pass"
    assert window[-1]["api_requests"] == window[0]["api_requests"], "a no-op resync sent API requests"


def test_logs_are_json(operator_process: OperatorProcess, kubectl: Kubectl, namespace: str) -> None:
    apply_memory(kubectl, namespace, "logged")
    wait_ready(kubectl, namespace, "logged")
    lines = operator_process.log_lines()
    assert any("created Deployment" in line.get("message", "") for line in lines)  # never applied blind
    raw = operator_process.log_path.read_text().splitlines()
    assert raw and all(line.startswith("{") for line in raw if line.strip())
