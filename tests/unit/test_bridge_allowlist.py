"""Pure tests of vestige_bridge.allowlist: the /mcp allow-list against the real tool lists.

The reference lists are what Vestige itself reports (tests/bridge/data: 1.3.0 and 2.0.0 from
their tools/list, 3.x from upstream's schema functions). Every allowed argument and action must
exist in a reference schema (the list never invents one), and every tool a reference list
offers is either allowed or refused with a written reason (no tool is left undecided).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from vestige_bridge.allowlist import ALLOWED, REFUSED_WHY, advertised, check_call, check_resource
from vestige_bridge.mapping import ServerProfile

DATA = Path(__file__).resolve().parents[1] / "bridge" / "data"
REFERENCES = {
    "1.3.0": ("v1", "vestige-v1.3.0-tools.json"),
    "2.0.0": ("v1", "vestige-v2.0.0-tools.json"),
    "3.1.1": ("v3", "vestige-v3-tools.json"),
}
ALIASES = {"nodeType"}
"""Arguments a tool reads without advertising them (1.x ingest/smart_ingest: see mapping)."""


def reference(version: str) -> dict[str, dict[str, Any]]:
    data = json.loads((DATA / REFERENCES[version][1]).read_text())
    return {t["name"]: t["inputSchema"] for t in data["tools"]}


def profile(version: str) -> ServerProfile:
    return ServerProfile(
        name="vestige", version=version, protocol_version="2025-11-25", tools=reference(version)
    )


def test_each_version_is_its_generation() -> None:
    for version, (generation, _) in REFERENCES.items():
        assert profile(version).generation == generation


@pytest.mark.parametrize("generation", ["v1", "v3"])
def test_allowed_arguments_and_actions_exist_in_a_real_schema(generation: str) -> None:
    schemas = [reference(v) for v, (g, _) in REFERENCES.items() if g == generation]
    for name, tool in ALLOWED[generation].items():
        offered = [s[name] for s in schemas if name in s]
        assert offered, f"{name} is in no {generation} tool list"
        properties = set().union(*(s.get("properties", {}) for s in offered))
        assert set(tool.args) <= properties | ALIASES, (name, set(tool.args) - properties)
        if tool.selector is not None:
            enums = set().union(*(s["properties"][tool.selector].get("enum", []) for s in offered))
            assert set(tool.actions) <= enums, (name, set(tool.actions) - enums)


@pytest.mark.parametrize("version", list(REFERENCES))
def test_every_offered_tool_is_decided(version: str) -> None:
    p = profile(version)
    allowed = ALLOWED[p.generation]
    undecided = {name for name in p.tools if name not in allowed and name not in REFUSED_WHY}
    assert undecided == set()


@pytest.mark.parametrize("version", list(REFERENCES))
def test_store_replacing_and_destroying_tools_are_refused(version: str) -> None:
    p = profile(version)
    for name in ("gc", "consolidate", "dream", "restore", "purge", "dedup", "backfill", "delete_knowledge"):
        refusal = check_call(p, name, {})
        assert refusal is not None and refusal.argument == "", name
    for action in ("gc", "restore", "consolidate", "dream", "dream_compile", "importance_score"):
        assert check_call(p, "maintain", {"action": action}) is not None
    for action in ("delete", "purge"):
        refusal = check_call(p, "memory", {"action": action, "id": "m"})
        assert refusal is not None and refusal.argument == "action"


def test_hidden_aliases_are_refused_even_when_the_allow_list_names_them() -> None:
    """2.0.0 still answers `ingest`/`stats`, but does not advertise them: not offered, not allowed."""
    p = profile("2.0.0")
    assert not p.has("ingest")
    assert check_call(p, "ingest", {"content": "x"}) is not None
    assert check_call(profile("1.3.0"), "ingest", {"content": "x"}) is None


@pytest.mark.parametrize(
    "name",
    [
        "../x.json",
        "/data/vestige/vestige.db",
        "sub/x.json",
        "x.json\n",
        "x.json\r",
        "x\x00.json",
        "x\t.json",
        ".hidden",
        "..",
        "x" * 101,
        "",
        "x y.json",
        "é.json",
    ],
)
def test_file_names_are_confined(name: str) -> None:
    for version, tool, extra in (("1.3.0", "export", {}), ("3.1.1", "maintain", {"action": "export"})):
        refusal = check_call(profile(version), tool, {**extra, "path": name})
        assert refusal is not None and refusal.argument == "path", (version, name)


def test_plain_file_names_pass() -> None:
    for name in ("agent-export.json", "a", "x" * 100, "2026-12-03_memories.jsonl"):
        assert check_call(profile("1.3.0"), "export", {"path": name}) is None
        assert check_call(profile("3.1.1"), "maintain", {"action": "export", "path": name}) is None


def test_nested_and_override_arguments() -> None:
    v3 = profile("3.1.1")
    assert check_call(v3, "smart_ingest", {"content": "x", "allowSecrets": False}) is None
    refusal = check_call(
        v3, "smart_ingest", {"items": [{"content": "a"}, {"content": "b", "allowSecrets": True}]}
    )
    assert refusal is not None and refusal.argument == "items.1.allowSecrets"
    refusal = check_call(v3, "smart_ingest", {"items": [{"content": "a", "backupPath": "x"}]})
    assert refusal is not None and refusal.argument == "items.0.backupPath"
    refusal = check_call(v3, "maintain", {"action": "backup", "path": "vestige.db"})
    assert refusal is not None and refusal.argument == "path"
    assert check_call(v3, "recall", {"query": "x", "limit": None}) is None  # null: not given
    refusal = check_call(v3, "recall", {"query": ["not", "a", "string"]})
    assert refusal is not None and refusal.argument == "query"


def test_unknown_generation_gets_no_tool() -> None:
    p = ServerProfile(
        name="vestige", version="4.0.0", protocol_version="2025-11-25", tools=reference("3.1.1")
    )
    assert p.generation == "unsupported"
    assert check_call(p, "recall", {"query": "x"}) is not None
    tools = [types.Tool(name=n, input_schema=s) for n, s in reference("3.1.1").items()]
    assert advertised(p, tools) == []


def test_advertised_full_schema_is_cut_to_the_allow_list() -> None:
    p = profile("3.1.1")
    tools = [types.Tool(name=n, input_schema=s) for n, s in reference("3.1.1").items()]
    shown = {t.name: t.input_schema for t in advertised(p, tools)}
    assert set(shown) == set(ALLOWED["v3"])
    maintain = shown["maintain"]
    assert maintain["properties"]["action"]["enum"] == ["backup", "export"]
    assert set(maintain["properties"]) == {"action", "format", "tags", "since", "path"}
    assert [v["properties"]["action"]["const"] for v in maintain["oneOf"]] == ["backup", "export"]
    assert "confirm" not in shown["memory"]["properties"]
    assert "delete" not in shown["memory"]["properties"]["action"]["enum"]
    assert "command" not in shown["intention"]["properties"]


def test_resources_only_memory_and_codebase_views() -> None:
    assert check_resource("memory://stats") is None
    assert check_resource("codebase://patterns") is None
    assert check_resource("memory://intentions/due") is None
    for uri in (
        "file:///etc/passwd",
        "memory://stats\n",
        "memory://../x",
        "http://x/y",
        "memory://" + "a" * 65,
    ):
        assert check_resource(uri) is not None, uri
