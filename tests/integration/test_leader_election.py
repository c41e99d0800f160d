"""Two operator processes for one namespace against the real API server: exactly one writes.

Each process authenticates as a ServiceAccount of its own holding exactly the shipped rules
(manifests/base/rbac.yaml: the operator's rules and the leader-election Role, bound in the test
namespace; the read-only discovery rules cluster-wide). The API server counts each one's writes
itself: one FlowSchema per ServiceAccount matches only its write verbs (the Lease's API group
aside, which a second FlowSchema counts), and ``apiserver_flowcontrol_dispatched_requests_total``
by flow schema is read from the API server's /metrics (no audit log needed).

1. A leads, B stands by: over creation, convergence and several resyncs the API server saw no
   write from B, B's own counters and log agree, and B's gauge says standby.
2. SIGKILL A, change a VestigeMemory's spec at once: B takes the Lease when it expires and
   applies the change. SIGTERM of the leader releases the Lease: the standby takes over at its
   next retry, without waiting for the lease duration.
3. A leader cut off from the API server (a TCP forwarder that resets its connections) stops
   leading, by its own clock, before the standby takes the Lease; once reconnected it stays a
   standby and writes nothing.

The takeover times go to tests/integration/results/leader_election.json (no timed assertion).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import operator_fixtures
from tests.integration import test_faults as faults
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import wait_until
from tests.integration.operator_fixtures import OperatorFactory, OperatorProcess
from tests.integration.test_faults import Partition

operator_factory = operator_fixtures.operator_factory

pytestmark = pytest.mark.timeout(600)

RESULTS = Path(__file__).parent / "results" / "leader_election.json"
REPLICAS = ("op-a", "op-b")
#: API groups of everything the operator writes, except the Lease's (coordination.k8s.io).
WRITTEN_GROUPS = ["", "apps", "networking.k8s.io", "vestige.dev", "batch", "events.k8s.io"]
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
AGENTS = ("ha-a", "ha-b", "ha-c")
#: Log messages of a write by the reconciler (reconcile.py).
WRITE_LOGS = ("created ", "applying ", "deleting ", "status of ")


def record(section: str, figures: dict[str, Any]) -> None:
    faults.record(section, figures, RESULTS)


def shipped_rules(kind: str, name: str) -> list[dict[str, Any]]:
    for doc in yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text()):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
            return list(doc["rules"])
    raise AssertionError(f"manifests/base/rbac.yaml has no {kind} {name}")


class Identities:
    """The two ServiceAccounts, their RBAC, their FlowSchemas and kubeconfigs."""

    def __init__(self, kubectl: Kubectl, kubeconfig: str, namespace: str, tmp: Path) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.prefix = f"vestige-ha-{namespace}"
        self.kubeconfigs: dict[str, str] = {}
        subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace} for sa in REPLICAS]
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace}}
            for sa in REPLICAS
        ]
        for kind, name, scope in (
            ("ClusterRole", "vestige-operator-discovery", "cluster"),
            ("ClusterRole", "vestige-operator", "namespace"),
            ("Role", "vestige-operator-leader-election", "namespace"),
        ):
            role_kind = "ClusterRole" if scope == "cluster" else "Role"
            role_meta: dict[str, Any] = {"name": f"{self.prefix}-{name}"}
            if scope == "namespace":
                role_meta["namespace"] = namespace
            ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_meta["name"]}
            objects += [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": role_kind,
                    "metadata": role_meta,
                    "rules": shipped_rules(kind, name),
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": f"{role_kind}Binding",
                    "metadata": role_meta,
                    "roleRef": ref,
                    "subjects": subjects,
                },
            ]
        for sa in REPLICAS:
            for suffix, groups in (("writes", WRITTEN_GROUPS), ("lease", ["coordination.k8s.io"])):
                objects.append(self._flow_schema(sa, suffix, groups))
        kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        admin = yaml.safe_load(Path(kubeconfig).read_text())
        for sa in REPLICAS:
            token = kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
            doc = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
                "current-context": "c",
            }
            path = tmp / f"{sa}.kubeconfig"
            path.write_text(json.dumps(doc))
            self.kubeconfigs[sa] = str(path)

    def _flow_schema(self, sa: str, suffix: str, groups: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": f"{self.prefix}-{sa}-{suffix}"},
            "spec": {
                "matchingPrecedence": 300,  # before service-accounts (9000); system ones are < 300
                "priorityLevelConfiguration": {"name": "workload-high"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"name": sa, "namespace": self.namespace},
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": WRITE_VERBS,
                                "apiGroups": groups,
                                "resources": ["*"],
                                "namespaces": ["*"],
                                "clusterScope": True,
                            }
                        ],
                    }
                ],
            },
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Writes the API server dispatched per replica: {"op-a": {"writes": n, "lease": m}, ...}."""
        text = self.kubectl("get", "--raw", "/metrics").stdout
        out = {sa: {"writes": 0, "lease": 0} for sa in REPLICAS}
        for line in text.splitlines():
            if not line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            for sa in REPLICAS:
                for suffix in ("writes", "lease"):
                    if f'flow_schema="{self.prefix}-{sa}-{suffix}"' in labels:
                        out[sa][suffix] += int(float(value))
        return out

    def delete(self) -> None:
        for kind in ("flowschema", "clusterrolebinding", "clusterrole"):
            names = self.kubectl("get", kind, "-o", "name").stdout.split()
            mine = [n for n in names if n.split("/", 1)[1].startswith(self.prefix)]
            if mine:
                self.kubectl("delete", *mine, "--ignore-not-found", check=False)


