"""What an agent may do through the ``/mcp`` pass-through: an allow-list of tools and arguments.

Everything the list below does not name is refused before it reaches Vestige: a tool, an
argument, a selector value (``action``) or a nested key. The list is per Vestige tool generation
(``v1`` = 1.x/2.x, ``v3`` = 3.x, :func:`vestige_bridge.mapping.detect_generation`); a tool is
offered only when the list names it AND the connected Vestige advertises it in ``tools/list`` (so
a call never lands on one of Vestige's hidden aliases, e.g. 2.x's ``delete_knowledge``); a
generation the bridge does not know gets no tool at all.

What is allowed: reading memories, storing new ones, rating, editing and inspecting single
memories, code patterns and decisions, intentions, statistics, and writing a backup or an export
file inside Vestige's own folders (the REST API's ``POST /backup`` and ``POST /export`` do the
same). What is not: anything that replaces or destroys the store or rewrites it as a whole
(``restore``, ``gc``, ``consolidate``, ``dream``, deduplication merges, purge), deleting a
memory (the REST call ``POST /memory`` with ``action: delete`` is the explicit confirmation), the
override flags that lift Vestige's own safety checks (``allowAnyPath``; ``allowSecrets`` only as
``false``), and tools whose arguments were never read (3.x tools listed without a schema in
``tests/bridge/data/vestige-v3-tools.json``). Replacing or restoring a store is the operator's
job (``spec.restore``, VestigeBackup Jobs), never an agent's.

A file-name argument (``export``'s ``path``) must be a plain name inside Vestige's export folder:
letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit, at most 100 characters --
no ``/``, no ``..``, no control character (a trailing newline included: matched with
``fullmatch``, never ``$``).

Pure functions: the pass-through turns a :class:`Refusal` into a JSON-RPC ``invalid params``
error naming the argument (or the tool), and filters ``tools/list`` with :func:`advertised`.
docs/bridge.md has the list as a table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from vestige_bridge import models
from vestige_bridge.mapping import Generation, ServerProfile

FILE_NAME = re.compile(models.FILE_NAME)
"""POST /export's ``filename`` rule, matched with ``fullmatch``."""
MAX_ID = 256
"""Longest id, name or selector string accepted (Vestige's ids are UUIDs)."""
RESOURCE_URI = re.compile(r"(memory|codebase)://[a-z0-9/_-]{1,64}")
"""The resources Vestige 1.x/2.x lists (``memory://stats``, ``codebase://patterns``, ...)."""


# --------------------------------------------------------------------------- argument kinds
@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is refused: the argument (dotted path; empty: the tool itself) and the rule."""

    argument: str
    reason: str

    def message(self, tool: str) -> str:
        if not self.argument:
            return f"tool '{tool}' refused by the bridge: {self.reason}"
        return f"argument '{self.argument}' of '{tool}' refused by the bridge: {self.reason}"


class Arg:
    """One allowed argument: ``check`` returns the reason a value is refused, or None."""

    def check(self, value: Any, where: str) -> Refusal | None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Text(Arg):
    """A string (free text: bounded only by the request body limit unless ``max_length``)."""

    max_length: int | None = None

    def check(self, value: Any, where: str) -> Refusal | None:
        if not isinstance(value, str):
            return Refusal(where, "must be a string")
        if self.max_length is not None and len(value) > self.max_length:
            return Refusal(where, f"longer than {self.max_length} characters")
        return None


ID = Text(MAX_ID)


@dataclass(frozen=True, slots=True)
class FileName(Arg):
    """A plain file name inside Vestige's own folder (see :data:`FILE_NAME`)."""

    def check(self, value: Any, where: str) -> Refusal | None:
        if isinstance(value, str) and FILE_NAME.fullmatch(value):
            return None
        return Refusal(
            where,
            "must be a plain file name (letters, digits, '.', '_', '-', starting with a letter or "
            "digit, at most 100 characters): no directory, no '..', no control character",
        )


@dataclass(frozen=True, slots=True)
class Flag(Arg):
    """A boolean; ``only`` restricts it to one value (override flags: only ``false``)."""

    only: bool | None = None

    def check(self, value: Any, where: str) -> Refusal | None:
        if not isinstance(value, bool):
            return Refusal(where, "must be a boolean")
        if self.only is not None and value is not self.only:
            return Refusal(
                where,
                f"only {str(self.only).lower()} is accepted: the bridge never lifts Vestige's safety checks",
            )
        return None


@dataclass(frozen=True, slots=True)
class Number(Arg):
    integer: bool = False

    def check(self, value: Any, where: str) -> Refusal | None:
        kinds: tuple[type, ...] = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return Refusal(where, "must be an integer" if self.integer else "must be a number")
        return None


