"""Continuous backup against the real API server: the CRD's rules (CEL) at admission, the
operator rendering and applying the Litestream sidecar and the point-in-time restore's init
containers, and a refused point in time stalling the memory.

Pods do not run on the kwok node: the agent pods stay Pending (no node has the selector's
label) and, for the refusal, the test plays the kubelet by writing the restore-check's real
refusal (exit 3 and its JSON result) into the pod's status, as tests/integration/test_backup.py
does for snapshots. The runner and Litestream themselves run as processes in tests/continuous/;
the pods on the real node in tests/node/test_continuous_e2e.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture
from tests.integration.operator_fixtures import operator_process as operator_process  # fixture

UNSCHEDULABLE = {"vestige.dev/test-no-such-node": "true"}
LITESTREAM_IMAGE = "example.org/litestream:0.5.18"
DESTINATION = {
    "s3": {
        "endpoint": "http://s3.storage.svc:7070",
        "bucket": "vestige-backups",
        "prefix": "platform/",
        "credentialsSecret": {"name": "s3-creds"},
        "forcePathStyle": True,
    }
}


def _memory(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeMemory",
            "metadata": {"name": name},
            "spec": {"pod": {"nodeSelector": UNSCHEDULABLE}, **spec},
        }
    )


def _pit(point: str, **extra: Any) -> dict[str, Any]:
    return {
        "restore": {
            "fromBackup": {"destination": DESTINATION, "source": "a/b", "pointInTime": point, **extra}
        }
    }


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<ref>") for e in container.get("env", [])}


def _condition(kubectl: Kubectl, ns: str, name: str, type_: str) -> dict[str, Any] | None:
    conds = (must_get(kubectl, ns, "vestigememory", name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), None)


def _stalled(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    conds = (must_get(kubectl, ns, "vestigememory", name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Stalled" and c["status"] == "True"), None)


@pytest.mark.usefixtures("crd_installed")
@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"backup": {"destination": DESTINATION, "continuous": {"syncInterval": "100ms"}}}, "between 250ms"),
        ({"backup": {"destination": DESTINATION, "continuous": {"syncInterval": "1d"}}}, "syncInterval"),
        ({"backup": {"destination": DESTINATION, "continuous": {"retention": "2161h"}}}, "between 1h"),
        (
            {"backup": {"destination": DESTINATION, "continuous": {"snapshotInterval": "48h"}}},
            "snapshotInterval must not be longer",
        ),
        (
            _pit("2026-13-01T00:00:00Z"),
            "pointInTime must be latest or a valid RFC 3339 time",
        ),
        (
            _pit("latest", latest=True),
            "exactly one",
        ),
        (
            _pit("yesterday"),
            "pointInTime",
        ),
        ({"backup": {"destination": DESTINATION, "continuous": {"enabled": True}}}, None),
        (
            _pit("2026-12-03T17:41:05.5+01:00"),
            None,
        ),
    ],
)  # fmt: skip
def test_admission_applies_the_models_rules(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], error: str | None
) -> None:
    proc = kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", "-", input=_memory("m", spec), check=False
    )
    if error is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and error in proc.stderr, proc.stderr


@pytest.mark.usefixtures("crd_installed")
def test_the_operator_applies_the_sidecar_and_the_restore(
    kubectl: Kubectl, namespace: str, operator_factory: Any
) -> None:
    op: OperatorProcess = operator_factory(namespace, env={"VESTIGE_LITESTREAM_IMAGE": LITESTREAM_IMAGE})
    op.wait_ready()
    spec = {
        "backup": {"destination": DESTINATION, "continuous": {"enabled": True, "syncInterval": "1s"}},
        "restore": {
            "fromBackup": {
                "destination": DESTINATION,
                "source": f"{namespace}/old",
                "pointInTime": "2026-12-03T17:41:05Z",
            }
        },
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("agent", spec))
    dep = wait_until(lambda: get(kubectl, namespace, "deployment", "agent"), what="the Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    check, fill, sidecar = pod_spec["initContainers"]
    assert [check["name"], fill["name"], sidecar["name"]] == ["restore", "restore-replica", "litestream"]
    # the API server kept the native sidecar (restartPolicy Always on an init container)
    assert sidecar["restartPolicy"] == "Always" and "restartPolicy" not in fill
    assert sidecar["image"] == LITESTREAM_IMAGE == fill["image"]
    assert _env(sidecar)["LITESTREAM_PATH"] == f"platform/{namespace}/agent/litestream"
    assert _env(fill)["LITESTREAM_PATH"] == f"platform/{namespace}/old/litestream"
    assert fill["args"][-3:] == ["-timestamp", "2026-12-03T17:41:05Z", "/data/vestige/vestige.db"]
    assert check["args"][check["args"].index("--replica") + 1] == f"platform/{namespace}/old/litestream"
    for container in pod_spec["containers"]:
        assert not any(e["name"].startswith(("AWS_", "LITESTREAM_")) for e in container.get("env", []))
    # the pod is admitted (restricted PSA fields, the sidecar's port and probe) and created
    pod = wait_until(
        lambda: json.loads(
            kubectl(
                "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=agent", "-o", "json"
            ).stdout
        )["items"],
        timeout=60,
        what="the agent pod",
    )[0]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["restore", "restore-replica", "litestream"]
    # an operator outside the cluster asks no pod (a pod IP is not its host's to dial) and says so
    healthy = wait_until(
        lambda: _condition(kubectl, namespace, "agent", "ReplicationHealthy"),
        timeout=60,
        what="ReplicationHealthy",
    )
    assert (healthy["status"], healthy["reason"]) == ("Unknown", "Unreachable"), healthy
    assert "outside the cluster" in healthy["message"], healthy
    # continuous off: the sidecar goes, the restore stays
    patch = {"spec": {"backup": {"continuous": {"enabled": False}}}}
    kubectl("-n", namespace, "patch", "vestigememory", "agent", "--type=merge", "-p", json.dumps(patch))

    def without_sidecar() -> bool:
        dep = get(kubectl, namespace, "deployment", "agent") or {}
        names = [c["name"] for c in dep["spec"]["template"]["spec"].get("initContainers", [])]
        return names == ["restore", "restore-replica"]

    wait_until(without_sidecar, timeout=60, what="the sidecar removed")
    wait_until(
        lambda: _condition(kubectl, namespace, "agent", "ReplicationHealthy") is None,
        timeout=60,
        what="ReplicationHealthy gone with the continuous backup",
    )


@pytest.mark.usefixtures("crd_installed")
def test_a_point_in_time_outside_the_window_stalls_the_memory(
    kubectl: Kubectl, namespace: str, operator_factory: Any
) -> None:
    op: OperatorProcess = operator_factory(namespace, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "1"})
    op.wait_ready()
    spec = {
        "restore": {
            "fromBackup": {
                "destination": DESTINATION,
                "source": f"{namespace}/old",
                "pointInTime": "2026-01-01T00:00:00Z",
            }
        }
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("restored", spec))
    wait_until(lambda: get(kubectl, namespace, "deployment", "restored"), what="the Deployment")
    pod = wait_until(
        lambda: json.loads(
            kubectl(
                "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=restored", "-o", "json"
            ).stdout
        )["items"],
        timeout=60,
        what="the agent pod",
    )[0]
    # Play the kubelet: restore-check exited 3 with the runner's refusal (its text as
    # tests/continuous/test_operator_restore.py records it).
    message = json.dumps(
        {
            "ok": False,
            "refused": True,
            "message": f"point in time 2026-01-01T00:00:00Z is outside the retained window of agent "
            f"{namespace}/old's replica (the oldest restorable moment is 2026-12-02T10:00:00Z): refused",
        }
    )
    status = {
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "restore", "image": "b", "imageID": "", "ready": False, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": message}}}
            ],
        }
    }  # fmt: skip
    kubectl("-n", namespace, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
            "-p", json.dumps(status))  # fmt: skip
    cond = wait_until(lambda: _stalled(kubectl, namespace, "restored"), timeout=60, what="Stalled")
    assert cond["reason"] == "RestoreRefused" and "outside the retained window" in cond["message"], cond


@pytest.mark.usefixtures("crd_installed")
def test_another_namespaces_replica_is_refused_before_any_pod(
    kubectl: Kubectl, namespace: str, operator_factory: Any
) -> None:
    op: OperatorProcess = operator_factory(namespace)
    op.wait_ready()
    spec = {
        "restore": {
            "fromBackup": {
                "destination": DESTINATION,
                "source": "other-tenant/agent",
                "pointInTime": "latest",
            }
        }
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("thief", spec))
    cond = wait_until(
        lambda: _stalled(kubectl, namespace, "thief"), timeout=60, what="Stalled RestoreRefused"
    )
    assert cond["reason"] == "RestoreRefused" and "another namespace" in cond["message"], cond
    assert get(kubectl, namespace, "deployment", "thief") is None
