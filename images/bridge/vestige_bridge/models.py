"""REST request and response bodies (the OpenAPI schema is generated from these).

Bodies stay compatible with the predecessor bridge: its field names and defaults are accepted,
unknown fields are ignored as before, and the fields it got wrong are mapped correctly (see
:mod:`vestige_bridge.mapping`). New optional fields expose what Vestige can really do.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Tag = Field(min_length=1, max_length=200)
MemoryId = Field(
    min_length=1,
    max_length=200,
    pattern=r"^[A-Za-z0-9_.:-]+$",
    description="ID of the memory node (as returned by ingest/search).",
    examples=["0d6f1d2e-8f1c-4a43-9f3b-0a8a4a2f1c11"],
)


class Body(BaseModel):
    """Base of every request body: unknown fields are ignored (predecessor behaviour)."""

    model_config = ConfigDict(extra="ignore")


class SearchRequest(Body):
    query: str = Field(min_length=1, max_length=10_000, description="What to look for.")
    mode: Literal["keyword", "semantic", "hybrid"] = Field(
        default="hybrid",
        description=(
            "Vestige always searches hybrid (keyword + semantic). 'keyword' asks for a literal "
            "search (`concrete=true`) where the connected Vestige supports it (3.x); elsewhere it "
            "is hybrid. 'semantic' is hybrid."
        ),
    )
    limit: int = Field(default=10, ge=1, le=100, description="Maximum number of results.")
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum similarity (Vestige `min_similarity`)."
    )
    min_retention: float | None = Field(default=None, ge=0.0, le=1.0, description="Minimum retention.")
    detail_level: Literal["brief", "summary", "full"] | None = Field(
        default=None, description="How much of each memory to return."
    )


class IngestRequest(Body):
    content: str = Field(min_length=1, max_length=200_000, description="The content to remember.")
    node_type: str = Field(
        default="fact",
        pattern=r"^[a-z_]{1,32}$",
        description="fact, concept, event, person, place, note, pattern, decision (3.x also: state).",
    )
    tags: list[str] = Field(default_factory=list, max_length=50, description="Tags for categorization.")
    source: str | None = Field(default=None, max_length=2_000, description="Source or reference.")
    context: str | None = Field(
        default=None,
        max_length=2_000,
        description="Predecessor field; sent to Vestige as `source` when `source` is not given.",
    )


class SmartIngestRequest(IngestRequest):
    force_create: bool = Field(
        default=False, description="Create a new memory even if similar content exists (`forceCreate`)."
    )


class FeedbackRequest(Body):
    memory_id: str = MemoryId
    reason: str | None = Field(default=None, max_length=2_000, description="Why (optional, logged).")


class MemoryRequest(Body):
    action: Literal["get", "delete", "check_state", "state", "purge", "promote", "demote", "edit"] = Field(
        description=(
            "get, check_state (alias state), delete; on Vestige 3.x also purge, promote, demote, "
            "edit (needs content). delete/purge retire the memory for good (3.x: `confirm=true` is sent)."
        )
    )
    memory_id: str = MemoryId
    content: str | None = Field(default=None, max_length=200_000, description="[edit] New content.")
    reason: str | None = Field(default=None, max_length=2_000, description="Why (optional, logged).")


class CodebaseRequest(Body):
    action: Literal["remember_pattern", "remember_decision", "get_context"] | None = Field(
        default=None, description="Defaults from pattern_type: pattern -> remember_pattern."
    )
    pattern_type: Literal["pattern", "decision"] = Field(
        default="pattern", description="Predecessor field: pattern or decision (chooses the action)."
    )
    name: str | None = Field(default=None, max_length=500, description="[remember_pattern] Pattern name.")
    description: str | None = Field(
        default=None, max_length=200_000, description="[remember_pattern] Pattern description."
    )
    decision: str | None = Field(default=None, max_length=200_000, description="[remember_decision]")
    rationale: str | None = Field(default=None, max_length=200_000, description="[remember_decision]")
    alternatives: list[str] | None = Field(default=None, max_length=50, description="[remember_decision]")
    files: list[str] | None = Field(default=None, max_length=200, description="Files concerned.")
    codebase: str | None = Field(default=None, max_length=500, description="Codebase/project identifier.")
    limit: int | None = Field(default=None, ge=1, le=50, description="[get_context] Items per category.")
    content: str | None = Field(
        default=None,
        max_length=200_000,
        description="Predecessor field: the pattern description, or the decision.",
    )
    context: str | None = Field(
        default=None, max_length=200_000, description="Predecessor field: the rationale of a decision."
    )
    tags: list[str] | None = Field(
        default=None, description="Predecessor field; not sent (Vestige tags codebase memories itself)."
    )


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["time", "context", "event", "activity", "recurring", "compound"] | None = Field(
        default=None, description="time, context, event (3.x also: activity, recurring, compound)."
    )
    at: str | None = Field(default=None, max_length=64, description="ISO timestamp (time triggers).")
    in_minutes: int | None = Field(default=None, ge=0, le=5_256_000, description="Minutes from now.")
    codebase: str | None = Field(default=None, max_length=4096)
    file_pattern: str | None = Field(default=None, max_length=4096)
    topic: str | None = Field(default=None, max_length=4096)
    condition: str | None = Field(default=None, max_length=4096, description="Event condition.")
    activity: str | None = Field(default=None, max_length=4096, description="3.x only.")
    recurrence: str | dict[str, int | str] | None = Field(default=None, description="3.x only.")


class CheckContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_time: str | None = Field(default=None, max_length=64)
    codebase: str | None = Field(default=None, max_length=4096)
    file: str | None = Field(default=None, max_length=4096)
    topics: list[str] | None = Field(default=None, max_length=32)
    event: str | None = Field(default=None, max_length=4096, description="3.x only.")
    events: list[str] | None = Field(default=None, max_length=32, description="3.x only.")


class IntentionRequest(Body):
    action: Literal["set", "check", "update", "list"] = Field(default="set")
    description: str | None = Field(default=None, max_length=10_000, description="[set] What to do.")
    content: str | None = Field(
        default=None, max_length=10_000, description="Predecessor name of description."
    )
    trigger: Trigger | str | None = Field(
        default=None,
        description="[set] Trigger object, or (predecessor) a string: an event condition.",
    )
    priority: Literal["low", "normal", "high", "critical"] | None = Field(default=None)
    deadline: str | None = Field(default=None, max_length=64, description="[set] ISO timestamp.")
    id: str | None = Field(default=None, max_length=200, description="[update] Intention id.")
    status: Literal["complete", "snooze", "cancel"] | None = Field(default=None, description="[update]")
    snooze_minutes: int | None = Field(default=None, ge=1, le=525_600, description="[update]")
    context: CheckContext | None = Field(default=None, description="[check] Current context.")
    include_snoozed: bool | None = Field(default=None, description="[check]")
    filter_status: Literal["active", "fulfilled", "cancelled", "snoozed", "all"] | None = Field(default=None)
    limit: int | None = Field(default=None, ge=1, le=1000, description="[list]")
    tags: list[str] | None = Field(
        default=None, description="Predecessor field; not sent (no such argument)."
    )


FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
"""A plain file name inside one of Vestige's folders (no directory, no '..', no leading '.', no
control character): POST /export's ``filename`` and every file-name argument through /mcp
(vestige_bridge.allowlist). Match it as a whole (``fullmatch``; pydantic's ``$`` is the end of
the text), never with Python's ``re`` and ``$``, which also matches before a trailing newline."""


