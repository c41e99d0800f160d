"""A data claim is mounted only for the agent it was created for (issue 13, item 1)."""

from __future__ import annotations

from typing import Any

from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import render_deployment, render_pvc, volume_agent_id
from vestige_operator.plan import volume_check
from vestige_operator.status import Observation, compute_status, stalled_event
from vestige_operator.vocabulary import ANNOTATION_AGENT_ID, LABEL_AGENT_ID, Images, Owner

OWNER = Owner(name="alice", namespace="team", uid="uid-new")
IMAGES = Images(
    vestige="example.org/vestige:3", bridge="example.org/bridge:1", litestream="example.org/litestream:0.5.18"
)


def legacy_pvc(**meta: Any) -> dict[str, Any]:
    """A claim as an operator before this change made it: no agent-id record."""
    pvc = render_pvc(OWNER, VestigeMemorySpec())
    pvc["metadata"]["annotations"].pop(ANNOTATION_AGENT_ID)
    pvc["metadata"]["labels"].pop(LABEL_AGENT_ID)
    pvc["metadata"].update(meta)
    return pvc


def test_the_claim_records_the_agent_id() -> None:
    pvc = render_pvc(OWNER, VestigeMemorySpec(agent_id="agent-a"))
    assert pvc["metadata"]["annotations"][ANNOTATION_AGENT_ID] == "agent-a"
    assert pvc["metadata"]["labels"][LABEL_AGENT_ID] == "agent-a"
    assert volume_agent_id(pvc) == "agent-a"
    assert volume_agent_id(render_pvc(OWNER, VestigeMemorySpec())) == "alice"  # defaults to the name


def test_another_agents_claim_is_never_mountable() -> None:
    theirs = render_pvc(Owner("alice", "team", "uid-old"), VestigeMemorySpec(agent_id="agent-a"))
    check = volume_check(OWNER, "agent-b", theirs, None)
    assert not check.mountable
    assert check.problem is not None and check.problem[0] == "VolumeOwnedByOtherAgent"
    assert "agent-a" in check.problem[1] and "agent-b" in check.problem[1]
    # even when this resource's own Deployment mounts it (someone re-stamped the claim)
    mine = render_deployment(OWNER, VestigeMemorySpec(agent_id="agent-b"), IMAGES, "h")
    assert not volume_check(OWNER, "agent-b", theirs, mine).mountable
    assert volume_check(OWNER, "agent-a", theirs, None).mountable
    assert volume_check(OWNER, "agent-b", None, None).mountable  # absent: created and stamped


def test_a_claim_without_record_is_adopted_only_when_provably_this_resources() -> None:
    orphan = legacy_pvc()  # retained by a deleted resource of the same name
    check = volume_check(OWNER, "alice", orphan, None)
    assert not check.mountable and check.problem is not None
    assert check.problem[0] == "VolumeOwnerUnknown"
    assert "kubectl annotate pvc alice-data vestige.dev/agent-id=alice" in check.problem[1]
    # A Deployment of the same name that is not this resource's proves nothing.
    other = render_deployment(Owner("alice", "team", "uid-old"), VestigeMemorySpec(), IMAGES, "h")
    assert not volume_check(OWNER, "alice", orphan, other).mountable
    # This resource's own Deployment already mounts it: it served this agent (agentId is immutable).
    mine = render_deployment(OWNER, VestigeMemorySpec(), IMAGES, "h")
    assert volume_check(OWNER, "alice", orphan, mine).mountable
    # reclaimPolicy Delete: the claim carries this resource's owner reference.
    owned = legacy_pvc(ownerReferences=[{"uid": OWNER.uid, "kind": "VestigeMemory", "name": "alice"}])
    assert volume_check(OWNER, "alice", owned, None).mountable