@pytest.fixture
def identities(kubectl: Kubectl, kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[Identities]:
    made = Identities(kubectl, kubeconfig, namespace, tmp_path)
    try:
        yield made
    finally:
        made.delete()


def start(
    operator_factory: OperatorFactory, ids: Identities, sa: str, kubeconfig: str | None = None
) -> OperatorProcess:
    return operator_factory(
        ids.namespace,
        env={
            "KUBECONFIG": kubeconfig or ids.kubeconfigs[sa],
            "POD_NAME": sa,
            "VESTIGE_LEADER_ELECTION": "true",
            "VESTIGE_LEASE_NAMESPACE": ids.namespace,
        },
    )


def leads(op: OperatorProcess) -> bool:
    for line in op.metrics().splitlines():
        if line.startswith("vestige_operator_leader "):
            return float(line.split()[1]) == 1
    raise AssertionError("no vestige_operator_leader on /metrics")


def sent_by(op: OperatorProcess) -> int:
    """Requests the operator's reconciler and backup controller sent (its own counter)."""
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in op.metrics().splitlines()
            if line.startswith("vestige_operator_api_requests_total{")
        )
    )


def write_logs(op: OperatorProcess) -> list[str]:
    return [
        str(line.get("message"))
        for line in op.log_lines()
        if any(str(line.get("message", "")).startswith(w) for w in WRITE_LOGS)
    ]


def holder(kubectl: Kubectl, namespace: str) -> str | None:
    lease = json.loads(kubectl("-n", namespace, "get", "lease", "vestige-operator", "-o", "json").stdout)
    return (lease.get("spec") or {}).get("holderIdentity")


def memory(kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name},
        "spec": spec,
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(doc))


