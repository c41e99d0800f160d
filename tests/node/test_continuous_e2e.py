"""Continuous backup end to end on the real node (issue 23, done-when 1-4).

An S3 server (versitygw, ``tests.s3``) runs as a pod behind a Service in the test namespace; an
agent (the v3 stand-in, its memories in ``/data/vestige/vestige.db``, SQLite WAL) runs with
``spec.backup.continuous`` (the Litestream sidecar built from images/litestream, syncInterval
500ms). Memories go in through the bridge; what a restored memory holds is read from its volume
(the stand-in's table), so a memory that must be ABSENT is checked as exactly as one that must
be there.

1. SIGKILL of every container of the pod at a random moment of a steady ingest; a NEW memory
   restored at "latest" holds every memory acknowledged more than the target window (1 s)
   before the kill; integrity_check ok; the measured window is printed.
2. A NEW memory restored at a time between two ingests holds those before it only.
3. The S3 server down for a minute (its process frozen): the agent keeps serving (every ingest acknowledged);
   replication catches up afterwards: a restore at "latest" holds every memory.
   (ReplicationHealthy and its events need an operator in the cluster, which asks the pod; this
   test runs the operator on the host, which asks no pod: they are checked in-process,
   tests/unit/test_replication.py. The bridge's lag gauge is checked while replication runs.)
4. A time outside the retained window, and another namespace's replica, are refused with
   Stalled RestoreRefused; the refused volume is not touched.
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
from tests.integration.operator_fixtures import OperatorFactory
from tests.node.helpers import Agent, Agents, RealNode, remember
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
def continuous_agents(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    operator_factory: OperatorFactory,
    crd_installed: None,
    litestream_ref: str,
) -> Iterator[Agents]:
    with Agents.open(
        real_node, built_images, operator_factory, env={"VESTIGE_LITESTREAM_IMAGE": litestream_ref}
    ) as made:
        yield made


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


def _sidecar_running(agent: Agent) -> bool:
    for status in agent.pod()["status"].get("initContainerStatuses") or []:
        if status["name"] == "litestream":
            return "running" in (status.get("state") or {})
    return False


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
    continuous_agents: Agents, real_node: RealNode, s3: S3Pod
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
    try:
        while time.monotonic() - outage_started < 60:
            _ingest(src, range(n, n + 1), acked)  # acknowledged: the memory serves without its replica
            n += 1
            time.sleep(2)
    finally:
        os.kill(s3_pid, signal.SIGCONT)
    after_outage = n - 1
    # caught up: the replica holds a transaction for each ingest of the outage (Litestream's retry
    # backoff doubles up to 5 minutes, hence the patience)
    outage_ingests = after_outage - 10
    wait_until(
        lambda: _max_txid(s3.objects(replica)) >= base + outage_ingests,
        timeout=600,
        what="replication caught up",
        interval=5,
    )

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
