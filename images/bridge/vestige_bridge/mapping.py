"""Pure mapping from REST requests to the exact Vestige tool call of the connected generation.

Vestige changed its tools between versions:

* **v1** (1.x, also the 2.x "search" family): ``search``, ``ingest``, ``smart_ingest``,
  ``promote_memory``/``demote_memory``, ``memory`` (get|delete|state), ``codebase``, ``intention``,
  ``stats``, ``health_check``, ``backup``, ``export``.
* **v3** (3.x): ``recall``, ``smart_ingest`` (``content`` xor ``items``), ``memory``
  (get|get_batch|state|promote|demote|edit|purge|delete with ``confirm``), ``memory_status``
  (views), ``maintain`` (actions incl. backup/export), ``codebase``, ``intention``, ...

The generation is decided once per connection from ``serverInfo.version`` and ``tools/list``
(:func:`detect_generation`); each endpoint then builds arguments for that generation's schema
only. What the connected Vestige cannot serve raises :class:`Unsupported` (HTTP 501), a request
value it would reject raises :class:`FieldError` (HTTP 422). Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from vestige_bridge import models

Generation = Literal["v1", "v3", "unsupported"]


class Unsupported(Exception):
    """The connected Vestige has no tool (or action) for this endpoint: HTTP 501."""


class FieldError(Exception):
    """A request field holds something the connected Vestige cannot accept: HTTP 422."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class ToolCall:
    """One MCP ``tools/call``: tool name and arguments exactly as Vestige's schema wants them."""

    tool: str
    arguments: dict[str, Any]


def major_version(version: str | None) -> int | None:
    """Major number of a ``serverInfo.version`` such as ``3.1.1`` or ``v1.3.0``; None if unknown."""
    match = re.match(r"^\s*v?(\d+)(?:\.|$)", version or "")
    return int(match.group(1)) if match else None


def detect_generation(version: str | None, tools: set[str]) -> Generation:
    """Which tool generation a server speaks, from its version and tool names."""
    major = major_version(version)
    if major is not None and major >= 4:
        # 4.x dropped embeddings and SQLite; recall works only by exact handle.
        return "unsupported"
    if {"recall", "smart_ingest", "memory"} <= tools:
        return "v3"
    if {"search", "smart_ingest", "memory"} <= tools:
        return "v1"
    return "unsupported"


@dataclass(frozen=True)
class ServerProfile:
    """What the connected Vestige reported at initialize + tools/list."""

    name: str
    version: str
    protocol_version: str
    tools: Mapping[str, Mapping[str, Any]]
    generation: Generation = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "generation", detect_generation(self.version, set(self.tools)))

    @property
    def label(self) -> str:
        return f"Vestige {self.version or '(unknown version)'} (tool generation {self.generation})"

    def has(self, tool: str) -> bool:
        return tool in self.tools

    def enum(self, tool: str, prop: str) -> set[str] | None:
        """Values a selector property (``action``/``view``/``mode``) accepts, if advertised."""
        schema = self.tools.get(tool) or {}
        values = ((schema.get("properties") or {}).get(prop) or {}).get("enum")
        return {str(v) for v in values} if isinstance(values, list) else None

    def supports_action(self, tool: str, action: str, prop: str = "action") -> bool:
        if not self.has(tool):
            return False
        values = self.enum(tool, prop)
        return values is None or action in values


def unsupported(endpoint: str, profile: ServerProfile, what: str) -> Unsupported:
    return Unsupported(f"{endpoint} is not supported by {profile.label}: {what}")


def _require(endpoint: str, profile: ServerProfile, tool: str, action: str | None = None) -> None:
    if not profile.has(tool):
        raise unsupported(endpoint, profile, f"it has no '{tool}' tool")
    if action is not None and not profile.supports_action(tool, action):
        raise unsupported(endpoint, profile, f"its '{tool}' tool has no action '{action}'")


def _put(args: dict[str, Any], key: str, value: Any) -> None:
    """Set an optional argument only when the request carried a value."""
    if value is not None and value != []:
        args[key] = value