INT = Number(integer=True)
NUM = Number()


@dataclass(frozen=True, slots=True)
class Choice(Arg):
    """One of a fixed set of strings (a selector such as ``action``, or an enum)."""

    values: frozenset[str]

    def check(self, value: Any, where: str) -> Refusal | None:
        if isinstance(value, str) and value in self.values:
            return None
        return Refusal(where, f"allowed values: {', '.join(sorted(self.values))}")


def choice(*values: str) -> Choice:
    return Choice(frozenset(values))


@dataclass(frozen=True, slots=True)
class Strings(Arg):
    """A list of strings."""

    def check(self, value: Any, where: str) -> Refusal | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return Refusal(where, "must be a list of strings")
        return None


STRINGS = Strings()


@dataclass(frozen=True, slots=True)
class Data(Arg):
    """An object Vestige reads as plain data (a trigger, a context): any JSON object."""

    def check(self, value: Any, where: str) -> Refusal | None:
        return None if isinstance(value, dict) else Refusal(where, "must be an object")


DATA = Data()


@dataclass(frozen=True, slots=True)
class Obj(Arg):
    """An object with its own allowed keys (checked like a tool's arguments)."""

    args: Mapping[str, Arg]

    def check(self, value: Any, where: str) -> Refusal | None:
        if not isinstance(value, dict):
            return Refusal(where, "must be an object")
        return check_args(self.args, value, where)


@dataclass(frozen=True, slots=True)
class ListOf(Arg):
    """A list whose items each pass ``item``."""

    item: Arg

    def check(self, value: Any, where: str) -> Refusal | None:
        if not isinstance(value, list):
            return Refusal(where, "must be a list")
        for i, inner in enumerate(value):
            found = self.item.check(inner, f"{where}.{i}")
            if found is not None:
                return found
        return None


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_args(allowed: Mapping[str, Arg], arguments: Mapping[str, Any], where: str = "") -> Refusal | None:
    """The first argument of ``arguments`` that ``allowed`` does not admit (None: all pass).

    A ``null`` value is Vestige's "not given" and passes for any allowed argument."""
    for key, value in arguments.items():
        spec = allowed.get(key)
        if spec is None:
            return Refusal(_path(where, str(key)), "not an allowed argument of this tool")
        if value is None:
            continue
        found = spec.check(value, _path(where, key))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- tools
@dataclass(frozen=True)
class Tool:
    """One allowed tool: its arguments, and (for a tool with a selector such as ``action``) the
    allowed selector values, each with the arguments it may carry (None: every argument). Why
    each tool is allowed, and with what: docs/bridge.md, the allow-list table."""

    args: Mapping[str, Arg]
    selector: str | None = None
    actions: Mapping[str, frozenset[str] | None] = field(default_factory=dict)

    def check(self, arguments: Mapping[str, Any]) -> Refusal | None:
        allowed = dict(self.args)
        if self.selector is not None:
            allowed[self.selector] = choice(*self.actions)
        found = check_args(allowed, arguments)
        if found is not None or self.selector is None:
            return found
        action = arguments.get(self.selector)
        if action is None:
            return Refusal(self.selector, f"required; allowed values: {', '.join(sorted(self.actions))}")
        per_action = self.actions[action]
        if per_action is not None:
            for key in arguments:
                if key != self.selector and key not in per_action:
                    return Refusal(key, f"not an allowed argument of action '{action}'")
        return None


def _args(**kinds: Arg) -> dict[str, Arg]:
    return kinds


# 1.x / 2.x ------------------------------------------------------------------------------------
_V1_INGEST = _args(content=Text(), node_type=ID, nodeType=ID, tags=STRINGS, source=Text())
_V1_ITEM = Obj(
    _args(content=Text(), tags=STRINGS, node_type=ID, nodeType=ID, source=Text(), forceCreate=Flag())
)
_DETAIL = choice("brief", "summary", "full")
_TRIGGER_AND_CONTEXT = _args(trigger=DATA, context=DATA)
_INTENTION = _args(
    description=Text(),
    priority=choice("low", "normal", "high", "critical"),
    deadline=ID,
    id=ID,
    status=choice("complete", "snooze", "cancel"),
    snooze_minutes=INT,
    include_snoozed=Flag(),
    filter_status=choice("active", "fulfilled", "cancelled", "snoozed", "all"),
    limit=INT,
    **_TRIGGER_AND_CONTEXT,
)
_CODEBASE = _args(
    name=Text(),
    description=Text(),
    decision=Text(),
    rationale=Text(),
    alternatives=STRINGS,
    files=STRINGS,
    codebase=ID,
    limit=INT,
)
_CODEBASE_ACTIONS: dict[str, frozenset[str] | None] = {
    "remember_pattern": None,
    "remember_decision": None,
    "get_context": None,
}
_EXPORT = _args(format=choice("json", "jsonl"), tags=STRINGS, since=ID, path=FileName())

