"""What one reconcile pass writes, and why: a pure function of the owner, its spec and what the
pass observed. The pass (reconcile.py) only carries the plan out.

Every rule that decides a write lives here:

* **ownership**, for every child kind (``ownership``): a child is this VestigeMemory's when it
  carries a *controller* owner reference with this resource's uid; a data claim (which a
  ``Retain`` policy leaves without owner reference) when it records this resource's agent id,
  or records none and provably served this resource (``volume_check``). An object with a
  child's name that is not this resource's is never applied over, adopted or deleted: the plan
  says so (``Foreign``: kind, name, why) and the resource stalls with that reason. An object
  owned by an earlier VestigeMemory of the same name (another uid) is waited for: the garbage
  collector removes it (``Wait``).
* a child absent from the (label-filtered) watch cache is **created**, never applied: a create
  fails when anything holds the name, an apply would take it over. The pass reads what holds
  it and asks ``decide`` again;
* **drift** (``apply_reason``): an owned child is applied only when its rendering changed or
  the live object no longer contains it;
* the **overrides**: no Ingress while another resource routes its host (``ingress_conflict``);
  no claim and no Deployment while the claim belongs to another agent, and an already running
  Deployment of this resource is scaled to zero; a claim request that Kubernetes forbids to
  shrink is kept (``keep_unshrinkable_request``);
* **optional children switched off** are deleted only when this resource owns them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vestige_operator import KIND
from vestige_operator.api import VestigeBackupGrantSpec, VestigeMemorySpec, parse_quantity
from vestige_operator.backup import restore_problem
from vestige_operator.children import (
    IngressClaim,
    mounts_claim,
    render_children,
    volume_agent_id,
    with_applied_hash,
)
from vestige_operator.vocabulary import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_DEFAULT_IMAGES,
    Images,
    Owner,
    pvc_name,
)

Obj = Mapping[str, Any]
Manifest = dict[str, Any]

#: Stalled reason of a child name held by an object this resource did not create.
REASON_NOT_OWNED = "ChildNotOwned"

# -- drift ----------------------------------------------------------------------------------------

#: Quantities the API server may re-serialize (``0.5Gi`` -> ``512Mi``): compared by value.
_QUANTITY_PARENTS = frozenset({"requests", "limits", "capacity"})


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, TypeError):
        return False


#: Lists that Kubernetes merges by key (``x-kubernetes-list-type: map``) and the key of their
#: entries. Another field manager's entry in such a list (``kubectl set env``, a sidecar injector)
#: survives every server-side apply of the operator, so it must not count as drift.
_KEYED_LISTS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "containers": lambda e: e.get("name"),
    "initContainers": lambda e: e.get("name"),
    "env": lambda e: e.get("name"),
    "volumes": lambda e: e.get("name"),
    "volumeMounts": lambda e: e.get("mountPath"),
    "imagePullSecrets": lambda e: e.get("name"),
    # container ports (containerPort, protocol) and Service ports (port, protocol)
    "ports": lambda e: (e.get("containerPort", e.get("port")), e.get("protocol") or "TCP"),
}


def _keyed_difference(
    desired: list[Any], observed: list[Any], path: str, key: Callable[[Mapping[str, Any]], Any]
) -> str | None:
    """Every desired entry must be present (by key) and match; extra observed entries are other
    managers' and ignored. Order is not compared (server-side apply keeps other entries in place)."""
    by_key: dict[Any, Any] = {}
    for entry in observed:
        if isinstance(entry, Mapping):
            by_key.setdefault(key(entry), entry)
    for i, d in enumerate(desired):
        k = key(d)
        if k not in by_key:
            return f"{path}/{i}"
        diff = first_difference(d, by_key[k], f"{path}/{i}")
        if diff is not None:
            return diff
    return None


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """Where ``observed`` fails to contain ``desired`` (None when it does).

    Maps: every desired key must match (extra observed keys are server defaults or other
    managers' fields); keyed lists (containers, env, volumes, volumeMounts, ports: see
    ``_KEYED_LISTS``): every desired entry by its key, other entries ignored; other lists: same
    length, element-wise; empty desired values match absent ones (the API server drops them).
    Quantities under requests/limits compare by value.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return path or "/"
        for key, value in desired.items():
            if key not in observed:
                if _empty(value):
                    continue
                return f"{path}/{key}"
            diff = first_difference(value, observed[key], f"{path}/{key}")
            if diff is not None:
                return diff
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return path
        key = _KEYED_LISTS.get(path.rsplit("/", 1)[-1])
        if key is not None and all(isinstance(d, Mapping) for d in desired):
            return _keyed_difference(desired, observed, path, key)
        if len(desired) != len(observed):
            return path
        for i, (d, o) in enumerate(zip(desired, observed, strict=True)):
            diff = first_difference(d, o, f"{path}/{i}")
            if diff is not None:
                return diff
        return None
    if desired == observed:
        return None
    parts = path.split("/")
    if len(parts) >= 2 and parts[-2] in _QUANTITY_PARENTS and _same_quantity(desired, observed):
        return None
    return path


def apply_reason(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> str | None:
    """Why ``desired`` must be applied over ``observed`` (None: nothing to do)."""
    if observed is None:
        return "absent"
    want = desired["metadata"].get("annotations", {}).get(ANNOTATION_APPLIED_HASH)
    have = (observed.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_APPLIED_HASH)
    if want != have:
        return "rendering changed"
    diff = first_difference(desired, observed)
    return None if diff is None else f"drift at {diff}"


# -- ownership ------------------------------------------------------------------------------------


def _meta(obj: Obj | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def owned_by(obj: Obj, uid: str) -> bool:
    """Whether ``obj`` has an owner reference to ``uid`` (controller or not)."""
    return any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences") or [])


def _controller(obj: Obj) -> Mapping[str, Any] | None:
    return next((r for r in _meta(obj).get("ownerReferences") or [] if r.get("controller")), None)


@dataclass(frozen=True, slots=True)
class VolumeCheck:
    """Whether the data claim may be applied and mounted for this resource's agent.

    ``problem`` is (reason, message) when it may not: it records another agent's id, or none at
    all and nothing shows that it was this resource's. ``mountable`` False without a problem: the
    claim could not be read this time (transient, retried).
    """

    mountable: bool
    problem: tuple[str, str] | None = None


def volume_check(owner: Owner, agent_id: str, pvc: Obj | None, deployment: Obj | None) -> VolumeCheck:
    """May the claim ``pvc`` (None: absent, it will be created and stamped) serve ``agent_id``?

    A claim that records no agent id (created before claims recorded one) is adopted, and stamped
    by the next apply, only when it is provably this resource's: it carries this resource's owner
    reference (reclaimPolicy Delete), or this resource's own Deployment already mounts it (it
    served this resource, whose agent id is immutable). Otherwise it is a retained claim of a
    deleted resource of the same name, whose agent cannot be known: it is not mounted.
    """
    if pvc is None:
        return VolumeCheck(True)
    claim = pvc_name(owner.name)
    recorded = volume_agent_id(pvc)
    if recorded == agent_id:
        return VolumeCheck(True)
    if recorded is not None:
        return VolumeCheck(
            False,
            (
                "VolumeOwnedByOtherAgent",
                f"PersistentVolumeClaim {claim} holds the memory of agent {recorded!r}, not {agent_id!r}: "
                "it is not mounted. Use another name for this VestigeMemory, or set spec.agentId "
                f"to {recorded!r} if this resource is that agent",
            ),
        )
    if owned_by(pvc, owner.uid) or (
        deployment is not None and owned_by(deployment, owner.uid) and mounts_claim(deployment, claim)
    ):
        return VolumeCheck(True)
    return VolumeCheck(
        False,
        (
            "VolumeOwnerUnknown",
            f"PersistentVolumeClaim {claim} records no agent id (created before claims recorded "
            "one, or not by the operator), so whose memory it holds is unknown: it is not mounted. "
            "If it is agent "
            f"{agent_id!r}'s, record that: kubectl annotate pvc {claim} vestige.dev/agent-id={agent_id}",
        ),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whose an object holding a child's name is: ``owned`` (this resource's: may be applied
    over or deleted), ``absent``, ``stale`` (an earlier VestigeMemory of this name owns it: the
    garbage collector removes it), or ``foreign`` with (reason, message) for Stalled."""

    state: str  # "absent" | "owned" | "stale" | "foreign"
    reason: str = ""
    message: str = ""


