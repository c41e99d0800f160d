"""Pure parts of the bad-input handling: Ingress host claims, the conflict verdict, the status of
a resource whose StorageClass is missing or whose host is taken, and the Stalled Event."""

from __future__ import annotations

from typing import Any

from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import IngressClaim, ingress_claim, ingress_host_holder
from vestige_operator.status import Observation, compute_status, stalled_event
from vestige_operator.vocabulary import Owner

OWNER = Owner(name="agent-b", namespace="team", uid="uid-b")
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def claim(ns: str, name: str, created: str, host: str = "m.example.com", path: str = "/") -> IngressClaim:
    return IngressClaim(host=host, path=path, namespace=ns, name=name, created=created)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def bound_pvc() -> dict[str, Any]:
    return {
        "metadata": {"name": "agent-b-data"},
        "status": {"phase": "Bound", "capacity": {"storage": "5Gi"}},
    }


def available_deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "agent-b", "generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
    }


# -- claims ------------------------------------------------------------------------------------


def test_ingress_claim_needs_an_enabled_ingress_with_a_host() -> None:
    assert ingress_claim("ns", "a", T0, {}) is None
    assert ingress_claim("ns", "a", T0, {"ingress": {"enabled": False, "host": "x.example.com"}}) is None
    assert ingress_claim("ns", "a", T0, {"ingress": {"enabled": True}}) is None
    assert ingress_claim("ns", "a", T0, {"ingress": "garbage"}) is None
    got = ingress_claim("ns", "a", T0, {"ingress": {"enabled": True, "host": "M.Example.COM"}})
    assert got == claim("ns", "a", T0)  # host lower-cased, path defaults to "/"
    got = ingress_claim("ns", "a", None, {"ingress": {"enabled": True, "host": "h.io", "path": "/x"}})
    assert got == IngressClaim("h.io", "/x", "ns", "a", "")


def test_the_earliest_claim_holds_the_host() -> None:
    first = claim("team", "agent-a", T0)
    mine = claim("team", "agent-b", T1)
    assert ingress_host_holder("team", "agent-b", "m.example.com", [first, mine]) == first
    assert ingress_host_holder("team", "agent-a", "m.example.com", [first, mine]) is None


def test_ties_are_broken_by_namespace_then_name_and_hosts_compare_case_insensitively() -> None:
    a = claim("team", "agent-a", T0)
    b = claim("team", "agent-b", T0)
    assert ingress_host_holder("team", "agent-b", "M.EXAMPLE.com", [b, a]) == a
    assert ingress_host_holder("team", "agent-a", "m.example.com", [b, a]) is None
    other_ns = claim("alpha", "zzz", T0)
    assert ingress_host_holder("team", "agent-a", "m.example.com", [a, other_ns]) == other_ns


def test_one_host_belongs_to_one_agent_whatever_the_path_and_an_unindexed_resource_is_newest() -> None:
    a = claim("team", "agent-a", T1)
    # Another path under a host someone else holds: refused (it would take that host's calls).
    for path in ("/mcp", "/search", "/ingest", "/b"):
        b = IngressClaim("m.example.com", path, "other", "agent-b", "2026-01-01T00:06:00Z")
        assert ingress_host_holder("other", "agent-b", "m.example.com", [a, b]) == a
    assert ingress_host_holder("team", "agent-b", "n.example.com", [a]) is None
    # Not in the index yet (the index lags): yields to any existing claim, however recent.
    assert ingress_host_holder("team", "agent-b", "m.example.com", [a]) == a
    assert ingress_host_holder("team", "agent-b", "m.example.com", []) is None


# -- status ------------------------------------------------------------------------------------


def test_host_conflict_stalls_and_publishes_no_url() -> None:
    spec = VestigeMemorySpec.model_validate({"ingress": {"enabled": True, "host": "m.example.com"}})
    obs = Observation(
        generation=2,
        pvc=bound_pvc(),
        deployment=available_deployment(),
        ingress_conflict="host m.example.com path / is already routed by VestigeMemory team/agent-a",
    )
    status = compute_status(OWNER, spec, obs, None, T0)
    assert status["phase"] == "Failed"
    assert cond(status, "Stalled")["status"] == "True"
    assert cond(status, "Stalled")["reason"] == "IngressHostConflict"
    assert "team/agent-a" in cond(status, "Stalled")["message"]
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Reconciling")["status"] == "False"
    assert "url" not in status
    # Without the conflict the same observation is Ready with the URL.
    ok = compute_status(OWNER, spec, Observation(2, bound_pvc(), available_deployment()), None, T0)
    assert ok["phase"] == "Ready" and ok["url"] == "http://m.example.com/"


def test_missing_storage_class_stalls_with_a_storage_reason() -> None:
    spec = VestigeMemorySpec.model_validate({"storage": {"storageClassName": "nope"}})
    pending = {"metadata": {"name": "agent-b-data"}, "status": {"phase": "Pending"}}
    status = compute_status(
        OWNER, spec, Observation(1, pending, available_deployment(), storage_class_missing="nope"), None, T0
    )
    assert status["phase"] == "Failed"
    assert cond(status, "StorageReady")["reason"] == "StorageClassNotFound"
    assert cond(status, "Stalled")["reason"] == "StorageClassNotFound"
    assert "StorageClass nope" in cond(status, "Stalled")["message"]
    # A claim that is bound after all is not blocked by a stale verdict.
    bound = compute_status(
        OWNER,
        spec,
        Observation(1, bound_pvc(), available_deployment(), storage_class_missing="nope"),
        None,
        T0,
    )
    assert bound["phase"] == "Ready"
    assert cond(bound, "Stalled")["status"] == "False"


# -- the Event ---------------------------------------------------------------------------------


def stalled(reason: str, message: str, status: str = "True") -> dict[str, Any]:
    return {"conditions": [{"type": "Stalled", "status": status, "reason": reason, "message": message}]}


def test_an_event_is_posted_once_per_stall_transition() -> None:
    event = stalled_event(OWNER, None, stalled("StorageClassNotFound", "no class"), T0)
    assert event is not None
    assert event["type"] == "Warning"
    assert event["reason"] == "StorageClassNotFound"
    assert event["message"] == "no class"
    assert event["involvedObject"] == {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "name": "agent-b",
        "namespace": "team",
        "uid": "uid-b",
    }
    assert event["metadata"] == {"generateName": "agent-b.", "namespace": "team"}
    same = stalled("StorageClassNotFound", "no class")
    assert stalled_event(OWNER, same, same, T1) is None  # still stuck the same way: silent
    assert stalled_event(OWNER, same, stalled("IngressHostConflict", "taken"), T1) is not None
    assert stalled_event(OWNER, same, stalled("StorageClassNotFound", "other class"), T1) is not None
    assert stalled_event(OWNER, same, stalled("AsExpected", "fine", "False"), T1) is None
    assert stalled_event(OWNER, stalled("AsExpected", "", "False"), {"phase": "Ready"}, T1) is None


def test_event_message_is_bounded() -> None:
    event = stalled_event(OWNER, None, stalled("ApplyRejected", "x" * 5000), T0)
    assert event is not None and len(event["message"]) == 1024
