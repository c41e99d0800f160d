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
AGENT_TOOLS = {"recall", "smart_ingest", "memory", "memory_status", "codebase", "intention", "maintain"}
"""The 3.x tools an agent gets through /mcp (docs/bridge.md, the allow-list table)."""


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
        rejected = await session.call_tool("recall", {"query": "x", "limit": 1000})
        return {"init": init, "tools": tools, "stored": stored, "found": found, "rejected": rejected}

    out = anyio.run(with_session, v3_bridge, TOKEN, body)
    assert out["init"].server_info.name == "vestige-bridge"
    assert {t.name for t in out["tools"].tools} == AGENT_TOOLS < V3_TOOLS
    assert not out["stored"].is_error
    node = json.loads(out["stored"].content[0].text)["nodeId"]
    assert not out["found"].is_error
    assert [r["id"] for r in json.loads(out["found"].content[0].text)["results"]] == [node]
    assert out["rejected"].is_error  # Vestige's own tool error comes back as is
    assert "limit" in out["rejected"].content[0].text
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


# -- the allow-list (issue 21, item 8) -----------------------------------------------------------

REFUSED_CALLS = [
    # (tool, arguments, what the error must name: an argument, or "" for the tool itself)
    ("maintain", {"action": "restore"}, "action"),
    ("maintain", {"dry_run": False, "action": "gc"}, "dry_run"),
    ("maintain", {"action": "gc"}, "action"),
    ("maintain", {"action": "consolidate"}, "action"),
    ("maintain", {"action": "dream"}, "action"),
    ("maintain", {"action": "export", "path": "../../etc/passwd"}, "path"),
    ("maintain", {"action": "export", "path": "/data/vestige/stolen.json"}, "path"),
    ("maintain", {"action": "export", "path": "sub/dir.json"}, "path"),
    ("maintain", {"action": "export", "path": "agent-export.json\n"}, "path"),
    ("maintain", {"action": "export", "path": "agent\u0000.json"}, "path"),
    ("maintain", {"action": "export", "path": "x" * 101}, "path"),
    ("maintain", {"action": "export", "path": ".hidden"}, "path"),
    ("maintain", {"action": "backup", "path": "vestige.db"}, "path"),
    ("maintain", {"allowAnyPath": True, "action": "restore"}, "allowAnyPath"),
    ("smart_ingest", {"content": "aws key", "allowSecrets": True}, "allowSecrets"),
    ("smart_ingest", {"items": [{"content": "k", "allowSecrets": True}]}, "items.0.allowSecrets"),
    ("smart_ingest", {"items": [{"content": "k", "path": "../x"}]}, "items.0.path"),
    ("memory", {"action": "purge", "id": "m1", "confirm": True}, "action"),
    ("memory", {"action": "delete", "id": "m1"}, "action"),
    ("memory", {"action": "get", "id": "m1", "confirm": True}, "confirm"),
    ("recall", {"query": "x", "unknown_arg": 1}, "unknown_arg"),
    ("intention", {"action": "set", "description": "d", "command": {"run": "rm -rf /"}}, "command"),
    ("purge", {"id": "m1", "confirm": True}, ""),
    ("dedup", {}, ""),
    ("backfill", {}, ""),
    ("source_sync", {}, ""),
    ("no_such_tool", {}, ""),
]


