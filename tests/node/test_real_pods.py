"""Agents whose containers really run (issue 12): each pod shape the operator renders becomes
Ready because its probes pass, answers through ``kubectl port-forward``, keeps its memories
through restarts and re-creation, and keeps its data, token and port to itself."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests import cluster
from tests.cluster import images as image_builds
from tests.cluster import node
from tests.integration.helpers import wait_until
from tests.node.helpers import Agent, Agents, found_after, recall, remember, wait_gone

#: agent name -> (real Vestige version of a v1-shape image, or None for the operator's default
#: image: the v3 stand-in; the generation the operator renders)
SHAPES = {
    "v3": (None, None),
    "v1-130": ("1.3.0", "v1"),
    "v1-200": ("2.0.0", "v1"),
}
STABLE_SECONDS = 60
#: Image builds (first run) and pod start-ups on a small shared machine.
pytestmark = pytest.mark.timeout(1800)


def missing_vestige(version: str | None) -> None:
    """A v1-shape image needs the real Vestige built from the vendored sources."""
    reason = image_builds.vestige_unavailable() or f"no image of Vestige {version} was built"
    if os.environ.get("VESTIGE_REQUIRE_REAL_NODE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shape_agents(agents: Agents) -> dict[str, Agent]:
    """One agent per pod shape, created together so their start-ups overlap."""
    made = {}
    for name, (version, generation) in SHAPES.items():
        if version and version not in agents.images.vestige:
            continue  # its test says why
        image = agents.images.vestige[version] if version else None
        made[name] = agents.create(name, image=image, generation=generation)
    for agent in made.values():
        agent.wait_ready()
    return made


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape_ready_by_probes_and_serves(shape_agents: dict[str, Agent], shape: str) -> None:
    if shape not in shape_agents:
        missing_vestige(SHAPES[shape][0])
    agent = shape_agents[shape]
    pod = agent.pod()
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds.get("Ready") == "True" and conds.get("ContainersReady") == "True", pod["status"]
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert set(statuses) == {"vestige", "bridge"}
    assert all(s["ready"] and "running" in s["state"] for s in statuses.values()), statuses
    assert all(s["containerID"].startswith("containerd://") for s in statuses.values())
    assert pod["spec"]["nodeName"] == "vestige-node-0"
    with agent.client() as http:
        remember(http, f"the {shape} agent likes oolong tea", tags=[shape])
        assert f"the {shape} agent likes oolong" in recall(http, "oolong")


def test_no_container_restarts_for_a_minute(shape_agents: dict[str, Agent]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < STABLE_SECONDS:
        for name, agent in shape_agents.items():
            counts = agent.restart_counts()
            assert counts == {"vestige": 0, "bridge": 0}, f"{name}: {counts}\n{agent.diagnose()}"
        time.sleep(5)


def test_containers_run_restricted(shape_agents: dict[str, Agent]) -> None:
    for name, agent in shape_agents.items():
        for container in ("vestige", "bridge"):
            where = f"{name}/{container}"
            assert agent.exec(container, "id", "-u").stdout.strip() == "1000", where
            status = agent.exec(container, "cat", "/proc/1/status").stdout
            caps = {
                k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)
            }
            for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(caps[cap], 16) == 0, f"{where}: {cap}={caps[cap]}"
            assert caps["NoNewPrivs"] == "1", where
            assert caps["Seccomp"] == "2", f"{where}: seccomp mode {caps['Seccomp']}"
            denied = agent.exec(container, "touch", "/root-fs-write-test", check=False)
            assert denied.returncode != 0 and "Read-only file system" in denied.stderr, where
            sa = agent.exec(container, "ls", "/var/run/secrets/kubernetes.io/serviceaccount", check=False)
            assert sa.returncode != 0, f"{where}: a service-account token is mounted"


def test_volume_files_belong_to_the_agent(shape_agents: dict[str, Agent]) -> None:
    """What Vestige wrote is uid 1000's, and no other user of the node can read it: the volume's
    root carries the pod's fsGroup with no bits for others, so nothing below it is reachable
    (Vestige itself creates its SQLite files 0644, as SQLite does with the usual umask)."""
    for name, agent in shape_agents.items():
        root = agent.volume_dir()
        files = [p for p in root.rglob("*") if p.is_file()]
        assert any(p.name.startswith("vestige.db") for p in files), f"{name}: no store in {root}: {files}"
        st = root.lstat()
        assert st.st_mode & 0o007 == 0, f"{name}: the volume root is open to others ({oct(st.st_mode)})"
        assert st.st_gid == 1000, f"{name}: the volume root's group is {st.st_gid}, not the fsGroup"
        for path in root.rglob("*"):
            assert path.lstat().st_uid == 1000, f"{name}: {path} belongs to uid {path.lstat().st_uid}"


def test_memories_survive_pod_and_operator_restarts(agents: Agents, shape_agents: dict[str, Agent]) -> None:
    agent = shape_agents["v3"]
    with agent.client() as http:
        remember(http, "persistence check: the kettle is blue")
    old = agent.pod()["metadata"]["name"]
    agents.rn.kubectl("-n", agent.namespace, "delete", "pod", old, "--wait=true")
    agent.wait_ready()
    found_after(agent.client, "kettle", "the kettle is blue")

    assert agents.operator is not None  # the module's operator runs on the host
    agents.operator.restart()
    agent.wait_ready()
    found_after(agent.client, "kettle", "the kettle is blue")


def test_memories_survive_recreation_with_retain(agents: Agents) -> None:
    agent = agents.create("phoenix", spec={"storage": {"reclaimPolicy": "Retain"}})
    agent.wait_ready()
    with agent.client() as http:
        remember(http, "the phoenix remembers the ashes")
    agents.rn.kubectl("-n", agent.namespace, "delete", "vestigememory", agent.name, "--wait=true")
    wait_gone(lambda: agents.rn.get(agent.namespace, "deployment", agent.name), what="the Deployment")
    assert agents.rn.get(agent.namespace, "pvc", f"{agent.name}-data") is not None, "Retain lost the claim"
    again = agents.create("phoenix", spec={"storage": {"reclaimPolicy": "Retain"}}, volume=False)
    again.wait_ready()
    found_after(again.client, "ashes", "the phoenix remembers the ashes")


def test_isolation_inside_the_cluster(agents: Agents, shape_agents: dict[str, Agent]) -> None:
    a = shape_agents["v3"]
    b = next((v for k, v in shape_agents.items() if k != "v3"), None)
    if b is None:  # only the v3 shape could be built here: a second agent of that shape
        b = agents.create("other")
        b.wait_ready()
    target = a.pod()["status"]["podIP"]
    probe = agents.images.bridge
    script = f"""