def test_status_is_stalled_with_the_reason_and_one_event() -> None:
    problem = ("VolumeOwnedByOtherAgent", "PersistentVolumeClaim alice-data holds the memory of agent 'a'")
    obs = Observation(generation=1, volume_problem=problem)
    status = compute_status(OWNER, VestigeMemorySpec(agent_id="b"), obs, None, "2026-01-01T00:00:00Z")
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Failed"
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == "VolumeOwnedByOtherAgent"
    assert conds["StorageReady"]["reason"] == "VolumeOwnedByOtherAgent"
    assert conds["Ready"]["status"] == "False"
    assert "storage" not in status
    event = stalled_event(OWNER, None, status, "2026-01-01T00:00:00Z")
    assert event is not None and event["type"] == "Warning" and event["reason"] == "VolumeOwnedByOtherAgent"
    again = compute_status(OWNER, VestigeMemorySpec(agent_id="b"), obs, status, "2026-01-01T00:01:00Z")
    assert again == status
    assert stalled_event(OWNER, status, again, "2026-01-01T00:01:00Z") is None


def _bound(capacity: str, requested: str) -> dict[str, Any]:
    pvc = render_pvc(OWNER, VestigeMemorySpec(storage={"size": requested}))
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": capacity}}
    return pvc


def test_a_cancelled_expansion_is_reported_until_the_next_spec_change() -> None:
    """Issue 13 item 7: storage.size back down to the capacity after an expansion that never came."""
    now = "2026-01-01T00:00:00Z"
    grown = VestigeMemorySpec(storage={"size": "3Gi"})
    pending = compute_status(OWNER, grown, Observation(generation=2, pvc=_bound("1Gi", "3Gi")), None, now)
    storage = next(c for c in pending["conditions"] if c["type"] == "StorageReady")
    assert storage["reason"] == "ResizePending"

    back = VestigeMemorySpec(storage={"size": "1Gi"})
    done = compute_status(OWNER, back, Observation(generation=3, pvc=_bound("1Gi", "1Gi")), pending, now)
    storage = next(c for c in done["conditions"] if c["type"] == "StorageReady")
    assert storage["status"] == "True" and storage["reason"] == "ExpansionCancelled"
    assert "3Gi" in storage["message"] and "1Gi" in storage["message"]
    again = compute_status(OWNER, back, Observation(generation=3, pvc=_bound("1Gi", "1Gi")), done, now)
    assert again == done  # stable: nothing to write on the next pass
    later = compute_status(OWNER, back, Observation(generation=4, pvc=_bound("1Gi", "1Gi")), done, now)
    assert next(c for c in later["conditions"] if c["type"] == "StorageReady")["reason"] == "Bound"

    # An expansion that completed is not a cancellation.
    grew = compute_status(OWNER, grown, Observation(generation=3, pvc=_bound("3Gi", "3Gi")), pending, now)
    assert next(c for c in grew["conditions"] if c["type"] == "StorageReady")["reason"] == "Bound"


def test_a_claim_request_is_kept_where_kubernetes_forbids_the_smaller_one() -> None:
    """A claim's request may go back down only to above its capacity (API server validation)."""
    from vestige_operator.plan import keep_unshrinkable_request

    live = _bound("1Gi", "3Gi")  # an expansion to 3Gi that never happened
    back = render_pvc(OWNER, VestigeMemorySpec(storage={"size": "1Gi"}))
    kept = keep_unshrinkable_request(back, live)
    assert kept["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert kept["metadata"]["annotations"]["vestige.dev/applied-hash"] != back["metadata"]["annotations"].get(
        "vestige.dev/applied-hash"
    )
    above = render_pvc(OWNER, VestigeMemorySpec(storage={"size": "2Gi"}))
    assert keep_unshrinkable_request(above, live) is above  # above the capacity: applied as rendered
    assert keep_unshrinkable_request(back, _bound("1Gi", "1Gi")) is back  # nothing pending
    assert keep_unshrinkable_request(back, None) is back  # no claim yet
