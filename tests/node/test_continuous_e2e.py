"""Continuous backup end to end on the real node (issue 23, done-when 1-4).

The operator runs in a pod (the Helm chart, tests/node/release.py), as in production: it asks
the agent's pod for the replica's position over the pod network, through the agent's
NetworkPolicy (enforced by kube-router, which admits the operator's pods only). An S3 server
(versitygw, ``tests.s3``) runs as a pod behind a Service in the agents' namespace; an agent (the
v3 stand-in, its memories in ``/data/vestige/vestige.db``, SQLite WAL) runs with
``spec.backup.continuous`` (the Litestream sidecar built from images/litestream, syncInterval
500ms). Memories go in through the bridge; what a restored memory holds is read from its volume
(the stand-in's table), so a memory that must be ABSENT is checked as exactly as one that must
be there.

1. SIGKILL of every container of the pod at a random moment of a steady ingest; a NEW memory
   restored at "latest" holds every memory acknowledged more than the target window (1 s)
   before the kill; integrity_check ok; the measured window is printed.
2. A NEW memory restored at a time between two ingests holds those before it only.
3. The S3 server down for a minute (its process frozen): the agent keeps serving (every ingest
   acknowledged); ReplicationHealthy turns False with a Warning event and the lag in the
   operator's metric; replication catches up afterwards (a restore at "latest" holds every
   memory), the condition turns True with a Normal ReplicationResumed event. The replication
   container alone SIGKILLed: the agent keeps serving, the sidecar restarts and catches up.
4. A time outside the retained window, and another namespace's replica, are refused with
   Stalled RestoreRefused; the refused volume is not touched. A restore whose object store
   cannot be reached is not refused but said: Ready False, RestoreFailing, while the kubelet
   retries it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import images as image_builds
from tests.integration.helpers import wait_until
from tests.node.helpers import Agent, Agents, RealNode, remember
from tests.node.release import Release
from tests.node.test_backup_e2e import S3Pod
from tests.s3.pod import S3_NAME

TARGET_WINDOW = 1.0
CONTINUOUS = {"enabled": True, "syncInterval": "500ms", "snapshotInterval": "1h", "retention": "24h"}


@pytest.fixture(scope="module")
def litestream_ref(real_node: RealNode) -> str:
    image = image_builds.litestream_image()
    image_builds.import_into(
        str(real_node.layout.containerd_sock), images=image_builds.ImageSet({"litestream": image})
    )
    return image.ref


@pytest.fixture(scope="module")
def release(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    crd_installed: None,
    litestream_ref: str,
    policy_engine: str,
) -> Iterator[Release]:
    """The operator in a pod; it asks each continuous agent's pod every 5 s."""
    overrides = {
        "defaultLitestreamImage": litestream_ref,
        "extraEnv": [{"name": "VESTIGE_REPLICATION_CHECK_SECONDS", "value": "5"}],
    }
    with Release.opened(real_node, built_images, operator=overrides) as made:
        made.install()
        yield made


@pytest.fixture(scope="module")
def continuous_agents(real_node: RealNode, built_images: image_builds.ImageRefs, release: Release) -> Agents:
    return Agents(real_node, built_images, release.agents, operator=None)


@pytest.fixture(scope="module")
def s3(real_node: RealNode, continuous_agents: Agents) -> S3Pod:
    image = image_builds.versitygw_image()
    image_builds.import_into(
        str(real_node.layout.containerd_sock), images=image_builds.ImageSet({"versitygw": image})
    )
    server = S3Pod(real_node, continuous_agents.namespace)
    server.start(image.ref)
    return server


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _marker(n: int) -> str:
    return f"continuous backup on the real node, memory number {n} marker{n:05d}"


def _markers(volume: Path) -> set[int]:
    """The memories (``marker<n>``) in a stand-in store on a volume, read-only."""
    con = sqlite3.connect(f"file:{volume / 'vestige' / 'vestige.db'}?mode=ro", uri=True)
    try:
        rows = [
            json.loads(r[0]).get("content", "")
            for r in con.execute("SELECT body FROM nodes WHERE kind = 'memory'")
        ]
        (check,) = con.execute("PRAGMA integrity_check").fetchone()
    finally:
        con.close()
    assert check == "ok", check
    return {int(c.rsplit("marker", 1)[1]) for c in rows if "marker" in c}