class ExportRequest(Body):
    format: Literal["json", "jsonl", "portable"] = Field(default="json", description="portable: 3.x only.")
    tags: list[str] | None = Field(default=None, max_length=50, description="Only memories with ALL tags.")
    since: date | None = Field(default=None, description="Only memories created after this date.")
    filename: str | None = Field(
        default=None,
        pattern=rf"^{FILE_NAME}$",
        description="File name (not a path) inside Vestige's exports folder.",
    )


class ToolData(BaseModel):
    content: list[dict[str, Any]] = Field(description="MCP content items returned by the Vestige tool.")
    structuredContent: dict[str, Any] | list[Any] | None = None
    path: str | None = Field(
        default=None,
        description=(
            "/backup and /export: the file Vestige wrote, as Vestige sees it (in the pod: on the "
            "agent's data volume under /data)."
        ),
    )


class Envelope(BaseModel):
    """Every tool endpoint answers this shape (HTTP 200 also when the tool reported an error)."""

    success: bool
    data: ToolData | None = None
    error: str | None = None


class ErrorEnvelope(BaseModel):
    success: Literal[False] = False
    data: None = None
    error: str
    field: str | None = Field(default=None, description="The request field at fault (422).")


class HealthResponse(BaseModel):
    status: Literal["healthy", "unhealthy"]
    vestige_connected: bool
    uptime_seconds: float
    vestige_version: str | None = None
    tool_generation: str | None = None
    agent_id: str | None = None
    error: str | None = None


class ReadyResponse(BaseModel):
    ready: bool
    reason: str | None = None


class ReplicationResponse(BaseModel):
    """The continuous-backup sidecar's position (GET /replication, no token: like /metrics it
    holds times only, never memory content)."""

    enabled: bool = Field(
        description="Whether this pod runs the Litestream sidecar (spec.backup.continuous)."
    )
    last_sync_at: datetime | None = Field(
        default=None, description="When the replica last held every change of the store."
    )
    lag_seconds: float | None = Field(
        default=None, description="Seconds since then, measured in the pod (no clock skew)."
    )
    error: str | None = Field(default=None, description="Why there is no position (sidecar not answering).")
