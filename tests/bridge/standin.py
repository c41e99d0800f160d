"""A stand-in for Vestige: a real MCP server (official `mcp` SDK) with Vestige's tools.

It serves one tool generation (``v1`` = Vestige 1.3.0, ``v3`` = Vestige 3.x) with the EXACT input
schemas of ``data/vestige-<gen>-tools.json`` and validates every call against a *strict* copy of
them (``additionalProperties: false`` wherever properties are listed), so an argument the bridge
maps wrongly fails the test instead of being ignored as the real server would. A small in-memory
store makes ``search``/``recall`` find what ``ingest``/``smart_ingest`` stored.

Every call is appended to a JSON-lines call log (``--call-log`` / ``STANDIN_CALL_LOG``) as
``{"tool", "arguments", "valid", "error"}`` so tests can assert what arrived.

Transports: ``--stdio`` (v1, behind a gateway such as mcp-proxy or supergateway) or Streamable
HTTP on ``VESTIGE_HTTP_BIND`` (default 127.0.0.1) ``:--port``. For v3 over HTTP the server also
applies Vestige 3.x's own HTTP rules, in upstream's order (``crates/vestige-mcp/src/protocol/
http.rs``): ``POST``/``DELETE`` only (405), 256 KB body limit (413), Origin allow-list (403),
``Accept`` covering both JSON and event-stream, wildcards included (406), bearer token (401
missing, 403 wrong), a UUID ``Mcp-Session-Id`` on every request after initialize (400 missing,
404 unknown), ``MCP-Protocol-Version`` equal to the negotiated version (400), plain-JSON answers.

Process behaviour as upstream's ``main.rs``: with HTTP on, the stdio loop is still the process's
main task, so the stand-in exits when its stdin reaches EOF (a pod needs ``stdin: true``).

Run: ``python -m tests.bridge.standin --generation v3 --port 9000 --token T --call-log calls.jsonl``
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

DATA = Path(__file__).parent / "data"
TOOL_FILES = {"v1": DATA / "vestige-v1.3.0-tools.json", "v3": DATA / "vestige-v3-tools.json"}
SERVER_VERSIONS = {"v1": "1.3.0", "v3": "3.1.1"}
SUPPORTED_PROTOCOLS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_PROTOCOL = "2025-11-25"
MAX_BODY = 256 * 1024
SLOW_QUERY = "__sleep__"  # a search for "__sleep__<seconds>" answers only after that delay

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ToolError(Exception):
    """A tool-level failure: reported as a CallToolResult with isError, like Vestige does."""


def strict(schema: Any) -> Any:
    """Copy of a JSON schema where every object that lists properties forbids any other key."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


FOLD_GROUPS = {
    "source": {
        "source_author", "source_id", "source_project", "source_status",
        "source_system", "source_type", "source_updated_after", "source_updated_before",
    },
    "filters": {
        "include_types", "exclude_types", "tag_prefix", "min_retention", "min_similarity", "concrete",
        "validAt", "rank_native_fusion", "context_packet", "known_packet_id", "token_budget",
        "retrieval_mode",
    },
}  # fmt: skip
SELECTORS = ("action", "view", "mode")


def _variants(schema: dict[str, Any]) -> dict[str, Any]:
    """A oneOf/anyOf tree folded into one object whose `action` enum lists the discriminators."""
    consts = []
    for variant in schema.get("oneOf") or schema.get("anyOf") or []:
        props = variant.get("properties", {}) if isinstance(variant, dict) else {}
        consts += [
            props[k]["const"] for k in SELECTORS if isinstance(props.get(k), dict) and "const" in props[k]
        ][:1]
    action: dict[str, Any] = {"type": "string", "enum": consts} if consts else {"type": "string"}
    return {"type": "object", "properties": {"action": action}, "description": "One action per call."}