def _ingest(agent: Agent, numbers: range, acked: dict[int, float]) -> None:
    with agent.client() as http:
        for n in numbers:
            remember(http, _marker(n), tags=["continuous-e2e"])
            acked[n] = time.time()


def _max_txid(keys: dict[str, str]) -> int:
    """The newest transaction in a replica: Litestream names its files ``<min>-<max>.ltx`` (hex)."""
    names = [k.rsplit("/", 1)[1] for k in keys if k.endswith(".ltx")]
    return max((int(name.removesuffix(".ltx").split("-")[1], 16) for name in names), default=0)


def _stalled(agent: Agent) -> dict[str, Any] | None:
    conds = (agent.resource().get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Stalled" and c["status"] == "True"), None)


def _restore(agents: Agents, name: str, s3: S3Pod, source: str, point: str) -> Agent:
    return agents.create(
        name,
        spec={
            "restore": {
                "fromBackup": {"destination": s3.destination(), "source": source, "pointInTime": point}
            }
        },
    )


def _replication(agent: Agent) -> dict[str, Any]:
    """The ReplicationHealthy condition (empty: none yet)."""
    conds = (agent.resource().get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "ReplicationHealthy"), {})


def _condition_is(agent: Agent, status: str, *reasons: str) -> dict[str, Any] | None:
    cond = _replication(agent)
    return cond if cond.get("status") == status and (not reasons or cond["reason"] in reasons) else None


def _wait_replicating(agent: Agent, what: str) -> dict[str, Any]:
    """Wait for ReplicationHealthy True (Replicating): the operator asks every 5 s."""
    return wait_until(lambda: _condition_is(agent, "True", "Replicating"), timeout=120, what=what, interval=2)