def ready(kubectl: Kubectl, namespace: str, name: str) -> bool:
    obj = json.loads(kubectl("-n", namespace, "get", "vmem", name, "-o", "json").stdout)
    status = obj.get("status") or {}
    return (
        status.get("phase") == "Ready" and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


def replicas(kubectl: Kubectl, namespace: str, name: str) -> int | None:
    proc = kubectl("-n", namespace, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}", check=False)
    return int(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def change_and_time(kubectl: Kubectl, namespace: str, name: str, suspend: bool, since: float) -> float:
    """Flip ``spec.suspend`` now; seconds from ``since`` until the Deployment shows it."""
    kubectl(
        "-n",
        namespace,
        "patch",
        "vmem",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": suspend}}),
    )
    want = 0 if suspend else 1
    wait_until(lambda: replicas(kubectl, namespace, name) == want, 90, f"{name} replicas {want}", 0.1)
    return round(time.monotonic() - since, 2)


@pytest.mark.usefixtures("crd_installed")
def test_one_replica_writes_and_the_standby_takes_over(
    kubectl: Kubectl, namespace: str, operator_factory: OperatorFactory, identities: Identities
) -> None:
    a = start(operator_factory, identities, "op-a")
    wait_until(lambda: leads(a), 30, "op-a leading")
    b = start(operator_factory, identities, "op-b")
    assert holder(kubectl, namespace) == "op-a"
    base = identities.counts()

    # 1. A leads, B stands by, over creation, convergence and several resyncs.
    for name in AGENTS:
        memory(kubectl, namespace, name, {})
    for name in AGENTS:
        wait_until(lambda n=name: ready(kubectl, namespace, n), 120, f"{name} Ready")
    time.sleep(3 * a.resync_seconds)
    standing = identities.counts()
    writes_a = standing["op-a"]["writes"] - base["op-a"]["writes"]
    assert writes_a > 0, standing  # the filter sees the leader's writes ...
    assert standing["op-b"]["writes"] == base["op-b"]["writes"] == 0, standing  # ... and none of B's
    assert standing["op-b"]["lease"] == 0, standing  # B never even tried to take the held Lease
    assert not leads(b) and leads(a)
    assert sent_by(b) == 0, b.metrics()
    assert write_logs(b) == []
    assert write_logs(a)

    # 2. SIGKILL the leader, change a spec at once: B takes the expired Lease and applies it.
    killed = time.monotonic()
    a.kill()
    crash_takeover = change_and_time(kubectl, namespace, "ha-a", True, killed)
    assert leads(b) and holder(kubectl, namespace) == "op-b"
    after_crash = identities.counts()
    assert after_crash["op-b"]["writes"] > 0 and after_crash["op-b"]["lease"] > 0
    assert after_crash["op-a"]["writes"] == standing["op-a"]["writes"]  # dead: nothing more

    # 3. A returns as the standby; SIGTERM B: it releases the Lease, A takes it at its next retry.
    a = start(operator_factory, identities, "op-a")
    assert not leads(a) and holder(kubectl, namespace) == "op-b"
    rejoined = identities.counts()
    time.sleep(2 * a.resync_seconds)
    assert identities.counts()["op-a"] == rejoined["op-a"], "the returning standby wrote"
    stopped = time.monotonic()
    assert b.stop() == 0
    release_takeover = change_and_time(kubectl, namespace, "ha-a", False, stopped)
    assert any("released the Lease" in str(line.get("message")) for line in b.log_lines())
    assert leads(a) and holder(kubectl, namespace) == "op-a"
    for name in AGENTS:
        wait_until(lambda n=name: ready(kubectl, namespace, n), 120, f"{name} Ready under op-a")

    record(
        "takeover",
        {
            "lease_seconds": {"duration": 10, "renew_deadline": 7, "retry_period": 2},
            "agents": len(AGENTS),
            "sigkill_to_change_applied_seconds": crash_takeover,
            "sigterm_to_change_applied_seconds": release_takeover,
            "standby_writes_while_the_leader_held_the_lease": standing["op-b"]["writes"],
            "leader_writes_creating_and_settling": writes_a,
        },
    )
    assert a.stop() == 0


def logged_at(op: OperatorProcess, message: str) -> datetime | None:
    """When ``op`` last logged ``message`` (its JSON log's timestamp)."""
    times = [
        datetime.fromisoformat(line["timestamp"]) for line in op.log_lines() if line.get("message") == message
    ]
    return times[-1] if times else None


@pytest.mark.usefixtures("crd_installed")
def test_a_leader_cut_off_stops_before_the_standby_starts(
    kubectl: Kubectl,
    namespace: str,
    operator_factory: OperatorFactory,
    identities: Identities,
    tmp_path: Path,
) -> None:
    # op-a reaches the API server through a forwarder that can cut it off; op-b directly.
    config = json.loads(Path(identities.kubeconfigs["op-a"]).read_text())
    host, _, port = config["clusters"][0]["cluster"]["server"].removeprefix("https://").partition(":")
    part = Partition((host, int(port)))
    try:
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{part.port}"
        cut_config = tmp_path / "op-a-partitioned.kubeconfig"
        cut_config.write_text(json.dumps(config))
        a = start(operator_factory, identities, "op-a", str(cut_config))
        wait_until(lambda: leads(a), 30, "op-a leading")
        b = start(operator_factory, identities, "op-b")
        memory(kubectl, namespace, "ha-cut", {})
        wait_until(lambda: ready(kubectl, namespace, "ha-cut"), 120, "ha-cut Ready")

        part.cut()
        at_cut = identities.counts()
        cut = time.monotonic()
        taken = change_and_time(kubectl, namespace, "ha-cut", True, cut)  # applied by op-b
        assert holder(kubectl, namespace) == "op-b" and leads(b)
        lost, took = logged_at(a, "lost the lead (op-a)"), logged_at(b, "took the lead (op-b)")
        assert lost is not None and took is not None, (lost, took)
        assert lost < took, f"op-a stopped at {lost}, after op-b started at {took}"

        part.heal()
        wait_until(lambda: a.alive() and not leads(a), 30, "op-a back as the standby")
        time.sleep(3 * a.resync_seconds)  # its watches reconnect; nothing may be written
        healed = identities.counts()
        assert healed["op-a"]["writes"] == at_cut["op-a"]["writes"], (at_cut, healed)
        assert leads(b) and not leads(a)
        record(
            "api_partition",
            {
                "cut_to_change_applied_by_the_standby_seconds": taken,
                "leader_stopped_before_the_standby_started_by_seconds": round(
                    (took - lost).total_seconds(), 2
                ),
                "writes_of_the_cut_off_leader_after_the_cut": healed["op-a"]["writes"]
                - at_cut["op-a"]["writes"],
            },
        )
        assert a.stop() == 0 and b.stop() == 0
    finally:
        part.close()