V1_TOOLS: dict[str, Tool] = {
    "search": Tool(
        _args(
            query=Text(),
            limit=INT,
            min_retention=NUM,
            min_similarity=NUM,
            detail_level=_DETAIL,
            context_topics=STRINGS,
            token_budget=INT,
        ),
    ),
    "memory": Tool(
        _args(id=ID, reason=Text(), content=Text()),
        selector="action",
        actions={"get": None, "state": None, "promote": None, "demote": None, "edit": None},
    ),
    "codebase": Tool(_CODEBASE, selector="action", actions=_CODEBASE_ACTIONS),
    "intention": Tool(
        _INTENTION,
        selector="action",
        actions={"set": None, "check": None, "update": None, "list": None},
    ),
    "ingest": Tool(_V1_INGEST),
    "smart_ingest": Tool({**_V1_INGEST, "forceCreate": Flag(), "items": ListOf(_V1_ITEM)}),
    "session_checkpoint": Tool(_args(items=ListOf(_V1_ITEM))),
    "promote_memory": Tool(_args(id=ID, reason=Text())),
    "demote_memory": Tool(_args(id=ID, reason=Text())),
    "memory_timeline": Tool(
        _args(start=ID, end=ID, node_type=ID, tags=STRINGS, limit=INT, detail_level=_DETAIL)
    ),
    "memory_changelog": Tool(_args(memory_id=ID, start=ID, end=ID, limit=INT)),
    "health_check": Tool({}),
    "stats": Tool({}),
    "system_status": Tool({}),
    "memory_health": Tool({}),
    "importance_score": Tool(_args(content=Text(), context_topics=STRINGS, project=ID)),
    "find_duplicates": Tool(_args(similarity_threshold=NUM, limit=INT, tags=STRINGS)),
    "explore_connections": Tool(
        _args(**{"from": ID, "to": ID, "limit": INT}),
        selector="action",
        actions={"chain": None, "associations": None, "bridges": None},
    ),
    "predict": Tool(_args(context=DATA)),
    "session_context": Tool(
        _args(
            queries=STRINGS,
            token_budget=INT,
            context=DATA,
            include_status=Flag(),
            include_intentions=Flag(),
            include_predictions=Flag(),
        ),
    ),
    "memory_graph": Tool(_args(center_id=ID, query=Text(), depth=INT, max_nodes=INT)),
    "backup": Tool({}),
    "export": Tool(_EXPORT),
}

# 3.x ------------------------------------------------------------------------------------------
_V3_ITEM_FIELDS = _args(
    content=Text(),
    tags=STRINGS,
    node_type=ID,
    source=Text(),
    scope=ID,
    validFrom=ID,
    validUntil=ID,
    forceCreate=Flag(),
    allowSecrets=Flag(only=False),
    previewTagSuggestions=Flag(),
    acceptedTagSuggestions=DATA,
    links=ListOf(Obj(_args(kind=choice("derived_from", "evidence_of", "closes"), to=ID))),
)

V3_TOOLS: dict[str, Tool] = {
    "recall": Tool(
        _args(
            query=Text(),
            limit=INT,
            min_retention=NUM,
            min_similarity=NUM,
            detail_level=_DETAIL,
            context_topics=STRINGS,
            exclude_types=STRINGS,
            include_types=STRINGS,
            token_budget=INT,
            retrieval_mode=choice("precise", "balanced", "exhaustive"),
            concrete=Flag(),
            handle=ID,
            mode=choice("lookup", "reason", "contradictions"),
            depth=INT,
            topic=Text(),
            since=ID,
            min_trust=NUM,
        ),
    ),
    "smart_ingest": Tool(
        {
            **_V3_ITEM_FIELDS,
            "batchMergePolicy": choice("force_create", "smart"),
            "role": ID,
            "items": ListOf(Obj(_V3_ITEM_FIELDS)),
        },
    ),
    # not delete/purge (nor their `confirm`): POST /memory with action delete is the confirmation
    "memory": Tool(
        _args(id=ID, ids=STRINGS, reason=Text(), role=ID, content=Text()),
        selector="action",
        actions={
            "get": None,
            "get_batch": None,
            "state": None,
            "promote": None,
            "demote": None,
            "edit": None,
        },
    ),
    "memory_status": Tool(
        _args(
            view=choice("health", "retention", "timeline", "changelog", "stats", "tools"),
            tool=ID,
            schema_introspection=Flag(),
            start=ID,
            end=ID,
            node_type=ID,
            tags=STRINGS,
            detail_level=_DETAIL,
            memory_id=ID,
            scope=ID,
            all_scopes=Flag(),
            limit=INT,
        ),
    ),
    "codebase": Tool(_CODEBASE, selector="action", actions=_CODEBASE_ACTIONS),
    # not `command`: an object whose content upstream does not document
    "intention": Tool(
        {**_INTENTION, "scope": ID, "at": ID},
        selector="action",
        actions={"set": None, "check": None, "update": None, "list": None, "graph": None},
    ),
    # only backup and export (as POST /backup, POST /export); the other actions rewrite the store
    "maintain": Tool(
        {**_EXPORT, "format": choice("json", "jsonl", "portable")},
        selector="action",
        actions={"backup": frozenset(), "export": frozenset({"format", "tags", "since", "path"})},
    ),
}

