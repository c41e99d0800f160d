"""The Argo CD health checks (Lua 5.1) on status shapes, and the argocd-cm patch in sync.

The statuses the operator really writes are checked on the real API server in
tests/integration/test_health.py (with kstatus on the same objects); here the edge cases a
cluster rarely shows: no status yet, a spec newer than the status, each VestigeBackup phase.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.health import CONFIGMAP_PATCH, argocd_health, configmap_patch

VMEM = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeMemory"}
VBAK = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeBackup"}


def cond(type_: str, status: str, reason: str = "R", message: str = "m", gen: int = 3) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": gen}


def vmem(phase: str | None, *conds: dict[str, Any], gen: int = 3, observed: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {**VMEM, "metadata": {"name": "a", "namespace": "n", "generation": gen}}
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": observed, "conditions": list(conds)}
    return obj


def test_configmap_patch_holds_the_scripts() -> None:
    assert CONFIGMAP_PATCH.read_text() == configmap_patch(), "run `python -m tests.health`"


@pytest.mark.parametrize(
    ("obj", "status", "in_message"),
    [
        (vmem(None), "Progressing", "Waiting for the operator"),
        (
            vmem("Ready", cond("Ready", "True", message="serving"), observed=2),
            "Progressing",
            "generation 3",
        ),
        (
            vmem("Ready", cond("Ready", "True", message="serving"), cond("Stalled", "False")),
            "Healthy",
            "serving",
        ),
        (
            vmem("Ready", cond("Ready", "True", gen=2), cond("Reconciling", "True", message="applying")),
            "Progressing",
            "applying",
        ),
        (
            vmem("Failed", cond("Ready", "False"), cond("Stalled", "True", "InvalidSpec", "bad size")),
            "Degraded",
            "InvalidSpec: bad size",
        ),
        (vmem("Degraded", cond("Ready", "False", message="0/1 pod(s) available")), "Degraded", "0/1"),
        (vmem("Suspended", cond("Reconciling", "False")), "Suspended", "suspend"),
        (vmem("Suspended", cond("Reconciling", "True", message="scaling to zero")), "Progressing", "scaling"),
        (vmem("Provisioning", cond("Reconciling", "True", message="rolling out")), "Progressing", "rolling"),
    ],
)
def test_vestigememory(obj: dict[str, Any], status: str, in_message: str) -> None:
    got, message = argocd_health(obj)
    assert got == status
    assert in_message in message


@pytest.mark.parametrize(
    ("st", "status"),
    [
        (None, "Progressing"),
        ({"phase": "Pending"}, "Progressing"),
        ({"phase": "Running", "message": "copying"}, "Progressing"),
        ({"phase": "Completed"}, "Healthy"),
        ({"phase": "Failed", "message": "volume busy"}, "Degraded"),
        ({"phase": "Completed", "observedGeneration": 1}, "Progressing"),  # spec changed since
        ({"phase": "Exploded"}, "Unknown"),
    ],
)
def test_vestigebackup(st: dict[str, Any] | None, status: str) -> None:
    obj: dict[str, Any] = {**VBAK, "metadata": {"name": "b", "namespace": "n", "generation": 2}}
    if st is not None:
        obj["status"] = st
    assert argocd_health(obj)[0] == status
