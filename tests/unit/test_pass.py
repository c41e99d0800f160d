"""The reconcile pass in-process against the in-memory API port (tests/unit/fake_port.py).

The caches are built from the fake's objects the way kopf's indexes are: owners by name,
children only when they carry ``app.kubernetes.io/managed-by=vestige-operator`` (a foreign
object of a child's name is invisible to them, as on a real cluster).
"""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vestige_operator import tokens
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.caches import CREATED_FIELDS, pack_child, trim, trim_owner
from vestige_operator.children import IngressClaim, render_pvc
from vestige_operator.config import OperatorConfig
from vestige_operator.reconcile import CHILD_KINDS, Reconciler
from vestige_operator.vocabulary import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, Images, Owner
from vestige_operator.workqueue import RetryLater

from tests.unit.fake_port import FakePort

NS = "team"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class World:
    """One fake API server, one reconciler, a test clock and predictable tokens."""

    def __init__(self, hosts: dict[str, list[IngressClaim]] | None = None, **settings: Any) -> None:
        self.port = FakePort()
        self.now = T0
        counter = itertools.count(1)
        self.rec = Reconciler(
            self.port,
            OperatorConfig(namespaces=(NS,), **settings),
            clock=lambda: self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            now=lambda: self.now,
            new_token=lambda: f"token-{next(counter):04d}-0123456789abcdef",
        )
        self.hosts = hosts or {}
        #: namespace -> VestigeBackupGrant specs (the grant watch's cache)
        self.grants: dict[str, list[dict[str, Any]]] = {}

    def memory(self, name: str, spec: dict[str, Any] | None = None, **annotations: str) -> dict[str, Any]:
        existing = self.port.objects.get(("VestigeMemory", NS, name))
        if existing is not None:
            existing["spec"] = spec if spec is not None else existing["spec"]
            existing["metadata"]["annotations"] = annotations
            existing["metadata"]["generation"] += 1
            return existing
        return self.port.put(
            {
                "apiVersion": "vestige.dev/v1alpha1",
                "kind": "VestigeMemory",
                "metadata": {"name": name, "namespace": NS, "generation": 1, "annotations": annotations},
                "spec": spec or {},
            }
        )

    def attach(self) -> None:
        owners: dict[Any, list[Any]] = {}
        children: dict[str, dict[Any, list[Any]]] = {kind: {} for kind in CHILD_KINDS}
        for (kind, ns, name), obj in self.port.objects.items():
            labels = obj["metadata"].get("labels") or {}
            if kind == "VestigeMemory":
                owners[(ns, name)] = [trim_owner(obj)]
            elif kind in children and labels.get(LABEL_MANAGED_BY) == MANAGED_BY and LABEL_INSTANCE in labels:
                children[kind].setdefault((ns, labels[LABEL_INSTANCE]), []).append(pack_child(obj))
        self.rec.attach(owners, children, self.hosts, grants=self.grants)

    async def run(self, name: str) -> float | None:
        self.attach()
        return await self.rec.reconcile(NS, name)

    async def settle(self, name: str, passes: int = 3) -> float | None:
        after = None
        for _ in range(passes):
            after = await self.run(name)
        return after

    def status(self, name: str) -> dict[str, Any]:
        return self.port.objects[("VestigeMemory", NS, name)].get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), None)

    def secret_value(self, name: str, key: str) -> str | None:
        data = (self.port.objects[("Secret", NS, name)].get("data")) or {}
        return base64.b64decode(data[key]).decode() if key in data else None

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.port.events]


# -- create, no-op -------------------------------------------------------------------------------


async def test_first_pass_creates_the_token_and_every_child_then_a_settled_pass_sends_nothing() -> None:
    w = World()
    w.memory("a")
    await w.run("a")
    assert w.secret_value("a-auth", "token") and w.secret_value("a-auth", "vestige-token")
    for kind, name in [
        ("PersistentVolumeClaim", "a-data"),
        ("Deployment", "a"),
        ("Service", "a"),
        ("NetworkPolicy", "a"),
    ]:
        obj = w.port.find(kind, NS, name)
        assert obj is not None, kind
        assert ("create", kind, name) in w.port.writes, "absent children are created, never applied"
    await w.settle("a")
    writes, requests = list(w.port.writes), sum(w.port.requests.values())
    assert await w.run("a") is None
    assert w.port.writes == writes
    assert sum(w.port.requests.values()) == requests, "a settled pass sends no request at all"