PINNED_VERSION = "3.1.1"
"""The Vestige the project pins (images/vestige/Dockerfile); what a 4.x user is told to run."""


def _generation(endpoint: str, profile: ServerProfile) -> Literal["v1", "v3"]:
    if profile.generation == "unsupported":
        major = major_version(profile.version)
        if major is not None and major >= 4:
            raise unsupported(
                endpoint,
                profile,
                f"Vestige {major}.x has no search and no SQLite store (recall only by exact handle), "
                f"so the bridge cannot map its tools; use Vestige {PINNED_VERSION}, the pinned default",
            )
        raise unsupported(endpoint, profile, "this bridge maps only the v1 (1.x/2.x) and v3 (3.x) tool sets")
    return profile.generation


# --------------------------------------------------------------------------- endpoints
def map_search(req: models.SearchRequest, profile: ServerProfile) -> ToolCall:
    endpoint = "POST /search"
    gen = _generation(endpoint, profile)
    args: dict[str, Any] = {"query": req.query, "limit": req.limit}
    _put(args, "min_similarity", req.threshold)
    _put(args, "min_retention", req.min_retention)
    _put(args, "detail_level", req.detail_level)
    if gen == "v3":
        _require(endpoint, profile, "recall")
        if req.mode == "keyword":
            args["concrete"] = True
        return ToolCall("recall", args)
    _require(endpoint, profile, "search")
    return ToolCall("search", args)


def _ingest_args(req: models.IngestRequest, profile: ServerProfile) -> dict[str, Any]:
    args: dict[str, Any] = {"content": req.content, "node_type": req.node_type}
    if major_version(profile.version) == 1:
        # 1.x advertises `node_type` but deserializes `nodeType` (serde camelCase, no alias:
        # upstream tools/ingest.rs, smart_ingest.rs), so `node_type` alone is silently dropped and
        # every memory becomes a "fact". 2.x added the alias. Send both.
        args["nodeType"] = req.node_type
    _put(args, "tags", list(req.tags))
    _put(args, "source", req.source if req.source is not None else req.context)
    return args


def map_ingest(req: models.IngestRequest, profile: ServerProfile) -> ToolCall:
    endpoint = "POST /ingest"
    gen = _generation(endpoint, profile)
    args = _ingest_args(req, profile)
    if gen == "v1" and profile.has("ingest"):
        return ToolCall("ingest", args)
    # 3.x (and late 2.x) folded ingest into smart_ingest: forceCreate keeps "always a new memory".
    _require(endpoint, profile, "smart_ingest")
    return ToolCall("smart_ingest", {**args, "forceCreate": True})


def map_smart_ingest(req: models.SmartIngestRequest, profile: ServerProfile) -> ToolCall:
    endpoint = "POST /smart_ingest"
    _generation(endpoint, profile)
    _require(endpoint, profile, "smart_ingest")
    args = _ingest_args(req, profile)
    if req.force_create:
        args["forceCreate"] = True
    return ToolCall("smart_ingest", args)


def _feedback(
    endpoint: str, kind: str, memory_id: str, reason: str | None, profile: ServerProfile
) -> ToolCall:
    gen = _generation(endpoint, profile)
    actions = profile.enum("memory", "action")
    if profile.has("memory") and (kind in (actions or set()) or (gen == "v3" and actions is None)):
        args: dict[str, Any] = {"action": kind, "id": memory_id}
        _put(args, "reason", reason)
        return ToolCall("memory", args)
    legacy = f"{kind}_memory"  # 1.x: promote_memory / demote_memory
    _require(endpoint, profile, legacy)
    args = {"id": memory_id}
    _put(args, "reason", reason)
    return ToolCall(legacy, args)


def map_promote(req: models.FeedbackRequest, profile: ServerProfile) -> ToolCall:
    return _feedback("POST /promote", "promote", req.memory_id, req.reason, profile)


def map_demote(req: models.FeedbackRequest, profile: ServerProfile) -> ToolCall:
    return _feedback("POST /demote", "demote", req.memory_id, req.reason, profile)


