"""The v1 stand-in (stdio) behind the gateways a v1 deployment may use, on 127.0.0.1 only.

* PyPI ``mcp-proxy`` (the v1 variant's gateway; binds 127.0.0.1 by default) over SSE, and with
  ``VESTIGE_TRANSPORT=auto`` (Streamable HTTP first, SSE fallback) against an SSE-only URL.
* npm ``supergateway`` (the predecessor's gateway, stateful Streamable HTTP), once, for
  compatibility. It has no bind option: a preload binds its listener to 127.0.0.1 and the test
  checks the listening address before sending anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.bridge.conftest import (
    Bridge,
    Upstream,
    listening_address,
    start_bridge,
    start_v1_behind_mcp_proxy,
    start_v1_behind_supergateway,
)


def roundtrip(bridge: Bridge, upstream: Upstream, text: str) -> None:
    with bridge.client() as http:
        health = http.get("/health").json()
        assert health["vestige_connected"] is True, health
        assert health["tool_generation"] == "v1"
        stored = http.post("/ingest", json={"content": text, "tags": ["gw"]})
        assert stored.status_code == 200 and stored.json()["success"], stored.text
        node = json.loads(stored.json()["data"]["content"][0]["text"])["nodeId"]
        found = http.post("/search", json={"query": text.split()[0]})
        assert found.status_code == 200, found.text
        results = json.loads(found.json()["data"]["content"][0]["text"])["results"]
        assert [r["id"] for r in results] == [node]
        promoted = http.post("/promote", json={"memory_id": node})
        assert promoted.json()["success"] is True
    calls = upstream.calls.calls()
    assert [(c["tool"], c["valid"]) for c in calls] == [
        ("ingest", True),
        ("search", True),
        ("promote_memory", True),
    ]
    assert calls[2]["arguments"] == {"id": node}


def test_v1_behind_supergateway(tmp_path: Path, supergateway: Path) -> None:
    upstream = start_v1_behind_supergateway(tmp_path, supergateway)
    try:
        port = int(upstream.mcp_url.split(":")[2].split("/")[0])
        assert listening_address(port) == "127.0.0.1"
        bridge = start_bridge(tmp_path, upstream)
        try:
            roundtrip(bridge, upstream, "supergateway carries stdio")
        finally:
            bridge.stop()
    finally:
        upstream.stop()


def test_v1_behind_mcp_proxy_over_sse(tmp_path: Path, mcp_proxy: Path) -> None:
    upstream = start_v1_behind_mcp_proxy(tmp_path, mcp_proxy)
    try:
        port = int(upstream.mcp_url.split(":")[2].split("/")[0])
        assert listening_address(port) == "127.0.0.1"
        bridge = start_bridge(tmp_path, upstream, VESTIGE_TRANSPORT="sse")
        try:
            roundtrip(bridge, upstream, "sse transport works")
            log = bridge.proc.output()
            assert "over sse" in log
        finally:
            bridge.stop()
    finally:
        upstream.stop()


def test_auto_transport_falls_back_to_sse(tmp_path: Path, mcp_proxy: Path) -> None:
    upstream = start_v1_behind_mcp_proxy(tmp_path, mcp_proxy)
    try:
        assert upstream.sse_url is not None
        # a URL that answers Streamable HTTP with 404: auto must fall back to the SSE endpoint
        upstream.mcp_url = upstream.sse_url.removesuffix("/sse") + "/nowhere/mcp"
        bridge = start_bridge(tmp_path, upstream, VESTIGE_TRANSPORT="auto")
        try:
            roundtrip(bridge, upstream, "fallback to sse")
            assert "over sse" in bridge.proc.output()
        finally:
            bridge.stop()
    finally:
        upstream.stop()
