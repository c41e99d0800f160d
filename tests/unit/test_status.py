"""Pure status computation (status.py): phases, conditions, transitions and the status patch."""

from __future__ import annotations

from typing import Any

import pytest
from vestige_operator.api import VestigeMemorySpec, VestigeMemoryStatus
from vestige_operator.status import (
    ChildError,
    Observation,
    compute_status,
    invalid_status,
    status_patch,
)
from vestige_operator.vocabulary import Owner

OWNER = Owner(name="agent-a", namespace="team", uid="uid-1")
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def spec(**fields: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(fields)


def pvc(phase: str = "Bound", capacity: str | None = "5Gi") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if capacity:
        status["capacity"] = {"storage": capacity}
    return {"metadata": {"name": "agent-a-data"}, "status": status}


def dep(
    replicas: int = 1,
    available: int = 1,
    updated: int | None = None,
    generation: int = 1,
    observed: int = 1,
    current: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "agent-a", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas if current is None else current,
            "updatedReplicas": replicas if updated is None else updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def compute(s: VestigeMemorySpec, obs: Observation, previous: dict[str, Any] | None = None, now: str = T0):
    return compute_status(OWNER, s, obs, previous, now)


def test_ready_status_has_kubernetes_shape_and_all_fields() -> None:
    status = compute(spec(), Observation(generation=3, pvc=pvc(), deployment=dep()))
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == 3
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Reconciling", "Stalled", "StorageReady"]
    for c in status["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert c["observedGeneration"] == 3
        assert c["lastTransitionTime"] == T0
    assert cond(status, "Ready")["status"] == "True"
    assert cond(status, "Reconciling")["status"] == "False"
    assert cond(status, "Stalled")["status"] == "False"
    assert cond(status, "StorageReady")["status"] == "True"
    assert status["endpoint"] == "http://agent-a.team.svc:8000"
    assert status["authSecretRef"] == {"name": "agent-a-auth", "key": "token"}
    assert status["pvcName"] == "agent-a-data"
    assert status["agentId"] == "agent-a"
    assert status["storage"] == {"capacity": "5Gi"}
    assert "url" not in status
    VestigeMemoryStatus.model_validate(status)  # the CRD's status schema accepts it


def test_storage_capacity_is_the_bound_volumes_not_the_request() -> None:
    """A 1Gi request bound to a 20Gi volume (a static PV): capacity (STORAGE) says 20Gi."""
    status = compute(
        spec(storage={"size": "1Gi"}), Observation(generation=1, pvc=pvc(capacity="20Gi"), deployment=dep())
    )
    assert status["storage"] == {"capacity": "20Gi"}
    assert "bound with 20Gi" in cond(status, "StorageReady")["message"]
    pending = compute(
        spec(storage={"size": "1Gi"}), Observation(generation=1, pvc=pvc("Pending", None), deployment=dep())
    )
    assert "storage" not in pending


def test_unchanged_world_yields_identical_status_and_no_patch() -> None:
    obs = Observation(generation=1, pvc=pvc(), deployment=dep())
    first = compute(spec(), obs, None, T0)
    second = compute(spec(), obs, first, T1)
    assert second == first
    assert status_patch(first, second) is None


def test_transition_time_changes_only_for_flipped_conditions() -> None:
    provisioning = compute(
        spec(), Observation(generation=1, pvc=pvc(), deployment=dep(available=0)), None, T0
    )
    ready = compute(spec(), Observation(generation=1, pvc=pvc(), deployment=dep()), provisioning, T1)
    assert cond(ready, "Ready")["lastTransitionTime"] == T1
    assert cond(ready, "Reconciling")["lastTransitionTime"] == T1
    assert cond(ready, "Stalled")["lastTransitionTime"] == T0
    assert cond(ready, "StorageReady")["lastTransitionTime"] == T0


@pytest.mark.parametrize(
    ("obs", "phase", "ready_reason", "reconciling"),
    [
        (Observation(generation=1), "Pending", "StoragePending", "True"),
        (Observation(generation=1, pvc=pvc("Pending", None)), "Pending", "StoragePending", "True"),
        (Observation(generation=1, pvc=pvc()), "Provisioning", "Provisioning", "True"),
        (
            Observation(generation=1, pvc=pvc(), deployment=dep(observed=0)),
            "Provisioning",
            "Provisioning",
            "True",
        ),
        (
            Observation(generation=1, pvc=pvc(), deployment=dep(updated=0)),
            "Provisioning",
            "Provisioning",
            "True",
        ),
        (
            Observation(generation=1, pvc=pvc(), deployment=dep(available=0)),
            "Provisioning",
            "Provisioning",
            "True",
        ),
        (
            Observation(
                generation=1,
                pvc=pvc(),
                deployment=dep(available=0),
                restore_failing="init container restore-replica exited with 1: dial tcp: i/o timeout",
            ),
            "Provisioning",
            "RestoreFailing",
            "True",
        ),
    ],
)
def test_phases_on_the_way_up(obs: Observation, phase: str, ready_reason: str, reconciling: str) -> None:
    status = compute(spec(), obs)
    assert status["phase"] == phase
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["reason"] == ready_reason
    assert cond(status, "Reconciling")["status"] == reconciling
    assert cond(status, "Stalled")["status"] == "False"


def test_degraded_when_a_ready_memory_loses_its_pod() -> None:
    ready = compute(spec(), Observation(generation=1, pvc=pvc(), deployment=dep()))
    degraded = compute(spec(), Observation(generation=1, pvc=pvc(), deployment=dep(available=0)), ready, T1)
    assert degraded["phase"] == "Degraded"
    assert cond(degraded, "Ready")["status"] == "False"
    assert cond(degraded, "Ready")["reason"] == "Unavailable"


def test_suspended_while_scaling_down_and_once_scaled_down() -> None:
    s = spec(suspend=True)
    going = compute(
        s, Observation(generation=2, pvc=pvc(), deployment=dep(replicas=0, current=1, available=1))
    )
    assert going["phase"] == "Suspended"
    assert cond(going, "Reconciling")["status"] == "True"
    done = compute(s, Observation(generation=2, pvc=pvc(), deployment=dep(replicas=0, available=0)))
    assert done["phase"] == "Suspended"
    assert cond(done, "Ready")["status"] == "False"
    assert cond(done, "Ready")["reason"] == "Suspended"
    assert cond(done, "Reconciling")["status"] == "False"


def test_missing_auth_secret_is_a_stall() -> None:
    status = compute(spec(), Observation(generation=1, pvc=pvc(), auth_problem="Secret mine not found"))
    assert status["phase"] == "Failed"
    assert cond(status, "Stalled")["status"] == "True"
    assert cond(status, "Stalled")["reason"] == "AuthSecretUnavailable"
    assert "Secret mine not found" in cond(status, "Stalled")["message"]
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Reconciling")["status"] == "False"


def test_rejected_apply_is_a_stall_and_transient_errors_are_retried() -> None:
    rejected = Observation(
        generation=1, pvc=pvc(), deployment=dep(), errors=(ChildError("Ingress", "denied", False),)
    )
    status = compute(spec(), rejected)
    assert status["phase"] == "Failed"
    assert cond(status, "Stalled")["reason"] == "ApplyRejected"
    assert "Ingress: denied" in cond(status, "Stalled")["message"]
    retrying = Observation(
        generation=1, pvc=pvc(), deployment=dep(), errors=(ChildError("Service", "timeout", True),)
    )
    status = compute(spec(), retrying)
    assert status["phase"] == "Ready"  # the pod serves; the operator is still catching up
    assert cond(status, "Reconciling")["status"] == "True"
    assert cond(status, "Reconciling")["reason"] == "Retrying"
    assert cond(status, "Stalled")["status"] == "False"


def test_progress_deadline_stalls() -> None:
    stuck = dep(
        available=0,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    )
    status = compute(spec(), Observation(generation=1, pvc=pvc(), deployment=stuck))
    assert cond(status, "Stalled")["status"] == "True"
    assert cond(status, "Stalled")["reason"] == "ProgressDeadlineExceeded"


def test_applied_children_mark_reconciling() -> None:
    status = compute(spec(), Observation(generation=2, pvc=pvc(), deployment=dep(), applied=("Deployment",)))
    assert cond(status, "Reconciling")["status"] == "True"
    assert "applied Deployment" in cond(status, "Reconciling")["message"]


def test_storage_conditions() -> None:
    grown = spec(storage={"size": "10Gi"})
    status = compute(grown, Observation(generation=2, pvc=pvc(capacity="5Gi"), deployment=dep()))
    storage = cond(status, "StorageReady")
    assert (storage["status"], storage["reason"]) == ("True", "ResizePending")
    assert status["storage"] == {"capacity": "5Gi"}
    assert status["phase"] == "Ready"
    lost = compute(spec(), Observation(generation=1, pvc=pvc("Lost"), deployment=dep()))
    assert cond(lost, "StorageReady")["status"] == "False"
    assert cond(lost, "Stalled")["reason"] == "VolumeLost"


def test_url_agent_id_and_existing_secret_in_status() -> None:
    s = spec(
        agentId="other",
        ingress={"enabled": True, "host": "m.example.com"},
        auth={"existingSecret": {"name": "mine"}},
    )
    status = compute(s, Observation(generation=1, pvc=pvc(), deployment=dep()))
    assert status["url"] == "http://m.example.com/"
    assert status["agentId"] == "other"
    assert status["authSecretRef"] == {"name": "mine", "key": "token"}


def test_ignored_env_is_reported_on_ready() -> None:
    status = compute(
        spec(),
        Observation(generation=1, pvc=pvc(), deployment=dep(), ignored_env=("vestige/VESTIGE_HTTP_BIND",)),
    )
    assert "vestige/VESTIGE_HTTP_BIND" in cond(status, "Ready")["message"]


def test_invalid_spec_status() -> None:
    status = invalid_status(OWNER, 4, "spec not understood: storage.size: bad", None, T0)
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] == 4
    assert cond(status, "Stalled")["reason"] == "InvalidSpec"
    VestigeMemoryStatus.model_validate(status)


def test_status_patch_nulls_what_disappeared() -> None:
    old = {"phase": "Ready", "url": "http://x/", "storage": {"capacity": "5Gi"}, "kopf": {"x": 1}}
    new = {"phase": "Ready", "storage": {}}
    assert status_patch(old, new) == {"url": None, "storage": {"capacity": None}}
    assert status_patch(old, {"phase": "Ready", "url": "http://x/", "storage": {"capacity": "5Gi"}}) is None
    assert status_patch(None, {"phase": "Pending"}) == {"phase": "Pending"}


def test_a_failing_restore_is_said_until_the_pod_is_available() -> None:
    why = "init container restore-replica exited with 1: dial tcp 10.0.0.1:443: i/o timeout"
    failing = compute(
        spec(), Observation(generation=1, pvc=pvc(), deployment=dep(available=0), restore_failing=why)
    )
    assert (
        why in cond(failing, "Ready")["message"]
        and "the kubelet retries" in cond(failing, "Ready")["message"]
    )
    assert cond(failing, "Reconciling")["reason"] == "Restoring"
    # a pod that got through (the kubelet's retry succeeded) is Ready whatever was read before
    done = compute(spec(), Observation(generation=1, pvc=pvc(), deployment=dep(), restore_failing=why))
    assert done["phase"] == "Ready" and cond(done, "Ready")["status"] == "True"