async def test_a_new_resource_costs_one_status_write_until_its_children_change() -> None:
    """The pass that creates the children writes the status; the passes their watch events
    bring (children now cached, unchanged) write none: a creation adds no note that the next
    pass would have to remove (one status write per new resource less)."""
    w = World()
    w.memory("a")
    await w.run("a")
    status_writes = [x for x in w.port.writes if x[0] == "patch_status"]
    assert len(status_writes) == 1
    assert w.status("a")["phase"] == "Pending"
    reconciling = w.condition("a", "Reconciling")
    assert reconciling is not None and reconciling["status"] == "True"
    assert reconciling["reason"] == "WaitingForStorage"
    await w.settle("a")
    assert [x for x in w.port.writes if x[0] == "patch_status"] == status_writes


async def test_a_written_status_is_held_only_until_the_cache_shows_it() -> None:
    """The reconciler keeps the status it wrote (the watch event may come after the next pass)
    only until its cache holds that very version: no second copy of every status at rest."""
    w = World()
    w.memory("a")
    await w.run("a")  # its cache was taken before the pass wrote the status
    assert set(w.rec._written) == {w.port.objects[("VestigeMemory", NS, "a")]["metadata"]["uid"]}
    assert w.rec.phases() == {"Pending": 1}
    await w.run("a")  # the cache now shows the written version
    assert w.rec._written == {}
    assert w.rec.phases() == {"Pending": 1}


async def test_created_fields_are_handed_to_apply_at_the_first_change_only() -> None:
    """A create records its fields under an Update entry; handing them to Apply costs a write
    per child, so it is done only before the first apply that changes the child (never for a
    child that does not change), and no apply is ever sent over an unhanded create."""
    w = World()
    w.memory("a", {"vestige": {"env": [{"name": "RUST_LOG", "value": "debug"}]}})
    await w.settle("a")
    assert not [v for v, _, _ in w.port.writes if v == "hand over"], "nothing changed: nothing handed over"
    created = w.port.find("Deployment", NS, "a")
    assert created is not None and trim(created).get(CREATED_FIELDS)

    w.memory("a", {"vestige": {"env": []}})
    await w.settle("a")
    assert ("hand over", "Deployment", "a") in w.port.writes
    first = w.port.writes.index(("hand over", "Deployment", "a"))
    assert ("apply", "Deployment", "a") in w.port.writes[first + 1 :], "handed over, then applied"
    assert w.port.applied_over_create == []
    deployment = w.port.find("Deployment", NS, "a")
    assert deployment is not None and not trim(deployment).get(CREATED_FIELDS)
    assert [m["operation"] for m in deployment["metadata"]["managedFields"]] == ["Apply"]

    handed = w.port.writes.count(("hand over", "Deployment", "a"))
    w.memory("a", {"vestige": {"env": [{"name": "RUST_LOG", "value": "info"}]}})
    await w.settle("a")
    assert w.port.writes.count(("hand over", "Deployment", "a")) == handed, "handed over once"
    assert w.port.applied_over_create == []


# -- rotation ------------------------------------------------------------------------------------


async def test_rotation_keeps_the_previous_token_until_the_grace_ends_then_drops_it() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    old = w.secret_value("a-auth", "token")
    internal = w.secret_value("a-auth", "vestige-token")
    w.memory("a", **{tokens.ANNOTATION_ROTATE: "r1", tokens.ANNOTATION_ROTATE_GRACE: "5m"})
    after = await w.run("a")
    assert w.secret_value("a-auth", "token") != old
    assert w.secret_value("a-auth", "token-previous") == old
    assert w.secret_value("a-auth", "vestige-token") == internal
    assert w.reasons().count("TokenRotated") == 1
    assert after is not None and 300 <= after <= 301, "asks for a pass when the grace ends"
    await w.settle("a")  # the same request id never rotates twice
    assert w.reasons().count("TokenRotated") == 1
    w.now += timedelta(seconds=after)
    assert await w.run("a") is None
    assert w.secret_value("a-auth", "token-previous") is None
    assert (
        tokens.ANNOTATION_PREVIOUS_EXPIRES
        not in w.port.objects[("Secret", NS, "a-auth")]["metadata"]["annotations"]
    )


