"""The bridge against the REAL Vestige 1.3.0 and 2.0.0 (tests.vestige builds them), behind the
production gateway (PyPI mcp-proxy on 127.0.0.1, the v1 pod's command line and environment).

Effects are asserted, not only status codes: what /ingest stored is found by /search, promote and
demote change what `memory get` shows, a deleted memory is gone, a set intention is listed, a
backup/export file exists on the data volume. Search in these builds is keyword only (SQLite
FTS5; the vendored patch builds them without embeddings), so queries use distinctive words.
Skipped, saying why, where the vendored sources are missing (tests/vestige/build.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.bridge.conftest import TOKEN, Bridge, start_bridge
from tests.bridge.real import REAL_VERSIONS, RealUpstream, start_real, vestige_pids
from tests.bridge.test_resilience import metric


@dataclass
class Real:
    version: str
    upstream: RealUpstream
    bridge: Bridge
    http: httpx.Client


@pytest.fixture(scope="module", params=REAL_VERSIONS)
def real(request: pytest.FixtureRequest, module_tmp: Path, mcp_proxy: Path) -> Iterator[Real]:
    tmp = module_tmp / request.param
    upstream = start_real(tmp, mcp_proxy, request.param)
    bridge = start_bridge(tmp, upstream)
    try:
        with bridge.client() as http:
            yield Real(request.param, upstream, bridge, http)
    finally:
        bridge.stop()
        upstream.stop()


def word() -> str:
    """A token FTS5 indexes as one word and no other memory contains."""
    return "w" + uuid.uuid4().hex[:12]


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True, body
    assert body["error"] is None
    return json.loads(body["data"]["content"][0]["text"])  # type: ignore[no-any-return]


def ingest(real: Real, content: str, **extra: Any) -> str:
    result = ok(real.http.post("/ingest", json={"content": content, **extra}))
    return str(result["nodeId"])


def found(real: Real, query: str, **extra: Any) -> list[str]:
    result = ok(real.http.post("/search", json={"query": query, **extra}))
    return [r["id"] for r in result["results"]]


def node(real: Real, memory_id: str) -> dict[str, Any]:
    got = ok(real.http.post("/memory", json={"action": "get", "memory_id": memory_id}))
    assert got["found"] is True, got
    return got["node"]  # type: ignore[no-any-return]


def test_health_names_the_real_version(real: Real) -> None:
    body = real.http.get("/health").json()
    assert body["status"] == "healthy", body
    assert body["vestige_version"] == real.version
    assert body["tool_generation"] == "v1"
    assert real.http.get("/readyz").json() == {"ready": True, "reason": None}


@pytest.mark.parametrize("mode", ["hybrid", "keyword"])
def test_ingest_then_search_finds_it(real: Real, mode: str) -> None:
    w = word()
    memory = ingest(real, f"Alice prefers oolong tea ({w})", tags=["prefs"], context="chat-42")
    assert found(real, w, mode=mode, limit=5) == [memory]
    got = node(real, memory)
    assert got["content"] == f"Alice prefers oolong tea ({w})"
    assert got["tags"] == ["prefs"]
    assert got["source"] == "chat-42"
    assert found(real, word()) == []


def test_smart_ingest_is_stored_and_found(real: Real) -> None:
    w = word()
    result = ok(real.http.post("/smart_ingest", json={"content": f"Bob uses vim ({w})", "node_type": "note"}))
    assert found(real, w) == [result["nodeId"]]
    assert node(real, result["nodeId"])["nodeType"] == "note"
    forced = ok(
        real.http.post("/smart_ingest", json={"content": f"Bob uses vim ({w})", "force_create": True})
    )
    assert forced["nodeId"] != result["nodeId"]
    assert sorted(found(real, w)) == sorted([result["nodeId"], forced["nodeId"]])


def test_promote_and_demote_change_the_state_memory_get_shows(real: Real) -> None:
    memory = ingest(real, f"a memory to rate ({word()})")
    before = node(real, memory)
    ok(real.http.post("/promote", json={"memory_id": memory, "reason": "it helped"}))
    promoted = node(real, memory)
    assert promoted["stability"] > before["stability"]
    ok(real.http.post("/demote", json={"memory_id": memory, "reason": "it was wrong"}))
    demoted = node(real, memory)
    assert demoted["stability"] < promoted["stability"]
    assert demoted["retrievalStrength"] < promoted["retrievalStrength"]
    state = ok(real.http.post("/memory", json={"action": "check_state", "memory_id": memory}))
    assert state["memoryId"] == memory
    assert state["components"]["retrievalStrength"] == pytest.approx(node(real, memory)["retrievalStrength"])


def test_delete_makes_it_unfindable(real: Real) -> None:
    w = word()
    memory = ingest(real, f"a memory to forget ({w})")
    assert found(real, w) == [memory]
    ok(real.http.post("/memory", json={"action": "delete", "memory_id": memory}))
    assert found(real, w) == []
    gone = ok(real.http.post("/memory", json={"action": "get", "memory_id": memory}))
    assert gone["found"] is False


def test_unknown_memory_is_a_tool_error(real: Real) -> None:
    response = real.http.post("/promote", json={"memory_id": str(uuid.uuid4())})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert "not found" in body["error"].lower()


def test_codebase_pattern_and_decision_come_back_in_context(real: Real) -> None:
    codebase = word()
    ok(real.http.post("/codebase", json={"content": "Use Result for errors", "codebase": codebase}))
    decision = {"pattern_type": "decision", "content": "Use SQLite", "context": "single writer"}
    ok(real.http.post("/codebase", json={**decision, "codebase": codebase, "alternatives": ["pg"]}))
    context = ok(real.http.post("/codebase", json={"action": "get_context", "codebase": codebase}))
    text = json.dumps(context)
    assert "Use Result for errors" in text
    assert "Use SQLite" in text


def test_intention_set_is_listed(real: Real) -> None:
    w = word()
    body = {"content": f"review the PR {w}", "trigger": "after lunch", "priority": "high"}
    created = ok(real.http.post("/intention", json=body))
    listed = ok(real.http.post("/intention", json={"action": "list", "filter_status": "all", "limit": 100}))
    mine = [i for i in listed["intentions"] if i["id"] == created["intentionId"]]
    assert len(mine) == 1 and w in mine[0]["description"], listed
    timed = {"action": "set", "description": f"deploy {w}", "trigger": {"type": "time", "in_minutes": 30}}
    ok(real.http.post("/intention", json=timed))
    update = {"action": "update", "id": created["intentionId"], "status": "complete"}
    ok(real.http.post("/intention", json=update))
    active = ok(real.http.post("/intention", json={"action": "list", "limit": 100}))
    assert created["intentionId"] not in [i["id"] for i in active["intentions"]]
    ok(real.http.post("/intention", json={"action": "check", "context": {"topics": ["deploy"]}}))


def test_stats_and_health_check(real: Real) -> None:
    ingest(real, f"counted ({word()})")
    stats = ok(real.http.get("/stats"))
    total = stats.get("totalNodes", stats.get("totalMemories"))
    assert isinstance(total, int) and total >= 1, stats
    health = ok(real.http.get("/health_check"))
    assert health["status"] in ("healthy", "degraded", "critical", "empty"), health


def test_backup_and_export_land_on_the_data_volume(real: Real) -> None:
    w = word()
    memory = ingest(real, f"exported memory ({w})", tags=[w])
    backup = real.http.post("/backup").json()
    assert backup["success"] is True, backup
    path = Path(backup["data"]["path"])
    assert path.is_file() and path.stat().st_size > 0
    assert path.is_relative_to(real.upstream.data), (path, real.upstream.data)
    assert not any(real.upstream.home.rglob("*.db")), "nothing may be written to the emptyDir HOME"

    export = real.http.post("/export", json={"format": "jsonl", "tags": [w], "filename": f"{w}.jsonl"}).json()
    assert export["success"] is True, export
    exported = Path(export["data"]["path"])
    assert exported.name == f"{w}.jsonl" and exported.is_relative_to(real.upstream.data)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [m["id"] for m in lines] == [memory]


def test_purge_is_501(real: Real) -> None:
    response = real.http.post("/memory", json={"action": "purge", "memory_id": "m"})
    assert response.status_code == 501, response.text
    error = response.json()["error"]
    assert f"Vestige {real.version}" in error and "no action 'purge'" in error


def test_edit_on_2x_changes_the_content_501_on_1x(real: Real) -> None:
    old, new = word(), word()
    memory = ingest(real, f"before the edit ({old})")
    response = real.http.post(
        "/memory", json={"action": "edit", "memory_id": memory, "content": f"edited ({new})"}
    )
    if real.version.startswith("1."):
        assert response.status_code == 501, response.text
        assert "no action 'edit'" in response.json()["error"]
        return
    ok(response)
    assert node(real, memory)["content"] == f"edited ({new})"
    assert found(real, new) == [memory]
    assert found(real, old) == []


def test_other_501s_name_the_version(real: Real) -> None:
    portable = real.http.post("/export", json={"format": "portable"})
    assert portable.status_code == 501 and real.version in portable.json()["error"]
    recurring = {"action": "set", "description": "d", "trigger": {"type": "recurring", "recurrence": "daily"}}
    response = real.http.post("/intention", json=recurring)
    assert response.status_code == 501 and real.version in response.json()["error"]


def test_mcp_passthrough_reaches_the_real_server(real: Real) -> None:
    w = word()

    async def session() -> tuple[set[str], Any, Any]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(60))
        async with (
            http,
            streamable_http_client(real.bridge.url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=60) as mcp,
        ):
            await mcp.initialize()
            tools = {t.name for t in (await mcp.list_tools()).tools}
            stored = await mcp.call_tool("smart_ingest", {"content": f"through /mcp ({w})"})
            search = await mcp.call_tool("search", {"query": w})
            return tools, stored, search

    tools, stored, search = anyio.run(session)
    assert {"search", "smart_ingest", "memory", "codebase", "intention"} <= tools
    assert not stored.is_error and not search.is_error
    node_id = json.loads(stored.content[0].text)["nodeId"]
    assert [r["id"] for r in json.loads(search.content[0].text)["results"]] == [node_id]
    assert found(real, w) == [node_id]  # and REST sees what MCP stored


# ---------------------------------------------------------------------- the /mcp allow-list
def through_mcp(real: Real, body: Any) -> Any:
    """Run `body(session)` on an official MCP SDK client session through the bridge's /mcp."""

    async def run() -> Any:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(60))
        async with (
            http,
            streamable_http_client(real.bridge.url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write, read_timeout_seconds=60) as mcp,
        ):
            await mcp.initialize()
            return await body(mcp)

    return anyio.run(run)