def ownership(
    kind: str, obj: Obj | None, owner: Owner, volume: VolumeCheck | None = None, owner_kind: str = KIND
) -> Verdict:
    """The one ownership rule, for every object the operator writes or deletes on behalf of a
    resource: the memory's children, and the Jobs and VestigeBackups of its backups (``owner`` is
    then the VestigeBackup or VestigeMemory the object is for, ``owner_kind`` its kind). An object
    is this owner's when its controller owner reference names the owner's uid; the data claim's
    rule is ``volume`` when given (a retained claim records its agent)."""
    if obj is None:
        return Verdict("absent")
    name = _meta(obj).get("name", "")
    if kind == "PersistentVolumeClaim" and volume is not None:
        if volume.problem is not None:
            return Verdict("foreign", *volume.problem)
        return Verdict("owned")
    ref = _controller(obj)
    if ref is not None and ref.get("uid") == owner.uid:
        return Verdict("owned")
    if ref is not None and ref.get("kind") == owner_kind and ref.get("name") == owner.name:
        return Verdict(
            "stale",
            "PreviousOwner",
            f"{kind} {name} belongs to an earlier {owner_kind} {owner.name} (uid {ref.get('uid')}): "
            "waiting for the garbage collector to delete it",
        )
    return Verdict(
        "foreign",
        REASON_NOT_OWNED,
        f"{kind} {name} exists and is not owned by this {owner_kind} (it was not created by the "
        "operator for it), so the operator does not modify, adopt or delete it: delete or rename "
        f"that {kind}, or give this {owner_kind} another name",
    )


