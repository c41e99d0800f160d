"""The demo as the README runs it (issue 25): `bash tests/demo.sh`, then `bash tests/demo.sh tour`,
in a namespace of its own (``VESTIGE_DEMO_NAMESPACE``) on the shared cluster, then `stop`.

Each of its agents runs in containerd on the real node with the real Vestige built here; the
port-forward the demo leaves stores and finds a memory, and an official MCP SDK client gets
answers on /mcp (a wrong token does not). The tour rotates a token, backs up to the S3 server in
the namespace, restores into a new agent that finds the memory, suspends and resumes.

Cost (images built, cluster running, 2-core machine): 93 s: up 24 s, tour 47 s, stop 20 s.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import demo_mcp
from tests.cluster import images as image_builds
from tests.cluster import node
from tests.node.helpers import RealNode

ROOT = Path(__file__).resolve().parents[2]
VERSION = "2.0.0"
AGENTS = ("my-agent", "research-assistant")
#: What the demo prints per agent: the version its server reports, then (indented) the forward.
FORWARD = re.compile(
    r"^(?P<agent>[a-z0-9-]+): Vestige (?P<version>\S+) .*?\n(?:  .*\n)*?"
    r"  port-forward \(left running\): (?P<url>http://127\.0\.0\.1:\d+)",
    re.M,
)

pytestmark = pytest.mark.timeout(1800)


def _demo(namespace: str, command: str, timeout: float) -> tuple[str, float]:
    """`bash tests/demo.sh COMMAND` with this virtualenv; its output (echoed) and duration."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "demo.sh"), command],
        cwd=ROOT,
        env={
            **os.environ,
            "VESTIGE_DEMO_NAMESPACE": namespace,
            "VESTIGE_VENV": str(Path(sys.executable).parents[1]),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    took = time.monotonic() - started
    print(f"\n--- bash tests/demo.sh {command} ({took:.0f}s)\n{proc.stdout}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0, (
        f"demo {command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout, took


@pytest.fixture(scope="module")
def demo(real_node: RealNode, built_images: image_builds.ImageRefs) -> Iterator[tuple[str, str]]:
    if VERSION not in built_images.vestige:
        reason = image_builds.vestige_unavailable() or f"no image of Vestige {VERSION} was built"
        if os.environ.get("VESTIGE_REQUIRE_REAL_NODE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    namespace = f"demo-t-{uuid.uuid4().hex[:6]}"
    try:
        out, _ = _demo(namespace, "up", timeout=1500)
        yield namespace, out
    finally:
        _demo(namespace, "stop", timeout=600)


def _forwards(out: str) -> dict[str, tuple[str, str]]:
    return {m["agent"]: (m["version"], m["url"]) for m in FORWARD.finditer(out)}


def _token(rn: RealNode, ns: str, agent: str) -> str:
    ref = rn.get(ns, "vestigememory", agent)["status"]["authSecretRef"]  # type: ignore[index]
    secret = rn.get(ns, "secret", ref["name"])
    assert secret is not None
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def test_every_agent_runs_the_real_vestige_in_containerd_on_the_real_node(
    demo: tuple[str, str], real_node: RealNode, built_images: image_builds.ImageRefs
) -> None:
    ns, out = demo
    forwards = _forwards(out)
    assert sorted(forwards) == sorted(AGENTS), out
    listed = json.loads(real_node.kubectl("-n", ns, "get", "vestigememories", "-o", "json").stdout)["items"]
    assert sorted(m["metadata"]["name"] for m in listed) == sorted(AGENTS)
    image = built_images.vestige[VERSION]
    for agent in AGENTS:
        version, url = forwards[agent]
        assert version == VERSION, f"{agent}: the demo says Vestige {version}"
        pods = json.loads(
            real_node.kubectl(
                "-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={agent}", "-o", "json"
            ).stdout
        )["items"]
        assert len(pods) == 1, pods
        pod = pods[0]
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
        assert all(s["ready"] for s in statuses.values()), statuses
        vestige = statuses["vestige"]
        assert vestige["containerID"].startswith("containerd://")
        # containerd of the real node runs that container, from the image built from the sources.
        info = json.loads(
            real_node.ctr("containers", "info", vestige["containerID"].split("://", 1)[1]).stdout
        )
        assert info["Image"] == image, info["Image"]
        # The running server says which Vestige it is (the bridge's deep health asks it).
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["vestige_version"] == VERSION and health["vestige_connected"] is True, health


def test_the_left_port_forwards_store_find_and_answer_mcp(demo: tuple[str, str], real_node: RealNode) -> None:
    ns, out = demo
    for agent, (_, url) in _forwards(out).items():
        token = _token(real_node, ns, agent)
        auth = {"Authorization": f"Bearer {token}"}
        word = f"zx{uuid.uuid4().hex[:8]}"
        stored = httpx.post(
            f"{url}/ingest", headers=auth, json={"content": f"{agent} keeps {word}"}, timeout=60
        )
        assert stored.status_code == 200 and stored.json()["success"] is True, stored.text
        found = httpx.post(f"{url}/search", headers=auth, json={"query": word}, timeout=60)
        assert found.status_code == 200 and f"{agent} keeps {word}" in json.dumps(found.json()["data"]), (
            found.text
        )
        answer = demo_mcp.ask(f"{url}/mcp", token, word)  # the official MCP SDK (tests/demo_mcp.py)
        assert {"search", "smart_ingest"} <= set(answer.tools), answer.tools
        assert f"{agent} keeps {word}" in answer.found, answer.found
        refused = httpx.post(f"{url}/mcp", headers={"Authorization": "Bearer wrong"}, json={}, timeout=30)
        assert refused.status_code == 401
    # The output's commands are the ones that work: the REST curl and the MCP client.
    assert 'curl -s -H "Authorization: Bearer $(kubectl vestige token my-agent' in out
    assert "python tests/demo_mcp.py http://127.0.0.1:" in out


def test_the_tour(demo: tuple[str, str], real_node: RealNode) -> None:
    ns, _ = demo
    before = real_node.get(ns, "vestigememory", "my-agent")["status"]  # type: ignore[index]
    out, _ = _demo(ns, "tour", timeout=1500)
    for step in ("== 1. Rotate", "== 2. Back up", "== 3. Restore", "== 4. Suspend", "tour done"):
        assert step in out, out
    after = real_node.get(ns, "vestigememory", "my-agent")
    assert after is not None and after["status"].get("tokenRotatedAt") != before.get("tokenRotatedAt")
    assert after["spec"].get("suspend") is not True
    backups = json.loads(real_node.kubectl("-n", ns, "get", "vestigebackups", "-o", "json").stdout)["items"]
    assert any(b.get("status", {}).get("phase") == "Completed" for b in backups), backups
    restored = _forwards(out)
    assert "research-agent-restored" in restored, out
    _, url = restored["research-agent-restored"]
    token = _token(real_node, ns, "research-agent-restored")
    found = httpx.post(
        f"{url}/search", headers={"Authorization": f"Bearer {token}"}, json={"query": "oolong"}, timeout=60
    )
    assert "research-assistant's favourite tea is oolong" in json.dumps(found.json()["data"]), found.text
    pv = real_node.get(ns, "pvc", "research-agent-restored-data")
    assert pv is not None and pv["spec"]["volumeName"].startswith(f"demo-{ns}-research-agent-restored-")
