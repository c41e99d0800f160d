"""NetworkPolicy enforced on the real node (issue 12, done-when 6).

kube-router's NetworkPolicy controller (``tests/cluster/netpol.py``) runs as a pod on the node;
an agent whose ``networkPolicy.from`` allows only pods labelled ``role=client`` is probed from
peer pods on the same node (traffic between pods only: the bridge ``vestige0``):

- ``client`` (``role=client``, same namespace): reaches the bridge port, 401 without the token;
- ``stranger`` (``role=other``, same namespace) and ``outsider`` (``role=client``, another
  namespace: a bare podSelector matches only the policy's own namespace): rejected;
- with ``networkPolicy.enabled: false`` the operator removes the NetworkPolicy and the outsider
  gets through (401).

kube-router answers a denied connection with REJECT (ICMP port unreachable), so the connect() of a
denied peer fails with ECONNREFUSED, while the same listener answers the allowed peer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import netpol, node
from tests.integration.helpers import wait_until
from tests.node.helpers import Agent, Agents, RealNode

#: Run inside a peer pod: ``python -c PROBE <ip>`` prints one JSON line: how a TCP connect to the
#: bridge port ended ("refused", "timeout", "error: ...") or the HTTP status of POST /search.
PROBE = """
import json, socket, sys, urllib.error, urllib.request
target = sys.argv[1]
s = socket.socket()
s.settimeout(5)
try:
    s.connect((target, 8000))
except ConnectionRefusedError:
    print(json.dumps("refused")); sys.exit()
except TimeoutError:
    print(json.dumps("timeout")); sys.exit()
except OSError as e:
    print(json.dumps("error: " + str(e))); sys.exit()
s.close()
try:
    urllib.request.urlopen("http://%s:8000/search" % target, data=b"{}", timeout=10)
    print(json.dumps(200))
except urllib.error.HTTPError as e:
    print(json.dumps(e.code))
"""


def _peer(namespace: str, name: str, role: str, image: str) -> dict[str, Any]:
    """A long-running pod (PSA restricted) with Python, to exec probes in."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"role": role}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            **node.POD_PLACEMENT,
            "containers": [
                {
                    "name": "peer",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", "import time; time.sleep(86400)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def _probe(rn: RealNode, namespace: str, pod: str, target: str) -> Any:
    proc = rn.kubectl("-n", namespace, "exec", pod, "--", "python", "-c", PROBE, target, timeout=60)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _running(rn: RealNode, namespace: str, name: str) -> dict[str, Any] | None:
    pod = rn.get(namespace, "pod", name)
    return pod if pod and pod["status"].get("phase") == "Running" else None


@pytest.fixture(scope="module")
def other_namespace(real_node: RealNode) -> Iterator[str]:
    ns = f"netpol-{uuid.uuid4().hex[:6]}"
    real_node.kubectl("create", "namespace", ns)
    real_node.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    yield ns
    real_node.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_peer_outside_network_policy_from_is_rejected(
    policy_engine: str, agents: Agents, other_namespace: str
) -> None:
    rn = agents.rn
    allowed = [{"podSelector": {"matchLabels": {"role": "client"}}}]
    agent: Agent = agents.create("guarded", spec={"networkPolicy": {"from": allowed}})
    agent.wait_ready()  # kubelet probes come from the node itself: still allowed
    policy = rn.get(agents.namespace, "networkpolicy", agent.name)
    assert policy is not None and policy["spec"]["ingress"][0]["from"] == allowed

    image = agents.images.bridge
    # The denied peers first, the allowed one last: once the allowed one gets through, the
    # engine has synced with every peer's address known.
    rn.apply(_peer(agents.namespace, "stranger", "other", image))
    rn.apply(_peer(other_namespace, "outsider", "client", image))
    rn.apply(_peer(agents.namespace, "client", "client", image))
    for ns, name in (
        (agents.namespace, "stranger"),
        (other_namespace, "outsider"),
        (agents.namespace, "client"),
    ):
        wait_until(lambda ns=ns, name=name: _running(rn, ns, name), timeout=120, what=f"{name} Running")
    target = agent.pod()["status"]["podIP"]

    wait_until(
        lambda: _probe(rn, agents.namespace, "client", target) == 401 or None,
        timeout=90,
        what="the allowed client to reach the bridge (401 without the token)",
        interval=2,
    )
    assert _probe(rn, agents.namespace, "stranger", target) == "refused"
    assert _probe(rn, other_namespace, "outsider", target) == "refused"
    # The engine's rules name this pod (what rejected them, not a missing listener: the client
    # above got an HTTP answer from the same address and port).
    rules = netpol.filter_rules(rn.layout)
    assert f"rule to REJECT traffic destined for POD name:{agent.pod()['metadata']['name']}" in rules

    rn.kubectl(
        "-n",
        agents.namespace,
        "patch",
        "vestigememory",
        agent.name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"networkPolicy": {"enabled": False}}}),
    )
    wait_until(
        lambda: rn.get(agents.namespace, "networkpolicy", agent.name) is None or None,
        timeout=60,
        what="the operator to remove the NetworkPolicy",
    )
    wait_until(
        lambda: _probe(rn, other_namespace, "outsider", target) == 401 or None,
        timeout=90,
        what="the outsider to get through once no policy selects the agent",
        interval=2,
    )
    assert _probe(rn, agents.namespace, "stranger", target) == 401