# -- overrides ------------------------------------------------------------------------------------


def _storage_of(obj: Obj | None, *path: str) -> Any:
    node: Any = obj or {}
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def keep_unshrinkable_request(manifest: Manifest, current: Obj | None) -> Manifest:
    """The claim manifest, keeping the claim's current request where Kubernetes forbids the smaller one.

    After an expansion that did not happen, ``storage.size`` may go back down to the capacity
    (CEL), but a claim's request may only go back down to *above* its capacity (the API server:
    "can not be less than status.capacity"). Then the claim keeps the request it has: the volume
    has the size the spec asks for, and status says so (StorageReady ``ExpansionCancelled``).
    """
    want = _storage_of(manifest, "spec", "resources", "requests", "storage")
    have = _storage_of(current, "spec", "resources", "requests", "storage")
    capacity = _storage_of(current, "status", "capacity", "storage")
    if want is None or have is None or capacity is None:
        return manifest
    try:
        if not parse_quantity(want) <= parse_quantity(capacity) < parse_quantity(have):
            return manifest
    except ValueError:
        return manifest
    spec = {**manifest["spec"], "resources": {**manifest["spec"]["resources"], "requests": {"storage": have}}}
    return with_applied_hash({**manifest, "spec": spec})


def ingress_conflict(owner: Owner, spec: VestigeMemorySpec, holder: IngressClaim | None) -> str | None:
    """Why this resource may not route its Ingress (``holder`` routes the host first)."""
    if holder is None or not spec.ingress.enabled:
        return None
    return (
        f"host {spec.ingress.host} is already routed by VestigeMemory "
        f"{holder.namespace}/{holder.name} (created first); the Ingress is not applied"
    )


# -- the plan -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keep:
    """An owned child that matches its rendering: nothing to send."""

    kind: str
    observed: Obj


@dataclass(frozen=True, slots=True)
class Create:
    """A child absent from the cache: create it (never apply: the name may be held)."""

    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


@dataclass(frozen=True, slots=True)
class Apply:
    """An owned child that differs from its rendering: server-side apply it. ``paced``: it would
    restart the agent only because the operator's default images changed (a fleet rollout, which
    the reconciler spreads out; see rollouts.py)."""

    manifest: Manifest
    why: str
    observed: Obj
    paced: bool = False

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])


@dataclass(frozen=True, slots=True)
class Delete:
    """An owned child of an optional kind that was switched off."""

    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Foreign:
    """A child's name held by an object this resource did not create: left alone; Stalled."""

    kind: str
    name: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Wait:
    """A child's name held by an earlier VestigeMemory's object: retried until it is gone."""

    kind: str
    name: str
    message: str


Action = Keep | Create | Apply | Delete | Foreign | Wait


def decide(manifest: Manifest, obj: Obj | None, owner: Owner, volume: VolumeCheck | None = None) -> Action:
    """What to do about one rendered child, given the object holding its name (None: none seen)."""
    kind = str(manifest["kind"])
    name = str(manifest["metadata"]["name"])
    verdict = ownership(kind, obj, owner, volume)
    if verdict.state == "absent" or obj is None:
        return Create(manifest)
    if verdict.state == "foreign":
        return Foreign(kind, name, verdict.reason, verdict.message)
    if verdict.state == "stale":
        return Wait(kind, name, verdict.message)
    why = apply_reason(manifest, obj)
    return Keep(kind, obj) if why is None else Apply(manifest, why, obj)


