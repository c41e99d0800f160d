"""Pure tests of vestige_bridge.mapping: REST bodies -> exact Vestige tool calls per generation.

Every produced call is validated against a STRICT copy (no unknown keys) of the generation's
reference schema in tests/bridge/data, so a field the real server would silently ignore fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from vestige_bridge import models
from vestige_bridge.mapping import (
    ENDPOINTS,
    ArgumentGuard,
    FieldError,
    ServerProfile,
    ToolCall,
    Unsupported,
    detect_generation,
    major_version,
)

from tests.bridge.standin import compact, strict

DATA = Path(__file__).resolve().parents[1] / "bridge" / "data"
FILES = {"v1": "vestige-v1.3.0-tools.json", "v3": "vestige-v3-tools.json"}


def reference(generation: str) -> dict[str, dict[str, Any]]:
    data = json.loads((DATA / FILES[generation]).read_text())
    return {t["name"]: t["inputSchema"] for t in data["tools"]}


def profile(generation: str, version: str | None = None) -> ServerProfile:
    version = version or {"v1": "1.3.0", "v3": "3.1.1"}[generation]
    return ServerProfile(
        name="vestige", version=version, protocol_version="2025-11-25", tools=reference(generation)
    )


PROFILES = {"v1": profile("v1"), "v3": profile("v3")}
STRICT = {gen: {name: strict(schema) for name, schema in reference(gen).items()} for gen in FILES}
for _tool in ("ingest", "smart_ingest"):  # what 1.3.0 actually deserializes (see mapping._ingest_args)
    STRICT["v1"][_tool]["properties"]["nodeType"] = {"type": "string"}


def valid(generation: str, call: ToolCall) -> ToolCall:
    schema = STRICT[generation][call.tool]
    jsonschema.Draft202012Validator(schema).validate(call.arguments)
    return call


def mapped(endpoint: str, body: Any, generation: str) -> ToolCall:
    return valid(generation, ENDPOINTS[endpoint](body, PROFILES[generation]))


# ----------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("version", "tools", "expected"),
    [
        ("1.3.0", {"search", "ingest", "smart_ingest", "memory", "promote_memory"}, "v1"),
        ("2.1.21", {"search", "smart_ingest", "memory", "system_status"}, "v1"),
        ("3.1.1", {"recall", "smart_ingest", "memory", "memory_status"}, "v3"),
        ("v3.0.0", {"recall", "smart_ingest", "memory"}, "v3"),
        ("4.0.0", {"recall", "smart_ingest", "memory"}, "unsupported"),
        ("3.1.1", {"echo"}, "unsupported"),
        ("", {"recall", "smart_ingest", "memory"}, "v3"),
    ],
)
def test_detect_generation(version: str, tools: set[str], expected: str) -> None:
    assert detect_generation(version, tools) == expected


def test_major_version() -> None:
    assert major_version("3.1.1") == 3
    assert major_version("v1.3.0") == 1
    assert major_version("12") == 12
    assert major_version("dev") is None
    assert major_version(None) is None


def test_reference_profiles_detect_their_generation() -> None:
    assert PROFILES["v1"].generation == "v1"
    assert PROFILES["v3"].generation == "v3"
    assert "Vestige 1.3.0 (tool generation v1)" in PROFILES["v1"].label


# ----------------------------------------------------------------------------- exact calls
def test_search() -> None:
    body = models.SearchRequest(query="tea", limit=3, threshold=0.2, mode="semantic")
    assert mapped("search", body, "v1") == ToolCall(
        "search", {"query": "tea", "limit": 3, "min_similarity": 0.2}
    )
    assert mapped("search", body, "v3") == ToolCall(
        "recall", {"query": "tea", "limit": 3, "min_similarity": 0.2}
    )
    keyword = models.SearchRequest(query="tea", mode="keyword")
    assert mapped("search", keyword, "v3").arguments == {"query": "tea", "limit": 10, "concrete": True}
    assert mapped("search", keyword, "v1").arguments == {"query": "tea", "limit": 10}


def test_ingest_and_smart_ingest() -> None:
    body = models.IngestRequest(content="c", tags=["a"], context="ctx")
    assert mapped("ingest", body, "v1") == ToolCall(  # 1.x reads nodeType (see mapping)
        "ingest", {"content": "c", "node_type": "fact", "nodeType": "fact", "tags": ["a"], "source": "ctx"}
    )
    assert mapped("ingest", body, "v3") == ToolCall(
        "smart_ingest",
        {"content": "c", "node_type": "fact", "tags": ["a"], "source": "ctx", "forceCreate": True},
    )
    smart = models.SmartIngestRequest(content="c", source="s", context="ignored", force_create=True)
    expected = {"content": "c", "node_type": "fact", "source": "s", "forceCreate": True}
    assert mapped("smart_ingest", smart, "v3") == ToolCall("smart_ingest", expected)
    assert mapped("smart_ingest", smart, "v1") == ToolCall("smart_ingest", {**expected, "nodeType": "fact"})


def test_ingest_without_ingest_tool_uses_smart_ingest() -> None:
    tools = {k: v for k, v in reference("v1").items() if k != "ingest"}
    p = ServerProfile(name="vestige", version="2.1.0", protocol_version="2025-11-25", tools=tools)
    call = ENDPOINTS["ingest"](models.IngestRequest(content="c"), p)
    assert call == ToolCall("smart_ingest", {"content": "c", "node_type": "fact", "forceCreate": True})


@pytest.mark.parametrize("kind", ["promote", "demote"])
def test_feedback(kind: str) -> None:
    body = models.FeedbackRequest(memory_id="m-1", reason="why")
    assert mapped(kind, body, "v1") == ToolCall(f"{kind}_memory", {"id": "m-1", "reason": "why"})
    assert mapped(kind, body, "v3") == ToolCall("memory", {"action": kind, "id": "m-1", "reason": "why"})
    no_reason = models.FeedbackRequest(memory_id="m-1")
    assert mapped(kind, no_reason, "v1").arguments == {"id": "m-1"}


@pytest.mark.parametrize(
    ("action", "v1", "v3"),
    [
        ("get", ("memory", {"action": "get", "id": "m"}), ("memory", {"action": "get", "id": "m"})),
        (
            "check_state",
            ("memory", {"action": "state", "id": "m"}),
            ("memory", {"action": "state", "id": "m"}),
        ),
        ("state", ("memory", {"action": "state", "id": "m"}), ("memory", {"action": "state", "id": "m"})),
        (
            "delete",
            ("memory", {"action": "delete", "id": "m"}),
            ("memory", {"action": "delete", "id": "m", "confirm": True, "reason": "r"}),
        ),
        ("purge", None, ("memory", {"action": "purge", "id": "m", "confirm": True, "reason": "r"})),
        (
            "promote",
            ("promote_memory", {"id": "m", "reason": "r"}),
            ("memory", {"action": "promote", "id": "m", "reason": "r"}),
        ),
        ("edit", None, ("memory", {"action": "edit", "id": "m", "content": "new"})),
    ],
)
def test_memory(action: str, v1: tuple[str, dict[str, Any]] | None, v3: tuple[str, dict[str, Any]]) -> None:
    body = models.MemoryRequest(action=action, memory_id="m", content="new", reason="r")  # type: ignore[arg-type]
    assert mapped("memory", body, "v3") == ToolCall(*v3)
    if v1 is None:
        with pytest.raises(Unsupported, match=r"Vestige 1\.3\.0"):
            ENDPOINTS["memory"](body, PROFILES["v1"])
    else:
        assert mapped("memory", body, "v1") == ToolCall(*v1)


def test_memory_edit_needs_content() -> None:
    with pytest.raises(FieldError) as info:
        ENDPOINTS["memory"](models.MemoryRequest(action="edit", memory_id="m"), PROFILES["v3"])
    assert info.value.field == "content"


@pytest.mark.parametrize("gen", ["v1", "v3"])
def test_codebase(gen: str) -> None:
    pattern = models.CodebaseRequest(content="Line one\nmore", tags=["t"], files=["f"], codebase="cb")
    assert mapped("codebase", pattern, gen).arguments == {
        "action": "remember_pattern",
        "name": "Line one",
        "description": "Line one\nmore",
        "files": ["f"],
        "codebase": "cb",
    }
    named = models.CodebaseRequest(action="remember_pattern", name="N", description="D")
    assert mapped("codebase", named, gen).arguments == {
        "action": "remember_pattern",
        "name": "N",
        "description": "D",
    }
    decision = models.CodebaseRequest(
        pattern_type="decision", decision="D", rationale="R", alternatives=["A"]
    )
    assert mapped("codebase", decision, gen).arguments == {
        "action": "remember_decision",
        "decision": "D",
        "rationale": "R",
        "alternatives": ["A"],
    }
    context = models.CodebaseRequest(action="get_context", codebase="cb", limit=4, files=["ignored"])
    assert mapped("codebase", context, gen).arguments == {
        "action": "get_context",
        "limit": 4,
        "codebase": "cb",
    }
    for body, field in (
        (models.CodebaseRequest(), "description"),
        (models.CodebaseRequest(pattern_type="decision", content="D"), "rationale"),
        (models.CodebaseRequest(action="remember_decision", rationale="R"), "decision"),
    ):
        with pytest.raises(FieldError) as info:
            ENDPOINTS["codebase"](body, PROFILES[gen])
        assert info.value.field == field


@pytest.mark.parametrize("gen", ["v1", "v3"])
def test_intention(gen: str) -> None:
    legacy = models.IntentionRequest(content="do it", trigger="when asked", tags=["x"])
    assert mapped("intention", legacy, gen).arguments == {
        "action": "set",
        "description": "do it",
        "trigger": {"type": "event", "condition": "when asked"},
    }
    full = models.IntentionRequest(
        description="d",
        trigger=models.Trigger(type="time", at="2026-12-01T10:00:00Z"),
        priority="critical",
        deadline="2026-12-02T00:00:00Z",
    )
    assert mapped("intention", full, gen).arguments["trigger"] == {
        "type": "time",
        "at": "2026-12-01T10:00:00Z",
    }
    update = models.IntentionRequest(action="update", id="i", status="cancel")
    assert mapped("intention", update, gen).arguments == {"action": "update", "id": "i", "status": "cancel"}
    check = models.IntentionRequest(
        action="check", context=models.CheckContext(file="a.py"), include_snoozed=False
    )
    assert mapped("intention", check, gen).arguments == {
        "action": "check",
        "context": {"file": "a.py"},
        "include_snoozed": False,
    }
    listing = models.IntentionRequest(action="list", limit=5)
    assert mapped("intention", listing, gen).arguments == {"action": "list", "limit": 5}


def test_intention_v3_only_features() -> None:
    recurring = models.IntentionRequest(
        description="d", trigger=models.Trigger(type="recurring", recurrence={"every": 2, "unit": "days"})
    )
    assert mapped("intention", recurring, "v3").arguments["trigger"] == {
        "type": "recurring",
        "recurrence": {"every": 2, "unit": "days"},
    }
    events = models.IntentionRequest(action="check", context=models.CheckContext(events=["deployed"]))
    assert mapped("intention", events, "v3").arguments["context"] == {"events": ["deployed"]}
    for body in (
        recurring,
        events,
        models.IntentionRequest(description="d", trigger=models.Trigger(activity="x")),
    ):
        with pytest.raises(Unsupported, match=r"1\.3\.0"):
            ENDPOINTS["intention"](body, PROFILES["v1"])


def test_maintenance() -> None:
    assert mapped("stats", None, "v1") == ToolCall("stats", {})
    assert mapped("stats", None, "v3") == ToolCall("memory_status", {"view": "stats"})
    assert mapped("health_check", None, "v1") == ToolCall("health_check", {})
    assert mapped("health_check", None, "v3") == ToolCall("memory_status", {"view": "health"})
    assert mapped("backup", None, "v1") == ToolCall("backup", {})
    assert mapped("backup", None, "v3") == ToolCall("maintain", {"action": "backup"})
    body = models.ExportRequest(format="jsonl", since="2026-03-04", filename="x.jsonl", tags=["a"])
    args = {"format": "jsonl", "tags": ["a"], "since": "2026-03-04", "path": "x.jsonl"}
    assert mapped("export", body, "v1") == ToolCall("export", args)
    assert mapped("export", body, "v3") == ToolCall("maintain", {"action": "export", **args})
    with pytest.raises(Unsupported):
        ENDPOINTS["export"](models.ExportRequest(format="portable"), PROFILES["v1"])


def test_health_check_and_stats_on_2x_use_system_status() -> None:
    tools = {"search": {}, "smart_ingest": {}, "memory": {}, "system_status": {"type": "object"}}
    p = ServerProfile(name="vestige", version="2.0.0", protocol_version="2025-11-25", tools=tools)
    assert ENDPOINTS["health_check"](None, p) == ToolCall("system_status", {})
    assert ENDPOINTS["stats"](None, p) == ToolCall("system_status", {})
    tools.pop("system_status")
    p = ServerProfile(name="vestige", version="2.0.0", protocol_version="2025-11-25", tools=tools)
    with pytest.raises(Unsupported, match="neither a 'stats' nor a 'system_status' tool"):
        ENDPOINTS["stats"](None, p)


def test_missing_tool_or_action_is_unsupported() -> None:
    tools = reference("v3")
    tools["memory"] = {**tools["memory"], "properties": {"action": {"type": "string", "enum": ["get"]}}}
    tools.pop("maintain")
    p = ServerProfile(name="vestige", version="3.0.0", protocol_version="2025-11-25", tools=tools)
    with pytest.raises(Unsupported, match="has no action 'purge'"):
        ENDPOINTS["memory"](models.MemoryRequest(action="purge", memory_id="m"), p)
    with pytest.raises(Unsupported, match="no 'maintain' tool"):
        ENDPOINTS["backup"](None, p)


def test_unsupported_generation_refuses_everything() -> None:
    p = profile("v3", version="4.2.0")
    bodies = {
        "search": models.SearchRequest(query="q"),
        "ingest": models.IngestRequest(content="c"),
        "smart_ingest": models.SmartIngestRequest(content="c"),
        "promote": models.FeedbackRequest(memory_id="m"),
        "demote": models.FeedbackRequest(memory_id="m"),
        "memory": models.MemoryRequest(action="get", memory_id="m"),
        "codebase": models.CodebaseRequest(content="c"),
        "intention": models.IntentionRequest(description="d"),
        "stats": None,
        "health_check": None,
        "backup": None,
        "export": models.ExportRequest(),
    }
    assert set(bodies) == set(ENDPOINTS)
    for endpoint, body in bodies.items():
        with pytest.raises(Unsupported, match=r"Vestige 4\.2\.0") as info:
            ENDPOINTS[endpoint](body, p)
        message = str(info.value)
        assert "4.x has no search and no SQLite store" in message
        assert "use Vestige 3.1.1" in message


# ----------------------------------------------------------------------------- the guard
def test_argument_guard_catches_what_the_server_would_reject() -> None:
    guard = ArgumentGuard(PROFILES["v1"])
    guard.check(ToolCall("search", {"query": "q", "limit": 5}))
    with pytest.raises(FieldError) as info:
        guard.check(ToolCall("search", {"query": "q", "limit": 500}))
    assert info.value.field == "limit"
    with pytest.raises(FieldError):
        guard.check(ToolCall("memory", {"action": "purge", "id": "m"}))
    guard.check(ToolCall("unknown_tool", {"anything": 1}))  # no schema: nothing to check


def test_argument_guard_skips_invalid_schemas() -> None:
    p = ServerProfile(
        name="x", version="1.0.0", protocol_version="2025-11-25", tools={"search": {"type": "no-such-type"}}
    )
    ArgumentGuard(p).check(ToolCall("search", {"query": 1}))


def test_compact_catalog_of_3x_maps_the_same() -> None:
    """Vestige 3.x serves compacted schemas in tools/list; mapping and the guard still work."""
    tools = {name: compact(schema) for name, schema in reference("v3").items()}
    p = ServerProfile(name="vestige", version="3.1.1", protocol_version="2025-11-25", tools=tools)
    assert p.generation == "v3"
    assert p.enum("memory", "action") is not None and "purge" in (p.enum("memory", "action") or set())
    guard = ArgumentGuard(p)
    bodies = [
        ("search", models.SearchRequest(query="q", threshold=0.4, mode="keyword")),
        ("ingest", models.IngestRequest(content="c", tags=["t"])),
        ("memory", models.MemoryRequest(action="purge", memory_id="m")),
        ("backup", None),
        ("export", models.ExportRequest(format="portable")),
        (
            "intention",
            models.IntentionRequest(description="d", trigger=models.Trigger(type="activity", activity="x")),
        ),
        ("stats", None),
    ]
    for endpoint, body in bodies:
        call = ENDPOINTS[endpoint](body, p)
        guard.check(call)
        assert call == ENDPOINTS[endpoint](body, PROFILES["v3"])
        valid("v3", call)


def test_memory_edit_and_promote_on_2x_use_the_unified_memory_tool() -> None:
    """2.0.0 lists `memory` with get|delete|state|promote|demote|edit and no `promote_memory`."""
    memory = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["get", "delete", "state", "promote", "demote", "edit"]},
            "id": {"type": "string"},
            "content": {"type": "string"},
            "reason": {"type": "string"},
        },
        "required": ["action", "id"],
    }
    tools = {"search": {}, "smart_ingest": {}, "memory": memory, "system_status": {}}
    p = ServerProfile(name="vestige", version="2.0.0", protocol_version="2025-11-25", tools=tools)
    edit = models.MemoryRequest(action="edit", memory_id="m", content="new")
    assert ENDPOINTS["memory"](edit, p) == ToolCall("memory", {"action": "edit", "id": "m", "content": "new"})
    promote = models.FeedbackRequest(memory_id="m", reason="r")
    assert ENDPOINTS["promote"](promote, p) == ToolCall(
        "memory", {"action": "promote", "id": "m", "reason": "r"}
    )
    with pytest.raises(Unsupported, match="no action 'purge'"):
        ENDPOINTS["memory"](models.MemoryRequest(action="purge", memory_id="m"), p)
