"""plan(): what a pass writes and why, decided in one pure place (ownership, overrides, drift)."""

from __future__ import annotations

from typing import Any

from vestige_operator import plan as p
from vestige_operator.api import VestigeBackupGrantSpec, VestigeMemorySpec
from vestige_operator.children import IngressClaim, render_children, render_pvc
from vestige_operator.vocabulary import Images, Owner

OWNER = Owner(name="a", namespace="team", uid="uid-a")
IMAGES = Images(
    vestige="example.org/vestige:3", bridge="example.org/bridge:1", litestream="example.org/litestream:0.5.18"
)


def live(spec: VestigeMemorySpec) -> dict[str, list[dict[str, Any]]]:
    """The cache after a pass that applied everything ``spec`` renders."""
    cached: dict[str, list[dict[str, Any]]] = {}
    for m in render_children(OWNER, spec, IMAGES, "h").apply:
        cached.setdefault(m["kind"], []).append(
            {**m, "metadata": {**m["metadata"], "uid": f"uid-{m['kind']}"}}
        )
    return cached


def kinds(plan: p.Plan, action: type) -> list[str]:
    return [a.kind for a in plan.actions if isinstance(a, action)]


def test_absent_children_are_created_and_a_settled_set_is_kept() -> None:
    spec = VestigeMemorySpec()
    fresh = p.plan(OWNER, spec, IMAGES, "h", {}, pvc=None)
    assert kinds(fresh, p.Create) == ["PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy"]
    cached = live(spec)
    settled = p.plan(OWNER, spec, IMAGES, "h", cached, pvc=cached["PersistentVolumeClaim"][0])
    assert all(isinstance(a, p.Keep) for a in settled.actions)


def test_no_token_no_deployment() -> None:
    assert "Deployment" not in kinds(p.plan(OWNER, VestigeMemorySpec(), IMAGES, None, {}, pvc=None), p.Create)


def test_ownership_is_the_controller_reference_of_this_uid() -> None:
    svc = live(VestigeMemorySpec())["Service"][0]
    assert p.ownership("Service", svc, OWNER).state == "owned"
    assert p.ownership("Service", None, OWNER).state == "absent"
    other = Owner("a", "team", "uid-earlier")
    assert p.ownership("Service", svc, other).state == "stale"  # same name, another uid: GC pending
    bare = {"metadata": {"name": "a", "labels": svc["metadata"]["labels"]}}
    verdict = p.ownership("Service", bare, OWNER)
    assert verdict.state == "foreign" and verdict.reason == p.REASON_NOT_OWNED
    assert "Service a exists and is not owned" in verdict.message
    someone = {
        "metadata": {"name": "a", "ownerReferences": [{"kind": "ReplicaSet", "uid": "x", "controller": True}]}
    }
    assert p.ownership("Service", someone, OWNER).state == "foreign"


def test_a_foreign_child_is_named_never_applied() -> None:
    spec = VestigeMemorySpec()
    cached = live(spec)
    cached["NetworkPolicy"] = [{"kind": "NetworkPolicy", "metadata": {"name": "a", "uid": "theirs"}}]
    plan = p.plan(OWNER, spec, IMAGES, "h", cached, pvc=cached["PersistentVolumeClaim"][0])
    [foreign] = plan.foreign()
    assert (foreign.kind, foreign.name) == ("NetworkPolicy", "a")
    assert "NetworkPolicy" not in kinds(plan, p.Apply) + kinds(plan, p.Create)


def test_ingress_host_conflict_drops_the_ingress() -> None:
    spec = VestigeMemorySpec.model_validate({"ingress": {"enabled": True, "host": "m.example.com"}})
    holder = IngressClaim("m.example.com", "/", "other", "x", "2020-01-01T00:00:00Z")
    plan = p.plan(OWNER, spec, IMAGES, "h", {}, pvc=None, ingress_holder=holder)
    assert "Ingress" not in kinds(plan, p.Create)
    assert plan.ingress_conflict is not None and "other/x" in plan.ingress_conflict
    assert "Ingress" in kinds(p.plan(OWNER, spec, IMAGES, "h", {}, pvc=None), p.Create)


def test_a_claim_of_another_agent_drops_claim_and_deployment_and_scales_a_running_one_to_zero() -> None:
    spec = VestigeMemorySpec()
    theirs = render_pvc(Owner("a", "team", "uid-old"), VestigeMemorySpec(agent_id="other"))
    plan = p.plan(OWNER, spec, IMAGES, "h", {}, pvc=theirs)
    assert not plan.volume.mountable and plan.volume.problem is not None
    assert "Deployment" not in kinds(plan, p.Create) + kinds(plan, p.Apply)
    assert "PersistentVolumeClaim" not in kinds(plan, p.Create) + kinds(plan, p.Apply)
    running = live(spec)
    plan = p.plan(OWNER, spec, IMAGES, "h", running, pvc=theirs)
    [scale] = [a for a in plan.actions if isinstance(a, p.Apply) and a.kind == "Deployment"]
    assert scale.manifest["spec"]["replicas"] == 0


def test_an_unreadable_claim_writes_neither_claim_nor_deployment() -> None:
    plan = p.plan(OWNER, VestigeMemorySpec(), IMAGES, "h", {}, pvc=None, pvc_readable=False)
    assert not {"PersistentVolumeClaim", "Deployment"} & set(kinds(plan, p.Create))


