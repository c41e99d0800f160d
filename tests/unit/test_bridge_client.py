"""Pure parts of the bridge's MCP client: which failures mean "session lost, retry once"."""

from __future__ import annotations

import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from vestige_bridge.mcp_client import describe, session_lost


@pytest.mark.parametrize(
    ("code", "message", "lost"),
    [
        (types.INVALID_REQUEST, "Session terminated", True),  # SDK: HTTP 404 with a session id
        (types.CONNECTION_CLOSED, "Connection closed", True),
        (types.INTERNAL_ERROR, "Server returned an error response", True),  # bare HTTP 4xx/5xx
        (-32000, "Bad Request: No valid session ID provided", True),  # supergateway
        (types.INVALID_REQUEST, "Invalid or expired session", True),
        (types.INVALID_PARAMS, "Unknown tool: nope", False),
        (types.METHOD_NOT_FOUND, "Not Found", False),
        (types.REQUEST_TIMEOUT, "Timed out while waiting for response", False),
        (types.INTERNAL_ERROR, "database is locked", False),
    ],
)
def test_session_lost(code: int, message: str, lost: bool) -> None:
    assert session_lost(MCPError(code, message)) is lost


def test_describe_never_includes_headers() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1:3100/mcp", headers={"Authorization": "Bearer s3cret"})
    text = describe(ExceptionGroup("g", [httpx2.ConnectError("refused", request=request)]))
    assert text == "ConnectError for http://127.0.0.1:3100/mcp"
    assert "s3cret" not in text
    assert describe(MCPError(-32600, "unauthorized")) == "MCP error -32600: unauthorized"
    assert describe(RuntimeError()) == "RuntimeError"


def test_concurrent_health_checks_share_one_round_trip() -> None:
    """/health and /readyz are public: 50 concurrent probes cost Vestige one tools/list, and a
    probe that gives up does not cancel it for the others."""
    import asyncio

    from vestige_bridge.mapping import ServerProfile
    from vestige_bridge.mcp_client import VestigeClient
    from vestige_bridge.metrics import Metrics
    from vestige_bridge.settings import Settings

    client = VestigeClient(Settings(VESTIGE_AUTH_TOKEN="t"), Metrics())
    profile = ServerProfile(name="vestige", version="3.1.1", protocol_version="2025-11-25", tools={})
    calls = 0

    async def run(call: object, limit: float) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        client._conn = type("Conn", (), {"profile": profile, "closed": asyncio.Event()})()  # type: ignore[assignment]

    client.run = run  # type: ignore[method-assign]

    async def probes() -> list[ServerProfile]:
        impatient = asyncio.ensure_future(client.check(5))
        await asyncio.sleep(0)
        impatient.cancel()
        return await asyncio.gather(*(client.check(5) for _ in range(50)))

    assert asyncio.run(probes()) == [profile] * 50
    assert calls == 1