def fleet_only(
    owner: Owner,
    spec: VestigeMemorySpec,
    images: Images,
    auth_hash: str | None,
    desired: Manifest,
    observed: Obj,
) -> bool:
    """Whether applying ``desired`` over the agent's Deployment ``observed`` restarts the agent only
    because the operator-wide default images changed: rendered with the defaults ``observed``
    records, the agent's own inputs (spec, token) give exactly ``observed``, and the new pod
    template differs. Any change of the agent's own is never held behind the fleet."""
    annotations = _meta(observed).get("annotations") or {}
    recorded = Images.decode(annotations.get(ANNOTATION_DEFAULT_IMAGES))
    if recorded is None or recorded == images or auth_hash is None:
        return False
    before = next(
        m for m in render_children(owner, spec, recorded, auth_hash).apply if m["kind"] == "Deployment"
    )
    if (before["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED_HASH) != annotations.get(
        ANNOTATION_APPLIED_HASH
    ):
        return False
    return bool(before["spec"]["template"] != desired["spec"]["template"])


@dataclass(frozen=True, slots=True)
class Plan:
    """Every child decision of one pass, in apply order, and the overrides that shaped them."""

    actions: tuple[Action, ...]
    volume: VolumeCheck
    ingress_conflict: str | None = None
    #: Kinds rendered but held back (not written this pass) and why, for the log.
    held_back: tuple[str, ...] = field(default=())
    #: Why spec.restore may not run (the agent's pod is then never created, so no volume is filled).
    restore_refused: str | None = None

    def foreign(self) -> list[Foreign]:
        return [a for a in self.actions if isinstance(a, Foreign)]


def _named(objs: Iterable[Obj], name: str) -> Obj | None:
    return next((o for o in objs if _meta(o).get("name") == name), None)


def plan(
    owner: Owner,
    spec: VestigeMemorySpec,
    images: Images,
    auth_hash: str | None,
    cached: Mapping[str, Sequence[Obj]],
    *,
    pvc: Obj | None,
    pvc_readable: bool = True,
    ingress_holder: IngressClaim | None = None,
    restore_grants: Sequence[VestigeBackupGrantSpec] = (),
    operator_peer: Obj | None = None,
) -> Plan:
    """The writes of one pass.

    ``cached`` holds the watch cache's objects of this resource by kind; ``pvc`` the object
    holding the claim's name (from the cache, or read: a claim without the operator's labels is
    not cached); ``auth_hash`` the internal token's hash (None: unavailable, no Deployment);
    ``ingress_holder`` the earlier resource routing this one's Ingress host, if any;
    ``pvc_readable`` False: the claim's name could not be read (no claim and no Deployment are
    written this pass); ``restore_grants`` the VestigeBackupGrants of the restore source's
    namespace; ``operator_peer`` the operator pods' NetworkPolicy peer (children.operator_peer).
    """
    deployment = _named(cached.get("Deployment", ()), owner.name)
    if pvc_readable:
        volume = volume_check(owner, spec.effective_agent_id(owner.name), pvc, deployment)
    else:
        volume = VolumeCheck(False)
    conflict = ingress_conflict(owner, spec, ingress_holder)
    desired = render_children(owner, spec, images, auth_hash, operator_peer)
    held: list[str] = []
    manifests = list(desired.apply)
    if conflict is not None:  # never route a URL another resource already routes
        manifests = [m for m in manifests if m["kind"] != "Ingress"]
        held.append("Ingress")
    deployment_mine = deployment is not None and ownership("Deployment", deployment, owner).state == "owned"
    # Checked until the pod first exists: a restore fills the new volume before Vestige first starts.
    restore_refused = restore_problem(owner, spec, restore_grants) if deployment is None else None
    if restore_refused is not None:  # never carry another tenant's snapshot into this volume
        manifests = [m for m in manifests if m["kind"] != "Deployment"]
        held.append("Deployment")
    if not volume.mountable:  # never mount one agent's memory for another
        manifests = [m for m in manifests if m["kind"] != "Deployment"]
        held.append("Deployment")
        if volume.problem is not None and deployment_mine and auth_hash is not None:
            # This resource's pod already runs on a claim now recorded for another agent
            # (someone re-stamped it): scale it to zero rather than keep it mounted.
            suspended = spec.model_copy(update={"suspend": True})
            manifests += [
                m
                for m in render_children(owner, suspended, images, auth_hash).apply
                if m["kind"] == "Deployment"
            ]
    actions: list[Action] = []
    for manifest in manifests:
        kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        if kind == "PersistentVolumeClaim":
            if not pvc_readable:
                held.append(kind)
                continue
            manifest = keep_unshrinkable_request(manifest, pvc)
            actions.append(decide(manifest, pvc, owner, volume))
            continue
        action = decide(manifest, _named(cached.get(kind, ()), name), owner)
        if (
            isinstance(action, Apply)
            and kind == "Deployment"
            and volume.mountable
            and fleet_only(owner, spec, images, auth_hash, manifest, action.observed)
        ):
            action = Apply(
                action.manifest, f"{action.why} (new operator default images)", action.observed, True
            )
        actions.append(action)
    for kind in desired.remove_kinds:
        for obj in cached.get(kind, ()):
            meta = _meta(obj)
            if ownership(kind, obj, owner).state == "owned" and meta.get("uid"):
                actions.append(Delete(kind, str(meta["name"]), str(meta["uid"])))
    return Plan(tuple(actions), volume, conflict, tuple(held), restore_refused)
