"""The /mcp pass-through, used by an official MCP SDK client with the bridge token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.bridge.conftest import DATA_DIR, TOKEN, Bridge, Upstream

V3_TOOLS = {t["name"] for t in json.loads((DATA_DIR / "vestige-v3-tools.json").read_text())["tools"]}


async def with_session(bridge: Bridge, token: str, body: Any) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30))
    async with (
        http,
        streamable_http_client(bridge.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=30) as session,
    ):
        with anyio.fail_after(60):
            init = await session.initialize()
            return await body(session, init)


def test_mcp_client_through_the_bridge(v3_bridge: Bridge, v3_upstream: Upstream) -> None:
    v3_upstream.calls.clear()

    async def body(session: ClientSession, init: Any) -> dict[str, Any]:
        tools = await session.list_tools()
        stored = await session.call_tool("smart_ingest", {"content": "passthrough memory", "tags": ["mcp"]})
        found = await session.call_tool("recall", {"query": "passthrough"})
        rejected = await session.call_tool("recall", {"query": "x", "unknown_arg": 1})
        return {"init": init, "tools": tools, "stored": stored, "found": found, "rejected": rejected}

    out = anyio.run(with_session, v3_bridge, TOKEN, body)
    assert out["init"].server_info.name == "vestige-bridge"
    assert {t.name for t in out["tools"].tools} == V3_TOOLS
    assert not out["stored"].is_error
    node = json.loads(out["stored"].content[0].text)["nodeId"]
    assert not out["found"].is_error
    assert [r["id"] for r in json.loads(out["found"].content[0].text)["results"]] == [node]
    assert out["rejected"].is_error  # Vestige's own tool error comes back as is
    assert "unknown_arg" in out["rejected"].content[0].text
    calls = v3_upstream.calls.calls()
    assert [c["tool"] for c in calls] == ["smart_ingest", "recall", "recall"]
    assert calls[0]["arguments"] == {"content": "passthrough memory", "tags": ["mcp"]}


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def test_mcp_passthrough_needs_the_bridge_token(v3_bridge: Bridge) -> None:
    async def body(session: ClientSession, init: Any) -> None:
        raise AssertionError("initialize must not succeed with a wrong token")

    with pytest.raises(BaseExceptionGroup) as info:
        anyio.run(with_session, v3_bridge, "wrong-token", body)
    errors = leaves(info.value)
    assert all(isinstance(e, MCPError) for e in errors), errors  # the initialize POST got HTTP 401
    raw = httpx2.post(
        v3_bridge.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        headers={"Authorization": "Bearer wrong-token", "Accept": "application/json, text/event-stream"},
    )
    assert raw.status_code == 401


def test_mcp_passthrough_when_vestige_is_down(tmp_path: Path) -> None:
    from tests.bridge.conftest import free_port, start_bridge

    bridge = start_bridge(tmp_path, None, VESTIGE_MCP_URL=f"http://127.0.0.1:{free_port()}/mcp")

    async def body(session: ClientSession, init: Any) -> Any:
        try:
            await session.list_tools()
        except Exception as exc:
            return exc
        return None

    try:
        error = anyio.run(with_session, bridge, TOKEN, body)
    finally:
        bridge.stop()
    assert error is not None
    assert "Vestige unavailable" in str(error)


# -- the REST rules on pass-through arguments (issue 13, item 4) ---------------------------------

REFUSED_CALLS = [
    # (tool, arguments, the argument the error must name)
    ("maintain", {"action": "export", "path": "../../etc/passwd"}, "path"),
    ("maintain", {"action": "export", "path": "/data/vestige/stolen.json"}, "path"),
    ("maintain", {"action": "export", "path": "sub/dir.json"}, "path"),
    ("maintain", {"action": "restore", "allowAnyPath": True}, "allowAnyPath"),
    ("maintain", {"action": "restore", "path": "/tmp/other-agent.db"}, "path"),
    ("smart_ingest", {"content": "aws key", "allowSecrets": True}, "allowSecrets"),
    ("smart_ingest", {"items": [{"content": "k", "allowSecrets": True}]}, "items.0.allowSecrets"),
    ("memory", {"action": "purge", "id": "m1", "confirm": True}, "confirm"),
    ("memory", {"action": "delete", "id": "m1", "confirm": True}, "confirm"),
    ("purge", {"id": "m1", "confirm": True}, "confirm"),
]


def test_passthrough_refuses_what_the_rest_api_never_allows(v3_bridge: Bridge, v3_upstream: Upstream) -> None:
    """Each call breaking a REST rule gets a JSON-RPC error naming the argument; Vestige sees none."""

    async def body(session: ClientSession, init: Any) -> list[tuple[str, Any]]:
        out = []
        for tool, arguments, _ in REFUSED_CALLS:
            try:
                result = await session.call_tool(tool, arguments)
            except MCPError as exc:
                out.append(("error", exc))
            else:
                out.append(("result", result))
        return out

    v3_upstream.calls.clear()
    outcomes = anyio.run(with_session, v3_bridge, TOKEN, body)
    for (tool, arguments, argument), (kind, value) in zip(REFUSED_CALLS, outcomes, strict=True):
        assert kind == "error", f"{tool} {arguments} was forwarded: {value}"
        assert value.error.code == -32602, (tool, arguments, value.error)
        assert f"argument '{argument}'" in value.error.message, value.error.message
        assert value.error.data == {"argument": argument}
    assert v3_upstream.calls.calls() == []  # nothing reached Vestige


def test_passthrough_forwards_what_the_rules_allow(v3_bridge: Bridge, v3_upstream: Upstream) -> None:
    """The control: the same tools with allowed values reach Vestige unchanged."""

    async def body(session: ClientSession, init: Any) -> list[Any]:
        return [
            await session.call_tool("maintain", {"action": "export", "path": "agent-export.json"}),
            await session.call_tool("smart_ingest", {"content": "plain fact", "allowSecrets": False}),
            await session.call_tool("memory", {"action": "get", "id": "nope"}),
        ]

    v3_upstream.calls.clear()
    results = anyio.run(with_session, v3_bridge, TOKEN, body)
    assert not results[0].is_error, results[0]
    assert not results[1].is_error, results[1]
    calls = v3_upstream.calls.calls()
    assert [c["tool"] for c in calls] == ["maintain", "smart_ingest", "memory"]
    assert calls[0]["arguments"] == {"action": "export", "path": "agent-export.json"}
    assert calls[1]["arguments"] == {"content": "plain fact", "allowSecrets": False}
