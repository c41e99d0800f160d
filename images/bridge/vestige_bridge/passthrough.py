"""Authenticated MCP pass-through at ``/mcp``, limited to an allow-list.

An MCP server (the SDK's low-level ``Server`` over its Streamable HTTP transport, stateless, JSON
answers) in front of Vestige's tools and resources, over the bridge's shared session. MCP clients
(Claude Code, ...) use the agent's memory with the bridge token; they never see Vestige's own
token, and a Vestige restart is invisible to them (the bridge reconnects).

Only what :mod:`vestige_bridge.allowlist` admits for the connected Vestige's generation passes:
``tools/list`` shows only the allowed tools (their schemas cut to the allowed arguments and
actions); a ``tools/call`` of any other tool, or with an argument, action or nested key the list
does not admit, is answered with a JSON-RPC ``invalid params`` error naming it and never reaches
Vestige. ``resources/list`` and ``resources/read`` (read-only views) pass for ``memory://`` and
``codebase://`` URIs. The SDK itself answers ``initialize``, ``ping`` and notifications; every
other method (prompts, subscriptions, completion, logging) is "method not found".
Authentication and the body limit are applied by the bridge's middleware before this app runs.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from vestige_bridge import __version__
from vestige_bridge.allowlist import Refusal, advertised, check_call, check_resource
from vestige_bridge.mapping import ServerProfile, ToolCall
from vestige_bridge.mcp_client import Link, VestigeClient, VestigeError

INSTRUCTIONS = (
    "Long-term memory of this agent (Vestige), served through vestige-bridge. "
    "Tools are Vestige's own, limited to what an agent needs; search before answering, save "
    "what is worth remembering."
)


class Refused(Exception):
    """A call the allow-list refuses (raised inside the call, so it is checked against the
    profile of the very session it would run on)."""

    def __init__(self, tool: str, refusal: Refusal) -> None:
        super().__init__(refusal.message(tool))
        self.refusal = refusal

    def error(self) -> MCPError:
        data = {"argument": self.refusal.argument} if self.refusal.argument else {"tool": True}
        return MCPError(types.INVALID_PARAMS, str(self), data)


def _unavailable(exc: VestigeError) -> MCPError:
    return MCPError(types.INTERNAL_ERROR, f"Vestige unavailable: {exc}")


def build_passthrough(client: VestigeClient, max_body_bytes: int) -> tuple[StreamableHTTPSessionManager, Any]:
    """The session manager (run it in the app's lifespan) and the ASGI app to mount at /mcp."""

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        async def call(link: Link) -> types.ListToolsResult:
            result = await link.session.list_tools(params=params)
            return result.model_copy(update={"tools": advertised(link.profile, result.tools)})

        try:
            return await client.run(call)
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})

        def build(profile: ServerProfile) -> ToolCall:
            refusal = check_call(profile, params.name, arguments)
            if refusal is not None:
                raise Refused(params.name, refusal)
            return ToolCall(params.name, arguments)

        try:
            _, result = await client.call_mapped(build)
        except Refused as exc:
            raise exc.error() from None
        except VestigeError as exc:
            raise _unavailable(exc) from exc
        return result

    async def list_resources(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        try:
            conn = await client.connection()
            if conn.capabilities is None or conn.capabilities.resources is None:
                return types.ListResourcesResult(resources=[])
            result = await client.run(lambda link: link.session.list_resources(params=params))
        except VestigeError as exc:
            raise _unavailable(exc) from exc
        kept = [r for r in result.resources if check_resource(str(r.uri)) is None]
        return result.model_copy(update={"resources": kept})

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        refusal = check_resource(params.uri)
        if refusal is not None:
            raise MCPError(types.INVALID_PARAMS, refusal.message("resources/read"), {"argument": "uri"})
        try:
            return await client.run(lambda link: link.session.read_resource(params.uri))
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    server: Server[Any] = Server(
        "vestige-bridge",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )
    # No DNS-rebinding Host/Origin allow-list: the bridge is reached by Service and Ingress names
    # and every request carries the bearer token, checked before this app runs.
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=True,
        stateless=True,
        security_settings=None,
        max_request_body_size=max_body_bytes,
    )
    return manager, StreamableHTTPASGIApp(manager)
