"""The FastAPI application: predecessor-compatible REST API, maintenance calls, /mcp, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from vestige_bridge import __version__, models, replication
from vestige_bridge.guard import Guard
from vestige_bridge.mapping import ENDPOINTS, ArgumentGuard, FieldError, ServerProfile, ToolCall, Unsupported
from vestige_bridge.mcp_client import VestigeClient, VestigeError
from vestige_bridge.metrics import Metrics
from vestige_bridge.passthrough import build_passthrough
from vestige_bridge.settings import ConfigError, Settings
from vestige_bridge.tokens import FileTokens, NoTokens, StaticTokens, Tokens, TokenSet

log = logging.getLogger("vestige_bridge")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ErrorEnvelope, "description": "Missing or wrong bearer token."},
    403: {"model": models.ErrorEnvelope, "description": "X-Agent-Id names another agent."},
    413: {"model": models.ErrorEnvelope, "description": "Body larger than VESTIGE_MAX_BODY_BYTES."},
    422: {"model": models.ErrorEnvelope, "description": "Invalid body; `field` names the field."},
    501: {"model": models.ErrorEnvelope, "description": "The connected Vestige version cannot serve this."},
    502: {"model": models.ErrorEnvelope, "description": "Vestige unreachable or MCP protocol failure."},
}


class BridgeState:
    """What the routes share: settings, the MCP client, metrics, argument guards."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.client = VestigeClient(settings, metrics)
        self.started = time.monotonic()
        self._guards: dict[int, tuple[ServerProfile, ArgumentGuard]] = {}

    def guard(self, profile: ServerProfile) -> ArgumentGuard:
        cached = self._guards.get(id(profile))
        if cached is None or cached[0] is not profile:
            self._guards = {id(profile): (profile, ArgumentGuard(profile))}
            cached = self._guards[id(profile)]
        return cached[1]

    @property
    def uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _error(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    payload: dict[str, Any] = {"success": False, "data": None, "error": message}
    if field is not None:
        payload["field"] = field
    payload.update(extra)
    return JSONResponse(payload, status_code=status)


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    """Dotted request field from a pydantic error location, without union-member tags."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    kept = [
        p for p in parts if not (p[:1].isupper() or "[" in p or p in ("str", "int", "float", "bool", "dict"))
    ]
    return ".".join(kept) or "body"


FILE_KEYS = ("path", "backupPath", "exportPath", "file")
"""Where Vestige's backup/export answers name the file they wrote (1.x/2.x: ``path``)."""


def written_file(result: types.CallToolResult) -> str | None:
    """The file a backup/export answer names, from its structured content or its JSON text."""
    candidates: list[Any] = [result.structured_content]
    for item in result.content:
        if isinstance(item, types.TextContent):
            try:
                candidates.append(json.loads(item.text))
            except ValueError:
                continue
    for candidate in candidates:
        if isinstance(candidate, dict):
            for key in FILE_KEYS:
                if isinstance(candidate.get(key), str) and candidate[key]:
                    return str(candidate[key])
    return None


def envelope(result: types.CallToolResult, names_file: bool = False) -> dict[str, Any]:
    """The predecessor's response shape for one tool result (`names_file`: add `data.path`)."""
    content = [item.model_dump(by_alias=True, mode="json", exclude_none=True) for item in result.content]
    data: dict[str, Any] = {"content": content}
    if result.structured_content is not None:
        data["structuredContent"] = result.structured_content
    if names_file and not result.is_error:
        data["path"] = written_file(result)
    if result.is_error:
        text = "\n".join(c.get("text", "") for c in content if c.get("type") == "text").strip()
        return {"success": False, "data": data, "error": text or "Vestige reported a tool error"}
    return {"success": True, "data": data, "error": None}


def build_tokens(settings: Settings) -> Tokens:
    """The accepted tokens: a mounted directory (followed while running), a fixed token, or none
    (anonymous, opted in). A directory without a token at start-up is refused (fail closed)."""
    if settings.auth_token_dir is not None:
        tokens = FileTokens(settings.auth_token_dir, settings.auth_reload_seconds)
        tokens.reload()
        if tokens.current().current is None:
            raise ConfigError(
                f"VESTIGE_AUTH_TOKEN_DIR={settings.auth_token_dir} holds no readable 'token' file; "
                "the bridge refuses to start without a token"
            )
        return tokens
    if settings.auth_token is not None:
        return StaticTokens(settings.auth_token.get_secret_value())
    return NoTokens()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the bridge app; raises ConfigError when it must not start (no token, no opt-in)."""
    settings = settings or Settings()
    settings.check_startable()
    tokens = build_tokens(settings)
    if not tokens.enabled:
        log.warning(
            "VESTIGE_ALLOW_ANONYMOUS=true and no token: this bridge serves EVERY caller without "
            "authentication"
        )
    metrics = Metrics()
    if settings.replication_socket is not None:
        metrics.enable_replication()
    if isinstance(tokens, FileTokens):

        def tokens_changed(fresh: TokenSet) -> None:
            metrics.token_reloads.inc()
            expiry = fresh.previous_expires if fresh.previous else None
            metrics.previous_token_expiry.set(expiry.timestamp() if expiry is not None else 0)

        tokens_changed(tokens.current())
        tokens.on_change = tokens_changed
    state = BridgeState(settings, metrics)
    manager, mcp_app = build_passthrough(state.client, settings.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watcher = (
            asyncio.get_running_loop().create_task(tokens.watch(), name="token-watch")
            if isinstance(tokens, FileTokens)
            else None
        )
        async with manager.run():
            try:
                yield
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                await state.client.close()

    app = FastAPI(
        title="vestige-bridge",
        version=__version__,
        description=(
            "REST and MCP front for one agent's Vestige memory. Tool endpoints answer "
            "`{success, data: {content: [...]}, error}`: a Vestige tool error is HTTP 200 with "
            "success=false; 502 when Vestige is unreachable; 501 when the connected Vestige "
            "version has no such tool; 422 names the bad field. Authenticate with "
            "`Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
    )
    app.state.bridge = state
    app.state.tokens = tokens

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid body"}
        field = _field_of(first.get("loc", ("body",)))
        message = str(first.get("msg", "invalid"))
        if first.get("type") == "json_invalid":
            field, message = "body", f"invalid JSON: {first.get('ctx', {}).get('error', message)}"
        detail = [
            {"field": _field_of(e.get("loc", ())), "message": str(e.get("msg")), "type": e.get("type")}
            for e in errors
        ]
        return _error(422, f"{field}: {message}", field=field, detail=detail)

    @app.exception_handler(FieldError)
    async def _field_error(_: Request, exc: FieldError) -> JSONResponse:
        return _error(422, str(exc), field=exc.field)

    @app.exception_handler(Unsupported)
    async def _unsupported(_: Request, exc: Unsupported) -> JSONResponse:
        return _error(501, str(exc))

    @app.exception_handler(VestigeError)
    async def _bad_gateway(_: Request, exc: VestigeError) -> JSONResponse:
        return _error(502, f"Vestige unavailable: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    async def run_tool(endpoint: str, body: Any) -> JSONResponse:
        mapper = ENDPOINTS[endpoint]

        def build(profile: ServerProfile) -> ToolCall:
            call = mapper(body, profile)
            state.guard(profile).check(call)
            return call

        _, result = await state.client.call_mapped(build)
        return JSONResponse(envelope(result, names_file=endpoint in ("backup", "export")))

    tool_responses: dict[int | str, dict[str, Any]] = {200: {"model": models.Envelope}, **ERRORS}

    @app.post("/search", responses=tool_responses, tags=["memory"], summary="Search memories")
    async def search(body: models.SearchRequest) -> JSONResponse:
        return await run_tool("search", body)

    @app.post("/ingest", responses=tool_responses, tags=["memory"], summary="Store a new memory")
    async def ingest(body: models.IngestRequest) -> JSONResponse:
        return await run_tool("ingest", body)

    @app.post(
        "/smart_ingest",
        responses=tool_responses,
        tags=["memory"],
        summary="Store, merging with similar memories",
    )
    async def smart_ingest(body: models.SmartIngestRequest) -> JSONResponse:
        return await run_tool("smart_ingest", body)

    @app.post("/promote", responses=tool_responses, tags=["memory"], summary="Thumbs up for a memory")
    async def promote(body: models.FeedbackRequest) -> JSONResponse:
        return await run_tool("promote", body)

    @app.post("/demote", responses=tool_responses, tags=["memory"], summary="Thumbs down for a memory")
    async def demote(body: models.FeedbackRequest) -> JSONResponse:
        return await run_tool("demote", body)

    @app.post("/memory", responses=tool_responses, tags=["memory"], summary="Get, inspect or delete a memory")
    async def memory(body: models.MemoryRequest) -> JSONResponse:
        return await run_tool("memory", body)

    @app.post("/codebase", responses=tool_responses, tags=["memory"], summary="Code patterns and decisions")
    async def codebase(body: models.CodebaseRequest) -> JSONResponse:
        return await run_tool("codebase", body)

    @app.post("/intention", responses=tool_responses, tags=["memory"], summary="Reminders (intentions)")
    async def intention(body: models.IntentionRequest) -> JSONResponse:
        return await run_tool("intention", body)

    @app.get("/stats", responses=tool_responses, tags=["maintenance"], summary="Memory statistics")
    async def stats() -> JSONResponse:
        return await run_tool("stats", None)

    @app.get("/health_check", responses=tool_responses, tags=["maintenance"], summary="Vestige's own health")
    async def health_check() -> JSONResponse:
        return await run_tool("health_check", None)

    @app.post("/backup", responses=tool_responses, tags=["maintenance"], summary="Back up the database")
    async def backup() -> JSONResponse:
        return await run_tool("backup", None)

    @app.post("/export", responses=tool_responses, tags=["maintenance"], summary="Export memories to a file")
    async def export(body: models.ExportRequest | None = None) -> JSONResponse:
        return await run_tool("export", body or models.ExportRequest())

    @app.get("/livez", tags=["probes"], summary="Shallow liveness (no Vestige call)")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/health",
        response_model=models.HealthResponse,
        responses={503: {"model": models.HealthResponse}},
        tags=["probes"],
        summary="Deep health: tools/list round trip to Vestige",
    )
    async def health() -> JSONResponse:
        try:
            profile = await state.client.check(settings.health_timeout)
        except (VestigeError, TimeoutError) as exc:
            body = models.HealthResponse(
                status="unhealthy",
                vestige_connected=False,
                uptime_seconds=state.uptime,
                agent_id=settings.agent_id,
                error=str(exc) or type(exc).__name__,
            )
            return JSONResponse(body.model_dump(), status_code=503)
        body = models.HealthResponse(
            status="healthy",
            vestige_connected=True,
            uptime_seconds=state.uptime,
            vestige_version=profile.version,
            tool_generation=profile.generation,
            agent_id=settings.agent_id,
        )
        return JSONResponse(body.model_dump())

    @app.get(
        "/readyz",
        response_model=models.ReadyResponse,
        responses={503: {"model": models.ReadyResponse}},
        tags=["probes"],
        summary="Deep readiness (same check as /health)",
    )
    async def readyz() -> JSONResponse:
        try:
            await state.client.check(settings.health_timeout)
        except (VestigeError, TimeoutError) as exc:
            return JSONResponse({"ready": False, "reason": str(exc) or type(exc).__name__}, status_code=503)
        return JSONResponse({"ready": True, "reason": None})

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        if settings.replication_socket is not None:
            metrics.set_replication(await replication.read(settings.replication_socket))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get(
        "/replication",
        response_model=models.ReplicationResponse,
        tags=["probes"],
        summary="Continuous-backup position (what the operator's ReplicationHealthy reads)",
    )
    async def replication_position() -> models.ReplicationResponse:
        if settings.replication_socket is None:
            return models.ReplicationResponse(enabled=False)
        reading = await replication.read(settings.replication_socket)
        metrics.set_replication(reading)
        return models.ReplicationResponse(
            enabled=True,
            last_sync_at=reading.last_sync,
            lag_seconds=reading.lag_seconds,
            error=reading.error,
        )

    # MCP pass-through (not in the OpenAPI document: it speaks MCP, see docs/bridge.md).
    app.router.routes.append(Route("/mcp", endpoint=mcp_app, methods=["GET", "POST", "DELETE"]))
    app.add_middleware(
        Guard,
        tokens=tokens,
        agent_id=settings.agent_id,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        router=app.router,
    )
    return app
