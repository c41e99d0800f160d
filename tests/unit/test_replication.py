"""ReplicationHealthy (issue 23): what the operator makes of the bridge's /replication answer, which
pod it asks, the NetworkPolicy that lets it ask, and the pass against the in-memory API port: the
condition, status.replication, the Warning event when replication stops or lags (once, not per
check), the Normal one when it resumes, and a pass every VESTIGE_REPLICATION_CHECK_SECONDS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from vestige_operator import replication
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import operator_peer, render_network_policy
from vestige_operator.config import ConfigError, OperatorConfig
from vestige_operator.replication import Position
from vestige_operator.vocabulary import Owner, selector_labels

from tests.unit.test_continuous import CONTINUOUS, S3
from tests.unit.test_pass import NS, T0, World

OWNER = Owner(name="agent", namespace=NS, uid="u-1")
SYNCED = "2026-12-03T11:59:59Z"


def _spec(**extra: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(
        {"backup": {"destination": S3, "continuous": CONTINUOUS}, **extra}
    )


# -- the answer --------------------------------------------------------------------------------


def test_an_answer_with_a_position_is_read_and_anything_else_is_no_position() -> None:
    good = replication.parse(
        {"enabled": True, "last_sync_at": "2026-12-03T11:59:59.123456+00:00", "lag_seconds": 0.4}
    )
    assert good == Position(True, last_sync_at=SYNCED, lag_seconds=0.4)
    assert replication.parse({"enabled": False}).error == "the pod runs no replication sidecar yet"
    down = replication.parse({"enabled": True, "last_sync_at": None, "lag_seconds": None, "error": "x"})
    assert down == Position(True, error="x")
    for bad in (["list"], {"last_sync_at": "not a time", "lag_seconds": 1}, {"last_sync_at": SYNCED}):
        pos = replication.parse(bad)
        assert pos.reachable and pos.last_sync_at is None and pos.error, bad
    assert replication.parse({"last_sync_at": SYNCED, "lag_seconds": True}).last_sync_at is None
    assert replication.parse({"last_sync_at": SYNCED, "lag_seconds": -3}).lag_seconds == 0.0


def test_health_says_replicating_lagging_stopped_starting_or_unknown() -> None:
    spec = _spec()  # syncInterval 1s: lagging beyond 10 s
    ok = replication.health(spec, Position(True, SYNCED, 0.4), None)
    assert (ok.status, ok.reason, ok.last_replicated_at, ok.lag_seconds) == (True, "Replicating", SYNCED, 0)
    late = replication.health(spec, Position(True, SYNCED, 42.6), None)
    assert (late.status, late.reason, late.lag_seconds) == (False, "Lagging", 43)
    assert "43s behind" in late.message and SYNCED in late.message
    stopped = replication.health(spec, Position(True, error="sidecar did not answer"), {}, pod_age_seconds=60)
    assert (stopped.status, stopped.reason, stopped.message) == (
        False,
        "NotReplicating",
        "sidecar did not answer",
    )
    starting = replication.health(spec, Position(True, error="not synced yet"), {}, pod_age_seconds=3)
    assert (starting.status, starting.reason) == (None, "Starting")
    before = {"lastReplicatedAt": SYNCED, "lagSeconds": 0}
    far = replication.health(spec, Position(False, error="the bridge at 10.0.0.1 did not answer"), before)
    assert (far.status, far.reason, far.last_replicated_at) == (None, "Unreachable", SYNCED)
    assert far.lag_seconds is None
    none = replication.health(spec, None, before)
    assert (none.status, none.reason, none.last_replicated_at) == (None, "PodNotRunning", SYNCED)
    assert replication.health(_spec(suspend=True), None, before).reason == "Suspended"


def test_the_lag_threshold_follows_the_sync_interval() -> None:
    assert replication.lag_threshold(_spec()) == 10.0
    slow = VestigeMemorySpec.model_validate(
        {"backup": {"destination": S3, "continuous": {**CONTINUOUS, "syncInterval": "30s"}}}
    )
    assert replication.lag_threshold(slow) == 300.0
    assert replication.health(slow, Position(True, SYNCED, 120), None).status is not False


def _pod(name: str, *, created: str = "2026-12-03T11:00:00Z", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": selector_labels("agent"),
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "ReplicaSet", "name": "agent-1", "controller": True, "uid": "rs"}],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.7", "startTime": created, **status},
    }


def test_only_a_running_pod_of_the_memorys_replicaset_is_asked_the_newest_first() -> None:
    old = _pod("old", created="2026-12-03T10:00:00Z")
    new = _pod("new", created="2026-12-03T11:00:00Z", podIP="10.244.1.8")
    assert replication.serving_pod([old, new]) is new
    pending = _pod("pending", phase="Pending")
    no_ip = _pod("no-ip", podIP="")
    going = _pod("going")
    going["metadata"]["deletionTimestamp"] = "2026-12-03T11:30:00Z"
    bare = _pod("bare")  # made by someone, not by the Deployment's ReplicaSet
    bare["metadata"]["ownerReferences"] = []
    assert replication.serving_pod([pending, no_ip, going, bare]) is None


# -- who may ask -------------------------------------------------------------------------------


def test_the_operators_pods_may_reach_the_bridge_port_only_of_memories_with_a_continuous_backup() -> None:
    peer = operator_peer("vestige-system")
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vestige-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "vestige-operator"}},
    }
    assert operator_peer("") is None  # not in a pod: nothing to admit
    with_backup = render_network_policy(OWNER, _spec(), peer)["spec"]["ingress"]
    assert with_backup == [
        {"from": [{"podSelector": {}}, peer], "ports": [{"protocol": "TCP", "port": 8000}]}
    ]
    plain = render_network_policy(OWNER, VestigeMemorySpec(), peer)["spec"]["ingress"]
    assert plain == [{"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8000}]}]


def test_the_check_interval_is_a_bounded_setting() -> None:
    assert OperatorConfig.from_env({}).replication_check_seconds == 30
    assert OperatorConfig.from_env({"VESTIGE_REPLICATION_CHECK_SECONDS": "5"}).replication_check_seconds == 5
    for bad in ("4", "0", "soon"):
        with pytest.raises(ConfigError, match="VESTIGE_REPLICATION_CHECK_SECONDS"):
            OperatorConfig.from_env({"VESTIGE_REPLICATION_CHECK_SECONDS": bad})


# -- the pass ----------------------------------------------------------------------------------


class FakeProbe:
    """Answers what the test says; records which pod IPs were asked."""

    def __init__(self) -> None:
        self.answer = Position(True, SYNCED, 0.5)
        self.asked: list[str] = []

    async def position(self, pod_ip: str) -> Position:
        self.asked.append(pod_ip)
        return self.answer

    async def aclose(self) -> None:
        pass


def _world() -> tuple[World, FakeProbe]:
    w = World()
    probe = FakeProbe()
    w.rec.probe = probe
    w.memory("agent", {"backup": {"destination": S3, "continuous": CONTINUOUS}})
    return w, probe


async def test_a_pass_writes_replicationhealthy_and_the_replicas_position_and_comes_back() -> None:
    w, probe = _world()
    after = await w.run("agent")
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("Unknown", "PodNotRunning")
    assert probe.asked == [] and "replication" not in w.status("agent")
    assert after == 30.0, "a memory with a continuous backup is checked every 30 s"
    w.port.put(_pod("agent-1-abc"))
    await w.run("agent")
    assert probe.asked == ["10.244.1.7"]
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "Replicating")
    assert w.status("agent")["replication"] == {"lastReplicatedAt": SYNCED, "lagSeconds": 0}
    assert "ReplicationResumed" not in w.reasons(), "Unknown -> True is no resumption"


async def test_replication_stopping_lagging_and_resuming_each_post_one_event() -> None:
    w, probe = _world()
    w.port.put(_pod("agent-1-abc", created=(T0 - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    await w.run("agent")
    probe.answer = Position(True, error="the replication sidecar did not answer: ConnectError")
    await w.run("agent")
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "NotReplicating")
    assert w.status("agent")["replication"]["lastReplicatedAt"] == SYNCED, "the last known time stays"
    assert w.reasons().count("ReplicationStopped") == 1
    probe.answer = Position(True, SYNCED, 25.0)
    await w.run("agent")
    probe.answer = Position(True, SYNCED, 55.0)
    await w.run("agent")
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "Lagging")
    assert "55s behind" in cond["message"] and w.status("agent")["replication"]["lagSeconds"] == 55
    assert w.reasons().count("ReplicationLagging") == 1, "the lag moving is no new event"
    lagging = next(e for e in w.port.events if e["reason"] == "ReplicationLagging")
    assert lagging["type"] == "Warning"
    probe.answer = Position(True, "2026-12-03T12:00:00Z", 0.2)
    await w.run("agent")
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and cond["status"] == "True"
    resumed = [e for e in w.port.events if e["reason"] == "ReplicationResumed"]
    assert len(resumed) == 1 and resumed[0]["type"] == "Normal"
    assert w.status("agent")["replication"]["lastReplicatedAt"] == "2026-12-03T12:00:00Z"


async def test_a_suspended_memory_is_not_asked_and_not_requeued_for_it() -> None:
    w, probe = _world()
    w.port.put(_pod("agent-1-abc"))
    w.memory("agent", {"suspend": True, "backup": {"destination": S3, "continuous": CONTINUOUS}})
    after = await w.run("agent")
    assert probe.asked == [] and after is None
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("Unknown", "Suspended")


async def test_without_a_continuous_backup_there_is_no_condition_and_no_question() -> None:
    w = World()
    probe = FakeProbe()
    w.rec.probe = probe
    w.memory("plain", {"backup": {"destination": S3}})
    w.port.put(_pod("plain-1-abc"))
    assert await w.run("plain") is None
    assert w.condition("plain", "ReplicationHealthy") is None and probe.asked == []


async def test_an_operator_outside_the_cluster_asks_no_pod_and_says_so() -> None:
    w = World()  # no POD_NAMESPACE, no ServiceAccount: not in a pod
    assert w.rec.probe is None and w.rec.operator_peer is None
    w.memory("agent", {"backup": {"destination": S3, "continuous": CONTINUOUS}})
    w.port.put(_pod("agent-1-abc"))
    await w.run("agent")
    cond = w.condition("agent", "ReplicationHealthy")
    assert cond is not None and (cond["status"], cond["reason"]) == ("Unknown", "Unreachable")
    assert replication.NOT_IN_CLUSTER in cond["message"]
    assert not any(kind == "Pod" for (_, kind) in w.port.requests), "its pods are not even listed"


async def test_an_operator_in_a_pod_asks_and_its_pods_are_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "vestige-system")
    w = World()
    assert isinstance(w.rec.probe, replication.HttpProbe)
    w.rec.probe = FakeProbe()
    w.memory("agent", {"backup": {"destination": S3, "continuous": CONTINUOUS}})
    await w.run("agent")
    policy = w.port.find("NetworkPolicy", NS, "agent")
    assert policy is not None
    assert operator_peer("vestige-system") in policy["spec"]["ingress"][0]["from"]