ALLOWED: dict[Generation, dict[str, Tool]] = {"v1": V1_TOOLS, "v3": V3_TOOLS, "unsupported": {}}

REFUSED_WHY: dict[str, str] = {
    "gc": "deletes memories store-wide",
    "consolidate": "rewrites the whole store (decay, embeddings)",
    "dream": "rewrites the whole store",
    "restore": "replaces the store from a file (the operator restores: spec.restore)",
    "purge": "irreversible deletion (POST /memory with action delete)",
    "dedup": "merges memories store-wide",
    "backfill": "rewrites the whole store",
    "source_sync": "imports from outside the store",
    "suppress": "hides memories store-wide; arguments not verified",
    "receipt": "arguments not verified",
    "project": "arguments not verified",
    "graph": "arguments not verified",
    "session_start": "arguments not verified",
}
"""Tools Vestige offers that the bridge refuses over /mcp, and why (docs; not a deny-list)."""


# --------------------------------------------------------------------------- the checks
def allowed_tools(profile: ServerProfile) -> dict[str, Tool]:
    """The tools an agent may call on this Vestige: on the allow-list AND advertised by it."""
    return {name: tool for name, tool in ALLOWED[profile.generation].items() if profile.has(name)}


def check_call(profile: ServerProfile, name: str, arguments: Mapping[str, Any]) -> Refusal | None:
    """Why ``tools/call`` of ``name`` with ``arguments`` is refused on this Vestige (None: forward)."""
    tool = allowed_tools(profile).get(name)
    if tool is None:
        why = REFUSED_WHY.get(name, "not on the bridge's allow-list of tools for agents")
        return Refusal("", f"{why} (generation {profile.generation})")
    return tool.check(arguments)


def _prune(schema: Mapping[str, Any], tool: Tool) -> dict[str, Any]:
    """Vestige's own input schema, cut down to what the allow-list admits."""
    allowed = set(tool.args) | ({tool.selector} if tool.selector else set())
    out = dict(schema)
    props = schema.get("properties")
    if isinstance(props, Mapping):
        kept: dict[str, Any] = {}
        for key, prop in props.items():
            if key not in allowed:
                continue
            if key == tool.selector and isinstance(prop, Mapping):
                prop = {**prop, "enum": [v for v in prop.get("enum", tool.actions) if v in tool.actions]}
            else:
                spec = tool.args.get(key)
                if (
                    isinstance(spec, Choice)
                    and isinstance(prop, Mapping)
                    and isinstance(prop.get("enum"), list)
                ):
                    prop = {**prop, "enum": [v for v in prop["enum"] if v in spec.values]}
            kept[key] = prop
        out["properties"] = kept
    if isinstance(schema.get("required"), list):
        out["required"] = [r for r in schema["required"] if r in allowed]
    for combinator in ("oneOf", "anyOf"):
        variants = schema.get(combinator)
        if isinstance(variants, list) and tool.selector:
            out[combinator] = [v for v in variants if _variant_allowed(v, tool)]
    return out


def _variant_allowed(variant: Any, tool: Tool) -> bool:
    props = variant.get("properties") if isinstance(variant, Mapping) else None
    selector = props.get(tool.selector) if isinstance(props, Mapping) and tool.selector else None
    if isinstance(selector, Mapping) and "const" in selector:
        return selector["const"] in tool.actions
    return True


def advertised(profile: ServerProfile, tools: list[types.Tool]) -> list[types.Tool]:
    """Vestige's ``tools/list`` answer, filtered to the allowed tools with pruned schemas."""
    allowed = allowed_tools(profile)
    return [
        tool.model_copy(update={"input_schema": _prune(tool.input_schema, allowed[tool.name])})
        for tool in tools
        if tool.name in allowed
    ]


def check_resource(uri: str) -> Refusal | None:
    """``resources/read``: only the read-only ``memory://`` and ``codebase://`` views."""
    if RESOURCE_URI.fullmatch(uri):
        return None
    return Refusal("uri", "only memory:// and codebase:// resources (letters, digits, '/', '_', '-')")