async def test_grace_zero_revokes_the_old_token_at_once() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    old = w.secret_value("a-auth", "token")
    w.memory("a", **{tokens.ANNOTATION_ROTATE: "leak", tokens.ANNOTATION_ROTATE_GRACE: "0"})
    assert await w.run("a") is None, "nothing left to expire"
    secret = w.port.objects[("Secret", NS, "a-auth")]
    assert w.secret_value("a-auth", "token") != old
    assert old not in {w.secret_value("a-auth", k) for k in secret["data"]}
    assert "token-previous" not in secret["data"]
    assert w.reasons() == ["TokenRotated"]


@pytest.mark.parametrize("grace", ["soon", "200h", "-5m", "9999999999999999999h"])
async def test_a_bad_grace_is_refused_with_a_condition_and_one_event_never_a_default(grace: str) -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    old = w.secret_value("a-auth", "token")
    w.memory("a", **{tokens.ANNOTATION_ROTATE: "r1", tokens.ANNOTATION_ROTATE_GRACE: grace})
    await w.settle("a")
    assert w.secret_value("a-auth", "token") == old, "not rotated with a silent default"
    cond = w.condition("a", "RotationRefused")
    assert cond is not None and cond["status"] == "True" and cond["reason"] == "InvalidRotationGrace"
    assert tokens.ANNOTATION_ROTATE_GRACE in cond["message"]
    assert w.reasons() == ["InvalidRotationGrace"]
    # fixed: carried out, the condition goes
    w.memory("a", **{tokens.ANNOTATION_ROTATE: "r1", tokens.ANNOTATION_ROTATE_GRACE: "1m"})
    await w.settle("a")
    assert w.secret_value("a-auth", "token") != old
    assert w.condition("a", "RotationRefused") is None


async def test_rotation_with_an_existing_secret_is_refused_once_and_writes_nothing() -> None:
    w = World()
    w.port.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mine", "namespace": NS},
            "data": {"bearer": base64.b64encode(b"users-own-0123456789").decode()},
        }
    )
    w.memory("a", {"auth": {"existingSecret": {"name": "mine", "key": "bearer"}}})
    await w.settle("a")
    before = w.port.find("Secret", NS, "mine")
    w.memory(
        "a",
        {"auth": {"existingSecret": {"name": "mine", "key": "bearer"}}},
        **{tokens.ANNOTATION_ROTATE: "x"},
    )
    await w.settle("a")
    assert w.port.find("Secret", NS, "mine") == before
    assert w.reasons().count("RotationNotApplicable") == 1
    assert w.port.find("Secret", NS, "a-auth") is None


# -- overrides -----------------------------------------------------------------------------------


async def test_a_claim_of_another_agent_is_never_mounted() -> None:
    w = World()
    theirs = render_pvc(Owner("a", NS, "uid-old"), VestigeMemorySpec(agent_id="someone-else"))
    theirs["metadata"].pop("ownerReferences", None)
    stored = w.port.put(theirs)
    w.memory("a")
    await w.settle("a")
    assert w.port.find("Deployment", NS, "a") is None
    assert w.port.find("PersistentVolumeClaim", NS, "a-data") == stored
    stalled = w.condition("a", "Stalled")
    assert stalled is not None and stalled["reason"] == "VolumeOwnedByOtherAgent"


async def test_a_running_deployment_on_a_restamped_claim_is_scaled_to_zero() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    pvc = w.port.objects[("PersistentVolumeClaim", NS, "a-data")]
    pvc["metadata"]["annotations"]["vestige.dev/agent-id"] = "intruder"
    pvc["metadata"]["labels"]["vestige.dev/agent-id"] = "intruder"
    await w.settle("a")
    assert w.port.objects[("Deployment", NS, "a")]["spec"]["replicas"] == 0