def map_memory(req: models.MemoryRequest, profile: ServerProfile) -> ToolCall:
    endpoint = f"POST /memory (action {req.action})"
    gen = _generation(endpoint, profile)
    action = "state" if req.action == "check_state" else req.action
    if action in ("promote", "demote"):
        return _feedback(endpoint, action, req.memory_id, req.reason, profile)
    if action == "edit" and not req.content:
        raise FieldError("content", "action 'edit' needs the new content")
    _require(endpoint, profile, "memory", action)
    args: dict[str, Any] = {"action": action, "id": req.memory_id}
    if action == "edit":  # 3.x, and 2.x whose memory tool lists 'edit'
        args["content"] = req.content
    elif gen == "v3" and action in ("delete", "purge"):
        args["confirm"] = True  # the REST call is the explicit confirmation
        _put(args, "reason", req.reason)
    return ToolCall("memory", args)


def map_codebase(req: models.CodebaseRequest, profile: ServerProfile) -> ToolCall:
    action = req.action or ("remember_decision" if req.pattern_type == "decision" else "remember_pattern")
    endpoint = f"POST /codebase (action {action})"
    _generation(endpoint, profile)
    _require(endpoint, profile, "codebase", action)
    args: dict[str, Any] = {"action": action}
    if action == "remember_pattern":
        description = req.description or req.content
        if not description:
            raise FieldError("description", "remember_pattern needs a description (or content)")
        name = req.name or description.strip().splitlines()[0][:80]
        args.update(name=name, description=description)
    elif action == "remember_decision":
        decision = req.decision or req.content
        rationale = req.rationale or req.context
        if not decision:
            raise FieldError("decision", "remember_decision needs a decision (or content)")
        if not rationale:
            raise FieldError("rationale", "remember_decision needs a rationale (or context)")
        args.update(decision=decision, rationale=rationale)
        _put(args, "alternatives", req.alternatives)
    else:
        _put(args, "limit", req.limit)
    if action != "get_context":
        _put(args, "files", req.files)
    _put(args, "codebase", req.codebase)
    return ToolCall("codebase", args)


V1_TRIGGER_TYPES = {"time", "context", "event"}
V1_TRIGGER_FIELDS = {"type", "at", "in_minutes", "codebase", "file_pattern", "topic", "condition"}


def _trigger(req: models.IntentionRequest, endpoint: str, profile: ServerProfile) -> dict[str, Any] | None:
    if req.trigger is None:
        return None
    if isinstance(req.trigger, str):
        return {"type": "event", "condition": req.trigger}
    trigger = req.trigger.model_dump(exclude_none=True)
    if profile.generation == "v1":
        extra = sorted(set(trigger) - V1_TRIGGER_FIELDS)
        if extra:
            raise unsupported(endpoint, profile, f"trigger field(s) {', '.join(extra)} need Vestige 3.x")
        if trigger.get("type") not in (None, *V1_TRIGGER_TYPES):
            raise unsupported(endpoint, profile, f"trigger type '{trigger['type']}' needs Vestige 3.x")
    return trigger


def map_intention(req: models.IntentionRequest, profile: ServerProfile) -> ToolCall:
    endpoint = f"POST /intention (action {req.action})"
    gen = _generation(endpoint, profile)
    _require(endpoint, profile, "intention", req.action)
    args: dict[str, Any] = {"action": req.action}
    if req.action == "set":
        description = req.description or req.content
        if not description:
            raise FieldError("description", "action 'set' needs a description (or content)")
        args["description"] = description
        _put(args, "trigger", _trigger(req, endpoint, profile))
        _put(args, "priority", req.priority)
        _put(args, "deadline", req.deadline)
    elif req.action == "update":
        if not req.id:
            raise FieldError("id", "action 'update' needs the intention id")
        if req.status is None:
            raise FieldError("status", "action 'update' needs a status: complete, snooze or cancel")
        args.update(id=req.id, status=req.status)
        _put(args, "snooze_minutes", req.snooze_minutes)
    elif req.action == "check":
        if req.context is not None:
            context = req.context.model_dump(exclude_none=True)
            if gen == "v1" and {"event", "events"} & set(context):
                raise unsupported(endpoint, profile, "context events need Vestige 3.x")
            args["context"] = context
        _put(args, "include_snoozed", req.include_snoozed)
    else:
        _put(args, "filter_status", req.filter_status)
        _put(args, "limit", req.limit)
    return ToolCall("intention", args)