def files(real: Real) -> dict[str, int]:
    """Every file on the data volume and in HOME (name -> size), the live database files aside."""
    out = {}
    for root in (real.upstream.data, real.upstream.home):
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith("vestige.db"):
                out[str(path)] = path.stat().st_size
    return out


def test_mcp_lists_only_the_allowed_tools(real: Real) -> None:
    async def body(mcp: ClientSession) -> dict[str, Any]:
        return {t.name: t.input_schema for t in (await mcp.list_tools()).tools}

    tools = through_mcp(real, body)
    assert {"search", "smart_ingest", "memory", "codebase", "intention", "backup", "export"} <= set(tools)
    assert not {"gc", "consolidate", "restore", "dream", "delete_knowledge", "get_knowledge"} & set(tools)
    assert "delete" not in tools["memory"]["properties"]["action"]["enum"]
    assert set(tools["export"]["properties"]) == {"format", "tags", "since", "path"}


def test_mcp_refuses_what_the_allow_list_does_not_name_and_the_store_is_unchanged(real: Real) -> None:
    """Store-destroying tools, a hidden alias, a delete, unknown and override arguments, path
    traversal and a trailing newline in a file name: each refused with a JSON-RPC error naming
    it; afterwards every memory is still there and no file appeared or changed."""
    w = word()
    first, second = ingest(real, f"first kept ({w})"), ingest(real, f"second kept ({w})")
    refused = [
        ("gc", {"dry_run": False, "min_retention": 1.0, "max_age_days": 0}, ""),
        ("consolidate", {}, ""),
        ("delete_knowledge", {"id": first}, ""),
        ("restore", {"path": "/etc/passwd"}, ""),
        ("memory", {"action": "delete", "id": second}, "action"),
        ("export", {"path": "../escape.json"}, "path"),
        ("export", {"path": "nested/dir/escape.json"}, "path"),
        ("export", {"path": f"{w}.json\n"}, "path"),
        ("export", {"format": "json", "outputDir": "/tmp"}, "outputDir"),
        ("backup", {"path": "/tmp/stolen.db"}, "path"),
        ("search", {"query": w, "allowAnyPath": True}, "allowAnyPath"),
        ("smart_ingest", {"content": f"third ({w})", "allowSecrets": True}, "allowSecrets"),
        ("smart_ingest", {"items": [{"content": f"fourth ({w})", "path": "../x"}]}, "items.0.path"),
    ]
    before = files(real)

    async def body(mcp: ClientSession) -> list[Any]:
        out = []
        for tool, arguments, _ in refused:
            try:
                out.append(await mcp.call_tool(tool, arguments))
            except MCPError as exc:
                out.append(exc)
        return out

    outcomes = through_mcp(real, body)
    for (tool, arguments, argument), outcome in zip(refused, outcomes, strict=True):
        assert isinstance(outcome, MCPError), f"{tool} {arguments} reached Vestige: {outcome}"
        assert outcome.error.code == -32602, (tool, outcome.error)
        expected = f"argument '{argument}' of '{tool}'" if argument else f"tool '{tool}'"
        assert expected in outcome.error.message, outcome.error.message
    assert sorted(found(real, w)) == sorted([first, second])
    assert node(real, first)["content"] == f"first kept ({w})"
    assert files(real) == before


