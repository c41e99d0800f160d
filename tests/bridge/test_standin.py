"""The stand-in enforces what the real Vestige 3.x enforces, so the bridge tests mean something."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.bridge.conftest import (
    PYTHON,
    UPSTREAM_TOKEN,
    Proc,
    Upstream,
    base_env,
    free_port,
    listening_address,
    start_standin_http,
)

ACCEPT = "application/json, text/event-stream"


def rpc(method: str, params: dict[str, Any] | None = None, id_: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        message["id"] = id_
    if params is not None:
        message["params"] = params
    return message


def initialize(http: httpx.Client, url: str, version: str = "2025-06-18") -> str:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
    response = http.post(url, json=rpc("initialize", params))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["protocolVersion"] == version
    assert response.headers["content-type"].startswith("application/json")  # plain JSON answers
    session = response.headers["mcp-session-id"]
    headers = {"mcp-session-id": session, "mcp-protocol-version": version}
    assert http.post(url, json=rpc("notifications/initialized", id_=None), headers=headers).status_code == 202
    return session


def test_vestige_http_rules(v3_upstream: Upstream) -> None:
    url = v3_upstream.mcp_url
    auth = {"Authorization": f"Bearer {UPSTREAM_TOKEN}", "Accept": ACCEPT}
    with httpx.Client(timeout=30, headers=auth) as http:
        session = initialize(http, url)
        tools = rpc("tools/list", {})
        missing = http.post(url, json=tools, headers={"mcp-session-id": session})
        assert missing.status_code == 400
        wrong = http.post(
            url, json=tools, headers={"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        )
        assert wrong.status_code == 400
        right = http.post(
            url, json=tools, headers={"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
        )
        assert right.status_code == 200
        assert len(right.json()["result"]["tools"]) == 16
        assert http.get(url).status_code == 405
        assert http.post(url, json=tools, headers={"Accept": "application/json"}).status_code == 406
        assert http.post(url, json=tools, headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.post(url, content=b"{" + b" " * 300_000 + b"}").status_code == 413
        # after initialize every request needs a known UUID session id
        assert http.post(url, json=tools).status_code == 400
        assert http.post(url, json=tools, headers={"mcp-session-id": "not-a-uuid"}).status_code == 400
        unknown = {"mcp-session-id": str(uuid.uuid4()), "mcp-protocol-version": "2025-06-18"}
        assert http.post(url, json=tools, headers=unknown).status_code == 404
        # Vestige's Accept rule takes wildcards (curl's */*)
        wildcard = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18", "Accept": "*/*"}
        assert http.post(url, json=tools, headers=wildcard).status_code == 200
    # no token: 401; a wrong one: 403 (upstream's validate_auth)
    for token, status in ((None, 401), ("wrong", 403)):
        headers = {"Accept": ACCEPT} | ({"Authorization": f"Bearer {token}"} if token else {})
        assert httpx.post(url, json=rpc("ping"), headers=headers, timeout=30).status_code == status


def test_exits_when_stdin_reaches_eof_even_with_http_on(tmp_path: Path) -> None:
    """Vestige 3.x's main task is the stdio loop (HTTP is a task beside it): stdin EOF ends it."""
    upstream = start_standin_http(tmp_path, "v3")
    proc = upstream.procs[0]
    try:
        assert proc.popen is not None and proc.popen.poll() is None
        proc.close_stdin()
        assert proc.popen.wait(timeout=30) == 0
        assert "stdin reached EOF" in proc.output()
    finally:
        upstream.stop()


def test_binds_only_vestige_http_bind(tmp_path: Path) -> None:
    port = free_port()
    argv = [PYTHON, "-m", "tests.bridge.standin", "--generation", "v3", "--port", str(port)]
    env = base_env(VESTIGE_HTTP_BIND="127.0.0.2")  # another loopback address
    proc = Proc("standin-bind", argv, env, tmp_path / "standin.log", keep_stdin=True).start()
    try:
        deadline = time.monotonic() + 30
        while listening_address(port) is None and time.monotonic() < deadline:
            assert proc.popen is not None and proc.popen.poll() is None, proc.output()
            time.sleep(0.1)
        assert listening_address(port) == "127.0.0.2"
    finally:
        proc.stop()
    proc = Proc("standin-default", argv, base_env(), tmp_path / "default.log", port, keep_stdin=True)
    proc.start().wait_port()
    try:
        assert listening_address(port) == "127.0.0.1"
    finally:
        proc.stop()


def test_strict_schemas_reject_unknown_arguments(v3_upstream: Upstream) -> None:
    url = v3_upstream.mcp_url
    with httpx.Client(
        timeout=30, headers={"Authorization": f"Bearer {UPSTREAM_TOKEN}", "Accept": ACCEPT}
    ) as http:
        session = initialize(http, url, "2025-11-25")
        headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        v3_upstream.calls.clear()
        call = rpc("tools/call", {"name": "memory", "arguments": {"action": "get", "memory_id": "m"}})
        result = http.post(url, json=call, headers=headers).json()["result"]
        assert result["isError"] is True
        assert "memory_id" in result["content"][0]["text"]
        both = rpc(
            "tools/call", {"name": "smart_ingest", "arguments": {"content": "a", "items": [{"content": "b"}]}}
        )
        assert http.post(url, json=both, headers=headers).json()["result"]["isError"] is True
        assert [c["valid"] for c in v3_upstream.calls.calls()] == [False, False]
