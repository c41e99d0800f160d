"""Two operator replicas in pods on the real node (the chart's default): one leads, the other
stands by; the leader's process is SIGKILLed and its pod deleted, and a spec change made at once
is applied by the other replica.

The chart is installed as in test_operator_pod.py (its own namespaces, the images built here) but
with two replicas. Checked: both pods Ready (a standby is Ready: the PodDisruptionBudget allows
one disruption), the Lease names one of them, the standby's own counters (its /metrics through a
port-forward to that pod) show no request and its log no write while the other leads; after the
kill, the Lease moves to another replica (as a rule the former standby), which applies the
change. The takeover time is recorded in tests/integration/results/leader_election.json (section
``real_node``), not asserted. The API server's own per-replica write count is in
tests/integration/test_leader_election.py (two ServiceAccounts; here both pods share the
release's ServiceAccount).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster import images as image_builds
from tests.cluster import node
from tests.integration.helpers import wait_until
from tests.integration.test_leader_election import record
from tests.node.helpers import READY_TIMEOUT, RealNode, port_forward
from tests.node.release import CHART, Release

#: Log messages of a write by the reconciler (reconcile.py).
WRITE_LOGS = ("created ", "applying ", "deleting ", "status of ")


@pytest.fixture
def ha_release(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    crd_installed: None,
) -> Iterator[Release]:
    with Release.opened(real_node, built_images, replicas=2) as made:
        yield made


def ready_pods(release: Release) -> list[dict[str, Any]]:
    def ready(pod: dict[str, Any]) -> bool:
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return conds.get("Ready") == "True"

    return [p for p in release.pods() if ready(p)]


def holder(release: Release) -> str | None:
    lease = release.rn.get(release.namespace, "lease", release.name)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def pod_metrics(release: Release, pod: str) -> str:
    with port_forward(release.rn, release.namespace, f"pod/{pod}", remote=8080) as pf:
        resp = httpx.get(f"{pf.url}/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.text


def gauge(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def pod_writes(release: Release, pod: str) -> list[str]:
    logs = release.rn.kubectl("-n", release.namespace, "logs", pod, check=False).stdout
    out = []
    for raw in logs.splitlines():
        try:
            message = str(json.loads(raw).get("message", ""))
        except ValueError:
            continue
        if message.startswith(WRITE_LOGS):
            out.append(message)
    return out


def test_the_standby_pod_takes_over_when_the_leader_is_killed(ha_release: Release) -> None:
    release, rn = ha_release, ha_release.rn
    release.helm("install", release.name, str(CHART), *release.values(), "--wait", "--timeout=5m")
    pods = wait_until(
        lambda: (found := ready_pods(release)) and len(found) == 2 and found,
        timeout=READY_TIMEOUT,
        what="both operator pods Ready",
        interval=1.0,
    )
    assert {p["spec"]["nodeName"] for p in pods} == {node.NODE_NAME}
    names = {p["metadata"]["name"] for p in pods}
    leader = wait_until(lambda: holder(release) in names and holder(release), 60, "a leader", 1.0)
    (standby,) = names - {leader}
    pdb = rn.get(release.namespace, "pdb", release.name)
    assert pdb is not None
    wait_until(
        lambda: (
            (rn.get(release.namespace, "pdb", release.name) or {}).get("status", {}).get("disruptionsAllowed")
            == 1
        ),
        60,
        "the PodDisruptionBudget to count both Ready pods",
        1.0,
    )

    # The leader reconciles an agent whose pod runs on the node; the standby sends nothing.
    agent = release.agent("ha-agent")
    try:
        agent.wait_ready()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{release.diagnose()}") from None
    standby_text = pod_metrics(release, standby)
    assert gauge(standby_text, "vestige_operator_leader ") == 0
    assert gauge(standby_text, "vestige_operator_api_requests_total{") == 0, standby_text
    assert gauge(pod_metrics(release, leader), "vestige_operator_leader ") == 1
    assert pod_writes(release, standby) == []
    assert pod_writes(release, leader)

    # SIGKILL the leader's process (containerd), delete its pod, change the spec at once.
    (leader_pod,) = [p for p in pods if p["metadata"]["name"] == leader]
    container_id = leader_pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    killed = time.monotonic()
    rn.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
    rn.kubectl(
        "-n", release.namespace, "delete", "pod", leader, "--grace-period=0", "--force", "--wait=false"
    )
    rn.kubectl(
        "-n",
        release.agents,
        "patch",
        "vmem",
        agent.name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}}),
    )

    def scaled_down() -> bool:
        dep = rn.get(release.agents, "deployment", agent.name)
        return dep is not None and dep["spec"].get("replicas") == 0

    wait_until(scaled_down, 120, "the change applied by the other replica", 0.2)
    took = round(time.monotonic() - killed, 2)
    # The former standby, unless the killed container restarted in place and released the Lease
    # on its deletion's SIGTERM before the standby's retry (then the replacement pod may win).
    new_leader = wait_until(
        lambda: (h := holder(release)) not in (None, leader) and h, 60, "a new leader", 0.5
    )
    assert gauge(pod_metrics(release, new_leader), "vestige_operator_leader ") == 1
    assert pod_writes(release, new_leader)
    record(
        "real_node",
        {
            "sigkill_to_change_applied_seconds": took,
            "replicas": 2,
            "agents": 1,
            "new_leader_was_the_standby": new_leader == standby,
        },
    )

    # The ReplicaSet's replacement pod joins; the new leader keeps the Lease.
    wait_until(
        lambda: (
            len(ready_pods(release)) == 2
            and leader not in {p["metadata"]["name"] for p in ready_pods(release)}
        ),
        timeout=READY_TIMEOUT,
        what="the replacement operator pod Ready",
        interval=1.0,
    )
    assert holder(release) == new_leader