async def test_an_ingress_host_routed_first_by_another_resource_is_not_applied() -> None:
    spec = {"ingress": {"enabled": True, "host": "m.example.com"}}
    first = IngressClaim("m.example.com", "/", "other", "x", "2020-01-01T00:00:00Z")
    mine = IngressClaim("m.example.com", "/", NS, "a", "2026-01-01T00:00:00Z")
    w = World(hosts={"m.example.com": [first, mine]})
    w.memory("a", spec)
    await w.settle("a")
    assert w.port.find("Ingress", NS, "a") is None
    stalled = w.condition("a", "Stalled")
    assert stalled is not None and stalled["reason"] == "IngressHostConflict"
    assert "url" not in w.status("a")


async def test_suspend_scales_the_deployment_to_zero() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    w.memory("a", {"suspend": True})
    await w.settle("a")
    assert w.port.objects[("Deployment", NS, "a")]["spec"]["replicas"] == 0
    assert w.status("a")["phase"] == "Suspended"


async def test_an_optional_child_switched_off_is_deleted_only_when_owned() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    lookalike = w.port.put(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "lookalike",
                "namespace": NS,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: "a"},
            },
            "spec": {"podSelector": {}},
        }
    )
    w.memory("a", {"networkPolicy": {"enabled": False}})
    await w.settle("a")
    assert w.port.find("NetworkPolicy", NS, "a") is None
    assert w.port.find("NetworkPolicy", NS, "lookalike") == lookalike


# -- ownership, every kind -----------------------------------------------------------------------

FOREIGN = {
    "Deployment": ("apps/v1", "a", {"replicas": 3, "selector": {"matchLabels": {"app": "theirs"}}}),
    "Service": ("v1", "a", {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}),
    "NetworkPolicy": ("networking.k8s.io/v1", "a", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    "Ingress": (
        "networking.k8s.io/v1",
        "a",
        {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}},
    ),
    "Secret": ("v1", "a-auth", None),
}


@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled-not-owned"])
@pytest.mark.parametrize("kind", sorted(FOREIGN))
async def test_a_foreign_object_of_a_childs_name_is_never_touched(kind: str, labelled: bool) -> None:
    api_version, name, spec = FOREIGN[kind]
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if labelled:  # in the cache, but no controller reference to this resource
        meta["labels"] = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: "a"}
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if kind == "Secret":
        obj["data"] = {"token": base64.b64encode(b"theirs-0123456789").decode()}
    else:
        obj["spec"] = spec
    w = World()
    stored = w.port.put(obj)
    w.memory("a", {"ingress": {"enabled": True, "host": "a.example.com"}})
    await w.settle("a")
    w_obj = w.port.find(kind, NS, name)
    assert w_obj == stored, "not modified, no owner reference added"
    stalled = w.condition("a", "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    assert stalled["reason"] == "ChildNotOwned"
    assert f"{kind} {name} exists and is not owned by this VestigeMemory" in stalled["message"]
    assert w.reasons().count("ChildNotOwned") == 1, "one Warning event"
    assert [e["type"] for e in w.port.events if e["reason"] == "ChildNotOwned"] == ["Warning"]
    if kind == "Secret":
        assert w.port.find("Deployment", NS, "a") is None, "a foreign token is never mounted"
    # the other children are still made
    assert w.port.find("Service" if kind != "Service" else "NetworkPolicy", NS, "a") is not None


async def test_an_object_of_an_earlier_resource_of_the_same_name_is_waited_for() -> None:
    w = World()
    w.port.put(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "a",
                "namespace": NS,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: "a"},
                "ownerReferences": [
                    {
                        "apiVersion": "vestige.dev/v1alpha1",
                        "kind": "VestigeMemory",
                        "name": "a",
                        "uid": "old",
                        "controller": True,
                    }
                ],
            },
            "spec": {"ports": [{"port": 8000}]},
        }
    )
    w.memory("a")
    with pytest.raises(RetryLater, match="garbage collector"):
        await w.run("a")
    assert w.condition("a", "Stalled")["status"] == "False"  # type: ignore[index]
    assert "ChildNotOwned" not in w.reasons()


