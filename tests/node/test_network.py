"""Pods have no route off the machine (issue 12): checked by reading the node namespace's routes
and rules and a pod's routing table, never by sending traffic out."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from tests.cluster import node
from tests.node.helpers import RealNode


def test_node_namespace_has_no_way_out(real_node: RealNode) -> None:
    guard = node.network_guard(real_node.layout)
    main = [r for r in guard["routes"] if r.get("table", "main") == "main"]
    assert main, guard["routes"]
    assert not [r for r in main if r.get("dst") == "default"], f"a default route: {main}"
    allowed = {
        ipaddress.ip_network(f"{node.HOST_IP}/{node.NODE_NET_PREFIX}", strict=False): guard["veth_node"],
        ipaddress.ip_network(node.POD_CIDR): node.BRIDGE,
    }
    for route in main:
        net = ipaddress.ip_network(route["dst"], strict=False)
        if net.version == 6 and (net.is_link_local or net.is_multicast):
            continue  # on-link only: never forwarded
        assert allowed.get(net) == route.get("dev"), f"unexpected route {route}"
    # Nothing is forwarded out of the namespace (the mangle table is not kube-proxy's).
    assert f"-A FORWARD -o {guard['veth_node']} -j DROP" in guard["mangle_forward"], guard["mangle_forward"]
    # No NAT to the outside: kube-proxy's only MASQUERADE is for packets it marked for hairpin
    # Service traffic inside the namespace; the CNI bridge adds none (ipMasq false).
    for rule in guard["masquerade"]:
        assert "KUBE-POSTROUTING" in rule, f"a masquerade rule not gated by kube-proxy's mark: {rule}"
    # The host has no route into the pod network (its only link to the node is the veth's /30),
    # so even a host that forwards (buildah may switch ip_forward on) has nothing to pass on: the
    # node's namespace drops every packet it would forward out of the veth (above).
    host_routes = real_node_host_routes()
    pods = ipaddress.ip_network(node.POD_CIDR)
    for route in host_routes:
        dst = route.get("dst", "")
        if dst and dst != "default" and ":" not in dst:
            net = ipaddress.ip_network(dst, strict=False)
            assert not net.overlaps(pods), f"host route into pods: {route}"


def real_node_host_routes() -> list[dict[str, str]]:
    out = subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out or "[]"))
