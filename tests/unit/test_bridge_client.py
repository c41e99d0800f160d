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