def _events(rn: RealNode, agent: Agent) -> list[dict[str, Any]]:
    """The Events about the agent's VestigeMemory, oldest first."""
    proc = rn.kubectl(
        "-n", agent.namespace, "get", "events", "-o", "json",
        f"--field-selector=involvedObject.kind=VestigeMemory,involvedObject.name={agent.name}",
    )  # fmt: skip
    items = json.loads(proc.stdout)["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def _event(rn: RealNode, agent: Agent, *reasons: str) -> dict[str, Any] | None:
    return next((e for e in _events(rn, agent) if e["reason"] in reasons), None)


def _operator_lag(release: Release, agent: Agent) -> float | None:
    """The operator's vestige_operator_replication_lag_seconds for the agent (None: absent)."""
    pattern = rf'^vestige_operator_replication_lag_seconds{{[^}}]*name="{agent.name}"[^}}]*}} (\S+)$'
    found = re.search(pattern, release.metrics(), re.M)
    return float(found.group(1)) if found else None


def _sidecar_running(agent: Agent) -> bool:
    for status in agent.pod()["status"].get("initContainerStatuses") or []:
        if status["name"] == "litestream":
            return "running" in (status.get("state") or {})
    return False


def _sidecar_restarts(agent: Agent) -> int:
    statuses = agent.pod()["status"].get("initContainerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses if s["name"] == "litestream")


def _sidecar_pid(rn: RealNode, agent: Agent) -> int:
    pod = agent.pod()
    only = {**pod, "status": {**pod["status"], "containerStatuses": []}}
    (pid,) = _pod_pids(rn, only)  # the init containers: the sidecar alone
    return pid


def _pids(rn: RealNode, agent: Agent) -> list[int]:
    """Host pids of every container of the agent's pod (sidecar included)."""
    return _pod_pids(rn, agent.pod())


def _s3_pid(rn: RealNode, ns: str) -> int:
    """Host pid of the S3 server's container."""
    selector = f"app.kubernetes.io/instance={S3_NAME}"
    pods = json.loads(rn.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    (pid,) = _pod_pids(rn, pods[0])
    return pid


def _pod_pids(rn: RealNode, pod: dict[str, Any]) -> list[int]:
    status = pod["status"]
    ids = [
        s["containerID"].split("://", 1)[1]
        for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
        if s.get("containerID") and "running" in (s.get("state") or {})
    ]
    tasks = {
        cols[0]: int(cols[1])
        for cols in (line.split() for line in rn.ctr("tasks", "ls").stdout.splitlines()[1:])
        if cols
    }
    return [tasks[i] for i in ids if i in tasks]


@pytest.mark.timeout(1500)
def test_crash_point_in_time_outage_and_refusals(
    continuous_agents: Agents, real_node: RealNode, s3: S3Pod, release: Release
) -> None:
    ns = continuous_agents.namespace
    src = continuous_agents.create(
        "src", spec={"backup": {"destination": s3.destination(), "continuous": CONTINUOUS}}
    )
    src.wait_ready()
    wait_until(lambda: _sidecar_running(src), timeout=120, what="the Litestream sidecar running")
    pod = src.pod()["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["litestream"]
    for container in pod["containers"]:
        assert not any(e["name"].startswith("AWS_") for e in container.get("env", []))
    time.sleep(5)  # the first snapshot is written when the sidecar sees the store
    # the bridge reads the lag from the sidecar's socket (its emptyDir, mounted read-only)
    with src.client() as http:
        text = http.get("/metrics").text
    gauges = dict(re.findall(r"^(vestige_bridge_replication_\w+) (\S+)$", text, re.M))
    assert gauges.get("vestige_bridge_replication_up") == "1.0", text[-2000:]
    assert float(gauges["vestige_bridge_replication_lag_seconds"]) < 10, gauges
    # The operator, in its pod, asks the agent's pod through the agent's NetworkPolicy (enforced;
    # it admits the operator's pods as a peer of their own namespace and label).
    peers = real_node.get(ns, "networkpolicy", "src")["spec"]["ingress"][0]["from"]  # type: ignore[index]
    assert any(
        p.get("namespaceSelector") == {"matchLabels": {"kubernetes.io/metadata.name": release.namespace}}
        for p in peers
    ), peers
    try:
        _wait_replicating(src, "ReplicationHealthy True (Replicating)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_replication(src)}\n{release.diagnose()}") from None
    assert (src.resource()["status"].get("replication") or {}).get("lastReplicatedAt")
    acked: dict[int, float] = {}

    # 2. a moment between two ingests
    _ingest(src, range(1, 6), acked)
    time.sleep(2)
    moment = _rfc3339(time.time())
    time.sleep(2)
    _ingest(src, range(6, 11), acked)

    # 3. the S3 server away for a minute: the agent keeps serving
    replica = f"{ns}/src/litestream/"
    time.sleep(2)
    base = _max_txid(s3.objects(replica))
    # Frozen (SIGSTOP), not deleted: its objects stay, as an S3 outage leaves them (the server's
    # root is an emptyDir: a pod deleted and made again would have lost the replica); every request
    # to it hangs until it runs again (SIGCONT).
    s3_pid = _s3_pid(real_node, ns)
    os.kill(s3_pid, signal.SIGSTOP)
    outage_started = time.monotonic()
    n = 11
    unhealthy: dict[str, Any] | None = None
    operator_lag: float | None = None
    try:
        # a minute, longer if the operator has not said so yet (it asks every 5 s; the lag passes
        # its threshold, 10 s here, after 10 s)
        while (elapsed := time.monotonic() - outage_started) < 60 or (unhealthy is None and elapsed < 150):
            _ingest(src, range(n, n + 1), acked)  # acknowledged: the memory serves without its replica
            n += 1
            unhealthy = unhealthy or _condition_is(src, "False", "Lagging", "NotReplicating")
            time.sleep(2)
        operator_lag = _operator_lag(release, src)
    finally:
        os.kill(s3_pid, signal.SIGCONT)
    after_outage = n - 1
    assert unhealthy is not None, f"ReplicationHealthy never turned False in the outage: {_replication(src)}"
    print(f"\n[continuous-e2e] during the outage: {unhealthy['reason']}: {unhealthy['message']}")
    warning = _event(real_node, src, "ReplicationLagging", "ReplicationStopped")
    assert warning is not None and warning["type"] == "Warning", _events(real_node, src)
    assert operator_lag is not None and operator_lag > 10, operator_lag
    # caught up: the replica holds a sync for each ingest of the outage (2 s apart: one sync each;
    # Litestream's retry backoff doubles up to 5 minutes, hence the patience)
    outage_ingests = after_outage - 10
    wait_until(
        lambda: _max_txid(s3.objects(replica)) >= base + outage_ingests,
        timeout=600,
        what="replication caught up",
        interval=5,
    )
    _wait_replicating(src, "ReplicationHealthy True again")
    resumed = wait_until(
        lambda: _event(real_node, src, "ReplicationResumed"), timeout=60, what="ReplicationResumed"
    )
    assert resumed["type"] == "Normal", resumed

    # 3'. the replication container alone killed: the agent keeps serving, the sidecar restarts
    # (a native sidecar: restartPolicy Always) and catches up
    restarts = _sidecar_restarts(src)
    before_kill = _max_txid(s3.objects(replica))
    os.kill(_sidecar_pid(real_node, src), signal.SIGKILL)
    _ingest(src, range(n, n + 5), acked)
    n += 5
    wait_until(
        lambda: _sidecar_restarts(src) > restarts and _sidecar_running(src),
        timeout=120,
        what="the Litestream sidecar restarted",
    )
    # Litestream numbers its syncs, not SQLite's transactions: the five memories written while it
    # was down go up in the restarted sidecar's first sync; the restore at "latest" below checks
    # that each of them is in the replica.
    wait_until(
        lambda: _max_txid(s3.objects(replica)) > before_kill,
        timeout=300,
        what="the restarted sidecar caught up",
        interval=5,
    )
    _wait_replicating(src, "ReplicationHealthy True after the sidecar's restart")

    # 1. a steady ingest, then SIGKILL of every container of the pod at a random moment
    kill_after = random.uniform(4, 9)
    started = time.monotonic()
    first_of_crash = n
    with src.client() as http:
        while time.monotonic() - started < kill_after:
            remember(http, _marker(n), tags=["continuous-e2e"])
            acked[n] = time.time()
            n += 1
    pids = _pids(real_node, src)
    assert len(pids) == 3, pids  # vestige, bridge, litestream
    killed_at = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    real_node.kubectl(
        "-n",
        ns,
        "patch",
        "vestigememory",
        "src",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}}),
    )

    latest = _restore(continuous_agents, "latest", s3, f"{ns}/src", "latest")
    latest.wait_ready()
    have = _markers(latest.volume_dir())
    must = {k for k, t in acked.items() if t < killed_at - TARGET_WINDOW}
    assert must <= have, f"lost: {sorted(must - have)}"
    assert set(range(1, after_outage + 1)) <= have, "the outage's memories were not caught up"
    lost = [t for k, t in acked.items() if k not in have]
    window = killed_at - min(lost) if lost else 0.0
    print(
        f"\n[continuous-e2e] crash after {kill_after:.1f}s of ingest ({n - first_of_crash} memories): "
        f"loss window {window:.2f}s, {len(lost)} acknowledged memories lost"
    )

    between = _restore(continuous_agents, "between", s3, f"{ns}/src", moment)
    between.wait_ready()
    assert _markers(between.volume_dir()) == set(range(1, 6))

    # 4. refusals: nothing is written to the volume
    old = _restore(continuous_agents, "too-old", s3, f"{ns}/src", _rfc3339(time.time() - 7200))
    cond = wait_until(lambda: _stalled(old), timeout=180, what="Stalled RestoreRefused", interval=2)
    assert cond["reason"] == "RestoreRefused" and "outside the retained window" in cond["message"], cond
    volume = old.volume_dir()
    assert not (volume / "vestige" / "vestige.db").exists()
    assert not (volume / "vestige" / ".vestige-restored.json").exists()
    thief = _restore(continuous_agents, "thief", s3, "other-tenant/src", "latest")
    cond = wait_until(lambda: _stalled(thief), timeout=120, what="Stalled RestoreRefused", interval=2)
    assert cond["reason"] == "RestoreRefused" and "another namespace" in cond["message"], cond
    assert real_node.get(ns, "deployment", "thief") is None

    # a restore that fails without a refusal (the object store unreachable: nothing listens on
    # that port) is said while the kubelet retries it: Ready False, RestoreFailing
    destination = s3.destination()
    destination["s3"]["endpoint"] = destination["s3"]["endpoint"].rsplit(":", 1)[0] + ":1"
    unreachable = continuous_agents.create(
        "unreachable",
        spec={
            "restore": {
                "fromBackup": {"destination": destination, "source": f"{ns}/src", "pointInTime": "latest"}
            }
        },
    )

    def failing() -> dict[str, Any] | None:
        conds = (unreachable.resource().get("status") or {}).get("conditions") or []
        ready = next((c for c in conds if c["type"] == "Ready"), {})
        return ready if ready.get("reason") == "RestoreFailing" else None

    ready = wait_until(failing, timeout=240, what="Ready False, RestoreFailing", interval=2)
    assert ready["status"] == "False" and "init container restore exited with" in ready["message"], ready
    assert _stalled(unreachable) is None  # retried, not refused
    assert not (unreachable.volume_dir() / "vestige" / "vestige.db").exists()