import json, socket, urllib.request, urllib.error
out = {{}}
s = socket.socket(); s.settimeout(5)
try:
    s.connect(("{target}", 3100)); out["vestige_port"] = "open"
except ConnectionRefusedError:
    out["vestige_port"] = "refused"
except OSError as e:
    out["vestige_port"] = "error: " + str(e)
try:
    urllib.request.urlopen("http://{target}:8000/search", data=b"{{}}", timeout=5)
    out["bridge"] = 200
except urllib.error.HTTPError as e:
    out["bridge"] = e.code
try:
    urllib.request.urlopen("http://{a.name}.{a.namespace}.svc.cluster.local:8000/livez", timeout=5)
    out["dns_service"] = "ok"
except Exception as e:
    out["dns_service"] = "error: " + str(e)
print(json.dumps(out))
"""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "neighbour", "namespace": agents.namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            **node.POD_PLACEMENT,
            "containers": [
                {
                    "name": "probe",
                    "image": probe,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", script],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }
    agents.rn.apply(pod)

    def finished() -> dict | None:
        obj = agents.rn.get(agents.namespace, "pod", "neighbour")
        return obj if obj and obj["status"].get("phase") in ("Succeeded", "Failed") else None

    done = wait_until(finished, timeout=120, what="the neighbour pod", interval=1)
    logs = agents.rn.kubectl("-n", agents.namespace, "logs", "neighbour").stdout
    assert done["status"]["phase"] == "Succeeded", logs
    result = json.loads(logs.strip().splitlines()[-1])
    assert result == {"vestige_port": "refused", "bridge": 401, "dns_service": "ok"}, result

    with b.client(token=a.token()) as http:
        resp = http.post("/search", json={"query": "anything"})
        assert resp.status_code == 401, resp.text


def _task_pid(rn, container_id: str) -> int:
    """The host pid of a container's main process, from containerd."""
    out = rn.ctr("tasks", "ls").stdout.splitlines()
    for line in out[1:]:
        cols = line.split()
        if cols and cols[0] == container_id:
            return int(cols[1])
    raise AssertionError(f"containerd has no task {container_id}")


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def test_vestige_killed_inside_its_container_recovers(agents: Agents, shape_agents: dict[str, Agent]) -> None:
    """The Vestige process dies (SIGKILL from the node, as the OOM killer would): its container
    ends with it, the kubelet starts it again, the bridge reconnects on its next call, and the
    memories stored before are still there. In the v1 shape Vestige is mcp-proxy's child: the
    container's shell wrapper ends the container when Vestige ends (mcp-proxy alone would keep
    answering with an empty stream)."""
    for name, agent in shape_agents.items():
        with agent.client() as http:
            remember(http, f"before the crash {name} kept a lantern")
        before = agent.restart_counts()
        pid = _task_pid(agents.rn, agent.container_id("vestige"))
        victims = [pid]
        if name != "v3":  # v1 shape: sh -> mcp-proxy -> vestige-mcp; kill vestige-mcp itself
            victims = [
                p
                for p in _descendants(pid)
                if Path(f"/proc/{p}/comm").read_text().strip().startswith("vestige-mcp")
            ]
            assert victims, f"{name}: no vestige-mcp process under {pid}"
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda a=agent, b=before: a.restart_counts()["vestige"] > b["vestige"],
            timeout=120,
            what=f"{name}'s vestige container to be restarted",
            interval=1,
        )
        agent.wait_ready()
        assert agent.restart_counts()["bridge"] == before["bridge"], f"{name}: the bridge restarted too"
        found_after(agent.client, "lantern", f"before the crash {name} kept a lantern")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for kid in _children(todo.pop()):
            out.append(kid)
            todo.append(kid)
    return out


def test_agents_come_back_after_containerd_restarts(agents: Agents, shape_agents: dict[str, Agent]) -> None:
    with shape_agents["v3"].client() as http:
        remember(http, "containerd restart: the owl stays awake")
    cluster.restart("containerd", downtime=2.0)
    for agent in shape_agents.values():
        agent.wait_ready()
    found_after(shape_agents["v3"].client, "owl", "containerd restart: the owl stays awake")


def test_a_pod_routes_only_into_the_node(shape_agents: dict[str, Agent]) -> None:
    """A pod's default route ends at the bridge's gateway address inside the node's namespace,
    which has no way further (tests/node/test_network.py reads that namespace's routes)."""
    gateway = str(next(ipaddress.ip_network(node.POD_CIDR).hosts()))
    out = shape_agents["v3"].exec("bridge", "cat", "/proc/net/route").stdout
    routes = [line.split() for line in out.splitlines()[1:] if line.strip()]
    default = [r for r in routes if r[1] == "00000000"]
    assert len(default) == 1, out
    gw = ipaddress.IPv4Address(bytes.fromhex(default[0][2])[::-1])
    assert str(gw) == gateway, f"default route via {gw}, not the bridge {gateway}"