async def test_the_queue_arms_the_pass_at_the_expiry_not_a_timer_of_the_pass() -> None:
    w = World()
    w.memory("a")
    await w.settle("a")
    w.memory("a", **{tokens.ANNOTATION_ROTATE: "r1"})
    w.attach()
    w.rec.request((NS, "a"))
    await w.rec.drain()
    assert w.rec.queue.scheduled((NS, "a")), "requeue-after at the end of the grace period"
    assert w.rec.queue.depth() == {"queued": 0, "running": 0, "backoff": 0}
    w.rec.forget((NS, "a"), None)
    assert not w.rec.queue.scheduled((NS, "a"))


# -- restore across namespaces ---------------------------------------------------------------------


async def test_a_restore_from_another_namespace_waits_for_the_source_sides_grant() -> None:
    w = World()
    s3 = {"s3": {"bucket": "bkt", "credentialsSecret": {"name": "creds"}}}
    source = {"destination": s3, "source": "victims/their-agent", "latest": True}
    w.memory("copy", {"restore": {"fromBackup": source}})
    await w.settle("copy")
    stalled = w.condition("copy", "Stalled")
    assert stalled is not None and stalled["reason"] == "RestoreRefused", stalled
    assert ("Deployment", NS, "copy") not in w.port.objects
    assert w.rec.restore_sources_in("victims") == [(NS, "copy")] and w.rec.restore_sources_in(NS) == []
    # A grant in the restoring namespace, or for another agent, or an invalid one, is not enough.
    w.grants[NS] = [{"from": [{"namespace": NS}], "to": [{"agentId": "their-agent"}]}]
    w.grants["victims"] = [
        {"from": [{"namespace": NS}], "to": [{"agentId": "another-agent"}]},
        {"from": [{"namespace": "*"}], "to": [{"agentId": "their-agent"}]},
    ]
    await w.settle("copy")
    assert ("Deployment", NS, "copy") not in w.port.objects
    # The source side grants it: the pod is created, restoring from the source's key space.
    w.grants["victims"].append({"from": [{"namespace": NS}], "to": [{"agentId": "their-agent"}]})
    await w.settle("copy")
    deployment = w.port.objects[("Deployment", NS, "copy")]
    args = deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[args.index("--prefix") + 1] == "victims/their-agent/"
    assert (w.condition("copy", "Stalled") or {}).get("status") == "False"
    # Revoked after the pod exists: the restore is not undone, and nothing is deleted.
    w.grants["victims"].pop()
    await w.settle("copy")
    assert ("Deployment", NS, "copy") in w.port.objects


# -- paced fleet rollouts -----------------------------------------------------------------------


