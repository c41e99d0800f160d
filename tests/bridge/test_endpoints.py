"""Every REST endpoint against both Vestige tool generations, through the production transports.

* ``v3``: the stand-in speaking Vestige 3.x's native Streamable HTTP (bearer token, protocol
  version header, JSON answers), like the ``vestige`` container of the pod.
* ``v1``: the 1.3.0 stand-in over stdio behind PyPI ``mcp-proxy`` bound to 127.0.0.1, the gateway
  of the v1 variant.

The stand-in validates every call against a strict copy of that generation's schema and logs
it, so each test asserts the exact arguments that reached "Vestige".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bridge.conftest import (
    Bridge,
    Upstream,
    start_bridge,
    start_standin_http,
    start_v1_behind_mcp_proxy,
)


@dataclass
class Backend:
    generation: str
    upstream: Upstream
    bridge: Bridge
    http: httpx.Client

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        self.upstream.calls.clear()
        return self.http.post(path, json=body, **kw)

    def get(self, path: str) -> httpx.Response:
        self.upstream.calls.clear()
        return self.http.get(path)

    def arrived(self) -> tuple[str, dict[str, Any]]:
        """The single tools/call the stand-in received for the last request (and that it was valid)."""
        calls = self.upstream.calls.calls()
        assert len(calls) == 1, calls
        assert calls[0]["valid"], calls[0]
        return calls[0]["tool"], calls[0]["arguments"]


@pytest.fixture(scope="module", params=["v3", "v1"])
def backend(request: pytest.FixtureRequest, module_tmp: Path, mcp_proxy: Path) -> Iterator[Backend]:
    tmp = module_tmp / request.param
    if request.param == "v3":
        upstream = start_standin_http(tmp, "v3")
    else:
        upstream = start_v1_behind_mcp_proxy(tmp, mcp_proxy)
    bridge = start_bridge(tmp, upstream)
    with bridge.client() as http:
        yield Backend(request.param, upstream, bridge, http)
    bridge.stop()
    upstream.stop()


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True, body
    assert body["error"] is None
    return json.loads(body["data"]["content"][0]["text"])


def remember(backend: Backend, content: str, tags: list[str] | None = None) -> str:
    result = ok(backend.post("/ingest", {"content": content, "tags": tags or []}))
    return str(result["nodeId"])


def test_health_reports_generation(backend: Backend) -> None:
    body = backend.http.get("/health").json()
    assert body["status"] == "healthy"
    assert body["vestige_connected"] is True
    assert body["tool_generation"] == backend.generation
    assert body["vestige_version"] == {"v3": "3.1.1", "v1": "1.3.0"}[backend.generation]
    assert backend.http.get("/readyz").json() == {"ready": True, "reason": None}


def test_ingest_then_search_finds_it(backend: Backend) -> None:
    response = backend.post(
        "/ingest", {"content": "Alice prefers oolong tea", "tags": ["prefs"], "context": "chat-42"}
    )
    node = ok(response)["nodeId"]
    tool, args = backend.arrived()
    expected = {
        "content": "Alice prefers oolong tea",
        "node_type": "fact",
        "tags": ["prefs"],
        "source": "chat-42",
    }
    if backend.generation == "v3":
        assert (tool, args) == ("smart_ingest", {**expected, "forceCreate": True})
    else:  # 1.x reads nodeType although it advertises node_type
        assert (tool, args) == ("ingest", {**expected, "nodeType": "fact"})

    found = ok(backend.post("/search", {"query": "oolong", "limit": 5, "threshold": 0.3, "mode": "hybrid"}))
    assert [r["id"] for r in found["results"]] == [node]
    tool, args = backend.arrived()
    assert tool == {"v3": "recall", "v1": "search"}[backend.generation]
    assert args == {"query": "oolong", "limit": 5, "min_similarity": 0.3}


def test_search_keyword_mode_and_details(backend: Backend) -> None:
    body = {"query": "tea", "mode": "keyword", "min_retention": 0.1, "detail_level": "brief"}
    ok(backend.post("/search", body))
    tool, args = backend.arrived()
    expected = {"query": "tea", "limit": 10, "min_retention": 0.1, "detail_level": "brief"}
    if backend.generation == "v3":
        assert (tool, args) == ("recall", {**expected, "concrete": True})
    else:
        assert (tool, args) == ("search", expected)


def test_smart_ingest(backend: Backend) -> None:
    first = ok(backend.post("/smart_ingest", {"content": "Bob uses vim", "node_type": "note"}))
    v1 = backend.generation == "v1"
    note = {"nodeType": "note"} if v1 else {}
    assert backend.arrived() == ("smart_ingest", {"content": "Bob uses vim", "node_type": "note", **note})
    again = ok(backend.post("/smart_ingest", {"content": "Bob uses vim", "node_type": "note"}))
    assert again["decision"] == "update" and again["nodeId"] == first["nodeId"]
    ok(backend.post("/smart_ingest", {"content": "Bob uses vim", "force_create": True}))
    assert backend.arrived() == (
        "smart_ingest",
        {
            "content": "Bob uses vim",
            "node_type": "fact",
            "forceCreate": True,
            **({"nodeType": "fact"} if v1 else {}),
        },
    )


@pytest.mark.parametrize("kind", ["promote", "demote"])
def test_feedback(backend: Backend, kind: str) -> None:
    node = remember(backend, f"memory to {kind}")
    ok(backend.post(f"/{kind}", {"memory_id": node, "reason": "it helped"}))
    if backend.generation == "v3":
        assert backend.arrived() == ("memory", {"action": kind, "id": node, "reason": "it helped"})
    else:
        assert backend.arrived() == (f"{kind}_memory", {"id": node, "reason": "it helped"})


def test_memory_get_state_delete(backend: Backend) -> None:
    node = remember(backend, "a memory to inspect")
    got = ok(backend.post("/memory", {"action": "get", "memory_id": node}))
    assert got["node"]["content"] == "a memory to inspect"
    assert backend.arrived() == ("memory", {"action": "get", "id": node})
    ok(backend.post("/memory", {"action": "check_state", "memory_id": node}))
    assert backend.arrived() == ("memory", {"action": "state", "id": node})
    ok(backend.post("/memory", {"action": "delete", "memory_id": node}))
    if backend.generation == "v3":
        assert backend.arrived() == ("memory", {"action": "delete", "id": node, "confirm": True})
    else:
        assert backend.arrived() == ("memory", {"action": "delete", "id": node})
    gone = backend.post("/memory", {"action": "get", "memory_id": node})
    assert gone.status_code == 200
    assert gone.json()["success"] is False
    assert "not found" in gone.json()["error"].lower()


def test_memory_v3_actions(backend: Backend) -> None:
    node = remember(backend, "editable memory")
    if backend.generation == "v1":
        for body in (
            {"action": "edit", "memory_id": node, "content": "x"},
            {"action": "purge", "memory_id": node},
        ):
            response = backend.post("/memory", body)
            assert response.status_code == 501, response.text
            assert "Vestige 1.3.0" in response.json()["error"]
            assert backend.upstream.calls.calls() == []
        # promote through /memory falls back to the 1.x feedback tool
        ok(backend.post("/memory", {"action": "promote", "memory_id": node}))
        assert backend.arrived() == ("promote_memory", {"id": node})
        return
    ok(backend.post("/memory", {"action": "edit", "memory_id": node, "content": "edited memory"}))
    assert backend.arrived() == ("memory", {"action": "edit", "id": node, "content": "edited memory"})
    ok(backend.post("/memory", {"action": "purge", "memory_id": node, "reason": "obsolete"}))
    assert backend.arrived() == (
        "memory",
        {"action": "purge", "id": node, "confirm": True, "reason": "obsolete"},
    )


def test_codebase(backend: Backend) -> None:
    ok(backend.post("/codebase", {"content": "Use Result for errors", "codebase": "svc", "files": ["a.rs"]}))
    assert backend.arrived() == (
        "codebase",
        {
            "action": "remember_pattern",
            "name": "Use Result for errors",
            "description": "Use Result for errors",
            "files": ["a.rs"],
            "codebase": "svc",
        },
    )
    body = {
        "pattern_type": "decision",
        "content": "Use SQLite",
        "context": "single writer",
        "alternatives": ["pg"],
    }
    ok(backend.post("/codebase", body))
    assert backend.arrived() == (
        "codebase",
        {
            "action": "remember_decision",
            "decision": "Use SQLite",
            "rationale": "single writer",
            "alternatives": ["pg"],
        },
    )
    context = ok(backend.post("/codebase", {"action": "get_context", "codebase": "svc", "limit": 5}))
    assert backend.arrived() == ("codebase", {"action": "get_context", "limit": 5, "codebase": "svc"})
    assert len(context["items"]) == 1


def test_intention_lifecycle(backend: Backend) -> None:
    body = {"content": "review the PR", "trigger": "after lunch", "priority": "high", "tags": ["x"]}
    created = ok(backend.post("/intention", body))
    assert backend.arrived() == (
        "intention",
        {
            "action": "set",
            "description": "review the PR",
            "trigger": {"type": "event", "condition": "after lunch"},
            "priority": "high",
        },
    )
    body = {"action": "set", "description": "deploy", "trigger": {"type": "time", "in_minutes": 30}}
    ok(backend.post("/intention", body))
    assert backend.arrived()[1]["trigger"] == {"type": "time", "in_minutes": 30}
    listed = ok(backend.post("/intention", {"action": "list", "filter_status": "all", "limit": 10}))
    assert backend.arrived() == ("intention", {"action": "list", "filter_status": "all", "limit": 10})
    assert created["intentionId"] in [i["id"] for i in listed["intentions"]]
    update = {"action": "update", "id": created["intentionId"], "status": "snooze", "snooze_minutes": 15}
    ok(backend.post("/intention", update))
    assert backend.arrived() == ("intention", {**update, "action": "update"})
    check = {"action": "check", "context": {"codebase": "svc", "topics": ["deploy"]}, "include_snoozed": True}
    ok(backend.post("/intention", check))
    assert backend.arrived() == ("intention", check)


def test_intention_features_of_v3_only(backend: Backend) -> None:
    body = {
        "action": "set",
        "description": "water plants",
        "trigger": {"type": "recurring", "recurrence": "daily"},
    }
    response = backend.post("/intention", body)
    if backend.generation == "v1":
        assert response.status_code == 501, response.text
        assert "1.3.0" in response.json()["error"]
        assert backend.upstream.calls.calls() == []
    else:
        ok(response)
        assert backend.arrived()[1]["trigger"] == {"type": "recurring", "recurrence": "daily"}


def test_maintenance(backend: Backend) -> None:
    remember(backend, "a memory to count")
    stats = ok(backend.get("/stats"))
    assert stats["totalNodes"] >= 1
    health = ok(backend.get("/health_check"))
    backup = ok(backend.post("/backup"))
    # the answer names the file Vestige wrote (data.path, from Vestige's own answer)
    assert backend.http.post("/backup").json()["data"]["path"] == backup["path"]
    ok(
        backend.post(
            "/export", {"format": "jsonl", "tags": ["prefs"], "since": "2026-01-02", "filename": "dump.jsonl"}
        )
    )
    export_args = {"format": "jsonl", "tags": ["prefs"], "since": "2026-01-02", "path": "dump.jsonl"}
    if backend.generation == "v3":
        assert health["view"] == "health"
        assert backend.arrived() == ("maintain", {"action": "export", **export_args})
        ok(backend.post("/export", {"format": "portable"}))
        assert backend.arrived() == ("maintain", {"action": "export", "format": "portable"})
    else:
        assert health["status"] == "healthy"
        assert backend.arrived() == ("export", export_args)
        portable = backend.post("/export", {"format": "portable"})
        assert portable.status_code == 501
        assert "1.3.0" in portable.json()["error"]


def test_maintenance_tools_used(backend: Backend) -> None:
    expected = {
        "v3": {
            "/stats": ("memory_status", {"view": "stats"}),
            "/health_check": ("memory_status", {"view": "health"}),
            "/backup": ("maintain", {"action": "backup"}),
        },
        "v1": {"/stats": ("stats", {}), "/health_check": ("health_check", {}), "/backup": ("backup", {})},
    }[backend.generation]
    for path, call in expected.items():
        ok(backend.get(path) if path != "/backup" else backend.post(path))
        assert backend.arrived() == call


def test_tool_error_is_200_with_success_false(backend: Backend) -> None:
    response = backend.post("/promote", {"memory_id": "00000000-0000-0000-0000-000000000000"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert "Memory not found" in body["error"]
    assert body["data"]["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/search", {"limit": 3}, "query"),
        ("/search", {"query": "x", "limit": 0}, "limit"),
        ("/search", {"query": "x", "threshold": 2}, "threshold"),
        ("/ingest", {"content": ""}, "content"),
        ("/memory", {"action": "explode", "memory_id": "m"}, "action"),
        ("/memory", {"action": "edit", "memory_id": "abc"}, "content"),
        ("/codebase", {"pattern_type": "decision", "content": "Use X"}, "rationale"),
        ("/intention", {"action": "update", "status": "complete"}, "id"),
        ("/intention", {"action": "set", "trigger": {"type": "time"}}, "description"),
        (
            "/intention",
            {"action": "set", "description": "d", "trigger": {"type": "time", "bogus": 1}},
            "trigger.bogus",
        ),
        ("/export", {"filename": "../etc/passwd"}, "filename"),
    ],
)
def test_bad_body_is_422_naming_the_field(
    backend: Backend, path: str, body: dict[str, Any], field: str
) -> None:
    response = backend.post(path, body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["success"] is False
    assert payload["field"] == field
    assert field in payload["error"]
    assert backend.upstream.calls.calls() == []


def test_invalid_json_is_422(backend: Backend) -> None:
    response = backend.http.post(
        "/search", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert "invalid JSON" in response.json()["error"]


def test_openapi_documents_every_body(backend: Backend) -> None:
    spec = backend.http.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/search",
        "/ingest",
        "/smart_ingest",
        "/promote",
        "/demote",
        "/memory",
        "/codebase",
        "/intention",
    ):
        operation = paths[path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert schema["properties"], path
        assert {"200", "422", "501", "502"} <= set(operation["responses"]), path
    for path in ("/stats", "/health_check", "/health", "/readyz", "/livez", "/metrics"):
        assert "get" in paths[path], path
    assert "/backup" in paths and "/export" in paths


# ------------------------------------------------------------------ a Vestige the bridge cannot map
@pytest.fixture(scope="module")
def v4(module_tmp: Path) -> Iterator[Bridge]:
    upstream = start_standin_http(module_tmp / "v4", "v3", version="4.0.0", name="standin-v4")
    bridge = start_bridge(module_tmp / "v4", upstream, name="bridge-v4")
    yield bridge
    bridge.stop()
    upstream.stop()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/search", {"query": "x"}),
        ("post", "/ingest", {"content": "x"}),
        ("post", "/promote", {"memory_id": "m"}),
        ("post", "/memory", {"action": "get", "memory_id": "m"}),
        ("get", "/stats", None),
        ("post", "/backup", None),
    ],
)
def test_unsupported_version_is_501_naming_it(v4: Bridge, method: str, path: str, body: Any) -> None:
    with v4.client() as http:
        response = http.request(method.upper(), path, json=body)
        assert response.status_code == 501, response.text
        assert "Vestige 4.0.0" in response.json()["error"]
        assert "no search and no SQLite store" in response.json()["error"]
        assert "use Vestige 3.1.1" in response.json()["error"]
        assert http.get("/health").json()["tool_generation"] == "unsupported"