def test_suspend_renders_zero_replicas() -> None:
    spec = VestigeMemorySpec(suspend=True)
    [dep] = [a for a in p.plan(OWNER, spec, IMAGES, "h", {}, pvc=None).actions if a.kind == "Deployment"]
    assert isinstance(dep, p.Create) and dep.manifest["spec"]["replicas"] == 0


def test_a_claim_keeps_a_request_it_cannot_shrink_to() -> None:
    spec = VestigeMemorySpec.model_validate({"storage": {"size": "1Gi"}})
    pvc = render_pvc(OWNER, spec)
    pvc["spec"]["resources"]["requests"]["storage"] = "2Gi"
    pvc["status"] = {"capacity": {"storage": "1Gi"}}
    [claim] = [
        a for a in p.plan(OWNER, spec, IMAGES, "h", {}, pvc=pvc).actions if a.kind == "PersistentVolumeClaim"
    ]
    manifest = claim.manifest if isinstance(claim, p.Apply) else None
    assert manifest is not None and manifest["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_switched_off_children_are_deleted_only_when_owned() -> None:
    on = VestigeMemorySpec()
    cached = live(on)
    cached["NetworkPolicy"].append({"kind": "NetworkPolicy", "metadata": {"name": "lookalike", "uid": "x"}})
    off = VestigeMemorySpec.model_validate({"networkPolicy": {"enabled": False}})
    plan = p.plan(OWNER, off, IMAGES, "h", cached, pvc=cached["PersistentVolumeClaim"][0])
    assert [(a.kind, a.name) for a in plan.actions if isinstance(a, p.Delete)] == [("NetworkPolicy", "a")]


def test_a_restore_from_another_namespace_never_starts_the_pod() -> None:
    s3 = {"s3": {"bucket": "bkt", "credentialsSecret": {"name": "creds"}}}

    def spec(source: str) -> VestigeMemorySpec:
        return VestigeMemorySpec.model_validate(
            {"restore": {"fromBackup": {"destination": s3, "source": source, "latest": True}}}
        )

    refused = p.plan(OWNER, spec("victims/their-agent"), IMAGES, "h", {}, pvc=None)
    assert refused.restore_refused is not None and "another namespace" in refused.restore_refused
    assert "Deployment" not in kinds(refused, p.Create)
    allowed = p.plan(OWNER, spec("team/old-agent"), IMAGES, "h", {}, pvc=None)
    assert allowed.restore_refused is None and "Deployment" in kinds(allowed, p.Create)
    grant = VestigeBackupGrantSpec.model_validate(
        {"from": [{"namespace": OWNER.namespace}], "to": [{"agentId": "their-agent"}]}
    )
    granted = p.plan(OWNER, spec("victims/their-agent"), IMAGES, "h", {}, pvc=None, restore_grants=[grant])
    assert granted.restore_refused is None and "Deployment" in kinds(granted, p.Create)
    init = next(a.manifest for a in granted.actions if isinstance(a, p.Create) and a.kind == "Deployment")
    args = init["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[args.index("--expect-namespace") + 1] == "victims"


def _deployment(spec: VestigeMemorySpec, images: Images, auth_hash: str = "h") -> dict:
    return next(m for m in render_children(OWNER, spec, images, auth_hash).apply if m["kind"] == "Deployment")


def test_only_a_change_of_the_operators_default_images_is_a_paced_fleet_rollout() -> None:
    spec = VestigeMemorySpec()
    new = Images(vestige=IMAGES.vestige, bridge="example.org/bridge:2", litestream=IMAGES.litestream)
    running = _deployment(spec, IMAGES)
    assert p.fleet_only(OWNER, spec, new, "h", _deployment(spec, new), running)
    assert not p.fleet_only(OWNER, spec, IMAGES, "h", _deployment(spec, IMAGES), running)  # nothing new
    # The agent's own change (spec or token) at the same time: applied at once, never paced.
    own = VestigeMemorySpec.model_validate({"vestige": {"env": [{"name": "RUST_LOG", "value": "debug"}]}})
    assert not p.fleet_only(OWNER, own, new, "h", _deployment(own, new), running)
    assert not p.fleet_only(OWNER, spec, new, "rotated", _deployment(spec, new, "rotated"), running)
    # An agent that pins its own images does not restart for new defaults: nothing to pace.
    pinned = VestigeMemorySpec.model_validate(
        {"vestige": {"image": "example.org/vestige:3.1"}, "bridge": {"image": "example.org/bridge:1"}}
    )
    assert not p.fleet_only(OWNER, pinned, new, "h", _deployment(pinned, new), _deployment(pinned, IMAGES))
    # A Deployment from before the annotation existed: not known to be fleet-only.
    legacy = {**running, "metadata": {**running["metadata"], "annotations": {}}}
    assert not p.fleet_only(OWNER, spec, new, "h", _deployment(spec, new), legacy)
    # In the plan: the Deployment's apply is marked paced.
    cached = {"Deployment": [{**running, "metadata": {**running["metadata"], "ownerReferences": [
        {"kind": "VestigeMemory", "name": OWNER.name, "uid": OWNER.uid, "controller": True}]}}]}  # fmt: skip
    applies = [a for a in p.plan(OWNER, spec, new, "h", cached, pvc=None).actions if isinstance(a, p.Apply)]
    assert [(a.kind, a.paced) for a in applies if a.kind == "Deployment"] == [("Deployment", True)]