def _roll_out(w: World, name: str) -> None:
    """Play the volume binder, Deployment controller and kubelet: the claim is bound and the
    Deployment's pod runs its template."""
    claim = w.port.objects[("PersistentVolumeClaim", NS, f"{name}-data")]
    claim["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    dep = w.port.objects[("Deployment", NS, name)]
    generation = dep["metadata"].get("generation", 1)
    dep["status"] = {
        "observedGeneration": generation,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "readyReplicas": 1,
    }


def _bridge_image(w: World, name: str) -> str:
    containers = w.port.objects[("Deployment", NS, name)]["spec"]["template"]["spec"]["containers"]
    return next(c["image"] for c in containers if c["name"] == "bridge")


async def test_new_default_images_roll_out_at_most_n_agents_at_a_time_own_changes_never_wait() -> None:
    w = World(max_fleet_rollouts=2)
    woken: list[Any] = []
    w.rec.rollouts._wake = woken.append  # the queue is not running here: record the wake-ups
    names = [f"agent-{i}" for i in range(5)]
    for name in names:
        w.memory(name)
        await w.settle(name)
        _roll_out(w, name)
        await w.settle(name)
    old = _bridge_image(w, names[0])
    new = "example.org/vestige-bridge:9.9.9"
    w.rec.images = Images(
        vestige=w.rec.images.vestige, bridge=new, litestream=w.rec.images.litestream
    )  # an operator upgrade

    for name in names:
        await w.settle(name)
    rolled = [n for n in names if _bridge_image(w, n) == new]
    assert rolled == names[:2], rolled
    waiting = names[2:]
    for name in waiting:
        cond = w.condition(name, "Reconciling")
        assert cond is not None and cond["reason"] == "RolloutPending", cond
        assert w.status(name)["phase"] == "Ready"  # the old pod still serves
    assert w.rec.rollouts.counts() == (2, 3)

    # The agent's own change is applied at once, new defaults included, without a slot.
    w.memory(waiting[-1], {"vestige": {"env": [{"name": "RUST_LOG", "value": "debug"}]}})
    await w.settle(waiting[-1])
    assert _bridge_image(w, waiting[-1]) == new
    assert w.rec.rollouts.counts() == (2, 2)

    # Slots free up as rollouts finish; who waited longest goes next.
    _roll_out(w, names[0])
    await w.run(names[0])
    assert woken == [(NS, names[2])]
    await w.settle(names[2])
    assert _bridge_image(w, names[2]) == new and _bridge_image(w, names[3]) == old
    for name in (names[1], names[2]):
        _roll_out(w, name)
        await w.run(name)
    await w.settle(names[3])
    assert all(_bridge_image(w, n) == new for n in names)
    _roll_out(w, names[3])
    await w.run(names[3])
    assert w.rec.rollouts.counts() == (0, 0)
    _roll_out(w, names[4])  # its own change rolled out at once, outside the slots
    for name in names:
        await w.settle(name)
        assert (w.condition(name, "Reconciling") or {}).get("reason") == "Reconciled", name


async def _one_rolling_one_waiting() -> tuple[World, list[Any]]:
    """Two Ready agents, a limit of one fleet rollout, new default images: agent-0 holds the slot,
    agent-1 waits; the wake-ups are recorded."""
    w = World(max_fleet_rollouts=1)
    woken: list[Any] = []
    w.rec.rollouts._wake = woken.append
    names = ["agent-0", "agent-1"]
    for name in names:
        w.memory(name)
        await w.settle(name)
        _roll_out(w, name)
        await w.settle(name)
    w.rec.images = Images(
        vestige=w.rec.images.vestige,
        bridge="example.org/vestige-bridge:9.9.9",
        litestream=w.rec.images.litestream,
    )
    for name in names:
        await w.settle(name)
    assert w.rec.rollouts.counts() == (1, 1)
    return w, woken


async def test_an_agent_gone_while_it_held_a_rollout_slot_frees_it() -> None:
    w, woken = await _one_rolling_one_waiting()
    # agent-0 is deleted mid-rollout and no deletion event reaches the operator: its next pass
    # (a resync) finds it gone and frees the slot, or the fleet would wait for ever.
    del w.port.objects[("VestigeMemory", NS, "agent-0")]
    w.attach()
    await w.run("agent-0")
    assert w.rec.rollouts.counts() == (0, 1) and woken == [(NS, "agent-1")]


async def test_the_cache_check_frees_the_slot_of_an_agent_deleted_unseen() -> None:
    w, woken = await _one_rolling_one_waiting()
    # Gone from the cluster but still cached (a deletion missed by a watch): the check finds it.
    del w.port.objects[("VestigeMemory", NS, "agent-0")]
    assert await w.rec.verify_caches() >= 1
    assert w.rec.rollouts.counts() == (0, 1) and woken == [(NS, "agent-1")]


async def test_without_a_limit_every_agent_rolls_at_once() -> None:
    w = World(max_fleet_rollouts=0)
    for name in ("a", "b", "c"):
        w.memory(name)
        await w.settle(name)
        _roll_out(w, name)
    w.rec.images = Images(
        vestige=w.rec.images.vestige, bridge="example.org/bridge:2", litestream=w.rec.images.litestream
    )
    for name in ("a", "b", "c"):
        await w.settle(name)
        assert _bridge_image(w, name) == "example.org/bridge:2"