def test_passthrough_refuses_what_the_allow_list_does_not_name(
    v3_bridge: Bridge, v3_upstream: Upstream
) -> None:
    """Each call outside the allow-list gets a JSON-RPC error naming the argument (or the tool);
    Vestige sees none of them and the store is unchanged."""

    async def body(session: ClientSession, init: Any) -> tuple[list[tuple[str, Any]], Any, Any]:
        stored = await session.call_tool("smart_ingest", {"content": "kept through refusals"})
        before = await session.call_tool("memory_status", {"view": "stats"})
        v3_upstream.calls.clear()
        out = []
        for tool, arguments, _ in REFUSED_CALLS:
            try:
                result = await session.call_tool(tool, arguments)
            except MCPError as exc:
                out.append(("error", exc))
            else:
                out.append(("result", result))
        calls = v3_upstream.calls.calls()
        after = await session.call_tool("memory_status", {"view": "stats"})
        node = json.loads(stored.content[0].text)["nodeId"]
        got = await session.call_tool("memory", {"action": "get", "id": node})
        return out, calls, (before, after, got)

    outcomes, calls, (before, after, got) = anyio.run(with_session, v3_bridge, TOKEN, body)
    for (tool, arguments, argument), (kind, value) in zip(REFUSED_CALLS, outcomes, strict=True):
        assert kind == "error", f"{tool} {arguments} was forwarded: {value}"
        assert value.error.code == -32602, (tool, arguments, value.error)
        if argument:
            assert f"argument '{argument}'" in value.error.message, value.error.message
            assert value.error.data == {"argument": argument}
        else:
            assert value.error.message.startswith(f"tool '{tool}' refused by the bridge"), value.error.message
            assert value.error.data == {"tool": True}
    assert calls == []  # nothing reached Vestige
    assert json.loads(after.content[0].text) == json.loads(before.content[0].text)
    assert not got.is_error and json.loads(got.content[0].text)["node"]["content"] == "kept through refusals"


def test_passthrough_lists_only_allowed_tools_and_actions(v3_bridge: Bridge) -> None:
    async def body(session: ClientSession, init: Any) -> Any:
        return await session.list_tools()

    tools = {t.name: t.input_schema for t in anyio.run(with_session, v3_bridge, TOKEN, body).tools}
    assert set(tools) == AGENT_TOOLS
    assert tools["maintain"]["properties"]["action"]["enum"] == ["backup", "export"]
    # 3.x serves a compacted catalog (oneOf folded into the action enum); whatever it lists, the
    # bridge shows only what the allow-list admits
    assert set(tools["maintain"]["properties"]) <= {"action", "format", "tags", "since", "path"}
    consts = [v["properties"]["action"]["const"] for v in tools["maintain"].get("oneOf", [])]
    assert set(consts) <= {"backup", "export"}
    assert set(tools["memory"]["properties"]["action"]["enum"]) == {
        "get",
        "get_batch",
        "state",
        "promote",
        "demote",
        "edit",
    }
    assert "confirm" not in tools["memory"]["properties"]
    assert "command" not in tools["intention"]["properties"]


def test_passthrough_forwards_what_the_allow_list_names(v3_bridge: Bridge, v3_upstream: Upstream) -> None:
    """The control: allowed tools and values reach Vestige unchanged."""

    async def body(session: ClientSession, init: Any) -> list[Any]:
        return [
            await session.call_tool("maintain", {"action": "export", "path": "agent-export.json"}),
            await session.call_tool("smart_ingest", {"content": "plain fact", "allowSecrets": False}),
            await session.call_tool("memory", {"action": "get", "id": "nope"}),
            await session.call_tool("maintain", {"action": "backup"}),
            await session.call_tool(
                "smart_ingest", {"items": [{"content": "batch one", "tags": ["t"]}, {"content": "batch two"}]}
            ),
            await session.call_tool("intention", {"action": "list", "limit": 5}),
        ]

    v3_upstream.calls.clear()
    results = anyio.run(with_session, v3_bridge, TOKEN, body)
    for i in (0, 1, 3, 4, 5):
        assert not results[i].is_error, results[i]
    calls = v3_upstream.calls.calls()
    assert [c["tool"] for c in calls] == [
        "maintain",
        "smart_ingest",
        "memory",
        "maintain",
        "smart_ingest",
        "intention",
    ]
    assert calls[0]["arguments"] == {"action": "export", "path": "agent-export.json"}
    assert calls[1]["arguments"] == {"content": "plain fact", "allowSecrets": False}


def test_refused_tool_names_never_become_metric_labels(v3_bridge: Bridge) -> None:
    async def body(session: ClientSession, init: Any) -> None:
        for i in range(5):
            with pytest.raises(MCPError):
                await session.call_tool(f"made_up_tool_{i}", {})

    anyio.run(with_session, v3_bridge, TOKEN, body)
    text = httpx2.get(v3_bridge.url + "/metrics").text
    assert "made_up_tool" not in text