def map_stats(_: None, profile: ServerProfile) -> ToolCall:
    endpoint = "GET /stats"
    gen = _generation(endpoint, profile)
    if gen == "v3":
        _require(endpoint, profile, "memory_status")
        if not profile.supports_action("memory_status", "stats", "view"):
            raise unsupported(endpoint, profile, "its memory_status tool has no 'stats' view")
        return ToolCall("memory_status", {"view": "stats"})
    if profile.has("stats"):
        return ToolCall("stats", {})
    if profile.has("system_status"):  # 1.7+ (2.x) folded stats and health_check into it
        return ToolCall("system_status", {})
    raise unsupported(endpoint, profile, "it has neither a 'stats' nor a 'system_status' tool")


def map_health_check(_: None, profile: ServerProfile) -> ToolCall:
    endpoint = "GET /health_check"
    gen = _generation(endpoint, profile)
    if gen == "v3":
        _require(endpoint, profile, "memory_status")
        return ToolCall("memory_status", {"view": "health"})
    if profile.has("health_check"):
        return ToolCall("health_check", {})
    _require(endpoint, profile, "system_status")  # 1.7+ folded health_check + stats into it
    return ToolCall("system_status", {})


def map_backup(_: None, profile: ServerProfile) -> ToolCall:
    endpoint = "POST /backup"
    gen = _generation(endpoint, profile)
    if gen == "v3":
        _require(endpoint, profile, "maintain", "backup")
        return ToolCall("maintain", {"action": "backup"})
    _require(endpoint, profile, "backup")
    return ToolCall("backup", {})


def map_export(req: models.ExportRequest, profile: ServerProfile) -> ToolCall:
    endpoint = "POST /export"
    gen = _generation(endpoint, profile)
    args: dict[str, Any] = {"format": req.format}
    _put(args, "tags", req.tags)
    _put(args, "since", req.since.isoformat() if req.since else None)
    _put(args, "path", req.filename)
    if gen == "v3":
        _require(endpoint, profile, "maintain", "export")
        return ToolCall("maintain", {"action": "export", **args})
    _require(endpoint, profile, "export")
    if req.format == "portable":
        raise unsupported(endpoint, profile, "format 'portable' needs Vestige 3.x")
    return ToolCall("export", args)


Mapper = Callable[[Any, ServerProfile], ToolCall]

ENDPOINTS: dict[str, Mapper] = {
    "search": map_search,
    "ingest": map_ingest,
    "smart_ingest": map_smart_ingest,
    "promote": map_promote,
    "demote": map_demote,
    "memory": map_memory,
    "codebase": map_codebase,
    "intention": map_intention,
    "stats": map_stats,
    "health_check": map_health_check,
    "backup": map_backup,
    "export": map_export,
}


class ArgumentGuard:
    """Checks built arguments against the schema the server itself advertised in tools/list.

    The advertised schema is not strict (unknown keys pass; 3.x even serves a compacted form),
    so this only catches values the server would reject: a wrong type, an enum value it lacks,
    a missing required argument. Invalid advertised schemas are skipped.
    """

    def __init__(self, profile: ServerProfile) -> None:
        self._validators: dict[str, jsonschema.protocols.Validator | None] = {}
        for name, schema in profile.tools.items():
            try:
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                cls.check_schema(schema)
                self._validators[name] = cls(schema)
            except (jsonschema.SchemaError, TypeError):
                self._validators[name] = None

    def check(self, call: ToolCall) -> None:
        validator = self._validators.get(call.tool)
        if validator is None:
            return
        error = jsonschema.exceptions.best_match(validator.iter_errors(call.arguments))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or call.tool
            raise FieldError(
                where, f"rejected by the connected Vestige's '{call.tool}' schema: {error.message}"
            )