def test_mcp_allowed_tools_work_on_the_real_server(real: Real) -> None:
    w = word()

    async def body(mcp: ClientSession) -> list[Any]:
        stored = await mcp.call_tool("smart_ingest", {"content": f"allowed through /mcp ({w})", "tags": [w]})
        node_id = json.loads(stored.content[0].text)["nodeId"]
        return [
            stored,
            await mcp.call_tool("search", {"query": w, "limit": 5}),
            await mcp.call_tool("memory", {"action": "get", "id": node_id}),
            await mcp.call_tool("export", {"format": "json", "tags": [w], "path": f"{w}.json"}),
        ]

    # (backup is allowed too, but Vestige names backups by the second: a second one within the
    # same second as test_backup_and_export_land_on_the_data_volume's fails in Vestige itself)
    stored, search, got, export = through_mcp(real, body)
    for result in (stored, search, got, export):
        assert not result.is_error, result
    node_id = json.loads(stored.content[0].text)["nodeId"]
    assert [r["id"] for r in json.loads(search.content[0].text)["results"]] == [node_id]
    exported = Path(json.loads(export.content[0].text)["path"])
    assert exported.name == f"{w}.json" and exported.is_file()
    assert exported.is_relative_to(real.upstream.data) or exported.is_relative_to(real.upstream.home)


