"""GitOps health of what the operator really writes: Argo CD's Lua check and kstatus agree.

The operator reconciles VestigeMemory resources on the real API server into each state a GitOps
tool must tell apart: Ready, Reconciling (a pod that cannot be scheduled), Stalled (a token
Secret that does not exist), Suspended, an invalid spec (stored under a looser schema, as after a
CRD upgrade), and a spec changed while the operator was down. The objects read back from the API
server go through manifests/argocd/*.lua (Lua 5.1) and the real cli-utils kstatus.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from tests import tools
from tests.health import argocd_health
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture
from tests.integration.operator_fixtures import operator_process as operator_process  # fixture

CRD_FILE = ROOT / "crds" / "vestige.dev_vestigememories.yaml"

CASES: dict[str, dict[str, Any]] = {
    "ready": {},
    # No node carries this label: the pod stays Pending, the rollout never completes.
    "reconciling": {"pod": {"nodeSelector": {"vestige.dev/test-no-such-node": "true"}}},
    "stalled": {"auth": {"existingSecret": {"name": "no-such-secret", "key": "token"}}},
    "suspended": {"suspend": True},
}
# (phase, Argo CD health, kstatus) the operator's status must lead to.
EXPECTED = {
    "ready": ("Ready", "Healthy", "Current"),
    "reconciling": ("Provisioning", "Progressing", "InProgress"),
    "stalled": ("Failed", "Degraded", "Failed"),
    # kstatus falls back to the Ready condition when neither Reconciling nor Stalled is True, and
    # a suspended agent has Ready=False (it serves nothing): InProgress, never Current. So a
    # kstatus-based wait (Flux `wait: true`, helm v4 --wait) on a suspended agent does not end
    # (README, GitOps health). Argo CD's check says Suspended.
    "suspended": ("Suspended", "Suspended", "InProgress"),
    "invalid": ("Failed", "Degraded", "Failed"),
}


def vmem(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def permissive_crd() -> dict[str, Any]:
    """The VestigeMemory CRD with a spec schema that accepts anything (an older, looser schema)."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    loose = copy.deepcopy(crd)
    for version in loose["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        schema.pop("x-kubernetes-validations", None)
        schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return loose


def create_invalid(kubectl: Kubectl, ns: str, name: str) -> None:
    """Store a spec the operator's models reject: under a looser CRD schema, then restore the CRD."""
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=vestige-tests", "-f", "-"]
    bad = vmem(name, {"storage": {"size": "a lot"}})
    try:
        kubectl(*apply, input=json.dumps(permissive_crd()))
        # The API server switches schemas asynchronously: retry until the loose one admits it.
        wait_until(
            lambda: (
                kubectl("-n", ns, "create", "-f", "-", input=json.dumps(bad), check=False).returncode == 0
            ),
            60,
            "the looser schema to admit the invalid spec",
        )
    finally:
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=vestige-tests",
            "-f",
            str(CRD_FILE),
        )
    stored = must_get(kubectl, ns, "vmem", name)
    assert stored["spec"]["storage"]["size"] == "a lot"


def health_of(objs: list[dict[str, Any]]) -> dict[str, tuple[str, str, str, str, str]]:
    """name -> (phase, Argo CD status, Argo CD message, kstatus status, kstatus message)."""
    verdicts = tools.kstatus(objs)
    assert [v["name"] for v in verdicts] == [o["metadata"]["name"] for o in objs]
    out = {}
    for obj, ks in zip(objs, verdicts, strict=True):
        argo, message = argocd_health(obj)
        out[obj["metadata"]["name"]] = (
            (obj.get("status") or {}).get("phase", ""),
            argo,
            message,
            ks["status"],
            ks["message"],
        )
    return out


def test_argocd_and_kstatus_read_every_state_the_operator_writes(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    ns = namespace
    for name, spec in CASES.items():
        kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(vmem(name, spec)))
    create_invalid(kubectl, ns, "invalid")

    def settled() -> dict[str, Any] | None:
        objs = {n: must_get(kubectl, ns, "vmem", n) for n in EXPECTED}
        for name, (phase, _, _) in EXPECTED.items():
            status = objs[name].get("status") or {}
            if (
                status.get("phase") != phase
                or status.get("observedGeneration") != objs[name]["metadata"]["generation"]
            ):
                return None
        if condition(objs["reconciling"], "Reconciling")["status"] != "True":
            return None
        if condition(objs["suspended"], "Reconciling")["status"] != "False":
            return None  # still scaling down
        return objs

    objs = wait_until(settled, 180, "every resource in its expected phase", interval=1.0)
    assert condition(objs["stalled"], "Stalled")["reason"] == "AuthSecretUnavailable"
    assert condition(objs["invalid"], "Stalled")["reason"] == "InvalidSpec"

    health = health_of([objs[n] for n in EXPECTED])
    for name, (phase, argo, ks) in EXPECTED.items():
        got = health[name]
        assert (got[0], got[1], got[3]) == (phase, argo, ks), f"{name}: {got}"
    assert "AuthSecretUnavailable" in health["stalled"][2]
    assert "InvalidSpec" in health["invalid"][2]

    # A spec changed while the operator is down: both tools wait for the operator to observe it.
    assert operator_process.stop() == 0
    kubectl(
        "-n", ns, "patch", "vmem", "ready", "--type=merge", "-p", '{"spec":{"pod":{"annotations":{"x":"1"}}}}'
    )
    stale = must_get(kubectl, ns, "vmem", "ready")
    assert stale["metadata"]["generation"] > stale["status"]["observedGeneration"]
    phase, argo, message, ks, _ = health_of([stale])["ready"]
    assert (phase, argo, ks) == ("Ready", "Progressing", "InProgress"), message
    operator_process.restart()
    fresh = wait_until(
        lambda: (
            (o := must_get(kubectl, ns, "vmem", "ready"))["status"].get("observedGeneration")
            == o["metadata"]["generation"]
            and condition(o, "Ready")["status"] == "True"
            and o
        ),
        120,
        "the restarted operator to observe the change",
    )
    _, argo, _, ks, _ = health_of([fresh])["ready"]
    assert (argo, ks) == ("Healthy", "Current")


@pytest.fixture(autouse=True)
def _no_leftover_loose_crd(kubectl: Kubectl, crd_installed: None) -> None:
    """Whatever happened in a test, the generated CRD is what the cluster serves afterwards."""
    yield  # type: ignore[misc]
    kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=vestige-tests", "-f", str(CRD_FILE)
    )
