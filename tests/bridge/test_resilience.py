"""Vestige down (502/503), Vestige restarted (session lost -> re-initialize, retry once), metrics."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx

from tests.bridge.conftest import free_port, start_bridge, start_standin_http


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def test_vestige_down_then_restarted(tmp_path: Path) -> None:
    port = free_port()
    upstream = start_standin_http(tmp_path / "a", "v3", port=port)
    bridge = start_bridge(tmp_path, upstream)
    try:
        with bridge.client() as http:
            first = http.post("/ingest", json={"content": "before the restart"})
            assert first.status_code == 200 and first.json()["success"] is True

            upstream.stop()
            down = http.post("/search", json={"query": "restart"})
            assert down.status_code == 502, down.text
            assert down.json()["success"] is False
            assert down.json()["error"].startswith("Vestige unavailable")
            health = http.get("/health")
            assert health.status_code == 503
            assert health.json()["vestige_connected"] is False
            assert health.json()["status"] == "unhealthy"
            assert http.get("/readyz").status_code == 503
            assert http.get("/livez").status_code == 200  # liveness stays shallow

            # same port, new process: the bridge's session id is unknown there (404 -> lost session)
            upstream = start_standin_http(tmp_path / "b", "v3", port=port)
            again = http.post("/ingest", json={"content": "after the restart"})
            assert again.status_code == 200, again.text
            assert again.json()["success"] is True
            assert upstream.calls.last()["arguments"]["content"] == "after the restart"
            assert http.get("/health").json()["vestige_connected"] is True

            text = http.get("/metrics").text
        assert metric(text, "vestige_bridge_mcp_reconnects_total") >= 1
        assert metric(text, "vestige_bridge_mcp_errors_total", kind="connect") >= 1
        assert (
            metric(text, "vestige_bridge_requests_total", route="/search", method="POST", status="502") == 1
        )
        assert (
            metric(text, "vestige_bridge_requests_total", route="/ingest", method="POST", status="200") == 2
        )
        assert metric(text, "vestige_bridge_mcp_calls_total", tool="smart_ingest", outcome="ok") == 2
        assert metric(text, "vestige_bridge_vestige_connected") == 1
        assert metric(text, "vestige_bridge_vestige_info", version="3.1.1", generation="v3") == 1
        assert (
            metric(text, "vestige_bridge_request_duration_seconds_count", route="/ingest", method="POST") == 2
        )
    finally:
        bridge.stop()
        upstream.stop()


def test_restart_while_connected_reinitializes_once(tmp_path: Path) -> None:
    """A restart between two calls: the next call re-initializes and succeeds (no 502)."""
    port = free_port()
    upstream = start_standin_http(tmp_path / "a", "v3", port=port)
    bridge = start_bridge(tmp_path, upstream)
    try:
        with bridge.client() as http:
            assert http.get("/stats").status_code == 200
            upstream.stop()
            upstream = start_standin_http(tmp_path / "b", "v3", port=port)
            response = http.get("/stats")
            assert response.status_code == 200, response.text
            assert response.json()["success"] is True
            text = http.get("/metrics").text
        assert metric(text, "vestige_bridge_mcp_errors_total", kind="session_lost") == 1
        assert metric(text, "vestige_bridge_mcp_reconnects_total") == 1
        assert [c["tool"] for c in upstream.calls.calls()] == ["memory_status"]
    finally:
        bridge.stop()
        upstream.stop()


def test_wrong_upstream_token_is_502_not_401(tmp_path: Path) -> None:
    upstream = start_standin_http(tmp_path, "v3")
    upstream.token = "not-the-vestige-token"
    bridge = start_bridge(tmp_path, upstream)
    try:
        with bridge.client() as http:
            response = http.post("/search", json={"query": "x"})
            assert response.status_code == 502
            assert http.get("/health").status_code == 503
    finally:
        bridge.stop()
        upstream.stop()


def test_nothing_listening_is_502(tmp_path: Path) -> None:
    bridge = start_bridge(tmp_path, None, VESTIGE_MCP_URL=f"http://127.0.0.1:{free_port()}/mcp")
    try:
        with bridge.client() as http:
            for _ in range(3):
                response = http.post("/ingest", json={"content": "x"})
                assert response.status_code == 502
                assert "ConnectError" in response.json()["error"]
    finally:
        bridge.stop()


def test_every_call_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    upstream = start_standin_http(tmp_path, "v3")
    bridge = start_bridge(tmp_path, upstream, VESTIGE_REQUEST_TIMEOUT="1")
    try:
        with bridge.client() as http:
            started = time.monotonic()
            response = http.post("/search", json={"query": "__sleep__4"})
            assert response.status_code == 502, response.text
            assert "did not answer within 1s" in response.json()["error"]
            assert time.monotonic() - started < 3.5
            assert http.post("/search", json={"query": "fast"}).status_code == 200  # session still usable
            text = http.get("/metrics").text
        assert metric(text, "vestige_bridge_mcp_errors_total", kind="timeout") == 1
    finally:
        bridge.stop()
        upstream.stop()


def test_concurrent_requests_share_one_session(tmp_path: Path) -> None:
    upstream = start_standin_http(tmp_path, "v3")
    bridge = start_bridge(tmp_path, upstream)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=bridge.url, headers=bridge.headers(), timeout=60) as client:
            sem = asyncio.Semaphore(25)

            async def one(i: int) -> int:
                async with sem:
                    response = await client.post("/ingest", json={"content": f"concurrent memory {i}"})
                    return response.status_code

            return await asyncio.gather(*(one(i) for i in range(100)))

    try:
        statuses = asyncio.run(burst())
        assert statuses == [200] * 100
        with bridge.client() as http:
            text = http.get("/metrics").text
        assert metric(text, "vestige_bridge_mcp_reconnects_total") == 0
        assert len({c["arguments"]["content"] for c in upstream.calls.calls()}) == 100
        assert metric(text, "vestige_bridge_mcp_errors_total", kind="session_lost") == 0
        assert metric(text, "vestige_bridge_mcp_calls_total", tool="smart_ingest", outcome="ok") == 100
    finally:
        bridge.stop()
        upstream.stop()