# ---------------------------------------------------------------------- load and leaks
def established(port: int) -> int:
    """ESTABLISHED TCP connections whose remote end is 127.0.0.1:`port` (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        remote, state = parts[2], parts[3]
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def burst(real: Real, n: int) -> list[tuple[int, bool]]:
    seed = ingest(real, f"burst seed ({word()})")

    async def run() -> list[tuple[int, bool]]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=real.bridge.url, headers=real.bridge.headers(), timeout=120, limits=limits
        ) as client:

            async def one(i: int) -> tuple[int, bool]:
                kind = i % 5
                if kind == 0:
                    r = await client.post("/ingest", json={"content": f"concurrent memory {i} {word()}"})
                elif kind == 1:
                    r = await client.post("/search", json={"query": "concurrent", "limit": 5})
                elif kind == 2:
                    r = await client.post("/memory", json={"action": "get", "memory_id": seed})
                elif kind == 3:
                    r = await client.get("/stats")
                else:
                    r = await client.post("/intention", json={"action": "list", "limit": 5})
                return r.status_code, r.status_code == 200 and r.json()["success"] is True

            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(run())


def test_200_concurrent_mixed_requests_no_session_or_connection_leak(real: Real) -> None:
    port = real.upstream.port
    gateway = real.upstream.procs[0].popen
    bridge = real.bridge.proc.popen
    assert gateway is not None and bridge is not None
    vestige = vestige_pids(gateway.pid)
    assert len(vestige) == 1
    ok(real.http.get("/stats"))
    before = (established(port), fds(bridge.pid), fds(vestige[0]))

    first = burst(real, 200)
    assert first == [(200, True)] * 200
    after_first = (established(port), fds(bridge.pid), fds(vestige[0]))
    second = burst(real, 200)
    assert second == [(200, True)] * 200
    after_second = (established(port), fds(bridge.pid), fds(vestige[0]))

    # One MCP session the whole time: no reconnect, no lost session; the same single Vestige process.
    text = real.http.get("/metrics").text
    assert metric(text, "vestige_bridge_mcp_reconnects_total") == 0
    assert metric(text, "vestige_bridge_mcp_errors_total", kind="session_lost") == 0
    assert metric(text, "vestige_bridge_mcp_errors_total", kind="timeout") == 0
    assert vestige_pids(gateway.pid) == vestige
    # Connections bridge -> gateway stay within httpx2's keep-alive pool (20) + the session's GET
    # stream and do not grow from one burst to the next; neither do the bridge's or Vestige's fds.
    assert after_first[0] <= 21 and after_second[0] <= max(after_first[0], before[0], 1), (
        before,
        after_first,
        after_second,
    )
    assert after_second[1] <= after_first[1] + 2, (before, after_first, after_second)
    assert after_second[2] <= after_first[2] + 2, (before, after_first, after_second)
    gateway_log = real.upstream.procs[0].output()
    # the gateway saw one MCP session in all (the bridge's; /mcp clients share it)
    assert gateway_log.count("Created new transport with session ID") == 1


# ---------------------------------------------------------------------- restarts
@pytest.mark.parametrize("version", REAL_VERSIONS)
def test_vestige_killed_then_restarted_keeps_memories_and_backups(
    tmp_path: Path, mcp_proxy: Path, version: str
) -> None:
    """Vestige dies (SIGKILL): the gateway exits with it (the pod's `sh` wrapper), so the container
    exits; the kubelet starts it again on the same port and volume: the next request succeeds
    and finds what was stored before, and the backup named before is still on the volume."""
    upstream = start_real(tmp_path, mcp_proxy, version, name="real-a")
    bridge = start_bridge(tmp_path, upstream)
    try:
        with bridge.client() as http:
            r = Real(version, upstream, bridge, http)
            w = word()
            memory = ingest(r, f"remember across restarts ({w})")
            backup = Path(http.post("/backup").json()["data"]["path"])
            assert backup.is_file()

            gateway = upstream.procs[0].popen
            assert gateway is not None
            (pid,) = vestige_pids(gateway.pid)
            os.kill(pid, signal.SIGKILL)
            gateway.wait(timeout=30)  # mcp-proxy ends with Vestige: the container exits
            down = http.post("/search", json={"query": w})
            assert down.status_code == 502, down.text  # not a 200 "tool error" from a zombie gateway

            upstream = start_real(tmp_path, mcp_proxy, version, name="real-b", port=upstream.port)
            r.upstream = upstream
            assert found(r, w) == [memory]  # the very next request succeeds
            assert backup.is_file() and backup.is_relative_to(upstream.data)
            text = http.get("/metrics").text
        assert metric(text, "vestige_bridge_mcp_reconnects_total") >= 1
    finally:
        bridge.stop()
        upstream.stop()