def _compact(node: Any, depth: int) -> Any:
    if isinstance(node, list):
        return [_compact(item, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    if "oneOf" in node or "anyOf" in node:
        return _variants(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("description", "default", "examples", "format", "$defs"):
            continue
        if key == "$ref":
            out["type"] = "object"
        elif key == "properties" and depth == 0:
            props: dict[str, Any] = {}
            groups: dict[str, dict[str, Any]] = {}
            for name, prop in value.items():
                group = next((g for g, members in FOLD_GROUPS.items() if name in members), None)
                if group is None:
                    props[name] = _compact(prop, 1)
                else:
                    groups.setdefault(group, {})[name] = {"type": prop.get("type", "string")}
            for group, members in groups.items():
                props[group] = {"type": "object", "properties": members}
            out[key] = props
        elif key == "items" and depth >= 2:
            out[key] = {"type": value.get("type", "object") if isinstance(value, dict) else "object"}
        else:
            out[key] = _compact(value, depth + 1)
    return out


def compact(schema: dict[str, Any]) -> dict[str, Any]:
    """The compacted catalog form Vestige 3.x serves in tools/list (its #212): selector enums,
    types and required lists survive; descriptions, defaults, $defs and oneOf trees do not.
    The full schemas stay what calls are validated against."""
    out = _compact(schema, 0)
    if isinstance(out.get("required"), list):
        out["required"] = [r for r in out["required"] if r in out.get("properties", {})]
    return out


def load_tools(generation: str) -> list[dict[str, Any]]:
    """The tool list (name, description, inputSchema) of one generation."""
    data = json.loads(TOOL_FILES[generation].read_text())
    return [
        {"name": t["name"], "description": t.get("description"), "inputSchema": t["inputSchema"]}
        for t in data["tools"]
    ]


def now() -> str:
    return datetime.now(UTC).isoformat()


class Store:
    """The memory store shared by all sessions of one process: in memory, and with a data
    directory (``--data-dir``, ``VESTIGE_DATA_DIR``: what the operator gives Vestige 3.x) also in
    ``<dir>/vestige.db``, an SQLite database in WAL mode like upstream's, written after every
    tool call that succeeded, so a restarted pod finds its memories and a backup has a real
    live SQLite store to copy."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.memories: dict[str, dict[str, Any]] = {}
        self.intentions: dict[str, dict[str, Any]] = {}
        self.db: sqlite3.Connection | None = None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(data_dir / "vestige.db", isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS nodes (kind TEXT, id TEXT, body TEXT, PRIMARY KEY (kind, id))"
            )
            for kind, node_id, body in self.db.execute("SELECT kind, id, body FROM nodes"):
                (self.memories if kind == "memory" else self.intentions)[node_id] = json.loads(body)

    def save(self) -> None:
        if self.db is None:
            return
        rows = [("memory", k, json.dumps(v)) for k, v in self.memories.items()]
        rows += [("intention", k, json.dumps(v)) for k, v in self.intentions.items()]
        with contextlib.closing(self.db.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")
            cur.execute("DELETE FROM nodes")
            cur.executemany("INSERT INTO nodes VALUES (?, ?, ?)", rows)
            cur.execute("COMMIT")

    def add(self, content: str, node_type: str, tags: list[str], source: str | None) -> dict[str, Any]:
        node = {
            "id": str(uuid.uuid4()),
            "content": content,
            "nodeType": node_type,
            "tags": list(tags),
            "source": source,
            "retentionStrength": 1.0,
            "retrievalStrength": 1.0,
            "storageStrength": 1.0,
            "createdAt": now(),
        }
        self.memories[node["id"]] = node
        return node

    def get(self, memory_id: str) -> dict[str, Any]:
        if memory_id not in self.memories:
            raise ToolError(f"Memory not found: {memory_id}")
        return self.memories[memory_id]

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        words = [w for w in query.lower().split() if len(w) >= 2]
        hits = [m for m in self.memories.values() if any(w in m["content"].lower() for w in words)]
        return hits[:limit]


class Vestige:
    """Tool implementations of one generation over a Store."""

    def __init__(self, generation: str, call_log: Path | None, data_dir: Path | None = None) -> None:
        self.generation = generation
        self.tools = load_tools(generation)
        if generation == "v1":
            # 1.3.0 deserializes `nodeType` (serde camelCase), not the advertised `node_type`
            for tool in self.tools:
                if tool["name"] in ("ingest", "smart_ingest"):
                    props = tool["inputSchema"].setdefault("properties", {})
                    props["nodeType"] = {"type": "string"}
        self.validators = {
            t["name"]: jsonschema.Draft202012Validator(strict(t["inputSchema"])) for t in self.tools
        }
        self.store = Store(data_dir)
        self.call_log = call_log

    def log(self, tool: str, arguments: dict[str, Any], valid: bool, error: str | None) -> None:
        if self.call_log is None:
            return
        line = json.dumps({"tool": tool, "arguments": arguments, "valid": valid, "error": error})
        with self.call_log.open("a") as fh:
            fh.write(line + "\n")

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Validate then run one tool; raises ToolError for anything Vestige would refuse."""
        validator = self.validators.get(name)
        if validator is None:
            self.log(name, arguments, False, "unknown tool")
            raise ToolError(f"Unknown tool: {name}")
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            message = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors)
            self.log(name, arguments, False, message)
            raise ToolError(f"Invalid arguments: {message}")
        try:
            result = getattr(self, f"{self.generation}_{name}", self.generic)(arguments)
        except ToolError as exc:
            self.log(name, arguments, True, str(exc))
            raise
        self.log(name, arguments, True, None)
        self.store.save()
        return result

    def generic(self, arguments: dict[str, Any]) -> Any:
        return {"ok": True, "arguments": arguments}

    # ---------------------------------------------------------------- shared behaviour
    def _ingest(self, a: dict[str, Any], force: bool) -> dict[str, Any]:
        if not force:
            for node in self.store.memories.values():
                if node["content"] == a["content"]:
                    node["tags"] = sorted(set(node["tags"]) | set(a.get("tags", [])))
                    return {"success": True, "decision": "update", "nodeId": node["id"]}
        # 1.3.0 reads only nodeType (its advertised node_type is ignored); 3.x reads node_type
        kind = a.get("nodeType", "fact") if self.generation == "v1" else a.get("node_type", "fact")
        node = self.store.add(a["content"], kind, a.get("tags", []), a.get("source"))
        return {"success": True, "decision": "create", "nodeId": node["id"]}

    def _search(self, a: dict[str, Any]) -> dict[str, Any]:
        hits = self.store.search(a["query"], a.get("limit", 10))
        return {"query": a["query"], "total": len(hits), "results": hits}

    def _feedback(self, memory_id: str, delta: float) -> dict[str, Any]:
        node = self.store.get(memory_id)
        node["retrievalStrength"] = max(0.0, min(1.0, node["retrievalStrength"] + delta))
        return {"success": True, "nodeId": memory_id, "retrievalStrength": node["retrievalStrength"]}

    def _codebase(self, a: dict[str, Any]) -> dict[str, Any]:
        action = a["action"]
        cb_tags = [f"codebase:{a['codebase']}"] if "codebase" in a else []
        if action == "remember_pattern":
            if "name" not in a or "description" not in a:
                raise ToolError("'name' and 'description' are required for remember_pattern action")
            node = self.store.add(
                f"# Code Pattern: {a['name']}\n\n{a['description']}", "pattern", ["pattern", *cb_tags], None
            )
            return {"action": action, "success": True, "nodeId": node["id"]}
        if action == "remember_decision":
            if "decision" not in a or "rationale" not in a:
                raise ToolError("'decision' and 'rationale' are required for remember_decision action")
            content = f"# Decision\n\n{a['rationale']}\n\n{a['decision']}"
            node = self.store.add(content, "decision", ["decision", *cb_tags], None)
            return {"action": action, "success": True, "nodeId": node["id"]}
        items = [
            m
            for m in self.store.memories.values()
            if m["nodeType"] in ("pattern", "decision") and (not cb_tags or cb_tags[0] in m["tags"])
        ]
        return {"action": "get_context", "codebase": a.get("codebase"), "items": items[: a.get("limit", 10)]}

    def _intention(self, a: dict[str, Any]) -> dict[str, Any]:
        action = a["action"]
        if action == "set":
            if "description" not in a:
                raise ToolError("'description' is required for set")
            intention = {
                "id": str(uuid.uuid4()),
                "description": a["description"],
                "trigger": a.get("trigger"),
                "priority": a.get("priority", "normal"),
                "status": "active",
            }
            self.store.intentions[intention["id"]] = intention
            return {"action": "set", "success": True, "intentionId": intention["id"]}
        if action == "update":
            if "id" not in a or "status" not in a:
                raise ToolError("'id' and 'status' are required for update")
            if a["id"] not in self.store.intentions:
                raise ToolError(f"Intention not found: {a['id']}")
            status = {"complete": "fulfilled", "cancel": "cancelled", "snooze": "snoozed"}[a["status"]]
            self.store.intentions[a["id"]]["status"] = status
            return {"action": "update", "success": True, "status": status}
        if action == "check":
            return {"action": "check", "triggered": [], "context": a.get("context", {})}
        wanted = a.get("filter_status", "active")
        listed = [i for i in self.store.intentions.values() if wanted in ("all", i["status"])]
        return {"action": "list", "intentions": listed[: a.get("limit", 20)]}

    def _stats(self) -> dict[str, Any]:
        return {"totalNodes": len(self.store.memories), "intentions": len(self.store.intentions)}

    # ---------------------------------------------------------------- v1 (1.3.0)
    def v1_search(self, a: dict[str, Any]) -> Any:
        return self._search(a)

    def v1_ingest(self, a: dict[str, Any]) -> Any:
        return self._ingest(a, force=True)

    def v1_smart_ingest(self, a: dict[str, Any]) -> Any:
        return self._ingest(a, force=a.get("forceCreate", False))

    def v1_promote_memory(self, a: dict[str, Any]) -> Any:
        return self._feedback(a["id"], 0.1)

    def v1_demote_memory(self, a: dict[str, Any]) -> Any:
        return self._feedback(a["id"], -0.1)

    def v1_memory(self, a: dict[str, Any]) -> Any:
        node = self.store.get(a["id"])
        if a["action"] == "delete":
            del self.store.memories[a["id"]]
            return {"action": "delete", "success": True, "nodeId": a["id"]}
        if a["action"] == "state":
            return {"action": "state", "memoryId": a["id"], "state": "Active"}
        return {"action": "get", "found": True, "node": node}

    def v1_codebase(self, a: dict[str, Any]) -> Any:
        return self._codebase(a)

    def v1_intention(self, a: dict[str, Any]) -> Any:
        return self._intention(a)

    def v1_stats(self, a: dict[str, Any]) -> Any:
        return self._stats()

    def v1_health_check(self, a: dict[str, Any]) -> Any:
        return {"status": "healthy", **self._stats()}

    def v1_backup(self, a: dict[str, Any]) -> Any:
        return {"success": True, "path": "/data/vestige/backups/vestige-backup.db"}

    def v1_export(self, a: dict[str, Any]) -> Any:
        fmt = a.get("format", "json")
        return {"success": True, "format": fmt, "count": len(self.store.memories), "path": f"exports/m.{fmt}"}

    # ---------------------------------------------------------------- v3 (3.x)
    def v3_recall(self, a: dict[str, Any]) -> Any:
        mode = a.get("mode", "lookup")
        if mode == "lookup":
            wrong = [f for f in ("depth", "topic", "since", "min_trust") if f in a]
            if wrong:
                raise ToolError(f"Unsupported recall lookup-mode field(s): {', '.join(wrong)}.")
        if mode in ("lookup", "reason") and not a.get("query", "").strip():
            raise ToolError("Query cannot be empty")
        if mode == "contradictions":
            return {"mode": mode, "pairs": []}
        return {"mode": mode, **self._search(a)}

    def v3_smart_ingest(self, a: dict[str, Any]) -> Any:
        if "items" in a:
            return {"results": [self._ingest(item, force=True) for item in a["items"]]}
        return self._ingest(a, force=a.get("forceCreate", False))

    def v3_memory(self, a: dict[str, Any]) -> Any:
        action = a["action"]
        if action == "get_batch":
            return {"action": action, "results": [self.store.memories.get(i) for i in a.get("ids", [])]}
        if "id" not in a:
            raise ToolError("This action requires 'id' parameter")
        node = self.store.get(a["id"])
        if action in ("delete", "purge"):
            if not a.get("confirm", False):
                raise ToolError("Pass confirm=true to retire this memory. It can't be retrieved.")
            del self.store.memories[a["id"]]
            return {"action": action, "success": True, "nodeId": a["id"]}
        if action in ("promote", "demote"):
            return {"action": action, **self._feedback(a["id"], 0.1 if action == "promote" else -0.1)}
        if action == "edit":
            if "content" not in a:
                raise ToolError("edit requires 'content'")
            node["content"] = a["content"]
            return {"action": action, "success": True, "nodeId": a["id"]}
        if action == "state":
            return {"action": "state", "memoryId": a["id"], "state": "Active"}
        return {"action": "get", "found": True, "node": node}

    def v3_purge(self, a: dict[str, Any]) -> Any:
        return self.v3_memory({**a, "action": "purge"})

    def v3_memory_status(self, a: dict[str, Any]) -> Any:
        view = a.get("view", "health")
        if view == "health":
            return {"view": view, "status": "healthy", **self._stats()}
        return {"view": view, **self._stats()}

    def v3_codebase(self, a: dict[str, Any]) -> Any:
        return self._codebase(a)

    def v3_intention(self, a: dict[str, Any]) -> Any:
        if a["action"] == "graph":
            return {"action": "graph", "matched": True}
        return self._intention(a)

    def v3_maintain(self, a: dict[str, Any]) -> Any:
        if a["action"] == "backup":
            return {"action": "backup", "success": True, "path": "/data/backups/vestige.db"}
        if a["action"] == "export":
            fmt = a.get("format", "json")
            return {"action": "export", "format": fmt, "count": len(self.store.memories)}
        return {"action": a["action"], "success": True}


def build_server(vestige: Vestige, version: str | None = None, catalog: str = "full") -> Server[Any]:
    """The MCP server object (tools/list + tools/call) over one Vestige implementation."""
    tools = [
        types.Tool(
            name=t["name"],
            description=t["description"],
            input_schema=compact(t["inputSchema"]) if catalog == "compact" else t["inputSchema"],
        )
        for t in vestige.tools
    ]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if str(arguments.get("query", "")).startswith(SLOW_QUERY):  # test hook: a slow Vestige
            await anyio.sleep(float(str(arguments["query"]).removeprefix(SLOW_QUERY) or 5))
        try:
            result = vestige.call(params.name, dict(params.arguments or {}))
        except ToolError as exc:
            return types.CallToolResult(content=[types.TextContent(text=str(exc))], is_error=True)
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(result))])

    return Server(
        "vestige",
        version=version or SERVER_VERSIONS[vestige.generation],
        instructions="Vestige stand-in for the bridge tests.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def accepts_json_and_sse(accept: str) -> bool:
    """Vestige's Accept rule: both JSON and event-stream, `*/*`, `application/*`, `text/*` count."""
    json_ok = sse_ok = False
    for part in accept.split(","):
        mime = part.split(";", 1)[0].strip().lower()
        json_ok |= mime in ("application/json", "application/*", "*/*")
        sse_ok |= mime in ("text/event-stream", "text/*", "*/*")
    return json_ok and sse_ok


def session_id(headers: dict[str, str]) -> str | None:
    """The Mcp-Session-Id header if it is a UUID (Vestige refuses anything else)."""
    value = headers.get("mcp-session-id")
    if value is None:
        return None
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


class VestigeHttpRules:
    """ASGI middleware with Vestige 3.x's native HTTP rules in front of the SDK's transport."""

    def __init__(self, app: ASGIApp, token: str | None, port: int, path: str = "/mcp") -> None:
        self.app = app
        self.token = token
        self.path = path
        self.negotiated: dict[str, str] = {}
        configured = [o.strip() for o in os.environ.get("VESTIGE_HTTP_ALLOWED_ORIGINS", "").split(",")]
        self.origins = [o for o in configured if o] or [
            f"http://127.0.0.1:{port}",
            f"http://localhost:{port}",
        ]

    def _auth(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.token is None:
            return None
        header = headers.get("authorization")
        if header is None:
            return 401, "Missing Authorization header"
        scheme, sep, token = header.partition(" ")
        if scheme.lower() != "bearer" or not sep:
            return 401, "Invalid Authorization scheme (expected Bearer)"
        if not hmac.compare_digest(token.lstrip().encode(), self.token.encode()):
            return 403, "Invalid auth token"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["path"].rstrip("/") != self.path:
            await _reply(send, 404, "not found")
            return
        if scope["method"] not in ("POST", "DELETE"):
            await _reply(send, 405, "method not allowed")
            return
        body = await self._read_body(receive, send)  # the body extractor runs before the handler
        if body is None:
            return
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            await _reply(send, 403, "Origin not allowed")
            return
        if scope["method"] == "POST" and not accepts_json_and_sse(headers.get("accept", "")):
            await _reply(send, 406, "Accept must include application/json and text/event-stream")
            return
        refused = self._auth(headers)
        if refused is not None:
            await _reply(send, *refused)
            return
        init_version = self._initialize_version(body) if scope["method"] == "POST" else None
        session: str | None = None
        if init_version is None:
            session = session_id(headers)
            if session is None:
                await _reply(send, 400, "Missing or invalid Mcp-Session-Id header")
                return
            expected = self.negotiated.get(session)
            if expected is None:
                await _reply(send, 404, "Session not found or expired")
                return
            version = headers.get("mcp-protocol-version")
            if version is None:
                await _reply(send, 400, "MCP-Protocol-Version header required")
                return
            if version != expected:
                await _reply(send, 400, "MCP-Protocol-Version mismatch")
                return
            if scope["method"] == "DELETE":
                self.negotiated.pop(session, None)
        # The SDK transport below wants the literal media types; Vestige's wildcards passed above.
        scope = {
            **scope,
            "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"accept"]
            + [(b"accept", b"application/json, text/event-stream")],
        }

        async def replay() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk or b"", "more_body": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start" and init_version is not None:
                for key, value in message.get("headers", []):
                    if key.decode().lower() == "mcp-session-id":
                        self.negotiated[value.decode()] = init_version
            await send(message)

        await self.app(scope, replay, capture)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                await _reply(send, 413, "body too large")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _initialize_version(body: bytes) -> str | None:
        try:
            message = json.loads(body)
        except ValueError:
            return None
        if not isinstance(message, dict) or message.get("method") != "initialize":
            return None
        requested = (message.get("params") or {}).get("protocolVersion")
        return requested if requested in SUPPORTED_PROTOCOLS else LATEST_PROTOCOL


def http_app(server: Server[Any], token: str | None, rules: bool, port: int = 0) -> ASGIApp:
    """ASGI app: the SDK's Streamable HTTP transport, wrapped in Vestige's rules for v3."""
    manager = StreamableHTTPSessionManager(app=server, json_response=True, stateless=False)

    async def transport(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with contextlib.AsyncExitStack() as stack:
                message = await receive()
                assert message["type"] == "lifespan.startup"
                await stack.enter_async_context(manager.run())
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                await send({"type": "lifespan.shutdown.complete"})
            return
        await manager.asgi_app(scope, receive, send)

    if not rules:
        return transport
    wrapped = VestigeHttpRules(transport, token, port)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await transport(scope, receive, send)
        else:
            await wrapped(scope, receive, send)

    return app


async def _serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generation", choices=sorted(TOOL_FILES), required=True)
    parser.add_argument("--stdio", action="store_true", help="serve over stdio instead of HTTP")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--bind",
        default=os.environ.get("VESTIGE_HTTP_BIND") or "127.0.0.1",
        help="listen address (Vestige's VESTIGE_HTTP_BIND; default 127.0.0.1)",
    )
    parser.add_argument("--token", default=os.environ.get("STANDIN_TOKEN"))
    parser.add_argument("--call-log", default=os.environ.get("STANDIN_CALL_LOG"))
    parser.add_argument(
        "--catalog",
        choices=("full", "compact"),
        help="schemas in tools/list: full, or compact like Vestige 3.x (default: compact for v3)",
    )
    parser.add_argument("--server-version", help="serverInfo.version to report (default per generation)")
    parser.add_argument("--no-http-rules", action="store_true", help="plain SDK transport (no Vestige rules)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("VESTIGE_DATA_DIR") or None,
        help="keep the memories in <dir>/vestige.db (SQLite, WAL) across restarts (default: in memory)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else None
    vestige = Vestige(args.generation, Path(args.call_log) if args.call_log else None, data_dir)
    catalog = args.catalog or ("compact" if args.generation == "v3" else "full")
    server = build_server(vestige, args.server_version, catalog)
    if args.stdio:
        anyio.run(_serve_stdio, server)
        return
    import uvicorn

    rules = args.generation == "v3" and not args.no_http_rules
    app = http_app(server, args.token, rules=rules, port=args.port)
    print(f"standin {args.generation} listening on {args.bind}:{args.port}", file=sys.stderr, flush=True)
    http = uvicorn.Server(
        uvicorn.Config(app, host=args.bind, port=args.port, log_level="warning", lifespan="on")
    )
    threading.Thread(target=_exit_at_stdin_eof, args=(http,), name="stdin", daemon=True).start()
    http.run()


def _exit_at_stdin_eof(http: Any) -> None:
    """Vestige 3.x's main task is its stdio loop; HTTP is a task beside it: stdin EOF ends both.

    (Upstream also serves MCP on those stdin lines; the stand-in only reads them to see EOF.)
    """
    try:
        while sys.stdin.buffer.read1(65536):
            pass
    except (OSError, ValueError):
        pass
    print("standin: stdin reached EOF, shutting down (as Vestige 3.x does)", file=sys.stderr, flush=True)
    http.should_exit = True


if __name__ == "__main__":
    main()
